"""What each map looks for: the MNIST test patches that make each conv1 and conv2 map respond most.

One job: for every map of conv1 (16) and conv2 (32), find the ``TOP`` test digits on which that
map's strongest response (over all positions, after ReLU, as the page shows it) is largest, one
patch per digit, and cut out that cell's receptive field: 5x5 input
pixels for conv1, 14x14 for conv2 (zeros where the field passes the border, as the convolution's
padding reads). The activations come from ``cnn.features.run`` (the model's own forward pass,
read by hooks) and the fields from ``cnn.inspector.span``.

Computed once per weights file (``python -m cnn patches``, ~1 s on 2 cores for the 10,000 test
digits) into ``<weights>.patches.npz`` beside it, which records the sha256 of the weights it was
computed from: the page shows the patches only for those weights (``load``).
"""
from __future__ import annotations

import base64
import os
from pathlib import Path

import numpy as np
import torch

from .features import run
from .inspector import span
from .model import CNN
from .weights import sha256_file

TOP = 9  # patches per map
LAYERS = {"conv1": ("conv1.before", 5), "conv2": ("conv2.before", 14)}  # hooked output, field side


def path_for(weights: str | os.PathLike) -> Path:
    """``weights/cnn.pt`` -> ``weights/cnn.patches.npz``."""
    return Path(weights).with_suffix(".patches.npz")


def strongest(model: CNN, images: torch.Tensor, batch: int = 500) -> dict[str, tuple[np.ndarray, ...]]:
    """Per layer: (values (C, TOP), image indices (C, TOP), rows (C, TOP), cols (C, TOP)): for
    each map, the ``TOP`` digits of ``images`` (N, 28, 28) uint8 with the largest maximum
    response, largest first, and where in that map the maximum is (the first one, row-major)."""
    best = {name: [] for name in LAYERS}
    for start in range(0, len(images), batch):
        x = images[start:start + batch].float().div(255)[:, None]
        _, seen = run(model, x)
        for name, (hook, _) in LAYERS.items():
            a = seen[hook]  # (B, C, H, W)
            flat = a.flatten(2)  # (B, C, H*W)
            value, where = flat.max(2)  # (B, C): the first maximum of each map on each digit
            best[name].append((value, where, torch.arange(start, start + len(x))))
    out = {}
    for name, parts in best.items():
        value = torch.cat([v for v, _, _ in parts])  # (N, C)
        where = torch.cat([w for _, w, _ in parts])
        index = torch.cat([i for _, _, i in parts])
        # stable: among equal values the earlier digit first
        order = torch.sort(value, dim=0, descending=True, stable=True).indices[:TOP]  # (TOP, C)
        width = seen[LAYERS[name][0]].shape[-1]
        cols = torch.gather(where, 0, order)
        out[name] = (torch.gather(value, 0, order).T.numpy(), index[order].T.numpy(),
                     (cols // width).T.numpy(), (cols % width).T.numpy())
    return out


def cut(model: CNN, image: np.ndarray, layer: str, row: int, col: int) -> np.ndarray:
    """The receptive field of ``layer``'s cell (row, col) on the (28, 28) uint8 ``image``, as the
    full square the cell reads (``inspector.span``): zeros where it passes the border."""
    top, left, bottom, right = span(model, layer, row, col)
    m = max(0, -top, -left, bottom - image.shape[0], right - image.shape[1])
    padded = np.pad(image, m)
    return padded[top + m: bottom + m, left + m: right + m]


def compute(model: CNN, images: torch.Tensor, weights_sha256: str) -> dict[str, np.ndarray]:
    """Everything the page shows, as arrays for ``np.savez``."""
    found = strongest(model, images)
    out = {"sha256": np.array(weights_sha256), "count": np.array(len(images))}
    for name, (value, index, rows, cols) in found.items():
        crops = np.stack([np.stack([cut(model, images[i].numpy(), name, r, c)
                                    for i, r, c in zip(index[m], rows[m], cols[m])]) for m in range(len(index))])
        out |= {f"{name}.value": value.astype(np.float32), f"{name}.index": index.astype(np.int32),
                f"{name}.row": rows.astype(np.int16), f"{name}.col": cols.astype(np.int16),
                f"{name}.patch": crops.astype(np.uint8)}  # (C, TOP, side, side)
    return out


def save(model: CNN, images: torch.Tensor, weights: str | os.PathLike) -> Path:
    path = path_for(weights)
    np.savez_compressed(path, **compute(model, images, sha256_file(weights)))
    return path


def load(weights: str | os.PathLike) -> dict | None:
    """The patches file beside ``weights`` as the page's JSON-ready dict, or None when there is
    none or it was computed from other weights (then the page shows no patches)."""
    path = path_for(weights)
    if not path.is_file():
        return None
    with np.load(path) as z:
        if str(z["sha256"]) != sha256_file(weights):
            return None
        return {"count": int(z["count"]), "top": TOP, **{
            name: {"side": side, "value": z[f"{name}.value"].tolist(), "index": z[f"{name}.index"].tolist(),
                   "patch": base64.b64encode(z[f"{name}.patch"].tobytes()).decode("ascii")}
            for name, (_, side) in LAYERS.items()}}
