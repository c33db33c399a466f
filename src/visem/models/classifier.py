"""The CNN that scores generated images (seed 002 section 4, "generation accuracy").

Seed 002 classifies 100,000 generated images per model with a pre-trained
MLP on MNIST (96.86% test accuracy) and a ResNet-18 on Fashion-MNIST
(92.4%). visem trains one small CNN per data set instead, once, and caches its
weights as safetensors under ``<data_dir>/classifiers/`` (written atomically;
the file's metadata holds the training settings and the measured test
accuracy). The network is small on purpose: a full reproduction pushes a
million generated images per model through it on CPU.

Architecture (:class:`ImageCNN`), on ``1 x 28 x 28`` grey levels in ``[0, 1]``::

    conv 5x5 stride 2, 1 -> 16, BN, ReLU     (14 x 14)
    conv 3x3 stride 2, 16 -> 32, BN, ReLU    (7 x 7)
    dropout 0.2, dense 1568 -> 128, ReLU, dropout 0.2, dense 128 -> n_classes

Training: Adam with a one-cycle learning-rate schedule (peak 3e-3), batch
128, dropout 0.2, ``epochs`` (12) passes over the 60,000 training images, no
augmentation (random shifts of 2 pixels left the Fashion-MNIST network
under-fitted: 91.8% train, 90.4% test); the test split is only used to report
accuracy. Measured test accuracy: MNIST 99.2-99.4%, Fashion-MNIST 92.0%
(see ``docs/pse.md``).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from visem.io import atomic_path

#: bump when the architecture or the training recipe changes (invalidates caches)
CLASSIFIER_VERSION = 2


class ImageCNN(nn.Module):
    """Two strided convolutions and two dense layers; input ``(N, 784)`` or ``(N, 1, 28, 28)`` in ``[0, 1]``."""

    def __init__(self, n_classes: int = 10, channels: tuple[int, int] = (16, 32), hidden: int = 128,
                 dropout: float = 0.2) -> None:
        super().__init__()
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 5, stride=2, padding=2), nn.BatchNorm2d(c1), nn.ReLU(),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.BatchNorm2d(c2), nn.ReLU(),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(c2 * 49, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, n_classes),
        )
        # channels-last convolutions: about 1.3-1.6x more images per CPU second (docs/pse.md)
        self.features.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 2:
            if x.shape[1] != 784:
                raise ValueError(f"images must be (N, 784) or (N, 1, 28, 28), got {tuple(x.shape)}")
            x = x.view(-1, 1, 28, 28)
        elif x.dim() != 4 or tuple(x.shape[1:]) != (1, 28, 28):
            raise ValueError(f"images must be (N, 784) or (N, 1, 28, 28), got {tuple(x.shape)}")
        return self.head(self.features(x.contiguous(memory_format=torch.channels_last)))


@dataclass(frozen=True)
class ClassifierRecipe:
    """How a cached classifier was trained; part of its cache key."""

    epochs: int = 12
    batch_size: int = 128
    max_lr: float = 3e-3
    shift: int = 0  # random shifts of up to this many pixels (0: none)
    n_train: int | None = None  # None: the whole training split
    seed: int = 0

    def key(self) -> str:
        n = "all" if self.n_train is None else str(self.n_train)
        return f"v{CLASSIFIER_VERSION}-e{self.epochs}-b{self.batch_size}-sh{self.shift}-n{n}-s{self.seed}"


@torch.inference_mode()
def predict(model: nn.Module, images: Tensor, chunk: int = 1000) -> Tensor:
    """Class index of each image, ``chunk`` images per call; ``images`` ``(N, 784)`` float in ``[0, 1]``.

    Chunks of about 1,000 images are the fastest on CPU (larger ones leave the cache).
    """
    was = model.training
    model.eval()
    try:
        out = [model(images[i : i + chunk]).argmax(1) for i in range(0, images.shape[0], chunk)]
    finally:
        model.train(was)
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def accuracy(model: nn.Module, images: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy in percent."""
    return float((predict(model, images) == labels).float().mean()) * 100.0


def _random_shift(x: Tensor, max_shift: int, gen: torch.Generator) -> Tensor:
    """Shift each image by up to ``max_shift`` pixels (zero fill), one offset per batch row."""
    if max_shift <= 0:
        return x
    n = x.shape[0]
    pad = F.pad(x, (max_shift,) * 4)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(28)[None]).view(n, 28, 1)
    cols = (dx[:, None] + torch.arange(28)[None]).view(n, 1, 28)
    return pad[:, 0][torch.arange(n).view(n, 1, 1), rows, cols].unsqueeze(1)


def train_classifier(
    images: Tensor,
    labels: Tensor,
    n_classes: int,
    recipe: ClassifierRecipe = ClassifierRecipe(),
    progress: bool = False,
) -> ImageCNN:
    """Train :class:`ImageCNN` on ``images`` ``(N, 784)`` in ``[0, 1]`` and int64 ``labels``."""
    if images.dim() != 2 or images.shape[1] != 784:
        raise ValueError(f"images must be (N, 784), got {tuple(images.shape)}")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels must be ({images.shape[0]},), got {tuple(labels.shape)}")
    gen = torch.Generator().manual_seed(recipe.seed)
    with torch.random.fork_rng():
        torch.manual_seed(recipe.seed)
        model = ImageCNN(n_classes)
        n = images.shape[0]
        steps_per_epoch = max(1, n // recipe.batch_size)
        total = recipe.epochs * steps_per_epoch
        opt = torch.optim.Adam(model.parameters(), lr=recipe.max_lr)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.max_lr, total_steps=total)
        x_all = images.view(-1, 1, 28, 28)
        from tqdm.auto import tqdm

        bar = tqdm(total=total, disable=not progress, desc="classifier", leave=False)
        model.train()
        for _ in range(recipe.epochs):
            perm = torch.randperm(n, generator=gen)
            for i in range(steps_per_epoch):
                idx = perm[i * recipe.batch_size : (i + 1) * recipe.batch_size]
                x = _random_shift(x_all[idx], recipe.shift, gen)
                loss = F.cross_entropy(model(x), labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                bar.update(1)
        bar.close()
    model.eval()
    return model


def classifier_path(dataset: str, recipe: ClassifierRecipe = ClassifierRecipe()) -> Path:
    from visem.data import data_dir

    return data_dir() / "classifiers" / f"{dataset}-cnn-{recipe.key()}.safetensors"


def load_classifier(
    dataset: str,
    recipe: ClassifierRecipe = ClassifierRecipe(),
    retrain: bool = False,
    progress: bool = False,
) -> tuple[ImageCNN, dict]:
    """The scoring CNN of ``dataset`` (``"mnist"`` / ``"fashion-mnist"``) and its info.

    Trained on the dataset's 60,000 training images the first time (or with
    ``retrain=True``), then read from the cache. ``info`` holds the recipe,
    ``test_accuracy`` and ``train_accuracy`` (percent), the training time and
    the cache path.
    """
    import visem.data

    path = classifier_path(dataset, recipe)
    if path.is_file() and not retrain:
        with safe_open(str(path), framework="pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
            info = json.loads((f.metadata() or {}).get("info", "{}"))
        model = ImageCNN(int(info.get("n_classes", 10)))
        model.load_state_dict(state)
        model.eval()
        info["path"] = str(path)
        info["cached"] = True
        return model, info
    train = visem.data.load(dataset, "train")
    test = visem.data.load(dataset, "test")
    x, y = torch.from_numpy(train.pixels()), torch.from_numpy(train.labels)
    if recipe.n_train is not None:
        x, y = x[: recipe.n_train], y[: recipe.n_train]
    t0 = time.perf_counter()
    model = train_classifier(x, y, train.n_classes, recipe, progress=progress)
    seconds = time.perf_counter() - t0
    xt, yt = torch.from_numpy(test.pixels()), torch.from_numpy(test.labels)
    info = {
        "dataset": dataset,
        "n_classes": train.n_classes,
        "recipe": asdict(recipe),
        "version": CLASSIFIER_VERSION,
        "train_accuracy": accuracy(model, x, y),
        "test_accuracy": accuracy(model, xt, yt),
        "train_seconds": round(seconds, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"info": json.dumps(info)})
    info["path"] = str(path)
    info["cached"] = False
    return model, info


__all__ = ["ImageCNN", "ClassifierRecipe", "load_classifier", "train_classifier", "predict", "accuracy",
           "classifier_path", "CLASSIFIER_VERSION"]
