"""FLGC deployed: a frozen FLGCConv2d as real grouped kernels (gathers, padded or bucketed groups, batched-matmul
plans, duplicates as kernels of their own), so MACs and latency actually drop; and what they cost."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from scaler.model.nn.flgc import FLGCConv2d, flgc_layers
from scaler.model.nn.flgc_plan import MatmulPlan, row_order, tracing

STRATEGIES = ("per_group", "padded", "bucketed", "per_group_matmul", "padded_matmul", "bucketed_matmul")

BUCKET_CALL_COST = 0.05

DEFAULT_STRATEGY = "padded_matmul"

FASTEST = "fastest"

DUPLICATE_FORMS = ("auto", "split", "padded")

PASS_COST = 64  # one extra pass over an output row costs about this many multiply-adds per element (2 CPU cores)


def select_channels(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x[:, index]; on a contiguous NCHW batch as one gather of (batch*channel) rows, several times faster."""
    batch, channels = x.shape[:2]
    if batch == 1 or not x.is_contiguous():
        return x.index_select(1, index)
    rows = (torch.arange(batch, device=x.device)[:, None] * channels + index).flatten()
    return x.reshape(batch * channels, -1).index_select(0, rows).view(batch, len(index), *x.shape[2:])


def place_channels(out: torch.Tensor, index: torch.Tensor, source: torch.Tensor) -> None:
    """out[:, index] = source, for a contiguous NCHW `out`, as one scatter of (batch*channel) rows."""
    batch, channels = out.shape[:2]
    rows = (torch.arange(batch, device=out.device)[:, None] * channels + index).flatten()
    out.view(batch * channels, -1).index_copy_(0, rows, source.reshape(batch * len(index), -1))


def plan_buckets(sizes: Sequence[tuple[int, int]], strategy: str) -> list[list[int]]:
    """Which groups share one padded grouped kernel: each alone, all together, or size-sorted buckets."""
    live = [g for g, (n_in, n_out) in enumerate(sizes) if n_in and n_out]
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}, expected one of {STRATEGIES}")
    if not live or strategy.startswith("per_group"):
        return [[g] for g in live]
    if not strategy.startswith("bucketed"):
        return [live]
    order = sorted(live, key=lambda g: sizes[g])
    call_cost = BUCKET_CALL_COST * sum(sizes[g][0] * sizes[g][1] for g in live)

    def cost(bucket: list[int]) -> float:
        return len(bucket) * max(sizes[g][0] for g in bucket) * max(sizes[g][1] for g in bucket) + call_cost

    best: list[tuple[float, list[list[int]]]] = [(0.0, [])]
    for end in range(1, len(order) + 1):
        best.append(
            min((best[start][0] + cost(order[start:end]), best[start][1] + [order[start:end]]) for start in range(end))
        )
    return best[-1][1]


def splitting_pays(gained: Sequence[int]) -> bool:
    """Whether duplicates (how many each group gained) cost less as kernels of their own, each an extra pass over
    its group's output rows (PASS_COST multiply-adds per element), than padding every group to the one that
    gained most inside the base kernel."""
    return sum(n + PASS_COST for n in gained if n) < len(gained) * max(gained)


def primary_groups(member_in: torch.Tensor, learned_in: torch.Tensor) -> torch.Tensor:
    """Each input channel's own group within `member_in` (in x G, one per channel): the learned one where
    duplication only added to it, else the first it belongs to."""
    if bool((learned_in.sum(1) == 1).all()) and not (learned_in & ~member_in).any():
        return learned_in.clone()
    return F.one_hot(member_in.float().argmax(1), member_in.shape[1]).bool() & member_in


@torch.no_grad()
def duplicate_kernels(
    layer: FLGCConv2d, duplicates: torch.Tensor, out_groups: list[torch.Tensor], bucket: list[int], rows: int
) -> tuple[list[nn.Conv2d], list[tuple[int, int]], torch.Tensor]:
    """The duplicated maps (in x G) as one small kernel per group that gained any, each reading only its own
    duplicates; the (first row, rows) of the single base kernel's output it adds to (`rows` per group, groups in
    `bucket` order); and the input channels they read, in that order."""
    weight = layer.weight.detach()
    k = layer.kernel_size
    convs, targets, channels = [], [], []
    for slot, group in enumerate(bucket):
        picked, filters = duplicates[:, group].nonzero().flatten(), out_groups[group]
        if not len(picked) or not len(filters):
            continue
        conv = nn.Conv2d(len(picked), len(filters), k, layer.stride, k // 2, bias=False)
        conv = conv.to(weight.device, weight.dtype).requires_grad_(False)
        conv.weight.copy_(weight[filters][:, picked])
        convs.append(conv)
        targets.append((slot * rows, len(filters)))
        channels.append(picked)
    return convs, targets, torch.cat(channels)


class DeployedFLGC(nn.Module):
    """An FLGCConv2d as real grouped kernels: gather each group's input channels, run, scatter filters back.

    Groups are split into buckets (`plan_buckets`); a bucket is one Conv2d with groups=len(bucket), its groups
    zero-padded to the bucket's largest |in_g| and |out_g|. Strategies ending in "_matmul" (1x1 only) run each
    bucket's weight as a batched matmul on the NCHW input instead of a conv. Filters of groups without inputs
    output their bias (0 until a BN is fused). `sizes` keeps (|in_g|, |out_g|) per group, duplicates counted.

    With duplicates, a single kernel either pads every group to the one that gained most ("padded"), or holds the
    own groups only (equal, so unpadded and its permutation foldable) while `extras`, one small kernel per group
    that gained duplicates, add them to its product ("split"): that costs in proportion to the multiply-adds
    duplication adds plus a pass over each gained group's rows, so it pays where duplicates land unevenly
    (`splitting_pays`, what "auto" follows).
    """

    starved_filters: torch.Tensor
    starved_bias: torch.Tensor
    output_index: torch.Tensor
    extra_index: torch.Tensor

    def __init__(self, layer: FLGCConv2d, strategy: str = DEFAULT_STRATEGY, duplicates: str = "auto") -> None:
        super().__init__()
        if duplicates not in DUPLICATE_FORMS:
            raise ValueError(f"unknown duplicates form {duplicates!r}, expected one of {DUPLICATE_FORMS}")
        member_in, member_out = layer.assignment()
        weight = layer.weight.detach()
        device = weight.device
        k, self.kernel_size, self.stride = layer.kernel_size, layer.kernel_size, layer.stride
        self.in_channels, self.out_channels, self.strategy = layer.in_channels, layer.out_channels, strategy
        self.matmul = strategy.endswith("_matmul") and k == 1
        out_groups = [member_out[:, g].nonzero().flatten() for g in range(layer.groups)]
        self.sizes = [(int(member_in[:, g].sum()), len(o)) for g, o in enumerate(out_groups)]
        primary = primary_groups(member_in, layer.learned()[0] if layer.frozen else member_in)
        primary_sizes = [(int(primary[:, g].sum()), len(o)) for g, o in enumerate(out_groups)]
        gained = (member_in & ~primary).sum(0).tolist()
        split = duplicates != "padded" and any(gained) and len(plan_buckets(primary_sizes, strategy)) == 1
        split = split and all(n_in for n_in, _ in primary_sizes)
        split = split and (duplicates == "split" or splitting_pays(gained))
        kernel_in = primary if split else member_in
        in_groups = [kernel_in[:, g].nonzero().flatten() for g in range(layer.groups)]
        self.convs = nn.ModuleList()
        self.gather_inputs: list[bool] = []
        self.workspaces: dict[str, torch.Tensor] = {}
        self.row_orders: dict[str, tuple[torch.Tensor, tuple[int, ...], torch.Tensor]] = {}
        self.plans: dict[tuple[Any, ...], MatmulPlan] = {}
        self.scatter_rows: list[bool] = []
        position = torch.empty(layer.out_channels, dtype=torch.long, device=device)
        rows = 0
        kernel_sizes = [(len(i), len(o)) for i, o in zip(in_groups, out_groups)]
        buckets = plan_buckets(kernel_sizes, strategy)
        for index, bucket in enumerate(buckets):
            max_in = max(kernel_sizes[g][0] for g in bucket)
            max_out = max(kernel_sizes[g][1] for g in bucket)
            conv = nn.Conv2d(
                len(bucket) * max_in, len(bucket) * max_out, k, layer.stride, k // 2, groups=len(bucket), bias=False
            ).to(device, weight.dtype)
            conv.weight.data.zero_()
            gather = torch.zeros(len(bucket) * max_in, dtype=torch.long, device=device)
            filters = torch.full((len(bucket) * max_out,), -1, dtype=torch.long, device=device)
            for slot, g in enumerate(bucket):
                ins, outs = in_groups[g], out_groups[g]
                gather[slot * max_in : slot * max_in + len(ins)] = ins
                filters[slot * max_out : slot * max_out + len(outs)] = outs
                conv.weight.data[slot * max_out : slot * max_out + len(outs), : len(ins)] = weight[outs][:, ins]
            real_rows = (filters >= 0).nonzero().flatten()
            position[filters[real_rows]] = rows + real_rows
            rows += len(filters)
            self.register_buffer(f"input_index_{index}", gather)
            self.register_buffer(f"row_filters_{index}", filters)
            self.register_buffer(f"real_rows_{index}", real_rows)
            self.gather_inputs.append(not torch.equal(gather, torch.arange(self.in_channels, device=device)))
            self.scatter_rows.append(len(real_rows) < len(filters))
            self.convs.append(conv)
        starved = torch.cat([o for i, o in zip(in_groups, out_groups) if not len(i)] + [out_groups[0][:0]])
        position[starved] = rows + torch.arange(len(starved), device=device)
        self.register_buffer("starved_filters", starved)
        self.register_buffer("starved_bias", torch.zeros(len(starved), device=device, dtype=weight.dtype))
        self.register_buffer("output_index", position)
        self.permute_outputs = not torch.equal(position, torch.arange(self.out_channels, device=device))
        self.extras = nn.ModuleList()
        self.extra_targets: list[tuple[int, int]] = []
        extra_index = torch.zeros(0, dtype=torch.long, device=device)
        if split:
            rows_per_group = self.group_convs()[0].out_channels // len(buckets[0])
            extras, self.extra_targets, extra_index = duplicate_kernels(
                layer, member_in & ~primary, out_groups, buckets[0], rows_per_group
            )
            self.extras.extend(extras)
        self.register_buffer("extra_index", extra_index)

    def emits_raw(self) -> bool:
        """Whether the layer can hand its rows on in group order (one kernel, no filter without inputs)."""
        return len(self.convs) == 1 and not len(self.starved_filters)

    @torch.no_grad()
    def emit_raw(self) -> torch.Tensor:
        """Output the kernel's rows as they come (group order, padding rows included) instead of in filter order;
        returns the row each filter now sits in, for the consumer to read from (`read_from`)."""
        if not self.emits_raw():
            raise ValueError("only a single-kernel layer without starved filters can hand on its raw rows")
        self.plans.clear()
        position = self.output_index.clone()
        rows = self.group_convs()[0].out_channels
        self.output_index = torch.arange(rows, device=position.device)
        self.out_channels, self.permute_outputs = rows, False
        return position

    @torch.no_grad()
    def read_from(self, position: torch.Tensor, width: int) -> None:
        """Read input channel c from channel position[c] of a `width`-channel input: the producer's permutation
        folded into this layer's gathers."""
        self.plans.clear()
        for index in range(len(self.convs)):
            gather = position[self.buffer("input_index", index)]
            setattr(self, f"input_index_{index}", gather)
            self.gather_inputs[index] = not torch.equal(gather, torch.arange(width, device=gather.device))
        self.extra_index = position[self.extra_index]
        self.in_channels = width

    def permutation_read(self) -> torch.Tensor | None:
        """The one kernel's input gather where it reads every input channel exactly once, else None."""
        if len(self.convs) != 1:
            return None
        gather = self.buffer("input_index", 0)
        every = torch.arange(self.in_channels, device=gather.device)
        return gather if len(gather) == self.in_channels and torch.equal(gather.sort().values, every) else None

    def buffer(self, name: str, index: int) -> torch.Tensor:
        """The index buffer `name` of bucket `index`."""
        return cast(torch.Tensor, getattr(self, f"{name}_{index}"))

    def group_convs(self) -> list[nn.Conv2d]:
        """One grouped Conv2d per bucket."""
        return [cast(nn.Conv2d, conv) for conv in self.convs]

    def extra_convs(self) -> list[nn.Conv2d]:
        """One Conv2d per group that gained duplicates, apart from the base kernel."""
        return [cast(nn.Conv2d, conv) for conv in self.extras]

    def output_size(self, x: torch.Tensor) -> tuple[int, int]:
        """Spatial size of the output for input `x`."""
        k, pad = self.kernel_size, self.kernel_size // 2
        return (x.shape[-2] + 2 * pad - k) // self.stride + 1, (x.shape[-1] + 2 * pad - k) // self.stride + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_matmul(x) if self.matmul else self.forward_conv(x)

    def forward_conv(self, x: torch.Tensor) -> torch.Tensor:
        """Each bucket a grouped Conv2d on its gathered channels; outputs gathered (one bucket) or scattered."""
        pieces = [
            conv(select_channels(x, self.buffer("input_index", index)) if self.gather_inputs[index] else x)
            for index, conv in enumerate(self.group_convs())
        ]
        if len(self.extras):
            picked, offset = select_channels(x, self.extra_index), 0
            for conv, (first, count) in zip(self.extra_convs(), self.extra_targets):
                pieces[0][:, first : first + count] += conv(picked[:, offset : offset + conv.in_channels])
                offset += conv.in_channels
        if self.emits_raw():
            return select_channels(pieces[0], self.output_index) if self.permute_outputs else pieces[0]
        out = x.new_empty(x.shape[0], self.out_channels, *self.output_size(x))
        for index, piece in enumerate(pieces):
            filters = self.buffer("row_filters", index)
            if self.scatter_rows[index]:
                real_rows = self.buffer("real_rows", index)
                piece, filters = select_channels(piece, real_rows), filters[real_rows]
            place_channels(out, filters, piece)
        if len(self.starved_filters):
            constant = self.starved_bias.view(1, -1, 1, 1).expand(out.shape[0], -1, *out.shape[2:])
            place_channels(out, self.starved_filters, constant)
        return out

    def workspace(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor | None:
        """A scratch tensor kept between inference calls, as fresh large allocations cost page faults; None
        while autograd or tracing needs fresh tensors."""
        if torch.is_grad_enabled() or tracing():
            return None
        kept = self.workspaces.get(name)
        if kept is None or kept.shape != shape or kept.dtype != like.dtype or kept.device != like.device:
            kept = self.workspaces[name] = like.new_empty(shape)
        return kept

    def image_rows(
        self, name: str, channels: torch.Tensor, batch: int, channel_step: int, image_step: int
    ) -> torch.Tensor:
        """`row_order`, kept per batch size: at small batches the index arithmetic costs more than the gather it
        feeds."""
        key = (channels._version, batch, channel_step, image_step)
        kept = self.row_orders.get(name)
        recording = tracing()
        if kept is not None and kept[0] is channels and kept[1] == key and not recording:
            return kept[2]
        order = row_order(channels, batch, channel_step, image_step)
        if not recording:
            self.row_orders[name] = (channels, key, order)
        return order

    def plan(self, x: torch.Tensor, channel_major: bool) -> MatmulPlan:
        """The single kernel's plan for this input. For inference it is kept (built on first use) per shape,
        layout, dtype and device and per the weights' and bias's storage and version, so changing either builds a
        new one; while autograd or tracing is on, a fresh one without scratch, on the weights themselves."""
        conv = self.group_convs()[0]
        if torch.is_grad_enabled() or tracing():
            return self.build_plan(x, channel_major, conv, keep=False)
        bias = conv.bias
        key = (
            tuple(x.shape),
            channel_major,
            x.dtype,
            x.device,
            conv.weight.data_ptr(),
            conv.weight._version,
            None if bias is None else (bias.data_ptr(), bias._version),
            tuple((conv.weight.data_ptr(), conv.weight._version) for conv in self.extra_convs()),
        )
        plan = self.plans.get(key)
        if plan is None:
            if len(self.plans) >= 8:
                self.plans.clear()
            plan = self.plans[key] = self.build_plan(x, channel_major, conv, keep=True)
        return plan

    def build_plan(self, x: torch.Tensor, channel_major: bool, conv: nn.Conv2d, keep: bool) -> MatmulPlan:
        """Resolve the single kernel's gather, weights, bias and output permutation for inputs shaped as `x`;
        `keep`: detached weights and scratch tensors, for a plan kept between inference calls."""
        batch, channels, height, width = x.shape
        columns = batch * height * width
        weight = conv.weight.view(conv.groups, -1, conv.in_channels // conv.groups)
        bias = None if conv.bias is None else conv.bias.view(conv.groups, -1, 1).expand(-1, -1, columns)
        if keep:
            weight, bias = weight.detach(), None if bias is None else bias.detach()
        gather = self.buffer("input_index", 0)
        needs_gather = self.gather_inputs[0] or (batch > 1 and not channel_major)
        steps = (batch, 1) if channel_major else (1, channels)
        gather_rows = row_order(gather, batch, *steps) if needs_gather else None
        scatter = row_order(self.output_index, batch, batch, -1) if self.permute_outputs else None
        gathered = x.new_empty(len(gather) * batch, height * width) if keep and needs_gather else None
        product = x.new_empty(conv.groups, weight.shape[1], columns) if keep and scatter is not None else None
        plan = MatmulPlan(
            channel_major, (batch, channels, height, width), weight, bias, gather_rows, scatter, gathered, product
        )
        if len(self.extras):
            weights = [extra.weight.flatten(1) for extra in self.extra_convs()]
            plan.extra_weights = tuple(w.detach() for w in weights) if keep else tuple(weights)
            plan.extra_targets = tuple(self.extra_targets)
            plan.extra_gather = row_order(self.extra_index, batch, *steps)
            plan.extra_gathered = x.new_empty(len(plan.extra_gather), height * width) if keep else None
        return plan

    def forward_matmul(self, x: torch.Tensor) -> torch.Tensor:
        """1x1 only: rows (channel, image) gathered per bucket, one batched matmul over all images, rows scattered.

        Gathering rows of the (batch*channel, H*W) input in (channel, image) order folds the batch into the
        matmul's columns, so each group is one large GEMM, and the gather is a fast copy of contiguous rows.
        A single kernel runs its `plan`; several kernels keep gathered inputs and products in scratch tensors
        reused between inference calls, and their row indices per batch size.
        """
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        batch, channels, height, width = x.shape
        channel_major = batch > 1 and x.transpose(0, 1).is_contiguous()  # a raw-emitting producer's output
        if self.emits_raw():
            return self.plan(x, channel_major)(x)
        if channel_major:
            rows = x.transpose(0, 1).reshape(channels * batch, height * width)
        else:
            x = x.contiguous()
            rows = x.view(batch * channels, height * width)
        columns = batch * height * width
        out = x.new_empty(batch * self.out_channels, height * width)
        for index, conv in enumerate(self.group_convs()):
            gather = self.buffer("input_index", index)
            gathered = rows
            if self.gather_inputs[index] or (batch > 1 and not channel_major):
                scratch = self.workspace(f"in_{index}", (len(gather) * batch, height * width), x)
                steps = (batch, 1) if channel_major else (1, channels)
                order = self.image_rows(f"in_{index}_{channel_major}", gather, batch, *steps)
                gathered = torch.index_select(rows, 0, order, out=scratch)
            weight = conv.weight.view(conv.groups, -1, conv.in_channels // conv.groups)
            shape = (conv.groups, len(weight[0]), columns)
            product = torch.matmul(
                weight, gathered.view(conv.groups, -1, columns), out=self.workspace(f"out_{index}", shape, x)
            )
            if conv.bias is not None:
                product.add_(conv.bias.view(conv.groups, -1, 1))
            piece = product.view(-1, columns)
            filters = self.buffer("row_filters", index)
            if self.scatter_rows[index]:
                real_rows = self.buffer("real_rows", index)
                piece, filters = piece.index_select(0, real_rows), filters[real_rows]
            out.index_copy_(
                0,
                self.image_rows(f"scatter_{index}", filters, batch, 1, self.out_channels),
                piece.view(-1, height * width),
            )
        if len(self.starved_filters):
            starved = self.image_rows("starved", self.starved_filters, batch, 1, self.out_channels)
            out.index_copy_(0, starved, self.starved_bias.repeat_interleave(batch)[:, None].expand(-1, height * width))
        return out.view(batch, self.out_channels, height, width)

    @torch.no_grad()
    def fuse_bn(self, bn: nn.BatchNorm2d) -> None:
        """Fold a following eval-mode BatchNorm into the kernels' weights and biases (original filter order)."""
        if bn.running_mean is None or bn.running_var is None:
            raise ValueError("can only fold a BatchNorm with running statistics")
        self.plans.clear()
        scale = (bn.weight if bn.weight is not None else 1) / torch.sqrt(bn.running_var + bn.eps)
        scale = torch.broadcast_to(scale, bn.running_mean.shape)
        shift = (bn.bias if bn.bias is not None else 0) - bn.running_mean * scale
        for index, conv in enumerate(self.group_convs()):
            filters = self.buffer("row_filters", index)
            real = filters >= 0
            zero = torch.zeros(len(filters), dtype=scale.dtype, device=scale.device)
            row_scale = torch.where(real, scale[filters.clamp(min=0)], zero)
            row_shift = torch.where(real, shift[filters.clamp(min=0)], zero)
            bias = conv.bias if conv.bias is not None else zero
            conv.weight.mul_(row_scale.view(-1, 1, 1, 1).to(conv.weight.dtype))
            conv.bias = nn.Parameter((bias * row_scale + row_shift).to(conv.weight.dtype))
            for extra, (first, count) in zip(self.extra_convs(), self.extra_targets):
                extra.weight.mul_(row_scale[first : first + count].view(-1, 1, 1, 1).to(conv.weight.dtype))
        self.starved_bias.copy_(self.starved_bias * scale[self.starved_filters] + shift[self.starved_filters])

    def extra_repr(self) -> str:
        duplicates = f", duplicates={len(self.extra_index)}" if len(self.extra_index) else ""
        return f"{self.in_channels}, {self.out_channels}, sizes={self.sizes}, strategy={self.strategy!r}{duplicates}"


@torch.no_grad()
def fastest_strategy(layer: FLGCConv2d, x: torch.Tensor, rounds: int = 7) -> str:
    """The deploy strategy that runs `layer` on `x` fastest on this machine (median of interleaved rounds)."""
    names = [n for n in STRATEGIES if layer.kernel_size == 1 or not n.endswith("_matmul")]  # kxk: matmul = conv
    forms = {name: DeployedFLGC(layer, name).eval() for name in names}
    samples: dict[str, list[float]] = {name: [] for name in forms}
    for round_ in range(rounds + 1):
        for name, form in forms.items():
            start = time.perf_counter()
            form(x)
            if round_:  # the first round warms up
                samples[name].append(time.perf_counter() - start)
    return min(names, key=lambda name: statistics.median(samples[name]))


@torch.no_grad()
def deploy_flgc(
    model: nn.Module,
    strategy: str = DEFAULT_STRATEGY,
    example: torch.Tensor | None = None,
    duplicates: str = "auto",
) -> nn.Module:
    """Replace every FLGCConv2d by a DeployedFLGC, in place (eval only); returns the model.

    `strategy="fastest"` times every strategy per layer on what it receives from `example` (a batch of the
    size to be served) and keeps the fastest. `duplicates` says how duplicated maps run: kernels of their own
    ("split"), inside the base kernel with every group padded to the one that gained most ("padded"), or
    whichever `splitting_pays` says is cheaper ("auto").
    """
    model.eval()
    chosen: dict[nn.Module, str] = {}
    if strategy == FASTEST:
        if example is None:
            raise ValueError("the fastest strategy is chosen on an example batch; pass example=")
        inputs: dict[FLGCConv2d, torch.Tensor] = {}
        hooks = [
            layer.register_forward_hook(lambda module, args, _: inputs.__setitem__(cast(FLGCConv2d, module), args[0]))
            for layer in flgc_layers(model)
        ]
        try:
            model(example)
        finally:
            for hook in hooks:
                hook.remove()
        chosen = {layer: fastest_strategy(layer, x) for layer, x in inputs.items()}
    if isinstance(model, FLGCConv2d):
        return DeployedFLGC(model, chosen.get(model, strategy), duplicates).eval()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, FLGCConv2d):
                setattr(parent, name, DeployedFLGC(child, chosen.get(child, strategy), duplicates).eval())
    return model


def flgc_macs(module: FLGCConv2d | DeployedFLGC, height_out: int, width_out: int) -> int:
    """Multiply-adds per image of the layer's real groups: sum_g |in_g| |out_g| k^2 H_out W_out."""
    sizes = module.group_sizes() if isinstance(module, FLGCConv2d) else module.sizes
    return sum(n_in * n_out for n_in, n_out in sizes) * module.kernel_size**2 * height_out * width_out


@torch.no_grad()
def grouped_macs(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """Multiply-adds per image in every FLGC layer's real groups (one batch-1 pass finds each output size)."""
    sizes: dict[nn.Module, tuple[int, int]] = {}
    hooks = [
        layer.register_forward_hook(lambda module, _, out: sizes.__setitem__(module, tuple(out.shape[-2:])))
        for layer in flgc_layers(model)
    ]
    try:
        model.eval()(torch.zeros(1, *input_shape, device=next(model.parameters()).device))
    finally:
        for hook in hooks:
            hook.remove()
    return sum(flgc_macs(cast(FLGCConv2d, layer), *size) for layer, size in sizes.items())
