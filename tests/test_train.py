import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import train
from cnn import data, weights
from cnn.model import CNN

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("recipe, precision", [("seed", "fp32"), ("fast", "bf16")])
def test_dry_run_training_lowers_the_loss(recipe, precision):
    split = data.load(train=True)
    probe = torch.arange(1000)
    torch.manual_seed(1)
    model = CNN().to(memory_format=torch.channels_last)  # as train.main lays it out

    def loss():
        model.eval()
        with torch.no_grad():
            x, y = split.batch(probe)
            return F.cross_entropy(model(x), y).item()

    hp = dict(train.RECIPES[recipe], precision=precision)  # bf16 runs (emulated) on any CPU
    opt, sched = train.make_optimizer(model, hp, steps=train.DRY_RUN_BATCHES)
    before = loss()
    train.train(model, split, opt, sched, hp, "cpu", torch.Generator().manual_seed(1), 1,
                max_batches=train.DRY_RUN_BATCHES)
    assert loss() < 0.8 * before
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast leaves weights fp32


def test_augmented_batches_stay_in_range_and_change_the_digits():
    x, _ = data.load(train=False).batch(torch.arange(64))
    from cnn.augment import augment
    y = augment(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    assert (y - x).abs().mean() > 0.01


def test_bf16_falls_back_to_fp32_without_bf16_hardware(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert train.pick_precision("bf16", torch.device("cpu")) == "fp32"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert train.pick_precision("bf16", torch.device("cpu")) == "bf16"
    assert train.pick_precision("fp32", torch.device("cpu")) == "fp32"


def run_train(*args, **kw):
    return subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True, **kw)


def test_dry_run_cli_writes_loadable_weights_and_card(tmp_path):
    out = tmp_path / "w" / "cnn.pt"
    proc = run_train("--recipe", "fast", "--dry-run", "--device", "cpu", "--out", str(out), timeout=300)
    assert proc.returncode == 0, proc.stderr
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["dry_run"] is True and card["recipe"] == "fast"
    assert card["sha256"] == weights.sha256_file(out)
    assert {"hyperparameters", "epochs", "seed", "test_accuracy", "test_accuracy_first2000",
            "train_seconds", "device", "torch_version"} <= card.keys()
    # the card says which precision really ran: bf16 only where this CPU has bf16 matrix units
    assert card["hyperparameters"]["precision"] == train.pick_precision("bf16", torch.device("cpu"))
    weights.load(out)


def test_dry_run_without_out_leaves_shipped_weights_alone():
    before = weights.sha256_file(weights.DEFAULT_WEIGHTS)
    proc = run_train("--recipe", "seed", "--dry-run", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "not written" in proc.stdout
    assert weights.sha256_file(weights.DEFAULT_WEIGHTS) == before


@pytest.mark.parametrize("args, says", [
    (["--epochs", "0"], "--epochs: must be at least 1, not 0"),
    (["--epochs", "-3"], "--epochs: must be at least 1, not -3"),
    (["--threads", "two"], "--threads: 'two' is not a whole number"),
])
def test_bad_numbers_are_refused_before_anything_runs(args, says):
    """0 epochs would otherwise write an untrained model over the shipped weights."""
    before = weights.sha256_file(weights.DEFAULT_WEIGHTS)
    proc = run_train(*args, timeout=120)
    assert proc.returncode == 2 and says in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert weights.sha256_file(weights.DEFAULT_WEIGHTS) == before


def test_killed_training_run_leaves_previous_weights_intact(tmp_path):
    out = tmp_path / "cnn.pt"
    weights.save(CNN(), out, {"recipe": "previous"})
    before = weights.sha256_file(out)
    proc = subprocess.Popen([sys.executable, "train.py", "--recipe", "seed", "--out", str(out)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    # wait until it is really training, then kill it without warning
    buf = b""
    deadline = time.time() + 120
    while b"batch/s" not in buf and time.time() < deadline:
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:  # it ended on its own: fail below with its output
            break
        buf += chunk
    assert b"batch/s" in buf, buf[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert weights.sha256_file(out) == before
    assert weights.read_card(out)["recipe"] == "previous"
    weights.load(out)


def test_cuda_request_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        assert train.pick_device("cuda").type == "cuda"
    else:
        proc = run_train("--device", "cuda", "--dry-run", timeout=120)
        assert proc.returncode != 0 and "no CUDA device" in proc.stderr
        assert "Traceback" not in proc.stderr
