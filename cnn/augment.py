"""Batch augmentation for the drawings the model will see: any size, slant, stroke width.

Works on whole ``(B, 1, 28, 28)`` batches with one ``affine_grid``/``grid_sample``
call, so it costs a fraction of the forward pass instead of a per-sample PIL loop.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_affine(x: torch.Tensor, g: torch.Generator, degrees: float = 12.0, scale=(0.85, 1.1),
                  shear: float = 0.2, translate: float = 0.1) -> torch.Tensor:
    """Rotate, scale, shear (slant) and shift each image independently."""
    b = x.shape[0]

    def u(lo, hi):  # (B,) uniform in [lo, hi)
        return torch.rand(b, generator=g).mul_(hi - lo).add_(lo)

    a = u(-degrees, degrees) * (math.pi / 180)
    s = u(*scale)
    sh = u(-shear, shear)
    cos, sin = torch.cos(a) / s, torch.sin(a) / s
    # theta maps output coords to input coords: inverse(rotation·scale) then a horizontal shear.
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = cos + sh * -sin
    theta[:, 0, 1] = sin + sh * cos
    theta[:, 1, 0] = -sin
    theta[:, 1, 1] = cos
    theta[:, :, 2] = torch.rand(b, 2, generator=g).mul_(2 * translate).sub_(translate)
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_stroke(x: torch.Tensor, g: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Thicken or thin strokes by a random amount: blend with a 3x3 dilation or erosion."""
    b = x.shape[0]
    amount = torch.rand(b, 1, 1, 1, generator=g).to(x.device)
    kind = torch.rand(b, 1, 1, 1, generator=g).to(x.device)
    thick = F.max_pool2d(x, 3, 1, 1)  # dilation
    thin = -F.max_pool2d(-x, 3, 1, 1)  # erosion
    target = torch.where(kind < p / 2, thick, torch.where(kind < p, thin, x))
    return x + amount * (target - x)


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return random_stroke(random_affine(x, g), g).clamp_(0, 1)
