import json
import os

import pytest
import torch

from cnn import confidence, data, weights
from cnn.errors import CalibrationError, WeightsError
from cnn.evaluate import test as evaluate
from cnn.model import CNN

CARD_KEYS = {"recipe", "hyperparameters", "epochs", "seed", "test_accuracy", "test_accuracy_first2000",
             "train_seconds", "device", "torch_version", "sha256", "confidence"}
# the calibration every card carries (cnn/confidence.py); these values are arbitrary but valid
CALIBRATION = {"confidence": {"temperature": 1.5, "score": "msp", "threshold": 0.5}}


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = CNN()
    path = tmp_path / "cnn.pt"
    weights.save(model, path, {"recipe": "test", **CALIBRATION})
    return model, path


def test_save_then_load_round_trips(saved):
    model, path = saved
    loaded = weights.load(path)
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(loaded(x), model.eval()(x))
    assert weights.read_card(path)["sha256"] == weights.sha256_file(path)
    assert confidence.rule_of(loaded) == confidence.Rule(1.5, "msp", 0.5)  # the card's calibration comes along


@pytest.mark.parametrize("calibration", [None, {"temperature": 1.5, "score": "msp"},
                                         {"temperature": -1, "score": "msp", "threshold": 0.5}])
def test_a_card_without_its_calibration_is_refused_with_the_fix(tmp_path, calibration):
    """Weights whose card (hash intact) has no temperature/threshold, or a broken one, do not load."""
    path = tmp_path / "cnn.pt"
    weights.save(CNN(), path, {"recipe": "old"} if calibration is None else {"confidence": calibration})
    with pytest.raises(CalibrationError, match=r"^Weights card .*cnn\.json has .*calibration.*python train\.py"):
        weights.load(path)


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "missing", "no_card", "bad_card"])
def test_damaged_weights_are_refused_with_the_fix(saved, damage):
    _, path = saved
    blob = path.read_bytes()
    if damage == "flip":
        path.write_bytes(blob[:500] + bytes([blob[500] ^ 1]) + blob[501:])
    elif damage == "truncate":
        path.write_bytes(blob[: len(blob) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "missing":
        path.unlink()
    elif damage == "no_card":
        weights.card_path(path).unlink()
    elif damage == "bad_card":
        weights.card_path(path).write_text("{not json")
    with pytest.raises(WeightsError, match=r"python train\.py"):
        weights.load(path)


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.parametrize("payload", ["pickle", "garbage", "wrong_shapes"])
def test_hash_matching_but_unsafe_or_wrong_files_are_refused(tmp_path, payload, capsys):
    """Even with a card that matches (an attacker can rewrite both), loading stays safe."""
    path = tmp_path / "cnn.pt"
    if payload == "pickle":
        torch.save({"x": Evil()}, path)
    elif payload == "garbage":
        path.write_bytes(b"PK\x03\x04 definitely not a zip")
    else:
        torch.save({"out.weight": torch.zeros(3, 3)}, path)
    weights.card_path(path).write_text(json.dumps({"sha256": weights.sha256_file(path)}))
    with pytest.raises(WeightsError, match=r"cannot be loaded.*python train\.py"):
        weights.load(path)
    assert "pwned" not in capsys.readouterr().out


def test_save_interrupted_before_the_commit_leaves_previous_weights_and_no_debris(saved, monkeypatch):
    model, path = saved
    before = weights.sha256_file(path)
    calls = []

    def dies_writing_the_card(p, data, real=weights._write_temp):
        calls.append(p)
        if len(calls) == 2:  # the weights' temp file is written; the card's is being written
            raise KeyboardInterrupt  # like Ctrl-C or a crash
        return real(p, data)

    monkeypatch.setattr(weights, "_write_temp", dies_writing_the_card)
    with pytest.raises(KeyboardInterrupt):
        weights.save(CNN(), path, {"recipe": "new"})
    monkeypatch.undo()
    assert weights.sha256_file(path) == before
    assert weights.read_card(path)["recipe"] == "test"
    weights.load(path)  # still loads
    assert sorted(p.name for p in path.parent.iterdir()) == ["cnn.json", "cnn.pt"]  # no temp left behind


def test_save_interrupted_between_its_two_renames_is_finished_by_load(saved, monkeypatch):
    _, path = saved
    new = CNN()
    replaced = []

    def dies_before_the_card(src, dst, real=os.replace):
        if replaced:  # the weights are in place (the commit point); the card is not
            raise KeyboardInterrupt
        replaced.append(dst)
        real(src, dst)

    monkeypatch.setattr(weights.os, "replace", dies_before_the_card)
    with pytest.raises(KeyboardInterrupt):
        weights.save(new, path, {"recipe": "new", **CALIBRATION})
    monkeypatch.undo()
    assert weights.read_card(path)["recipe"] == "test"  # the old card beside the new weights...
    loaded = weights.load(path)  # ...and load finishes the commit instead of refusing
    assert weights.read_card(path)["recipe"] == "new"
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(loaded(x), new.eval()(x))
    assert sorted(p.name for p in path.parent.iterdir()) == ["cnn.json", "cnn.pt"]


def test_a_stale_temp_card_is_not_taken_for_tampered_weights(saved):
    """Only a pending card whose hash is that of the weights in place may complete a save."""
    _, path = saved
    blob = path.read_bytes()
    path.write_bytes(blob[:-10])
    forged = weights.card_path(path).with_name(".cnn.json.x.tmp")
    forged.write_text(json.dumps({"sha256": "0" * 64, "recipe": "forged"}))
    with pytest.raises(WeightsError, match=r"does not match its card"):
        weights.load(path)
    assert forged.exists()


def test_shipped_weights_and_card():
    card = weights.read_card()
    assert CARD_KEYS <= card.keys()
    assert card["recipe"] == "best" and not card.get("dry_run")
    assert card["sha256"] == weights.sha256_file(weights.DEFAULT_WEIGHTS)


def test_shipped_weights_score_at_least_99_4_on_the_full_test_set():
    hits = evaluate(weights.load(), data.load(train=False))
    assert len(hits) == 10_000
    accuracy = hits.float().mean().item()
    assert accuracy >= 0.994
    # the card reports what the weights really score
    assert abs(weights.read_card()["test_accuracy"] - accuracy) < 1e-4
