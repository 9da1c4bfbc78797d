"""Fully Learnable Group Convolution (Wang et al., CVPR 2019) with channel duplication: the training layer, its
learned assignment and the duplication rule. `flgc_deploy` runs it as real grouped kernels, `flgc_fold` folds the
permutations between deployed layers into their neighbours."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from scaler.model.spec import DUPLICATE_TOP_K

SCORES = ("weight", "logit")

DEFAULT_SCORE = "logit"


def straight_through_one_hot(soft: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """One-hot of `index` (one column per row of `soft`) whose gradient is that of `soft` (value exactly 0/1)."""
    hard = F.one_hot(index, soft.shape[1]).to(soft.dtype)
    return hard + (soft - soft.detach())


@torch.no_grad()
def balanced_assignment(logits: torch.Tensor) -> torch.Tensor:
    """Each row's column (long, rows) when every column takes at most ceil(rows / columns) rows: deferred
    acceptance, rows proposing in order of their logits and a column keeping the proposers with the highest logit
    for it. The result is stable (no row and column both prefer each other to what they hold) and equals the
    argmax when that already fits; with divisible sizes every column holds exactly rows / columns. Runs in numpy:
    its rounds are a dozen small array operations, which torch's per-operation overhead would make ten times
    slower."""
    values = logits.detach().float().cpu().numpy()
    rows, columns = values.shape
    capacity = -(-rows // columns)
    everyone = np.arange(rows)
    refused = np.zeros(values.shape, dtype=bool)
    choice = values.argmax(1)
    while True:
        order = np.lexsort((-values[everyone, choice], choice))  # by column, best proposer first
        held = np.bincount(choice, minlength=columns)
        rank = np.empty(rows, dtype=np.int64)
        rank[order] = everyone - (held.cumsum() - held)[choice[order]]
        over = np.flatnonzero(rank >= capacity)
        if not len(over):
            return torch.from_numpy(choice).to(logits.device)
        refused[over, choice[over]] = True
        choice[over] = np.where(refused[over], -np.inf, values[over]).argmax(1)


def duplication_threshold(scores: torch.Tensor, member: torch.Tensor, top_k: int) -> torch.Tensor:
    """Per group (column), the mean score of its top_k members (inf for a group without members)."""
    member_scores = scores.masked_fill(~member, -math.inf)
    top = member_scores.topk(min(top_k, scores.shape[0]), dim=0).values
    valid = torch.isfinite(top)
    count = valid.sum(0)
    threshold = torch.where(valid, top, torch.zeros_like(top)).sum(0) / count.clamp(min=1)
    return torch.where(count > 0, threshold, torch.full_like(threshold, math.inf))


def duplication_extra(
    scores: torch.Tensor,
    member: torch.Tensor,
    top_k: int,
    filters: torch.Tensor | None = None,
    cap: float | None = None,
    relative: bool = False,
) -> torch.Tensor:
    """Non-members whose score for a group beats the mean score of the group's top_k members.

    With `cap`, the largest margins first (relative to the threshold when `relative`), only while the added
    connections (a pair (i, g) adds `filters[g]`) stay within `cap` times the grouped layer's own."""
    threshold = duplication_threshold(scores, member, top_k)
    extra = (scores > threshold) & ~member
    if cap is None or filters is None or not extra.any():
        return extra
    margin = scores - threshold
    if relative:
        margin = margin / threshold.clamp(min=1e-12)
    pairs = extra.nonzero()
    order = margin[pairs[:, 0], pairs[:, 1]].argsort(descending=True, stable=True)
    budget = cap * float((member.sum(0).to(filters.dtype) * filters).sum())
    kept = torch.zeros_like(extra)
    spent = 0.0
    for channel, group in pairs[order].tolist():
        cost = float(filters[group])
        if spent + cost <= budget:
            kept[channel, group], spent = True, spent + cost
    return kept


class FLGCConv2d(nn.Module):
    """Conv whose input channels and filters are learned into `groups` groups (masked dense weight, no bias).

    Assignments are softmax-over-groups of `in_logits` (in x G) and `out_logits` (out x G), drawn N(0, 1) as
    in Wang et al. and its PyTorch reimplementation, made hard with a straight-through gradient; filter o sees
    channel i iff they share a group. `balanced` (the default) makes them hard by `balanced_assignment`, so
    every group holds in/G channels and out/G filters throughout training and the frozen layer is a contiguous
    grouped conv once its channels are permuted; `balanced=False` takes each row's argmax, groups of any size
    (Wang et al.), which a deployed kernel must pad to the largest. Masked-out weights get the gradient they
    would have if connected (straight-through, as in dynamic network surgery), so a connection that appears is
    trained.

    `freeze()` fixes the assignment (the training loop calls it at `TrainConfig.assignment_freeze`); with
    `duplicate`, it also adds every channel outside a group whose score for the group beats the mean score of
    the group's top_k members. The score is the channel's assignment logit for the group (`logit`, the method's
    rule) or the L1 norm of its weights to the group's filters (`weight`, for comparison). The new connections
    start at zero, so the layer computes exactly what it did before, then train. `duplicate_cap` bounds what it
    adds: the duplicates with the largest margins over the threshold, while their connections stay within that
    share of the layer's grouped MACs (None: every one). After freezing, the logits stop learning and the layer
    is a fixed (possibly overlapping) group conv. `masked_gradient` False trains only
    the connections in use (masked weights get no gradient, as in the reference implementation).
    """

    start_in: torch.Tensor
    start_out: torch.Tensor
    frozen_in: torch.Tensor
    frozen_out: torch.Tensor

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        groups: int,
        kernel_size: int = 1,
        stride: int = 1,
        duplicate: bool = False,
        top_k: int = DUPLICATE_TOP_K,
        score: str = DEFAULT_SCORE,
        balanced: bool = True,
        duplicate_cap: float | None = None,
    ) -> None:
        super().__init__()
        if groups < 1 or top_k < 1:
            raise ValueError(f"groups and top_k must be >= 1, got {groups}, {top_k}")
        if duplicate_cap is not None and not duplicate_cap >= 0:
            raise ValueError(f"duplicate_cap must be a share >= 0 or None, got {duplicate_cap}")
        if score not in SCORES:
            raise ValueError(f"unknown duplication score {score!r}, expected one of {SCORES}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride, self.duplicate, self.top_k = kernel_size, stride, duplicate, top_k
        self.score, self.frozen, self.masked_gradient, self.balanced = score, False, True, balanced
        self.duplicate_cap = duplicate_cap
        self.moved_history: list[tuple[int, int]] = []
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        self.in_logits = nn.Parameter(torch.randn(in_channels, groups))
        self.out_logits = nn.Parameter(torch.randn(out_channels, groups))
        self.register_buffer("start_in", self.hard_groups(self.in_logits))
        self.register_buffer("start_out", self.hard_groups(self.out_logits))
        self.register_buffer("frozen_in", torch.zeros(in_channels, groups, dtype=torch.bool))
        self.register_buffer("frozen_out", torch.zeros(out_channels, groups, dtype=torch.bool))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args)
        self.frozen = bool(self.frozen_out.any())  # every filter has a group once frozen, none before

    def hard_groups(self, logits: torch.Tensor) -> torch.Tensor:
        """Each row's group under the layer's rule: capacity-bound (`balanced`) or the argmax."""
        return balanced_assignment(logits) if self.balanced else logits.detach().argmax(1)

    def mask(self) -> torch.Tensor:
        """Connection mask (out x in): 1 where filter o and channel i share a group (duplicates included)."""
        if self.frozen:
            return self.frozen_out.to(self.weight.dtype) @ self.frozen_in.to(self.weight.dtype).t()
        member_in = straight_through_one_hot(self.in_logits.softmax(dim=1), self.hard_groups(self.in_logits))
        member_out = straight_through_one_hot(self.out_logits.softmax(dim=1), self.hard_groups(self.out_logits))
        return member_out @ member_in.t()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.mask()[:, :, None, None]
        weight = self.weight * mask
        if self.masked_gradient:
            weight = weight + (self.weight - self.weight.detach()) * (1 - mask.detach())
        return F.conv2d(x, weight, stride=self.stride, padding=self.kernel_size // 2)

    @torch.no_grad()
    def learned(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Boolean one-group memberships the logits give now: inputs (in x G) and filters (out x G)."""
        return (
            F.one_hot(self.hard_groups(self.in_logits), self.groups).bool(),
            F.one_hot(self.hard_groups(self.out_logits), self.groups).bool(),
        )

    @torch.no_grad()
    def scores(self, member_out: torch.Tensor) -> torch.Tensor:
        """Duplication score of every (channel, group), in x G: weight L1 norm to the group's filters, or logit."""
        if self.score == "logit":
            return self.in_logits.detach().float()
        return self.weight.detach().abs().sum((2, 3)).t().float() @ member_out.float()

    @torch.no_grad()
    def duplicates(self, member_in: torch.Tensor, member_out: torch.Tensor) -> torch.Tensor:
        """The (channel, group) memberships the rule adds to the given assignment (in x G), within the cap."""
        filters = member_out.sum(0).float()
        relative = self.score == "weight"
        return duplication_extra(self.scores(member_out), member_in, self.top_k, filters, self.duplicate_cap, relative)

    @torch.no_grad()
    def freeze(self) -> None:
        """Fix the assignment the logits give now, adding duplicates (their connections zeroed) if it duplicates."""
        if self.frozen:
            return
        member_in, member_out = self.learned()
        if self.duplicate:
            before = member_out.float() @ member_in.float().t()
            member_in = member_in | self.duplicates(member_in, member_out)
            added = (member_out.float() @ member_in.float().t()) > before
            self.weight.masked_fill_(added[:, :, None, None], 0.0)
        self.frozen_in.copy_(member_in)
        self.frozen_out.copy_(member_out)
        self.frozen = True

    @torch.no_grad()
    def assignment(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Boolean memberships in use: inputs (in x G, duplicates included once frozen) and filters (out x G)."""
        return (self.frozen_in.clone(), self.frozen_out.clone()) if self.frozen else self.learned()

    def duplicated_channels(self) -> int:
        """Extra (channel, group) memberships that duplication added."""
        return int(self.assignment()[0].sum()) - self.in_channels

    @torch.no_grad()
    def rule_duplicates(self) -> int:
        """(channel, group) memberships the rule adds to the learned assignment now, before any cap."""
        member_in, member_out = self.learned()
        return int(duplication_extra(self.scores(member_out), member_in, self.top_k).sum())

    @torch.no_grad()
    def duplication_margin(self) -> float:
        """Best non-member score for a group minus the group's threshold (> 0: duplicates); relative for `weight`."""
        member_in, member_out = self.learned()
        scores = self.scores(member_out)
        threshold = duplication_threshold(scores, member_in, self.top_k)
        live = torch.isfinite(threshold)
        if not live.any():
            return -math.inf
        gap = (scores - threshold).masked_fill(member_in, -math.inf)[:, live]
        if self.score == "weight":
            gap = gap / threshold[live].clamp(min=1e-12)
        return float(gap.max())

    @torch.no_grad()
    def moved(self) -> int:
        """Input channels and filters whose group is no longer the one they started in."""
        return int(
            (self.hard_groups(self.in_logits) != self.start_in).sum()
            + (self.hard_groups(self.out_logits) != self.start_out).sum()
        )

    def note_moved(self, step: int) -> None:
        """Append (step, channels and filters moved so far) to `moved_history`."""
        self.moved_history.append((step, self.moved()))

    def group_sizes(self) -> list[tuple[int, int]]:
        """(|in_g|, |out_g|) of every group, duplicates counted."""
        member_in, member_out = self.assignment()
        return list(zip(member_in.sum(0).tolist(), member_out.sum(0).tolist()))

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, groups={self.groups}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, duplicate={self.duplicate}, top_k={self.top_k}, cap={self.duplicate_cap}, "
            f"score={self.score!r}, masked_gradient={self.masked_gradient}, balanced={self.balanced}, "
            f"frozen={self.frozen}"
        )


def flgc_layers(model: nn.Module) -> list[FLGCConv2d]:
    """Every FLGC layer of `model`."""
    return [m for m in model.modules() if isinstance(m, FLGCConv2d)]


def assignment_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The group-assignment logits of every FLGC layer in `model` (trained at their own learning rate)."""
    return [p for m in flgc_layers(model) for p in (m.in_logits, m.out_logits)]


def freeze_assignments(model: nn.Module) -> None:
    """Fix every FLGC layer's assignment (and add its duplicates)."""
    for layer in flgc_layers(model):
        layer.freeze()
