"""A single-kernel deployed FLGC layer's batched-matmul plan: row indices, views and scratch resolved once per input
shape, so a call is a gather, one batched matmul and the output permutation."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def tracing() -> bool:
    """Whether a tracer or the compiler is recording, so tensors kept between calls would be baked in."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


def row_order(channels: torch.Tensor, batch: int, channel_step: int, image_step: int) -> torch.Tensor:
    """Row indices channels[c] * channel_step + image * image_step, flattened with the image varying fastest
    (negative image_step: with the channel varying fastest, steps made positive)."""
    images = torch.arange(batch, device=channels.device)
    rows = channels[:, None] * channel_step + images * abs(image_step)
    return (rows.t() if image_step < 0 else rows).flatten()


@dataclass
class MatmulPlan:
    """A single-kernel 1x1 layer on one input shape, its indices, views and (kept for inference) scratch resolved
    once, so a call is the gather, one batched matmul (bias fused) and the output permutation, little else."""

    channel_major: bool
    shape: tuple[int, int, int, int]
    weight: torch.Tensor
    bias: torch.Tensor | None
    gather: torch.Tensor | None
    scatter: torch.Tensor | None
    gathered: torch.Tensor | None
    product: torch.Tensor | None
    extra_weights: tuple[torch.Tensor, ...] = ()
    extra_targets: tuple[tuple[int, int], ...] = ()
    extra_gather: torch.Tensor | None = None
    extra_gathered: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = self.shape
        if self.channel_major:
            source = x.transpose(0, 1).reshape(channels * batch, height * width)
        else:
            source = x.reshape(batch * channels, height * width)
        rows = source
        if self.gather is not None:
            rows = torch.index_select(source, 0, self.gather, out=self.gathered)
        groups, _, width_in = self.weight.shape
        columns = rows.view(groups, width_in, -1)
        if self.bias is None:
            product = torch.bmm(self.weight, columns, out=self.product)
        else:
            product = torch.baddbmm(self.bias, self.weight, columns, out=self.product)
        if self.extra_gather is not None:
            picked = torch.index_select(source, 0, self.extra_gather, out=self.extra_gathered).view(
                -1, columns.shape[2]
            )
            rows_out, offset = product.view(-1, columns.shape[2]), 0
            for weight, (first, count) in zip(self.extra_weights, self.extra_targets):
                rows_out[first : first + count] += torch.mm(weight, picked[offset : offset + weight.shape[1]])
                offset += weight.shape[1]
        if self.scatter is None:  # rows in (channel, image) order: a channel-major view, no copy
            return product.view(-1, batch, height, width).transpose(0, 1)
        return product.view(-1, height * width).index_select(0, self.scatter).view(batch, -1, height, width)
