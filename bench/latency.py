"""In-process latency of one page request, for a realistic 800x800 drawing.

One request = what the server does for a stroke: ``app.update`` (preprocess the Sketchpad
value, one forward pass with the feature-map hooks, and the one value the browser draws the
page from: ``cnn/payload.py``). The
sketch is handed over exactly as Gradio's Sketchpad gives it to the function: a dict of
three 800x800 RGBA numpy arrays (white background, a transparent layer with black strokes,
and their composite), with strokes as wide as the page's brush at that canvas size.

Printed (p50 / p95 over --runs requests, after a warm-up), goals: page update p50 <= 15 ms
(evidence map and inspector included), an inspect request p50 <= 10 ms:

  page update         preprocess + forward + the maps' value, answer and words (the goal's measure)
  + JSON              the same, plus the JSON Gradio sends
  move it             a click on a move button: the session's 28x28 input moved, two forward
                      passes (moved and as drawn), the value and the four similarities
  switch network      the network picker: one forward pass through the picked network (a step of
                      the tutorial's training or the shipped weights), the value with that
                      network's weights for the browser, and its filters (the weights' value)
  predict API         preprocess + forward, the ``/predict`` endpoint
  inspect API         preprocess + forward + one cell's arithmetic, ``/inspect`` (cells of all 4 layers)
  evidence API        preprocess + forward + the 7x7 map, ``/evidence``
  parts               preprocess / extract / the maps' value, one at a time
(a click on a map costs the server nothing now: the browser answers it, see bench/page.py)

Torch runs with the server's settings (``app.configure_torch``: one thread).
Usage: python bench/latency.py [--runs 300] [--canvas 800]
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import app  # noqa: E402
from cnn import confidence, payload, replay, weights  # noqa: E402
from cnn.features import extract  # noqa: E402
from cnn.preprocess import prepare  # noqa: E402

# Digits as strokes in a unit square (x right, y down), drawn into the middle ~70 % of the canvas.
DIGITS = {
    "1": [[(0.5, 0.1), (0.5, 0.9)]],
    "0": [[(0.5 + 0.3 * math.sin(t * math.pi / 16), 0.5 - 0.42 * math.cos(t * math.pi / 16)) for t in range(33)]],
    "7": [[(0.2, 0.12), (0.8, 0.12), (0.42, 0.9)]],
    "4": [[(0.62, 0.9), (0.62, 0.1), (0.15, 0.65), (0.85, 0.65)]],
    "3": [[(0.25, 0.2), (0.5, 0.1), (0.72, 0.25), (0.5, 0.47), (0.75, 0.68), (0.5, 0.9), (0.22, 0.8)]],
}


def sketch(strokes: list[list[tuple[float, float]]], canvas: int = 800, radius: float | None = None) -> dict:
    """A Sketchpad value as Gradio's ``preprocess`` hands it over (type="numpy", RGBA)."""
    radius = radius if radius is not None else app.BRUSH_RADIUS * canvas / app.CANVAS
    layer = Image.new("RGBA", (canvas, canvas), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    for stroke in strokes:
        pts = [(canvas * (0.15 + 0.7 * x), canvas * (0.15 + 0.7 * y)) for x, y in stroke]
        draw.line(pts, fill=(0, 0, 0, 255), width=round(2 * radius), joint="curve")
        for x, y in (pts[0], pts[-1]):  # round caps, as the brush makes
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=(0, 0, 0, 255))
    background = Image.new("RGBA", (canvas, canvas), (255, 255, 255, 255))
    composite = Image.alpha_composite(background, layer)
    return {"background": np.asarray(background), "layers": [np.asarray(layer)], "composite": np.asarray(composite)}


def timed(fn, values: list, runs: int) -> np.ndarray:
    for v in values[:3]:  # warm-up: first calls allocate, fill caches (glyphs), load kernels
        fn(v)
    out = np.empty(runs)
    for i in range(runs):
        v = values[i % len(values)]
        t = time.perf_counter()
        fn(v)
        out[i] = time.perf_counter() - t
    return out * 1e3


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=300)
    p.add_argument("--canvas", type=int, default=800, help="drawing size in px (square)")
    args = p.parse_args(argv)

    app.configure_torch()
    model = weights.load()
    values = [sketch(s, args.canvas) for s in DIGITS.values()]
    got = [app.predict(model, v) for v in values]
    guesses = "".join(max(g, key=g.get) for g in got)
    print(f"{args.canvas}x{args.canvas} RGBA sketches of {''.join(DIGITS)} (read as {guesses}); "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread; {platform.processor() or platform.machine()}")

    def with_json(v):  # what Gradio sends: the outputs as JSON
        json.dumps(app.update(model, v)[:3])

    cells = [("conv1", 3, 14, 9), ("pool1", 7, 6, 5), ("conv2", 20, 7, 7), ("pool2", 11, 3, 3)]
    networks = {**replay.load(), replay.SHIPPED: (model, weights.read_card())}
    names = list(networks)
    prepared = [prepare(v) for v in values]
    feats = [extract(model, q.tensor) for q in prepared]
    answers = [confidence.answer(model, f.logits) for f in feats]
    sizes = [len(json.dumps(app.update(model, v)[2])) for v in values]
    rows = [
        ("page update (preprocess + forward + the maps' value)", timed(lambda v: app.update(model, v), values, args.runs)),
        ("  + JSON of what it sends", timed(with_json, values, args.runs)),
        ("predict API (preprocess + forward)", timed(lambda v: app.predict(model, v), values, args.runs)),
        ("inspect API (preprocess + forward + one cell)",
         timed(lambda i: app.inspect_api(model, values[i % len(values)], *cells[i % len(cells)]),
               list(range(len(values) * len(cells))), args.runs)),
        ("evidence API (preprocess + forward + 7x7 map)",
         timed(lambda v: app.evidence_api(model, v, None), values, args.runs)),
        ("move it (two forward passes + the value + 4 similarities)",
         timed(lambda i: app.moved(model, prepared[i].image, 1, -1), list(range(len(values))), args.runs)),
        ("switch network (forward + value + its weights + filters)",
         timed(lambda i: app.switch(networks, names[i % len(names)], prepared[i % len(values)].image, (0, 0)),
               list(range(len(values) * len(names))), args.runs)),
        ("  preprocess only", timed(prepare, values, args.runs)),
        ("  extract only (forward + hooks + kept cells)",
         timed(lambda q: extract(model, q.tensor), prepared, args.runs)),
        ("  the maps' value only (cnn/payload.py)",
         timed(lambda i: payload.encode(model, feats[i], prepared[i].image, answers[i], ("pool2", 0, 0, 0)),
               list(range(len(values))), args.runs)),
    ]
    width = max(len(name) for name, _ in rows)
    for name, ms in rows:
        print(f"{name:<{width}}  p50 {np.percentile(ms, 50):6.2f} ms   p95 {np.percentile(ms, 95):6.2f} ms")
    print(f"the maps' value as JSON: {min(sizes) / 1000:.1f}-{max(sizes) / 1000:.1f} kB (goal: <= 60 kB a stroke)")
    p50 = np.percentile(rows[0][1], 50)
    print(f"goal: page update p50 <= 15 ms: {'met' if p50 <= 15 else 'NOT met'} ({p50:.2f} ms)")
    p50 = np.percentile(rows[3][1], 50)
    print(f"goal: inspect request p50 <= 10 ms: {'met' if p50 <= 10 else 'NOT met'} ({p50:.2f} ms)")


if __name__ == "__main__":
    main()
