"""Issue 20: the words and numbers the visitor reads, parsed from what the page serves and compared
with an independent computation from the model's weights (torch.nn.functional on the state dict,
the card's temperature read from weights/cnn.json), never with the function that made them.

The page's outputs come from ``app.update`` for the ten MNIST examples (what a stroke, a link and an
example click all return: label, answer line, inspector, evidence words); ``/evidence`` is called
through ``gradio_client`` as an API user would.
"""
from __future__ import annotations

import html
import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import app
from cnn import weights
from cnn.preprocess import prepare

EXAMPLES = app.EXAMPLES


def reference(model, x: torch.Tensor) -> dict:
    """The tutorial CNN's arithmetic from its weights alone: pool2 (32, 7, 7), logits (10,),
    per-class votes of every pool2 cell (10, 32, 7, 7), calibrated probabilities (10,)."""
    sd = {k: v.double() for k, v in model.state_dict().items()}
    w = [k for k in sd if k.endswith("weight")]
    b = [k for k in sd if k.endswith("bias")]
    assert len(w) == len(b) == 3, list(sd)
    h = F.max_pool2d(F.relu(F.conv2d(x.double(), sd[w[0]], sd[b[0]], padding=2)), 2)
    pool2 = F.max_pool2d(F.relu(F.conv2d(h, sd[w[1]], sd[b[1]], padding=2)), 2)[0]
    W = sd[w[2]].view(10, 32, 7, 7)
    votes = W * pool2
    logits = votes.sum(dim=(1, 2, 3)) + sd[b[2]]
    card = json.loads((weights.DEFAULT_WEIGHTS.with_suffix(".json")).read_text())
    probs = (logits / card["confidence"]["temperature"]).softmax(-1)
    return {"pool2": pool2, "logits": logits, "votes": votes, "W": W, "bias": sd[b[2]], "probs": probs}


@pytest.fixture(scope="module")
def pages(shipped_model):
    out = []
    for path in EXAMPLES:
        page = app.update(shipped_model, str(path))
        x = prepare(str(path)).tensor
        out.append((path, page, reference(shipped_model, x)))
    return out


def text(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", fragment)).replace("\u2212", "-")


def test_the_answer_line_names_the_labels_digit_with_its_calibrated_probability(pages):
    for path, page, ref in pages:
        label, answer = page[0], text(page[1])
        d = int(ref["probs"].argmax())
        m = re.fullmatch(r"The network reads (\d) \((\d+\.\d)% sure\)", answer.strip())
        assert m, (path.name, answer)
        assert "label" not in label, (path.name, label)  # a real digit: the ten bars, no "Not a digit?"
        assert int(m.group(1)) == d == int(max(label, key=label.get)), (path.name, answer, label)
        assert float(m.group(2)) == pytest.approx(100 * float(ref["probs"][d]), abs=0.05 + 1e-9), (path.name, answer)
        assert all(abs(label[str(k)] - float(ref["probs"][k])) < 1e-6 for k in range(10)), (path.name, label)


def test_the_evidence_words_name_the_answer_and_the_runner_up_with_their_logits(pages):
    for path, page, ref in pages:
        words = text(page[2]["words"])
        order = ref["logits"].argsort(descending=True)
        d, e = int(order[0]), int(order[1])
        m = re.search(r"The score for (\d) \((-?\d+\.\d{3})\) is exactly the bias \((-?\d+\.\d{3})\)", words)
        assert m, (path.name, words[:200])
        assert (int(m.group(1)), float(m.group(2)), float(m.group(3))) == (
            d, round(float(ref["logits"][d]), 3), round(float(ref["bias"][d]), 3)), (path.name, m.groups())
        m = re.search(r"why (\d) and not (\d), the runner-up: .*\(scores (-?\d+\.\d{3}) - (-?\d+\.\d{3})\)", words)
        assert m, (path.name, words[-300:])
        assert (int(m.group(1)), int(m.group(2))) == (d, e)
        assert (float(m.group(3)), float(m.group(4))) == (round(float(ref["logits"][d]), 3),
                                                          round(float(ref["logits"][e]), 3))


def _default_cell(page) -> tuple[int, int, int]:
    """The pool2 cell the served value tells the browser to open the inspector on (the heading the
    browser shows with nothing pinned is checked against the same independent arg-max in
    test_browser.py's ``default_cell_and_evidence_picture``, called by
    ``test_every_number_the_inspector_shows_is_inspects_and_every_cell_its_colour``)."""
    layer, *cell = page[2]["default"]
    assert layer == "pool2", page[2]["default"]
    return tuple(cell)


def test_the_inspector_opens_on_the_cell_that_voted_most_for_the_answer(pages):
    """The default cell is the arg-max of the answer's votes W_out[answer] * pool2, computed here,
    and that vote is positive; on at least one example it is not the largest |vote| (so a change
    to the largest magnitude, or the most negative vote, cannot pass)."""
    differs = []
    for path, page, ref in pages:
        c, r, q = _default_cell(page)
        votes = ref["votes"][int(ref["logits"].argmax())]
        best = tuple(int(i) for i in np.unravel_index(int(votes.argmax()), votes.shape))
        assert (c, r, q) == best, (path.name, (c, r, q), best)
        assert float(votes[best]) > 0
        largest = tuple(int(i) for i in np.unravel_index(int(votes.abs().argmax()), votes.shape))
        if largest != best:
            differs.append(path.name)
    assert differs, "no example where the largest |vote| is another cell: the test could not tell them apart"


@pytest.fixture(scope="module")
def client(served_app):
    from gradio_client import Client

    return Client(served_app, verbose=False)


def test_evidence_for_every_digit_is_the_per_position_vote_sum(client, shipped_model):
    """``/evidence`` for each digit of one example: every map[i][j] equals the sum over the 32
    channels of W_out[digit, :, i, j] * pool2[:, i, j], and sum(map) + bias == logit[digit]."""
    from gradio_client import handle_file

    path = next(p for p in EXAMPLES if p.stem.endswith("_2"))
    ref = reference(shipped_model, prepare(str(path)).tensor)
    value = {"background": handle_file(str(path)), "layers": [], "composite": handle_file(str(path))}
    for digit in range(10):
        got = client.predict(value, digit, api_name="/evidence")
        expected = (ref["W"][digit] * ref["pool2"]).sum(dim=0)  # (7, 7)
        assert got["digit"] == digit
        assert np.allclose(np.array(got["map"]), expected.numpy(), atol=1e-4), digit
        assert got["logit"] == pytest.approx(float(ref["logits"][digit]), abs=1e-4)
        assert sum(map(sum, got["map"])) + got["bias"] == pytest.approx(got["logit"], abs=1e-4)
