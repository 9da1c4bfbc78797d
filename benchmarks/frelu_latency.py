"""FReLU-everywhere vs ReLU latency, side by side in one run, in each deploy form.

Forms: eager (training form), folded (BN into conv), compiled (folded + torch.compile), and
compiled + shifts (depthwise convs as shifted multiply-adds that inductor fuses, both networks).
Measurements of the two networks are interleaved so both see the same machine noise.

    python benchmarks/frelu_latency.py [--base mobilenet] [--dataset fashion-mnist] [--batch 1]
"""

from __future__ import annotations

import argparse
import statistics
import warnings

import torch

from scaler.model.complexity import DEFAULT_THREADS, count_macs, measure_latency
from scaler.model.nn.build import build
from scaler.model.nn.deploy import deploy
from scaler.model.variants import apply_variant
from scaler.model.zoo import base
from scaler.training.tasks import dataset_task

FORMS = {
    "eager": lambda m: m.eval(),
    "folded": lambda m: deploy(m, shifts=False, compile=False),
    "compiled": lambda m: deploy(m, shifts=False, compile=True),
    "compiled + shifts": lambda m: deploy(m, shifts=True, compile=True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", default="mobilenet")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--runs", type=int, default=50, help="runs per measurement")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved measurements per model (median taken)")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    task = dataset_task(args.dataset)
    spec = base(args.base, task.in_channels, task.resolution, task.num_classes)
    torch.manual_seed(0)
    models = {name: build(apply_variant(spec, name)) for name in ("relu", "frelu")}
    shape = spec.input_shape
    macs = {name: count_macs(m, shape) for name, m in models.items()}
    print(f"# {args.base} on {'x'.join(map(str, shape))}, batch {args.batch}, {args.threads} threads")
    print(f"# latency: median over {args.rounds} interleaved rounds of the median of {args.runs} runs")
    print(
        f"# MACs: relu {macs['relu'] / 1e6:.2f} M, frelu {macs['frelu'] / 1e6:.2f} M ({macs['frelu'] / macs['relu']:.3f}x)"
    )
    print(f"{'form':<20}{'relu ms':>10}{'frelu ms':>10}{'frelu/relu':>12}")
    best = {}
    for form, make in FORMS.items():
        forms = {name: make(m) for name, m in models.items()}
        with torch.no_grad():
            for m in forms.values():
                m(torch.randn(args.batch, *shape))
        samples: dict[str, list[float]] = {"relu": [], "frelu": []}
        for _ in range(args.rounds):
            for name, m in forms.items():
                samples[name].append(
                    measure_latency(m, shape, args.batch, warmup=5, runs=args.runs, threads=args.threads)
                )
        ms = {name: statistics.median(v) for name, v in samples.items()}
        for name, value in ms.items():
            best[name] = min(best.get(name, (float("inf"), "")), (value, form))
        print(f"{form:<20}{ms['relu']:>10.3f}{ms['frelu']:>10.3f}{ms['frelu'] / ms['relu']:>11.2f}x")
    (relu_ms, relu_form), (frelu_ms, frelu_form) = best["relu"], best["frelu"]
    print(
        f"best deploy forms: relu {relu_ms:.3f} ms ({relu_form}), frelu {frelu_ms:.3f} ms ({frelu_form}): "
        f"frelu/relu {frelu_ms / relu_ms:.2f}x"
    )


if __name__ == "__main__":
    main()
