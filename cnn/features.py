"""What conv1, conv2 and their pooling layers see and keep, taken from the model itself.

Forward hooks on the model's own modules record each block's activations while
``model(x)`` runs, so the forward pass is written once (in ``cnn/model.py``) and
these views can never drift from what the network really computes. For each
pooling layer, the cell each 2x2 window kept (its argmax) comes from the same
``max_pool2d`` with ``return_indices=True`` and the pool's own settings.

The answer's evidence is exact, not an attribution method: the last layer is linear, so
class ``c``'s score is ``bias_c + sum_{k,i,j} W_out[c, k, i, j] * pooled2[k, i, j]``, and
summing that over the 32 channels gives a 7x7 map of how much each position added.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .model import CNN


@dataclass
class Block:
    """One conv block for one image."""

    before: torch.Tensor  # (C, H, W) after conv + ReLU, before pooling
    after: torch.Tensor  # (C, H/2, W/2) after max-pooling (what the next layer receives)
    kept: torch.Tensor  # (C, H, W) bool: True at the cell each pooling window kept


@dataclass
class Features:
    input: torch.Tensor  # (1, 28, 28): what the network received
    conv1: Block  # before (16, 28, 28), after (16, 14, 14)
    conv2: Block  # before (32, 14, 14), after (32, 7, 7)
    logits: torch.Tensor  # (10,) the class scores
    probabilities: torch.Tensor  # (10,) softmax of the scores

    def ranked(self) -> list[int]:
        """Digits from the most to the least likely."""
        return self.logits.argsort(descending=True).tolist()


def class_weights(model: CNN, pooled: torch.Tensor) -> torch.Tensor:
    """``model.out``'s weight as (10, C, H, W), laid out like the pooled maps it reads.

    ``model.forward`` flattens (C, H, W) in that order, so this view is exact."""
    return model.out.weight.view(model.out.out_features, *pooled.shape)


@torch.inference_mode()
def evidence(model: CNN, features: Features, digit: int) -> torch.Tensor:
    """(7, 7): position (i, j)'s share of ``digit``'s score, summed over conv2's 32 channels.

    ``evidence(...).sum() + model.out.bias[digit] == features.logits[digit]`` exactly (in float)."""
    pooled = features.conv2.after  # (32, 7, 7)
    return (class_weights(model, pooled)[digit] * pooled).sum(0)


def kept_cells(before: torch.Tensor, pool: nn.MaxPool2d) -> torch.Tensor:
    """Bool mask, shaped like ``before`` (B, C, H, W), of the cell each pooling window kept."""
    _, idx = F.max_pool2d(before, pool.kernel_size, pool.stride, pool.padding, pool.dilation,
                          pool.ceil_mode, return_indices=True)
    mask = torch.zeros_like(before, dtype=torch.bool).flatten(2)  # (B, C, H*W)
    mask.scatter_(2, idx.flatten(2), True)
    return mask.view_as(before)


def _blocks(model: CNN) -> dict[str, nn.Sequential]:
    return {"conv1": model.conv1, "conv2": model.conv2}


@torch.inference_mode()
def run(model: CNN, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``model(x)`` for a batch (B, 1, 28, 28), and what its blocks output on the way, read by
    forward hooks: ``{"conv1.before": (B, 16, 28, 28), "conv1.after": (B, 16, 14, 14),
    "conv2.before": (B, 32, 14, 14), "conv2.after": (B, 32, 7, 7)}``; returns (logits, that)."""
    seen: dict[str, torch.Tensor] = {}
    handles = []
    for name, block in _blocks(model).items():
        # block = Sequential(conv, ReLU, MaxPool2d): hook the ReLU (before) and the pool (after).
        handles.append(block[1].register_forward_hook(lambda m, i, o, n=name: seen.__setitem__(n + ".before", o)))
        handles.append(block[2].register_forward_hook(lambda m, i, o, n=name: seen.__setitem__(n + ".after", o)))
    try:
        logits = model(x)  # (B, 10)
    finally:
        for h in handles:
            h.remove()
    return logits, seen


@torch.inference_mode()
def extract(model: CNN, x: torch.Tensor) -> Features:
    """Run ``model`` once on ``x`` (1, 1, 28, 28) and return its feature maps and probabilities."""
    logits, seen = run(model, x)
    blocks = _blocks(model)
    out = {
        name: Block(seen[name + ".before"][0], seen[name + ".after"][0],
                    kept_cells(seen[name + ".before"], block[2])[0])
        for name, block in blocks.items()
    }
    return Features(x[0], out["conv1"], out["conv2"], logits[0], logits.softmax(1)[0])
