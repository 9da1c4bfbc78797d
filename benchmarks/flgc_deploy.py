"""Latency of a chain of 1x1 FLGC layers (default 128->256->128 at 16x16): masked training form vs deployed.

Columns: masked = the FLGCConv2d layers in eval under no_grad (mask built each call, as trained); dense = plain
Conv2d layers holding the masked weights (what folding the mask alone would give); then every DeployedFLGC
strategy applied to all layers, `fastest`, the strategy `deploy_flgc(..., "fastest", example=x)` picks per
layer by timing it on this batch, and `folded`, that form with each layer's output permutation folded into the
next layer's gather (`fold_permutations`, what `deploy` does); then the platform's contiguous grouped forms of
the same chain with equal groups: grouped Conv2d in NCHW and in channels_last, and grouped batched matmul.
`fold/m` is folded / masked, `fold/c` folded / the fastest contiguous form; `err` is the largest
|deployed - masked| over the FLGC forms. Assignments are random (logits ~ N(0, 1)) and, as FLGC trains by
default, equal in size, so a layer is one contiguous grouped kernel between gathers; --free gives groups of any
size (Wang et al.), which every single-kernel form pads to the largest. Every round times each form once, in
turn; the median over rounds is reported (--stat min on a shared, busy machine). "others" is the CPU share
other processes used while a row was timed; with --max-foreign a row is re-timed (up to --tries) until that
share is small. The last line is machine-readable:
folded / masked per batch at the last G, folded / the fastest contiguous form at batch 1 and 32, and whether
both goals hold at batch 1 and 32 (<= 0.4x masked, <= 1.1x contiguous).

With --train STEPS the chain's assignments are learned first (a few hundred SGD steps fitting a random dense
teacher on random inputs, logits at 10x the weights' rate, as `scaler flgc` trains them) and, with --duplicate,
frozen by the duplication rule (--score); --concentrate N instead adds N duplicates to group 0 of each layer
(the uneven case). Then more columns, each the folded fastest form: `pad_dup`, duplicates inside the one kernel
with every group padded to the one that gained most, `split_dup`, duplicates as kernels of their own beside the
unpadded own groups (`folded` uses whichever `splitting_pays` picks per layer), `own`, the same chain without its
duplicates, and `dup+`, the share of multiply-adds duplication adds; `dup/own` is folded / own, to read against
1 + dup+ (duplication should cost in proportion to what it adds).

    python benchmarks/flgc_deploy.py [--channels 128 256 128] [--groups 4] [--batches 1 8 32 128] [--stat min]
        [--free] [--duplicate] [--train 300] [--score weight] [--concentrate 24]
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import ctypes.util
import os
import statistics
import time
from typing import cast

import torch
from torch import nn

from scaler.model.nn.flgc import SCORES, FLGCConv2d, assignment_parameters
from scaler.model.nn.flgc_deploy import FASTEST, STRATEGIES, deploy_flgc, flgc_macs, primary_groups
from scaler.model.nn.flgc_fold import fold_permutations


def masked_dense(layer: FLGCConv2d) -> nn.Conv2d:
    """A plain Conv2d carrying the layer's masked weight."""
    conv = nn.Conv2d(
        layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.kernel_size // 2, bias=False
    )
    conv.weight.data.copy_(layer.weight.detach() * layer.mask().detach()[:, :, None, None])
    return conv.eval()


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


GOAL = 0.4  # folded / masked
CONTIGUOUS_GOAL = 1.1  # folded / the platform's fastest contiguous grouped form
GOAL_BATCHES = (1, 32)
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4


def keep_freed_memory() -> None:
    """Make glibc serve every allocation from a heap it never trims, so a reused size costs no page faults."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    if not (libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, 2**30)):
        raise SystemExit("mallopt refused: --keep-memory needs glibc")


def chain(
    channels: list[int], groups: int, duplicate: bool, balanced: bool = True, steps: int = 0, score: str = "logit"
) -> nn.Sequential:
    """1x1 FLGC layers channels[0] -> channels[1] -> ..., assignments random (or learned for `steps`) and frozen,
    in eval."""
    layers = []
    for c_in, c_out in zip(channels, channels[1:]):
        layer = FLGCConv2d(c_in, c_out, groups, duplicate=duplicate, balanced=balanced, score=score)
        with torch.no_grad():
            layer.in_logits.normal_()
            layer.out_logits.normal_()
        layers.append(layer)
    if steps:
        learn_assignments(layers, channels, steps)
    for layer in layers:
        layer.freeze()  # with --duplicate, channels whose score for a group beats its top members' join it
    return nn.Sequential(*layers).eval()


def learn_assignments(layers: list[FLGCConv2d], channels: list[int], steps: int, size: int = 8) -> None:
    """Train the chain (ReLU between layers) for `steps` SGD steps to fit a random dense teacher on random inputs,
    assignment logits at 10x the weights' rate."""
    student = nn.Sequential(*[m for layer in layers for m in (layer, nn.ReLU())][:-1])
    teacher = nn.Sequential(
        *[m for a, b in zip(channels, channels[1:]) for m in (nn.Conv2d(a, b, 1), nn.ReLU())][:-1]
    ).requires_grad_(False)
    logits = assignment_parameters(student)
    chosen = {id(p) for p in logits}
    weights = [p for p in student.parameters() if id(p) not in chosen]
    optimizer = torch.optim.SGD([{"params": weights}, {"params": logits, "lr": 0.5}], lr=0.05, momentum=0.9)
    for _ in range(steps):
        x = torch.randn(16, channels[0], size, size)
        loss = nn.functional.mse_loss(student(x), teacher(x))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def concentrate(layers: nn.Sequential, count: int) -> None:
    """Add `count` channels from other groups to group 0 of every layer, their connections trained (random)."""
    for layer in layers:
        layer = cast(FLGCConv2d, layer)
        joining = (~layer.frozen_in[:, 0]).nonzero().flatten()[:count]
        layer.frozen_in[joining, 0] = True


def without_duplicates(layers: nn.Sequential) -> nn.Sequential:
    """The chain with each layer's duplicates taken out (its own groups only)."""
    own = copy.deepcopy(layers)
    for layer in own:
        layer = cast(FLGCConv2d, layer)
        layer.frozen_in.copy_(primary_groups(layer.frozen_in, layer.learned()[0]))
    return own


def duplicated_share(layers: nn.Sequential, own: nn.Sequential) -> float:
    """Multiply-adds the chain's duplicates add, as a share of its own groups'."""
    macs = [sum(flgc_macs(cast(FLGCConv2d, layer), 1, 1) for layer in chain) for chain in (layers, own)]
    return macs[0] / macs[1] - 1


class GroupedMatmulChain(nn.Module):
    """The chain as contiguous equal groups run as batched matmuls on (channel, image)-ordered rows: one transpose
    in, one out, nothing between (the layout FLGC's matmul form uses, without its gathers)."""

    def __init__(self, convs: list[nn.Conv2d]) -> None:
        super().__init__()
        self.weights = [conv.weight.detach().view(conv.groups, -1, conv.in_channels // conv.groups) for conv in convs]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        rows = x.view(batch, channels, height * width).transpose(0, 1).reshape(channels, batch * height * width)
        for weight in self.weights:
            rows = torch.matmul(weight, rows.view(weight.shape[0], weight.shape[2], -1)).view(-1, rows.shape[1])
        return rows.view(-1, batch, height, width).transpose(0, 1).contiguous()


def contiguous_forms(channels: list[int], groups: int) -> dict[str, nn.Module]:
    """The platform's own contiguous grouped forms of the chain (equal groups, random weights): grouped Conv2d in
    NCHW and in channels_last, and grouped batched matmul."""
    convs = [nn.Conv2d(c_in, c_out, 1, groups=groups, bias=False).eval() for c_in, c_out in zip(channels, channels[1:])]
    nchw = nn.Sequential(*convs).eval()
    last = copy.deepcopy(nchw).to(memory_format=torch.channels_last)
    return {"conv": nchw, "conv_cl": ChannelsLast(last), "matmul": GroupedMatmulChain(convs)}


class ChannelsLast(nn.Module):
    """A module run on its input converted to channels_last (the conversion timed with it)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.contiguous(memory_format=torch.channels_last))


def fold_and_return(model: nn.Module) -> nn.Module:
    """`model` with its permutations folded (`fold_permutations`)."""
    fold_permutations(model)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--channels", type=int, nargs="+", default=[128, 256, 128])
    parser.add_argument("--groups", type=int, nargs="+", default=[4])
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--duplicate", action="store_true")
    parser.add_argument("--free", action="store_true", help="groups of any size (Wang et al.), not equal ones")
    parser.add_argument("--train", type=int, default=0, help="SGD steps learning the assignments first")
    parser.add_argument("--score", choices=SCORES, default="logit", help="the duplication rule's score")
    parser.add_argument("--concentrate", type=int, default=0, help="add N duplicates to group 0 of each layer")
    parser.add_argument("--stat", choices=["median", "min"], default="median", help="min resists a busy machine")
    parser.add_argument("--max-foreign", type=float, default=1.0, help="retry while others used more CPU share")
    parser.add_argument("--tries", type=int, default=1)
    parser.add_argument("--pause", type=float, default=10.0, help="seconds between tries")
    parser.add_argument(
        "--keep-memory",
        action="store_true",
        help="glibc keeps freed memory (no mmap, no trim), as caching allocators do",
    )
    args = parser.parse_args()
    if args.keep_memory:
        keep_freed_memory()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shape = "->".join(map(str, args.channels))
    learned = f"assignment learned in {args.train} steps" if args.train else "random assignment"
    if args.concentrate:
        learned += f", {args.concentrate} duplicates added to group 0 of each layer"
    print(
        f"# 1x1 FLGC chain {shape} at {args.size}x{args.size}, {learned}, "
        f"{'free' if args.free else 'equal'} groups, duplicate={args.duplicate} (score {args.score}), "
        f"{args.threads} threads, {args.stat} of {args.rounds} interleaved rounds, ms, "
        f"{'freed memory kept (mallopt)' if args.keep_memory else 'default allocator'}"
    )
    labels = {name: "".join(word[0] for word in name.split("_")) for name in STRATEGIES}
    print("# " + ", ".join(f"{label} = {name}" for name, label in labels.items()))
    print(
        "# contiguous equal groups: conv = grouped Conv2d (NCHW), conv_cl = the same in channels_last, matmul = "
        "grouped batched matmul; folded = fastest with each permutation folded into the next layer's gather "
        "(a gather stays at the chain's input and a permutation at its output: they meet the stream)"
    )
    header = f"{'G':>2} {'batch':>5} {'masked':>8} {'dense':>8}" + "".join(f"{label:>8}" for label in labels.values())
    header += f"{'fastest':>8} {'folded':>8} {'conv':>8} {'conv_cl':>8} {'matmul':>8}"
    if args.duplicate:
        header += f" {'pad_dup':>8} {'split_dup':>9} {'own':>8} {'dup+':>5} {'dup/own':>7}"
    header += f" {'fold/m':>6} {'fold/c':>6} {'err':>8} {'others':>6}  fastest per layer"
    print(header)
    ratios: dict[int, float] = {}
    versus: dict[int, float] = {}
    costs: dict[int, float] = {}
    added = 0.0
    for groups in args.groups:
        layers = chain(args.channels, groups, args.duplicate, not args.free, args.train, args.score)
        own = without_duplicates(layers)
        if args.concentrate:
            concentrate(layers, args.concentrate)
        added = duplicated_share(layers, own)
        dense = nn.Sequential(*(masked_dense(cast(FLGCConv2d, layer)) for layer in layers)).eval()
        contiguous = contiguous_forms(args.channels, groups)
        for batch in args.batches:
            x = torch.randn(batch, args.channels[0], args.size, args.size)
            forms: dict[str, nn.Module] = {"masked": layers, "dense": dense}
            forms.update({name: deploy_flgc(copy.deepcopy(layers), name) for name in STRATEGIES})
            fastest = deploy_flgc(copy.deepcopy(layers), FASTEST, example=x)
            forms[FASTEST] = fastest
            folded = copy.deepcopy(fastest)
            fold_permutations(folded)
            forms["folded"] = folded
            if args.duplicate:
                for name, kind in (("pad_dup", "padded"), ("split_dup", "split")):
                    forms[name] = fold_and_return(deploy_flgc(copy.deepcopy(layers), FASTEST, x, duplicates=kind))
            own_form = fold_and_return(deploy_flgc(copy.deepcopy(own), FASTEST, example=x)) if args.duplicate else None
            with torch.no_grad():
                expected = layers(x)
                err = max(float((form(x) - expected).abs().max()) for form in forms.values())
            forms.update(contiguous)
            if own_form is not None:
                forms["own"] = own_form
            ms, foreign = time_quietly(forms, x, args)
            best_contiguous = min(ms[name] for name in contiguous)
            ratios[batch] = ms["folded"] / ms["masked"]
            versus[batch] = ms["folded"] / best_contiguous
            picked = ",".join(labels[layer.strategy] for layer in fastest)  # type: ignore[attr-defined]
            line = f"{groups:>2} {batch:>5} {ms['masked']:>8.3f} {ms['dense']:>8.3f}"
            line += "".join(f"{ms[name]:>8.3f}" for name in [*STRATEGIES, FASTEST, "folded", *contiguous])
            if args.duplicate:
                costs[batch] = ms["folded"] / ms["own"]
                line += f" {ms['pad_dup']:>8.3f} {ms['split_dup']:>9.3f} {ms['own']:>8.3f} {added:>5.0%}"
                line += f" {costs[batch]:>6.2f}x"
            line += f" {ratios[batch]:>5.2f}x {versus[batch]:>5.2f}x {err:>8.1e} {foreign:>6.0%}"
            print(line + f"  {picked}", flush=True)
    goal_batches = [batch for batch in GOAL_BATCHES if batch in ratios]
    met = bool(goal_batches) and all(
        ratios[batch] <= GOAL and versus[batch] <= CONTIGUOUS_GOAL for batch in goal_batches
    )
    summary = " ".join(f"ratio_b{batch}={ratio:.2f}" for batch, ratio in ratios.items())
    contiguous_line = " ".join(f"vs_contiguous_b{batch}={versus[batch]:.2f}" for batch in goal_batches)
    duplicates = ""
    if args.duplicate:
        duplicates = f" dup_macs={added:.3f} " + " ".join(f"dup_vs_own_b{b}={cost:.2f}" for b, cost in costs.items())
    print(
        f"groups={args.groups[-1]} {summary} goal={GOAL} {contiguous_line} contiguous_goal={CONTIGUOUS_GOAL} "
        f"met={met}{duplicates}"
    )


if __name__ == "__main__":
    main()
