"""Feature maps and filters -> crisp images for the web page.

One job: turn what ``cnn.features.extract`` returns (and conv1's weights) into
pictures a first-time visitor can read, fast enough to redraw after every
stroke. Pure numpy plus PIL for a few words of legend text; no matplotlib.

The visual language is the same on every picture:

* each map is a tile, tiles sit in a grid with white gutters;
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

Speed: images are built as palette ("P" mode) indices, one byte a pixel, with
broadcast writes instead of per-pixel loops, and carry ``compress_level=1`` so
that Gradio's PNG encoding of them is cheap too. A full page takes ~1.5 ms on one core.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .features import Block, Features

# ------------------------------------------------------------------ palette
LEVELS = 240  # colour-scale entries 0..239
WHITE, KEPT, KEPT_DIM, HIGHLIGHT, TEXT0 = 240, 241, 242, 243, 244  # TEXT0..255: 12 anti-aliased text greys
TEXT_LEVELS = 256 - TEXT0
RGB_WHITE, RGB_KEPT, RGB_KEPT_DIM, RGB_TEXT = (255, 255, 255), (0, 229, 255), (0, 64, 80), (55, 65, 81)
RGB_HIGHLIGHT = (57, 255, 20)  # the inspected cell's frame: a green no colour scale here uses

FLAT = LEVELS // 30  # a 2x2 window whose colours differ by fewer levels looks flat: no visible winner
GAP = 4  # white gutter between tiles, px
LEGEND_H = 28  # colour-bar strip under a grid, px

# Cell size = screen px per feature-map cell; "after pooling" uses 2x, so tiles line up.
INPUT_CELL = 8  # the 28x28 network input -> 224x224
CONV1_CELL, CONV1_COLS = 4, 4  # 16 maps 28x28 -> 4x4 grid of 112 px tiles (after: 14x14 at 8 px)
CONV2_CELL, CONV2_COLS = 4, 8  # 32 maps 14x14 -> 8x4 grid of 56 px tiles (after: 7x7 at 8 px)
FILTER_CELL, FILTER_COLS = 10, 4  # 16 filters 5x5 -> 4x4 grid of 50 px tiles
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
WEIGHT_RGB = np.asarray(WEIGHT_PALETTE, np.uint8).reshape(256, 3)


@dataclass
class Page:
    """Every per-drawing picture on the page."""

    network_input: Image.Image  # "L", 224x224
    conv1_before: Image.Image  # "P", 460x488: 16 maps 28x28, kept cells dotted
    conv1_after: Image.Image  # "P", 460x488: 16 maps 14x14
    conv2_before: Image.Image  # "P", 476x264: 32 maps 14x14, kept cells dotted
    conv2_after: Image.Image  # "P", 476x264: 32 maps 7x7


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


def dot_span(cell: int) -> slice:
    """Rows/columns of a ``cell`` x ``cell`` square covered by the centred kept-cell dot."""
    d = cell // 2 if (cell // 2) % 2 == cell % 2 else cell // 2 - 1  # same parity as cell: centred
    d = max(1, d)  # 3 -> 1, 4 -> 2, 6 -> 2, 8 -> 4
    o = (cell - d) // 2
    return slice(o, o + d)


def grid(idx: np.ndarray, cell: int, cols: int, dots: np.ndarray | None = None) -> np.ndarray:
    """(N, h, w) palette indices -> one (H, W) grid, ``cols`` tiles across, nearest-neighbour
    upscaled by ``cell``, white gutters. ``dots`` (N, h, w) uint8, if given, is the index
    painted on each cell's centred dot (pass the cell's own index where there is none)."""
    n, h, w = idx.shape
    rows = -(-n // cols)
    if rows * cols != n:  # pad the last row with white tiles
        pad = np.full((rows * cols - n, h, w), WHITE, np.uint8)
        idx = np.concatenate([idx, pad])
        dots = None if dots is None else np.concatenate([dots, pad])
    th, tw = h * cell, w * cell
    canvas = np.full((rows, th + GAP, cols, tw + GAP), WHITE, np.uint8)
    # View the tile area as (rows, h, cell, cols, w, cell) and broadcast each cell into it.
    cells = canvas[:, :th, :, :tw].reshape(rows, h, cell, cols, w, cell)
    src = idx.reshape(rows, cols, h, w).transpose(0, 2, 1, 3)[:, :, None, :, :, None]
    cells[...] = src
    if dots is not None:
        s = dot_span(cell)
        cells[:, :, s, :, :, s] = dots.reshape(rows, cols, h, w).transpose(0, 2, 1, 3)[:, :, None, :, :, None]
    return canvas.reshape(rows * (th + GAP), cols * (tw + GAP))[:-GAP, :-GAP]


def kept_dots(idx: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """Dot indices for ``grid``: KEPT on the kept cell of each window with a visible winner,
    KEPT_DIM on the kept cell of a window that looks flat (its cells' colours differ by less
    than ``FLAT``, e.g. all zero: the pick is arbitrary or invisible), the cell's own colour
    elsewhere. ``idx``: (N, h, w) colour indices; ``kept``: (N, h, w) bool."""
    n, h, w = idx.shape
    q = [idx[:, i::2, j::2] for i in (0, 1) for j in (0, 1)]  # the 4 cells of every window
    spread = np.maximum(np.maximum(q[0], q[1]), np.maximum(q[2], q[3])) - \
        np.minimum(np.minimum(q[0], q[1]), np.minimum(q[2], q[3]))
    mark = np.where(spread >= FLAT, KEPT, KEPT_DIM).astype(np.uint8)[:, :, None, :, None]
    out = idx.reshape(n, h // 2, 2, w // 2, 2).copy()
    np.copyto(out, mark, where=kept.reshape(out.shape))
    return out.reshape(n, h, w)


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


def frame(g: np.ndarray, cell_box: tuple[int, int, int, int], width: int = 2, index: int = HIGHLIGHT) -> None:
    """Draw a ``width``-px frame just outside the pixel box (top, left, bottom, right) into the
    index array ``g``, in place, clipped to its edges."""
    top, left, bottom, right = cell_box
    h, w = g.shape
    t, l, b, r = max(0, top - width), max(0, left - width), min(h, bottom + width), min(w, right + width)
    g[t:max(t, top), l:r] = index
    g[bottom:b, l:r] = index
    g[t:b, l:max(l, left)] = index
    g[t:b, right:r] = index


def cell_box(channel: int, row: int, col: int, side: int, cell: int, cols: int) -> tuple[int, int, int, int]:
    """Pixel box (top, left, bottom, right) of a map cell in a ``grid`` picture."""
    t = side * cell + GAP
    y, x = (channel // cols) * t + row * cell, (channel % cols) * t + col * cell
    return y, x, y + cell, x + cell


def feature_grid(maps: np.ndarray | torch.Tensor, cell: int, cols: int, hi: float, lo: float = 0.0,
                 kept: np.ndarray | torch.Tensor | None = None,
                 palette: list[int] = ACTIVATION_PALETTE,
                 selected: tuple[int, int, int] | None = None) -> Image.Image:
    """(N, h, w) maps -> a picture: a grid of tiles on the colour scale [lo, hi], kept cells
    dotted if ``kept`` is given, the ``selected`` (channel, row, col) cell framed in green, and
    the colour bar with its numbers underneath."""
    values = _np(maps).astype(np.float32, copy=False)
    idx = levels(values, lo, hi)
    dots = None if kept is None else kept_dots(idx, _np(kept).astype(bool, copy=False))
    g = grid(idx, cell, cols, dots)
    if selected is not None:
        frame(g, cell_box(*selected, values.shape[-1], cell, cols))
    strip = legend(g.shape[1], lo, hi, key=kept is not None)
    return image(np.concatenate([g, strip]), palette)


# ------------------------------------------------------------------ what the page shows

def _pixels(pixels: np.ndarray | torch.Tensor) -> np.ndarray:
    """(28, 28) uint8 from a uint8 picture or a [0, 1] float tensor of any shape ending in (28, 28)."""
    a = _np(pixels)
    a = a.reshape(a.shape[-2], a.shape[-1])
    return a if a.dtype == np.uint8 else (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)


def network_input(pixels: np.ndarray | torch.Tensor, cell: int = INPUT_CELL) -> Image.Image:
    """The 28x28 image the network receives (ink high, so ink is white), as crisp grey squares.
    ``pixels``: (28, 28) uint8, or a [0, 1] float tensor of any shape ending in (28, 28)."""
    a = _pixels(pixels)
    im = Image.fromarray(np.ascontiguousarray(a.repeat(cell, 0).repeat(cell, 1)), "L")
    im.encoderinfo = dict(PNG)
    return im


def scale_max(block: Block) -> float:
    """The top of a block's colour scale: its largest activation for this input (1 if all zero).
    Pooling keeps maxima, so "after" never exceeds it."""
    hi = float(block.before.max()) if block.before.numel() else 0.0
    return hi if hi > 0 else 1.0


def layer(block: Block, cell: int, cols: int, selected_before: tuple[int, int, int] | None = None,
          selected_after: tuple[int, int, int] | None = None) -> tuple[Image.Image, Image.Image]:
    """One conv block -> (before pooling, kept cells dotted; after pooling), one colour scale
    from 0 to ``scale_max(block)``; a selected (channel, row, col) cell is framed."""
    hi = scale_max(block)
    return (feature_grid(block.before, cell, cols, hi, kept=block.kept, selected=selected_before),
            feature_grid(block.after, 2 * cell, cols, hi, selected=selected_after))


# Where each inspectable layer is drawn: (block, maps, side, cell px, tiles across).
GRIDS = {"conv1": (16, 28, CONV1_CELL, CONV1_COLS), "pool1": (16, 14, 2 * CONV1_CELL, CONV1_COLS),
         "conv2": (32, 14, CONV2_CELL, CONV2_COLS), "pool2": (32, 7, 2 * CONV2_CELL, CONV2_COLS)}


def cell_at(layer_name: str, x: int, y: int) -> tuple[int, int, int] | None:
    """The (channel, row, col) under pixel (x, y) of ``layer_name``'s picture, or None where
    (x, y) is a gutter, the colour bar or outside (what a click on the picture reports)."""
    n, side, cell, cols = GRIDS[layer_name]
    t = side * cell + GAP
    (tr, yy), (tc, xx) = divmod(int(y), t), divmod(int(x), t)
    if x < 0 or y < 0 or yy >= side * cell or xx >= side * cell or tc >= cols:
        return None
    channel = tr * cols + tc
    return (channel, yy // cell, xx // cell) if channel < n else None


def filters(weight: torch.Tensor | np.ndarray, cell: int = FILTER_CELL, cols: int = FILTER_COLS) -> Image.Image:
    """conv1's learned (16, 1, 5, 5) filters, on one symmetric blue-white-red scale."""
    w = _np(weight).astype(np.float32)
    w = w.reshape(w.shape[0], w.shape[-2], w.shape[-1])
    m = float(np.abs(w).max()) or 1.0
    return feature_grid(w, cell, cols, hi=m, lo=-m, palette=WEIGHT_PALETTE)


def page(features: Features, pixels: np.ndarray | torch.Tensor,
         selected: tuple[str, int, int, int] | None = None) -> Page:
    """Every per-drawing picture, from one ``extract`` result and the network's input; a
    ``selected`` (layer, channel, row, col) cell is framed in its grid."""
    def sel(name):
        return tuple(selected[1:]) if selected is not None and selected[0] == name else None

    c1b, c1a = layer(features.conv1, CONV1_CELL, CONV1_COLS, sel("conv1"), sel("pool1"))
    c2b, c2a = layer(features.conv2, CONV2_CELL, CONV2_COLS, sel("conv2"), sel("pool2"))
    return Page(network_input(pixels), c1b, c1a, c2b, c2a)


# ------------------------------------------------------------------ the inspector and the evidence

def _rgb(idx: np.ndarray, palette: list[int]) -> np.ndarray:
    """Palette indices -> (..., 3) uint8 colours."""
    table = WEIGHT_RGB if palette is WEIGHT_PALETTE else np.asarray(palette, np.uint8).reshape(256, 3)
    return table[idx]


def _faint(pixels: np.ndarray | torch.Tensor) -> np.ndarray:
    """(28, 28) float in [0, 1]: the drawing as faint grey ink on white (1 = paper)."""
    return 1 - 0.45 * _pixels(pixels).astype(np.float32) / 255


def receptive_field(pixels: np.ndarray | torch.Tensor, box: list[int], inner: list[int] | None = None,
                    cell: int = INPUT_CELL) -> Image.Image:
    """The 28x28 network input, dimmed outside ``box`` (the cell's receptive field, [top, left,
    bottom, right] in input pixels, ends exclusive), framed in green; ``inner`` (a pooling
    winner's own field) framed in cyan."""
    a = _pixels(pixels)
    top, left, bottom, right = box
    dim = np.full(a.shape, 0.35, np.float32)
    dim[top:bottom, left:right] = 1.0
    grey = Image.fromarray((a * dim + 0.5).astype(np.uint8), "L")  # ink white, as on the input picture
    im = grey.resize((grey.width * cell, grey.height * cell), Image.Resampling.NEAREST).convert("RGB")
    draw = ImageDraw.Draw(im)
    for b, colour in ((box, RGB_HIGHLIGHT), (inner, RGB_KEPT)):
        if b is not None:  # drawn inside the box, so a field clipped at the border shows all sides
            t, l_, bo, r = (v * cell for v in b)
            draw.rectangle([l_, t, r - 1, bo - 1], outline=colour, width=2)
    im.encoderinfo = dict(PNG)
    return im


def evidence(maps: list[np.ndarray | torch.Tensor], pixels: np.ndarray | torch.Tensor,
             cell: int = INPUT_CELL) -> Image.Image:
    """Signed 7x7 evidence maps side by side, each over a faint copy of the 28x28 input: red
    raised the score, blue lowered it, white added nothing; one symmetric scale for all, with
    its colour bar. Position (i, j) of a map covers input pixels [4i, 4i+4) x [4j, 4j+4), the
    stride of the two poolings (its receptive field is larger: 16x16)."""
    faint = _faint(pixels)[..., None]  # (28, 28, 1)
    ms = [_np(m).astype(np.float32) for m in maps]
    hi = max(float(np.abs(m).max()) for m in ms) or 1.0
    side = faint.shape[0]
    tiles = []
    for m in ms:  # blended at 28x28 (both factors are constant there), upscaled once at the end
        up = side // m.shape[0]
        colour = _rgb(levels(m, -hi, hi), WEIGHT_PALETTE).repeat(up, 0).repeat(up, 1)
        tiles += [(colour * faint + 0.5).astype(np.uint8), np.full((side, GAP, 3), 255, np.uint8)]
    body = Image.fromarray(np.ascontiguousarray(np.concatenate(tiles[:-1], axis=1)), "RGB")
    body = body.resize((body.width * cell, body.height * cell), Image.Resampling.NEAREST)
    im = Image.new("RGB", (body.width, body.height + LEGEND_H), RGB_WHITE)
    im.paste(body)
    im.paste(Image.fromarray(_rgb(legend(body.width, -hi, hi), WEIGHT_PALETTE), "RGB"), (0, body.height))
    im.encoderinfo = dict(PNG)
    return im
