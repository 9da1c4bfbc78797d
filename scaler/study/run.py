"""The run layer under every command: RunConfig -> Setup -> evaluate_model() -> Row, model and per-example
outputs (scaler.study.engine runs plans of them, resumably; scaler.report.files writes the results)."""

from __future__ import annotations

import contextlib
import copy
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
import torch
from torch import nn

from scaler.compat import recompile_limit_fails
from scaler.errors import UserError
from scaler.model.complexity import (
    DEFAULT_THREADS,
    K,
    count_activations,
    count_macs,
    count_params,
    interleaved_latency,
    interquartile_range,
    latency_times,
)
from scaler.model.guard import check_fits
from scaler.model.nn.build import build
from scaler.model.scaling import scale
from scaler.model.spec import NetSpec
from scaler.model.variants import apply_variant
from scaler.model.zoo import base as base_network
from scaler.study.storage import STUDIES_DIR, check_writable
from scaler.training.data import VAL_FRACTION, Dataset, load_dataset
from scaler.training.folder import is_folder_dataset
from scaler.training.tasks import DATASET_TASKS, Task
from scaler.training.train import Outputs, TrainConfig, split_outputs, train

Log = Callable[[str], None]
LATENCY_FORMS = ("eager", "deployed", "folded", "onnxruntime")
LATENCY_WORDS = {
    "eager": "eager PyTorch",
    "folded": "PyTorch, BN folded and FLGC grouped",
    "deployed": "compiled PyTorch (BN folded, FLGC grouped, shifted depthwise)",
    "onnxruntime": "ONNX Runtime (BN folded, FLGC grouped, exported to ONNX)",
}


PHASES = ("building", "training", "testing", "counting", "compiling", "timing")


class Stopwatch:
    """Where a command's time goes: seconds per phase of this process, written into run.json."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(PHASES, 0.0)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Add the time the block takes to `name`."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start

    def reset(self) -> None:
        """Start counting again (a new command in the same process)."""
        self.seconds = dict.fromkeys(PHASES, 0.0)

    def report(self) -> dict[str, float]:
        """Seconds per phase, rounded."""
        return {name: round(seconds, 1) for name, seconds in self.seconds.items()}


STOPWATCH = Stopwatch()
ENGINE_FILES: set[Path] = set()  # files the engine wrote for this command (per-example outputs), for run.json
LOADED: dict[tuple[Any, ...], Dataset] = {}  # the last dataset RunConfig.load_dataset read, by what it was cut to


@dataclass(frozen=True)
class RunConfig:
    """What one command runs on, built once from its command line.

    Args:
        command: the scaler command (scale, ladder, ...).
        base: base network name; width: its width multiplier before any scaling.
        variant: '+'-joined variants applied to the base.
        dataset, data_dir: where the images come from; task: their shape and classes.
        subset, val_size, test_size: images kept per split (None: the whole split).
        val_fraction: the share of the training set held out as the validation split.
        data_seed: the seed of the train/validation split and of the subsets, fixed across training seeds
            so that runs with different seeds are compared on the same images.
        train: how every network of the run is trained (the seed included).
        folder: where the run's frames, figures and run.json go.
        latency_runs: timed forward passes per latency measurement.
        storage: the Optuna RDB URL of the engine's store (None: runs.db in `folder`).
        workers: local processes that share the store's queue.
        argv: the command line, recorded in run.json.
    """

    command: str
    base: str = "mobilenet"
    width: float = 1.0
    variant: str = "relu"
    dataset: str = "fashion-mnist"
    task: Task = DATASET_TASKS["fashion-mnist"]
    data_dir: str | None = None
    subset: int | None = None
    val_size: int | None = None
    test_size: int | None = None
    val_fraction: float = VAL_FRACTION
    data_seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)
    folder: Path = STUDIES_DIR / "run"
    latency_runs: int = 20
    progress: bool = True
    storage: str | None = None
    workers: int = 1
    argv: tuple[str, ...] = ()

    @property
    def seed(self) -> int:
        """The run's training seed: initialisation and data order."""
        return self.train.seed

    def base_spec(self) -> NetSpec:
        """The base network for the task, its variant applied and its width multiplied."""
        task = self.task
        spec = apply_variant(base_network(self.base, task.in_channels, task.resolution, task.num_classes), self.variant)
        return spec if self.width == 1 else scale(spec, 1.0, self.width, 1.0)

    def load_dataset(self) -> Dataset:
        """The dataset with the training subset and the validation and test splits cut to size (seeded); a size
        larger than its split is one line. The last dataset loaded is kept, so a check before a command starts
        does not read it twice."""
        key = (
            self.dataset,
            self.data_dir,
            self.val_fraction,
            self.subset,
            self.data_seed,
            self.val_size,
            self.test_size,
            self.task,
        )
        if key in LOADED:
            return LOADED[key]
        folder = is_folder_dataset(self.dataset)
        dataset = load_dataset(
            self.dataset,
            self.data_dir,
            self.val_fraction,
            subset=self.subset,
            seed=self.data_seed,
            input=self.task if folder else None,
            progress=self.progress and folder,
        )
        for option, size, split in (("--val-size", self.val_size, "val"), ("--test-size", self.test_size, "test")):
            held = len(getattr(dataset, split))
            if size and size > held:
                raise UserError(
                    f"{option} {size} is more than the {held} {split} images of {self.dataset}: give at most {held}, "
                    "or 0 for the whole split"
                )
            if size:
                dataset = replace(dataset, **{split: getattr(dataset, split).subset(size, self.data_seed)})
        if folder:
            print(f"data: {dataset.source}; {'; '.join(dataset.notes)}", file=sys.stderr)
        LOADED.clear()
        LOADED[key] = dataset
        return dataset

    def to_json(self) -> dict[str, Any]:
        """Plain dict for run.json."""
        data = asdict(self)
        data["folder"] = str(self.folder)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], **overrides: Any) -> RunConfig:
        """Inverse of `to_json` (a worker rebuilds the command's config from its store), some fields replaced."""
        fields = data | {
            "task": Task(**data["task"]),
            "train": TrainConfig.from_json(data["train"]),
            "folder": Path(data["folder"]),
            "argv": tuple(data.get("argv", ())),
        }
        return replace(cls(**fields), **overrides)


def data_record(name: str | None) -> dict[str, Any] | None:
    """What run.json says of dataset `name` as this process last read it: where from, its fingerprint, classes,
    split sizes and how its images were read (None when it read no such dataset)."""
    read = [dataset for key, dataset in LOADED.items() if key[0] == name]
    if not read:
        return None
    dataset = read[0]
    return {
        "name": dataset.name,
        "source": dataset.source,
        "fingerprint": dataset.fingerprint or None,
        "classes": list(dataset.classes) or dataset.num_classes,
        "images": {split: len(getattr(dataset, split)) for split in ("train", "val", "test")},
        "shape": list(dataset.train.images.shape[1:]),
        "notes": list(dataset.notes),
    }


@dataclass(frozen=True)
class Setup:
    """What a run builds once from its config: the base spec, the data (None when it only profiles), start time."""

    config: RunConfig
    spec: NetSpec
    dataset: Dataset | None
    started: float

    @property
    def folder(self) -> Path:
        """Where the run writes."""
        return self.config.folder

    def with_data(self) -> Setup:
        """This setup with its dataset loaded."""
        return self if self.dataset is not None else replace(self, dataset=self.config.load_dataset())


def setup(config: RunConfig, data: bool = True) -> Setup:
    """Build the base spec, check that the run's folder can be written, and load the data when the run trains."""
    spec = config.base_spec()
    check_writable(config.folder, "the study folder")
    STOPWATCH.reset()
    ENGINE_FILES.clear()
    return Setup(config, spec, config.load_dataset() if data else None, time.time())


@dataclass(frozen=True)
class Cost:
    """What a network costs as built: parameters, MACs, activations, batch-1 latency (median and IQR)."""

    resolution: int
    params: int
    macs: int
    activations: int
    latency_ms: float
    latency_iqr_ms: float
    latency_form: str
    latency_batch_ms: float = math.nan


@dataclass(frozen=True)
class Row(Cost):
    """One evaluated network: its cost and, when trained, its accuracy and training time."""

    trained: bool = False
    seed: int | None = None
    val_acc: float = math.nan
    test_acc: float = math.nan
    val_loss: float = math.nan
    test_loss: float = math.nan
    epochs: int = 0
    train_seconds: float = math.nan
    images_per_second: float = math.nan
    val_curve: tuple[float, ...] = ()
    val_before_dup: float = math.nan
    val_after_dup: float = math.nan

    def cost(self) -> Cost:
        """The network's cost alone (to measure it once for every seed)."""
        return Cost(**{item.name: getattr(self, item.name) for item in fields(Cost)})

    def as_dict(self) -> dict[str, Any]:
        """Plain dict, one row of a frame."""
        return asdict(self) | {"val_curve": list(self.val_curve)}

    def record(self) -> dict[str, Any]:
        """`as_dict` without missing values: what a study or JSON file keeps."""
        return present(self.as_dict())


def present(values: Mapping[str, Any]) -> dict[str, Any]:
    """The entries that are neither None nor NaN."""
    return {k: v for k, v in values.items() if v is not None and not (isinstance(v, float) and math.isnan(v))}


class Evaluated(NamedTuple):
    """What one evaluation made: the row, the model, and per-example outputs by split (none when untrained)."""

    row: Row
    model: nn.Module
    outputs: dict[str, Outputs]


def cpu_copy(model: nn.Module) -> nn.Module:
    """A contiguous CPU copy in eval mode, so that cost does not depend on where or how a model was trained."""
    return copy.deepcopy(model).to("cpu").to(memory_format=torch.contiguous_format).eval()


def latency_form_of(
    spec: NetSpec, form: str, model: nn.Module | None = None, threads: int = DEFAULT_THREADS
) -> nn.Module:
    """`model` (or a fresh build of `spec`) in the form its latency is taken in: eager, folded (BN folded, FLGC
    grouped), deployed (also shift depthwise and torch.compile, already compiled by one call) or onnxruntime (the
    folded form exported to ONNX and run in an ONNX Runtime session with `threads` threads)."""
    from scaler.model.nn.deploy import deploy

    if form not in LATENCY_FORMS:
        raise UserError(f"unknown latency form {form!r}; choose from {', '.join(LATENCY_FORMS)}")
    with STOPWATCH.phase("building"):
        model = build(spec).eval() if model is None else cpu_copy(model)
    if form == "eager":
        return model
    if form == "folded":
        return deploy(model, shifts=False, compile=False)
    if form == "onnxruntime":
        from scaler.model.runtime import OrtModel

        with STOPWATCH.phase("compiling"):
            return OrtModel(model, spec.input_shape, threads)
    with STOPWATCH.phase("compiling"):
        timed = deploy(model)
        with torch.no_grad():
            timed(torch.randn(1, *spec.input_shape))
    return timed


def interleaved_costs(
    specs: Mapping[K, NetSpec], form: str, rounds: int = 30, progress: bool = False
) -> dict[K, tuple[float, float]]:
    """Latency median and IQR in ms of each network built in `form`, all timed interleaved in one run (batch 1);
    a compiled network that dynamo would run eager (its recompile limit hit) fails instead. `progress` shows a bar
    for the building (compiling, when deployed) of each network, then one for the rounds."""
    from tqdm import tqdm

    with recompile_limit_fails():
        verb = "compiling" if form == "deployed" else "building"
        models = {
            key: latency_form_of(spec, form)
            for key, spec in tqdm(
                specs.items(), desc=f"{verb} {len(specs)} networks", disable=not progress, leave=False
            )
        }
        with STOPWATCH.phase("timing"):
            shapes = {key: spec.input_shape for key, spec in specs.items()}
            times = interleaved_latency(models, shapes, rounds=rounds, progress=progress)
    return {key: (round(statistics.median(t), 4), round(interquartile_range(t), 4)) for key, t in times.items()}


def measure(
    spec: NetSpec,
    model: nn.Module | None = None,
    form: str = "eager",
    runs: int = 20,
    threads: int = DEFAULT_THREADS,
    batch_latency: int = 0,
    counter: str = "fvcore",
) -> Cost:
    """The one place a network is measured: counts (fvcore's, or torch's with `counter`) and timed forward passes,
    of `model` or a fresh build.

    `form` is eager, deployed (BN folded, FLGC as grouped convs, shift depthwise, torch.compile) or folded
    (BN folded, FLGC grouped, no compile). Counts are of the form timed, before compilation, except that a deployed
    FLGC layer is counted with each group its own kernel: a kernel that pads unequal groups (duplicates, free
    sizes) to the largest spends the padding in time, not in MACs or parameters (sum_g |in_g| |out_g| k^2 H W).
    """
    from scaler.model.nn.deploy import deploy
    from scaler.model.nn.flgc import flgc_layers

    if form not in LATENCY_FORMS:
        raise UserError(f"unknown latency form {form!r}; choose from {', '.join(LATENCY_FORMS)}")
    check_fits(spec)
    with STOPWATCH.phase("building"):
        model = build(spec).eval() if model is None else cpu_copy(model)
        per_group = form != "eager" and bool(flgc_layers(model))  # FLGC counted without the timed kernel's padding
        if form == "eager":
            counted = model
        else:
            counted = deploy(model, shifts=False, compile=False, strategy="per_group" if per_group else None)
    timed = (
        counted
        if form == "eager" or (form == "folded" and not per_group)
        else latency_form_of(spec, form, model, threads)
    )
    batch_ms = math.nan
    with STOPWATCH.phase("timing"):
        times = latency_times(timed, spec.input_shape, 1, runs=runs, threads=threads)
        if batch_latency:
            batch_ms = statistics.median(
                latency_times(timed, spec.input_shape, batch_latency, runs=max(3, runs // 4), threads=threads)
            )
    with STOPWATCH.phase("counting"):
        params = count_params(counted)
        macs = count_macs(counted, spec.input_shape, counter)
        activations = count_activations(counted, spec.input_shape)
    return Cost(
        resolution=spec.resolution,
        params=params,
        macs=macs,
        activations=activations,
        latency_ms=round(statistics.median(times), 4),
        latency_iqr_ms=round(interquartile_range(times), 4),
        latency_form=form,
        latency_batch_ms=round(batch_ms, 4),
    )


def count(spec: NetSpec, batch: int = 1, training: bool = False, seed: int | None = None) -> tuple[int, int]:
    """fvcore MACs and parameters of a spec as built (from `seed`, where it matters: FLGC's random groups), untimed;
    refused in one line, unbuilt, when it cannot fit."""
    check_fits(spec, batch, training=training)
    with STOPWATCH.phase("counting"):
        model = build(spec, seed=seed)
        return count_macs(model, spec.input_shape), count_params(model)


def built(spec: NetSpec, seed: int | None = None) -> nn.Module:
    """The network a spec describes, for use outside scaler's own training (export, `scaler.build`): refused in
    one line, unbuilt, when it cannot fit; its initial weights depend on `seed` alone when given."""
    check_fits(spec)
    with STOPWATCH.phase("building"):
        return build(spec, seed=seed)


def buildable(spec: NetSpec) -> NetSpec:
    """The spec, once it is known to fit in memory and to build (a grouping that does not divide fails here)."""
    check_fits(spec)
    build(spec)
    return spec


def grouped_share(dense: NetSpec, grouped: NetSpec) -> float:
    """Share of the dense network's MACs in the convolutions the grouped spec groups (FLGC or fixed groups)."""
    from fvcore.nn import FlopCountAnalysis

    from scaler.model.nn.flgc import FLGCConv2d

    dense_model, grouped_model = build(dense).eval(), build(grouped).eval()
    names = {
        name
        for name, m in grouped_model.named_modules()
        if isinstance(m, FLGCConv2d) or (isinstance(m, nn.Conv2d) and 1 < m.groups < m.in_channels)
    }
    analysis = FlopCountAnalysis(dense_model, torch.zeros(1, *dense.input_shape))
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    by_module = analysis.by_module()
    return sum(by_module.get(name, 0) for name in names) / count_macs(dense_model, dense.input_shape)


def evaluate_model(
    spec: NetSpec,
    setup: Setup,
    train_config: TrainConfig | bool = True,
    *,
    report: Callable[[int, float], None] | None = None,
    description: str = "train",
    test: bool = True,
    cost: Cost | None = None,
    form: str = "eager",
    batch_latency: int = 0,
) -> Evaluated:
    """Build, train (unless `train_config` is False), test and measure a spec: the row, the model it made and its
    per-example outputs on the validation split (and the test split unless `test` is False).

    `train_config` True trains with the run's TrainConfig; a TrainConfig trains with that one. `cost`, when
    given, is the network's already measured cost. `report(epoch, val_acc)` may raise to stop training early.
    """
    config = setup.config.train if train_config is True else train_config
    if config is False:
        with STOPWATCH.phase("building"):
            model = build(spec, seed=setup.config.seed)
        cost = cost or measure(spec, model, form, setup.config.latency_runs, batch_latency=batch_latency)
        return Evaluated(Row(**asdict(cost)), model, {})
    assert isinstance(config, TrainConfig)
    if setup.dataset is None:
        raise ValueError("evaluate: training needs a Setup with its dataset loaded")
    check_fits(spec, config.batch_size, training=True)
    with STOPWATCH.phase("building"):
        model = build(spec, seed=config.seed)
    with STOPWATCH.phase("training"):
        result = train(
            model,
            setup.dataset,
            spec.resolution,
            config,
            report=report,
            progress=setup.config.progress,
            description=description,
        )
    assert result.val_outputs is not None  # the last epoch validated: its outputs are the trained model's
    outputs = {"val": result.val_outputs}
    if result.raw_val_outputs is not None:
        outputs["val_raw"] = result.raw_val_outputs  # with --ema: the last weights before averaging
    with STOPWATCH.phase("testing"):
        if test:
            outputs["test"] = split_outputs(model, setup.dataset.test, setup.dataset, spec.resolution, config)
    test_acc = float(outputs["test"].correct(setup.dataset.test.labels.numpy()).mean()) if test else math.nan
    cost = cost or measure(spec, model, form, setup.config.latency_runs, batch_latency=batch_latency)
    row = Row(
        **asdict(cost),
        trained=True,
        seed=config.seed,
        val_acc=result.final_val_acc,
        test_acc=test_acc,
        val_loss=round(outputs["val"].loss, 5),
        test_loss=round(outputs["test"].loss, 5) if test else math.nan,
        epochs=result.epochs,
        train_seconds=round(result.train_seconds, 2),
        images_per_second=round(result.images_per_second, 1),
        val_curve=tuple(result.val_acc),
        val_before_dup=result.val_before_dup,
        val_after_dup=result.val_after_dup,
    )
    return Evaluated(row, model, outputs)


def evaluate(spec: NetSpec, setup: Setup, train_config: TrainConfig | bool = True, **options: Any) -> Row:
    """`evaluate_model`'s row alone: the one build -> train -> test -> measure step of every command."""
    return evaluate_model(spec, setup, train_config, **options).row


PLAN_COLUMNS = ("label", "variant", "depth", "width", "res_mult", "train", "progressive")


def planned_spec(base: NetSpec, point: Mapping[Any, Any]) -> NetSpec:
    """The network a plan row names: `base` with its variant, scaled by its (depth, width, res_mult) unless all 1."""
    spec = apply_variant(base, point["variant"])
    multipliers = (point["depth"], point["width"], point["res_mult"])
    return spec if multipliers == (1.0, 1.0, 1.0) else scale(spec, *multipliers)


def retime_interleaved(
    frame: pd.DataFrame, setup: Setup, keys: list[str], form: str, rounds: int = 30, log: Log = print
) -> pd.DataFrame:
    """`frame` from engine.evaluate_plan with latency_ms, latency_iqr_ms and latency_form replaced: every planned network
    (rows that share `keys` are one network) timed again, all interleaved, in `form`."""
    networks = frame.drop_duplicates(keys).to_dict("records")
    log(f"timing {len(networks)} networks interleaved ({form}, {rounds} rounds)")
    specs = {tuple(point[key] for key in keys): planned_spec(setup.spec, point) for point in networks}
    latency = interleaved_costs(specs, form, rounds=rounds, progress=setup.config.progress)
    rows = list(frame[keys].itertuples(index=False, name=None))
    return frame.assign(
        latency_ms=[latency[row][0] for row in rows],
        latency_iqr_ms=[latency[row][1] for row in rows],
        latency_form=form,
    )
