"""One cell of one feature map -> where it looks, how its value was computed, what pooling kept.

Every number here is read from the model's own modules and from one ``extract`` result:
the geometry (receptive fields, pooling windows) from each module's ``kernel_size``,
``stride`` and ``padding``; a conv cell's arithmetic from that conv's own ``weight`` and
``bias`` applied to the very input it received during the forward pass; a pooled cell's
window and winner from ``Features``' maps and kept cells; a pooled conv2 cell's votes from
``model.out``'s weight. No second copy of the network: a test checks each value against
the model's activation and each receptive field against autograd.

Layers, in the order the data flows, and the map each one names::

    conv1  conv1 + ReLU      (16, 28, 28)   Features.conv1.before
    pool1  after max-pool 1  (16, 14, 14)   Features.conv1.after
    conv2  conv2 + ReLU      (32, 14, 14)   Features.conv2.before
    pool2  after max-pool 2  (32, 7, 7)     Features.conv2.after  -> model.out
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .errors import InputError, echo, whole
from .features import Features, class_weights
from .features import evidence as features_evidence
from .model import CNN

LAYERS = ("conv1", "pool1", "conv2", "pool2")
TITLES = {"conv1": "conv1 + ReLU", "pool1": "conv1 after max-pooling",
          "conv2": "conv2 + ReLU", "pool2": "conv2 after max-pooling"}


def chain(model: CNN) -> list[tuple[str, nn.Module]]:
    """The spatial modules from the input to each named layer, in order (ReLU keeps geometry)."""
    return [("conv1", model.conv1[0]), ("pool1", model.conv1[2]),
            ("conv2", model.conv2[0]), ("pool2", model.conv2[2])]


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def geometry(module: nn.Module) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]]:
    """(kernel, stride, padding, dilation), each (rows, cols), of a Conv2d or MaxPool2d."""
    stride = module.stride if module.stride is not None else module.kernel_size  # pools default to it
    return (_pair(module.kernel_size), _pair(stride), _pair(module.padding), _pair(module.dilation))


def span(model: CNN, layer: str, row: int, col: int) -> list[int]:
    """``[top, left, bottom, right]`` (ends exclusive) of the input positions cell (row, col) of
    ``layer`` reads, before clipping: where it passes the border it reads the padding's zeros.
    Walks the modules back to the input: output index i of a module reads its input from
    ``i*s - p`` to ``i*s - p + (k-1)*d``."""
    spans = [[row, row], [col, col]]  # inclusive index range in the current layer
    modules = [m for name, m in chain(model)[: LAYERS.index(layer) + 1]]
    for module in reversed(modules):
        k, s, p, d = geometry(module)
        spans = [[lo * s[a] - p[a], hi * s[a] - p[a] + (k[a] - 1) * d[a]] for a, (lo, hi) in enumerate(spans)]
    (top, bottom), (left, right) = spans
    return [top, left, bottom + 1, right + 1]


def receptive_field(model: CNN, layer: str, row: int, col: int, size: tuple[int, int] = (28, 28)) -> list[int]:
    """``span`` clipped to the ``size`` input: the input pixels the cell depends on."""
    top, left, bottom, right = span(model, layer, row, col)
    return [max(0, top), max(0, left), min(size[0], bottom), min(size[1], right)]


def layer_map(features: Features, layer: str) -> torch.Tensor:
    """The (C, H, W) map ``layer`` names."""
    block = features.conv1 if layer in ("conv1", "pool1") else features.conv2
    return block.before if layer.startswith("conv") else block.after


def check(features: Features, layer, channel, row, col) -> tuple[str, int, int, int]:
    """The cell as (layer, channel, row, col), or ``InputError`` with a sentence saying what is allowed."""
    return check_in({name: tuple(layer_map(features, name).shape) for name in LAYERS}, layer, channel, row, col)


def check_in(shapes: dict[str, tuple[int, int, int]], layer, channel, row, col) -> tuple[str, int, int, int]:
    """``check`` for layers whose maps are ``shapes[layer]`` (channels, rows, cols), known without
    a forward pass (a link's cell: ``cnn.payload.check_cell``)."""
    if not isinstance(layer, str) or layer not in shapes:
        raise InputError(f"Unknown layer {echo(layer)}: choose one of {', '.join(shapes)}.")
    shape = shapes[layer]
    cell = [whole(v, 0, n - 1) for v, n in zip((channel, row, col), shape)]
    for name, v, got, n in zip(("channel", "row", "col"), (channel, row, col), cell, shape):
        if got is None:
            raise InputError(f"{layer} has {shape[0]} maps of {shape[1]}x{shape[2]}: {name} must be a whole "
                             f"number from 0 to {n - 1}, not {echo(v)}.")
    return (layer, *cell)


def _conv(model: CNN, features: Features, layer: str, channel: int, row: int, col: int) -> dict:
    """A conv cell: its input patch times its filter, summed, plus bias; then ReLU."""
    conv = dict(chain(model))[layer]
    x = features.input if layer == "conv1" else features.conv1.after  # what this conv received
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = geometry(conv)
    assert conv.padding_mode == "zeros" and conv.groups == 1
    padded = F.pad(x, (pw, pw, ph, ph))  # zeros outside the drawing, as the conv sees it
    top, left = row * sh, col * sw
    patch = padded[:, top : top + (kh - 1) * dh + 1 : dh, left : left + (kw - 1) * dw + 1 : dw]  # (C_in, kh, kw)
    weight = conv.weight[channel].detach()  # (C_in, kh, kw)
    products = patch * weight
    bias = float(conv.bias[channel])
    pre = float(products.sum()) + bias
    out = {"bias": bias, "pre_activation": pre}
    if layer == "conv1":
        out |= {"patch": patch[0].tolist(), "weights": weight[0].tolist(), "products": products[0].tolist()}
    else:
        out["channel_terms"] = products.sum((1, 2)).tolist()  # one term per input map
    return out


def _pool(model: CNN, features: Features, layer: str, channel: int, row: int, col: int) -> dict:
    """A pooled cell: its window in the map before pooling, and which cell won (the kept cell)."""
    pool = dict(chain(model))[layer]
    before_layer = "conv1" if layer == "pool1" else "conv2"
    block = features.conv1 if layer == "pool1" else features.conv2
    (kh, kw), (sh, sw), (ph, pw), _ = geometry(pool)
    assert (ph, pw) == (0, 0)  # the tutorial's pools; a padded window would need clipping here
    top, left = row * sh, col * sw
    window = block.before[channel, top : top + kh, left : left + kw]
    kept = block.kept[channel, top : top + kh, left : left + kw].nonzero()[0].tolist()  # the argmax max_pool2d reported
    kept = [top + kept[0], left + kept[1]]
    return {"window": window.tolist(), "window_origin": [top, left], "kept": kept,
            "kept_receptive_field": receptive_field(model, before_layer, *kept, size=tuple(features.input.shape[-2:]))}


@torch.inference_mode()
def inspect(model: CNN, features: Features, layer: str, channel: int, row: int, col: int) -> dict:
    """Everything the inspector shows for one cell, as plain JSON-ready numbers.

    Always: ``layer``, ``channel``, ``row``, ``col``, ``value``, ``receptive_field``.
    conv1: ``bias``, ``pre_activation``, ``patch``/``weights``/``products`` (5x5 each).
    conv2: ``bias``, ``pre_activation``, ``channel_terms`` (16: one per input map).
    pool1/pool2: ``window`` (2x2), ``kept`` ([row, col] in the map before pooling) and its
    ``kept_receptive_field``. pool2 also: ``class_terms`` (10): ``W_out[c] * value``."""
    layer, channel, row, col = check(features, layer, channel, row, col)
    value = float(layer_map(features, layer)[channel, row, col])
    out = {"layer": layer, "channel": channel, "row": row, "col": col, "value": value,
           "receptive_field": receptive_field(model, layer, row, col, size=tuple(features.input.shape[-2:]))}
    out |= (_conv if layer.startswith("conv") else _pool)(model, features, layer, channel, row, col)
    if layer == "pool2":
        weights = class_weights(model, features.conv2.after)[:, channel, row, col]  # (10,)
        out["class_terms"] = (weights * value).tolist()
    return out


@torch.inference_mode()
def evidence(model: CNN, features: Features, digit: int | None = None) -> dict:
    """``/evidence``: where ``digit``'s score (default: the top class) came from, as
    ``{"digit", "logit", "bias", "map"}`` with ``sum(map) + bias == logit`` (float rounding)."""
    if digit is None:
        digit = features.ranked()[0]
    got = whole(digit, 0, len(features.logits) - 1)
    if got is None:
        raise InputError(f"digit must be a whole number from 0 to {len(features.logits) - 1} "
                         f"(or empty for the answer), not {echo(digit)}.")
    digit = got
    return {"digit": digit, "logit": float(features.logits[digit]), "bias": float(model.out.bias[digit]),
            "map": features_evidence(model, features, digit).tolist()}


@torch.inference_mode()
def strongest_vote(model: CNN, features: Features) -> tuple[str, int, int, int]:
    """The pool2 cell that added the most to the answer's score: where the inspector opens."""
    pooled = features.conv2.after
    votes = class_weights(model, pooled)[features.ranked()[0]] * pooled  # (32, 7, 7)
    c, r, q = (int(i) for i in torch.unravel_index(votes.argmax(), votes.shape))
    return "pool2", c, r, q
