"""One drawing's activations -> the compact value the browser draws the page from.

One job: pack what ``cnn.features.extract`` returned (plus the calibrated answer and the
evidence maps) into one JSON value, and the model's weights into another that the page
receives once. The browser (``cnn/web/maps.js``) draws every map, dot, colour bar,
receptive field and evidence overlay from these and answers a pointer with no request;
the server writes no picture for a stroke.

Encoding (measured by ``bench/latency.py``):
every activation is the model's own float32, bit for bit (the inspector prints them to 3
decimals and a test compares each with ``/inspect``: float16 is off by up to 0.016 at conv2's
values of 16-32). ReLU leaves ~60 % of the cells at exactly 0, so the four layers, the kept
cells and the evidence maps are zlib-compressed together (little-endian float32 as they lie;
split into byte planes they compress ~40 % worse: measured), then base64: ~17-21 kB of zlib,
28-34 kB of JSON a drawing for the ten examples (44 kB for random noise, the worst case seen)::

    blob = zlib(float32 conv1 (16,28,28) | pool1 (16,14,14) | conv2 (32,14,14) |
                pool2 (32,7,7) | evidence (10,7,7)
                | uint8 kept (pool1 cells then pool2 cells: the kept cell's place in its 2x2
                  window, row * 2 + col, as max_pool2d reported it))

``decode(value)`` undoes it (the tests read the served value with it).
"""
from __future__ import annotations

import base64
import zlib

import numpy as np
import torch

from . import render
from .features import Features, evidence
from .inspector import LAYERS, TITLES, chain, check_in, geometry, layer_map
from .model import CNN

VERSION = 1
SHAPES = {"conv1": (16, 28, 28), "pool1": (16, 14, 14), "conv2": (32, 14, 14), "pool2": (32, 7, 7)}
EVIDENCE_SHAPE = (10, 7, 7)
FLOAT_COUNT = sum(int(np.prod(s)) for s in (*SHAPES.values(), EVIDENCE_SHAPE))  # the floats at the head of the blob
WEIGHTS = ("conv1.0.weight", "conv1.0.bias", "conv2.0.weight", "conv2.0.bias", "out.weight", "out.bias")


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def kept_places(features: Features) -> np.ndarray:
    """uint8, one per pooled cell (pool1's then pool2's): which of its 2x2 window's cells won,
    as row * 2 + col inside the window (read from ``Block.kept``, max_pool2d's own argmax)."""
    out = []
    for block in (features.conv1, features.conv2):
        c, h, w = block.kept.shape
        k = block.kept.reshape(c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 2, 4).reshape(c, h // 2, w // 2, 4)
        out.append(k.to(torch.uint8).argmax(-1).flatten().numpy().astype(np.uint8))
    return np.concatenate(out)


@torch.inference_mode()
def encode(model: CNN, features: Features, image: np.ndarray, answer, default: tuple,
           pinned: tuple | None = None, words: str = "") -> dict:
    """The value for one drawing. ``image``: the (28, 28) uint8 network input; ``answer``: its
    ``confidence.Answer``; ``default``: the cell the inspector opens on (layer, channel, row,
    col); ``pinned``: the cell a link names, or None; ``words``: the evidence map's sentences
    (``cnn/explain.py``), shown under it as they are."""
    floats = [layer_map(features, name).numpy().ravel() for name in LAYERS]
    floats.append(torch.stack([evidence(model, features, d) for d in range(10)]).numpy().ravel())
    blob = np.concatenate(floats).astype("<f4").tobytes() + kept_places(features).tobytes()
    return {
        "v": VERSION,
        "input": _b64(np.ascontiguousarray(image, np.uint8).tobytes()),
        "blob": _b64(zlib.compress(blob, 6)),
        "logits": features.logits.tolist(),
        "probabilities": list(answer.probabilities),
        "digit": answer.digit,
        "not_a_digit": answer.not_a_digit,
        "ranked": features.ranked(),
        "default": list(default),
        "pinned": list(pinned) if pinned is not None else None,
        "words": words,
    }


def decode(value: dict) -> dict:
    """``encode``'s value -> {"input": (28, 28) uint8, each layer: (C, H, W) float32,
    "evidence": (10, 7, 7), "kept": {"pool1": (16, 14, 14), "pool2": (32, 7, 7)} uint8 places}."""
    blob = zlib.decompress(base64.b64decode(value["blob"]))
    floats = np.frombuffer(blob, "<f4", FLOAT_COUNT)
    out = {"input": np.frombuffer(base64.b64decode(value["input"]), np.uint8).reshape(28, 28)}
    for name, shape in [*SHAPES.items(), ("evidence", EVIDENCE_SHAPE)]:
        size = int(np.prod(shape))
        out[name], floats = floats[:size].reshape(shape), floats[size:]
    places = np.frombuffer(blob[4 * FLOAT_COUNT:], np.uint8)
    pool1 = int(np.prod(SHAPES["pool1"]))
    out["kept"] = {"pool1": places[:pool1].reshape(SHAPES["pool1"]), "pool2": places[pool1:].reshape(SHAPES["pool2"])}
    return out


def check_cell(cell: tuple) -> tuple[str, int, int, int]:
    """(layer, channel, row, col) inside the maps ``SHAPES`` names, or ``InputError``: the
    inspector's own check (``cnn.inspector.check_in``), without a forward pass."""
    return check_in(SHAPES, *cell)


def look() -> dict:
    """The pictures' constants, once per page: the colour scales (``cnn/render.py``'s, the same
    the filters are drawn on), the kept-cell dot colours, the flat-window rule,
    the inspected cell's frame colour, each layer's shape, title and tiles across, and how many
    floats ``blob`` holds."""
    return {
        "activation": render.ACTIVATION_SCALE.tolist(), "weight": render.WEIGHT_SCALE.tolist(),
        "kept": list(render.RGB_KEPT), "kept_dim": list(render.RGB_KEPT_DIM), "flat": render.FLAT,
        "highlight": list(render.RGB_HIGHLIGHT),
        "shapes": {k: list(v) for k, v in SHAPES.items()}, "titles": dict(TITLES),
        "tile_cols": {"conv1": render.CONV1_COLS, "pool1": render.CONV1_COLS,
                      "conv2": render.CONV2_COLS, "pool2": render.CONV2_COLS},
        "float_count": FLOAT_COUNT,
    }


def weights(model: CNN) -> dict:
    """What the browser needs once per page load to do the inspector's arithmetic: the
    parameters (float32, base64, in ``WEIGHTS`` order, with their shapes) and each spatial
    module's geometry (kernel, stride, padding, dilation) in the order the data flows."""
    state = model.state_dict()
    return {
        "names": list(WEIGHTS),
        "shapes": [list(state[n].shape) for n in WEIGHTS],
        "data": _b64(np.concatenate([state[n].detach().numpy().astype("<f4").ravel() for n in WEIGHTS]).tobytes()),
        "geometry": [[name, *[list(g) for g in geometry(m)]] for name, m in chain(model)],
    }
