"""Non-digit sketches: what a visitor may draw instead of a digit, made here, reproducibly.

Used to teach the network what is *not* a digit (outlier exposure, ``train.py --recipe best``)
and to measure how often it says so (``bench/confidence.py``, ``tests/test_confidence.py``).
Nothing is downloaded: strokes and shapes are generated, letters and symbols come from the
DejaVu and Liberation fonts (Debian: ``fonts-dejavu-core``, ``fonts-liberation``), numbers
from MNIST digits.

Every sketch is drawn the way the page receives a drawing: black strokes of a round brush
(the page's 28 px most of the time, 12-40 px otherwise) on the page's 400x400 canvas, at
30-90 % of its side, anywhere on it, handed to ``cnn.preprocess.prepare`` as the Sketchpad
value (white background, transparent stroke layer, their composite; ``bank`` hands over the
composite alone, which prepare reads to the same bit).

Two families, drawn by different generators, with different fonts and different seeds:

  TRAIN      strokes, shapes, glyphs (DejaVu), numbers (two MNIST train digits: side by side,
             on top of each other, or one digit broken in two)
  HELD_OUT   letters and symbols (Liberation), doodles (faces, houses, suns, hearts, ...),
             scribbles (hatching, loops, scribble balls, waves), numbers (three or four MNIST
             test digits in a row)

Training never sees a held-out generator, font or digit. Glyphs that are drawn like a digit
(O, I, l, S, Z, B, b, g, q, ...) are in neither family: a visitor drawing an O *has* drawn a 0.
Shapes avoid them too: no lone circle or line, no tall rectangle, no 5- or 6-sided polygon.

``bank(n, seed, TRAIN, digits)`` renders ``n`` of them to 28x28 (a uint8 tensor) in a few
tens of seconds for tens of thousands (two processes), the same for any number of workers.
"""
from __future__ import annotations

import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .errors import CNNError
from .preprocess import prepare

CANVAS = 400  # the page's canvas side (cnn.sketch.CANVAS; not imported: that module needs Gradio)
BRUSH = 28  # the page's brush diameter (2 * cnn.sketch.BRUSH_RADIUS)
SIZE = (0.3, 0.9)  # a sketch's longest side, as a fraction of the canvas
FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", str(Path.home() / ".fonts"))

# Glyphs left out because a visitor drawing them draws a digit (0: O o Q D, 1: I l i j J |,
# 2: Z z, 3: Э З з, 4: Ч ч, 5: S s, 6: b G Б б, 8: B В, 9: g q), plus marks that preprocessing
# turns into a bar or a blob like a 1 ( ! ( ) [ ] / \ ).
LOOKALIKES = set("OoQDIlijJ|ZzSsbGBgq!()[]/\\ЭЗзЧчБбВОоСс")
LATIN = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz" if c not in LOOKALIKES]
TRAIN_SYMBOLS = [c for c in "#%&@*+=?<>~{}αγεηλμξπτφψωΓΔΛΞΠΣΦΨΩ" if c not in LOOKALIKES]
HELD_OUT_SYMBOLS = [c for c in "#%&@*+=?<>~{}ЖДФЩШЯЮЛПИГжлпфшщюяъ" if c not in LOOKALIKES]


# ---------------------------------------------------------------- fonts

@lru_cache(maxsize=None)
def fonts(family: str) -> tuple[str, ...]:
    """The TrueType files of ``family`` (e.g. "DejaVu"), sorted, or a CNNError naming the package."""
    found = sorted({str(p) for d in FONT_DIRS if Path(d).is_dir() for p in Path(d).rglob(f"{family}*.ttf")})
    # DejaVu Math is symbols only; the rest all have Latin, Greek and Cyrillic.
    found = [f for f in found if "Math" not in Path(f).name]
    if not found:
        package = {"DejaVu": "fonts-dejavu-core", "Liberation": "fonts-liberation"}.get(family, family)
        raise CNNError(f"No {family} fonts found under {', '.join(FONT_DIRS)}; install them "
                       f"(Debian/Ubuntu: apt-get install {package}).")
    return tuple(found)


@lru_cache(maxsize=4096)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


# ---------------------------------------------------------------- drawing

def _curve(points: np.ndarray, per_segment: int = 12) -> np.ndarray:
    """A smooth (Catmull-Rom) curve through ``points`` (k, 2)."""
    if len(points) < 3:
        return points
    p = np.concatenate([points[:1], points, points[-1:]])
    t = np.linspace(0, 1, per_segment, endpoint=False)[:, None]
    out = []
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        out.append(0.5 * (2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                          + (-p0 + 3 * p1 - 3 * p2 + p3) * t ** 3))
    out.append(points[-1:])
    return np.concatenate(out)


def _arc(cx, cy, rx, ry, a0=0.0, a1=2 * math.pi, n=40) -> np.ndarray:
    t = np.linspace(a0, a1, n)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)


def _wobble(stroke: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """A hand's tremor: each point moved by a smooth random offset of about ``amount``."""
    if amount <= 0 or len(stroke) < 2:
        return stroke
    dense = _densify(stroke, 0.03)
    knots = rng.normal(0, amount, (max(2, len(dense) // 8 + 2), 2))
    offset = np.stack([np.interp(np.linspace(0, len(knots) - 1, len(dense)), np.arange(len(knots)), knots[:, i])
                       for i in range(2)], 1)
    return dense + offset


def _densify(stroke: np.ndarray, step: float) -> np.ndarray:
    """Points every ``step`` (unit coordinates) along the polyline, corners kept."""
    out = [stroke[:1]]
    for a, b in zip(stroke[:-1], stroke[1:]):
        n = max(1, int(np.hypot(*(b - a)) / step))
        out.append(a + (b - a) * np.linspace(0, 1, n + 1)[1:, None])
    return np.concatenate(out)


def _placement(rng: np.random.Generator, w: float, h: float) -> tuple[float, float, float]:
    """(scale, left, top) putting a w x h drawing at 30-90 % of the canvas, anywhere on it."""
    scale = rng.uniform(*SIZE) * CANVAS / max(w, h, 1e-6)
    left = rng.uniform(0, max(0.0, CANVAS - w * scale))
    top = rng.uniform(0, max(0.0, CANVAS - h * scale))
    return scale, left, top


def _brush(rng: np.random.Generator) -> int:
    """The page's brush three times in four, else another pen (an upload, another app)."""
    return BRUSH if rng.random() < 0.75 else int(rng.integers(12, 41))


def _draw_strokes(strokes: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Strokes in any coordinates -> (CANVAS, CANVAS) uint8 ink, placed and sized at random."""
    pts = np.concatenate(strokes)
    lo, hi = pts.min(0), pts.max(0)
    scale, left, top = _placement(rng, *(hi - lo))
    width = _brush(rng)
    r = width / 2
    ink = Image.new("L", (CANVAS, CANVAS), 0)
    draw = ImageDraw.Draw(ink)
    for s in strokes:
        s = (s - lo) * scale + (left, top)
        if len(s) > 1:
            draw.line([(x, y) for x, y in s.tolist()], fill=255, width=width)
        # A round brush: a disc at both ends and at every turn of more than ~15 degrees (on a
        # smooth curve the straight joins meet without a visible notch). Much faster than joint="curve".
        for x, y in s[_turns(s)].tolist():
            draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
    return np.asarray(ink)


def _turns(s: np.ndarray) -> np.ndarray:
    """Indices of a polyline's ends and of its vertices where it turns by more than ~15 degrees."""
    keep = np.zeros(len(s), bool)
    keep[[0, -1]] = True
    if len(s) > 2:
        a, b = s[1:-1] - s[:-2], s[2:] - s[1:-1]
        cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-9)
        keep[1:-1] = cos < 0.966
    return np.flatnonzero(keep)


def _draw_raster(coverage: np.ndarray, rng: np.random.Generator, size: float | None = None) -> np.ndarray:
    """A (h, w) 0-1 coverage picture scaled onto the canvas at a random size and place."""
    h, w = coverage.shape
    scale, left, top = _placement(rng, w, h)
    if size is not None:
        scale = size / max(w, h)
    big = Image.fromarray((coverage * 255).astype(np.uint8)).resize(
        (max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC)
    ink = np.zeros((CANVAS, CANVAS), np.uint8)
    a = np.asarray(big)[:CANVAS, :CANVAS]
    top, left = min(int(top), CANVAS - a.shape[0]), min(int(left), CANVAS - a.shape[1])
    ink[top:top + a.shape[0], left:left + a.shape[1]] = (a >= 128) * 255  # a brush's hard edge
    return ink


def as_sketch(ink: np.ndarray) -> dict:
    """(H, W) uint8 ink -> the Sketchpad value the page sends: white background, a transparent
    layer holding black strokes, and their composite (RGBA numpy arrays, as ``type="numpy"``)."""
    layer = np.zeros(ink.shape + (4,), np.uint8)
    layer[..., 3] = ink
    composite = np.full(ink.shape + (4,), 255, np.uint8)
    composite[..., :3] = 255 - ink[..., None]
    return {"background": np.full_like(composite, 255), "layers": [layer], "composite": composite}


# ---------------------------------------------------------------- training generators

def strokes(rng: np.random.Generator, digits=None) -> np.ndarray:
    """Random pen strokes: one long curve through many points, or 2-4 shorter ones."""
    k = int(rng.integers(1, 5))
    m = int(rng.integers(6, 12)) if k == 1 else int(rng.integers(3, 7))
    return _draw_strokes([_curve(rng.random((m, 2))) for _ in range(k)], rng)


def _polygon(rng: np.random.Generator) -> list[np.ndarray]:
    kind = rng.integers(8)
    if kind == 7:  # a circle with a plus or a cross through it, or a ring in a ring (never a lone circle: a 0)
        ring = _arc(0, 0, 0.7, 0.7)
        if rng.random() < 0.33:
            return [ring, _arc(0, 0, 0.3, 0.3)]
        s = 1.0 if rng.random() < 0.5 else 0.75
        return [ring, np.array([[-s, 0], [s, 0]]), np.array([[0, -s], [0, s]])]
    if kind == 0:  # triangle or square (not 5-6 sides: drawn by hand they are round, like a 0)
        n = int(rng.integers(3, 5))
        a = np.linspace(0, 2 * math.pi, n + 1) + rng.uniform(0, math.pi)
        return [np.stack([np.cos(a), np.sin(a)], 1)]
    if kind == 1:  # a wide rectangle (a tall one drawn by hand is a boxy 0)
        w, h = 1.0, rng.uniform(0.35, 0.85)
        return [np.array([[0, 0], [w, 0], [w, h], [0, h], [0, 0]])]
    if kind == 2:  # star
        n = int(rng.integers(5, 8))
        a = np.linspace(0, 2 * math.pi, 2 * n + 1)
        r = np.where(np.arange(2 * n + 1) % 2 == 0, 1.0, rng.uniform(0.35, 0.6))
        return [np.stack([r * np.cos(a), r * np.sin(a)], 1)]
    if kind == 3:  # plus or times
        s = [np.array([[-1, 0], [1, 0]]), np.array([[0, -1], [0, 1]])]
        return s if rng.random() < 0.5 else [np.array([[-1, -1], [1, 1]]), np.array([[-1, 1], [1, -1]])]
    if kind == 4:  # arrow
        return [np.array([[0, 0], [1, 0]]), np.array([[0.65, -0.3], [1, 0], [0.65, 0.3]])]
    if kind == 5:  # grid: two bars each way
        return [np.array([[-1, y], [1, y]]) for y in (-0.35, 0.35)] + [np.array([[x, -1], [x, 1]]) for x in (-0.35, 0.35)]
    # a zigzag, like W or M
    n = int(rng.integers(3, 6))
    return [np.stack([np.linspace(0, 1, n + 1), np.arange(n + 1) % 2], 1).astype(float)]


def _rotate(parts: list[np.ndarray], angle: float) -> list[np.ndarray]:
    c, s = math.cos(angle), math.sin(angle)
    m = np.array([[c, -s], [s, c]])
    return [p @ m.T for p in parts]


def shapes(rng: np.random.Generator, digits=None) -> np.ndarray:
    """Polygons, stars, crosses, arrows, grids, crossed circles: one to three of them, hand-wobbled."""
    parts = []
    for i in range(int(rng.choice([1, 1, 2, 3]))):
        shape = _rotate(_polygon(rng), rng.uniform(-0.6, 0.6))  # never upright: a tall rectangle is a 0
        offset = rng.uniform(-0.8, 0.8, 2) if i else 0
        parts += [p * rng.uniform(0.6, 1.2) + offset for p in shape]
    return _draw_strokes([_wobble(p, rng, 0.02) for p in parts], rng)


def _glyph(rng: np.random.Generator, chars: list[str], family: str) -> np.ndarray:
    """One character of ``family``, as tall as a sketch, with a pen about as wide as the brush."""
    path = str(rng.choice(fonts(family)))
    ch = str(rng.choice(chars))
    target = rng.uniform(*SIZE) * CANVAS
    probe = _font(path, 100).getmask(ch).getbbox()
    if probe is None:  # not in this font
        return np.zeros((CANVAS, CANVAS), np.uint8)
    h0 = max(probe[3] - probe[1], probe[2] - probe[0], 1)
    size = int(max(8, round(100 * target / h0 / 8) * 8))  # a few sizes, so fonts are cached
    font = _font(path, size)
    stroke = int(rng.integers(0, 1 + max(1, size // 25)))  # light fonts get a thicker pen
    left, top, right, bottom = font.getbbox(ch, stroke_width=stroke)
    pad = 4
    im = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(im).text((pad - left, pad - top), ch, font=font, fill=255, stroke_width=stroke, stroke_fill=255)
    if rng.random() < 0.5:  # a tilted hand half the time
        im = im.rotate(rng.uniform(-15, 15), resample=Image.BILINEAR, expand=True)
    a = np.asarray(im)
    if max(a.shape) > CANVAS:
        im = im.resize((min(CANVAS, a.shape[1]), min(CANVAS, a.shape[0])), Image.BILINEAR)
        a = np.asarray(im)
    ink = np.zeros((CANVAS, CANVAS), np.uint8)
    top, left = int(rng.integers(0, CANVAS - a.shape[0] + 1)), int(rng.integers(0, CANVAS - a.shape[1] + 1))
    ink[top:top + a.shape[0], left:left + a.shape[1]] = a
    return ink


def glyphs(rng: np.random.Generator, digits=None) -> np.ndarray:
    """A letter (Latin) or a symbol or Greek letter, from a DejaVu font."""
    return _glyph(rng, LATIN if rng.random() < 0.6 else TRAIN_SYMBOLS, "DejaVu")


def _digit(image: np.ndarray) -> np.ndarray:
    """An MNIST digit cut to its ink, as 0-1 coverage."""
    rows, cols = np.flatnonzero(image.any(1)), np.flatnonzero(image.any(0))
    return image[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].astype(np.float32) / 255


def _beside(parts: list[np.ndarray], gaps: list[float]) -> np.ndarray:
    """Coverage pictures side by side, centred on one line, ``gaps`` apart (negative: overlap).

    Gaps stay under 0.2 of a digit: preprocessing drops a light mark further than 0.25 of the
    drawing's size from the rest as a stray speck, which would leave one lone digit."""
    height = max(p.shape[0] for p in parts)
    unit = max(p.shape[1] for p in parts)  # gaps are fractions of the widest part
    lefts = [0]
    for p, g in zip(parts[:-1], gaps):
        lefts.append(max(0, lefts[-1] + p.shape[1] + int(round(g * unit))))
    out = np.zeros((height, max(x + p.shape[1] for x, p in zip(lefts, parts))), np.float32)
    for x, p in zip(lefts, parts):
        top = (height - p.shape[0]) // 2
        region = out[top:top + p.shape[0], x:x + p.shape[1]]
        np.maximum(region, p, out=region)
    return out


def numbers(rng: np.random.Generator, digits: np.ndarray) -> np.ndarray:
    """Two MNIST digits side by side or one over the other, or one digit broken in two."""
    a, b = (_digit(digits[i]) for i in rng.integers(len(digits), size=2))
    kind = rng.random()
    if kind < 0.5:  # a two-digit number
        cover = _beside([a, b], [rng.uniform(-0.1, 0.2)])
    elif kind < 0.85:  # two digits drawn over each other
        h, w = max(a.shape[0], b.shape[0]) + 8, max(a.shape[1], b.shape[1]) + 8
        cover = np.zeros((h, w), np.float32)
        for d in (a, b):
            t, l = rng.integers(0, h - d.shape[0] + 1), rng.integers(0, w - d.shape[1] + 1)
            cover[t:t + d.shape[0], l:l + d.shape[1]] = np.maximum(cover[t:t + d.shape[0], l:l + d.shape[1]], d)
    else:  # broken: the top and bottom halves pulled apart sideways
        cut = a.shape[0] // 2
        shift = int(round(rng.uniform(0.6, 1.0) * a.shape[1])) * (1 if rng.random() < 0.5 else -1)
        cover = np.zeros((a.shape[0], a.shape[1] + abs(shift)), np.float32)
        top_at, bottom_at = (0, shift) if shift > 0 else (-shift, 0)
        cover[:cut, top_at:top_at + a.shape[1]] = a[:cut]
        cover[cut:, bottom_at:bottom_at + a.shape[1]] = a[cut:]
    return _draw_raster(_pen_level(cover, rng), rng)


def _pen_level(cover: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """MNIST's soft strokes as a hard pen of random width: upscaling then cutting at 128 of a
    rescaled coverage (cut low: a thick marker; high: a fine pen)."""
    return np.clip(cover * (128 / 255) / rng.uniform(0.3, 0.8), 0, 1)


# ---------------------------------------------------------------- held-out generators

def letters(rng: np.random.Generator, digits=None) -> np.ndarray:
    """A Latin letter from a Liberation font (no letter drawn like a digit)."""
    return _glyph(rng, LATIN, "Liberation")


def symbols(rng: np.random.Generator, digits=None) -> np.ndarray:
    """A symbol or a Cyrillic letter from a Liberation font."""
    return _glyph(rng, HELD_OUT_SYMBOLS, "Liberation")


def _doodle(rng: np.random.Generator) -> list[np.ndarray]:
    kind = rng.integers(10)
    if kind == 0:  # smiley
        return [_arc(0, 0, 1, 1), _arc(-0.35, -0.3, 0.08, 0.08), _arc(0.35, -0.3, 0.08, 0.08),
                _arc(0, 0.05, 0.55, 0.45, 0.2 * math.pi, 0.8 * math.pi, 20)]
    if kind == 1:  # sun
        rays = [np.array([[1.3 * math.cos(a), 1.3 * math.sin(a)], [2 * math.cos(a), 2 * math.sin(a)]])
                for a in np.linspace(0, 2 * math.pi, int(rng.integers(6, 11)), endpoint=False)]
        return [_arc(0, 0, 1, 1)] + rays
    if kind == 2:  # house
        return [np.array([[0, 1], [0, 2], [2, 2], [2, 1], [0, 1], [1, 0], [2, 1]]),
                np.array([[0.8, 2], [0.8, 1.5], [1.2, 1.5], [1.2, 2]])]
    if kind == 3:  # heart
        t = np.linspace(0, 2 * math.pi, 60)
        return [np.stack([16 * np.sin(t) ** 3, -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))], 1) / 16]
    if kind == 4:  # a fir tree: three tiers and a trunk (not a round crown on a trunk: drawn so, it reads as an 8)
        tiers = [np.array([[-w, y + 0.6], [0, y], [w, y + 0.6], [-w, y + 0.6]]) for w, y in ((0.5, 0), (0.7, 0.4), (0.9, 0.8))]
        return tiers + [np.array([[-0.12, 1.4], [-0.12, 1.8], [0.12, 1.8], [0.12, 1.4]])]
    if kind == 5:  # flower
        petals = [_arc(0.7 * math.cos(a), 0.7 * math.sin(a), 0.35, 0.35) for a in np.linspace(0, 2 * math.pi, 6, endpoint=False)]
        return [_arc(0, 0, 0.3, 0.3)] + petals + [np.array([[0, 1], [0, 2.5]])]
    if kind == 6:  # fish
        return [_arc(0, 0, 1, 0.55), np.array([[1, 0], [1.6, -0.5], [1.6, 0.5], [1, 0]]), _arc(-0.55, -0.1, 0.06, 0.06)]
    if kind == 7:  # stick figure
        return [_arc(0, -1.5, 0.4, 0.4), np.array([[0, -1.1], [0, 0.5]]), np.array([[-0.8, -0.6], [0, -0.4], [0.8, -0.6]]),
                np.array([[-0.6, 1.6], [0, 0.5], [0.6, 1.6]])]
    if kind == 8:  # cloud
        return [np.concatenate([_arc(x, 0, 0.5, 0.5, math.pi, 2 * math.pi, 15) for x in (-1, 0, 1)]
                               + [np.array([[1.5, 0], [1.5, 0.4], [-1.5, 0.4], [-1.5, 0]])])]
    # spiral
    t = np.linspace(0, rng.uniform(4, 7) * math.pi, 120)
    return [np.stack([t * np.cos(t), t * np.sin(t)], 1)]


def doodles(rng: np.random.Generator, digits=None) -> np.ndarray:
    """Smiley, sun, house, heart, fir tree, flower, fish, stick figure, cloud or spiral, hand-wobbled."""
    parts = _rotate(_doodle(rng), rng.uniform(-0.3, 0.3))
    scale = np.ptp(np.concatenate(parts), 0).max()
    return _draw_strokes([_wobble(p / scale, rng, 0.015) for p in parts], rng)


def scribbles(rng: np.random.Generator, digits=None) -> np.ndarray:
    """Hatching, a row of cursive loops, a scribble ball or a wave."""
    kind = rng.integers(4)
    if kind == 0:  # hatching: back and forth across a box
        n = int(rng.integers(4, 12))
        y = np.linspace(0, rng.uniform(0.5, 1.5), n)
        stroke = np.stack([np.arange(n) % 2, y], 1)
        stroke = stroke[:, ::-1] if rng.random() < 0.3 else stroke
    elif kind == 1:  # loops, like "eeee"
        t = np.linspace(0, int(rng.integers(3, 7)) * 2 * math.pi, 200)
        stroke = np.stack([0.25 * t / math.pi + 0.5 * np.cos(t), 0.7 * np.sin(t)], 1)
    elif kind == 2:  # a scribble ball: a jittery walk with momentum
        v, p, pts = np.zeros(2), np.zeros(2), []
        for _ in range(int(rng.integers(40, 120))):
            v = 0.8 * v + rng.normal(0, 0.15, 2) - 0.05 * p
            p = p + v
            pts.append(p)
        stroke = np.array(pts)
    else:  # a wave
        t = np.linspace(0, int(rng.integers(2, 5)) * 2 * math.pi, 120)
        stroke = np.stack([t, rng.uniform(0.5, 1.5) * np.sin(t)], 1)
    stroke = _rotate([stroke], rng.uniform(-0.4, 0.4))[0]
    return _draw_strokes([stroke], rng)


def long_numbers(rng: np.random.Generator, digits: np.ndarray) -> np.ndarray:
    """Three or four MNIST digits in a row (never two stacked: 0 over 0 *is* an 8)."""
    parts = [_digit(digits[i]) for i in rng.integers(len(digits), size=int(rng.integers(3, 5)))]
    return _draw_raster(_pen_level(_beside(parts, list(rng.uniform(0, 0.2, len(parts) - 1))), rng), rng)


# ---------------------------------------------------------------- digits drawn like sketches

def drawn_digit(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One MNIST digit drawn on the canvas with a hard-edged pen of random width."""
    return _draw_raster(_pen_level(_digit(image), rng), rng)


HELD_OUT_SEED = 2019  # the held-out family's seed (bench/confidence.py, tests); training uses others (train.py)
TRAIN = {"strokes": strokes, "shapes": shapes, "glyphs": glyphs, "numbers": numbers}
HELD_OUT = {"letters": letters, "symbols": symbols, "doodles": doodles, "scribbles": scribbles,
            "numbers": long_numbers}
NEEDS_DIGITS = {numbers, long_numbers}


# ---------------------------------------------------------------- rendering many

_DIGITS: np.ndarray | None = None  # MNIST images for the digit-based generators (set per worker)


def _init(digits, worker: bool = False) -> None:
    global _DIGITS
    _DIGITS = digits
    if worker:  # one thread per worker process: the workers are the parallelism
        torch.set_num_threads(1)


def _render(job: tuple) -> tuple[np.ndarray, bool]:
    """(28x28 uint8 prepared picture, whether prepare found ink) for one job."""
    family, kinds, weights, seed, i, label = job
    rng = np.random.default_rng([seed, i])
    if kinds == ("digit",):
        ink = drawn_digit(_DIGITS[label], rng)
    else:
        gen = family[kinds[rng.choice(len(kinds), p=weights)]]
        ink = gen(rng, _DIGITS)
    # The page's composite (black ink on opaque white) as one grey band: prepare reads the same
    # ink from it, to the bit, as from the full Sketchpad value (tests/test_confidence.py), in
    # half the time.
    prepared = prepare(Image.fromarray(255 - ink))
    if prepared is None:
        return np.zeros((28, 28), np.uint8), False
    return prepared.image, True


def _run(jobs: list[tuple], digits, workers: int | None) -> list[tuple[np.ndarray, bool]]:
    workers = min(2, os.cpu_count() or 1) if workers is None else workers
    if workers <= 1 or len(jobs) < 500:
        _init(digits)
        try:
            return [_render(j) for j in jobs]
        finally:
            _init(None)
    # spawn, not fork: a forked child of a process that has run torch's thread pool can hang.
    # Spawned workers import the caller's main module again: a script must keep its work under
    # ``if __name__ == "__main__":`` (train.py and bench/confidence.py do).
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init, initargs=(digits, True)) as pool:
        return list(pool.map(_render, jobs, chunksize=max(1, len(jobs) // (8 * workers))))


def bank(n: int, seed: int, family: dict = TRAIN, digits: np.ndarray | None = None,
         kinds: list[str] | None = None, weights: list[float] | None = None,
         workers: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` non-digit sketches of ``family`` through ``prepare``: ((m, 28, 28) uint8, (m,) kind index
    into ``kinds``), m <= n (a sketch prepare finds blank is dropped). Sample i depends on
    (seed, i) only, so any number of workers gives the same bank."""
    kinds = tuple(kinds or family)
    if any(family[k] in NEEDS_DIGITS for k in kinds) and digits is None:
        raise ValueError("digits are needed for the number generators")
    p = np.full(len(kinds), 1 / len(kinds)) if weights is None else np.asarray(weights, float) / sum(weights)
    jobs = [(family, kinds, p, seed, i, None) for i in range(n)]
    # the kind each job draws, replayed from the same generator state as _render uses
    kind = [int(np.random.default_rng([seed, i]).choice(len(kinds), p=p)) for i in range(n)]
    out = _run(jobs, digits, workers)
    keep = [i for i, (_, ok) in enumerate(out) if ok]
    images = torch.from_numpy(np.stack([out[i][0] for i in keep])) if keep else torch.zeros(0, 28, 28, dtype=torch.uint8)
    return images, torch.tensor([kind[i] for i in keep], dtype=torch.long)


def drawn_digits(images: np.ndarray, labels: torch.Tensor, seed: int,
                 workers: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST digits drawn like sketches and prepared: ((m, 28, 28) uint8, (m,) labels)."""
    jobs = [({}, ("digit",), None, seed, i, i) for i in range(len(images))]
    out = _run(jobs, images, workers)
    keep = [i for i, (_, ok) in enumerate(out) if ok]
    return torch.from_numpy(np.stack([out[i][0] for i in keep])), labels[keep]


def sketch(family: dict, kind: str, seed: int, i: int, digits: np.ndarray | None = None) -> dict:
    """Sample ``i`` of ``kind`` as the Sketchpad value the page would send (for tests and the bench)."""
    return as_sketch(family[kind](np.random.default_rng([seed, i]), digits))
