"""Complexity of a built model: MACs and activations by fvcore (or torch's own counter), parameters, measured
latency."""

from __future__ import annotations

import contextlib
import copy
import itertools
import os
import statistics
import sys
import time
import warnings
from collections.abc import Hashable, Iterator, Mapping
from typing import TypeVar

import torch
from torch import nn

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    from fvcore.nn import ActivationCountAnalysis, FlopCountAnalysis

COUNTED_OPS = ("conv", "linear", "addmm", "matmul", "mm", "bmm", "baddbmm", "einsum")
COUNTERS = ("fvcore", "torch")


def convention(counter: str = "fvcore") -> str:
    """The MACs convention every count follows, naming the counter."""
    by = "fvcore" if counter == "fvcore" else "torch.utils.flop_counter (FLOPs / 2)"
    return (
        f"MACs: multiply-adds of conv + linear layers counted by {by} on the eval-mode model "
        "(1 MAC = 1 FLOP, BN/pooling/activations not counted; FLGC as deployed, one conv per group)"
    )


CONVENTION = convention()
DEFAULT_THREADS = max(1, min(4, os.cpu_count() or 1))
K = TypeVar("K", bound=Hashable)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run the block with `model` in eval mode, restoring its mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _example(model: nn.Module, input_shape: tuple[int, int, int], batch: int = 1) -> torch.Tensor:
    tensor = next(itertools.chain(model.parameters(), model.buffers()), None)
    return torch.randn(batch, *input_shape, device=tensor.device if tensor is not None else "cpu")


def count_params(model: nn.Module) -> int:
    """Number of parameters (learnable tensors only; buffers not counted)."""
    return sum(p.numel() for p in model.parameters())


def check_counter(counter: str) -> str:
    """`counter`, if it is one of COUNTERS."""
    if counter not in COUNTERS:
        from scaler.errors import UserError

        raise UserError(f"unknown counter {counter!r}; choose from {', '.join(COUNTERS)}")
    return counter


@torch.no_grad()
def count_macs(model: nn.Module, input_shape: tuple[int, int, int], counter: str = "fvcore") -> int:
    """Multiply-adds of conv + linear for one image on the eval-mode model, by fvcore (the default) or by torch's
    FlopCounterMode; the one function that chooses. If fvcore's trace fails, torch's count, with one line on stderr.

    FLGC layers in training form (a mask on a dense weight) are counted as deployed: one real conv per
    group, sum_g |in_g| |out_g| k^2 H W, since that is what they cost once deployed. Both counters follow it.
    """
    from scaler.model.nn.flgc import FLGCConv2d
    from scaler.model.nn.flgc_deploy import deploy_flgc

    check_counter(counter)
    if any(isinstance(m, FLGCConv2d) for m in model.modules()):
        model = deploy_flgc(copy.deepcopy(model), "per_group")
    if counter == "fvcore":
        try:
            return fvcore_macs(model, input_shape)
        except Exception as error:  # a trace that a future torch or a compiled module breaks
            fell_back(model, "MACs", error)
    return torch_macs(model, input_shape)


def baddbmm_macs(inputs: list[object], outputs: list[object]) -> int:
    """Multiply-adds of baddbmm(bias, a, b), which fvcore has no handle for: those of its bmm(a, b)."""
    from fvcore.nn.jit_handles import bmm_flop_jit

    return int(bmm_flop_jit(inputs[1:3], outputs))


def fvcore_macs(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """fvcore's multiply-adds of conv + linear operators (a TorchScript trace)."""
    with eval_mode(model), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analysis = FlopCountAnalysis(model, _example(model, input_shape))
        analysis.set_op_handle("aten::baddbmm", baddbmm_macs)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        by_op = analysis.by_operator()
    return int(sum(count for op, count in by_op.items() if op in COUNTED_OPS))


def torch_macs(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """torch.utils.flop_counter's FLOPs of one forward pass, halved: it counts only matrix products and
    convolutions (grouped and depthwise by their per-group width), at 2 FLOPs per multiply-add."""
    from torch.utils.flop_counter import FlopCounterMode

    with eval_mode(model), FlopCounterMode(display=False) as mode:
        model(_example(model, input_shape))
    return int(mode.get_total_flops()) // 2


@torch.no_grad()
def count_activations(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """Output elements of conv + linear layers for one image (fvcore's activation count; by forward hooks, with
    one line on stderr, if fvcore's trace fails)."""
    try:
        with eval_mode(model), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            analysis = ActivationCountAnalysis(model, _example(model, input_shape))
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            return int(analysis.total())
    except Exception as error:
        fell_back(model, "activations", error)
    return hooked_activations(model, input_shape)


def hooked_activations(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """Output elements of every conv and linear module in one forward pass."""
    total = 0

    def add(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
        nonlocal total
        total += output.numel()

    hooks = [m.register_forward_hook(add) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with eval_mode(model):
            model(_example(model, input_shape))
    finally:
        for hook in hooks:
            hook.remove()
    return total


def fell_back(model: nn.Module, what: str, error: Exception) -> None:
    """One line on stderr: fvcore could not count this model, so torch's counter did."""
    reason = " ".join(str(error).split())[:160] or type(error).__name__
    print(
        f"warning: fvcore could not count the {what} of {type(model).__name__} ({type(error).__name__}: {reason}); "
        "counted with torch's own counter instead",
        file=sys.stderr,
    )


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Fix torch's intra-op thread count for the block."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@torch.no_grad()
def latency_times(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    batch: int = 1,
    warmup: int = 5,
    runs: int = 30,
    threads: int = DEFAULT_THREADS,
    channels_last: bool = False,
) -> list[float]:
    """Wall times in ms of `runs` forward passes of `batch` images, after warm-up (synchronised on CUDA)."""
    x = _example(model, input_shape, batch)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    cuda = x.is_cuda
    times = []
    with eval_mode(model), torch_threads(threads):
        for _ in range(warmup):
            model(x)
        for _ in range(runs):
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            model(x)
            if cuda:
                torch.cuda.synchronize()
            times.append(1000 * (time.perf_counter() - start))
    return times


@torch.no_grad()
def interleaved_latency(
    models: Mapping[K, nn.Module],
    input_shape: tuple[int, int, int] | Mapping[K, tuple[int, int, int]],
    rounds: int = 30,
    warmup: int = 3,
    threads: int = DEFAULT_THREADS,
    progress: bool = False,
) -> dict[K, list[float]]:
    """Wall times in ms of one batch-1 forward pass per model per round, the models in a rotated order each round,
    so that a shared machine's drift falls on all of them alike; `input_shape` is shared or given per model."""
    from tqdm import tqdm

    names = list(models)
    shapes = input_shape if isinstance(input_shape, Mapping) else dict.fromkeys(names, input_shape)
    inputs = {name: _example(model, shapes[name], 1) for name, model in models.items()}
    times: dict[K, list[float]] = {name: [] for name in names}
    with torch_threads(threads):
        for model in models.values():
            model.eval()
        bar = tqdm(range(warmup + rounds), desc=f"timing {len(names)} networks", disable=not progress, leave=False)
        for round_ in bar:
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                start = time.perf_counter()
                models[name](inputs[name])
                if round_ >= warmup:
                    times[name].append(1000 * (time.perf_counter() - start))
    return times


def measure_latency(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    batch: int = 1,
    warmup: int = 5,
    runs: int = 30,
    threads: int = DEFAULT_THREADS,
    channels_last: bool = False,
) -> float:
    """Median wall time in ms of one forward pass of `batch` images, after warm-up."""
    return statistics.median(latency_times(model, input_shape, batch, warmup, runs, threads, channels_last))


def interquartile_range(values: list[float]) -> float:
    """Spread of repeated measurements: the 75th minus the 25th percentile (0 for fewer than two)."""
    if len(values) < 2:
        return 0.0
    low, _, high = statistics.quantiles(values, n=4, method="inclusive")
    return high - low
