"""The answer line's and the evidence map's words: numbers already computed -> page HTML.

One job: turn numbers already computed (never recomputed here) into short, exact sentences a
first-time visitor can follow: the answer and how sure, "Not a digit?" and why, and why the
answer and not the runner-up (the ``/evidence`` values, formatted). The inspector's words are
the browser's (``cnn/web/maps.js``, which prints numbers as ``num`` does here); a browser test
reads them back against ``/inspect``.
"""
from __future__ import annotations


import numpy as np

from .confidence import ANSWERED

def num(v: float) -> str:
    """A value as the inspector prints it: 3 decimals, a true minus sign, and no "−0.000" for a
    small negative value that rounds to zero (the `z` format option drops that sign)."""
    return f"{v:z.3f}".replace("-", "−")


NOT_A_DIGIT = "Not a digit?"  # the label when the drawing looks like none of the ten digits (cnn/confidence.py)
NOT_A_DIGIT_REASON = ("The network only knows ten shapes, the digits 0 to 9, and this drawing looks "
                      "like none of them.")


def a(digit: int) -> str:
    """'a 7', 'an 8' (and 'an 8' is the only one)."""
    return f"{'an' if digit == 8 else 'a'} {digit}"


def evidence(top: dict, runner_up: dict, not_a_digit: bool = False) -> str:
    """Words under the evidence picture: ``top`` and ``runner_up`` are ``/evidence`` results;
    ``not_a_digit``: the page's answer is "Not a digit?", so ``top`` is only the closest digit."""
    d, e = top["digit"], runner_up["digit"]
    closest = (f"<p><b>{NOT_A_DIGIT}</b> Every digit scores low here: the closest, {d}, only "
               f"{num(top['logit'])}, and together the ten scores fall short of what {ANSWERED:.0%} of real digits "
               f"reach. These maps show what little of {a(d)} the network finds.</p>") if not_a_digit else ""
    return (f"{closest}<p><b>Left: why {d}.</b> The score for {d} ({num(top['logit'])}) is exactly the bias "
            f"({num(top['bias'])}) plus the 49 numbers of this 7×7 map, one per position of the last "
            f"pooled maps (each square covers 4×4 input pixels; the cells there see 16×16). "
            f"<span class='red'>Red</span> raised the score, <span class='blue'>blue</span> lowered it. "
            f"<b>Right: why {d} and not {e}</b>, the runner-up: the same map for {d} minus the one for {e} "
            f"(scores {num(top['logit'])} − {num(runner_up['logit'])}); red is where the drawing looks more "
            f"like {a(d)}.</p>")


def answer(probabilities, not_a_digit: bool = False, calibrated: bool = True) -> str:
    """The one-line answer above the canvas (``None``: nothing drawn yet). ``probabilities``: the
    ten calibrated ones; ``not_a_digit``: the card's rule refuses the drawing (cnn/confidence.py);
    ``calibrated=False``: a training snapshot's plain softmax, said as such."""
    if probabilities is None:
        return "<div class='answer' data-digit=''>Draw a digit</div>"
    if not_a_digit:
        return (f"<div class='answer' data-digit='' data-not-a-digit='true'><b>{NOT_A_DIGIT}</b> "
                f"<span class='reason'>{NOT_A_DIGIT_REASON}</span></div>")
    p = np.asarray(probabilities, float)
    d = int(p.argmax())
    sure = "sure" if calibrated else "by its softmax, uncalibrated"
    return (f"<div class='answer' data-digit='{d}'>The network reads <b>{d}</b> "
            f"({p[d]:.1%} {sure})</div>")
