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
from cnn import confidence, explain, inspector, payload, render
from cnn.features import extract
from cnn.preprocess import prepare

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
    assert len(params) == 2 and params[0]["component"] == "Imageeditor"  # what a Sketchpad is
    assert (params[1]["parameter_name"], params[1]["parameter_default"]) == ("network", "shipped")  # optional


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


# ---------------------------------------------------------------- the value the page draws from
# One /update call on a drawn 7 (as the page sends it: background, stroke layer, composite) feeds
# every check below; the expected numbers are the model's own activations for the same drawing.


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
    sketch = sketch_payload(tmp_path_factory.mktemp("served"), background, [layer], composite)
    with ModelCalls(shipped_model) as calls:
        label, answer, value = client.predict(sketch, api_name="/update")[:3]
    drawing = {"background": np.asarray(background), "layers": [np.asarray(layer)],
               "composite": np.asarray(composite)}  # what the Sketchpad (numpy, RGBA) hands over
    prepared = prepare(drawing)
    return SimpleNamespace(label=label, answer=answer, value=value, maps=payload.decode(value), calls=calls,
                           prepared=prepared, features=extract(shipped_model, prepared.tensor))


def test_the_page_runs_the_model_once_per_update(served):
    assert (served.calls.model_calls, served.calls.conv1_calls) == (1, 1)


def test_served_label_is_the_models_answer(served, shipped_model):
    check_probabilities(served.label, 7)
    expected = confidence.answer(shipped_model, served.features.logits).probabilities
    np.testing.assert_allclose(table(served.label), expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(served.value["probabilities"], expected, rtol=0, atol=1e-9)
    assert served.value["digit"] == 7 and served.value["ranked"] == served.features.ranked()


def table(result: dict) -> list[float]:
    """The ten confidences of a served label, in digit order."""
    got = {c["label"]: c["confidence"] for c in result["confidences"]}
    assert sorted(got) == [str(d) for d in range(10)]
    return [got[str(d)] for d in range(10)]


def test_served_value_is_the_models_activations_bit_for_bit(served):
    """What the browser draws from: the network input, every layer, the kept cells and the
    evidence maps, exactly (float32) as the model computed them for this drawing."""
    f, m = served.features, served.maps
    np.testing.assert_array_equal(m["input"], served.prepared.image)
    for layer in inspector.LAYERS:
        np.testing.assert_array_equal(m[layer], inspector.layer_map(f, layer).numpy(), err_msg=layer)
    for block, pool in ((f.conv1, "pool1"), (f.conv2, "pool2")):  # the kept cell of each window, as a place
        c, h, w = block.kept.shape
        won = np.zeros((c, h, w), bool)
        places = m["kept"][pool]
        rows, cols = np.meshgrid(np.arange(h // 2), np.arange(w // 2), indexing="ij")
        for ch in range(c):
            won[ch, 2 * rows + places[ch] // 2, 2 * cols + places[ch] % 2] = True
        np.testing.assert_array_equal(won, block.kept.numpy(), err_msg=pool)


def test_served_evidence_maps_are_the_per_position_sums(served, shipped_model):
    pooled = served.features.conv2.after.numpy().astype(np.float64)
    weight = shipped_model.out.weight.detach().numpy().astype(np.float64).reshape(10, 32, 7, 7)
    expected = (weight * pooled[None]).sum(1)  # (10, 7, 7), an independent float64 sum
    np.testing.assert_allclose(served.maps["evidence"], expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(served.maps["evidence"].sum((1, 2)) + shipped_model.out.bias.detach().numpy(),
                               served.features.logits.numpy(), rtol=0, atol=1e-4)


def test_served_value_opens_the_inspector_on_the_strongest_vote_and_fits_the_budget(served, shipped_model):
    assert served.value["default"] == list(inspector.strongest_vote(shipped_model, served.features))
    assert served.value["pinned"] is None
    assert len(json.dumps(served.value)) <= 60_000  # the budget per stroke on the wire


def served_filters(client) -> dict:
    """conv1's filters as the page serves them: the value of the #filters component (drawn by
    cnn/web/filters.js) and the colour scale it is drawn on, from the page's config."""
    found = [c["props"] for c in client.config["components"] if c["props"].get("elem_id") == "filters"]
    assert len(found) == 1 and found[0]["value"], found
    return found[0]


def test_served_filters_are_conv1s_weights_on_the_weight_scale(client, shipped_model):
    """The page's filters value is conv1's weights, float32 bit for bit (the drawn colours:
    tests/test_browser.py::expect_filters), and it comes with the blue-white-red scale."""
    import base64

    props = served_filters(client)
    value = props["value"]
    weights = np.frombuffer(base64.b64decode(value["data"]), "<f4").reshape(value["shape"])
    np.testing.assert_array_equal(weights, shipped_model.conv1[0].weight.detach().numpy())
    np.testing.assert_array_equal(np.asarray(props["props"]["colours"]), render.WEIGHT_SCALE)


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
    assert out[2]["digit"] == 7 and out[3].shape == (28, 28)


@pytest.mark.parametrize("value", [None, "blank"], ids=["none", "blank"])
def test_blank_input_gives_the_empty_page(shipped_model, value):
    value = blank() if value == "blank" else value
    assert app.update(shipped_model, value) == (app.EMPTY, explain.answer(None), None, None)
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


def test_examples_are_the_mnist_test_digits_their_names_say_and_cover_every_digit():
    """Each file is pixel for pixel the MNIST test image at the index in its name (as a drawing:
    black ink on white), with that image's label; together they hold every digit once."""
    from cnn import data

    test = data.load(train=False)
    for path in EXAMPLES:
        _, _, index, _, digit = path.stem.split("_")
        np.testing.assert_array_equal(255 - np.asarray(Image.open(path).convert("L")),
                                      test.images[int(index)].numpy(), err_msg=path.name)
        assert int(test.labels[int(index)]) == int(digit), path.name
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


# ---------------------------------------------------------------- the notice

def test_a_link_cannot_put_markup_into_the_page(shipped_model):
    """A shared link's unknown network (or any refused value) is quoted in the notice as text:
    ``<style>`` would hide the page, ``<a href>`` would add a foreign link."""
    from cnn import link, replay

    good = link.encode(prepare(str(EXAMPLES[0])).image)
    for hostile in ("<style>*{display:none}", "<a href=//x.example>here", '"><img src=x onerror=alert(1)>'):
        out = app.open_link(shipped_model, SimpleNamespace(query_params={link.PARAM: good, link.NETWORK_PARAM: hostile}),
                            {replay.SHIPPED: (shipped_model, None)})
        said = out[6]
        assert "Unknown network" in said and said.startswith("<p>") and said.endswith("</p>"), said
        inner = said[len("<p>"):-len("</p>")]
        assert "<" not in inner and ">" not in inner and "&lt;" in inner, said  # the quote is there, as text


def test_a_stroke_the_server_never_got_says_so_and_the_next_drawing_clears_it(shipped_model):
    """The session holds no drawing (its images were refused on arrival or dropped since): the
    page keeps its maps but says the answer is not for the pad; an example or a stroke clears it."""
    class Pad:
        value = None

        def latest(self):
            return self.value

    pad = Pad()
    out = app.stroke(shipped_model, pad)
    assert out[:5] == (gr_skip(),) * 5 and "did not reach the network" in out[5] and "Clear" in out[5], out
    pad.value = str(EXAMPLES[0])
    out = app.stroke(shipped_model, pad)
    assert "7" in out[1] and out[2]["probabilities"] and out[-1] == ""
    shown = app.example(shipped_model, 1)
    assert len(shown) == 7 and "2" in shown[1] and shown[-1] == ""  # a bad link's notice goes too


def gr_skip():
    import gradio as gr

    return gr.skip()
