"""The one training loop every command uses: tensors in memory, channels_last, cosine SGD, progressive learning."""

from __future__ import annotations

import base64
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from scaler.compat import foreach_lerp_
from scaler.errors import UserError
from scaler.model.nn.flgc import FLGCConv2d, assignment_parameters, flgc_layers, freeze_assignments
from scaler.training.augment import rand_augment
from scaler.training.data import Dataset, Split


class TrainingDiverged(UserError):
    """The loss became NaN or infinite: a user error (learning rate, data), one line and exit status 2."""


@dataclass(frozen=True)
class Progressive:
    """EfficientNetV2 progressive learning: size and regularisation ramp together over `stages`.

    Regularisation follows EfficientNetV2-S (Tan & Le 2021, Table 6): RandAugment magnitude 5 -> 15,
    dropout 0.1 -> 0.3, mixup 0 -> 0. The paper starts at 128/300 = 0.43 of the target size; at 28 px
    that leaves 1x1 feature maps, so the start is 0.6 of the target. Each stage trains at least
    `min_stage_epochs` epochs (the paper gives each of its 4 stages 87 of 350 epochs): with fewer epochs
    the stages are merged, and a budget that leaves fewer than 2 stages is refused.
    """

    stages: int = 3
    start_fraction: float = 0.6
    dropout: tuple[float, float] = (0.1, 0.3)
    randaugment: tuple[float, float] = (5.0, 15.0)
    mixup: tuple[float, float] = (0.0, 0.0)
    min_stage_epochs: int = 2

    def stages_for(self, epochs: int) -> int:
        """How many stages `epochs` allow: at most `stages`, each of at least `min_stage_epochs` epochs."""
        return max(1, min(self.stages, epochs // max(1, self.min_stage_epochs)))

    def check(self, epochs: int) -> None:
        """Refuse, in one line, a budget too short for the ramp to exist."""
        if self.stages_for(epochs) < 2:
            needed = 2 * self.min_stage_epochs
            raise UserError(
                f"progressive learning needs at least {needed} epochs ({self.min_stage_epochs} per stage, "
                f"2 stages or more); got --epochs {epochs}"
            )

    def stage_of(self, epoch: int, epochs: int) -> int:
        """Stage index of `epoch` when `epochs` are split evenly over the stages."""
        stages = self.stages_for(epochs)
        return min(stages - 1, epoch * stages // epochs)

    def settings(self, stage: int, epochs: int, resolution: int) -> tuple[int, float, float, float]:
        """(image size, dropout, RandAugment magnitude, mixup alpha) of `stage`."""
        stages = self.stages_for(epochs)
        t = stage / (stages - 1) if stages > 1 else 1.0
        lerp = lambda pair: pair[0] + t * (pair[1] - pair[0])  # noqa: E731
        start = max(8, int(round(resolution * self.start_fraction / 2)) * 2)
        size = int(round((start + t * (resolution - start)) / 2)) * 2
        return size, lerp(self.dropout), lerp(self.randaugment), lerp(self.mixup)


LR_REFERENCE_BATCH = 64


@dataclass(frozen=True)
class TrainConfig:
    """How to train: optimiser, schedule, regularisation, speed options.

    `lr` is the peak learning rate and `warmup_steps` the linear warm-up at a batch of 64 images; other
    batch sizes scale the rate linearly (Goyal et al. 2017) and keep the warm-up's length in images.
    `max_images`, when set, ends training after that many images (the last epoch cut short); the cosine
    schedule spans the shorter run. `ema` > 0 validates (and returns) an exponential moving average of the
    weights over that fraction of the run's steps, BN statistics recomputed for it. FLGC assignments learn for
    the first `assignment_freeze` of the steps, are then fixed (duplicates added) and the rest of the run
    fine-tunes the weights; `masked_gradient` trains the weights FLGC masks out as if connected (straight-through).
    """

    epochs: int = 3
    max_images: int | None = None
    batch_size: int = 64
    lr: float = 0.05
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-5
    assignment_lr_scale: float = 1.0
    assignment_freeze: float = 0.5
    masked_gradient: bool = True
    label_smoothing: float = 0.1
    warmup_steps: int = 50
    progressive: Progressive | None = None
    channels_last: bool = True
    compile: bool = False
    amp: bool = True
    seed: int = 0
    threads: int | None = None
    eval_batch_size: int = 512
    precise_bn: int = 1024
    ema: float = 0.0
    device: str = "auto"

    @property
    def peak_lr(self) -> float:
        """The peak learning rate at this batch size: `lr` scaled linearly from a batch of 64."""
        return self.lr * self.batch_size / LR_REFERENCE_BATCH

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of `dataclasses.asdict` after a JSON round trip (the progressive ramp's lists back to tuples)."""
        ramp = data.get("progressive")
        if ramp:
            fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in ramp.items()}
            ramp = Progressive(**fields)
        return cls(**data | {"progressive": ramp})


@dataclass
class TrainResult:
    """What one training run measured."""

    val_acc: list[float] = field(default_factory=list)
    train_seconds: float = 0.0
    images_seen: int = 0
    epochs: int = 0
    resolutions: list[int] = field(default_factory=list)
    val_outputs: Outputs | None = None  # per-example, after the last epoch validated
    raw_val_outputs: Outputs | None = None  # with `ema`: the last weights' own outputs, before averaging
    val_before_dup: float = math.nan  # FLGC with duplication: validation accuracy just before duplicates are added
    val_after_dup: float = math.nan  # ... and just after

    @property
    def final_val_acc(self) -> float:
        """Validation accuracy after the last epoch trained."""
        return self.val_acc[-1] if self.val_acc else float("nan")

    @property
    def images_per_second(self) -> float:
        """Training throughput."""
        return self.images_seen / self.train_seconds if self.train_seconds else 0.0


def check_device(name: str) -> None:
    """A device this machine has: auto, cpu, cuda or cuda:N with a GPU present; else one line."""
    if name == "auto":
        return
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"--device {name!r} is not a device: use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device {name!r}: scaler trains on cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name!r}: this machine has no CUDA GPU (use --device cpu or auto)")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UserError(f"--device {name!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")


def resolve_device(name: str) -> torch.device:
    """'auto' is CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Prepared:
    """A split as normalised float tensors at one resolution, on the device, ready to slice."""

    def __init__(
        self,
        split: Split,
        mean: torch.Tensor,
        std: torch.Tensor,
        resolution: int,
        device: torch.device,
        channels_last: bool,
    ) -> None:
        self.raw = split.images
        self.labels = split.labels.to(device)
        self.mean, self.std, self.device, self.resolution = mean, std, device, resolution
        self.channels_last = channels_last
        self.images = self.normalise(self.raw)

    def normalise(self, raw: torch.Tensor) -> torch.Tensor:
        """uint8 NCHW -> normalised float at this resolution, in the training memory format."""
        chunks = []
        for start in range(0, len(raw), 8192):
            x = raw[start : start + 8192].to(self.device).float().div_(255)
            if x.shape[-1] != self.resolution:
                x = F.interpolate(
                    x, size=(self.resolution, self.resolution), mode="bilinear", antialias=True, align_corners=False
                )
            chunks.append((x - self.mean) / self.std)
        images = torch.cat(chunks)
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum (or RMSProp); no weight decay on BN, biases and FLGC assignment logits.

    Each parameter group carries `lr_scale`, its multiple of the scheduled LR: assignment logits learn
    at `config.assignment_lr_scale` times the rate of the weights.
    """
    assignment = assignment_parameters(model)
    chosen = {id(p) for p in assignment}
    rest = [p for p in model.parameters() if id(p) not in chosen]
    groups = [
        {"params": [p for p in rest if p.ndim > 1], "weight_decay": config.weight_decay, "lr_scale": 1.0},
        {"params": [p for p in rest if p.ndim <= 1], "weight_decay": 0.0, "lr_scale": 1.0},
    ]
    if assignment:
        groups.append({"params": assignment, "weight_decay": 0.0, "lr_scale": config.assignment_lr_scale})
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.peak_lr, momentum=config.momentum, nesterov=True)
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(groups, lr=config.peak_lr, alpha=0.9, eps=0.001, momentum=config.momentum)
    raise ValueError(f"unknown optimizer {config.optimizer!r}")


def cosine_lr(step: int, total: int, warmup: int) -> float:
    """Linear warm-up then cosine decay to zero, as a factor of the base LR."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def set_dropout(model: nn.Module, p: float) -> None:
    """Set every Dropout's probability."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, data: Prepared, images: int = 1024, batch_size: int = 128) -> None:
    """Precise BN (as in pycls): recompute running statistics as a plain average over training batches.

    `data` holds training images at the resolution the model is evaluated at, whatever size it trained at.

    Early in a short run the EMA statistics lag far behind the weights: MobileNet after one epoch on
    3000 images scored 0.08 in eval mode but 0.69 with recalibrated statistics.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    count = min(images, len(data.labels))
    for start in range(0, count, batch_size):
        model(data.images[start : min(count, start + batch_size)])
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum


@torch.no_grad()
def prepared_outputs(
    model: nn.Module, data: Prepared, batch_size: int = 512, amp: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Per example of a prepared split: the class `model` predicts and the probability it gives the true class."""
    model.eval()
    predicted, p_true = [], []
    for start in range(0, len(data.labels), batch_size):
        with torch.autocast(data.device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(data.images[start : start + batch_size])
        labels = data.labels[start : start + batch_size]
        predicted.append(logits.argmax(1).cpu())
        p_true.append(logits.float().softmax(1).gather(1, labels[:, None]).squeeze(1).cpu())
    if not predicted:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    return torch.cat(predicted).numpy(), torch.cat(p_true).numpy()


def prepared_accuracy(model: nn.Module, data: Prepared, batch_size: int = 512, amp: bool = False) -> float:
    """Top-1 accuracy on a prepared split."""
    predicted, _ = prepared_outputs(model, data, batch_size, amp)
    return int((predicted == data.labels.cpu().numpy()).sum()) / max(1, len(data.labels))


class WeightAverage:
    """An exponential moving average of a model's parameters, with the usual warm-up of the decay so that the
    starting weights wash out; BN statistics are not averaged (precise BN recomputes them for the average)."""

    def __init__(self, model: nn.Module, horizon_steps: float) -> None:
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        self.average = [p.detach().clone() for p in self.parameters]
        self.decay = 1.0 - 1.0 / max(1.0, horizon_steps)
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        """Move the average towards the current weights."""
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        foreach_lerp_(self.average, [p.detach() for p in self.parameters], 1.0 - decay)
        self.updates += 1

    @torch.no_grad()
    def swap(self) -> None:
        """Exchange the model's weights and the average (twice restores both)."""
        for parameter, average in zip(self.parameters, self.average):
            held = parameter.detach().clone()
            parameter.copy_(average)
            average.copy_(held)


MOVED_TRACE_POINTS = 10  # times, before the freeze, that each FLGC layer's moved channels are recorded
DIVERGENCE_CHECK_STEPS = 25  # the loss is checked on the host this often: no sync in every step


def check_finite(finite: torch.Tensor, epoch: int, step: int) -> None:
    """Raise TrainingDiverged once a loss since the start was NaN or infinite."""
    if not bool(finite):
        raise TrainingDiverged(
            f"training diverged: loss became NaN or infinite by epoch {epoch + 1}, step {step}; lower --lr"
        )


def train(
    model: nn.Module,
    dataset: Dataset,
    resolution: int,
    config: TrainConfig = TrainConfig(),
    report: Callable[[int, float], None] | None = None,
    progress: bool = True,
    description: str = "train",
) -> TrainResult:
    """Train `model` on `dataset.train` at `resolution`, validating on `dataset.val` after every epoch.

    `report(epoch, val_acc)` is called after each epoch and may raise to stop training early.
    """
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    device = resolve_device(config.device)
    threads_before = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    amp = config.amp and device.type == "cuda"
    mean, std = normalisation(dataset, device)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model = model.to(device).to(memory_format=memory_format)
    step_model = cast(nn.Module, torch.compile(model, dynamic=False)) if config.compile else model
    val = Prepared(dataset.val, mean, std, resolution, device, config.channels_last)
    if config.progressive:
        config.progressive.check(config.epochs)
    if not 0.0 <= config.assignment_freeze <= 1.0:
        raise UserError(f"--duplicate-after must be a fraction of training in [0, 1] (got {config.assignment_freeze})")
    head = calibration_split(dataset, config)
    calibration = None if head is None else Prepared(head, mean, std, resolution, device, config.channels_last)
    optimizer = make_optimizer(model, config)
    steps_per_epoch, total_steps, epochs, warmup = schedule(config, len(dataset.train))
    layers = flgc_layers(model)
    for layer in layers:
        layer.masked_gradient = config.masked_gradient
    freeze_step = round(config.assignment_freeze * total_steps) if layers else None
    trace_every = max(1, (freeze_step or 0) // MOVED_TRACE_POINTS)
    if config.ema < 0 or (config.ema > 0 and freeze_step is not None):
        raise UserError(f"--ema must be >= 0 and is not for FLGC networks, whose groups change (got {config.ema})")
    average = WeightAverage(model, config.ema * total_steps) if config.ema > 0 else None
    result = TrainResult()
    prepared: dict[int, Prepared] = {}
    dropouts = {module: module.p for module in model.modules() if isinstance(module, nn.Dropout)}
    bar = tqdm(total=total_steps, desc=description, disable=not progress, leave=False, unit="step")
    step = 0
    finite = torch.ones((), dtype=torch.bool, device=device)
    start_time = time.perf_counter()
    try:
        for epoch in range(epochs):
            size, dropout, magnitude, mixup = epoch_settings(config, epoch, resolution)
            if dropout is not None:
                set_dropout(model, dropout)
            if size not in prepared:
                prepared = {size: Prepared(dataset.train, mean, std, size, device, config.channels_last)}
            data = prepared[size]
            result.resolutions.append(size)
            model.train()
            order = torch.randperm(len(data.labels), generator=generator).to(device)
            for start in range(0, steps_per_epoch * config.batch_size, config.batch_size):
                index = order[start : start + config.batch_size]
                if len(index) < 2 or step >= total_steps:
                    continue
                if freeze_step is not None and step <= freeze_step and step % trace_every == 0:
                    note_moved(layers, step)
                if step == freeze_step:
                    frozen(model, layers, result, lambda: accuracy_now(model, val, calibration, dataset, config, amp))
                    model.train()
                x, y = data.images[index], data.labels[index]
                if magnitude > 0:
                    x = data.normalise(rand_augment(data.raw[index.cpu()], magnitude, generator))
                for group in optimizer.param_groups:
                    group["lr"] = config.peak_lr * group["lr_scale"] * cosine_lr(step, total_steps, warmup)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    loss = step_loss(step_model, x, y, mixup, config.label_smoothing, generator)
                finite &= torch.isfinite(loss.detach())
                if step % DIVERGENCE_CHECK_STEPS == 0:
                    check_finite(finite, epoch, step)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if average is not None:
                    average.update()
                step += 1
                result.images_seen += len(y)
                bar.update(1)
                if progress and step % 20 == 0:
                    bar.set_postfix(loss=f"{loss.item():.3f}", res=size)
            check_finite(finite, epoch, step)
            if freeze_step is not None and step >= freeze_step and not all(layer.frozen for layer in layers):
                note_moved(layers, step)
                frozen(model, layers, result, lambda: accuracy_now(model, val, calibration, dataset, config, amp))
            result.train_seconds = time.perf_counter() - start_time
            last = epoch == epochs - 1
            if average is not None and last:
                result.raw_val_outputs = validated(model, val, calibration, dataset, config, amp)
            if average is not None:
                average.swap()
            result.val_outputs = validated(model, val, calibration, dataset, config, amp)
            if average is not None and not last:
                average.swap()
            accuracy = int(result.val_outputs.correct(dataset.val.labels.numpy()).sum()) / max(1, len(dataset.val))
            result.val_acc.append(accuracy)
            result.epochs = epoch + 1
            bar.set_postfix(val_acc=f"{accuracy:.4f}", res=size)
            if report:
                report(epoch, accuracy)
    finally:
        bar.close()
        torch.set_num_threads(threads_before)
        for module, p in dropouts.items():
            module.p = p
    return result


def note_moved(layers: list[FLGCConv2d], step: int) -> None:
    """Record in each FLGC layer how many of its channels and filters have left their starting group by `step`."""
    for layer in layers:
        layer.note_moved(step)


def frozen(model: nn.Module, layers: list[FLGCConv2d], result: TrainResult, accuracy: Callable[[], float]) -> None:
    """Fix every FLGC assignment; where layers duplicate, validate just before and just after into `result`."""
    if any(layer.duplicate and not layer.frozen for layer in layers):
        result.val_before_dup = accuracy()
        freeze_assignments(model)
        result.val_after_dup = accuracy()
    else:
        freeze_assignments(model)


def accuracy_now(
    model: nn.Module, val: Prepared, calibration: Prepared | None, dataset: Dataset, config: TrainConfig, amp: bool
) -> float:
    """Validation accuracy of the model as it is (BN statistics recomputed when precise BN is on)."""
    outputs = validated(model, val, calibration, dataset, config, amp)
    return int(outputs.correct(dataset.val.labels.numpy()).sum()) / max(1, len(dataset.val))


def validated(
    model: nn.Module, val: Prepared, calibration: Prepared | None, dataset: Dataset, config: TrainConfig, amp: bool
) -> Outputs:
    """The model's per-example validation outputs, BN statistics first recomputed when precise BN is on."""
    if calibration is not None:
        recalibrate_batchnorm(model, calibration, config.precise_bn)
    return Outputs.of(dataset.val, *prepared_outputs(model, val, config.eval_batch_size, amp))


def schedule(config: TrainConfig, images: int) -> tuple[int, int, int, int]:
    """(steps per epoch, total steps, epochs started, warm-up steps) of training on `images` images."""
    full_batches_only = config.compile and images >= config.batch_size  # one shape, one compiled graph
    steps_per_epoch = images // config.batch_size if full_batches_only else math.ceil(images / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    if config.max_images:
        total_steps = max(1, min(total_steps, config.max_images // config.batch_size))
    epochs = math.ceil(total_steps / steps_per_epoch)
    warmup = min(math.ceil(config.warmup_steps * LR_REFERENCE_BATCH / config.batch_size), total_steps // 5)
    return steps_per_epoch, total_steps, epochs, warmup


def epoch_settings(config: TrainConfig, epoch: int, resolution: int) -> tuple[int, float | None, float, float]:
    """(image size, dropout or None to keep the model's, RandAugment magnitude, mixup alpha) of an epoch."""
    if not config.progressive:
        return resolution, None, 0.0, 0.0
    stage = config.progressive.stage_of(epoch, config.epochs)
    return config.progressive.settings(stage, config.epochs, resolution)


def step_loss(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, mixup: float, smoothing: float, generator: torch.Generator
) -> torch.Tensor:
    """Label-smoothed cross-entropy of one batch, on a mixup of the batch with a shuffle of itself when `mixup` > 0."""
    if mixup <= 0:
        return F.cross_entropy(model(x), y, label_smoothing=smoothing)
    lam = float(torch.distributions.Beta(mixup, mixup).sample())
    perm = torch.randperm(len(y), generator=generator).to(x.device)
    logits = model(lam * x + (1 - lam) * x[perm])
    return lam * F.cross_entropy(logits, y, label_smoothing=smoothing) + (1 - lam) * F.cross_entropy(
        logits, y[perm], label_smoothing=smoothing
    )


def normalisation(dataset: Dataset, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The dataset's per-channel mean and std, shaped to broadcast over NCHW, on `device`."""
    mean, std = (torch.tensor(v, device=device).view(1, -1, 1, 1) for v in dataset.mean_std)
    return mean, std


def calibration_split(dataset: Dataset, config: TrainConfig) -> Split | None:
    """The training images precise BN recomputes statistics on (None when it is off)."""
    if not config.precise_bn:
        return None
    return Split(dataset.train.images[: config.precise_bn], dataset.train.labels[: config.precise_bn])


@dataclass(frozen=True)
class Outputs:
    """A model's per-example outputs on one split: the class it predicted and the probability it gave the true class
    (float16), with the split's fingerprint, so that two models are compared example by example on the same images."""

    images: str
    predicted: np.ndarray
    p_true: np.ndarray
    loss: float

    @classmethod
    def of(cls, split: Split, predicted: np.ndarray, p_true: np.ndarray) -> Outputs:
        """A split's outputs, with its fingerprint and the mean cross-entropy (without label smoothing)."""
        loss = float(-np.log(np.clip(p_true, 1e-12, 1.0)).mean()) if len(p_true) else math.nan
        return cls(split.fingerprint, predicted, p_true, loss)

    def correct(self, labels: np.ndarray) -> np.ndarray:
        """Per example, whether the prediction was right."""
        return np.asarray(self.predicted == labels)

    def to_json(self) -> dict[str, Any]:
        """Compact JSON: base64 of int16 predictions and float16 probabilities."""
        return {
            "images": self.images,
            "loss": self.loss,
            "predicted": base64.b64encode(self.predicted.astype(np.int16).tobytes()).decode(),
            "p_true": base64.b64encode(self.p_true.astype(np.float16).tobytes()).decode(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Outputs:
        """Inverse of `to_json`."""
        predicted = np.frombuffer(base64.b64decode(data["predicted"]), dtype=np.int16)
        p_true = np.frombuffer(base64.b64decode(data["p_true"]), dtype=np.float16)
        return cls(str(data["images"]), predicted, p_true, float(data["loss"]))


def split_outputs(
    model: nn.Module, split: Split, dataset: Dataset, resolution: int, config: TrainConfig = TrainConfig()
) -> Outputs:
    """Per-example outputs of `model` on one split of `dataset` at `resolution`, normalised as in training."""
    device = next(model.parameters()).device
    data = Prepared(split, *normalisation(dataset, device), resolution, device, config.channels_last)
    return Outputs.of(
        split, *prepared_outputs(model, data, config.eval_batch_size, config.amp and device.type == "cuda")
    )


def split_accuracy(
    model: nn.Module, split: Split, dataset: Dataset, resolution: int, config: TrainConfig = TrainConfig()
) -> float:
    """Top-1 accuracy of `model` on one split of `dataset` at `resolution`, normalised as in training."""
    device = next(model.parameters()).device
    data = Prepared(split, *normalisation(dataset, device), resolution, device, config.channels_last)
    return prepared_accuracy(model, data, config.eval_batch_size, config.amp and device.type == "cuda")


def recalibrated_accuracy(
    model: nn.Module, dataset: Dataset, resolution: int, config: TrainConfig = TrainConfig()
) -> float:
    """Validation accuracy after BN statistics are recomputed on training images, as `train` validates."""
    head = calibration_split(dataset, config)
    if head is not None:
        device = next(model.parameters()).device
        calibration = Prepared(head, *normalisation(dataset, device), resolution, device, config.channels_last)
        recalibrate_batchnorm(model, calibration, config.precise_bn)
    return split_accuracy(model, dataset.val, dataset, resolution, config)
