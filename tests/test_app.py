"""The page's endpoints, called through gradio_client against the real app on a local port,
and the request path (``app.update`` / ``app.predict``) in-process.

The pictures the page serves are decoded back into numbers (each colour through the palette to
the value it stands for) and checked against the model's own activations for the same drawing.
Only the first six outputs of ``/update`` are read (label, network input, conv1 before/after,
conv2 before/after): the page may append more.
"""
from __future__ import annotations

import io
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import app
from cnn import confidence, inspector, render
from cnn.features import extract
from cnn.preprocess import prepare
from test_render import bar_numbers, printed

EXAMPLES = app.EXAMPLES

DIGITS = [int(p.stem.rsplit("_", 1)[1]) for p in EXAMPLES]


def drawn_seven(canvas: int = app.CANVAS) -> tuple[Image.Image, Image.Image, Image.Image]:
    """A 7 drawn as the Sketchpad hands it over: (white background, transparent layer with
    the strokes at the page's brush width, their composite), RGBA."""
    r = app.BRUSH_RADIUS * canvas / app.CANVAS
    layer = Image.new("RGBA", (canvas, canvas), (0, 0, 0, 0))
    pts = [(canvas * x, canvas * y) for x, y in [(0.25, 0.2), (0.75, 0.2), (0.45, 0.85)]]
    draw = ImageDraw.Draw(layer)
    draw.line(pts, fill=(0, 0, 0, 255), width=round(2 * r), joint="curve")
    for x, y in (pts[0], pts[-1]):
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(0, 0, 0, 255))
    background = Image.new("RGBA", (canvas, canvas), (255, 255, 255, 255))
    return background, layer, Image.alpha_composite(background, layer)


def blank(canvas: int = app.CANVAS) -> dict:
    white = np.full((canvas, canvas, 4), 255, np.uint8)
    return {"background": white, "layers": [np.zeros_like(white)], "composite": white}


@pytest.fixture(scope="module")
def client(served_app):
    from gradio_client import Client

    return Client(served_app, verbose=False)


def sketch_payload(tmp_path, background, layers, composite) -> dict:
    from gradio_client import handle_file

    def f(im, name):
        path = tmp_path / f"{name}.png"
        im.save(path)
        return handle_file(str(path))

    return {"background": f(background, "background"),
            "layers": [f(im, f"layer{i}") for i, im in enumerate(layers)],
            "composite": f(composite, "composite"), "id": None}


def check_probabilities(result: dict, digit: int) -> None:
    assert result["label"] == str(digit), result
    confidences = {c["label"]: c["confidence"] for c in result["confidences"]}
    assert sorted(confidences) == [str(d) for d in range(10)]  # all ten digits
    assert math.isclose(sum(confidences.values()), 1.0, rel_tol=1e-5)
    assert max(confidences, key=confidences.get) == str(digit)


# ---------------------------------------------------------------- through gradio_client

def test_the_documented_endpoints_are_predict_inspect_and_evidence(client):
    """Every page event (strokes, clicks, links, examples) is private; /update is undocumented."""
    api = client.view_api(print_info=False, return_format="dict")
    assert sorted(api["named_endpoints"]) == ["/evidence", "/inspect", "/predict"]
    params = api["named_endpoints"]["/predict"]["parameters"]
    assert len(params) == 1 and params[0]["component"] == "Imageeditor"  # what a Sketchpad is


def test_predict_a_drawn_digit(client, tmp_path):
    background, layer, composite = drawn_seven()
    result = client.predict(sketch_payload(tmp_path, background, [layer], composite), api_name="/predict")
    check_probabilities(result, 7)


def test_predict_a_drawing_given_only_as_its_layer(client, tmp_path):
    """A transparent stroke layer alone (no background, composite of the layer) still reads."""
    _, layer, _ = drawn_seven()
    result = client.predict(sketch_payload(tmp_path, layer, [layer], layer), api_name="/predict")
    check_probabilities(result, 7)


@pytest.mark.parametrize("path", EXAMPLES[:3], ids=lambda p: p.stem)
def test_predict_an_example(client, path):
    from gradio_client import handle_file

    digit = int(path.stem.rsplit("_", 1)[1])
    value = {"background": handle_file(str(path)), "layers": [], "composite": handle_file(str(path)), "id": None}
    check_probabilities(client.predict(value, api_name="/predict"), digit)


def test_predict_none_is_a_clear_empty_result(client):
    result = client.predict(None, api_name="/predict")
    assert result["label"] == app.EMPTY
    assert not result.get("confidences")  # no guess at all


def test_predict_a_blank_canvas_is_the_empty_result(client, tmp_path):
    white = Image.new("RGBA", (app.CANVAS, app.CANVAS), (255, 255, 255, 255))
    empty = Image.new("RGBA", (app.CANVAS, app.CANVAS), (0, 0, 0, 0))
    result = client.predict(sketch_payload(tmp_path, white, [empty], white), api_name="/predict")
    assert result["label"] == app.EMPTY and not result.get("confidences")


def test_page_update_endpoint_returns_every_picture(client, tmp_path):
    """The (undocumented) endpoint the page calls on every stroke: label + five pictures."""
    background, layer, composite = drawn_seven()
    label, *pictures = client.predict(sketch_payload(tmp_path, background, [layer], composite),
                                      api_name="/update")[:6]
    check_probabilities(label, 7)
    sizes = [Image.open(p).size for p in pictures]
    assert sizes == [(224, 224), render.grid_size(16, 28, render.CONV1_CELL, render.CONV1_COLS),
                     render.grid_size(16, 14, 2 * render.CONV1_CELL, render.CONV1_COLS),
                     render.grid_size(32, 14, render.CONV2_CELL, render.CONV2_COLS),
                     render.grid_size(32, 7, 2 * render.CONV2_CELL, render.CONV2_COLS)]


# ---------------------------------------------------------------- the pictures the page serves
# One /update call on a drawn 7 (as the page sends it: background, stroke layer, composite) feeds
# every check below; the expected numbers are the model's own activations for the same drawing.

PALETTE = np.asarray(render.ACTIVATION_PALETTE, np.uint8).reshape(256, 3)
LAYERS = {  # name: (maps, side before pooling, cell px before pooling, tiles across)
    "conv1": (16, 28, render.CONV1_CELL, render.CONV1_COLS),
    "conv2": (32, 14, render.CONV2_CELL, render.CONV2_COLS),
}
PICTURE = {"conv1": (1, 2), "conv2": (3, 4)}  # positions of (before, after) in the served pictures


class ModelCalls:
    """Counts the model's forward passes (and conv1's) while in a ``with`` block."""

    def __init__(self, model):
        self.model, self.model_calls, self.conv1_calls = model, 0, 0

    def __enter__(self):
        self._hooks = [self.model.register_forward_pre_hook(lambda m, a: self._count("model_calls")),
                       self.model.conv1[0].register_forward_pre_hook(lambda m, a: self._count("conv1_calls"))]
        return self

    def _count(self, what):
        setattr(self, what, getattr(self, what) + 1)

    def __exit__(self, *exc):
        for h in self._hooks:
            h.remove()


@pytest.fixture(scope="module")
def served(client, shipped_model, tmp_path_factory):
    """The page's answer for a drawn 7, through /update, beside what the model computes for it."""
    background, layer, composite = drawn_seven()
    payload = sketch_payload(tmp_path_factory.mktemp("served"), background, [layer], composite)
    with ModelCalls(shipped_model) as calls:
        label, *paths = client.predict(payload, api_name="/update")[:6]
    value = {"background": np.asarray(background), "layers": [np.asarray(layer)],
             "composite": np.asarray(composite)}  # what the Sketchpad (numpy, RGBA) hands over
    prepared = prepare(value)
    return SimpleNamespace(label=label, pictures=[Image.open(p) for p in paths], calls=calls,
                           prepared=prepared, features=extract(shipped_model, prepared.tensor))


def rgb(im: Image.Image) -> np.ndarray:
    return np.asarray(im.convert("RGB"))


def nearest(colours: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(..., 3) RGB -> (...) index of the nearest colour of ``scale`` (LEVELS, 3)."""
    flat = colours.reshape(-1, 3).astype(np.int32)
    unique, inverse = np.unique(flat, axis=0, return_inverse=True)
    d = ((unique[:, None, :] - scale[None].astype(np.int32)) ** 2).sum(-1)
    return d.argmin(1)[inverse.ravel()].reshape(colours.shape[:-1])


def cells(picture: np.ndarray, n: int, side: int, cell: int, cols: int) -> np.ndarray:
    """(n, side, side, cell, cell, 3): the pixels of each cell of each tile of a grid picture."""
    t = side * cell + render.GAP
    out = np.empty((n, side, side, cell, cell, 3), np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        tile = picture[r * t : r * t + side * cell, c * t : c * t + side * cell]
        out[i] = tile.reshape(side, cell, side, cell, 3).transpose(0, 2, 1, 3, 4)
    return out


def legend_rgb(width: int, lo: float, hi: float, key: bool, palette=render.ACTIVATION_PALETTE) -> np.ndarray:
    """The colour bar strip a picture of ``width`` px on the scale [lo, hi] must end with."""
    return rgb(render.image(render.legend(width, lo, hi, key=key), palette))


def test_the_page_runs_the_model_once_per_update(served):
    assert (served.calls.model_calls, served.calls.conv1_calls) == (1, 1)


def test_served_label_is_the_models_answer(served, shipped_model):
    probabilities = confidence.answer(shipped_model, served.features.logits).probabilities  # calibrated
    confidences = {c["label"]: c["confidence"] for c in served.label["confidences"]}
    assert served.label["label"] == str(int(np.argmax(probabilities))) == "7"
    np.testing.assert_allclose([confidences[str(d)] for d in range(10)], probabilities, rtol=0, atol=1e-6)


def table(result: dict) -> list[float]:
    """A served label's ten confidences, in digit order."""
    confidences = {c["label"]: c["confidence"] for c in result["confidences"]}
    assert sorted(confidences) == [str(d) for d in range(10)]
    return [confidences[str(d)] for d in range(10)]


def test_served_network_input_is_the_prepared_tensor(served):
    picture = rgb(served.pictures[0])
    c = render.INPUT_CELL
    assert picture.shape == (28 * c, 28 * c, 3)
    blocks = picture.reshape(28, c, 28, c, 3)
    assert (blocks == blocks[:, :1, :, :1]).all()  # each input pixel one solid grey square
    assert (blocks[..., 0] == blocks[..., 1]).all() and (blocks[..., 0] == blocks[..., 2]).all()
    expected = (served.prepared.tensor[0, 0] * 255).round().to(torch.uint8).numpy()  # ink high: white
    np.testing.assert_array_equal(blocks[:, 0, :, 0, 0], expected)


POOLED = {"conv1": ("conv1", "pool1"), "conv2": ("conv2", "pool2")}  # (before, after) in the inspector's names


def ring(shape: tuple[int, int], box: tuple[int, int, int, int], width: int = 2) -> np.ndarray:
    """The ``width``-px ring just outside a (top, left, bottom, right) pixel box, as a mask."""
    top, left, bottom, right = box
    mask = np.zeros(shape, bool)
    mask[max(0, top - width):bottom + width, max(0, left - width):right + width] = True
    mask[top:bottom, left:right] = False
    return mask


@pytest.mark.parametrize("layer", LAYERS)
def test_served_maps_are_the_models_activations_on_the_layers_one_scale(served, shipped_model, layer):
    """Every cell of every tile, before and after pooling, decoded through the palette back to a
    value, is the model's activation within one colour step of the scale [0, layer's maximum].
    Nothing is selected yet, so the inspector shows the cell that voted most for the answer: that
    cell, and no other pixel, is framed in green in its grid (the frame is not a value)."""
    block = getattr(served.features, layer)
    n, side, cell, cols = LAYERS[layer]
    hi = float(block.before.max())
    assert hi > 0
    step = hi / (render.LEVELS - 1)
    span = render.dot_span(cell)
    shown_layer, *shown = inspector.strongest_vote(shipped_model, served.features)
    for name, pos, maps, s, c in ((POOLED[layer][0], PICTURE[layer][0], block.before, side, cell),
                                  (POOLED[layer][1], PICTURE[layer][1], block.after, side // 2, 2 * cell)):
        picture = rgb(served.pictures[pos])
        assert picture.shape[:2] == render.grid_size(n, s, c, cols)[::-1]
        framed = np.zeros(picture.shape[:2], bool)
        if name == shown_layer:
            framed = ring(picture.shape[:2], render.cell_box(*shown, s, c, cols))
        green = (picture == render.RGB_HIGHLIGHT).all(-1)
        np.testing.assert_array_equal(green, framed, err_msg=f"{name}: the frame is not around the inspected cell")
        px = cells(picture[: -render.LEGEND_H], n, s, c, cols)
        hidden = cells(np.repeat(framed[: -render.LEGEND_H, :, None], 3, -1), n, s, c, cols)[..., 0]
        solid = np.ones((c, c), bool)
        if pos == PICTURE[layer][0]:
            solid[span, span] = False  # the dot's square
        seen = solid & ~hidden  # (n, s, s, c, c): a cell's own colour shows there
        first = seen.reshape(*seen.shape[:3], -1).argmax(-1)  # a pixel of each cell under no dot, no frame
        body = np.take_along_axis(px.reshape(*px.shape[:3], -1, 3), first[..., None, None], 3)[:, :, :, 0]
        assert seen.any((-2, -1)).all()
        assert ((px == body[:, :, :, None, None]).all(-1) | ~seen).all(), f"{layer}: a cell is not one colour"
        values = nearest(body, render.ACTIVATION_SCALE) * step
        np.testing.assert_allclose(values, maps.numpy(), rtol=0, atol=step * 1.001,
                                   err_msg=f"{layer} picture {pos}: colours are not the activations")


@pytest.mark.parametrize("layer", LAYERS)
def test_served_colour_bars_show_the_layers_real_maximum(served, layer):
    """Both pictures of a layer end with the same colour bar, 0 to the layer's largest activation:
    the numbers at its ends, read from the pixels, are "0" and that maximum to 3 significant digits."""
    hi = float(getattr(served.features, layer).before.max())
    assert 1e-2 <= hi < 1e4  # written without an exponent
    before, after = (rgb(served.pictures[i]) for i in PICTURE[layer])
    for picture in (before, after):
        left, right = bar_numbers(picture[-render.LEGEND_H:])
        np.testing.assert_array_equal(left, printed("0"))
        np.testing.assert_array_equal(right, printed(f"{hi:.3g}"), err_msg=f"{layer}: the bar's top is not {hi:.3g}")
    width = before.shape[1]
    np.testing.assert_array_equal(before[-render.LEGEND_H:], legend_rgb(width, 0.0, hi, key=True))
    np.testing.assert_array_equal(after[-render.LEGEND_H:], legend_rgb(width, 0.0, hi, key=False))


@pytest.mark.parametrize("layer", LAYERS)
def test_served_dots_mark_the_kept_cells_bright_where_the_window_has_a_visible_winner(served, layer):
    """A dot on exactly the cell each 2x2 window kept: bright where the window's four colours
    span at least 1/30 of the scale (LEVELS // 30 colour levels), dim where they look flat."""
    flat = render.LEVELS // 30  # the stated rule, not the module's constant
    block = getattr(served.features, layer)
    n, side, cell, cols = LAYERS[layer]
    span = render.dot_span(cell)
    px = cells(rgb(served.pictures[PICTURE[layer][0]])[: -render.LEGEND_H], n, side, cell, cols)
    body = px[:, :, :, 0, 0]
    dot = px[:, :, :, span.start, span.start]
    assert (px[:, :, :, span, span] == dot[:, :, :, None, None]).all()  # the dot is one square
    levels = nearest(body, render.ACTIVATION_SCALE)
    windows = levels.reshape(n, side // 2, 2, side // 2, 2)
    spread = windows.max(axis=(2, 4)) - windows.min(axis=(2, 4))
    bright = np.repeat(np.repeat(spread >= flat, 2, 1), 2, 2)
    kept = block.kept.numpy()
    expected = np.where(kept[..., None], np.where(bright[..., None], PALETTE[render.KEPT], PALETTE[render.KEPT_DIM]),
                        body)
    np.testing.assert_array_equal(dot, expected, err_msg=f"{layer}: dots")
    assert (kept & bright).any() and (kept & ~bright).any()  # both kinds are on this drawing


def served_filters(client) -> Image.Image:
    """conv1's filters picture as the page serves it (a static value in the page's config)."""
    import httpx

    found = [c["props"]["value"] for c in client.config["components"]
             if c.get("type") == "image" and "filter" in str(c.get("props", {}).get("label", "")).lower()]
    assert len(found) == 1 and found[0], found
    response = httpx.get(found[0]["url"], timeout=30)
    assert response.status_code == 200
    return Image.open(io.BytesIO(response.content))


def test_served_filters_are_conv1s_weights_blue_negative_red_positive(client, shipped_model):
    weight = shipped_model.conv1[0].weight.detach()[:, 0].numpy()  # (16, 5, 5)
    picture = rgb(served_filters(client))
    np.testing.assert_array_equal(picture, rgb(render.filters(shipped_model.conv1[0].weight)))
    m = float(np.abs(weight).max())
    step = 2 * m / (render.LEVELS - 1)
    c, cols = render.FILTER_CELL, render.FILTER_COLS
    px = cells(picture[: -render.LEGEND_H], 16, 5, c, cols)
    assert (px == px[:, :, :, :1, :1]).all()  # solid cells
    colour = px[:, :, :, 0, 0].astype(int)
    values = -m + nearest(colour, render.WEIGHT_SCALE) * step
    np.testing.assert_allclose(values, weight, rtol=0, atol=step * 1.001)
    red, blue = colour[..., 0], colour[..., 2]
    assert (red[weight > step] > blue[weight > step]).all()  # positive: red
    assert (blue[weight < -step] > red[weight < -step]).all()  # negative: blue
    np.testing.assert_array_equal(picture[-render.LEGEND_H:],
                                  legend_rgb(picture.shape[1], -m, m, key=False, palette=render.WEIGHT_PALETTE))


def test_page_predict_and_cli_give_the_same_answer(client, shipped_model, tmp_path, capsys):
    """The page's label, /predict and ``python -m cnn predict`` agree, digit and probabilities."""
    from gradio_client import handle_file

    from cnn.__main__ import main as cli

    path = tmp_path / "seven.png"
    drawn_seven()[2].save(path)
    value = {"background": handle_file(str(path)), "layers": [], "composite": handle_file(str(path)), "id": None}
    page = client.predict(value, api_name="/update")[0]
    api = client.predict(value, api_name="/predict")
    threads = torch.get_num_threads()
    try:
        assert cli(["predict", str(path)]) == 0
    finally:
        torch.set_num_threads(threads)  # the CLI sets 1 for its own process
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    expected = confidence.answer(shipped_model, extract(shipped_model, prepare(str(path)).tensor).logits).probabilities
    assert page["label"] == api["label"] == str(line["digit"]) == str(int(np.argmax(expected)))
    np.testing.assert_allclose(table(page), table(api), rtol=0, atol=1e-9)
    np.testing.assert_allclose(table(page), line["probabilities"], rtol=0, atol=2e-6)
    np.testing.assert_allclose(table(page), expected, rtol=0, atol=1e-6)


# ---------------------------------------------------------------- in process

def test_update_runs_one_preprocess_and_one_forward_pass(shipped_model, monkeypatch):
    calls = {"prepare": 0}
    real = app.prepare

    def counted(*a, **k):
        calls["prepare"] += 1
        return real(*a, **k)

    monkeypatch.setattr(app, "prepare", counted)
    _, _, composite = drawn_seven()
    with ModelCalls(shipped_model) as model:
        out = app.update(shipped_model, {"background": None, "layers": [], "composite": np.asarray(composite)})
    assert calls == {"prepare": 1} and (model.model_calls, model.conv1_calls) == (1, 1)
    assert max(out[0], key=out[0].get) == "7" and len(out[0]) == 10
    assert all(isinstance(im, Image.Image) for im in out[1:6])


@pytest.mark.parametrize("value", [None, "blank"], ids=["none", "blank"])
def test_blank_input_gives_the_empty_page(shipped_model, value):
    value = blank() if value == "blank" else value
    assert app.update(shipped_model, value)[:6] == (app.EMPTY, None, None, None, None, None)
    assert app.predict(shipped_model, value) == app.EMPTY


def test_unreadable_input_is_a_user_error_without_internals(shipped_model, tmp_path):
    import gradio as gr

    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    with pytest.raises(gr.Error) as err:
        app.predict(shipped_model, str(notes))
    assert "notes.txt" in err.value.message and "Traceback" not in err.value.message


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_shipped_example_is_a_small_mnist_png_read_correctly(shipped_model, path):
    im = Image.open(path)
    assert im.size == (28, 28) and path.stat().st_size < 2048
    assert max(app.predict(shipped_model, str(path)).items(), key=lambda kv: kv[1])[0] == path.stem[-1]


def test_examples_cover_every_digit():
    assert sorted(DIGITS) == list(range(10))


def test_missing_weights_refuse_to_start_with_one_line(tmp_path, capsys):
    assert app.main(["--weights", str(tmp_path / "nope.pt")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "python train.py" in err and "Traceback" not in err


@pytest.mark.parametrize("argv, says", [
    (["--port", "99999"], "'99999' is not a port number (1-65535)"),
    (["--port", "0"], "'0' is not a port number"),
    (["--port", "web"], "'web' is not a port number"),
])
def test_a_bad_port_is_refused_with_the_usage_line(argv, says, capsys):
    with pytest.raises(SystemExit) as exit_:
        app.parse_args(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"argument --port: {says}" in err and "Traceback" not in err


def test_the_port_can_come_from_gradios_variable(monkeypatch):
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7999")
    assert app.parse_args([]).port == 7999
    monkeypatch.setenv("GRADIO_SERVER_PORT", "123456")
    with pytest.raises(SystemExit):
        app.parse_args([])
