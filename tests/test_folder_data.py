"""scaler.training.folder: a folder of images as a dataset (layouts, conversions, splits, cache, errors)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scaler.errors import UserError, shown_path
from scaler.training import folder
from scaler.training.data import load_dataset
from scaler.training.folder import is_folder_dataset, scan_folder
from scaler.training.tasks import Task, dataset_task


@pytest.fixture(autouse=True)
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Decoded folders go under tmp_path, and no headers are remembered from another test."""
    monkeypatch.setenv("SCALER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(folder, "_HEADERS", {})
    return tmp_path / "cache" / "folders"


def save(path: Path, mode: str = "RGB", size: tuple[int, int] = (20, 20), colour: int | tuple[int, ...] = 0) -> Path:
    """An image of one colour; the format follows the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path)
    return path


def flat(root: Path, per_class: int = 5, classes: tuple[str, ...] = ("dog", "cat", "bird")) -> Path:
    """root/<class>/<i>.png, RGB 20x20; class c's images have red = 10 * (sorted index of c + 1)."""
    for label, name in enumerate(sorted(classes)):
        for i in range(per_class):
            save(root / name / f"{i}.png", colour=(10 * (label + 1), i, 0))
    return root


def split_layout(root: Path, val: str | None = "val", sizes: tuple[int, int, int] = (4, 2, 3)) -> Path:
    """root/{train,<val>,test}/{a,b}/<i>.png, gray 8x8; value = 100 * split number + 10 * label + i."""
    names = ("train", val, "test")
    for number, (name, n) in enumerate(zip(names, sizes)):
        if name is None:
            continue
        for label, class_name in enumerate(("a", "b")):
            for i in range(n):
                save(root / name / class_name / f"{i}.png", "L", (8, 8), 100 * number + 10 * label + i)
    return root


def test_flat_layout_reads_classes_sorted_and_splits_every_class(tmp_path: Path) -> None:
    root = flat(tmp_path / "pets")
    save(root / "dog" / "extra.JPG", size=(20, 20), colour=(30, 0, 0))
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    save(root / "cat" / ".thumb.png")
    ds = load_dataset(str(root), seed=3)
    assert ds.name == str(root.resolve()) and ds.classes == ("bird", "cat", "dog") and ds.num_classes == 3
    assert len(ds.fingerprint) == 16 and int(ds.fingerprint, 16) >= 0
    for split in (ds.train, ds.val, ds.test):
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (3, 20, 20)
        assert split.labels.dtype == torch.int64
        assert set(split.labels.tolist()) == {0, 1, 2}
        assert torch.equal(split.images[:, 0, 0, 0].long(), 10 * (split.labels + 1))
    assert len(ds.train) + len(ds.val) + len(ds.test) == 16
    assert (len(ds.train), len(ds.val), len(ds.test)) == (10, 3, 3)
    assert any("split by seed 3" in note for note in ds.notes)
    again = load_dataset(str(root), seed=3)
    assert torch.equal(again.train.labels, ds.train.labels) and torch.equal(again.test.images, ds.test.images)
    other = load_dataset(str(root), seed=4)
    assert not torch.equal(other.train.images, ds.train.images)


def test_split_layout_uses_the_folders(tmp_path: Path) -> None:
    root = split_layout(tmp_path / "data", val="validation")
    ds = load_dataset(str(root))
    assert ds.classes == ("a", "b")
    assert (len(ds.train), len(ds.val), len(ds.test)) == (8, 4, 6)
    assert ds.train.images.shape == (8, 1, 8, 8)
    assert ds.train.images[:, 0, 3, 3].tolist() == [0, 1, 2, 3, 10, 11, 12, 13]
    assert ds.val.images[:, 0, 0, 0].tolist() == [100, 101, 110, 111]
    assert ds.test.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert ds.test.images[:, 0, 0, 0].tolist() == [200, 201, 202, 210, 211, 212]
    assert "splits from the train/, val/ and test/ folders" in ds.notes


def test_split_layout_without_val_holds_out_part_of_train(tmp_path: Path) -> None:
    root = split_layout(tmp_path / "data", val=None, sizes=(4, 0, 3))
    ds = load_dataset(str(root), val_fraction=0.25, subset=5)
    assert len(ds.val) == 2 and set(ds.val.labels.tolist()) == {0, 1}
    assert len(ds.train) == 5 and len(ds.test) == 6
    assert torch.all(ds.val.images < 100) and torch.all(ds.test.images >= 200)
    assert any("no val/ folder" in note for note in ds.notes)


def test_gray_rgba_palette_and_jpeg(tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    save(root / "a" / "gray.png", "L", colour=50)
    save(root / "a" / "rgba_opaque.png", "RGBA", colour=(10, 20, 30, 255))
    save(root / "a" / "rgba_clear.png", "RGBA", colour=(200, 200, 200, 0))
    palette = Image.new("P", (20, 20), 1)
    palette.putpalette([0, 0, 0, 40, 80, 120] + [0] * 762)
    (root / "b").mkdir()
    palette.save(root / "b" / "palette.gif")
    save(root / "b" / "photo.jpeg", colour=(90, 90, 90))
    save(root / "b" / "gray16.png", "I;16", colour=256 * 70)
    index = scan_folder(root)
    images = {image.relative: i for i, image in enumerate(index.files)}
    ds = load_dataset(str(root), seed=0)
    assert ds.train.images.shape[1:] == (3, 20, 20)
    assert any("mixed grayscale and colour images" in note and "read as RGB" in note for note in ds.notes)
    assert any("transparency flattened onto black" in note for note in ds.notes)
    decoded = folder._decode_image
    pixel = {name: decoded(root / name, 3, 20)[:, 5, 5].tolist() for name in images}
    assert pixel["a/gray.png"] == [50, 50, 50]
    assert pixel["a/rgba_opaque.png"] == [10, 20, 30]
    assert pixel["a/rgba_clear.png"] == [0, 0, 0]
    assert pixel["b/palette.gif"] == [40, 80, 120]
    assert pixel["b/gray16.png"] == [70, 70, 70]
    assert all(abs(value - 90) <= 2 for value in pixel["b/photo.jpeg"])


def test_all_gray_reads_one_channel(tmp_path: Path) -> None:
    root = tmp_path / "gray"
    for name in ("x", "y"):
        for i in range(3):
            save(root / name / f"{i}.png", "L", (12, 12), 7 * i)
    assert dataset_task(str(root)) == Task(1, 12, 2)
    ds = load_dataset(str(root))
    assert ds.train.images.shape[1:] == (1, 12, 12)
    assert not [note for note in ds.notes if "grayscale" in note or "resized" in note]


def test_odd_sizes_resized_to_the_median_side(tmp_path: Path) -> None:
    root = flat(tmp_path / "sizes", per_class=4, classes=("a", "b"))
    save(root / "a" / "odd.png", size=(17, 23), colour=(5, 5, 5))
    task = dataset_task(str(root))
    assert task == Task(3, 20, 2)
    ds = load_dataset(str(root))
    assert ds.train.images.shape[1:] == (3, 20, 20)
    assert "images of 2 sizes resized to 20x20" in ds.notes
    assert "1 non-square image center-cropped to square before resizing" in ds.notes


def test_input_overrides_channels_and_resolution(tmp_path: Path) -> None:
    root = flat(tmp_path / "pets", per_class=3, classes=("a", "b"))
    override = Task(1, 8, 1000)
    assert dataset_task(str(root), override) == Task(1, 8, 2)
    ds = load_dataset(str(root), input=override)
    assert ds.test.images.shape[1:] == (1, 8, 8)
    assert "20x20 images resized to 8x8 (--input)" in ds.notes
    assert "6 colour images read as grayscale (--input)" in ds.notes
    with pytest.raises(UserError, match="reads as 1 or 3 channels"):
        dataset_task(str(root), Task(4, 8, 2))


def test_fingerprint_follows_the_files(tmp_path: Path) -> None:
    root = flat(tmp_path / "pets", per_class=3, classes=("a", "b"))
    first = scan_folder(root).fingerprint
    assert scan_folder(root).fingerprint == first
    touched = root / "a" / "0.png"
    stat = touched.stat()
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    second = scan_folder(root).fingerprint
    assert second != first
    save(root / "b" / "new.png")
    assert scan_folder(root).fingerprint not in (first, second)


def test_second_load_reads_the_cache(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = flat(tmp_path / "pets", per_class=3, classes=("a", "b"))
    first = load_dataset(str(root))
    fingerprint = first.fingerprint
    assert (cache / f"{fingerprint}-3x20.npy").is_file() and (cache / f"{fingerprint}-3x20.json").is_file()

    def no_decoding(path: Path, *_: int) -> np.ndarray:
        raise AssertionError(f"read {path} again")

    monkeypatch.setattr(folder, "_decode_image", no_decoding)
    monkeypatch.setattr(folder, "_HEADERS", {})
    monkeypatch.setattr(folder, "_header", no_decoding)
    second = load_dataset(str(root))
    assert torch.equal(second.train.images, first.train.images) and second.fingerprint == fingerprint
    save(root / "b" / "new.png")
    with pytest.raises(AssertionError, match="again"):
        load_dataset(str(root))


def test_memory_mapped_decoding_gives_the_same_arrays(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = split_layout(tmp_path / "data")
    in_memory = load_dataset(str(root))
    monkeypatch.setenv("SCALER_CACHE", str(tmp_path / "other-cache"))
    monkeypatch.setattr(folder, "_available_memory", lambda: 1)
    mapped = load_dataset(str(root))
    assert any("memory-mapped" in note for note in mapped.notes)
    assert isinstance(mapped.train.images, torch.Tensor) and mapped.train.images.dtype == torch.uint8
    assert (tmp_path / "other-cache" / "folders" / f"{mapped.fingerprint}-1x8.npy").is_file()
    for a, b in ((in_memory.train, mapped.train), (in_memory.val, mapped.val), (in_memory.test, mapped.test)):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert torch.equal(load_dataset(str(root)).test.images, in_memory.test.images)


def test_folder_names_and_the_unknown_dataset_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    assert is_folder_dataset("./x") and is_folder_dataset("~/x") and is_folder_dataset("a/b")
    assert is_folder_dataset("photos") and not is_folder_dataset("mnist") and not is_folder_dataset("imagenet21k")
    with pytest.raises(UserError, match="unknown dataset 'imagenet21k'.*folder of class sub-folders"):
        dataset_task("imagenet21k")
    with pytest.raises(UserError, match="unknown dataset 'imagenet21k'.*folder of class sub-folders"):
        load_dataset("imagenet21k")


def corrupt(root: Path) -> Path:
    """A PNG cut in half: its header reads, its pixels do not."""
    flat(root, per_class=3, classes=("a", "b"))
    noise = np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    path = root / "b" / "cut.png"
    Image.fromarray(noise).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def not_an_image(root: Path) -> Path:
    """A text file named .jpg."""
    flat(root, per_class=3, classes=("a", "b"))
    path = root / "a" / "readme.jpg"
    path.write_text("hello")
    return path


def loop(root: Path) -> Path:
    """A class folder holding a symlink back to the root."""
    flat(root, per_class=3, classes=("a", "b"))
    (root / "a" / "again").symlink_to(root, target_is_directory=True)
    return root / "a" / "again"


def different_classes(root: Path) -> Path:
    """train/ with a, b, c and test/ with a, b, d."""
    for split, classes in (("train", "abc"), ("test", "abd")):
        for name in classes:
            save(root / split / name / "0.png")
    return root


def too_few(root: Path) -> Path:
    """A flat folder whose class b has two images (three are needed for train, val and test)."""
    flat(root, per_class=3, classes=("a",))
    save(root / "b" / "0.png")
    save(root / "b" / "1.png")
    return root / "b"


def too_few_to_hold_out(root: Path) -> Path:
    """train/ (no val/) whose class b has one image."""
    split_layout(root, val=None, sizes=(3, 0, 2))
    for path in (root / "train" / "b").glob("[12].png"):
        path.unlink()
    return root / "train" / "b"


def one_class(root: Path) -> Path:
    """Only class a."""
    flat(root, per_class=3, classes=("a",))
    return root


def empty_class(root: Path) -> Path:
    """Class b holds only a text file."""
    flat(root, per_class=3, classes=("a",))
    (root / "b").mkdir()
    (root / "b" / "notes.txt").write_text("x")
    return root / "b"


def empty(root: Path) -> Path:
    """An empty folder."""
    root.mkdir()
    return root


def a_file(root: Path) -> Path:
    """A file, not a folder."""
    root.write_text("x")
    return root


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda root: root, "does not exist"),
        (a_file, "is not a directory"),
        (empty, "is empty"),
        (one_class, "one class folder"),
        (empty_class, "class folder with no images"),
        (corrupt, "corrupt or truncated image"),
        (not_an_image, "not an image Pillow can read"),
        (different_classes, r"only in train/: c; only in test/: d"),
        (loop, "symlink loop"),
        (too_few, "2 images; need at least 3 to split into train, val and test"),
        (too_few_to_hold_out, "1 image; need at least 2 to split into train and val"),
    ],
)
def test_bad_folders_fail_in_one_line_naming_the_path(
    tmp_path: Path, make: Callable[[Path], Path], message: str
) -> None:
    root = tmp_path / "data"
    named = make(root)
    with pytest.raises(UserError, match=message) as caught:
        load_dataset(str(root))
    text = str(caught.value)
    assert "\n" not in text and (shown_path(named) in text or shown_path(named.resolve()) in text)
