"""Feature maps (shapes, kept cells) and their pictures (sizes, cells, dots, colour scale)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import app
from cnn import render
from cnn.features import Block, extract
from cnn.preprocess import prepare


@pytest.fixture(scope="module", params=[p for p in app.EXAMPLES if p.stem[-1] in "1078"],
                ids=lambda p: p.stem)
def digit(request, shipped_model):
    prepared = prepare(str(request.param))
    return prepared, extract(shipped_model, prepared.tensor)


def windows(x: torch.Tensor) -> torch.Tensor:
    """(C, H, W) -> (C, H/2, W/2, 4): the four cells of every 2x2 pooling window."""
    c, h, w = x.shape
    return x.reshape(c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 2, 4).reshape(c, h // 2, w // 2, 4)


# ---------------------------------------------------------------- the feature maps

def test_feature_map_shapes(digit):
    _, f = digit
    assert f.conv1.before.shape == (16, 28, 28) and f.conv1.after.shape == (16, 14, 14)
    assert f.conv2.before.shape == (32, 14, 14) and f.conv2.after.shape == (32, 7, 7)
    assert f.conv1.kept.shape == (16, 28, 28) and f.conv2.kept.shape == (32, 14, 14)
    assert f.conv1.kept.dtype == torch.bool and f.probabilities.shape == (10,)


@pytest.mark.parametrize("layer", ["conv1", "conv2"])
def test_every_kept_cell_holds_its_windows_maximum(digit, layer):
    block: Block = getattr(digit[1], layer)
    kept = windows(block.kept)
    assert (kept.sum(-1) == 1).all()  # exactly one kept cell per 2x2 window
    values = windows(block.before)
    held = (values * kept).sum(-1)  # the kept cell's value, window by window
    torch.testing.assert_close(held, values.amax(-1), rtol=0, atol=0)
    torch.testing.assert_close(block.after, values.amax(-1), rtol=0, atol=0)  # what the pool passed on


def test_features_are_the_models_own_forward_pass(digit, shipped_model):
    prepared, f = digit
    with torch.inference_mode():
        x = prepared.tensor
        c1 = shipped_model.conv1(x)
        torch.testing.assert_close(f.conv1.after, c1[0])
        torch.testing.assert_close(f.conv2.after, shipped_model.conv2(c1)[0])
        torch.testing.assert_close(f.probabilities, shipped_model(x).softmax(1)[0])
        torch.testing.assert_close(f.conv1.before, F.relu(shipped_model.conv1[0](x))[0])


# ---------------------------------------------------------------- the pictures

def test_page_picture_sizes(digit):
    prepared, f = digit
    page = render.page(f, prepared.image)
    assert page.network_input.size == (224, 224) and page.network_input.mode == "L"
    assert page.conv1_before.size == page.conv1_after.size == (460, 460 + render.LEGEND_H)
    assert page.conv2_before.size == page.conv2_after.size == (476, 236 + render.LEGEND_H)
    for im in (page.conv1_before, page.conv1_after, page.conv2_before, page.conv2_after):
        assert im.mode == "P" and im.encoderinfo == {"compress_level": 1}


def test_filters_picture(shipped_model):
    im = render.filters(shipped_model.conv1[0].weight)
    assert im.size == render.grid_size(16, 5, render.FILTER_CELL, render.FILTER_COLS)
    rgb = np.asarray(im.convert("RGB"))
    assert (rgb[: 5 * render.FILTER_CELL, : 5 * render.FILTER_CELL].std(axis=(0, 1)) > 0).all()  # not flat


@pytest.mark.parametrize("n,side,cell,cols", [(16, 28, 4, 4), (16, 14, 8, 4), (32, 14, 4, 8), (32, 7, 8, 8),
                                              (10, 5, 3, 4), (1, 2, 1, 1)])
def test_grid_sizes(n, side, cell, cols):
    maps = np.random.default_rng(0).random((n, side, side), dtype=np.float32)
    im = render.feature_grid(maps, cell, cols, hi=1.0)
    assert im.size == render.grid_size(n, side, cell, cols)


def tile(idx: np.ndarray, i: int, side: int, cell: int, cols: int) -> np.ndarray:
    """Palette indices of tile ``i`` in a grid picture."""
    t = side * cell + render.GAP
    r, c = divmod(i, cols)
    return idx[r * t : r * t + side * cell, c * t : c * t + side * cell]


def test_cells_are_nearest_neighbour_blocks_on_one_colour_scale(digit):
    _, f = digit
    after = f.conv1.after.numpy()
    hi = float(f.conv1.before.max())
    idx = np.asarray(render.layer(f.conv1, 4, 4)[1])  # "after" picture: 14x14 cells of 8 px
    tiles = []
    for i in range(16):
        t = tile(idx, i, 14, 8, 4).reshape(14, 8, 14, 8)
        assert (t == t[:, :1, :, :1]).all()  # every cell one solid square
        np.testing.assert_array_equal(t[:, 0, :, 0], render.levels(after[i], 0, hi))
        tiles.append(t[:, 0, :, 0])
    tiles = np.stack(tiles)
    # Cells use colour-scale entries only, and the scale is the layer's: the strongest response
    # (kept by pooling) is its top colour and ReLU's zeros its bottom one.
    assert tiles.max() == render.LEVELS - 1 and tiles.min() == 0
    grid = idx[: -render.LEGEND_H]
    t = 14 * 8 + render.GAP
    gutters = np.ones(grid.shape, bool)
    for r in range(4):
        for c in range(4):
            gutters[r * t : r * t + 14 * 8, c * t : c * t + 14 * 8] = False
    assert (grid[gutters] == render.WHITE).all()


@pytest.mark.parametrize("layer,cell,cols", [("conv1", render.CONV1_CELL, render.CONV1_COLS),
                                             ("conv2", render.CONV2_CELL, render.CONV2_COLS)])
def test_dots_mark_exactly_the_kept_cells(digit, layer, cell, cols):
    block = getattr(digit[1], layer)
    n, side = block.before.shape[0], block.before.shape[1]
    idx = np.asarray(render.layer(block, cell, cols)[0])
    span = render.dot_span(cell)
    body = 0  # top-left pixel of a cell: never covered by the dot
    flat_windows = 0
    for i in range(n):
        t = tile(idx, i, side, cell, cols).reshape(side, cell, side, cell)
        dot, corner = t[:, span.start, :, span.start], t[:, body, :, body]
        marked = np.isin(dot, [render.KEPT, render.KEPT_DIM])
        np.testing.assert_array_equal(marked, block.kept[i].numpy())
        assert not np.isin(corner, [render.KEPT, render.KEPT_DIM]).any()
        # Bright on a window whose four colours span at least 1/30 of the scale (a visible
        # winner), dim on one that looks flat: read off the picture's own cell colours.
        windows = corner.astype(int).reshape(side // 2, 2, side // 2, 2)
        spread = (windows.max(axis=(1, 3)) - windows.min(axis=(1, 3))).repeat(2, 0).repeat(2, 1)
        kept = block.kept[i].numpy()
        np.testing.assert_array_equal(dot[kept] == render.KEPT, spread[kept] >= render.LEVELS // 30)
        flat_windows += int(((spread > 0) & (spread < render.LEVELS // 30))[kept].sum())
    assert (idx == render.KEPT).any() and (idx == render.KEPT_DIM).any()  # a real digit has both
    assert flat_windows > 0  # and windows that differ a little, where the threshold decides


def test_kept_dot_is_centred():
    assert [render.dot_span(c) for c in (1, 3, 4, 6, 8)] == [slice(0, 1), slice(1, 2), slice(1, 3),
                                                            slice(2, 4), slice(2, 6)]


def test_a_dead_layer_still_renders():
    zeros = torch.zeros(16, 28, 28)
    kept = torch.zeros(16, 28, 28, dtype=torch.bool)
    kept[:, ::2, ::2] = True  # what max_pool2d reports for all-equal windows: the first cell
    block = Block(zeros, torch.zeros(16, 14, 14), kept)
    before, after = render.layer(block, 4, 4)
    idx = np.asarray(before)[: -render.LEGEND_H]
    assert (idx == render.KEPT_DIM).any() and not (idx == render.KEPT).any()  # nothing won anywhere
    assert after.size == before.size


def test_colour_scales_mean_what_the_page_says():
    """Activations: black (0) to pale yellow (the maximum), brighter at every step. Weights: blue
    (negative), white (0), red (positive)."""
    a = render.ACTIVATION_SCALE.astype(int)
    luminance = a @ np.array([299, 587, 114])
    assert len(a) == render.LEVELS and (np.diff(luminance) > 0).all()
    assert a[0].max() < 16 and a[-1].min() > 150 and a[-1][0] > a[-1][2] and a[-1][1] > a[-1][2]
    w = render.WEIGHT_SCALE.astype(int)
    lo, mid, hi = w[0], w[(render.LEVELS - 1) // 2], w[-1]
    assert lo[2] > lo[0] + 100 and hi[0] > hi[2] + 100 and mid.min() > 235
    assert (w[: render.LEVELS // 2, 2] >= w[: render.LEVELS // 2, 0]).all()  # the negative half is blue
    assert (w[-(render.LEVELS // 2):, 0] >= w[-(render.LEVELS // 2):, 2]).all()  # the positive half is red


# The 12 text greys, paper (0) to full ink (11), as RGB: how a picture's words are read back.
TEXT_GREYS = {tuple(int(v) for v in c): q
              for q, c in enumerate(np.asarray(render.ACTIVATION_PALETTE, np.uint8).reshape(256, 3)[render.TEXT0:])}


def _inked(levels: np.ndarray) -> np.ndarray:
    cols = np.flatnonzero((levels > 0).any(0))
    assert len(cols), "no text there"
    return levels[:, cols[0] : cols[-1] + 1]


def printed(text: str) -> np.ndarray:
    """The text-grey levels ``text`` shows in a colour-bar strip (the picture font's glyphs,
    ``render._ink``, on the 12 greys), cropped to its inked columns."""
    q = len(TEXT_GREYS) - 1
    return _inked((render._ink(text).astype(int) * q + 127) // 255)


def bar_numbers(strip: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two numbers at the ends of a colour-bar strip ((LEGEND_H, W, 3) RGB), read without
    ``render.legend``: the text greys left of the bar and right of it (up to the cyan kept-cell
    key, if any), each cropped to its inked columns. Compare with ``printed(text)``."""
    h, w, _ = strip.shape
    levels = np.full((h, w), -1)  # -1: neither paper nor text (the bar, the key)
    for colour, q in TEXT_GREYS.items():
        levels[(strip == colour).all(-1)] = q
    key = np.flatnonzero((strip == render.RGB_KEPT).all(-1).any(0))
    bar = np.flatnonzero(levels[h // 2] < 0)
    bar = bar[bar < (key[0] if len(key) else w)]
    start, end = int(bar[0]), int(bar[-1]) + 1
    assert end - start == len(bar) >= 24, "the colour bar is not one run of colours"
    left, right = levels[:, :start], levels[:, end : key[0] if len(key) else w]
    assert (left >= 0).all() and (right >= 0).all(), "something other than text beside the bar"
    return _inked(left), _inked(right)


def test_legend_numbers():
    assert [render.fmt(v) for v in (0, 2.3456, 12.0, 0.5, 1e-5, -0.79)] == ["0", "2.35", "12", "0.5", "1.0e-05",
                                                                         "-0.79"]
    strip = render.legend(460, 0.0, 2.5, key=True)
    assert strip.shape == (render.LEGEND_H, 460)
    assert (strip == render.KEPT).any() and (strip >= render.TEXT0).any()
    assert set(np.unique(strip[render.LEGEND_H // 2]).tolist()) >= {0, render.LEVELS - 1}  # the colour bar


@pytest.mark.parametrize("lo, hi, key, says", [(0.0, 2.5, True, ("0", "2.5")), (0.0, 13.4567, False, ("0", "13.5")),
                                               (-0.79, 0.79, False, ("-0.79", "0.79"))])
def test_the_colour_bar_prints_its_ends(lo, hi, key, says):
    """Read back from the picture's pixels: ``lo`` left of the bar, ``hi`` right of it."""
    strip = np.asarray(render.image(render.legend(460, lo, hi, key=key)).convert("RGB"))
    left, right = bar_numbers(strip)
    np.testing.assert_array_equal(left, printed(says[0]))
    np.testing.assert_array_equal(right, printed(says[1]))


def test_network_input_is_the_28x28_image_upscaled():
    img = np.random.default_rng(1).integers(0, 256, (28, 28), dtype=np.uint8)
    out = np.asarray(render.network_input(img))
    assert out.shape == (224, 224)
    np.testing.assert_array_equal(out[::8, ::8], img)
    np.testing.assert_array_equal(np.asarray(render.network_input(torch.from_numpy(img).float()[None, None] / 255)),
                                  out)
