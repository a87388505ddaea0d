"""Accuracy on MNIST test digits re-drawn the way a sketchpad hands them over.

Each digit is upscaled (bicubic, thresholded into a hard-edged stroke like a brush
makes) to 25-90 % of a 280-800 px canvas at a random place, then handed over in one
of four styles: a transparent RGBA layer inside a Gradio Sketchpad dict, black on an
opaque white canvas (Gradio dict), coloured ink on white (RGB array) and white on
black (RGB array). Printed side by side, on the same digits and the same weights:

  plain MNIST   the 28x28 test images as stored (the model's own accuracy)
  pipeline      cnn.preprocess.prepare on the drawn canvas (goal: within 0.3 points of plain)
  naive         the whole canvas converted to L, resized to 28x28 and inverted, as most demos do

Then stress sets that the goal does not cover, each with the step that handles it on
and off (thin and thick brushes, a stray dot far from the digit), and the latency
of ``prepare`` on an 800x800 RGBA canvas (goal: p50 <= 5 ms).

Usage: MNIST_ROOT=... python bench/robustness.py [--n 3000] [--seed 0]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cnn import data, preprocess, weights  # noqa: E402

STYLES = ("transparent", "white", "colour", "inverted")
# name, stroke() arguments, add a stray dot?, the step that handles it, the setting that turns it off at 0
STRESS = [
    ("fine pen (upscale cut at 230)", dict(level=230), False, "thickening", "THIN_STROKE"),
    ("hairline pen (upscale cut at 252)", dict(level=252), False, "thickening", "THIN_STROKE"),
    ("thick marker (3x3 dilation at 28 px)", dict(thick=True), False, None, None),
    ("stray dot far from the digit", dict(), True, "speck removal", "SPECK_MASS"),
]


def stroke(digit: np.ndarray, size: int, level: int = 128, thick: bool = False) -> np.ndarray:
    """(h, w) float coverage of an MNIST digit drawn with a hard-edged brush, longest side ``size``.

    ``level`` is where the bicubic upscale is cut: MNIST strokes are brightest along their
    centre line, so a high level leaves a thin pen line and a low one a thick marker.
    ``thick`` widens the strokes by about 2 MNIST pixels first (a 3x3 dilation at 28x28).
    """
    if thick:
        digit = np.asarray(Image.fromarray(digit).filter(ImageFilter.MaxFilter(3)))
    rows, cols = np.flatnonzero(digit.any(1)), np.flatnonzero(digit.any(0))
    crop = Image.fromarray(digit[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1])
    scale = size / max(crop.size)
    big = crop.resize((max(1, round(crop.width * scale)), max(1, round(crop.height * scale))), Image.BICUBIC)
    return (np.asarray(big) >= level).astype(np.float32)


def place(ink: np.ndarray, side: int, rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int]]:
    """A ``side`` x ``side`` coverage canvas with ``ink`` at a random place, and that place."""
    canvas = np.zeros((side, side), np.float32)
    top, left = rng.integers(0, side - ink.shape[0] + 1), rng.integers(0, side - ink.shape[1] + 1)
    canvas[top:top + ink.shape[0], left:left + ink.shape[1]] = ink
    return canvas, (top, left)


def add_dot(canvas: np.ndarray, box: tuple[int, int, int, int], rng: np.random.Generator) -> bool:
    """Dab a round dot (brush-sized) at least half the digit's size away from it; False if no room."""
    top, left, h, w = box
    radius = max(2, round(0.06 * max(h, w)))
    gap = max(h, w) // 2
    yy, xx = np.mgrid[0:canvas.shape[0], 0:canvas.shape[1]]
    far = (yy < top - gap - radius) | (yy > top + h + gap + radius) | (xx < left - gap - radius) | (xx > left + w + gap + radius)
    inside = (yy >= radius) & (yy < canvas.shape[0] - radius) & (xx >= radius) & (xx < canvas.shape[1] - radius)
    spots = np.flatnonzero(far & inside)
    if not len(spots):
        return False
    cy, cx = np.unravel_index(rng.choice(spots), canvas.shape)
    canvas[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2] = 1.0
    return True


def hand_over(coverage: np.ndarray, style: str, rng: np.random.Generator):
    """The canvas as the app would receive it in ``style``."""
    a = coverage[..., None]
    if style == "transparent":  # black strokes in the alpha channel of a transparent layer
        layer = np.zeros(coverage.shape + (4,), np.uint8)
        layer[..., 3] = np.round(coverage * 255)
        return {"background": None, "layers": [layer], "composite": layer.copy()}
    if style == "white":  # opaque white composite, strokes also in a transparent layer
        layer = np.zeros(coverage.shape + (4,), np.uint8)
        layer[..., 3] = np.round(coverage * 255)
        composite = np.full(coverage.shape + (4,), 255, np.uint8)
        composite[..., :3] = np.round(255 * (1 - a))
        return {"background": np.full_like(composite, 255), "layers": [layer], "composite": composite}
    if style == "colour":  # a random pen colour (at least 128 levels darker than white in one channel) on white
        pen = rng.integers(0, 256, 3)
        pen[rng.integers(3)] = rng.integers(0, 128)
        return np.round(255 * (1 - a) + pen * a).astype(np.uint8)
    if style == "inverted":
        return np.round(255 * np.repeat(a, 3, axis=2)).astype(np.uint8)
    raise ValueError(style)


def naive(value) -> torch.Tensor:
    """What most sketchpad demos do: the whole canvas to L, resized to 28x28, inverted."""
    canvas = value["composite"] if isinstance(value, dict) else value
    small = Image.fromarray(canvas).convert("L").resize((28, 28), Image.LANCZOS)
    return torch.from_numpy(255 - np.asarray(small, np.float32)).div_(255).view(1, 1, 28, 28)


def pipeline(value) -> torch.Tensor | None:
    prepared = preprocess.prepare(value)
    return None if prepared is None else prepared.tensor


@torch.inference_mode()
def accuracy(model, tensors: list[torch.Tensor | None], labels: torch.Tensor) -> float:
    """Percent correct; a "no digit" answer (None) counts as wrong."""
    ok = torch.tensor([t is not None for t in tensors])
    if not ok.any():
        return 0.0
    pred = model(torch.cat([t for t in tensors if t is not None])).argmax(1)
    return 100 * (pred == labels[ok]).sum().item() / len(labels)


def subset(items: list, mask: torch.Tensor) -> list:
    return [item for item, keep in zip(items, mask) if keep]


def drawn_set(images: np.ndarray, rng: np.random.Generator, **stroke_args) -> list[tuple[np.ndarray, tuple]]:
    """(coverage canvas, (top, left, h, w) of the digit) for each digit, random canvas, size and place."""
    out = []
    for digit in images:
        side = int(rng.integers(280, 801))
        ink = stroke(digit, int(rng.uniform(0.25, 0.9) * side), **stroke_args)
        canvas, (top, left) = place(ink, side, rng)
        out.append((canvas, (top, left) + ink.shape))
    return out


def drawn_test_set(split, n: int, seed: int):
    """The drawn set: ``n`` seeded MNIST test digits, each drawn on its own canvas in one of the
    STYLES and handed over as the page would. Returns (indices, labels, styles, Gradio values, the
    generator, for what the caller draws next). bench/confidence.py measures the same set."""
    rng = np.random.default_rng(seed)
    idx = torch.from_numpy(rng.permutation(len(split))[:n])
    images, labels = split.images[idx].numpy(), split.labels[idx]
    styles = [STYLES[i % len(STYLES)] for i in range(n)]
    values = [hand_over(canvas, style, rng) for (canvas, _), style in zip(drawn_set(images, rng), styles)]
    return idx, labels, styles, values, rng


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The drawn set's options (bench/confidence.py takes the same)."""
    p.add_argument("--n", type=int, default=3000, help="MNIST test digits to draw (default: 3000)")
    p.add_argument("--seed", type=int, default=0, help="random seed for digits, canvases and styles (default: 0)")
    p.add_argument("--data-root", default=None, help="folder holding MNIST/raw/ (default: $MNIST_ROOT, else ./mnist)")
    p.add_argument("--weights", default=str(weights.DEFAULT_WEIGHTS), help="weights file (default: weights/cnn.pt)")


def latency(value, runs: int) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        preprocess.prepare(value)
        times.append(time.perf_counter() - start)
    return float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 90) * 1e3)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.add_argument("--stress-n", type=int, default=500, help="digits per stress set (default: 500)")
    p.add_argument("--runs", type=int, default=300, help="timed prepare() calls per latency figure (default: 300)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # the bench is dominated by per-image preprocessing, not the model

    split = data.load(args.data_root, train=False)
    model = weights.load(args.weights)
    idx, labels, styles, values, rng = drawn_test_set(split, args.n, args.seed)
    images = split.images[idx].numpy()
    card = weights.read_card(args.weights)
    print(f"weights {args.weights} (recipe {card.get('recipe')}, card test accuracy {card.get('test_accuracy')})")
    print(f"{args.n} MNIST test digits drawn on 280-800 px canvases at 25-90 % of the side, seed {args.seed}\n")

    start = time.perf_counter()
    plain = accuracy(model, list(split.batch(idx)[0].split(1)), labels)
    ours = [pipeline(v) for v in values]
    theirs = [naive(v) for v in values]
    by_style = {s: torch.tensor([t == s for t in styles]) for s in STYLES}

    print(f"{'':36}{'pipeline':>10}{'naive':>10}")
    print(f"{'plain MNIST (28x28 as stored)':36}{plain:9.2f}%")
    print(f"{'drawn, all styles':36}{accuracy(model, ours, labels):9.2f}%{accuracy(model, theirs, labels):9.2f}%"
          f"   pipeline - plain = {accuracy(model, ours, labels) - plain:+.2f} points (goal >= -0.30)")
    for s, mask in by_style.items():
        print(f"{'  ' + s:36}{accuracy(model, subset(ours, mask), labels[mask]):9.2f}%"
              f"{accuracy(model, subset(theirs, mask), labels[mask]):9.2f}%")
    blank = sum(t is None for t in ours)
    print(f"{'  answered no digit':36}{blank:10d}")

    print(f"\nstress sets ({args.stress_n} digits each, black on white): pipeline accuracy, and without the step")
    sub, sub_labels = images[:args.stress_n], labels[:args.stress_n]
    for name, stroke_args, dot, step, setting in STRESS:
        values = []
        for canvas, box in drawn_set(sub, rng, **stroke_args):
            if dot:
                add_dot(canvas, box, rng)
            values.append(hand_over(canvas, "white", rng))
        line = f"  {name:38}{accuracy(model, [pipeline(v) for v in values], sub_labels):7.2f}%"
        if step:
            with mock.patch.object(preprocess, setting, 0.0):
                line += f"   without {step}: {accuracy(model, [pipeline(v) for v in values], sub_labels):6.2f}%"
        print(line)
    bench_seconds = time.perf_counter() - start

    load = os.getloadavg()[0]
    print(f"\nprepare() latency on an 800x800 RGBA canvas ({args.runs} runs, 1 thread, "
          f"load average {load:.1f} on {os.cpu_count()} cores)")
    drawing = place(stroke(images[0], 480), 800, np.random.default_rng(args.seed))[0]
    for style in ("transparent", "white"):
        value = hand_over(drawing, style, rng)
        p50, p90 = latency(value, args.runs)
        print(f"  {style + ' (Gradio dict)':34}p50 {p50:5.2f} ms   p90 {p90:5.2f} ms   (goal p50 <= 5 ms)")
    print(f"\naccuracy sets took {bench_seconds:.1f} s")


if __name__ == "__main__":
    main()
