"""Command line: ``python -m cnn predict PATH...``, ``python -m cnn evaluate`` and ``python -m cnn patches``.

predict prints one JSON object per image, e.g.
  {"path": "3.png", "digit": 3, "confidence": 0.998, "probabilities": [...10 floats...], "not_a_digit": false}
(calibrated probabilities; "not_a_digit": true when the drawing looks like none of the ten digits,
still a successful answer)
or {"path": "notes.txt", "error": "..."} for an image that cannot be read or holds no digit;
the exit status is 0 when every image was classified, 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Iterator

import torch
from PIL import Image

from . import confidence, data, weights
from .errors import CNNError
from .evaluate import report
from .preprocess import prepare

IMAGE_SUFFIXES = {ext for ext in Image.registered_extensions()}


def expand(paths: list[str]) -> Iterator[Path]:
    """Files as given; folders as the image files inside them, sorted."""
    for p in map(Path, paths):
        if p.is_dir():
            yield from sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            yield p


@torch.inference_mode()
def classify(model: torch.nn.Module, path: Path) -> dict:
    try:
        prepared = prepare(path)
    except CNNError as e:
        return {"path": str(path), "error": str(e)}
    if prepared is None:
        return {"path": str(path), "error": "no digit found: the image is blank or holds too little ink"}
    answer = confidence.answer(model, model(prepared.tensor)[0])
    return {"path": str(path), "digit": answer.digit, "confidence": round(answer.confidence, 6),
            "probabilities": [round(p, 6) for p in answer.probabilities], "not_a_digit": answer.not_a_digit}


def predict(args) -> int:
    torch.set_num_threads(1)  # one small image at a time: extra threads only add overhead
    model = weights.load(args.weights)
    ok = True
    for path in expand(args.paths):
        result = classify(model, path)
        ok &= "error" not in result
        print(json.dumps(result), flush=True)
    return 0 if ok else 1


def evaluate(args) -> int:
    model = weights.load(args.weights)
    print(json.dumps({**report(model, data.load(args.data_root, train=False)), "weights": str(args.weights)}))
    return 0


def save_patches(args) -> int:
    from . import patches

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    images = data.load(args.data_root, train=False).images
    for path in args.weights:  # the shipped weights and the training snapshots (weights/replay/*.pt) in one go
        saved = patches.save(weights.load(path, calibrated=False), images, path)
        print(json.dumps({"patches": str(saved), "top": patches.TOP, "weights": str(path)}))
    return 0


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m cnn", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    pr = sub.add_parser("predict", help="classify image files (or folders of images)")
    pr.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    ev = sub.add_parser("evaluate", help="accuracy on the full MNIST test set (10 000 images)")
    ev.add_argument("--data-root", default=None,
                    help="folder holding MNIST/raw/ (default: $MNIST_ROOT, else ./mnist)")
    pa = sub.add_parser("patches", help="what each conv1/conv2 map looks for: the top MNIST test patches, "
                                        "saved beside the weights (<weights>.patches.npz) for the page")
    pa.add_argument("--data-root", default=None,
                    help="folder holding MNIST/raw/ (default: $MNIST_ROOT, else ./mnist)")
    for sp in (pr, ev):
        sp.add_argument("--weights", default=weights.DEFAULT_WEIGHTS,
                        help="weights file, its card beside it (default: weights/cnn.pt)")
    pa.add_argument("--weights", nargs="+", default=[weights.DEFAULT_WEIGHTS], metavar="WEIGHTS",
                    help="weights files, each with its card beside it (default: weights/cnn.pt; the page also "
                         "shows the training snapshots': weights/replay/*.pt)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return {"predict": predict, "evaluate": evaluate, "patches": save_patches}[args.command](args)
    except CNNError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
