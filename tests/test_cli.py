"""`python -m cnn predict` and `python -m cnn evaluate` as a user runs them.

The first test runs the command itself (``python -m cnn``, exit status and all); the others call
the same ``cnn.__main__.main`` in this process (a process costs ~4 s of imports): its return value
is the exit status, and an exception escaping it would fail the test as a traceback would."""
import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from cnn import data

ROOT = Path(__file__).resolve().parent.parent


def cli(*args, process: bool = False):
    """(returncode, stdout, stderr) of ``python -m cnn ARGS``: run as a process, or in-process."""
    if process:
        return subprocess.run([sys.executable, "-m", "cnn", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=300)
    from cnn.__main__ import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """A folder of real MNIST test digits saved the way a user would draw them: black on white, large."""
    folder = tmp_path_factory.mktemp("digits")
    split = data.load(train=False)
    labels = {}
    for i in range(10):
        img = Image.fromarray(255 - split.images[i].numpy()).resize((280, 280), Image.BILINEAR)
        path = folder / f"digit{i}.png"
        img.save(path)
        labels[str(path)] = int(split.labels[i])
    return folder, labels


def test_predict_a_folder_prints_one_json_line_per_image(digits):
    folder, labels = digits
    (folder / "notes.md").write_text("not an image, and not picked from a folder")
    proc = cli("predict", str(folder), process=True)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["path"] for r in lines] == sorted(labels)
    for r in lines:
        assert set(r) == {"path", "digit", "confidence", "probabilities", "not_a_digit"}
        assert len(r["probabilities"]) == 10 and abs(sum(r["probabilities"]) - 1) < 1e-4
        assert r["confidence"] == max(r["probabilities"])
        assert r["digit"] == r["probabilities"].index(r["confidence"])
        assert r["not_a_digit"] is False  # real digits are answered
    assert sum(r["digit"] == labels[r["path"]] for r in lines) >= 9


def test_predict_says_not_a_digit_for_a_doodle_and_still_gives_the_probabilities(digits, tmp_path):
    """A non-digit is a successful answer (exit 0), with its ten calibrated probabilities."""
    from cnn import outliers
    from cnn.weights import load

    folder, labels = digits
    doodle = tmp_path / "doodle.png"
    Image.fromarray(outliers.sketch(outliers.HELD_OUT, "doodles", outliers.HELD_OUT_SEED, 0)["composite"]).save(doodle)
    good = sorted(labels)[0]
    proc = cli("predict", str(doodle), good)
    assert proc.returncode == 0, proc.stderr
    doodle_line, digit_line = (json.loads(line) for line in proc.stdout.splitlines())
    assert doodle_line["not_a_digit"] is True and digit_line["not_a_digit"] is False
    assert digit_line["digit"] == labels[good]
    for r in (doodle_line, digit_line):
        assert set(r) == {"path", "digit", "confidence", "probabilities", "not_a_digit"}
        assert abs(sum(r["probabilities"]) - 1) < 1e-4 and r["confidence"] == max(r["probabilities"])
    # the probabilities are the calibrated ones, the page's (not the plain softmax)
    from cnn.preprocess import prepare

    model = load()
    logits = model(prepare(doodle).tensor)[0].detach()
    expected = model.confidence.probabilities(logits)
    assert max(abs(a - b) for a, b in zip(doodle_line["probabilities"], expected.tolist())) < 2e-6


def test_predict_reports_bad_files_and_carries_on(digits, tmp_path):
    folder, labels = digits
    good = sorted(labels)[0]
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    blank = tmp_path / "blank.png"
    Image.new("L", (200, 200), 255).save(blank)
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(Path(good).read_bytes()[:60])
    missing = tmp_path / "nope.png"
    proc = cli("predict", str(text), good, str(blank), str(truncated), str(missing))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["path"] for r in lines] == [str(text), good, str(blank), str(truncated), str(missing)]
    assert lines[1]["digit"] == labels[good]
    for r in lines[:1] + lines[2:]:
        assert set(r) == {"path", "error"} and len(r["error"]) > 10
    assert "no digit" in lines[2]["error"]


def test_predict_with_tampered_weights_says_how_to_fix(digits, tmp_path):
    folder, _ = digits
    bad = tmp_path / "cnn.pt"
    bad.write_bytes(b"junk")
    (tmp_path / "cnn.json").write_text('{"sha256": "0"}')
    proc = cli("predict", str(folder), "--weights", str(bad))
    assert proc.returncode == 2
    assert "python train.py" in proc.stderr and "Traceback" not in proc.stderr


def test_evaluate_prints_accuracy_on_the_full_test_set():
    proc = cli("evaluate")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["n"] == 10_000 and result["accuracy"] >= 0.994
    # the share of test digits the "not a digit" rule answers, and the accuracy on those
    assert 0.99 <= result["answered"] < 1 and result["accuracy_answered"] > result["accuracy"]
