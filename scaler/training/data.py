"""Fashion-MNIST, MNIST, CIFAR-10 and folders of images loaded into memory as uint8 tensors."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import math
import pickle
import sys
import zlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from scaler.errors import UserError, shown_path
from scaler.training.tasks import DATASET_TASKS, Task, dataset_task, unknown_dataset

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_DOWNLOAD_DIR = Path("~/.cache/scaler/data")

_IDX_IMAGES_MAGIC = 0x00000803
_IDX_LABELS_MAGIC = 0x00000801
_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_TORCHVISION_FOLDERS = {"fashion-mnist": "FashionMNIST", "mnist": "MNIST"}
_CIFAR_FOLDER = "cifar-10-batches-py"


@dataclass(frozen=True)
class Split:
    """Images (uint8, N×C×H×W) and their int64 labels."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        """Number of images."""
        return int(self.labels.shape[0])

    @cached_property
    def fingerprint(self) -> str:
        """A hash of the images and labels in order: per-example outputs are compared only on the same images."""
        digest = hashlib.sha256(self.images.contiguous().numpy().tobytes())
        digest.update(self.labels.contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]

    def subset(self, n: int, seed: int) -> Split:
        """A seeded random subset of min(n, len) images."""
        if n < 1:
            raise UserError(f"subset size must be at least 1 (got {n})")
        if n >= len(self):
            return self
        generator = torch.Generator().manual_seed(seed)
        index = torch.randperm(len(self), generator=generator)[:n]
        return Split(self.images[index], self.labels[index])


@dataclass(frozen=True)
class Dataset:
    """Train/val/test splits of one dataset and where it was read from."""

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    source: str
    classes: tuple[str, ...] = ()
    fingerprint: str = ""
    notes: tuple[str, ...] = ()

    @cached_property
    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std of the training images, in [0, 1] scale."""
        means: list[float] = []
        stds: list[float] = []
        values = torch.arange(256, dtype=torch.float64) / 255.0
        for channel in range(self.train.images.shape[1]):
            counts = torch.bincount(self.train.images[:, channel].reshape(-1), minlength=256).to(torch.float64)
            total = counts.sum()
            mean = (counts * values).sum() / total
            var = (counts * (values - mean) ** 2).sum() / total
            means.append(float(mean))
            stds.append(float(var.sqrt()))
        return tuple(means), tuple(stds)


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """The array stored in an IDX file (optionally gzipped), checking its header."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise UserError(f"cannot read {path}: {_short(exc)}") from None
    if len(raw) < 4:
        raise UserError(f"corrupt IDX file {path}: only {len(raw)} bytes")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise UserError(f"corrupt IDX file {path}: magic 0x{found:08x}, expected 0x{magic:08x}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UserError(f"corrupt IDX file {path}: truncated header")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + math.prod(dims)
    if len(raw) != expected:
        raise UserError(f"corrupt IDX file {path}: {len(raw)} bytes, header {dims} implies {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def _find_idx(directory: Path, name: str) -> dict[str, Path] | None:
    """The four IDX files in directory or its torchvision raw/ subfolders, if all are there."""
    candidates = [directory, directory / "raw", directory / _TORCHVISION_FOLDERS[name] / "raw"]
    for folder in candidates:
        files: dict[str, Path] = {}
        for key, stem in _IDX_FILES.items():
            for path in (folder / stem, folder / f"{stem}.gz"):
                if path.is_file():
                    files[key] = path
                    break
        if len(files) == len(_IDX_FILES):
            return files
        if files:
            missing = ", ".join(stem for key, stem in _IDX_FILES.items() if key not in files)
            raise UserError(f"{folder} holds {len(files)} of the 4 {name} IDX files; missing {missing} (or its .gz)")
    return None


def _load_idx_split(images_path: Path, labels_path: Path, name: str) -> Split:
    """One split from an IDX images file and an IDX labels file."""
    task = dataset_task(name)
    images = _read_idx(images_path, _IDX_IMAGES_MAGIC)
    labels = _read_idx(labels_path, _IDX_LABELS_MAGIC)
    if images.shape[1:] != (task.resolution, task.resolution):
        raise UserError(f"{images_path}: images are {images.shape[1:]}, expected {task.resolution}x{task.resolution}")
    if images.shape[0] != labels.shape[0]:
        raise UserError(f"{images_path} has {images.shape[0]} images but {labels_path} has {labels.shape[0]} labels")
    return _split(images[:, None], labels, task.num_classes, labels_path)


def _split(images: np.ndarray, labels: np.ndarray, num_classes: int, where: Path) -> Split:
    """A Split from numpy arrays, checking the label range."""
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise UserError(f"{where}: labels outside 0..{num_classes - 1}")
    return Split(torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels.astype(np.int64)))


def _find_cifar(directory: Path) -> Path | None:
    """The CIFAR-10 python batch folder in or at directory, if it has a test batch and a data batch."""
    for folder in (directory / _CIFAR_FOLDER, directory):
        if (folder / "test_batch").is_file() and _cifar_train_batches(folder):
            return folder
    return None


def _cifar_train_batches(folder: Path) -> list[Path]:
    """The data_batch_<n> files in folder, in numeric order."""
    batches = [p for p in folder.glob("data_batch_*") if p.is_file() and p.name[len("data_batch_") :].isdigit()]
    return sorted(batches, key=lambda p: int(p.name[len("data_batch_") :]))


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N×3×32×32 uint8) and labels of one CIFAR-10 python batch."""
    try:
        with path.open("rb") as f:
            batch = pickle.load(f, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a corrupt batch
        raise UserError(f"corrupt CIFAR-10 batch {path}: {_short(exc)}") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (data.shape[0],):
        raise UserError(f"corrupt CIFAR-10 batch {path}: data {data.shape}, labels {labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels


def _load_cifar(folder: Path) -> tuple[Split, Split]:
    """Train and test splits from a CIFAR-10 python batch folder."""
    parts = [_read_cifar_batch(p) for p in _cifar_train_batches(folder)]
    train_images = np.concatenate([images for images, _ in parts])
    train_labels = np.concatenate([labels for _, labels in parts])
    test_images, test_labels = _read_cifar_batch(folder / "test_batch")
    return _split(train_images, train_labels, 10, folder), _split(test_images, test_labels, 10, folder)


def _load_from(directory: Path, name: str) -> tuple[Split, Split, Path] | None:
    """Train and test splits of name found in directory, with the folder they came from."""
    if name == "cifar10":
        folder = _find_cifar(directory)
        if folder is None:
            return None
        train, test = _load_cifar(folder)
        return train, test, folder
    files = _find_idx(directory, name)
    if files is None:
        return None
    train = _load_idx_split(files["train_images"], files["train_labels"], name)
    test = _load_idx_split(files["test_images"], files["test_labels"], name)
    return train, test, files["train_images"].parent


def _download(name: str, root: Path) -> None:
    """Fetch name into root with torchvision; progress goes to stderr."""
    import torchvision.datasets as tvd

    cls = {"fashion-mnist": tvd.FashionMNIST, "mnist": tvd.MNIST, "cifar10": tvd.CIFAR10}[name]
    before = _folders(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        with contextlib.redirect_stdout(sys.stderr):
            cls(str(root), train=True, download=True)
            cls(str(root), train=False, download=True)
    except BaseException:
        for folder in sorted(_folders(root) - before, key=lambda path: len(path.parts), reverse=True):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only the empty folders a failed download made
        raise


def _folders(root: Path) -> set[Path]:
    """`root`, its ancestors and every folder under it that exist now."""
    found = {path for path in (root, *root.parents) if path.is_dir()}
    return found | ({path for path in root.rglob("*") if path.is_dir()} if root.is_dir() else set())


def _short(exc: BaseException) -> str:
    """One-line, bounded description of an exception."""
    text = " ".join(str(exc).split())
    if len(text) > 120:
        text = text[:117] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _train_val(train: Split, val_fraction: float, seed: int) -> tuple[Split, Split]:
    """Seeded random split of the training set into train and val."""
    n = len(train)
    if n < 2:
        raise UserError(f"the training set has {n} image(s); need at least 2 to hold out a validation split")
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    return Split(train.images[train_idx], train.labels[train_idx]), Split(train.images[val_idx], train.labels[val_idx])


VAL_FRACTION = 0.25  # 15,000 of Fashion-MNIST's 60,000: binomial floor 0.27 points at 87 % (0.43 at 6,000)


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    val_fraction: float = VAL_FRACTION,
    subset: int | None = None,
    seed: int = 0,
    download: bool = True,
    *,
    input: Task | None = None,
    progress: bool = False,
) -> Dataset:
    """A dataset from data_dir, Debian's package or a torchvision download, or a folder (`input` sets its shape); `subset` cuts training."""
    from scaler.training.folder import is_folder_dataset, load_folder

    folder = is_folder_dataset(name)
    if name not in DATASET_TASKS and not folder:
        raise unknown_dataset(name)
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"val fraction must be between 0 and 1 (got {val_fraction})")
    if subset is not None and subset < 1:
        raise UserError(f"--subset must be at least 1 (got {subset})")
    if folder:
        return load_folder(name, val_fraction, subset, seed, input=input, progress=progress)
    found: tuple[Split, Split, Path] | None = None
    source = ""
    looked: list[str] = []
    if data_dir is not None:
        directory = Path(data_dir).expanduser()
        try:
            directory.is_dir()
        except OSError as error:
            raise UserError(f"--data-dir {shown_path(directory)}: {error.strerror or _short(error)}") from None
        if not directory.is_dir():
            raise UserError(
                f"{name}: --data-dir {directory} is not a directory; pass a folder holding the {name} files, "
                "or leave --data-dir out to use the system copy or torchvision's download"
            )
        found = _load_from(directory, name)
        looked.append(f"--data-dir {directory}")
    else:
        looked.append("--data-dir (not given)")
    if found is None and name == "fashion-mnist":
        debian = Path(DEBIAN_FASHION_MNIST)
        if debian.is_dir():
            found = _load_from(debian, name)
        looked.append(str(debian))
    if found is not None:
        source = str(found[2])
    else:
        root = Path(data_dir).expanduser() if data_dir is not None else DEFAULT_DOWNLOAD_DIR.expanduser()
        if not download:
            looked.append("torchvision's download is disabled")
        else:
            found = _load_from(root, name)
            if found is None:
                try:
                    _download(name, root)
                except Exception as exc:  # noqa: BLE001 - every download failure becomes one line
                    looked.append(f"torchvision's download into {root} failed ({_short(exc)})")
                else:
                    found = _load_from(root, name)
                    if found is None:
                        looked.append(f"torchvision's download into {root} left no readable files")
            source = "torchvision download"
    if found is None:
        hint = "pass --data-dir with the files"
        if name == "fashion-mnist":
            hint += " or install Debian's dataset-fashion-mnist"
        where = ", ".join(looked[:-1]) + f", and {looked[-1]}" if len(looked) > 1 else looked[0]
        raise UserError(f"{name} not found: looked in {where}; {hint}")
    train_full, test, _ = found
    train, val = _train_val(train_full, val_fraction, seed)
    if subset is not None:
        train = train.subset(subset, seed)
    return Dataset(name, train, val, test, dataset_task(name).num_classes, source)
