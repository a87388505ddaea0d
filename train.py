"""Train the tutorial CNN on MNIST and write weights/cnn.pt plus its card weights/cnn.json.

Recipes (the architecture never changes, only how it is trained):
  seed  the PyTorch tutorial exactly: 1 epoch, Adam 1e-3, batch 50, seed 1   (98.1 %, ~10 s)
  fast  the quickest way a 2-core CPU gets >= 99.0 %: 2 epochs, batch 128,
        OneCycle up to 8e-3, bf16 autocast where the hardware has it        (99.1 %, ~12 s)
  best  (default) 20 epochs of batches augmented like drawings (rotation,
        scale, slant, shift, stroke width), AdamW + OneCycle, and outlier
        exposure: non-digit sketches pushed to low scores for every digit   (99.4 %, ~8 min)

Every recipe ends by fitting the card's calibration (cnn/confidence.py): the temperature and
the "not a digit" threshold, on 5000 MNIST training digits. ``best`` holds them out of
training (it trains on the other 55 000); ``seed`` and ``fast`` train on all 60 000, as the
tutorial does, so their calibration digits were seen in training (the card says so).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import torch
import torch.nn.functional as F
from tqdm import tqdm

import cnn.augment
from cnn import confidence, data, outliers, replay, weights
from cnn.augment import augment
from cnn.errors import CNNError
from cnn.evaluate import figures, logits_of, test
from cnn.model import CNN

RECIPES = {
    "seed": dict(epochs=1, batch_size=50, lr=1e-3, schedule="constant", augment=False, weight_decay=0.0,
                 precision="fp32"),
    "fast": dict(epochs=2, batch_size=128, lr=8e-3, schedule="onecycle", augment=False, weight_decay=0.0,
                 precision="bf16"),
    "best": dict(epochs=20, batch_size=128, lr=4e-3, schedule="onecycle", augment=True, weight_decay=1e-4,
                 precision="fp32", held_out=True,
                 # Outlier exposure: each batch of 128 digits gets `drawn` MNIST digits drawn
                 # like sketches (cross-entropy to their label) and `outliers` non-digit sketches,
                 # sampled from banks rendered once per run, and `outlier_weight` times the
                 # energy loss (see outlier_exposure_loss). Measured over 8 epochs (test accuracy,
                 # validation non-digits refused): no sketches 99.44 %; energy loss at 0.05
                 # 99.39 %, 96 %; Hendrycks et al.'s uniform-answer loss at 0.1-0.5 99.35-99.16 %,
                 # 90-92 % (and 99.29 % after 20 epochs at 0.5).
                 outlier_exposure=dict(loss="energy", margins=(10.0, 4.0), outliers=48, drawn=16, outlier_weight=0.05,
                                       outlier_bank=24_000, drawn_bank=8_000,
                                       kinds=dict(strokes=1.0, shapes=1.0, glyphs=1.5, numbers=0.75))),
}
SEED = 1
DRY_RUN_BATCHES = 20
DRY_RUN_SKETCHES = 200  # non-digit sketches a dry run renders (half as many drawn digits): a few seconds
VALIDATION = 5000  # MNIST training digits the calibration is fitted on
VALIDATION_OUTLIERS = 3000  # non-digit sketches (training generators, their own seed) that pick the score
# seeds of the sketches drawn for training and for calibration; the held-out ones use others (bench/)
OUTLIER_SEED, DRAWN_SEED, VALIDATION_OUTLIER_SEED, VALIDATION_DRAWN_SEED = 101, 102, 103, 104


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise CNNError("--device cuda was asked for but no CUDA device is available; use --device cpu.")
    return torch.device(name)


def pick_precision(wanted: str, device: torch.device) -> str:
    """``wanted``, except that bf16 falls back to fp32 where the hardware has no bf16 matrix units.

    bf16 autocast halves a training step on a CPU with AMX (and on any recent GPU); on a CPU
    without it, bf16 convolutions are emulated and slower than fp32."""
    if wanted != "bf16":
        return wanted
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)  # private, hence the guard
    return "bf16" if amx() else "fp32"


def make_optimizer(model, hp: dict, steps: int):
    opt = torch.optim.AdamW(model.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"]) \
        if hp["weight_decay"] else torch.optim.Adam(model.parameters(), lr=hp["lr"])
    if hp["schedule"] == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=hp["lr"], total_steps=steps)
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    return opt, sched


class Sketches:
    """What outlier exposure adds to every batch, sampled from banks rendered once per run:
    MNIST digits drawn like sketches (labelled) and non-digit sketches (cnn/outliers.py), both
    through the page's preprocessing and then the same augmentation as the digits."""

    def __init__(self, drawn: torch.Tensor, labels: torch.Tensor, non_digits: torch.Tensor, oe: dict, seed: int):
        self.drawn, self.labels, self.non_digits, self.oe = drawn, labels, non_digits, oe
        self.g = torch.Generator().manual_seed(seed)

    @classmethod
    def render(cls, digits: data.Split, oe: dict, n_drawn: int, n_outliers: int) -> "Sketches":
        g = torch.Generator().manual_seed(DRAWN_SEED)
        pick = torch.randperm(len(digits), generator=g)[:n_drawn]
        drawn, labels = outliers.drawn_digits(digits.images[pick].numpy(), digits.labels[pick], DRAWN_SEED)
        kinds = oe["kinds"]
        non_digits, _ = outliers.bank(n_outliers, OUTLIER_SEED, outliers.TRAIN, digits.images[:20_000].numpy(),
                                      kinds=list(kinds), weights=list(kinds.values()))
        return cls(drawn, labels, non_digits, oe, SEED)

    def batch(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(drawn digits then non-digits, augmented: (D + O, 1, 28, 28), the D drawn digits' labels)."""
        i = torch.randint(len(self.drawn), (self.oe["drawn"],), generator=self.g)
        j = torch.randint(len(self.non_digits), (self.oe["outliers"],), generator=self.g)
        x = torch.cat([self.drawn[i], self.non_digits[j]]).to(device).unsqueeze(1).float().div_(255)
        return cnn.augment.augment(x, self.g), self.labels[i].to(device)


def outlier_exposure_loss(logits: torch.Tensor, y: torch.Tensor, oe: dict | None) -> torch.Tensor:
    """Cross-entropy of the first ``len(y)`` rows (digits) to their labels, plus, for the other
    rows (non-digit sketches), ``oe["outlier_weight"]`` times

      "uniform"  the cross-entropy to the uniform answer, -mean(log_softmax): smallest, log(10),
                 when a non-digit gets 1/10 for every digit (Hendrycks et al. 2019);
      "energy"   squared hinges on L = logsumexp(logits) (minus the energy, Liu et al. 2020):
                 mean(relu(m_in - L)^2) over the digits + mean(relu(L - m_out)^2) over the
                 non-digits, ``oe["margins"] = (m_in, m_out)``: a digit should score high for
                 some digit, a non-digit low for all of them. Samples already on the right side
                 of their margin cost nothing, so it leaves the digits' answers alone.
    """
    loss = F.cross_entropy(logits[:len(y)], y)
    if not oe or len(logits) == len(y):
        return loss
    out = logits[len(y):].float()
    if oe["loss"] == "uniform":
        return loss + oe["outlier_weight"] * -out.log_softmax(1).mean()
    m_in, m_out = oe["margins"]
    lse_in, lse_out = torch.logsumexp(logits[:len(y)].float(), 1), torch.logsumexp(out, 1)
    return loss + oe["outlier_weight"] * (F.relu(m_in - lse_in).square().mean() + F.relu(lse_out - m_out).square().mean())


def train(model, split: data.Split, opt, sched, hp: dict, device, g: torch.Generator,
          epoch: int, max_batches: int | None = None, sketches: Sketches | None = None,
          on_step=None) -> tuple[float, float]:
    """One epoch; returns (mean loss, accuracy on the MNIST digits) over the batches seen.
    ``on_step(i)``, if given, is called after the epoch's i-th optimizer step (1, 2, ...)."""
    device = torch.device(device)
    model.train()
    order = torch.randperm(len(split), generator=g)
    batches = order.split(hp["batch_size"])[:max_batches]
    total_loss = correct = seen = 0
    bar = tqdm(batches, desc=f"epoch {epoch}", unit="batch", leave=False, mininterval=0.5)
    for i, idx in enumerate(bar):
        x, y = split.batch(idx, device)
        if hp["augment"]:
            x = augment(x, g)
        n = len(y)
        if sketches is not None:
            xs, ys = sketches.batch(device)
            x, y = torch.cat([x, xs]), torch.cat([y, ys])  # digits, drawn digits, then non-digits
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=hp["precision"] == "bf16"):
            logits = model(x)  # (B, 10)
            loss = outlier_exposure_loss(logits, y, sketches.oe if sketches else None)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if on_step is not None:
            on_step(i + 1)
        total_loss += loss.item() * n
        correct += (logits[:n].argmax(1) == y[:n]).sum().item()
        seen += n
        if i % 50 == 0:
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.4f}")
    bar.close()
    return total_loss / seen, correct / seen


def carve(split: data.Split, held_out: bool) -> tuple[data.Split, data.Split]:
    """(what the model trains on, the VALIDATION digits the calibration is fitted on): a seeded
    choice of MNIST training digits, left out of training when ``held_out``. Never the test set."""
    perm = torch.randperm(len(split), generator=torch.Generator().manual_seed(SEED))
    val = perm[:VALIDATION].sort().values
    validation = data.Split(split.images[val], split.labels[val])
    if not held_out:  # seed and fast train on all 60 000 digits, as the tutorial does
        return split, validation
    keep = perm[VALIDATION:].sort().values
    return data.Split(split.images[keep], split.labels[keep]), validation


def calibrate(model, validation: data.Split, hp: dict, dry_run: bool, device) -> dict:
    """The card's ``confidence`` entry: temperature, score and threshold fitted on ``validation``
    and, for outlier exposure, on the same digits drawn like sketches (a visitor's digits are
    drawings) and on non-digit sketches of the training generators, each with its own seed;
    with what they measure there."""
    logits = logits_of(model, validation, device)
    digits, non_digits, drawn = [(logits, validation.labels)], None, None
    if hp.get("outlier_exposure"):
        n = DRY_RUN_SKETCHES // 2 if dry_run else len(validation)
        images, labels = outliers.drawn_digits(validation.images[:n].numpy(), validation.labels[:n], VALIDATION_DRAWN_SEED)
        drawn = data.Split(images, labels)
        digits.append((logits_of(model, drawn, device), labels))
        bank, _ = outliers.bank(DRY_RUN_SKETCHES if dry_run else VALIDATION_OUTLIERS, VALIDATION_OUTLIER_SEED,
                                outliers.TRAIN, validation.images.numpy())
        non_digits = logits_of(model, data.Split(bank, torch.zeros(len(bank), dtype=torch.long)), device)
    rule, refused = confidence.fit(digits, non_digits)

    def measured(prefix: str, logits: torch.Tensor, labels: torch.Tensor) -> dict:
        f = figures(rule, logits, labels)
        return {f"{prefix}_{k}": None if f[k] is None else round(f[k], 4)
                for k in ("answered", "accuracy_answered", "ece", "ece_uncalibrated")}

    return rule.card(
        answered_target=confidence.ANSWERED,
        validation_digits=len(validation),
        validation_held_out=bool(hp.get("held_out")),  # False: these digits were trained on
        **measured("validation", logits, validation.labels),
        validation_drawn_digits=0 if drawn is None else len(drawn),
        **(measured("validation_drawn", *digits[1]) if drawn is not None else {}),
        validation_non_digits=0 if non_digits is None else len(non_digits),
        validation_non_digits_refused={k: round(v, 4) for k, v in refused.items() if v == v},  # NaN: none
    )


def save_snapshots(taken: dict[int, dict], args, hp: dict, test_split: data.Split, device,
                   steps_per_epoch: int) -> None:
    """Each snapshot as a weights file with its card: how it was made and its test accuracy."""
    from pathlib import Path

    folder = Path(args.snapshots)
    folder.mkdir(parents=True, exist_ok=True)
    for step, state in sorted(taken.items()):
        model = CNN()
        model.load_state_dict(state, strict=True)
        hits = test(model.to(device), test_split, device)
        card = weights.save(model, replay.file_for(folder, step), {
            "recipe": args.recipe, "step": step, "steps_per_epoch": steps_per_epoch,
            "images_seen": step * hp["batch_size"], "seed": SEED, "dry_run": args.dry_run,
            "test_accuracy": round(hits.float().mean().item(), 4),
            "test_accuracy_first2000": round(hits[:2000].float().mean().item(), 4),
            "test_images": len(hits), "calibrated": False, "torch_version": torch.__version__,
            "command": f"python train.py --recipe {args.recipe} --snapshots {args.snapshots}",
        })
        print(f"snapshot step {step}: test accuracy {card['test_accuracy']:.4f} "
              f"(first 2000: {card['test_accuracy_first2000']:.4f}) -> {replay.file_for(folder, step)}", flush=True)


def positive_int(text: str) -> int:
    """argparse type: an int >= 1 (0 epochs would write an untrained model over the weights)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", choices=RECIPES, default="best", help="training recipe (default: best)")
    p.add_argument("--epochs", type=positive_int, default=None, help="override the recipe's epochs "
                   "(default: seed 1, fast %d, best %d)" % (RECIPES["fast"]["epochs"], RECIPES["best"]["epochs"]))
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where to train (default: auto = cuda if available, else cpu)")
    p.add_argument("--data-root", default=None,
                   help="folder holding MNIST/raw/ (default: $MNIST_ROOT, else ./mnist; downloaded if absent)")
    p.add_argument("--out", default=None, help="weights file to write, its card beside it "
                   "(default: weights/cnn.pt; with --dry-run nothing is written unless --out is given)")
    p.add_argument("--snapshots", default=None, metavar="FOLDER",
                   help="also save the model at optimizer steps %s into FOLDER (step_0000.pt ..., each with "
                        "its card and test accuracy): the page's replay of the training; default: none. "
                        "The shipped ones: --recipe seed --snapshots weights/replay" % ",".join(map(str, replay.STEPS)))
    p.add_argument("--threads", type=positive_int, default=os.cpu_count() or 1, help="torch CPU threads (default: all cores)")
    p.add_argument("--dry-run", action="store_true",
                   help=f"train {DRY_RUN_BATCHES} batches only, for a quick check (default: off)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    hp = dict(RECIPES[args.recipe])
    if args.epochs is not None:
        hp["epochs"] = args.epochs
    if args.dry_run:
        hp["epochs"] = 1
    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    g = torch.Generator().manual_seed(SEED)
    device = pick_device(args.device)
    hp["precision"] = pick_precision(hp["precision"], device)  # the card records what really ran
    root = args.data_root or data.default_root()
    train_split, test_split = data.load(root, train=True), data.load(root, train=False)
    train_split, validation = carve(train_split, hp.get("held_out", False))
    sketches, oe = None, hp.get("outlier_exposure")
    if oe:
        start = time.perf_counter()
        sketches = Sketches.render(train_split, oe, *((DRY_RUN_SKETCHES // 2, DRY_RUN_SKETCHES) if args.dry_run
                                                      else (oe["drawn_bank"], oe["outlier_bank"])))
        print(f"rendered {len(sketches.drawn)} drawn digits and {len(sketches.non_digits)} non-digit sketches "
              f"in {time.perf_counter() - start:.1f} s", flush=True)

    # channels_last (NHWC) lets oneDNN run the convolutions, ReLUs and pools without reordering
    # between layouts: ~25 % less time per step on a 2-core CPU (bench/train_speed.py shows both).
    # Same math; the weights are saved contiguous (cnn.weights.save).
    model = CNN().to(device, memory_format=torch.channels_last)
    max_batches = DRY_RUN_BATCHES if args.dry_run else None
    steps_per_epoch = -(-len(train_split) // hp["batch_size"])
    per_epoch = min(steps_per_epoch, max_batches) if max_batches else steps_per_epoch  # the steps this run takes
    steps = hp["epochs"] * per_epoch
    opt, sched = make_optimizer(model, hp, steps)

    # Snapshots: copies of the weights at the chosen steps, taken between optimizer steps (a copy
    # changes nothing the training computes: the last one equals the run's final weights).
    taken: dict[int, dict] = {}

    def snapshot(step: int) -> None:
        if args.snapshots and step in replay.STEPS:
            taken[step] = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}

    snapshot(0)
    start = time.perf_counter()
    for epoch in range(1, hp["epochs"] + 1):
        done = (epoch - 1) * per_epoch
        loss, acc = train(model, train_split, opt, sched, hp, device, g, epoch, max_batches, sketches,
                          on_step=lambda i: snapshot(done + i))
        print(f"epoch {epoch}/{hp['epochs']}: train loss {loss:.4f}, train acc {acc:.4f}", flush=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_seconds = time.perf_counter() - start

    hits = test(model, test_split, device)
    accuracy, first2000 = hits.float().mean().item(), hits[:2000].float().mean().item()
    print(f"test accuracy {accuracy:.4f} on {len(hits)} images (first 2000: {first2000:.4f}); "
          f"trained in {train_seconds:.1f} s on {device}", flush=True)
    calibration = calibrate(model, validation, hp, args.dry_run, device)
    print(f"calibration on {calibration['validation_digits']} validation digits: temperature "
          f"{calibration['temperature']}, {calibration['score']} >= {calibration['threshold']:.4g} answers "
          f"{calibration['validation_answered']:.2%}; non-digits refused: "
          f"{calibration['validation_non_digits_refused'] or 'none measured'}", flush=True)

    if args.snapshots:
        save_snapshots(taken, args, hp, test_split, device, steps_per_epoch)
    out = args.out or (None if args.dry_run else weights.DEFAULT_WEIGHTS)
    if out is None:
        print("dry run: weights not written (pass --out to write them)")
        return 0
    card = weights.save(model, out, {
        "recipe": args.recipe,
        "hyperparameters": hp,
        "epochs": hp["epochs"],
        "seed": SEED,
        "dry_run": args.dry_run,
        "test_accuracy": round(accuracy, 4),
        "test_accuracy_first2000": round(first2000, 4),
        "test_images": len(hits),
        "train_seconds": round(train_seconds, 2),
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        confidence.CARD_KEY: calibration,
    })
    print(f"wrote {out} and {weights.card_path(out)} (sha256 {card['sha256'][:12]}…)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CNNError as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        sys.exit("interrupted: previous weights left untouched")
