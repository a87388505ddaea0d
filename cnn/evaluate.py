"""Accuracy of a model on an MNIST split (all of it, in test-set order), and how much it answers."""
from __future__ import annotations

import torch

from .confidence import rule_of
from .data import Split


@torch.inference_mode()
def logits_of(model: torch.nn.Module, split: Split, device: torch.device | str = "cpu",
              batch_size: int = 1000) -> torch.Tensor:
    """(N, 10) float32 logits for the split's images, in its order (on the CPU)."""
    model.eval()
    out = [model(split.batch(idx, device)[0]).float().cpu() for idx in torch.arange(len(split)).split(batch_size)]
    return torch.cat(out) if out else torch.zeros(0, 10)


def test(model: torch.nn.Module, split: Split, device: torch.device | str = "cpu",
         batch_size: int = 1000) -> torch.Tensor:
    """Per-image correctness, a (N,) bool tensor in the split's order."""
    return logits_of(model, split, device, batch_size).argmax(1) == split.labels


def report(model: torch.nn.Module, split: Split) -> dict:
    """Accuracy on all of ``split``, the share the model answers (its card's "not a digit" rule)
    and the accuracy on those: what ``python -m cnn evaluate`` prints."""
    logits = logits_of(model, split)
    hits = logits.argmax(1) == split.labels
    answered = rule_of(model).is_digit(logits)
    return {"accuracy": round(hits.double().mean().item(), 4), "n": len(hits), "correct": int(hits.sum()),
            "answered": round(answered.double().mean().item(), 4),
            "accuracy_answered": round(hits[answered].double().mean().item(), 4) if answered.any() else None}
