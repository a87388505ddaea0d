"""Issue 21, "move it": the drawing moved by whole pixels, and how similar each layer's maps stay.

Every figure the page shows is recomputed here independently: the moved input with
``torch.nn.functional.pad`` and a crop (not ``cnn.shift.shift``), the layers with the model's
modules called one by one (not ``cnn.features.extract``), the cosine with numpy in float64.
"""
from __future__ import annotations

import gradio as gr
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import app
from cnn import confidence, link, shift
from cnn.errors import InputError
from cnn.preprocess import prepare

TWO = next(p for p in app.EXAMPLES if p.stem.endswith("_2"))


def moved_reference(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Pad 4 zeros all round, then crop the 28x28 window that moves the picture (dx, dy)."""
    padded = F.pad(torch.from_numpy(image.astype(np.int32)), (4, 4, 4, 4))
    return padded[4 - dy: 32 - dy, 4 - dx: 32 - dx].numpy().astype(np.uint8)


def layers(model, image: np.ndarray) -> dict[str, np.ndarray]:
    x = torch.from_numpy(image).float().div(255)[None, None]
    with torch.no_grad():
        c1 = model.conv1[1](model.conv1[0](x))
        p1 = model.conv1[2](c1)
        c2 = model.conv2[1](model.conv2[0](p1))
        p2 = model.conv2[2](c2)
    return {"conv1": c1, "pool1": p1, "conv2": c2, "pool2": p2}


def cos(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def two():
    return prepare(str(TWO)).image


@pytest.mark.parametrize("dx, dy", [(1, 0), (-1, 0), (0, 1), (0, -1), (3, -2), (-4, 4), (4, 0)])
def test_a_move_is_the_drawing_moved_and_the_ink_it_loses_is_counted(two, dx, dy):
    got, lost = shift.shift(two, dx, dy)
    want = moved_reference(two, dx, dy)
    np.testing.assert_array_equal(got, want)
    assert lost == np.count_nonzero(two) - np.count_nonzero(want)


def test_the_example_two_loses_ink_at_the_right_edge(two):
    """A real case for the visitor's warning: the MNIST 2's tail reaches the right border."""
    assert shift.shift(two, 3, 0)[1] > 0 and shift.shift(two, -3, 0)[1] == 0


@pytest.mark.parametrize("dx, dy", [(1, 0), (0, -1), (2, 2), (-4, 3)])
def test_the_similarities_and_the_answer_are_the_models(shipped_model, two, dx, dy):
    label, answer, value, move = app.move_by(shipped_model, (dx, dy), two, (0, 0)) if max(abs(dx), abs(dy)) == 1 \
        else app.moved(shipped_model, two, dx, dy)[:3] + ((dx, dy),)
    assert move == (dx, dy) and value["move"]["dx"] == dx and value["move"]["dy"] == dy
    before, after = layers(shipped_model, two), layers(shipped_model, moved_reference(two, dx, dy))
    for name in ("conv1", "pool1", "conv2", "pool2"):
        assert value["move"]["similarity"][name] == pytest.approx(cos(after[name], before[name]), abs=1e-6), name
    logits = [shipped_model.out(layers(shipped_model, a)["pool2"].flatten(1))[0] for a in
              (two, moved_reference(two, dx, dy))]
    was, now = (confidence.answer(shipped_model, z.detach()) for z in logits)
    assert value["move"]["before"]["digit"] == was.digit == 2
    assert value["move"]["after"]["p"] == pytest.approx(now.probabilities[was.digit], abs=1e-6)
    assert value["digit"] == now.digit and value["probabilities"] == pytest.approx(now.probabilities, abs=1e-6)


def test_pooling_keeps_the_maps_closer_after_a_one_pixel_move(shipped_model, two):
    """What the page says, on the example 2: after a 1-pixel move each pooled layer is more similar
    to the unmoved maps than the layer before it."""
    sim = app.moved(shipped_model, two, 1, 0)[2]["move"]["similarity"]
    assert sim["pool1"] > sim["conv1"] and sim["pool2"] > sim["conv2"], sim


def test_moving_by_zero_changes_nothing(shipped_model, two):
    plain = app.show(shipped_model, app.extract(shipped_model, app.network_input(two)), two)
    zero = app.moved(shipped_model, two, 0, 0)
    assert zero[0] == plain[0] and zero[1] == plain[1] and zero[2] == plain[2] and "move" not in zero[2]
    back = app.move_by(shipped_model, None, two, (3, -1))  # ⟲ from a move: the page as drawn
    assert back[3] == (0, 0) and back[2] == plain[2]


def test_moves_stop_at_four_pixels_and_need_a_drawing(shipped_model, two):
    import gradio as gr

    assert app.move_by(shipped_model, (1, 0), two, (4, -4))[3] == (4, -4)
    assert app.move_by(shipped_model, (0, -1), two, (4, -4))[3] == (4, -4)
    with pytest.raises(gr.Error) as e:
        app.move_by(shipped_model, (1, 0), None, (0, 0))
    assert "Draw a digit first" in e.value.message


@pytest.mark.parametrize("dx, dy", [(5, 0), (0, -5), (1.5, 0), ("1", 0), (True, 0), (10 ** 100, 0), (None, 0)])
def test_a_hostile_move_is_one_sentence(dx, dy):
    with pytest.raises(InputError) as e:
        shift.check(dx, dy)
    said = str(e.value)
    assert said.startswith("A move is whole pixels from -4 to 4") and len(said) < 120 and "\n" not in said


def test_a_link_with_a_move_reopens_the_same_page(shipped_model, two):
    from urllib.parse import parse_qsl

    query = app.make_link(two, "pool1-3-4-5", (2, -1))
    params = dict(parse_qsl(query))
    assert params[link.MOVE_PARAM] == "2,-1" and "move=2,-1" in query
    opened = app.open_query(shipped_model, "?" + query)
    label, answer, value, drawing, move, canvas, notice, network, filters, note, picked = opened
    assert network == picked == "shipped" and filters == note == gr.skip()
    assert notice == "" and move == (2, -1) and value["pinned"] == ["pool1", 3, 4, 5]
    np.testing.assert_array_equal(drawing, two)  # the session keeps the drawing as drawn
    made = app.moved(shipped_model, two, 2, -1, ("pool1", 3, 4, 5))
    assert (label, answer, value) == made[:3]
    assert "move" not in app.make_link(two, "", (0, 0))  # no move: no parameter


def test_a_move_that_pushes_all_the_ink_out_is_refused_with_one_sentence(shipped_model):
    """A small drawing in the bottom-left corner (columns 0-1, rows 26-27): moved 2 px left, every
    inked pixel would leave the frame (counted here, column by column), and the button, the API's
    move and a link all get the one sentence instead of an empty page; 1 px left keeps half, and
    the value says how many inked pixels went (the visitor's warning)."""
    corner = np.zeros((28, 28), np.uint8)
    corner[26:28, 0:2] = [[200, 90], [255, 30]]
    ink = np.argwhere(corner > 0)  # (row, col) of every inked pixel
    for dx, dy in ((-2, 0), (-1, 2), (-3, -1)):
        left = sum(1 for r, q in ink if 0 <= q + dx < 28 and 0 <= r + dy < 28)
        assert left == 0, (dx, dy)
        with pytest.raises(gr.Error) as e:
            app.moved(shipped_model, corner, dx, dy)
        assert e.value.message == "That move would push the whole drawing out of the 28×28 frame.", e.value.message
    with pytest.raises(gr.Error) as e:  # the buttons: the third ← (from 2 left) is the one that empties it
        app.move_by(shipped_model, (-1, 0), corner, (-1, 0))
    assert "whole drawing out of the 28×28 frame" in e.value.message
    opened = app.open_query(shipped_model, "?" + app.make_link(corner, "", (1, 0)).replace("move=1,0", "move=-2,0"))
    assert "whole drawing out of the 28×28 frame" in opened[6] and "Here is an empty page" in opened[6]
    value = app.move_by(shipped_model, (-1, 0), corner, (0, 0))[2]
    kept = sum(1 for r, q in ink if 0 <= q - 1 < 28)
    assert value["move"]["lost"] == len(ink) - kept == 2 and value["move"]["dx"] == -1
