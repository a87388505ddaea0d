"""Train the tutorial CNN on MNIST and write weights/cnn.pt plus its card weights/cnn.json.

Recipes (the architecture never changes, only how it is trained):
  seed  the PyTorch tutorial exactly: 1 epoch, Adam 1e-3, batch 50, seed 1   (98.1 %, ~10 s)
  fast  the quickest way a 2-core CPU gets >= 99.0 %: 2 epochs, batch 128,
        OneCycle up to 8e-3, bf16 autocast where the hardware has it        (99.1 %, ~12 s)
  best  (default) 20 epochs of batches augmented like drawings (rotation,
        scale, slant, shift, stroke width), AdamW + OneCycle                (99.5 %, ~4 min)
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

from cnn import data, weights
from cnn.augment import augment
from cnn.errors import CNNError
from cnn.evaluate import test
from cnn.model import CNN

RECIPES = {
    "seed": dict(epochs=1, batch_size=50, lr=1e-3, schedule="constant", augment=False, weight_decay=0.0,
                 precision="fp32"),
    "fast": dict(epochs=2, batch_size=128, lr=8e-3, schedule="onecycle", augment=False, weight_decay=0.0,
                 precision="bf16"),
    "best": dict(epochs=20, batch_size=128, lr=4e-3, schedule="onecycle", augment=True, weight_decay=1e-4,
                 precision="fp32"),
}
SEED = 1
DRY_RUN_BATCHES = 20


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


def train(model, split: data.Split, opt, sched, hp: dict, device, g: torch.Generator,
          epoch: int, max_batches: int | None = None) -> tuple[float, float]:
    """One epoch; returns (mean loss, accuracy) over the batches seen."""
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
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=hp["precision"] == "bf16"):
            logits = model(x)  # (B, 10)
            loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        total_loss += loss.item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
        if i % 50 == 0:
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.4f}")
    bar.close()
    return total_loss / seen, correct / seen


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

    # channels_last (NHWC) lets oneDNN run the convolutions, ReLUs and pools without reordering
    # between layouts: ~25 % less time per step on a 2-core CPU (bench/train_speed.py shows both).
    # Same math; the weights are saved contiguous (cnn.weights.save).
    model = CNN().to(device, memory_format=torch.channels_last)
    max_batches = DRY_RUN_BATCHES if args.dry_run else None
    steps_per_epoch = -(-len(train_split) // hp["batch_size"])
    steps = hp["epochs"] * (min(steps_per_epoch, max_batches) if max_batches else steps_per_epoch)
    opt, sched = make_optimizer(model, hp, steps)

    start = time.perf_counter()
    for epoch in range(1, hp["epochs"] + 1):
        loss, acc = train(model, train_split, opt, sched, hp, device, g, epoch, max_batches)
        print(f"epoch {epoch}/{hp['epochs']}: train loss {loss:.4f}, train acc {acc:.4f}", flush=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_seconds = time.perf_counter() - start

    hits = test(model, test_split, device)
    accuracy, first2000 = hits.float().mean().item(), hits[:2000].float().mean().item()
    print(f"test accuracy {accuracy:.4f} on {len(hits)} images (first 2000: {first2000:.4f}); "
          f"trained in {train_seconds:.1f} s on {device}", flush=True)

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
