"""The page's endpoints, called through gradio_client against the real app on a local port,
and the request path (``app.update`` / ``app.predict``) in-process."""
from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image, ImageDraw

import app
from cnn import render

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

def test_predict_is_the_one_documented_endpoint(client):
    api = client.view_api(print_info=False, return_format="dict")
    assert list(api["named_endpoints"]) == ["/predict"]
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
                                      api_name="/update")
    check_probabilities(label, 7)
    sizes = [Image.open(p).size for p in pictures]
    assert sizes == [(224, 224), render.grid_size(16, 28, render.CONV1_CELL, render.CONV1_COLS),
                     render.grid_size(16, 14, 2 * render.CONV1_CELL, render.CONV1_COLS),
                     render.grid_size(32, 14, render.CONV2_CELL, render.CONV2_COLS),
                     render.grid_size(32, 7, 2 * render.CONV2_CELL, render.CONV2_COLS)]


# ---------------------------------------------------------------- in process

def test_update_runs_one_preprocess_and_one_forward_pass(shipped_model, monkeypatch):
    calls = {"prepare": 0, "extract": 0}
    for name in calls:
        real = getattr(app, name)

        def counted(*a, _real=real, _name=name, **k):
            calls[_name] += 1
            return _real(*a, **k)

        monkeypatch.setattr(app, name, counted)
    _, _, composite = drawn_seven()
    out = app.update(shipped_model, {"background": None, "layers": [], "composite": np.asarray(composite)})
    assert calls == {"prepare": 1, "extract": 1}
    assert max(out[0], key=out[0].get) == "7" and len(out[0]) == 10
    assert all(isinstance(im, Image.Image) for im in out[1:])


@pytest.mark.parametrize("value", [None, "blank"], ids=["none", "blank"])
def test_blank_input_gives_the_empty_page(shipped_model, value):
    value = blank() if value == "blank" else value
    assert app.update(shipped_model, value) == (app.EMPTY, None, None, None, None, None)
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
