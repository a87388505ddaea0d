"""Accuracy of a model on an MNIST split (all of it, in test-set order), and how much it answers."""
from __future__ import annotations

import torch

from .confidence import ece, rule_of
from .data import Split


@torch.inference_mode()
def logits_of(model: torch.nn.Module, split: Split, device: torch.device | str = "cpu",
              batch_size: int = 250) -> torch.Tensor:
    """(N, 10) float32 logits for the split's images, in its order (on the CPU).

    Batches of 250: on a 2-core CPU the 10,000 test digits take 0.85 s against 1.45 s in batches
    of 1,000, with bit-identical logits for the shipped weights and every snapshot (measured here;
    the cards' accuracies were made with batches of 1,000)."""
    model.eval()
    out = [model(split.batch(idx, device)[0]).float().cpu() for idx in torch.arange(len(split)).split(batch_size)]
    return torch.cat(out) if out else torch.zeros(0, 10)


def test(model: torch.nn.Module, split: Split, device: torch.device | str = "cpu",
         batch_size: int = 250) -> torch.Tensor:
    """Per-image correctness, a (N,) bool tensor in the split's order."""
    return logits_of(model, split, device, batch_size).argmax(1) == split.labels


def figures(rule, logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """What ``rule`` (a ``cnn.confidence.Rule``) makes of (N, 10) ``logits`` for ``labels``:
    accuracy on all, the share answered, the accuracy on those (None when none is), and the
    ECE of the calibrated and of the plain softmax probabilities. One place for these figures:
    ``python -m cnn evaluate``, the card's calibration (train.py) and bench/confidence.py."""
    hits = logits.argmax(1) == labels
    answered = rule.is_digit(logits)
    return {"accuracy": hits.double().mean().item(), "answered": answered.double().mean().item(),
            "accuracy_answered": hits[answered].double().mean().item() if answered.any() else None,
            "ece": ece(rule.probabilities(logits), labels), "ece_uncalibrated": ece(logits.softmax(1), labels)}


def report(model: torch.nn.Module, split: Split) -> dict:
    """Accuracy on all of ``split``, the share the model answers (its card's "not a digit" rule)
    and the accuracy on those: what ``python -m cnn evaluate`` prints."""
    logits = logits_of(model, split)
    f = figures(rule_of(model), logits, split.labels)
    answered = f["accuracy_answered"]
    return {"accuracy": round(f["accuracy"], 4), "n": len(logits), "correct": int((logits.argmax(1) == split.labels).sum()),
            "answered": round(f["answered"], 4), "accuracy_answered": None if answered is None else round(answered, 4)}
