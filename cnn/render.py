"""The pictures' visual language, and conv1's filters as the browser draws them.

One job: the colour scales, the kept-cell dot colours and the flat-window rule that every
picture on the page uses, and conv1's 16 learned filters as a value (``filters``). Every picture
on the page is drawn by the browser: the per-drawing ones (the maps, the receptive field, the
evidence) by ``cnn/web/maps.js`` from these same constants (``cnn.payload.look``), the filters by
``cnn/web/filters.js``. The palette-image helpers below (``grid``, ``legend``, ``feature_grid``)
draw no picture of the page any more; only tests/test_render.py uses them. Pure numpy plus PIL
for a few words of legend text; no matplotlib.

The visual language is the same on every picture:

* each map is a tile, tiles sit in a grid with gutters (the page's own background in the
  browser's pictures, so dark mode has no white strips; white in the palette images here);
* one colour scale per layer: black (0) -> purple -> orange -> pale yellow
  (the layer's largest activation for this drawing). A colour bar with its
  numbers sits under every grid, and "before" and "after pooling" of a layer
  share it, so they can be compared cell by cell;
* upscaling is nearest-neighbour only (a cell is a solid ``cell x cell``
  square), and "after pooling" tiles use twice the cell size of "before"
  tiles, so a pooled cell covers exactly the 2x2 window it came from;
* on "before pooling" tiles a cyan dot marks the cell each 2x2 window kept
  (the argmax that ``max_pool2d(..., return_indices=True)`` reports). In a
  window that looks flat (its four colours within 1/30 of the scale, mostly
  all zero after ReLU) the pick is arbitrary or invisible, so that dot is dim.

Images are built as palette ("P" mode) indices, one byte a pixel, with broadcast writes
instead of per-pixel loops, and carry ``compress_level=1`` so that Gradio's PNG encoding of
them is cheap too.
"""
from __future__ import annotations

import base64
from functools import lru_cache

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

# ------------------------------------------------------------------ palette
LEVELS = 240  # colour-scale entries 0..239
WHITE, KEPT, KEPT_DIM, HIGHLIGHT, TEXT0 = 240, 241, 242, 243, 244  # TEXT0..255: 12 anti-aliased text greys
TEXT_LEVELS = 256 - TEXT0
RGB_WHITE, RGB_KEPT, RGB_KEPT_DIM, RGB_TEXT = (255, 255, 255), (0, 229, 255), (0, 64, 80), (55, 65, 81)
RGB_HIGHLIGHT = (57, 255, 20)  # the inspected cell's frame: a green no colour scale here uses

FLAT = LEVELS // 30  # a 2x2 window whose colours differ by fewer levels looks flat: no visible winner
GAP = 4  # white gutter between tiles, px
LEGEND_H = 28  # colour-bar strip under a grid, px

# Tiles across each layer's grid (the browser sizes the cells to the screen; pooled tiles line up).
CONV1_COLS = 4  # 16 maps: 4x4 tiles, before and after pooling
CONV2_COLS = 8  # 32 maps: 8x4 tiles
PNG = {"compress_level": 1}  # what Gradio's PNG save of our images uses (see module doc)


def _ramp(anchors: list[tuple[float, tuple[int, int, int]]], n: int = LEVELS) -> np.ndarray:
    """An (n, 3) uint8 colour scale interpolated linearly between (position, rgb) anchors."""
    pos = np.array([a[0] for a in anchors])
    rgb = np.array([a[1] for a in anchors], float)
    t = np.linspace(0, 1, n)
    return np.stack([np.interp(t, pos, rgb[:, c]) for c in range(3)], 1).round().astype(np.uint8)


def _palette(scale: np.ndarray) -> list[int]:
    text = [tuple(round(w + (t - w) * q / (TEXT_LEVELS - 1)) for w, t in zip(RGB_WHITE, RGB_TEXT))
            for q in range(TEXT_LEVELS)]
    rows = [tuple(c) for c in scale] + [RGB_WHITE, RGB_KEPT, RGB_KEPT_DIM, RGB_HIGHLIGHT] + text
    assert len(rows) == 256
    return [v for row in rows for v in row]


# Activations (>= 0): an "inferno"-like sequential scale, perceptually ordered, dark = 0.
ACTIVATION_SCALE = _ramp([
    (0.00, (0, 0, 4)), (0.13, (31, 12, 72)), (0.25, (85, 15, 109)), (0.38, (136, 34, 106)),
    (0.50, (186, 54, 85)), (0.63, (227, 89, 51)), (0.75, (249, 140, 10)), (0.88, (249, 201, 50)),
    (1.00, (252, 255, 164)),
])
# Filter weights (signed): blue (negative) - white (0) - red (positive).
WEIGHT_SCALE = _ramp([(0.0, (33, 102, 172)), (0.25, (146, 197, 222)), (0.5, (247, 247, 247)),
                      (0.75, (244, 165, 130)), (1.0, (178, 24, 43))])
ACTIVATION_PALETTE = _palette(ACTIVATION_SCALE)
WEIGHT_PALETTE = _palette(WEIGHT_SCALE)


# ------------------------------------------------------------------ building blocks

def _np(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def levels(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map ``values`` linearly from [lo, hi] onto colour-scale indices 0..LEVELS-1 (uint8)."""
    k = (LEVELS - 1) / (hi - lo) if hi > lo else 0.0
    return np.clip((values - lo) * k + 0.5, 0, LEVELS - 1).astype(np.uint8)


def grid_size(n: int, side: int, cell: int, cols: int, legend: bool = True) -> tuple[int, int]:
    """(width, height) of the picture ``grid`` makes of ``n`` maps ``side`` x ``side``."""
    rows = -(-n // cols)
    t = side * cell
    return cols * t + (cols - 1) * GAP, rows * t + (rows - 1) * GAP + (LEGEND_H if legend else 0)


def grid(idx: np.ndarray, cell: int, cols: int) -> np.ndarray:
    """(N, h, w) palette indices -> one (H, W) grid, ``cols`` tiles across, nearest-neighbour
    upscaled by ``cell``, white gutters."""
    n, h, w = idx.shape
    rows = -(-n // cols)
    if rows * cols != n:  # pad the last row with white tiles
        pad = np.full((rows * cols - n, h, w), WHITE, np.uint8)
        idx = np.concatenate([idx, pad])
    th, tw = h * cell, w * cell
    canvas = np.full((rows, th + GAP, cols, tw + GAP), WHITE, np.uint8)
    # View the tile area as (rows, h, cell, cols, w, cell) and broadcast each cell into it.
    cells = canvas[:, :th, :, :tw].reshape(rows, h, cell, cols, w, cell)
    src = idx.reshape(rows, cols, h, w).transpose(0, 2, 1, 3)[:, :, None, :, :, None]
    cells[...] = src
    return canvas.reshape(rows * (th + GAP), cols * (tw + GAP))[:-GAP, :-GAP]


@lru_cache(maxsize=4)
def _font(size: int = 12) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def fmt(v: float) -> str:
    """A colour-bar end value: 3 significant digits, no exponent for ordinary sizes."""
    return "0" if v == 0 else f"{v:.3g}" if 1e-2 <= abs(v) < 1e4 else f"{v:.1e}"


@lru_cache(maxsize=1024)
def _ink(text: str) -> np.ndarray:
    """Anti-aliased coverage (LEGEND_H, width) uint8 of ``text``, vertically centred; cached."""
    font = _font()
    width = max(1, int(np.ceil(font.getlength(text))))
    im = Image.new("L", (width, LEGEND_H), 0)
    ImageDraw.Draw(im).text((0, LEGEND_H // 2), text, fill=255, font=font, anchor="lm")
    a = np.asarray(im)
    a.setflags(write=False)
    return a


def _put(strip: np.ndarray, x: int, text: str) -> int:
    """Write ``text`` into the index strip at column ``x`` as text greys; return its right edge."""
    a = _ink(text)[:, : max(0, strip.shape[1] - x)]
    region = strip[:, x : x + a.shape[1]]
    np.copyto(region, (TEXT0 + (a.astype(np.uint16) * (TEXT_LEVELS - 1) + 127) // 255).astype(np.uint8),
              where=a > 0)
    return x + a.shape[1]


def legend(width: int, lo: float, hi: float, key: bool = False) -> np.ndarray:
    """A (LEGEND_H, width) strip of palette indices: ``lo`` [colour bar] ``hi``, and, with
    ``key``, a cyan square and "kept by max-pool"."""
    mid = LEGEND_H // 2
    lo_s, hi_s, key_s = fmt(lo), fmt(hi), "kept by max-pool"
    key_w = _ink(key_s).shape[1] + 30 if key else 0
    x_bar = _ink(lo_s).shape[1] + 6
    rest = x_bar + 6 + _ink(hi_s).shape[1] + key_w
    bar_w = max(24, min(200, width - rest))
    strip = np.full((LEGEND_H, max(width, rest + bar_w)), WHITE, np.uint8)  # cropped to width below
    _put(strip, 0, lo_s)
    strip[mid - 6 : mid + 6, x_bar : x_bar + bar_w] = np.linspace(0, LEVELS - 1, bar_w).round().astype(np.uint8)
    x = _put(strip, x_bar + bar_w + 6, hi_s)
    if key:
        strip[mid - 4 : mid + 4, x + 18 : x + 26] = KEPT  # the dot, as drawn on the maps: a square
        _put(strip, x + 30, key_s)
    return strip[:, :width]


def image(idx: np.ndarray, palette: list[int] = ACTIVATION_PALETTE) -> Image.Image:
    """Palette indices -> a "P" image that Gradio saves as a fast, small PNG."""
    im = Image.fromarray(np.ascontiguousarray(idx), "P")
    im.putpalette(palette)
    im.encoderinfo = dict(PNG)
    return im


def feature_grid(maps: np.ndarray | torch.Tensor, cell: int, cols: int, hi: float, lo: float = 0.0,
                 palette: list[int] = ACTIVATION_PALETTE) -> Image.Image:
    """(N, h, w) maps -> a picture: a grid of tiles on the colour scale [lo, hi], and the colour
    bar with its numbers underneath."""
    values = _np(maps).astype(np.float32, copy=False)
    g = grid(levels(values, lo, hi), cell, cols)
    return image(np.concatenate([g, legend(g.shape[1], lo, hi)]), palette)


def filters(weight: torch.Tensor | np.ndarray) -> dict:
    """conv1's learned (16, 1, 5, 5) filters as the value the browser draws them from
    (``cnn/web/filters.js``): their float32 values, little-endian, base64, and their shape. The
    browser paints them on ``WEIGHT_SCALE``, symmetric about 0 (blue negative, red positive),
    with transparent gutters and the colour bar's ends as page text, so both themes read them."""
    w = np.ascontiguousarray(_np(weight), "<f4")
    return {"shape": list(w.shape), "data": base64.b64encode(w.tobytes()).decode("ascii")}
