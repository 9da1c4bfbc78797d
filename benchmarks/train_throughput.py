"""Training throughput of scaler's loop against a naive eager NCHW DataLoader loop, same model and data.

naive: torchvision-style dataset (PIL image -> Resize -> ToTensor -> Normalize per sample), DataLoader,
       NCHW eager model, the same optimiser and loss.
scaler: scaler.train.train (uint8 tensors in memory, resized and normalised once, channels_last),
        eager and torch.compile'd.

    python benchmarks/train_throughput.py [--base mobilenet] [--images 3000] [--phi 1]
"""

from __future__ import annotations

import argparse
import time
import warnings
from dataclasses import replace

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms

from scaler.data import Dataset, load_dataset
from scaler.nn.build import build
from scaler.scaling import scale_compound
from scaler.train import TrainConfig, make_optimizer, train
from scaler.zoo import base


class NaiveImages(torch.utils.data.Dataset):
    """What torchvision's FashionMNIST does per item: a PIL image through a transform."""

    def __init__(self, dataset: Dataset, resolution: int) -> None:
        mean, std = dataset.mean_std
        self.images, self.labels = dataset.train.images, dataset.train.labels
        self.transform = transforms.Compose(
            [transforms.Resize(resolution), transforms.ToTensor(), transforms.Normalize(mean, std)]
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = Image.fromarray(self.images[index, 0].numpy(), mode="L")
        return self.transform(image), int(self.labels[index])


def naive_images_per_second(model: torch.nn.Module, dataset: Dataset, resolution: int, config: TrainConfig) -> float:
    """One epoch of the naive loop; images per second."""
    torch.manual_seed(config.seed)
    loader = DataLoader(NaiveImages(dataset, resolution), batch_size=config.batch_size, shuffle=True, num_workers=0)
    optimizer = make_optimizer(model, config)
    model.train()
    seen, start = 0, time.perf_counter()
    for x, y in loader:
        loss = F.cross_entropy(model(x), y, label_smoothing=config.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(y)
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", default="mobilenet")
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--phi", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    dataset = load_dataset("fashion-mnist", subset=args.images)
    dataset = replace(dataset, val=dataset.val.subset(200, 0))
    spec = scale_compound(base(args.base, 1, 28, 10), 1.2, 1.1, 1.15, args.phi)
    config = TrainConfig(epochs=1, batch_size=args.batch_size, channels_last=True)
    print(
        f"# {args.base} phi={args.phi} ({spec.resolution} px), {len(dataset.train)} Fashion-MNIST images, "
        f"batch {args.batch_size}, {torch.get_num_threads()} threads"
    )
    rows = {}
    for name in ("naive", "scaler", "scaler+compile", "naive", "scaler"):
        torch.manual_seed(0)
        model = build(spec)
        if name == "naive":
            value = naive_images_per_second(model, dataset, spec.resolution, config)
        else:
            run = replace(config, compile=name.endswith("compile"))
            value = train(model, dataset, spec.resolution, run, progress=False).images_per_second
        rows[name] = max(rows.get(name, 0.0), value)
    print(f"{'loop':<16}{'images/s':>10}{'vs naive':>10}")
    for name, value in rows.items():
        print(f"{name:<16}{value:>10.1f}{value / rows['naive']:>9.2f}x")


if __name__ == "__main__":
    main()
