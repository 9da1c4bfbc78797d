"""Training throughput of the default proxy network: naive eager DataLoader loop vs scaler eager vs compiled.

naive: torchvision-style dataset (PIL image -> Resize -> ToTensor -> Normalize per sample), DataLoader,
       NCHW eager model, the same optimiser and loss.
scaler: scaler.training.train.train (uint8 tensors in memory, resized and normalised once, channels_last),
        eager and torch.compile'd (the compiled run's first pass includes compilation; the second reuses it).

Each loop runs twice, interleaved; the better run counts.
Eager at the other batch sizes runs once each. Achieved GFLOP/s = 3 x 2 x MACs per image x images/s
(forward, and a backward of twice its cost), beside the machine's fp32 matmul peak measured in the same run.
Last line: speedup_vs_naive=<x> peak_fraction=<f>

    python benchmarks/train_throughput.py [--width 0.25] [--images 6000] [--batch-size 256] [--phi 0]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms

from scaler.model.nn.build import build
from scaler.model.scaling import EFFICIENTNET_COEFFICIENTS, scale_compound
from scaler.report.files import write
from scaler.study.run import RunConfig, measure, setup
from scaler.training.data import Dataset
from scaler.training.train import TrainConfig, make_optimizer, train

RESULTS = Path(__file__).resolve().parent / "results"


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


def matmul_peak_gflops(size: int = 1024, repeats: int = 20) -> float:
    """Best fp32 GFLOP/s of a size x size matmul on this machine with the current threads."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = max(best, 2 * size**3 / (time.perf_counter() - start) / 1e9)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="mobilenet")
    parser.add_argument("--width", type=float, default=0.25, help="width multiplier of the base (the search's proxy)")
    parser.add_argument("--phi", type=float, default=0.0, help="scale by EfficientNet's coefficients first")
    parser.add_argument("--images", type=int, default=6000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--batch-sizes", type=int, nargs="*", default=[64, 128], help="also time scaler eager at these")
    parser.add_argument("--out", default=str(RESULTS / "train_throughput"))
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    config = RunConfig(
        command="benchmark train_throughput",
        base=args.base,
        width=args.width,
        subset=args.images,
        val_size=500,
        train=TrainConfig(epochs=1, batch_size=args.batch_size, precise_bn=256),
        folder=Path(args.out),
        progress=False,
        argv=tuple(sys.argv),
    )
    run = setup(config)
    assert run.dataset is not None
    spec = scale_compound(run.spec, *EFFICIENTNET_COEFFICIENTS, args.phi) if args.phi else run.spec
    macs = measure(spec, runs=1).macs
    print(
        f"# {args.base} x{args.width:g} phi={args.phi:g} ({spec.resolution} px, {macs / 1e6:.2f} M MACs), "
        f"{len(run.dataset.train)} Fashion-MNIST images, batch {args.batch_size}, {torch.get_num_threads()} threads"
    )
    peak = matmul_peak_gflops()
    rows: dict[str, list[float]] = {"naive": [], "scaler eager": [], "scaler compiled": []}
    for _ in range(2):
        for name in rows:
            torch.manual_seed(0)
            model = build(spec)
            if name == "naive":
                rows[name].append(naive_images_per_second(model, run.dataset, spec.resolution, config.train))
            else:
                train_config = replace(config.train, compile=name.endswith("compiled"))
                result = train(model, run.dataset, spec.resolution, train_config, progress=False)
                rows[name].append(result.images_per_second)
    for batch in args.batch_sizes:
        torch.manual_seed(0)
        result = train(
            build(spec), run.dataset, spec.resolution, replace(config.train, batch_size=batch), progress=False
        )
        rows[f"eager batch {batch}"] = [result.images_per_second, result.images_per_second]
    best = {name: max(values) for name, values in rows.items()}
    print(f"fp32 matmul peak (1024x1024, best of 20): {peak:.1f} GFLOP/s")
    print(f"{'loop':<18}{'run 1':>10}{'run 2':>10}{'best':>10}{'vs naive':>10}{'GFLOP/s':>10}{'of peak':>9}")
    lines = []
    for name, values in rows.items():
        gflops = 6 * macs * best[name] / 1e9
        lines.append({"loop": name, "run1": values[0], "run2": values[1], "best": best[name], "gflops": gflops})
        print(
            f"{name:<18}{values[0]:>10.1f}{values[1]:>10.1f}{best[name]:>10.1f}"
            f"{best[name] / best['naive']:>9.2f}x{gflops:>10.2f}{gflops / peak:>9.1%}"
        )
    fastest = max(best["scaler eager"], best["scaler compiled"])  # at the default batch size
    write(
        run.folder,
        config,
        config.argv,
        run.started,
        {"train_throughput": pd.DataFrame(lines)},
        options={"peak_gflops": peak},
    )
    print(f"speedup_vs_naive={fastest / best['naive']:.2f} peak_fraction={6 * macs * fastest / 1e9 / peak:.3f}")


if __name__ == "__main__":
    main()
