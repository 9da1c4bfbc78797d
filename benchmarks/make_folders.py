"""Write small real image folders (ImageFolder layout) for checking scaler's defaults on data they were not tuned to.

digits: scikit-learn's copy of the UCI handwritten digits (1,797 8x8 grayscale images, 10 classes), flat layout.
fashion-mnist-4k: 4,000 training and 1,000 test images of Debian's Fashion-MNIST as PNGs in train/ and test/.
Usage: python benchmarks/make_folders.py OUT_DIR (needs scikit-learn for digits: pip install scikit-learn).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from scaler.training.data import load_dataset


def write_split(folder: Path, images: np.ndarray, labels: np.ndarray, names: list[str]) -> None:
    """One PNG per image under folder/<class name>/."""
    for index, (image, label) in enumerate(zip(images, labels)):
        target = folder / names[int(label)]
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(target / f"{index:05d}.png")


def digits(out: Path) -> None:
    """scikit-learn's digits, 0-16 intensities scaled to 0-255, one folder per digit."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = np.round(data.images * 255 / 16).astype(np.uint8)
    write_split(out / "digits", images, data.target, [str(d) for d in range(10)])


def fashion_subset(out: Path, train: int = 4000, test: int = 1000, seed: int = 0) -> None:
    """A seeded subset of Debian's Fashion-MNIST as train/ and test/ folders of PNGs."""
    names = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
    dataset = load_dataset("fashion-mnist", val_fraction=0.01, download=False)
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("test", test)):
        source = dataset.train if split == "train" else dataset.test
        index = rng.choice(len(source), count, replace=False)
        write_split(
            out / "fashion-mnist-4k" / split, source.images[index, 0].numpy(), source.labels[index].numpy(), names
        )


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "data")
    digits(root)
    fashion_subset(root)
    print(f"wrote {root}/digits and {root}/fashion-mnist-4k")
