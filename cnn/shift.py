"""Move the network's input by whole pixels, and measure how much each layer's maps change.

One job: what the page's "move it" controls show. A max-pooling layer keeps the largest value of
each 2x2 window, so a feature found one pixel further along often lands in the same window: the
pooled maps change less than the maps before pooling. ``similarity`` measures that on the
visitor's own drawing: the cosine similarity of each layer's activations, moved input against
unmoved, at the same positions (no re-alignment: the question is how much of what the next layer
reads stays where it was).

The move is of the 28x28 network input (what ``Prepared.image`` holds), zero-filled: ink moved
past the border is lost, and ``shift`` says how many inked pixels that was.
"""
from __future__ import annotations

import numpy as np
import torch

from .errors import InputError, echo, whole
from .features import Features
from .inspector import LAYERS, layer_map

MAX_SHIFT = 4  # pixels, in x and in y


def check(dx, dy) -> tuple[int, int]:
    """(dx, dy) as whole numbers in -MAX_SHIFT..MAX_SHIFT, or ``InputError`` with a sentence."""
    out = []
    for name, v in (("dx", dx), ("dy", dy)):
        got = whole(v, -MAX_SHIFT, MAX_SHIFT)
        if got is None:
            raise InputError(f"A move is whole pixels from -{MAX_SHIFT} to {MAX_SHIFT}: {name} cannot be {echo(v)}.")
        out.append(got)
    return out[0], out[1]


def shift(image: np.ndarray, dx: int, dy: int) -> tuple[np.ndarray, int]:
    """The (28, 28) uint8 ``image`` moved ``dx`` pixels right and ``dy`` down (zeros come in),
    and how many inked (non-zero) pixels went out past the border."""
    h, w = image.shape
    moved = np.zeros_like(image)
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    moved[yd, xd] = image[ys, xs]
    return moved, int(np.count_nonzero(image)) - int(np.count_nonzero(moved))


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two activation tensors, flattened (1.0 when both are all zero: nothing
    changed; 0.0 when only one is)."""
    a, b = a.double().flatten(), b.double().flatten()
    na, nb = float(a.norm()), float(b.norm())
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(a @ b) / (na * nb)


def similarity(moved: Features, unmoved: Features) -> dict[str, float]:
    """Per layer (conv1, pool1, conv2, pool2): how similar the moved input's maps are to the
    unmoved one's, at the same positions."""
    return {name: cosine(layer_map(moved, name), layer_map(unmoved, name)) for name in LAYERS}
