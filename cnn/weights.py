"""Saving and loading weights with their card (``cnn.json`` beside ``cnn.pt``).

The card records how the weights were made and the sha256 of ``cnn.pt``; loading
checks that hash before unpickling anything, then uses ``weights_only=True`` so a
weights file can never run code.

Saving is a two-step commit that a kill at any instant cannot break: both files are
first written in full to temp files beside their targets; then ``cnn.pt`` is renamed
into place (the commit point) and its card after it. Killed before the commit point,
the previous weights and card are untouched; killed between the two renames, the new
card is still waiting as a temp file, and ``load`` finishes the commit from it.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path

import torch

from .confidence import Rule
from .errors import WeightsError
from .model import CNN

DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "cnn.pt"
FIX = "run `python train.py` to train new weights (or restore weights/ from git)"


def card_path(weights: str | os.PathLike) -> Path:
    return Path(weights).with_suffix(".json")


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_temp(path: Path, data: bytes) -> Path:
    """``data`` in full, on disk, in a temp file beside ``path`` (not yet in its place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def _pending_cards(path: Path) -> list[Path]:
    """Card temp files a killed ``save`` may have left beside ``path``'s card."""
    cpath = card_path(path)
    return sorted(cpath.parent.glob(f".{cpath.name}.*.tmp"))


def save(model: torch.nn.Module, path: str | os.PathLike, card: dict) -> dict:
    """Write ``model``'s state_dict to ``path`` and its card (with sha256) beside it (see module doc)."""
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    # Serialise once in memory so the hash in the card is the hash of the bytes on disk.
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    card = {**card, "sha256": hashlib.sha256(data).hexdigest()}
    tmp_weights = _write_temp(path, data)
    try:
        tmp_card = _write_temp(card_path(path), (json.dumps(card, indent=2) + "\n").encode())
    except BaseException:
        tmp_weights.unlink(missing_ok=True)
        raise
    os.replace(tmp_weights, path)  # the commit point
    os.replace(tmp_card, card_path(path))
    return card


def read_card(path: str | os.PathLike = DEFAULT_WEIGHTS) -> dict:
    cpath = card_path(path)
    try:
        return json.loads(Path(cpath).read_text())
    except FileNotFoundError:
        raise WeightsError(f"Weights card {cpath} is missing; {FIX}.") from None
    except (OSError, ValueError) as e:
        raise WeightsError(f"Weights card {cpath} is unreadable ({e}); {FIX}.") from None


def _finish_save(path: Path, actual: str) -> None:
    """Move into place the card a save killed between its two renames left behind, if any.

    Only a card whose sha256 is that of the weights now in place qualifies: those weights
    were committed, so this is their card. No temp files (the usual case) costs one listing.
    """
    for tmp in _pending_cards(path):
        try:
            if json.loads(tmp.read_text()).get("sha256") == actual:
                os.replace(tmp, card_path(path))
                return
        except (OSError, ValueError, AttributeError):  # unreadable, not JSON, not a dict
            continue


def load(path: str | os.PathLike = DEFAULT_WEIGHTS, device: str | torch.device = "cpu", *,
         calibrated: bool = True) -> CNN:
    """Return a ``CNN`` in eval mode with verified weights, or raise ``WeightsError``.

    The card's calibration is attached as ``model.confidence`` (a ``cnn.confidence.Rule``); a
    card without one raises ``CalibrationError`` (a ``WeightsError``) naming the fix.
    ``calibrated=False``: the network only, for weights whose card has no calibration (the
    training snapshots, ``cnn.replay``) and uses that need none (``python -m cnn patches``)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"Weights file {path} is missing; {FIX}.")
    actual = sha256_file(path)
    _finish_save(path, actual)
    card = read_card(path)
    if card.get("sha256") != actual:
        raise WeightsError(
            f"Weights file {path} does not match its card (sha256 {actual[:12]}… expected "
            f"{str(card.get('sha256'))[:12]}…): it is truncated or was modified; {FIX}."
        )
    model = CNN()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    except Exception as e:  # unpickling / zip / shape errors all mean the same to a user
        raise WeightsError(f"Weights file {path} cannot be loaded ({type(e).__name__}); {FIX}.") from None
    # The calibration and the "not a digit" rule travel with the weights (cnn/confidence.py):
    # a card without them is refused like a missing card, with the same fix.
    if calibrated:
        model.confidence = Rule.from_card(card, f"Weights card {card_path(path)}")
    return model.to(device).eval()
