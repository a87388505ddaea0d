"""The inspector and the evidence map, checked against the model itself: activations, the
arithmetic of every conv cell, pooling's winner, receptive fields by autograd, class votes
and the evidence map summing to the score."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import app
from cnn import inspector
from cnn.errors import InputError
from cnn.features import evidence, extract
from cnn.preprocess import prepare

RNG = np.random.default_rng(0)


@pytest.fixture(scope="module", params=[p for p in app.EXAMPLES if p.stem[-1] in "073"], ids=lambda p: p.stem)
def drawing(request, shipped_model):
    prepared = prepare(str(request.param))
    return prepared, extract(shipped_model, prepared.tensor)


def cells(features, layer, n=12):
    """``n`` random cells of ``layer``, plus its corners (where receptive fields are clipped) and
    its strongest cell (so at least one is non-zero)."""
    m = inspector.layer_map(features, layer)
    c, h, w = m.shape
    out = [(int(RNG.integers(c)), int(RNG.integers(h)), int(RNG.integers(w))) for _ in range(n)]
    out += [(0, 0, 0), (c - 1, h - 1, w - 1), (1, 0, w - 1)]
    out.append(tuple(int(i) for i in np.unravel_index(int(m.argmax()), m.shape)))
    return out


def activations_from_input(model, x):
    """Each named layer's map as a differentiable function of the input (the model's own modules)."""
    c1 = model.conv1[1](model.conv1[0](x))
    p1 = model.conv1[2](c1)
    c2 = model.conv2[1](model.conv2[0](p1))
    return {"conv1": c1, "pool1": p1, "conv2": c2, "pool2": model.conv2[2](c2)}


@pytest.mark.parametrize("layer", inspector.LAYERS)
def test_values_and_arithmetic_match_the_model(shipped_model, drawing, layer):
    prepared, f = drawing
    with torch.inference_mode():  # the model's modules run here, not the inspector's lookup
        model_map = activations_from_input(shipped_model, prepared.tensor)[layer][0]
    for c, r, q in cells(f, layer):
        got = inspector.inspect(shipped_model, f, layer, c, r, q)
        assert (got["layer"], got["channel"], got["row"], got["col"]) == (layer, c, r, q)
        assert got["value"] == pytest.approx(float(model_map[c, r, q]), abs=1e-6)
        if layer.startswith("conv"):
            terms = np.array(got["products"] if layer == "conv1" else got["channel_terms"])
            assert terms.shape == ((5, 5) if layer == "conv1" else (16,))
            assert terms.sum() + got["bias"] == pytest.approx(got["pre_activation"], abs=1e-5)
            assert max(got["pre_activation"], 0.0) == pytest.approx(got["value"], abs=1e-5)  # ReLU
            if layer == "conv1":
                np.testing.assert_allclose(np.array(got["patch"]) * np.array(got["weights"]), terms, atol=1e-7)
        else:
            window = np.array(got["window"])
            assert window.shape == (2, 2) and window.max() == got["value"]
            kr, kc = got["kept"]
            top, left = got["window_origin"]
            assert window[kr - top, kc - left] == got["value"]  # the winner holds the maximum
            block = f.conv1 if layer == "pool1" else f.conv2
            assert bool(block.kept[c, kr, kc])  # ...and is the cell the dots mark
            outer, inner = got["receptive_field"], got["kept_receptive_field"]
            assert outer[0] <= inner[0] and outer[1] <= inner[1] and inner[2] <= outer[2] and inner[3] <= outer[3]


@pytest.mark.parametrize("layer", inspector.LAYERS)
def test_receptive_field_is_where_the_gradient_can_be_nonzero(shipped_model, layer):
    """The box must equal the set of input pixels whose gradient can be non-zero. With every
    weight made positive and a positive input no ReLU is ever off, and a max-pool passes the
    gradient to whichever cell of its window won; over many random inputs every cell wins
    somewhere, so the union of the non-zero gradients is exactly the cell's dependence region."""
    model = app.CNN()
    model.load_state_dict(shipped_model.state_dict())
    with torch.no_grad():
        for p in model.parameters():
            p.abs_().add_(1e-3)
    x = (torch.rand(256, 1, 28, 28, generator=torch.Generator().manual_seed(0)) + 0.5).requires_grad_(True)
    maps = activations_from_input(model, x)
    f = extract(model, x[:1].detach())
    for c, r, q in cells(f, layer, n=4):
        (g,) = torch.autograd.grad(maps[layer][:, c, r, q].sum(), x, retain_graph=True)  # one gradient per input
        rows, cols = (g[:, 0] != 0).any(0).nonzero(as_tuple=True)
        top, left, bottom, right = inspector.receptive_field(model, layer, r, q)
        assert [int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1] == [top, left, bottom, right]
        assert len(rows) == (bottom - top) * (right - left)  # the whole box, no holes


def test_receptive_field_sizes_follow_the_modules(shipped_model):
    """Away from the border: conv1 5x5, after pool1 6x6, conv2 14x14, after pool2 16x16."""
    sizes = {}
    for layer, (r, q) in {"conv1": (10, 10), "pool1": (5, 5), "conv2": (6, 6), "pool2": (3, 3)}.items():
        t, left, b, right = inspector.receptive_field(shipped_model, layer, r, q)
        sizes[layer] = (b - t, right - left)
    assert sizes == {"conv1": (5, 5), "pool1": (6, 6), "conv2": (14, 14), "pool2": (16, 16)}
    assert inspector.receptive_field(shipped_model, "conv2", 0, 13) == [0, 20, 8, 28]  # clipped: rows -6..7, cols 20..33


def test_class_terms_over_all_pooled_cells_give_the_logits(shipped_model, drawing):
    prepared, f = drawing
    total = shipped_model.out.bias.detach().double().clone()
    for c in range(32):
        for r in range(7):
            for q in range(7):
                total += torch.tensor(inspector.inspect(shipped_model, f, "pool2", c, r, q)["class_terms"]).double()
    with torch.inference_mode():
        logits = shipped_model(prepared.tensor)[0].double()
    torch.testing.assert_close(total, logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize("digit", range(10))
def test_evidence_map_sums_to_the_score(shipped_model, drawing, digit):
    prepared, f = drawing
    m = evidence(shipped_model, f, digit)
    assert m.shape == (7, 7)
    with torch.inference_mode():
        logit = float(shipped_model(prepared.tensor)[0, digit])
    assert float(m.double().sum()) + float(shipped_model.out.bias[digit].detach()) == pytest.approx(logit, abs=1e-4)


@pytest.mark.parametrize("args, says", [
    (("conv3", 0, 0, 0), "Unknown layer 'conv3'"),
    (("conv1", 16, 0, 0), "channel must be a whole number from 0 to 15"),
    (("pool2", 0, 7, 0), "row must be a whole number from 0 to 6"),
    (("pool1", 0, 0, -1), "col must be a whole number from 0 to 13"),
    (("conv2", 0, 1.5, 0), "row must be a whole number"),
])
def test_a_cell_that_does_not_exist_is_refused_with_a_sentence(shipped_model, drawing, args, says):
    with pytest.raises(InputError, match=says):
        inspector.inspect(shipped_model, drawing[1], *args)


@pytest.mark.parametrize("args", [("x" * 5000, 0, 0, 0), ("conv1", 1e300, 0, 0), ("conv1", 0, -10 ** 400, 0)])
def test_a_refusal_quotes_what_was_sent_only_briefly(shipped_model, drawing, args):
    with pytest.raises(InputError) as refused:
        inspector.inspect(shipped_model, drawing[1], *args)
    assert len(str(refused.value)) < 160, str(refused.value)
    with pytest.raises(InputError) as refused:
        inspector.evidence(shipped_model, drawing[1], args[1] if args[1] else "9" * 5000)
    assert len(str(refused.value)) < 160, str(refused.value)


# ---------------------------------------------------------------- through gradio_client

@pytest.fixture(scope="module")
def client(served_app):
    from gradio_client import Client

    return Client(served_app, verbose=False)


@pytest.fixture(scope="module")
def seven(tmp_path_factory):
    from test_app import drawn_seven, sketch_payload

    background, layer, composite = drawn_seven()
    value = {"background": np.asarray(background), "layers": [np.asarray(layer)], "composite": np.asarray(composite)}
    return sketch_payload(tmp_path_factory.mktemp("seven"), background, [layer], composite), value


def test_inspect_and_evidence_endpoints_are_the_models_numbers(client, shipped_model, seven):
    payload, value = seven
    x = prepare(value).tensor
    f = extract(shipped_model, x)
    with torch.inference_mode():
        maps = activations_from_input(shipped_model, x)  # the model's own modules, not the inspector's lookup
    def strongest(layer):  # conv2's and pool2's are mostly zero: compare where something is
        return tuple(int(i) for i in np.unravel_index(int(maps[layer][0].argmax()), maps[layer][0].shape))

    for layer, cell in [("conv1", (3, 14, 9)), ("pool1", (7, 6, 5)), ("conv2", strongest("conv2")),
                        ("pool2", strongest("pool2"))]:
        got = client.predict(payload, layer, *cell, api_name="/inspect")
        want = inspector.inspect(shipped_model, f, layer, *cell)
        assert got.keys() == want.keys()
        assert got["value"] == pytest.approx(float(maps[layer][0][cell]), abs=1e-6)
        assert got["receptive_field"] == want["receptive_field"]
    got = client.predict(payload, None, api_name="/evidence")
    assert got["digit"] == 7 and np.array(got["map"]).shape == (7, 7)
    assert sum(map(sum, got["map"])) + got["bias"] == pytest.approx(got["logit"], abs=1e-4)
    assert client.predict(payload, 3, api_name="/evidence")["digit"] == 3
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert [p["parameter_name"] for p in api["/inspect"]["parameters"]][1:] == ["layer", "channel", "row", "col",
                                                                                "network"]


@pytest.mark.parametrize("args, says", [
    (("conv9", 0, 0, 0), "Unknown layer"), (("pool2", 32, 0, 0), "channel must be a whole number from 0 to 31"),
    (("conv1", 0, 28, 0), "row must be"), (("pool1", 0, 0, 2.5), "col must be a whole number"),
])
def test_a_bad_cell_is_a_sentence_through_the_api(client, seven, args, says):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=says):
        client.predict(seven[0], *args, api_name="/inspect")


def test_a_bad_digit_and_a_blank_sketch(client, seven):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="digit must be a whole number from 0 to 9"):
        client.predict(seven[0], 12, api_name="/evidence")
    assert client.predict(None, "conv1", 0, 0, 0, api_name="/inspect") == {"label": app.EMPTY}
    assert client.predict(None, None, api_name="/evidence") == {"label": app.EMPTY}


def test_the_inspector_never_prints_minus_zero():
    """A small negative value that rounds to zero is "0.000", not "−0.000"; other values keep
    their true minus sign and 3 decimals."""
    from cnn.explain import num

    assert [num(v) for v in (-0.0001, -0.0, 0.0, -0.0006, -1.5, 2.25)] == \
        ["0.000", "0.000", "0.000", "−0.001", "−1.500", "2.250"]
