"""The tutorial's training, replayed: snapshots of ``train.py --recipe seed``'s one epoch.

One job: the networks the page can pick besides the shipped weights. ``train.py --recipe seed
--snapshots weights/replay`` saves the model at the optimizer steps in ``STEPS`` (step 0: the
random start; step 1200: the end of the tutorial's one epoch of 60,000 digits in batches of 50),
each as an ordinary weights file with a card (``cnn.weights.save``: its sha256, and its test
accuracy on all 10,000 test digits and on the first 2,000, as the tutorial prints it).

Each snapshot's patches file (``python -m cnn patches --weights weights/replay/*.pt``, as for the
shipped weights) says what each of its maps looks for: ``model.looks_for``, None without one.

Snapshots have no calibration: the page shows their plain softmax (temperature 1) and never
says "Not a digit?" for them, and says so.
"""
from __future__ import annotations

import math
from pathlib import Path

from . import patches
from .confidence import Rule
from .errors import InputError, echo
from .model import CNN
from .weights import load as load_weights
from .weights import read_card

STEPS = (0, 5, 10, 20, 50, 100, 200, 400, 800, 1200)
DEFAULT_FOLDER = Path(__file__).resolve().parent.parent / "weights" / "replay"
SHIPPED = "shipped"


def file_for(folder: str | Path, step: int) -> Path:
    return Path(folder) / f"step_{step:04d}.pt"


def name(step: int) -> str:
    """The network's name in links and the API: ``step-50``."""
    return f"step-{step}"


def uncalibrated(score: str) -> Rule:
    """Softmax at temperature 1, every drawing answered: what a snapshot's probabilities are."""
    return Rule(temperature=1.0, score=score, threshold=-math.inf)


def load(folder: str | Path = DEFAULT_FOLDER, score: str = "energy") -> dict[str, tuple[CNN, dict]]:
    """``{"step-0": (model, card), ...}`` in training order, each verified against its card's
    sha256 and loaded strictly into the tutorial architecture (``cnn.weights.load``, which raises
    ``WeightsError``); {} when the folder has none."""
    out = {}
    for step in STEPS:
        path = file_for(folder, step)
        if not path.is_file():
            continue
        model, card = load_weights(path, calibrated=False), read_card(path)
        model.confidence = uncalibrated(score)
        model.network_name = name(step)
        model.looks_for = patches.load(path)  # what each map looks for, when its patches file matches (else None)
        out[name(step)] = (model.eval(), card)
    return out


def check(network, known) -> str:
    """A network name the page knows, or ``InputError`` with a sentence naming them."""
    if network in (None, ""):
        return SHIPPED
    if isinstance(network, str) and network in known:
        return network
    shown = echo(network)
    steps = [k for k in known if k != SHIPPED]
    choices = f"{SHIPPED}" + (f", or a step of the tutorial's training: {steps[0]} … {steps[-1]}" if steps else "")
    raise InputError(f"Unknown network {shown}: choose {choices}.")
