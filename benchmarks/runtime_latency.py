"""FReLU and FLGC latency in two runtimes, side by side in one run: torch (the deployed form: BN folded, shifted
depthwise, torch.compile) and ONNX Runtime (the deployed form exported to ONNX), at batch 1 and 32.

MobileNet x0.25 on Fashion-MNIST: ReLU, FReLU everywhere, and the FReLU mask the committed frelu study recommends
(the front's most accurate member); ResNet-50 x0.25 (+spatial, as the FLGC study): dense, FLGC G = 4, fixed G = 4.
Every network of a (runtime, batch) cell is timed in interleaved rounds (each the median of --runs passes), the
median over rounds reported. Untrained weights: latency does not depend on their values.

    python benchmarks/runtime_latency.py [--rounds 7] [--runs 30] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import warnings
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from scaler.model.complexity import DEFAULT_THREADS, latency_times
from scaler.model.nn.build import build
from scaler.model.nn.deploy import deploy
from scaler.model.runtime import OrtModel
from scaler.model.scaling import scale
from scaler.model.spec import NetSpec
from scaler.model.variants import apply_variant
from scaler.model.zoo import base

FRONT = Path("studies/mobilenet-w0.25-fashion-mnist/frelu_front.csv")
BATCHES = (1, 32)


def recommended_mask() -> str:
    """The committed FReLU front's most accurate mask as a variant (frelu:5 for mask 00001)."""
    front = pd.read_csv(FRONT, dtype={"mask": str})
    mask = str(front.loc[front.val_acc.idxmax(), "mask"])
    stages = [str(i + 1) for i, bit in enumerate(mask) if bit == "1"]
    return f"frelu:{','.join(stages)}" if stages else "relu"


def networks() -> dict[str, NetSpec]:
    """The compared networks, by name."""
    mobilenet = scale(base("mobilenet", 1, 28, 10), 1.0, 0.25, 1.0)
    resnet = scale(base("resnet50", 1, 28, 10), 1.0, 0.25, 1.0)
    mask = recommended_mask()
    return {
        "relu": mobilenet,
        "frelu": apply_variant(mobilenet, "frelu"),
        f"mask {mask}": apply_variant(mobilenet, mask),
        "dense": resnet,
        "flgc4": apply_variant(resnet, "flgc:4+spatial"),
        "fixed4": apply_variant(resnet, "fixed:4+spatial"),
    }


def timed_forms(specs: dict[str, NetSpec], runtime: str, threads: int) -> dict[str, nn.Module]:
    """Each network in the runtime's deployed form, warmed by one call."""
    forms = {}
    for name, spec in specs.items():
        torch.manual_seed(0)
        model = build(spec).eval()
        form = deploy(model) if runtime == "torch" else OrtModel(model, spec.input_shape, threads)
        with torch.no_grad():
            form(torch.randn(1, *spec.input_shape))
        forms[name] = form
    return forms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    specs = networks()
    print(f"# latency in ms: median over {args.rounds} interleaved rounds of the median of {args.runs} passes, "
          f"{args.threads} threads; torch = deployed form compiled, ort = ONNX Runtime CPU session")  # fmt: skip
    ratios: dict[str, float] = {}
    rows = []
    for runtime in ("torch", "ort"):
        forms = timed_forms(specs, runtime, args.threads)
        for batch in BATCHES:
            samples: dict[str, list[float]] = {name: [] for name in forms}
            for _ in range(args.rounds):
                for name, form in forms.items():
                    times = latency_times(form, specs[name].input_shape, batch, runs=args.runs, threads=args.threads)
                    samples[name].append(statistics.median(times))
            ms = {name: statistics.median(values) for name, values in samples.items()}
            rows.append((runtime, batch, ms))
            mask = next(name for name in ms if name.startswith("mask"))
            ratios[f"frelu_vs_relu_{runtime}_b{batch}"] = ms["frelu"] / ms["relu"]
            ratios[f"mask_vs_relu_{runtime}_b{batch}"] = ms[mask] / ms["relu"]
            ratios[f"flgc4_vs_dense_{runtime}_b{batch}"] = ms["flgc4"] / ms["dense"]
            ratios[f"fixed4_vs_dense_{runtime}_b{batch}"] = ms["fixed4"] / ms["dense"]
    names = list(specs)
    print(f"{'runtime':<8}{'batch':>6}" + "".join(f"{name:>16}" for name in names))
    for runtime, batch, ms in rows:
        print(f"{runtime:<8}{batch:>6}" + "".join(f"{ms[name]:>16.3f}" for name in names))
    print(" ".join(f"{key}={value:.3f}" for key, value in ratios.items()))


if __name__ == "__main__":
    main()
