import contextlib
import io
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import train
from cnn import confidence, data, weights
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


def main_in_process(*args: str) -> str:
    """``train.main(args)`` (what ``python train.py`` runs) in this process, its stdout returned;
    torch's thread count put back after (main sets it). A process would add ~4 s of imports;
    ``test_cuda_request_without_cuda_is_a_clear_error`` runs the script itself."""
    threads = torch.get_num_threads()
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            assert train.main(list(args)) == 0
    finally:
        torch.set_num_threads(threads)
    return out.getvalue()


def test_dry_run_writes_loadable_weights_and_card(tmp_path):
    out = tmp_path / "w" / "cnn.pt"
    main_in_process("--recipe", "fast", "--dry-run", "--device", "cpu", "--out", str(out))
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["dry_run"] is True and card["recipe"] == "fast"
    assert card["sha256"] == weights.sha256_file(out)
    assert {"hyperparameters", "epochs", "seed", "test_accuracy", "test_accuracy_first2000",
            "train_seconds", "device", "torch_version", "confidence"} <= card.keys()
    # the card says which precision really ran: bf16 only where this CPU has bf16 matrix units
    assert card["hyperparameters"]["precision"] == ("bf16" if cpu_has_bf16_matrix_units() else "fp32")
    # fast trains on all 60 000 digits, so its calibration digits were seen in training: said so
    assert card["confidence"]["validation_held_out"] is False and card["confidence"]["validation_drawn_digits"] == 0
    assert weights.load(out).confidence.temperature == card["confidence"]["temperature"]


def cpu_has_bf16_matrix_units() -> bool:
    """Whether this CPU has AMX-BF16, as the kernel reports it (not as train.py decides it)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo to tell whether this CPU has bf16 matrix units")
    flags = set()
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            flags |= set(line.split(":", 1)[1].split())
    return "amx_bf16" in flags


def test_best_recipe_dry_run_trains_on_augmented_batches_with_adamw(monkeypatch):
    """``--recipe best`` (the default: the shipped weights' recipe) on what ``--dry-run`` runs of
    it: every one of the 20 batches of 128 goes through the drawing-like augmentation, the
    optimizer is AdamW (wd 1e-4) with OneCycle up to 4e-3. The expected numbers are the README's.
    (Through ``train.main`` this costs 20-35 s more, for the card's calibration and the outlier
    sketches it renders first; the steps below are the ones main takes for the training.)"""
    assert train.parse_args(["--dry-run"]).recipe == "best"
    hp = dict(train.RECIPES["best"])
    assert (hp["batch_size"], hp["lr"], hp["weight_decay"], hp["schedule"], hp["augment"]) == \
        (128, 4e-3, 1e-4, "onecycle", True)
    augmented = []
    real_augment = train.augment

    def augment(x, g):
        augmented.append(tuple(x.shape))
        return real_augment(x, g)

    monkeypatch.setattr(train, "augment", augment)
    torch.manual_seed(train.SEED)
    model = CNN().to(memory_format=torch.channels_last)  # as train.main lays it out
    opt, sched = train.make_optimizer(model, hp, steps=train.DRY_RUN_BATCHES)
    assert type(opt) is torch.optim.AdamW and isinstance(sched, torch.optim.lr_scheduler.OneCycleLR)
    assert opt.param_groups[0]["weight_decay"] == 1e-4 and opt.param_groups[0]["max_lr"] == 4e-3
    start = [p.detach().clone() for p in model.parameters()]
    train.train(model, data.load(train=True), opt, sched, hp, "cpu", torch.Generator().manual_seed(train.SEED), 1,
                max_batches=train.DRY_RUN_BATCHES)
    assert augmented == [(128, 1, 28, 28)] * train.DRY_RUN_BATCHES
    assert all(not torch.equal(a, b) for a, b in zip(start, model.parameters()))  # every parameter trained


def test_best_dry_run_renders_sketches_fits_its_calibration_and_writes_nothing_without_out(monkeypatch):
    """``python train.py --dry-run`` (the default recipe, best) end to end: the sketch banks (100
    drawn digits, 200 non-digits), 20 batches, then the calibration on the 5000 held-out digits,
    the same digits drawn and the non-digit sketches; without --out the shipped weights stay."""
    before = weights.sha256_file(weights.DEFAULT_WEIGHTS)
    fitted = []
    real = train.calibrate
    monkeypatch.setattr(train, "calibrate", lambda *a: fitted.append(real(*a)) or fitted[-1])
    stdout = main_in_process("--dry-run")
    assert "rendered 100 drawn digits and 200 non-digit sketches" in stdout and "not written" in stdout
    assert weights.sha256_file(weights.DEFAULT_WEIGHTS) == before
    entry, = fitted
    assert (entry["validation_digits"], entry["validation_drawn_digits"], entry["validation_non_digits"]) == \
        (train.VALIDATION, train.DRY_RUN_SKETCHES // 2, train.DRY_RUN_SKETCHES)
    assert entry["validation_held_out"] is True and set(entry["validation_non_digits_refused"]) == set(confidence.SCORES)
    rule = confidence.Rule.from_card({"confidence": entry})  # what the card would carry loads
    assert entry["validation_answered"] >= 0.99 and entry["validation_drawn_answered"] >= 0.99
    assert entry["validation_non_digits_refused"][rule.score] == max(entry["validation_non_digits_refused"].values())


@pytest.mark.parametrize("args, says", [
    (["--epochs", "0"], "--epochs: must be at least 1, not 0"),
    (["--epochs", "-3"], "--epochs: must be at least 1, not -3"),
    (["--threads", "two"], "--threads: 'two' is not a whole number"),
])
def test_bad_numbers_are_refused_before_anything_runs(args, says, capsys, monkeypatch):
    """0 epochs would otherwise write an untrained model over the shipped weights. In-process
    (``train.main``, what ``python train.py`` runs; a process costs ~4 s of imports): argparse's
    exit status 2 and its one-line usage error, before any data is read."""
    before = weights.sha256_file(weights.DEFAULT_WEIGHTS)
    monkeypatch.setattr(train.data, "load", lambda *a, **k: pytest.fail("MNIST was read"))
    with pytest.raises(SystemExit) as exit:
        train.main(args)
    err = capsys.readouterr().err
    assert exit.value.code == 2 and says in err and err.startswith("usage: "), err
    assert weights.sha256_file(weights.DEFAULT_WEIGHTS) == before


# ``python train.py ARGS`` as it runs, except that from the moment train.py calls weights.save,
# the output folder is looked at before every step the interpreter takes (each Python or C call
# and return). Each time it has changed, it is copied to SNAPSHOTS/<n>: exactly what a SIGKILL at
# that instant would leave (a kill saves nothing of the process's own; the files stay as they
# are). When the save returns, the run is SIGKILLed for real, before it can say "wrote". The final
# evaluation reads the first 2000 test images only: it is not what this test is about.
KILLED_WHILE_SAVING = r"""
import os, runpy, shutil, signal, sys
folder, snapshots, sys.argv = sys.argv[1], sys.argv[2], ["train.py", *sys.argv[3:]]
sys.path.insert(0, os.getcwd())
from cnn import evaluate, weights

real_test = evaluate.test
evaluate.test = lambda model, split, device="cpu": real_test(
    model, type(split)(split.images[:2000], split.labels[:2000]), device)

def state():
    return sorted((e.name, e.stat().st_ino, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(folder))

real_save = weights.save

def save(*args, **kwargs):
    seen = [state()]

    def watch(frame, event, arg):
        now = state()
        if now != seen[-1]:
            seen.append(now)
            shutil.copytree(folder, os.path.join(snapshots, "%03d" % len(seen)))

    sys.setprofile(watch)
    try:
        real_save(*args, **kwargs)
    finally:
        sys.setprofile(None)
    print("save returned: killed", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

weights.save = save
runpy.run_path("train.py", run_name="__main__")
"""


def test_a_training_run_killed_at_any_step_of_its_save_leaves_weights_that_load(tmp_path):
    """A kill after the first byte of the save and before its commit leaves the previous weights
    with their card; after the commit, the new ones with theirs. Never a mix, never a stub."""
    out = tmp_path / "w" / "cnn.pt"
    weights.save(CNN(), out, {"recipe": "previous", "confidence": weights.read_card()["confidence"]})
    before = weights.sha256_file(out)
    snapshots = tmp_path / "snapshots"
    proc = subprocess.run([sys.executable, "-c", KILLED_WHILE_SAVING, str(out.parent), str(snapshots),
                           "--recipe", "seed", "--dry-run", "--device", "cpu", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    assert "test accuracy" in proc.stdout and "save returned: killed" in proc.stdout and "wrote" not in proc.stdout
    after = weights.sha256_file(out)
    assert after != before and weights.read_card(out)["recipe"] == "seed"  # the save did finish
    states = sorted(snapshots.iterdir())
    assert len(states) >= 2, "the save changed its folder only once: nothing in between to check"
    survivors = []
    for state in states:
        path = state / out.name
        weights.load(path)  # a WeightsError here = a kill at that instant leaves weights that won't load
        card, sha = weights.read_card(path), weights.sha256_file(path)
        assert card["sha256"] == sha and (sha, card["recipe"]) in [(before, "previous"), (after, "seed")], state.name
        survivors.append(card["recipe"])
    assert survivors[0] == "previous"  # killed at the save's first write: the previous weights, intact
    assert survivors[-1] == "seed"  # ...and the new ones from the commit on, with no way back
    assert survivors == sorted(survivors, key=["previous", "seed"].index)
    weights.load(out)


def test_cuda_request_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        assert train.pick_device("cuda").type == "cuda"
    else:
        proc = run_train("--device", "cuda", "--dry-run", timeout=120)
        assert proc.returncode != 0 and "no CUDA device" in proc.stderr
        assert "Traceback" not in proc.stderr
