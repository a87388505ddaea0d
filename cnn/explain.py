"""The inspector's and the evidence map's words: what ``cnn.inspector`` returns -> page HTML.

One job: turn numbers already computed (never recomputed here) into short, exact
explanations a first-time visitor can follow: which cell, where it looks, the sum that
gives its value, what pooling kept, how it votes. Every number shown is the JSON value of
``/inspect`` or ``/evidence``, formatted; every element carries a ``data-`` attribute or an
id the browser test reads.
"""
from __future__ import annotations

from html import escape

import numpy as np

from .confidence import ANSWERED
from .inspector import TITLES

HINT = ("<p class='hint'>Click or tap any cell of the four map pictures (③–⑥) to see where it "
        "looks in your drawing and how its value was computed.</p>")
NO_DRAWING = "<p class='hint'>Draw a digit first: then click any cell of the maps to inspect it.</p>"


def num(v: float) -> str:
    """A value as the inspector prints it: 3 decimals, a true minus sign, and no "−0.000" for a
    small negative value that rounds to zero (the `z` format option drops that sign)."""
    return f"{v:z.3f}".replace("-", "−")


def _signed(v: float, hi: float) -> str:
    """A table cell tinted by sign and size: red positive, blue negative (as the filters)."""
    a = min(1.0, abs(v) / hi) * 0.55 if hi > 0 else 0.0
    rgb = "214,39,40" if v > 0 else "31,119,180"
    return f"<td style='background:rgba({rgb},{a:.2f})'>{num(v)}</td>"


def _table(a, caption: str, signed: bool = True, mark: tuple[int, int] | None = None) -> str:
    a = np.asarray(a, float)
    hi = float(np.abs(a).max()) or 1.0
    rows = []
    for i, row in enumerate(a):
        cells = []
        for j, v in enumerate(row):
            cell = _signed(v, hi) if signed else f"<td>{num(v)}</td>"
            if mark == (i, j):
                cell = cell.replace("<td", "<td class='won'", 1)
            cells.append(cell)
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table class='cells'><caption>{caption}</caption>{''.join(rows)}</table>"


def _field(box: list[int]) -> str:
    top, left, bottom, right = box
    return (f"input rows {top}–{bottom - 1}, columns {left}–{right - 1} "
            f"({bottom - top}×{right - left} pixels)")


def inspector(cell: dict, *, default: bool = False) -> str:
    """The inspector panel for one ``cnn.inspector.inspect`` result."""
    layer, c, r, q, v = cell["layer"], cell["channel"], cell["row"], cell["col"], cell["value"]
    why = (" — the cell that voted most for the answer; click any other cell" if default else "")
    head = (f"<h3 data-layer='{layer}' data-channel='{c}' data-row='{r}' data-col='{q}'>"
            f"{escape(TITLES[layer])}, map {c}, row {r}, column {q}: "
            f"<b data-value='{v!r}'>{num(v)}</b>{why}</h3>"
            f"<p>It looks at {_field(cell['receptive_field'])} of the network input: the "
            f"<span class='green'>green box</span>; nothing outside it can change this value.</p>")
    if layer == "conv1":
        s = float(np.sum(cell["products"]))
        body = ("<div class='row'>" + _table(cell["patch"], "input patch", signed=False)
                + "<span class='op'>×</span>" + _table(cell["weights"], f"filter {c}")
                + "<span class='op'>=</span>" + _table(cell["products"], "products") + "</div>"
                + _sum_line(s, "25 products", cell))
    elif layer == "conv2":
        terms = np.asarray(cell["channel_terms"])
        order = np.argsort(-np.abs(terms))
        rows = "".join(f"<tr><td>map {k}</td>{_signed(float(terms[k]), float(np.abs(terms).max()) or 1.0)}</tr>"
                       for k in order)
        body = (f"<p>conv2's filter {c} holds a 5×5 slice for each of the 16 pooled conv1 maps; each "
                f"slice times its map's 5×5 patch gives one term (largest first):</p>"
                f"<table class='cells terms'>{rows}</table>" + _sum_line(float(terms.sum()), "16 terms", cell))
    else:
        top, left = cell["window_origin"]
        kr, kc = cell["kept"]
        before = "conv1" if layer == "pool1" else "conv2"
        body = (_table(cell["window"], f"the 2×2 window of {before}, rows {top}–{top + 1}, "
                                       f"columns {left}–{left + 1}", signed=False, mark=(kr - top, kc - left))
                + f"<p>Max-pooling keeps the largest of the four: row {kr}, column {kc} (the dot on "
                  f"{'③' if layer == 'pool1' else '⑤'}). It looks at "
                  f"{_field(cell['kept_receptive_field'])}: the <span class='cyan'>cyan box</span>, "
                  f"inside the window's own field.</p>")
        if layer == "pool2":
            body += _votes(cell["class_terms"])
    return head + body


def _sum_line(total: float, what: str, cell: dict) -> str:
    pre, v = cell["pre_activation"], cell["value"]
    return (f"<p class='sum'>sum of the {what} {num(total)} + bias {num(cell['bias'])} = "
            f"{num(pre)}; ReLU keeps {'it' if pre > 0 else 'nothing below 0'}: <b>{num(v)}</b></p>")


def _votes(terms: list[float]) -> str:
    hi = max(abs(t) for t in terms) or 1.0
    rows = "".join(
        f"<tr><td>{d}</td><td class='bar'><span class='{'pos' if t > 0 else 'neg'}' "
        f"style='width:{abs(t) / hi * 100:.0f}%'></span></td><td>{num(t)}</td></tr>"
        for d, t in enumerate(terms))
    return ("<p>The linear layer reads this cell directly. Its weight for each digit times its value "
            "is what it adds to that digit's score:</p>"
            f"<table class='cells votes'>{rows}</table>")


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


def answer(probabilities, not_a_digit: bool = False) -> str:
    """The one-line answer above the canvas (``None``: nothing drawn yet). ``probabilities``: the
    ten calibrated ones; ``not_a_digit``: the card's rule refuses the drawing (cnn/confidence.py)."""
    if probabilities is None:
        return "<div class='answer' data-digit=''>Draw a digit</div>"
    if not_a_digit:
        return (f"<div class='answer' data-digit='' data-not-a-digit='true'><b>{NOT_A_DIGIT}</b> "
                f"<span class='reason'>{NOT_A_DIGIT_REASON}</span></div>")
    p = np.asarray(probabilities, float)
    d = int(p.argmax())
    return (f"<div class='answer' data-digit='{d}'>The network reads <b>{d}</b> "
            f"({p[d]:.1%} sure)</div>")
