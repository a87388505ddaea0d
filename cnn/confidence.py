"""Calibrated probabilities and the "not a digit" rule: one source of truth for both.

``train.py`` fits a ``Rule`` on validation data only (MNIST training digits held out of
training, and non-digit sketches of the training generators drawn with another seed) and
writes it into the weights card; ``cnn.weights.load`` reads it back and attaches it to the
model (``model.confidence``). The page, ``/predict``, ``python -m cnn predict|evaluate`` and
the benches all go through ``Rule.answer`` / ``Rule.probabilities`` below.

  temperature  the logits are divided by it before softmax (temperature scaling, Guo et al.
               2017): the ``T`` minimising the negative log-likelihood of the validation digits
  score        how digit-like a drawing looks: ``msp`` (the calibrated top probability),
               ``energy`` (``T * logsumexp(logits / T)``, Liu et al. 2020) or ``max_logit``;
               the one that refuses the most validation non-digits at the threshold below
  threshold    the score at or above which the network answers: the highest that still answers
               ``answered`` (99 %) of the validation digits, both as MNIST stores them and drawn
               on the page's canvas (a visitor's digits are drawings)
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from .errors import CalibrationError

SCORES = ("msp", "energy", "max_logit")
ANSWERED = 0.99  # share of validation digits the threshold answers
CARD_KEY = "confidence"
FIX = "run `python train.py` to train weights with a calibrated card"


def score(name: str, logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """(..., 10) logits -> (...) score, higher for drawings that look more like a digit."""
    logits = logits.float()
    if name == "msp":
        return (logits / temperature).softmax(-1).amax(-1)
    if name == "energy":  # minus the free energy: large when some class fits well
        return temperature * torch.logsumexp(logits / temperature, -1)
    if name == "max_logit":
        return logits.amax(-1)
    raise ValueError(f"unknown score {name!r}; one of {', '.join(SCORES)}")


@dataclass(frozen=True)
class Answer:
    """What the network says about one drawing."""

    probabilities: list[float]  # ten calibrated probabilities, summing to 1
    digit: int  # the most likely digit (the argmax of the logits)
    confidence: float  # its calibrated probability
    not_a_digit: bool  # True: the drawing looks like none of the ten digits


@dataclass(frozen=True)
class Rule:
    temperature: float
    score: str
    threshold: float

    @property
    def calibrated(self) -> bool:
        """False for a rule that answers everything at temperature 1 (``cnn.replay``'s snapshots)."""
        return self.threshold != -float("inf")

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Calibrated probabilities: softmax(logits / T), same shape, same argmax."""
        return (logits.float() / self.temperature).softmax(-1)

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        return score(self.score, logits, self.temperature)

    def is_digit(self, logits: torch.Tensor) -> torch.Tensor:
        """(..., 10) logits -> (...) bool: whether the network answers (the drawing looks like a digit)."""
        return self.scores(logits) >= self.threshold

    def answer(self, logits: torch.Tensor) -> Answer:
        """The answer for one drawing's (10,) or (1, 10) logits."""
        logits = logits.detach().reshape(-1)
        p = self.probabilities(logits)
        digit = int(logits.argmax())
        return Answer([float(v) for v in p], digit, float(p[digit]), not bool(self.is_digit(logits)))

    def card(self, **extra) -> dict:
        return {**asdict(self), **extra}

    @classmethod
    def from_card(cls, card: dict, where: str = "the weights card") -> "Rule":
        """The rule stored in a weights card, or ``CalibrationError`` naming the fix."""
        entry = card.get(CARD_KEY) if isinstance(card, dict) else None
        if not isinstance(entry, dict):
            raise CalibrationError(f"{where} has no calibration (temperature, score and threshold "
                                   f"for saying 'not a digit'); {FIX}.")
        try:
            rule = cls(float(entry["temperature"]), str(entry["score"]), float(entry["threshold"]))
        except (KeyError, TypeError, ValueError):
            rule = None
        if rule is None or rule.score not in SCORES or not math.isfinite(rule.threshold) \
                or not (math.isfinite(rule.temperature) and rule.temperature > 0):
            raise CalibrationError(f"{where} has an incomplete or invalid calibration "
                                   f"({entry!r:.120}); {FIX}.")
        return rule


def rule_of(model: torch.nn.Module) -> Rule:
    """The rule ``cnn.weights.load`` attached to ``model``."""
    rule = getattr(model, CARD_KEY, None)
    if not isinstance(rule, Rule):
        raise CalibrationError(f"This model has no calibration (load it with cnn.weights.load); {FIX}.")
    return rule


def answer(model: torch.nn.Module, logits: torch.Tensor) -> Answer:
    """``model``'s answer for one drawing's logits: calibrated probabilities and "not a digit"."""
    return rule_of(model).answer(logits)


# ---------------------------------------------------------------- fitting (train.py)

def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature minimising the mean negative log-likelihood of ``labels``.

    NLL(T) is smooth and has one minimum in log T; a log-spaced grid from 0.05 to 20 then a
    golden-section search around the best grid point find it to ~1e-4 without tuning."""
    logits, labels = logits.double(), labels.long()

    def nll(log_t: float) -> float:
        return torch.nn.functional.cross_entropy(logits / math.exp(log_t), labels).item()

    grid = torch.linspace(math.log(0.05), math.log(20.0), 121).tolist()
    best = min(range(len(grid)), key=lambda i: nll(grid[i]))
    lo, hi = grid[max(0, best - 1)], grid[min(len(grid) - 1, best + 1)]
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(40):
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if nll(a) < nll(b):
            hi = b
        else:
            lo = a
    return round(math.exp((lo + hi) / 2), 4)


def threshold_for(scores: torch.Tensor, answered: float = ANSWERED) -> float:
    """The largest threshold at which at least ``answered`` of ``scores`` are answered (>=)."""
    s = scores.double().sort().values
    return float(s[int(math.floor((1 - answered) * len(s) + 1e-9))])


def fit(digits: list[tuple[torch.Tensor, torch.Tensor]], outlier_logits: torch.Tensor | None = None,
        answered: float = ANSWERED) -> tuple[Rule, dict]:
    """The rule for validation digits and, if given, validation non-digits' ``outlier_logits``;
    and what it measured there: {score: share of the non-digits refused}.

    ``digits``: (logits, labels) of the validation digits in one or more forms (as MNIST stores
    them, drawn on the page's canvas): the temperature is fitted on all of them together, and the
    threshold answers at least ``answered`` of each form. The score is the one that refuses the
    most validation non-digits at its threshold."""
    t = fit_temperature(torch.cat([l for l, _ in digits]), torch.cat([y for _, y in digits]))

    threshold = {name: min(threshold_for(score(name, logits, t), answered) for logits, _ in digits)
                 for name in SCORES}
    some = outlier_logits is not None and len(outlier_logits) > 0
    refused = {name: float((score(name, outlier_logits, t) < threshold[name]).double().mean()) if some
               else float("nan") for name in SCORES}
    # without non-digits to compare on, the calibrated top probability (Hendrycks & Gimpel 2017)
    name = max(SCORES, key=lambda n: (refused[n], n == "msp")) if some else "msp"
    return Rule(t, name, threshold[name]), refused


def ece(probabilities: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """Expected calibration error: sum over equal-width confidence bins of |accuracy - confidence|
    weighted by the bin's share of the images (Guo et al. 2017), on the top class."""
    conf, pred = probabilities.double().max(-1)
    hit = (pred == labels).double()
    which = (conf * bins).ceil().clamp(1, bins).long() - 1  # (k/bins, (k+1)/bins] -> k
    total = 0.0
    for k in range(bins):
        m = which == k
        if m.any():
            total += m.double().mean().item() * abs(hit[m].mean().item() - conf[m].mean().item())
    return total
