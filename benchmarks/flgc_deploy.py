"""Latency of a 1x1 FLGC layer: masked dense training form vs each deployed grouped-conv strategy.

Columns: masked = FLGCConv2d in eval under no_grad (mask built each call, as trained); dense = one plain
Conv2d holding the masked weight (what folding the mask alone would give); dmm = that weight as one matmul
(the dense baseline in the kernel the *_matmul strategies use); then every DeployedFLGC strategy.
Ratios are deployed / masked, and the default strategy / dmm (the gain of grouping alone).
Assignments are random (logits ~ N(0, 1)), so groups are unequal as after
training. Every round times each form once, in turn; the median over rounds is reported (--stat min on a
shared, busy machine). "others" is the CPU share other processes used while a row was timed; with
--max-foreign a row is re-timed (up to --tries) until that share is small.

    python benchmarks/flgc_deploy.py [--channels 256] [--rounds 200] [--threads 2] [--duplicate] [--stat min]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

import torch
from torch import nn

from scaler.nn.flgc import DEFAULT_STRATEGY, STRATEGIES, DeployedFLGC, FLGCConv2d


def masked_dense(layer: FLGCConv2d) -> nn.Conv2d:
    """A plain Conv2d carrying the layer's masked weight."""
    conv = nn.Conv2d(
        layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.kernel_size // 2, bias=False
    )
    conv.weight.data.copy_(layer.weight.detach() * layer.mask().detach()[:, :, None, None])
    return conv.eval()


class DenseMatmul(nn.Module):
    """A 1x1 conv's (masked) weight as one matmul over the NCHW input: the dense baseline in matmul form."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.weight = nn.Parameter(conv.weight.detach()[:, :, 0, 0].clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        return torch.matmul(self.weight, x.view(batch, channels, height * width)).view(batch, -1, height, width)


@torch.no_grad()
def time_interleaved(
    forms: dict[str, nn.Module], x: torch.Tensor, rounds: int, stat: str = "median", warmup: int = 10
) -> dict[str, float]:
    """Median (or min) ms per form over `rounds` interleaved single calls, after warm-up."""
    for _ in range(warmup):
        for form in forms.values():
            form(x)
    samples: dict[str, list[float]] = {name: [] for name in forms}
    for _ in range(rounds):
        for name, form in forms.items():
            start = time.perf_counter()
            form(x)
            samples[name].append(time.perf_counter() - start)
    reduce = statistics.median if stat == "median" else min
    return {name: 1000 * reduce(values) for name, values in samples.items()}


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy so far (Linux /proc/stat; 0 elsewhere)."""
    try:
        with open("/proc/stat") as stat:
            ticks = [int(value) for value in stat.readline().split()[1:9]]
    except OSError:
        return 0.0
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def own_seconds() -> float:
    """CPU seconds this process has used."""
    times = os.times()
    return times.user + times.system


def time_quietly(
    forms: dict[str, nn.Module], x: torch.Tensor, args: argparse.Namespace
) -> tuple[dict[str, float], float]:
    """time_interleaved, retried while other processes used more than --max-foreign of the CPUs meanwhile."""
    for attempt in range(args.tries):
        wall, busy, own = time.perf_counter(), busy_seconds(), own_seconds()
        ms = time_interleaved(forms, x, args.rounds, args.stat)
        foreign = busy_seconds() - busy - (own_seconds() - own)
        foreign /= (time.perf_counter() - wall) * (os.cpu_count() or 1)
        if foreign <= args.max_foreign or attempt == args.tries - 1:
            return ms, max(foreign, 0.0)
        time.sleep(args.pause)
    raise AssertionError("unreachable")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--groups", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 1])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--duplicate", action="store_true")
    parser.add_argument("--stat", choices=["median", "min"], default="median", help="min resists a busy machine")
    parser.add_argument("--max-foreign", type=float, default=1.0, help="retry while others used more CPU share")
    parser.add_argument("--tries", type=int, default=1)
    parser.add_argument("--pause", type=float, default=10.0, help="seconds between tries")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    c = args.channels
    print(
        f"# 1x1 FLGC {c}->{c}, random assignment, duplicate={args.duplicate}, {args.threads} threads, "
        f"{args.stat} of {args.rounds} interleaved rounds, ms"
    )
    labels = {name: "".join(word[0] for word in name.split("_")) for name in STRATEGIES}
    print("# " + ", ".join(f"{label} = {name}" for name, label in labels.items()) + f"; default {DEFAULT_STRATEGY}")
    header = f"{'G':>2} {'HxW':>5} {'batch':>5} {'|in_g|':>7} {'masked':>7} {'dense':>7} {'dmm':>6}"
    header += "".join(f"{label:>7}" for label in labels.values())
    header += "".join(f"{label + '/m':>7}" for label in labels.values())
    header += f"{labels[DEFAULT_STRATEGY] + '/dmm':>8}{'others':>7}"
    print(header)
    for groups in args.groups:
        layer = FLGCConv2d(c, c, groups, duplicate=args.duplicate)
        with torch.no_grad():
            layer.in_logits.normal_()
            layer.out_logits.normal_()
        layer.freeze()  # with --duplicate, channels whose weights to a group beat its top members' join it
        layer.eval()
        sizes = [n_in for n_in, _ in layer.group_sizes()]
        dense = masked_dense(layer)
        forms: dict[str, nn.Module] = {"masked": layer, "dense": dense, "dense_mm": DenseMatmul(dense)}
        forms.update({name: DeployedFLGC(copy.deepcopy(layer), name).eval() for name in STRATEGIES})
        for batch in args.batches:
            for size in args.sizes:
                x = torch.randn(batch, c, size, size)
                ms, foreign = time_quietly(forms, x, args)
                line = f"{groups:>2} {f'{size}x{size}':>5} {batch:>5} {f'{min(sizes)}-{max(sizes)}':>7}"
                line += f" {ms['masked']:>7.3f} {ms['dense']:>7.3f} {ms['dense_mm']:>6.3f}"
                line += "".join(f"{ms[name]:>7.3f}" for name in STRATEGIES)
                line += "".join(f"{ms[name] / ms['masked']:>6.2f}x" for name in STRATEGIES)
                line += f"{ms[DEFAULT_STRATEGY] / ms['dense_mm']:>7.2f}x{foreign:>7.0%}"
                print(line, flush=True)


if __name__ == "__main__":
    main()
