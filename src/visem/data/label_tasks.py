"""Images with class labels for the label-conditioned generative models (seed 002): ``mnist-labels`` and
``fashion-mnist-labels`` data tasks, and the label vectors (one-hot or GloVe of the class names)."""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from visem.config import ConfigError
from visem.data.tasks import TaskData, register_task

LABEL_ENCODINGS = ("one-hot", "word-vectors")


def _dataset_name(dataset: str) -> str:
    from visem.data import canonical_name

    key = canonical_name(dataset)
    if key not in ("mnist", "fashion-mnist"):
        raise ConfigError(f"PSE experiments run on mnist or fashion-mnist, got {dataset!r}")
    return key


@lru_cache(maxsize=8)
def _images(dataset: str, split: str, n: int | None) -> tuple[Tensor, Tensor, tuple[str, ...]]:
    import visem.data

    data = visem.data.load(dataset, split)
    x = torch.from_numpy(data.pixels())
    y = torch.from_numpy(data.labels)
    if n is not None:
        if not 0 < n <= len(data):
            raise ConfigError(f"{dataset} {split}: asked for {n} images, the split has {len(data)}")
        x, y = x[:n], y[:n]
    return x, y, tuple(data.class_names)


def label_vectors(class_names: Sequence[str], encoding: str = "one-hot") -> Tensor:
    """``(K, D)`` label vectors: the identity (``"one-hot"``) or the mean GloVe vector of each name."""
    if encoding == "one-hot":
        return torch.eye(len(class_names))
    if encoding == "word-vectors":
        from visem.features.text import glove_phrases

        return torch.from_numpy(np.ascontiguousarray(glove_phrases(list(class_names), mode="mean").vectors))
    raise ConfigError(f"label_encoding must be one of {LABEL_ENCODINGS}, got {encoding!r}")


def labels_task(dataset: str, label_encoding: str = "one-hot", train_size: int | None = 50000,
                test_size: int | None = None) -> TaskData:
    """Flattened grey-level images with class labels; ``class_emb`` holds the label vectors.

    Train: the first ``train_size`` training images (50,000, seed 002
    section 4; MNIST's are the classic 50k training half). Test: the 10,000
    test images (or the first ``test_size``).
    """
    dataset = _dataset_name(dataset)
    x, y, names = _images(dataset, "train", train_size)
    xt, yt, _ = _images(dataset, "test", test_size)
    emb = label_vectors(names, label_encoding)
    return TaskData(
        train={"image": x, "label": y},
        test={"image": xt, "label": yt},
        dims={"image_dim": int(x.shape[1]), "class_dim": int(emb.shape[1]), "n_classes": len(names)},
        static={"class_emb": emb},
    )


@register_task("mnist-labels")
def mnist_labels_task(label_encoding: str = "one-hot", train_size: int | None = 50000,
                      test_size: int | None = None) -> TaskData:
    """MNIST digits with one-hot or word-vector labels (seed 002)."""
    return labels_task("mnist", label_encoding, train_size, test_size)


@register_task("fashion-mnist-labels")
def fashion_mnist_labels_task(label_encoding: str = "one-hot", train_size: int | None = 50000,
                              test_size: int | None = None) -> TaskData:
    """Fashion-MNIST clothes with one-hot or word-vector labels (seed 002)."""
    return labels_task("fashion-mnist", label_encoding, train_size, test_size)


