"""RandAugment per image on a uint8 batch, batched, drawn from a seeded generator (the global RNG is not touched).

The augmentation space is torchvision's RandAugment (Cubuk et al. 2020): 14 ops, magnitude M on a 0..30 scale
of 31 bins, each signed op negated with probability 1/2. torchvision draws one op pair per call, so a batch
handed to it gets the same ops on every image; here each image draws its own ops and signs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

OPS = (
    "identity",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
    "rotate",
    "brightness",
    "color",
    "contrast",
    "sharpness",
    "posterize",
    "solarize",
    "autocontrast",
    "equalize",
)
BINS = 31
GEOMETRIC = ("shear_x", "shear_y", "translate_x", "translate_y", "rotate")


def op_strength(op: str, magnitude: float, size: int) -> float:
    """The unsigned strength of `op` at `magnitude` (0..30), as in torchvision's augmentation space."""
    fraction = min(max(magnitude, 0.0), BINS - 1) / (BINS - 1)
    if op in ("shear_x", "shear_y"):
        return 0.3 * fraction
    if op in ("translate_x", "translate_y"):
        return 150.0 / 331.0 * size * fraction
    if op == "rotate":
        return 30.0 * fraction
    if op in ("brightness", "color", "contrast", "sharpness"):
        return 0.9 * fraction
    if op == "posterize":
        return float(round(8 - 4 * fraction))
    if op == "solarize":
        return 255.0 * (1.0 - fraction)
    return 0.0


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    weights = torch.tensor([0.2989, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * weights).sum(1, keepdim=True)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (factor.view(-1, 1, 1, 1) * x + (1 - factor.view(-1, 1, 1, 1)) * other).clamp(0, 255)


def _sharpness_blur(x: torch.Tensor) -> torch.Tensor:
    """torchvision's sharpness reference: a 3x3 smoothing kernel inside, the border pixels kept."""
    kernel = torch.ones(3, 3, dtype=x.dtype, device=x.device)
    kernel[1, 1] = 5.0
    kernel = (kernel / kernel.sum()).expand(x.shape[1], 1, 3, 3)
    blurred = x.clone()
    blurred[..., 1:-1, 1:-1] = F.conv2d(x, kernel, groups=x.shape[1]).round()
    return blurred


def _geometric(x: torch.Tensor, op: str, amount: torch.Tensor) -> torch.Tensor:
    """Shear, translate (pixels) or rotate (degrees) about the centre, nearest neighbour, zeros outside."""
    n, _, height, width = x.shape
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    if op == "shear_x":
        theta[:, 0, 1] = amount * height / width
    elif op == "shear_y":
        theta[:, 1, 0] = amount * width / height
    elif op == "translate_x":
        theta[:, 0, 2] = -2 * amount / width
    elif op == "translate_y":
        theta[:, 1, 2] = -2 * amount / height
    else:
        radians = amount * math.pi / 180
        cos, sin = torch.cos(radians), torch.sin(radians)
        theta[:, 0, 0], theta[:, 0, 1] = cos, -sin * height / width
        theta[:, 1, 0], theta[:, 1, 1] = sin * width / height, cos
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def apply_op(x: torch.Tensor, op: str, amount: torch.Tensor) -> torch.Tensor:
    """One op on float images in 0..255, with a per-image signed amount."""
    if op == "identity":
        return x
    if op in GEOMETRIC:
        return _geometric(x, op, amount)
    if op == "brightness":
        return _blend(x, torch.zeros_like(x), 1 + amount)
    if op == "color":
        return _blend(x, _grayscale(x).expand_as(x), 1 + amount)
    if op == "contrast":
        mean = _grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
        return _blend(x, mean.expand_as(x), 1 + amount)
    if op == "sharpness":
        return _blend(x, _sharpness_blur(x), 1 + amount)
    if op == "posterize":
        step = (2 ** (8 - amount)).view(-1, 1, 1, 1)
        return torch.floor(x / step) * step
    if op == "solarize":
        return torch.where(x >= amount.view(-1, 1, 1, 1), 255 - x, x)
    if op == "autocontrast":
        low = x.amin(dim=(2, 3), keepdim=True)
        high = x.amax(dim=(2, 3), keepdim=True)
        span = high - low
        stretched = (x - low) * (255 / span.clamp(min=1e-6))
        return torch.where(span > 0, stretched, x).clamp(0, 255)
    if op == "equalize":
        from torchvision.transforms.v2 import functional as TF  # torchvision's import costs 2.4 s at every start

        return TF.equalize(x.round().to(torch.uint8)).float()
    raise ValueError(f"unknown RandAugment op {op!r}")


def rand_augment(images: torch.Tensor, magnitude: float, generator: torch.Generator, num_ops: int = 2) -> torch.Tensor:
    """RandAugment on a uint8 N×C×H×W batch: every image draws its own `num_ops` ops and signs from `generator`."""
    if magnitude <= 0 or num_ops < 1 or len(images) == 0:
        return images
    size = images.shape[-1]
    x = images.float()
    for _ in range(num_ops):
        chosen = torch.randint(0, len(OPS), (len(x),), generator=generator)
        signs = torch.where(torch.rand(len(x), generator=generator) < 0.5, -1.0, 1.0)
        for index, op in enumerate(OPS):
            selected = (chosen == index).nonzero().flatten()
            if op == "identity" or not len(selected):
                continue
            strength = op_strength(op, magnitude, size)
            signed = op not in ("posterize", "solarize", "autocontrast", "equalize")
            amount = (signs[selected] if signed else torch.ones(len(selected))) * strength
            x[selected] = apply_op(x[selected], op, amount.to(x.device))
    return x.round().clamp(0, 255).to(torch.uint8)
