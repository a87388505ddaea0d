"""Feature maps (shapes, kept cells), the colour scales, conv1's filters as the browser gets them, colour bars."""
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


def test_filters_are_conv1s_weights_for_the_browser(shipped_model):
    """The value the browser draws conv1's filters from (cnn/web/filters.js) is the weights, float32
    bit for bit, with their shape (the drawn colours: tests/test_browser.py reads them back)."""
    import base64

    weight = shipped_model.conv1[0].weight.detach()
    value = render.filters(weight)
    assert value["shape"] == [16, 1, 5, 5]
    got = np.frombuffer(base64.b64decode(value["data"]), "<f4").reshape(value["shape"])
    np.testing.assert_array_equal(got, weight.numpy())


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


