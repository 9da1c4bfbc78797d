"""Size guard: estimate a network's memory from its spec alone and refuse one that cannot fit."""

from __future__ import annotations

from dataclasses import dataclass

from scaler.errors import UserError
from scaler.model.spec import NetSpec, Stage
from scaler.model.structure import Block, conv_size, distinct_blocks

BYTES_PER_VALUE = 4
TRAINING_PARAM_COPIES = 4  # weights, gradients and two optimiser moments
TRAINING_ACTIVATION_COPIES = 3  # outputs kept for backward, their gradients, and workspace
MEMINFO = "/proc/meminfo"


@dataclass(frozen=True)
class Footprint:
    """Parameters of the built model, and conv/linear output elements for one image (fvcore's count)."""

    params: int
    activations: int


@dataclass
class _Tally:
    params: int = 0
    activations: int = 0

    def add(self, params: int, activations: int) -> None:
        """Add one layer's parameters and output elements."""
        self.params += params
        self.activations += activations


def _conv_bn(t: _Tally, cin: int, cout: int, kernel: int, groups: int, size: int, act: str | None) -> None:
    t.add(cout * (cin // groups) * kernel * kernel + 2 * cout, cout * size * size)
    _act(t, act, cout, size)


def _act(t: _Tally, act: str | None, channels: int, size: int) -> None:
    if act == "frelu":
        t.add(9 * channels + 2 * channels, channels * size * size)


def _pointwise(t: _Tally, stage: Stage, cin: int, cout: int, size: int, act: str | None) -> None:
    if stage.groups > 1:
        t.add(stage.groups * (cin + cout), cin * cout)  # assignment logits; the mask is one matmul output
    _conv_bn(t, cin, cout, 1, 1, size, act)


def _se(t: _Tally, channels: int, squeeze: int) -> None:
    if squeeze:
        t.add(channels * squeeze + squeeze + squeeze * channels + channels, squeeze + channels)


def _block(layout: Block, size: int) -> tuple[_Tally, int]:
    """Cost of one block reading its channels at `size` px, and its output side."""
    t = _Tally()
    stage, cin, stride, act = layout.stage, layout.in_channels, layout.stride, layout.activation
    out, k, hidden, squeeze = stage.out_channels, stage.kernel, layout.hidden, layout.squeeze
    small = conv_size(size, k, stride, k // 2)
    if stage.block == "dsconv":
        _conv_bn(t, cin, cin, k, cin, small, act)
        _pointwise(t, stage, cin, out, small, act)
    elif stage.block == "mbconv":
        if hidden != cin:
            _pointwise(t, stage, cin, hidden, size, act)
        _conv_bn(t, hidden, hidden, k, hidden, small, act)
        _se(t, hidden, squeeze)
        _pointwise(t, stage, hidden, out, small, None)
    elif stage.block == "fused":
        expanded = hidden != cin
        _conv_bn(t, cin, hidden if expanded else out, k, 1, small, act)
        _se(t, hidden, squeeze)
        if expanded:
            _pointwise(t, stage, hidden, out, small, None)
    else:
        _pointwise(t, stage, cin, hidden, size, act)
        _conv_bn(t, hidden, hidden, k, 1, small, act)
        _pointwise(t, stage, hidden, out, small, None)
        if stride != 1 or cin != out:
            _conv_bn(t, cin, out, 1, 1, conv_size(size, 1, stride, 0), None)
        _act(t, act, out, small)
    return t, small


def footprint(spec: NetSpec) -> Footprint:
    """Parameters and per-image activations of build(spec), in closed form from the spec's layout (no torch);
    alike blocks are costed once (a network scaled to huge depth stays fast)."""
    t = _Tally()
    stem = spec.stem
    size = conv_size(spec.resolution, stem.kernel, stem.stride, stem.kernel // 2)
    _conv_bn(t, spec.in_channels, stem.out_channels, stem.kernel, 1, size, spec.activation)
    if stem.maxpool:
        size = conv_size(size, 3, 2, 1)
    channels = stem.out_channels
    for layout, count in distinct_blocks(spec):
        cost, size = _block(layout, size)
        t.add(cost.params * count, cost.activations * count)
        channels = layout.stage.out_channels
    if spec.head.out_channels:
        _conv_bn(t, channels, spec.head.out_channels, 1, 1, size, spec.activation)
        channels = spec.head.out_channels
    t.add(channels * spec.num_classes + spec.num_classes, spec.num_classes)
    return Footprint(t.params, t.activations)


def available_memory() -> int | None:
    """Bytes of host memory available now (MemAvailable of /proc/meminfo), or None if unknown."""
    try:
        with open(MEMINFO) as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def estimated_bytes(fp: Footprint, batch: int = 1, training: bool = False) -> int:
    """Rough bytes to hold the weights (and optimiser state) and the activations of a batch in float32."""
    params = fp.params * (TRAINING_PARAM_COPIES if training else 1)
    activations = fp.activations * batch * (TRAINING_ACTIVATION_COPIES if training else 1)
    return BYTES_PER_VALUE * (params + activations)


def check_fits(spec: NetSpec, batch: int = 1, training: bool = False, available: int | None = None) -> Footprint:
    """Footprint of `spec`, or a one-line UserError when it needs more than `available` bytes (default: free RAM)."""
    fp = footprint(spec)
    limit = available_memory() if available is None else available
    needed = estimated_bytes(fp, batch, training)
    if limit is not None and needed > limit:
        mode = "training" if training else "inference"
        raise UserError(
            f"{spec.name} at {spec.resolution}px needs about {needed:.1e} bytes ({fp.params:.1e} parameters, "
            f"{fp.activations:.1e} activations per image, batch {batch}, {mode}) but {limit / 1e9:.1f} GB are "
            "available; lower --phi/--width/--resolution or --batch-size"
        )
    return fp
