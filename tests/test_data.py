"""scaler.training.data: IDX and CIFAR-10 readers, lookup order, splits, errors; never touches the network."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from scaler.errors import UserError
from scaler.training import data
from scaler.training.data import Dataset, Split, load_dataset

REAL_DEBIAN = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def no_system_copy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Point the Debian path somewhere empty and the download cache into tmp_path."""
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")
    monkeypatch.setattr(data, "DEFAULT_DOWNLOAD_DIR", tmp_path / "no-cache")


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    """An IDX file holding a uint8 array."""
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(folder: Path, n_train: int = 50, n_test: int = 20, gz: bool = True, size: int = 28) -> None:
    """The four MNIST-style IDX files; image i of each set is filled with i % 256, its label is i % 10."""
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = np.broadcast_to((np.arange(n) % 256).astype(np.uint8)[:, None, None], (n, size, size))
        labels = (np.arange(n) % 10).astype(np.uint8)
        for stem, payload in (
            (f"{prefix}-images-idx3-ubyte", idx_bytes(images, 0x803)),
            (f"{prefix}-labels-idx1-ubyte", idx_bytes(labels, 0x801)),
        ):
            if gz:
                (folder / f"{stem}.gz").write_bytes(gzip.compress(payload))
            else:
                (folder / stem).write_bytes(payload)


def write_cifar(folder: Path, batches: int = 2, per_batch: int = 10, n_test: int = 6) -> None:
    """CIFAR-10 python batches; every image has channel c filled with 10 * (c + 1)."""
    folder.mkdir(parents=True, exist_ok=True)
    image = np.concatenate([np.full(32 * 32, 10 * (c + 1), np.uint8) for c in range(3)])

    def dump(path: Path, n: int, offset: int) -> None:
        batch = {
            b"batch_label": b"x",
            b"data": np.tile(image, (n, 1)),
            b"labels": [(offset + i) % 10 for i in range(n)],
        }
        path.write_bytes(pickle.dumps(batch))

    for b in range(1, batches + 1):
        dump(folder / f"data_batch_{b}", per_batch, b)
    dump(folder / "test_batch", n_test, 0)


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize(
    "name,sub", [("mnist", ""), ("mnist", "MNIST/raw"), ("fashion-mnist", ""), ("fashion-mnist", "FashionMNIST/raw")]
)
def test_idx_layouts(tmp_path: Path, name: str, sub: str, gz: bool) -> None:
    root = tmp_path / "d"
    write_idx(root / sub if sub else root, gz=gz)
    ds = load_dataset(name, data_dir=root, download=False)
    assert isinstance(ds, Dataset) and ds.name == name and ds.num_classes == 10
    assert ds.train.images.shape == (38, 1, 28, 28) and ds.val.images.shape == (12, 1, 28, 28)
    assert ds.test.images.shape == (20, 1, 28, 28)
    assert ds.train.images.dtype == torch.uint8 and ds.train.labels.dtype == torch.int64
    assert torch.equal(ds.test.labels, torch.arange(20) % 10)
    assert torch.equal(ds.test.images[:, 0, 5, 7], torch.arange(20, dtype=torch.uint8))
    merged = torch.cat([ds.train.images[:, 0, 0, 0], ds.val.images[:, 0, 0, 0]])
    assert sorted(merged.tolist()) == list(range(50))
    assert torch.equal(ds.train.labels, ds.train.images[:, 0, 0, 0].long() % 10)
    assert Path(ds.source) == (root / sub if sub else root)


def test_split_seed_reproducible(tmp_path: Path) -> None:
    write_idx(tmp_path, n_train=100)
    a = load_dataset("mnist", data_dir=tmp_path, download=False, seed=3, val_fraction=0.2)
    b = load_dataset("mnist", data_dir=tmp_path, download=False, seed=3, val_fraction=0.2)
    c = load_dataset("mnist", data_dir=tmp_path, download=False, seed=4, val_fraction=0.2)
    assert (len(a.train), len(a.val)) == (80, 20)
    assert torch.equal(a.val.images, b.val.images) and torch.equal(a.train.labels, b.train.labels)
    assert not torch.equal(a.val.images, c.val.images)


def test_subset_sizes(tmp_path: Path) -> None:
    write_idx(tmp_path, n_train=100, n_test=30)
    ds = load_dataset("fashion-mnist", data_dir=tmp_path, download=False, subset=20, val_fraction=0.2)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (
        20,
        20,
        30,
    )  # --subset cuts training only; --val-size cuts val
    again = load_dataset("fashion-mnist", data_dir=tmp_path, download=False, subset=20, val_fraction=0.2)
    assert torch.equal(ds.train.images, again.train.images)
    tiny = load_dataset("mnist", data_dir=tmp_path, download=False, subset=1)
    assert (len(tiny.train), len(tiny.val)) == (1, 25)
    big = load_dataset("mnist", data_dir=tmp_path, download=False, subset=1000)
    assert (len(big.train), len(big.val)) == (75, 25)


def test_split_subset_method() -> None:
    split = Split(torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1), torch.arange(10))
    sub = split.subset(4, seed=1)
    assert len(sub) == 4 and torch.equal(sub.images.view(-1).long(), sub.labels)
    assert torch.equal(sub.labels, split.subset(4, seed=1).labels)
    assert len(split.subset(50, seed=0)) == 10


def test_cifar_layout_and_pixels(tmp_path: Path) -> None:
    write_cifar(tmp_path / "cifar-10-batches-py", batches=3, per_batch=10)
    ds = load_dataset("cifar10", data_dir=tmp_path, download=False)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (22, 8, 6)
    assert ds.train.images.shape[1:] == (3, 32, 32) and ds.train.images.dtype == torch.uint8
    for c in range(3):
        assert bool((ds.train.images[:, c] == 10 * (c + 1)).all()) and bool(
            (ds.test.images[:, c] == 10 * (c + 1)).all()
        )
    assert ds.test.labels.tolist() == [0, 1, 2, 3, 4, 5]
    mean, std = ds.mean_std
    assert mean == pytest.approx((10 / 255, 20 / 255, 30 / 255)) and std == pytest.approx((0.0, 0.0, 0.0), abs=1e-9)


def test_cifar_dir_is_batch_folder(tmp_path: Path) -> None:
    write_cifar(tmp_path, batches=1, per_batch=8)
    ds = load_dataset("cifar10", data_dir=tmp_path, download=False)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (6, 2, 6)


def test_mean_std_matches_torch(tmp_path: Path) -> None:
    write_idx(tmp_path, n_train=40)
    ds = load_dataset("mnist", data_dir=tmp_path, download=False)
    x = ds.train.images.double() / 255
    (mean,), (std,) = ds.mean_std
    assert mean == pytest.approx(x.mean().item()) and std == pytest.approx(x.std(unbiased=False).item())


def one_line_error(**kwargs: object) -> str:
    """The message of the UserError load_dataset raises, asserted to be one line."""
    with pytest.raises(UserError) as info:
        load_dataset(**kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message and message
    return message


def test_missing_dir(tmp_path: Path) -> None:
    assert "not a directory" in one_line_error(name="mnist", data_dir=tmp_path / "nope", download=False)


def test_not_found_names_every_option(tmp_path: Path) -> None:
    message = one_line_error(name="fashion-mnist", data_dir=tmp_path, download=False)
    assert str(tmp_path) in message and "no-debian" in message and "download" in message
    assert "dataset-fashion-mnist" in message


def test_unknown_name() -> None:
    message = one_line_error(name="imagenet", download=False)
    assert "fashion-mnist" in message and "cifar10" in message


def test_corrupt_magic(tmp_path: Path) -> None:
    write_idx(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(b"\x00\x00\x08\x01" + path.read_bytes()[4:])
    assert "magic" in one_line_error(name="mnist", data_dir=tmp_path, download=False)


def test_truncated_and_bad_gzip(tmp_path: Path) -> None:
    write_idx(tmp_path)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-3]))
    assert "corrupt" in one_line_error(name="mnist", data_dir=tmp_path, download=False)
    path.write_bytes(b"not gzip at all")
    one_line_error(name="mnist", data_dir=tmp_path, download=False)


def test_corrupt_cifar(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    (tmp_path / "test_batch").write_bytes(b"garbage")
    assert "corrupt" in one_line_error(name="cifar10", data_dir=tmp_path, download=False)


def test_download_failure_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def fail(name: str, root: Path) -> None:
        raise RuntimeError(
            "Error downloading train-images-idx3-ubyte.gz:\nTried https://example, got:\n<urlopen error>"
        )

    monkeypatch.setattr(data, "_download", fail)
    message = one_line_error(name="mnist", download=True)
    assert "RuntimeError" in message and "failed" in message


def test_debian_path_used_without_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    debian = tmp_path / "debian"
    write_idx(debian, n_train=30)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", debian)
    ds = load_dataset("fashion-mnist", download=False)
    assert ds.source == str(debian) and len(ds.train) + len(ds.val) == 30
    empty = tmp_path / "empty"
    empty.mkdir()
    assert load_dataset("fashion-mnist", data_dir=empty, download=False).source == str(debian)
    with pytest.raises(UserError):
        load_dataset("mnist", download=False)


@pytest.mark.skipif(
    not REAL_DEBIAN.is_dir(),
    reason="Debian's dataset-fashion-mnist is not installed at /usr/share/datasets/fashion-mnist",
)
def test_real_debian_fashion_mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", REAL_DEBIAN)
    ds = load_dataset("fashion-mnist", download=False)
    assert len(ds.train) + len(ds.val) == 60000 and len(ds.val) == 15000 and len(ds.test) == 10000
    assert ds.train.images.shape[1:] == (1, 28, 28) and ds.test.labels.bincount().tolist() == [1000] * 10
    (mean,), (std,) = ds.mean_std
    assert 0.27 < mean < 0.30 and 0.34 < std < 0.36
