"""Accuracy of a model on an MNIST split (all of it, in test-set order)."""
from __future__ import annotations

import torch

from .data import Split


@torch.inference_mode()
def test(model: torch.nn.Module, split: Split, device: torch.device | str = "cpu",
         batch_size: int = 1000) -> torch.Tensor:
    """Per-image correctness, a (N,) bool tensor in the split's order."""
    model.eval()
    hits = []
    for idx in torch.arange(len(split)).split(batch_size):
        x, y = split.batch(idx, device)
        hits.append((model(x).argmax(1) == y).cpu())
    return torch.cat(hits)
