"""A folder of images as a dataset: the ImageFolder layout, read once into a cache keyed by a fingerprint of its files."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import statistics
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm import tqdm

from scaler.errors import UserError, shown_path
from scaler.training.data import VAL_FRACTION, Dataset, Split
from scaler.training.tasks import DATASET_TASKS, Task

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
SPLIT_FOLDERS = {"train": "train", "val": "val", "validation": "val", "test": "test"}
SPLIT_ORDER = ("train", "val", "test")
TEST_FRACTION = 0.2
DEFAULT_CACHE = Path("~/.cache/scaler")
CACHE_VERSION = 1
DECODE_CHUNK = 1024

_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "F"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_HEADERS: dict[tuple[str, str], Headers] = {}


@dataclass(frozen=True, slots=True)
class ImageFile:
    """One image of the folder: its path under the root, split ('' in a flat folder), label, size and mtime."""

    relative: str
    split: str
    label: int
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class FolderIndex:
    """The images of a folder in a fixed order (split, class, path), its classes and the fingerprint of its files."""

    root: Path
    classes: tuple[str, ...]
    files: tuple[ImageFile, ...]
    fingerprint: str

    @property
    def has_splits(self) -> bool:
        """Whether the folder holds train/ and test/ folders rather than class folders."""
        return bool(self.files) and self.files[0].split != ""

    @property
    def class_to_idx(self) -> dict[str, int]:
        """Label of each class, as torchvision's ImageFolder numbers them (sorted names)."""
        return {name: label for label, name in enumerate(self.classes)}

    def path(self, image: ImageFile) -> Path:
        """Where an image lies."""
        return self.root / image.relative


@dataclass(frozen=True)
class Headers:
    """What the image headers say: how many images have each mode and each (width, height), and how many carry alpha."""

    modes: dict[str, int]
    sizes: dict[tuple[int, int], int]
    with_alpha: int = 0

    def to_json(self) -> dict[str, Any]:
        """Plain dict for the header cache."""
        return {"modes": self.modes, "sizes": [[w, h, n] for (w, h), n in self.sizes.items()], "alpha": self.with_alpha}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Headers:
        """Inverse of to_json."""
        sizes = {(int(w), int(h)): int(n) for w, h, n in data["sizes"]}
        return cls({str(mode): int(n) for mode, n in data["modes"].items()}, sizes, int(data["alpha"]))


@dataclass(frozen=True)
class FolderPlan:
    """How the folder is read: the task and what was done to the images to fit it."""

    task: Task
    notes: tuple[str, ...] = ()


def is_folder_dataset(name: str) -> bool:
    """Whether a --dataset value names a folder rather than a known dataset."""
    if name in DATASET_TASKS:
        return False
    separators = [sep for sep in (os.sep, os.altsep) if sep]
    if any(sep in name for sep in separators) or name.startswith((".", "~")):
        return True
    try:
        return Path(name).is_dir()
    except (OSError, ValueError):
        return False


def dataset_label(name: str) -> str:
    """A dataset as a part of folder and study names: the folder's own name for a folder, else the dataset's."""
    if not is_folder_dataset(name):
        return name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(name).expanduser().resolve().name).strip("-._") or "folder"


def data_identity(name: str) -> str:
    """What makes a folder the same data: the fingerprint of its files' names, sizes and times ('' for a known
    dataset, whose name says it)."""
    return scan_folder(Path(name)).fingerprint if is_folder_dataset(name) else ""


def cache_dir() -> Path:
    """Where decoded folders are cached: $SCALER_CACHE/folders, else ~/.cache/scaler/folders."""
    return Path(os.environ.get("SCALER_CACHE") or DEFAULT_CACHE).expanduser() / "folders"


def scan_folder(path: Path) -> FolderIndex:
    """Index the images of an ImageFolder-layout folder (class folders, or train/[val/]test/ holding them)."""
    root = _checked_root(path)
    top = _visible(root)
    folders = [entry for entry in top if os.path.isdir(entry)]
    _no_loose_images(root, top)
    names = {Path(entry).name for entry in folders}
    if names & {"train", "test"}:
        return _scan_splits(root, folders)
    if not folders:
        what = "is empty" if not top else "holds no class sub-folders"
        raise UserError(
            f"{shown_path(root)} {what}; expected class folders (<folder>/<class>/<image>) or train/ and test/ folders"
        )
    classes = _class_names(root, folders)
    real_root = os.path.realpath(root)
    files = [
        _entry(root, image, "", label)
        for label, name in enumerate(classes)
        for image in _images(root / name, {real_root})
    ]
    return _index(root, classes, files)


def folder_task(name: str | Path, input: Task | None = None) -> Task:
    """The task of a folder from its image headers (no decoding); `input` overrides channels and resolution."""
    return folder_plan(scan_folder(Path(name)), input).task


def folder_plan(index: FolderIndex, input: Task | None = None, progress: bool = False) -> FolderPlan:
    """Channels and square resolution the folder is read at, with notes on conversions and resizing."""
    headers = read_headers(index, progress)
    total = sum(headers.modes.values())
    gray = sum(n for mode, n in headers.modes.items() if _is_gray(mode))
    colour = total - gray
    notes: list[str] = []
    override = " (--input)" if input is not None else ""
    if input is not None:
        if input.in_channels not in (1, 3):
            raise UserError(
                f"--input {input.in_channels}x{input.resolution}x{input.resolution}: "
                f"a folder of images reads as 1 or 3 channels ({shown_path(index.root)})"
            )
        channels = input.in_channels
    else:
        channels = 3 if colour else 1
    if gray and colour and channels == 3:
        notes.append(f"mixed grayscale and colour images ({gray} and {colour}): read as RGB")
    elif channels == 3 and not colour:
        notes.append(f"grayscale images read as 3 channels{override}")
    elif channels == 1 and colour:
        notes.append(f"{colour} colour image{_s(colour)} read as grayscale{override}")
    if headers.with_alpha:
        notes.append(f"{headers.with_alpha} image{_s(headers.with_alpha)} with transparency flattened onto black")
    resolution = input.resolution if input is not None else _resolution(headers.sizes)
    notes.extend(_size_notes(headers.sizes, resolution, override))
    return FolderPlan(Task(channels, resolution, len(index.classes)), tuple(notes))


def read_headers(index: FolderIndex, progress: bool = False) -> Headers:
    """Mode and size of every image from its header (no decoding); kept per (folder, fingerprint) in-process and on disk."""
    key = (str(index.root), index.fingerprint)
    if key in _HEADERS:
        return _HEADERS[key]
    cached = cache_dir() / f"{index.fingerprint}-headers.json"
    headers = _read_header_cache(cached, index.fingerprint)
    if headers is None:
        modes: Counter[str] = Counter()
        sizes: Counter[tuple[int, int]] = Counter()
        with_alpha = 0
        bar = tqdm(index.files, desc="reading image headers", unit="img", file=sys.stderr, disable=not progress)
        for image in bar:
            mode, size, alpha = _header(index.path(image))
            modes[mode] += 1
            sizes[size] += 1
            with_alpha += alpha
        headers = Headers(dict(modes), dict(sizes), with_alpha)
        payload = {"version": CACHE_VERSION, "fingerprint": index.fingerprint, **headers.to_json()}
        try:
            _write_atomically(cached, json.dumps(payload).encode())
        except OSError:
            pass  # a cache folder that cannot be written only costs reading the headers again
    _HEADERS[key] = headers
    return headers


def load_folder(
    name: str | Path,
    val_fraction: float = VAL_FRACTION,
    subset: int | None = None,
    seed: int = 0,
    input: Task | None = None,
    progress: bool = False,
) -> Dataset:
    """A folder of images as a Dataset: decoded once into the cache, split by its train/val/test folders or by seed."""
    index = scan_folder(Path(name))
    plan = folder_plan(index, input, progress)
    images, cache_notes, cache_file = _decoded(index, plan.task, progress)
    labels = torch.tensor([image.label for image in index.files], dtype=torch.int64)
    train, val, test, split_note = _splits(index, images, labels, val_fraction, seed)
    if subset is not None:
        train = train.subset(subset, seed)
    task = plan.task
    source = f"{index.root} ({len(index.files)} images read at {task.in_channels}x{task.resolution}x{task.resolution}"
    source += f", cached in {cache_file})" if cache_file else ")"
    return Dataset(
        name=str(index.root),
        train=train,
        val=val,
        test=test,
        num_classes=len(index.classes),
        source=source,
        classes=index.classes,
        fingerprint=index.fingerprint,
        notes=(*plan.notes, split_note, *cache_notes),
    )


def _checked_root(path: Path) -> Path:
    """The folder's absolute path, checking that it is a directory."""
    expanded = Path(path).expanduser()
    try:
        root = expanded.resolve()
        exists, is_dir = root.exists(), root.is_dir()
    except (OSError, RuntimeError) as error:
        raise UserError(f"dataset folder {shown_path(expanded)}: {_reason(error)}") from None
    if not exists:
        raise UserError(f"dataset folder {shown_path(expanded)} does not exist")
    if not is_dir:
        raise UserError(f"dataset {shown_path(expanded)} is not a directory; give a folder of class sub-folders")
    return root


def _visible(directory: Path) -> list[str]:
    """Paths of the entries of directory not hidden by a leading dot, sorted by name."""
    try:
        names = sorted(entry.name for entry in os.scandir(directory) if not entry.name.startswith("."))
    except OSError as error:
        raise UserError(f"cannot read {shown_path(directory)}: {_reason(error)}") from None
    return [os.path.join(directory, name) for name in names]


def _is_image_name(path: str) -> bool:
    """Whether a file name has an image extension (any case)."""
    return os.path.splitext(path)[1].lower() in IMAGE_SUFFIXES


def _no_loose_images(directory: Path, entries: list[str]) -> None:
    """Refuse images lying beside the class folders rather than in them."""
    loose = [entry for entry in entries if _is_image_name(entry) and not os.path.isdir(entry)]
    if loose:
        raise UserError(
            f"{shown_path(loose[0])}: images must sit in class sub-folders of {shown_path(directory)} "
            f"({len(loose)} loose image{_s(len(loose))})"
        )


def _class_names(parent: Path, folders: list[str]) -> tuple[str, ...]:
    """The class folder names in sorted order, checking there are at least two."""
    classes = tuple(sorted(Path(folder).name for folder in folders))
    if len(classes) < 2:
        raise UserError(f"{shown_path(parent)} has one class folder ({classes[0]}/); need at least 2 classes")
    return classes


def _scan_splits(root: Path, folders: list[str]) -> FolderIndex:
    """Index a folder holding train/, test/ and optionally val/ (or validation/), each with the same class folders."""
    names = sorted(Path(folder).name for folder in folders)
    for needed in ("train", "test"):
        if needed not in names:
            other = "test" if needed == "train" else "train"
            raise UserError(
                f"{shown_path(root)} has {other}/ but no {needed}/ folder; give train/ and test/ (val/ optional), "
                "or class folders directly"
            )
    unexpected = [name for name in names if name not in SPLIT_FOLDERS]
    if unexpected:
        raise UserError(
            f"{shown_path(root / unexpected[0])}: unexpected folder beside train/ and test/ "
            "(expected train/, val/ or validation/, test/)"
        )
    if "val" in names and "validation" in names:
        raise UserError(f"{shown_path(root)} has both val/ and validation/; keep one")
    real_root = os.path.realpath(root)
    class_sets: dict[str, tuple[str, ...]] = {}
    for name in names:
        split_dir = root / name
        entries = _visible(split_dir)
        _no_loose_images(split_dir, entries)
        class_folders = [entry for entry in entries if os.path.isdir(entry)]
        if not class_folders:
            raise UserError(f"{shown_path(split_dir)} holds no class sub-folders")
        class_sets[name] = _class_names(split_dir, class_folders)
    classes = class_sets["train"]
    for name, found in class_sets.items():
        if found != classes:
            only_train = ", ".join(sorted(set(classes) - set(found))) or "none"
            only_here = ", ".join(sorted(set(found) - set(classes))) or "none"
            raise UserError(
                f"{shown_path(root)}: class folders differ between train/ and {name}/: "
                f"only in train/: {only_train}; only in {name}/: {only_here}"
            )
    order = sorted(names, key=lambda name: SPLIT_ORDER.index(SPLIT_FOLDERS[name]))
    files = [
        _entry(root, image, SPLIT_FOLDERS[name], label)
        for name in order
        for label, class_name in enumerate(classes)
        for image in _images(root / name / class_name, {real_root, os.path.realpath(root / name)})
    ]
    return _index(root, classes, files)


def _images(class_dir: Path, ancestors: set[str]) -> list[str]:
    """Image paths under a class folder, followed through symlinks; an empty class or a symlink loop is an error."""
    images = list(_walk(class_dir, frozenset(ancestors)))
    if not images:
        kinds = " ".join(sorted(IMAGE_SUFFIXES))
        raise UserError(f"{shown_path(class_dir)}: class folder with no images ({kinds})")
    return images


def _walk(directory: Path, ancestors: frozenset[str]) -> Iterator[str]:
    """Image files under directory in sorted order, refusing a directory that is its own ancestor."""
    real = os.path.realpath(directory)
    if real in ancestors:
        raise UserError(f"{shown_path(directory)}: symlink loop (leads back to {shown_path(real)})")
    inside = ancestors | {real}
    for entry in _visible(directory):
        if os.path.isdir(entry):
            yield from _walk(Path(entry), inside)
        elif _is_image_name(entry):
            yield entry


def _entry(root: Path, path: str, split: str, label: int) -> ImageFile:
    """The index entry of one image."""
    try:
        stat = os.stat(path)
    except OSError as error:
        broken = os.path.islink(path)
        raise UserError(f"{shown_path(path)}: {'broken symlink' if broken else _reason(error)}") from None
    return ImageFile(Path(os.path.relpath(path, root)).as_posix(), split, label, stat.st_size, stat.st_mtime_ns)


def _index(root: Path, classes: tuple[str, ...], files: list[ImageFile]) -> FolderIndex:
    """A FolderIndex with the fingerprint of its files: sha256 over sorted (relative path, size, mtime_ns)."""
    listing = sorted((image.relative, image.size, image.mtime_ns) for image in files)
    fingerprint = hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]
    return FolderIndex(root, classes, tuple(files), fingerprint)


def _header(path: Path) -> tuple[str, tuple[int, int], bool]:
    """Mode, (width, height) and whether it carries alpha, from an image's header."""
    try:
        with Image.open(path) as image:
            mode, size = image.mode, image.size
            alpha = mode in _ALPHA_MODES or "transparency" in image.info
    except Exception as error:  # noqa: BLE001 - whatever Pillow raises, the file is not an image it can read
        raise UserError(f"{shown_path(path)}: not an image Pillow can read ({_reason(error)})") from None
    return mode, (int(size[0]), int(size[1])), alpha


def _read_header_cache(path: Path, fingerprint: str) -> Headers | None:
    """Headers cached on disk for this fingerprint, if readable."""
    try:
        data = json.loads(path.read_text())
        if data.get("version") != CACHE_VERSION or data.get("fingerprint") != fingerprint:
            return None
        return Headers.from_json(data)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _is_gray(mode: str) -> bool:
    """Whether an image mode holds one intensity channel (optionally with alpha)."""
    return mode in _GRAY_MODES or mode.startswith("I;16")


def _resolution(sizes: dict[tuple[int, int], int]) -> int:
    """The common side when every image is the same square; else the median shorter side."""
    if len(sizes) == 1:
        ((width, height),) = sizes
        if width == height:
            return width
    sides = sorted(min(size) for size, count in sizes.items() for _ in range(count))
    return int(statistics.median_low(sides))


def _size_notes(sizes: dict[tuple[int, int], int], resolution: int, override: str) -> list[str]:
    """What resizing to resolution does to images of these sizes."""
    notes: list[str] = []
    target = f"{resolution}x{resolution}"
    if len(sizes) > 1:
        notes.append(f"images of {len(sizes)} sizes resized to {target}{override}")
    elif next(iter(sizes)) != (resolution, resolution):
        ((width, height),) = sizes
        notes.append(f"{width}x{height} images resized to {target}{override}")
    non_square = sum(count for (width, height), count in sizes.items() if width != height)
    if non_square:
        notes.append(f"{non_square} non-square image{_s(non_square)} center-cropped to square before resizing")
    return notes


def _decode_image(path: Path, channels: int, resolution: int) -> np.ndarray:
    """One image as uint8 C×R×R: EXIF-rotated, alpha flattened onto black, center-cropped to square and resized."""
    try:
        with Image.open(path) as opened:
            opened.draft(None, (resolution, resolution))
            opened.load()
            image = _eight_bit(ImageOps.exif_transpose(opened), "L" if channels == 1 else "RGB")
            width, height = image.size
            side = min(width, height)
            left, top = (width - side) // 2, (height - side) // 2
            box = (left, top, left + side, top + side)
            image = image.resize((resolution, resolution), Image.Resampling.BILINEAR, box=box)
    except Exception as error:  # noqa: BLE001 - Pillow raises many types for a corrupt or truncated file
        raise UserError(f"{shown_path(path)}: corrupt or truncated image ({_reason(error)})") from None
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _eight_bit(image: Image.Image, mode: str) -> Image.Image:
    """image in mode 'L' or 'RGB': 16-bit gray scaled to 8 bits, transparency composited onto black."""
    if image.mode.startswith("I;16"):
        image = Image.fromarray((np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8))
    elif image.mode in ("I", "F", "1"):
        image = image.convert("L")
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    return image.convert(mode)


def _decode_into(index: FolderIndex, task: Task, target: np.ndarray, progress: bool) -> None:
    """Decode every image of the index into target (N×C×R×R), in order, on a few threads."""
    decode = partial(_decode_image, channels=task.in_channels, resolution=task.resolution)
    paths = [index.path(image) for image in index.files]
    workers = min(8, os.cpu_count() or 1)
    desc = f"decoding {index.root.name}"
    with tqdm(total=len(paths), desc=desc, unit="img", file=sys.stderr, disable=not progress) as bar:
        with ThreadPoolExecutor(workers) as pool:
            for start in range(0, len(paths), DECODE_CHUNK):
                for offset, array in enumerate(pool.map(decode, paths[start : start + DECODE_CHUNK])):
                    target[start + offset] = array
                    bar.update()


def _decoded(index: FolderIndex, task: Task, progress: bool) -> tuple[torch.Tensor, tuple[str, ...], Path | None]:
    """All images as one uint8 tensor from the cache, decoding them first when not cached; memory-mapped when large."""
    shape = (len(index.files), task.in_channels, task.resolution, task.resolution)
    cached = cache_dir() / f"{index.fingerprint}-{task.in_channels}x{task.resolution}.npy"
    meta = cached.with_suffix(".json")
    manifest = _manifest(index, shape)
    large = math.prod(shape) > _available_memory() // 4
    mapped_note = (f"{shape[0]} images memory-mapped from {cached} (over a quarter of the memory available)",)
    array = _read_cache(cached, meta, manifest, large)
    if array is not None:
        return torch.from_numpy(array), mapped_note if large else (), cached
    if large:
        try:
            _decode_to_file(index, task, cached, shape, progress)
            _write_atomically(meta, json.dumps(manifest).encode())
            mapped = np.load(cached, mmap_mode="c")
        except OSError as error:
            raise UserError(
                f"cannot write the decoded images of {shown_path(index.root)} to {shown_path(cached)}: "
                f"{_reason(error)}; set SCALER_CACHE to a folder with room"
            ) from None
        return torch.from_numpy(mapped), mapped_note, cached
    decoded = np.empty(shape, dtype=np.uint8)
    _decode_into(index, task, decoded, progress)
    try:
        _write_atomically(cached, decoded)
        _write_atomically(meta, json.dumps(manifest).encode())
    except OSError as error:
        return torch.from_numpy(decoded), (f"decoded images not cached ({_reason(error)})",), None
    return torch.from_numpy(decoded), (), cached


def _manifest(index: FolderIndex, shape: tuple[int, ...]) -> dict[str, Any]:
    """What the JSON beside a cached array records: enough to check the array belongs to the folder as it is."""
    split_sizes = Counter(image.split or "all" for image in index.files)
    return {
        "version": CACHE_VERSION,
        "fingerprint": index.fingerprint,
        "root": str(index.root),
        "shape": list(shape),
        "classes": list(index.classes),
        "split_sizes": dict(split_sizes),
        "labels": [image.label for image in index.files],
    }


def _read_cache(cached: Path, meta: Path, manifest: dict[str, Any], mmap: bool) -> np.ndarray | None:
    """The cached array when it and its JSON match the manifest (the root may differ: a moved folder is the same)."""
    try:
        found = json.loads(meta.read_text())
        if {key: value for key, value in found.items() if key != "root"} != {
            key: value for key, value in manifest.items() if key != "root"
        }:
            return None
        array = np.load(cached, mmap_mode="c" if mmap else None)
    except (OSError, ValueError, EOFError, TypeError, AttributeError):
        return None
    if array.shape != tuple(manifest["shape"]) or array.dtype != np.uint8:
        return None
    return array


def _decode_to_file(index: FolderIndex, task: Task, cached: Path, shape: tuple[int, ...], progress: bool) -> None:
    """Decode straight into a memory-mapped .npy beside the cache file, then move it into place."""
    cached.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=cached.parent, prefix=f".{cached.name}.", suffix=".tmp")
    os.close(handle)
    try:
        target = np.lib.format.open_memmap(temp, mode="w+", dtype=np.uint8, shape=shape)
        _decode_into(index, task, target, progress)
        target.flush()
        del target
        os.replace(temp, cached)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _write_atomically(path: Path, content: bytes | np.ndarray) -> None:
    """Write bytes, or an array as .npy, to a temporary file beside path, then rename it over path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            if isinstance(content, np.ndarray):
                np.save(file, content)
            else:
                file.write(content)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _available_memory() -> int:
    """Bytes of memory available now: MemAvailable on Linux, else free pages, else all physical memory."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    for pages in ("SC_AVPHYS_PAGES", "SC_PHYS_PAGES"):
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf(pages)
        except (ValueError, OSError, AttributeError):
            continue
    return 1 << 62


def _splits(
    index: FolderIndex, images: torch.Tensor, labels: torch.Tensor, val_fraction: float, seed: int
) -> tuple[Split, Split, Split, str]:
    """Train, val and test from the split folders (val held out of train when absent) or by seed, and how."""
    rng = np.random.default_rng(seed)
    label_array = labels.numpy()
    if index.has_splits:
        bounds: dict[str, tuple[int, int]] = {}
        for position, image in enumerate(index.files):
            bounds[image.split] = (bounds.get(image.split, (position, 0))[0], position + 1)
        part = {name: Split(images[start:stop], labels[start:stop]) for name, (start, stop) in bounds.items()}
        if "val" in part:
            return part["train"], part["val"], part["test"], "splits from the train/, val/ and test/ folders"
        train_idx, val_idx = _hold_out(index, np.arange(*bounds["train"]), label_array, val_fraction, 1, rng, "train")
        note = f"no val/ folder: {val_fraction:.0%} of each class of train/ held out as val (seed {seed})"
        return _take(images, labels, train_idx), _take(images, labels, val_idx), part["test"], note
    rest, test_idx = _hold_out(index, np.arange(len(index.files)), label_array, TEST_FRACTION, 2, rng, "")
    train_idx, val_idx = _hold_out(index, rest, label_array, val_fraction, 1, rng, "")
    note = (
        f"no train/ and test/ folders: each class split by seed {seed} into train {len(train_idx)}, val {len(val_idx)}, "
        f"test {len(test_idx)} images ({TEST_FRACTION:.0%} test, {val_fraction:.0%} of the rest val)"
    )
    return _take(images, labels, train_idx), _take(images, labels, val_idx), _take(images, labels, test_idx), note


def _hold_out(
    index: FolderIndex,
    positions: np.ndarray,
    labels: np.ndarray,
    fraction: float,
    keep: int,
    rng: np.random.Generator,
    split: str,
) -> tuple[np.ndarray, np.ndarray]:
    """positions cut per class into (kept, held out): `fraction` held at random, at least one, at least `keep` kept."""
    kept: list[np.ndarray] = []
    held: list[np.ndarray] = []
    for label, class_name in enumerate(index.classes):
        members = positions[labels[positions] == label]
        if len(members) <= keep:
            into = "train and val" if keep == 1 else "train, val and test"
            raise UserError(
                f"{shown_path(index.root / split / class_name)}: {len(members)} image{_s(len(members))}; "
                f"need at least {keep + 1} to split into {into}"
            )
        shuffled = rng.permutation(members)
        n_held = min(max(1, round(len(members) * fraction)), len(members) - keep)
        held.append(shuffled[:n_held])
        kept.append(shuffled[n_held:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held))


def _take(images: torch.Tensor, labels: torch.Tensor, positions: np.ndarray) -> Split:
    """The images and labels at positions."""
    index = torch.from_numpy(positions)
    return Split(images[index], labels[index])


def _reason(error: BaseException) -> str:
    """One-line, bounded reason from an exception."""
    text = getattr(error, "strerror", None) or " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _s(count: int) -> str:
    """Plural suffix."""
    return "" if count == 1 else "s"
