"""Feature maps (shapes, kept cells), the colour scales, conv1's filters as the browser gets them, colour-bar numbers."""
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


def test_colour_bar_numbers_are_three_significant_digits():
    """The format the page prints a colour bar's ends in (``render.fmt``; the browser test reads
    the printed ends against it)."""
    assert [render.fmt(v) for v in (0, 2.3456, 12.0, 0.5, 1e-5, -0.79, 13.4567)] == \
        ["0", "2.35", "12", "0.5", "1.0e-05", "-0.79", "13.5"]
