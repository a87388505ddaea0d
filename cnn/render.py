"""The pictures' visual language, and conv1's filters as the browser draws them.

One job: the colour scales, the kept-cell dot colours and the flat-window rule that every
picture on the page uses, and conv1's 16 learned filters as a value (``filters``). Every picture
on the page is drawn by the browser: the per-drawing ones (the maps, the receptive field, the
evidence) by ``cnn/web/maps.js`` from these same constants (``cnn.payload.look``), the filters by
``cnn/web/filters.js``.

The visual language is the same on every picture:

* each map is a tile, tiles sit in a grid with gutters (the page's own background, so dark mode
  has no white strips);
* one colour scale per layer: black (0) -> purple -> orange -> pale yellow
  (the layer's largest activation for this drawing). A colour bar with its
  numbers sits under every grid, and "before" and "after pooling" of a layer
  share it, so they can be compared cell by cell;
* upscaling is nearest-neighbour only (a cell is a solid square), and "after pooling" tiles use
  twice the cell size of "before" tiles, so a pooled cell covers exactly the 2x2 window it came
  from;
* on "before pooling" tiles a cyan dot marks the cell each 2x2 window kept
  (the argmax that ``max_pool2d(..., return_indices=True)`` reports). In a
  window that looks flat (its four colours within 1/30 of the scale, mostly
  all zero after ReLU) the pick is arbitrary or invisible, so that dot is dim.
"""
from __future__ import annotations

import base64

import numpy as np
import torch

# ------------------------------------------------------------------ palette
LEVELS = 240  # colour-scale entries 0..239
RGB_KEPT, RGB_KEPT_DIM = (0, 229, 255), (0, 64, 80)  # the kept cell's dot, and dim in a flat window
RGB_HIGHLIGHT = (57, 255, 20)  # the inspected cell's frame: a green no colour scale here uses

FLAT = LEVELS // 30  # a 2x2 window whose colours differ by fewer levels looks flat: no visible winner

# Tiles across each layer's grid (the browser sizes the cells to the screen; pooled tiles line up).
CONV1_COLS = 4  # 16 maps: 4x4 tiles, before and after pooling
CONV2_COLS = 8  # 32 maps: 8x4 tiles


def _ramp(anchors: list[tuple[float, tuple[int, int, int]]], n: int = LEVELS) -> np.ndarray:
    """An (n, 3) uint8 colour scale interpolated linearly between (position, rgb) anchors."""
    pos = np.array([a[0] for a in anchors])
    rgb = np.array([a[1] for a in anchors], float)
    t = np.linspace(0, 1, n)
    return np.stack([np.interp(t, pos, rgb[:, c]) for c in range(3)], 1).round().astype(np.uint8)


# Activations (>= 0): an "inferno"-like sequential scale, perceptually ordered, dark = 0.
ACTIVATION_SCALE = _ramp([
    (0.00, (0, 0, 4)), (0.13, (31, 12, 72)), (0.25, (85, 15, 109)), (0.38, (136, 34, 106)),
    (0.50, (186, 54, 85)), (0.63, (227, 89, 51)), (0.75, (249, 140, 10)), (0.88, (249, 201, 50)),
    (1.00, (252, 255, 164)),
])
# Filter weights (signed): blue (negative) - white (0) - red (positive).
WEIGHT_SCALE = _ramp([(0.0, (33, 102, 172)), (0.25, (146, 197, 222)), (0.5, (247, 247, 247)),
                      (0.75, (244, 165, 130)), (1.0, (178, 24, 43))])


# ------------------------------------------------------------------ building blocks

def _np(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def levels(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map ``values`` linearly from [lo, hi] onto colour-scale indices 0..LEVELS-1 (uint8)."""
    k = (LEVELS - 1) / (hi - lo) if hi > lo else 0.0
    return np.clip((values - lo) * k + 0.5, 0, LEVELS - 1).astype(np.uint8)


def fmt(v: float) -> str:
    """A colour-bar end value: 3 significant digits, no exponent for ordinary sizes."""
    return "0" if v == 0 else f"{v:.3g}" if 1e-2 <= abs(v) < 1e4 else f"{v:.1e}"


def filters(weight: torch.Tensor | np.ndarray) -> dict:
    """conv1's learned (16, 1, 5, 5) filters as the value the browser draws them from
    (``cnn/web/filters.js``): their float32 values, little-endian, base64, and their shape. The
    browser paints them on ``WEIGHT_SCALE``, symmetric about 0 (blue negative, red positive),
    with transparent gutters and the colour bar's ends as page text, so both themes read them."""
    w = np.ascontiguousarray(_np(weight), "<f4")
    return {"shape": list(w.shape), "data": base64.b64encode(w.tobytes()).decode("ascii")}
