"""Issue 21, "where the filters came from": the tutorial's training replayed as shipped snapshots.

Each snapshot in weights/replay loads strictly into the tutorial CNN and scores the test accuracy
its card records; the last one is, bit for bit, what ``train.py --recipe seed`` trains (run here
again, without snapshots: taking them changes nothing).
"""
from __future__ import annotations

import pytest
import torch

import train
from cnn import data, replay
from cnn.evaluate import test as hits_of


def test_every_snapshot_loads_strictly_and_scores_its_recorded_accuracy():
    import os

    networks = replay.load()
    assert list(networks) == [replay.name(s) for s in replay.STEPS]
    split = data.load(train=False)
    accuracies = []
    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)  # (the served app's tests leave 1)
    try:
        scored = {name: hits_of(model, split, "cpu") for name, (model, _) in networks.items()}
    finally:
        torch.set_num_threads(threads)
    for name, (model, card) in networks.items():
        hits = scored[name]
        assert round(hits.float().mean().item(), 4) == card["test_accuracy"], name
        assert round(hits[:2000].float().mean().item(), 4) == card["test_accuracy_first2000"], name
        assert card["calibrated"] is False and card["step"] == int(name.split("-")[1])
        accuracies.append(card["test_accuracy"])
    assert accuracies[0] < 0.2 and accuracies[-1] > 0.97  # from a random start to the tutorial's ~98 %
    # "1.5 MB in all" (README): every file the snapshots ship with, weights, cards and patches
    files = [f for f in replay.DEFAULT_FOLDER.rglob("*") if f.is_file()]
    kinds = {f.name.split(".", 1)[1] for f in files}
    assert kinds >= {"pt", "json", "patches.npz"} and len(files) >= 3 * len(replay.STEPS), sorted(kinds)
    total = sum(f.stat().st_size for f in files)
    assert total <= 1_500_000, total


def test_the_last_step_is_the_seed_recipes_final_weights_bit_for_bit(tmp_path):
    threads = torch.get_num_threads()
    try:
        assert train.main(["--recipe", "seed", "--out", str(tmp_path / "seed.pt")]) == 0
    finally:
        torch.set_num_threads(threads)
    seed = torch.load(tmp_path / "seed.pt", weights_only=True)
    last = torch.load(replay.file_for(replay.DEFAULT_FOLDER, replay.STEPS[-1]), weights_only=True)
    assert list(seed) == list(last)
    for key in seed:
        assert torch.equal(seed[key], last[key]), key


# ---------------------------------------------------------------- the page and the API

def reference_probabilities(model, image) -> torch.Tensor:
    """The snapshot's plain softmax (temperature 1), its logits from its state dict alone
    (``test_words.reference``: the tutorial CNN's arithmetic redone in float64)."""
    from test_words import reference

    x = torch.from_numpy(image).float().div(255)[None, None]
    return reference(model, x)["logits"].softmax(-1).float()


def test_the_picker_puts_the_drawing_through_the_snapshot_uncalibrated():
    import app
    from cnn.preprocess import prepare

    networks = replay.load()
    image = prepare(str(app.EXAMPLES[0])).image
    label, answer, value, filters, note, name = app.switch(networks, "step-50", image, (0, 0))
    model = networks["step-50"][0]
    want = reference_probabilities(model, image)
    got = [c["confidence"] for c in sorted(label["value"]["confidences"], key=lambda c: int(c["label"]))] \
        if isinstance(label["value"], dict) and "confidences" in label["value"] else \
        [label["value"][str(d)] for d in range(10)]
    assert torch.allclose(torch.tensor(got), want, atol=1e-6)
    assert label["label"].endswith("(uncalibrated softmax)") and "uncalibrated" in answer
    assert value["network"] == name == "step-50" and value["calibrated"] is False and value["weights"]
    assert "Uncalibrated" in note and "83.3%" in note  # the card's accuracy, beside the picker
    import base64

    import numpy as np

    drawn = np.frombuffer(base64.b64decode(filters["data"]), "<f4").reshape(filters["shape"])  # what the browser draws
    np.testing.assert_array_equal(drawn, model.conv1[0].weight.detach().numpy())  # the snapshot's own filters


def test_a_link_with_a_network_reopens_the_same_page():
    import app
    from cnn.preprocess import prepare

    networks = replay.load()
    image = prepare(str(app.EXAMPLES[1])).image
    query = app.make_link(image, "", (1, 0), "step-200")
    assert "network=step-200" in query and "move=1,0" in query
    opened = app.open_query(networks["step-200"][0], "?" + query, {**networks, replay.SHIPPED: (None, None)})
    assert opened[-1] == opened[7] == "step-200" and opened[2]["network"] == "step-200" and opened[4] == (1, 0)
    made = app.switch(networks, "step-200", image, (1, 0))
    assert opened[2]["probabilities"] == made[2]["probabilities"] and opened[1] == made[1]
    # the link does what the picker does, in its one event: the value carries the snapshot's weights
    # and patches (the browser reads the drawing with them from the first value on, never with the
    # shipped weights it holds), and the filters and the note are the snapshot's
    model = networks["step-200"][0]
    assert opened[2]["weights"] == app.payload.weights(model) and opened[2]["patches"] is model.looks_for
    assert opened[2]["patches"] is not None
    assert opened[8] == made[3] == app.render.filters(model.conv1[0].weight) and opened[9] == made[4]


def test_the_api_takes_an_optional_network_and_a_bad_one_is_one_sentence(served_app):
    from gradio_client import Client, handle_file

    import app
    from cnn.preprocess import prepare

    client = Client(served_app, verbose=False)
    path = app.EXAMPLES[0]
    value = {"background": handle_file(str(path)), "layers": [], "composite": handle_file(str(path))}
    got = client.predict(value, "step-100", api_name="/predict")
    want = reference_probabilities(replay.load()["step-100"][0], prepare(str(path)).image)
    conf = {c["label"]: c["confidence"] for c in got["confidences"]}
    assert torch.allclose(torch.tensor([conf[str(d)] for d in range(10)]), want, atol=1e-6)
    cell = client.predict(value, "conv1", 3, 10, 12, "step-100", api_name="/inspect")
    shipped = client.predict(value, "conv1", 3, 10, 12, api_name="/inspect")  # no network: the shipped weights
    assert cell["weights"] != shipped["weights"]
    # /evidence with the snapshot: its own per-position votes, from its weights alone (test_words.reference)
    from test_words import reference

    ref = reference(replay.load()["step-100"][0], prepare(str(path)).tensor)
    for digit in (int(ref["logits"].argmax()), 3):
        got = client.predict(value, digit, "step-100", api_name="/evidence")
        expected = (ref["W"][digit] * ref["pool2"]).sum(dim=0)  # (7, 7): position (i, j) sums its 32 channels
        assert got["digit"] == digit and torch.allclose(torch.tensor(got["map"], dtype=torch.float64), expected, atol=1e-4)
        assert got["logit"] == pytest.approx(float(ref["logits"][digit]), abs=1e-4)
        assert got["bias"] == pytest.approx(float(ref["bias"][digit]), abs=1e-6)
        shipped = client.predict(value, digit, api_name="/evidence")  # no network: the shipped weights' map
        assert not torch.allclose(torch.tensor(shipped["map"], dtype=torch.float64), expected, atol=1e-2), digit
    for bad in ("step-7", "../cnn.pt", "x" * 5000):
        try:
            client.predict(value, bad, api_name="/predict")
        except Exception as e:  # gradio_client's AppError carries the sentence
            said = str(e)
        else:
            raise AssertionError(f"{bad!r} was accepted")
        assert "Unknown network" in said and "choose shipped" in said and len(said) < 300, said
