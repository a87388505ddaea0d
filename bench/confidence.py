"""Honest confidence, measured in one run: calibration, how much is answered, what is refused.

On the weights and the calibration in their card (cnn/confidence.py, fitted by train.py on
validation data only):

  MNIST test (10 000)     accuracy on all, share answered, accuracy on the answered ones,
                          ECE with plain softmax and with the card's temperature
  drawn digits            the drawn set of bench/robustness.py (the same digits, canvases and
                          styles, through cnn.preprocess.prepare): the same figures
  held-out non-digits     share refused ("not a digit"), per kind, for the held-out generators
                          and fonts of cnn/outliers.py that training never saw (their own seed)
  training generators     the same for new samples of the training generators (for reference)

Goals: MNIST >= 99.4 %; >= 99 % of MNIST test and >= 98 % of drawn digits answered; >= 95 %
of held-out non-digits refused; ECE <= 1 %.

Usage: MNIST_ROOT=... python bench/confidence.py [--n 3000] [--per-kind 400] [--weights W]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import robustness  # noqa: E402  (bench/robustness.py: its drawn set, drawn the same way)
from cnn import confidence, data, outliers, weights  # noqa: E402
from cnn.evaluate import figures as figures_of, logits_of  # noqa: E402

NON_DIGIT_SEED = 31  # the training generators' reference samples (train.py uses 101-103)


def drawn_digits(split: data.Split, n: int, seed: int) -> tuple[list[torch.Tensor | None], torch.Tensor]:
    """bench/robustness.py's drawn set: the same digits, canvases and styles for the same seed."""
    _, labels, _, values, _ = robustness.drawn_test_set(split, n, seed)
    return [robustness.pipeline(v) for v in values], labels


def figures(rule: confidence.Rule, logits: torch.Tensor, labels: torch.Tensor, found: torch.Tensor | None = None) -> dict:
    """``cnn.evaluate.figures`` on the images preprocessing found a digit in (``found``; None:
    all); the others count as wrong and not answered."""
    found = torch.ones(len(labels), dtype=torch.bool) if found is None else found
    f = figures_of(rule, logits, labels[found])
    share = found.double().mean().item()
    return {**f, "accuracy": f["accuracy"] * share, "answered": f["answered"] * share}


def refused(model, rule, family: dict, seed: int, per_kind: int, digits: np.ndarray) -> dict[str, float]:
    out = {}
    for kind in family:
        images, _ = outliers.bank(per_kind, seed, family, digits, kinds=[kind])
        logits = logits_of(model, data.Split(images, torch.zeros(len(images), dtype=torch.long)))
        # a sketch preprocessing finds blank (none here in practice) is refused too: no answer
        out[kind] = (per_kind - int(rule.is_digit(logits).sum())) / per_kind
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    robustness.add_arguments(p)  # --n, --seed, --data-root, --weights: the same drawn set
    p.add_argument("--per-kind", type=int, default=400, help="non-digit sketches per kind (default: 400)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()

    model = weights.load(args.weights)
    rule = confidence.rule_of(model)
    card = weights.read_card(args.weights)
    test = data.load(args.data_root, train=False)
    cal = card[confidence.CARD_KEY]
    print(f"weights {args.weights} (recipe {card.get('recipe')}): temperature {rule.temperature}, "
          f"answer when {rule.score} >= {rule.threshold:.4g}\n(fitted on {cal.get('validation_digits')} validation "
          f"digits{'' if cal.get('validation_held_out') else ' seen in training'}"
          f"{', as stored and drawn' if cal.get('validation_drawn_digits') else ''}: "
          f"at least {cal.get('answered_target', confidence.ANSWERED):.0%} of each answered)\n")

    mnist = figures(rule, logits_of(model, test), test.labels)
    tensors, labels = drawn_digits(test, args.n, args.seed)
    found = torch.tensor([t is not None for t in tensors])
    drawn = figures(rule, model(torch.cat([t for t in tensors if t is not None])).detach(), labels, found)
    print(f"{'':38}{'accuracy':>9}{'answered':>10}{'acc. answered':>15}{'ECE softmax':>13}{'ECE calibrated':>16}")
    for name, f in ((f"MNIST test ({len(test.labels)})", mnist), (f"drawn digits ({args.n}, robustness set)", drawn)):
        print(f"{name:38}{f['accuracy']:8.2%}{f['answered']:10.2%}{f['accuracy_answered']:15.2%}"
              f"{f['ece_uncalibrated']:13.2%}{f['ece']:16.2%}")

    digits = test.images.numpy()  # the held-out numbers are made of test digits, never trained on
    held = refused(model, rule, outliers.HELD_OUT, outliers.HELD_OUT_SEED, args.per_kind, digits)
    seen = refused(model, rule, outliers.TRAIN, NON_DIGIT_SEED, args.per_kind, digits)
    print(f"\nnon-digit sketches refused ({args.per_kind} per kind, through cnn.preprocess.prepare)")
    print(f"  held-out generators and fonts (never trained on): {np.mean(list(held.values())):.2%}")
    for kind, share in held.items():
        print(f"    {kind:14}{share:8.2%}")
    print(f"  training generators, new samples: {np.mean(list(seen.values())):.2%}")
    for kind, share in seen.items():
        print(f"    {kind:14}{share:8.2%}")

    goals = [("MNIST test accuracy >= 99.4 %", mnist["accuracy"] >= 0.994),
             ("MNIST test answered >= 99 %", mnist["answered"] >= 0.99),
             ("drawn digits answered >= 98 %", drawn["answered"] >= 0.98),
             ("held-out non-digits refused >= 95 %", np.mean(list(held.values())) >= 0.95),
             ("ECE calibrated <= 1 % (MNIST and drawn)", max(mnist["ece"], drawn["ece"]) <= 0.01)]
    print("\ngoals: " + "; ".join(f"{g}: {'met' if ok else 'NOT met'}" for g, ok in goals))
    print(f"bench took {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
