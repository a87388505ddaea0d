"""Training speed, measured side by side in one run.

1. The tutorial's own data path (torchvision MNIST + ToTensor through a DataLoader,
   batch 50, 1 epoch, Adam 1e-3, seed 1) against `train.py --recipe seed` (the same
   recipe on in-memory uint8 batches, channels_last): seconds for each and their ratio
   (goal <= 0.6), beside what the model alone costs in each layout.
2. The wall time of `train.py --recipe fast` to its full-test-set accuracy (goal >= 99.0 % in <= 20 s).

Usage: MNIST_ROOT=... python bench/train_speed.py [--threads N]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import train  # noqa: E402
from cnn import data  # noqa: E402
from cnn.model import CNN  # noqa: E402


SECONDS = "train_seconds"


def tutorial_epoch(root: str) -> float:
    """Seconds for one epoch the tutorial's way: a PIL image + ToTensor per sample."""
    torch.manual_seed(1)
    ds = datasets.MNIST(root, train=True, transform=transforms.ToTensor(), download=False)
    loader = DataLoader(ds, batch_size=50, shuffle=True)
    model = CNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    start = time.perf_counter()
    for x, y in loader:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def compute_floor(root: str, memory_format: torch.memory_format) -> float:
    """Seconds for the same 1200 Adam steps on one batch already in memory: no data path at all.

    What each path pays for the model alone in its layout (the tutorial's contiguous NCHW,
    train.py's channels_last); the rest of each path's time is its data path."""
    torch.manual_seed(1)
    x, y = data.load(root, train=True).batch(torch.arange(50))
    model = CNN().to(memory_format=memory_format)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    start = time.perf_counter()
    for _ in range(60_000 // 50):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def run_recipe(recipe: str, root: str, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cnn.pt"
        start = time.perf_counter()
        train.main(["--recipe", recipe, "--device", "cpu", "--data-root", root, "--out", str(out),
                    "--threads", str(threads)])
        card = json.loads(out.with_suffix(".json").read_text())
        card["process_seconds"] = time.perf_counter() - start  # incl. data load + 10k evaluation
    return card


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", default=None, help="folder holding MNIST/raw/ (default: $MNIST_ROOT, else ./mnist)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(),
                   help=f"torch threads for every run (default: {torch.get_num_threads()})")
    p.add_argument("--repeats", type=int, default=2,
                   help="runs of the tutorial epoch and of --recipe seed, alternating; the best of each counts (default: 2)")
    args = p.parse_args()
    root = args.data_root or data.default_root()
    data.ensure(root)
    torch.set_num_threads(args.threads)

    # Alternate the two, best of --repeats each: background noise on a shared machine only ever
    # adds time, so the minimum is the closest to each path's own cost (as timeit does).
    tutorials, seeds, floors_nchw, floors_nhwc = [], [], [], []
    for _ in range(args.repeats):
        tutorials.append(tutorial_epoch(root))
        seeds.append(run_recipe("seed", root, args.threads))
        floors_nchw.append(compute_floor(root, torch.contiguous_format))
        floors_nhwc.append(compute_floor(root, torch.channels_last))
    tutorial, floor_nchw, floor_nhwc = min(tutorials), min(floors_nchw), min(floors_nhwc)
    seed = min(seeds, key=lambda card: card[SECONDS])
    fast = run_recipe("fast", root, args.threads)
    print()
    print(f"threads: {args.threads}, torch {torch.__version__}")
    print(f"tutorial data path, 1 epoch batch 50 : {tutorial:6.2f} s  (runs: {', '.join(f'{t:.2f}' for t in tutorials)})")
    print(f"train.py --recipe seed (same recipe)  : {seed[SECONDS]:6.2f} s  "
          f"(runs: {', '.join(f'{c[SECONDS]:.2f}' for c in seeds)}; "
          f"test acc {seed['test_accuracy']:.4f})")
    print(f"model compute alone, contiguous NCHW  : {floor_nchw:6.2f} s  (the tutorial's layout; "
          f"tutorial run minus this: {tutorial - floor_nchw:+.2f} s)")
    print(f"model compute alone, channels_last    : {floor_nhwc:6.2f} s  (train.py's layout; "
          f"seed run minus this: {seed[SECONDS] - floor_nhwc:+.2f} s)")
    print(f"ratio seed / tutorial                 : {seed[SECONDS] / tutorial:6.2f}  (goal <= 0.6)")
    print(f"train.py --recipe fast                : {fast[SECONDS]:6.2f} s training, "
          f"{fast['process_seconds']:.2f} s whole run, {fast['hyperparameters']['precision']} -> "
          f"test acc {fast['test_accuracy']:.4f} "
          f"(goal >= 0.990 in <= 20 s)")


if __name__ == "__main__":
    main()
