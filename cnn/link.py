"""A drawing <-> a short URL parameter, so that a link can carry it and the server keeps nothing.

What travels is exactly what the network read: the 28x28 uint8 MNIST-style input
(``Prepared.image``), losslessly, so ``decode(encode(x))`` equals ``x`` and reopening a link
gives the same answer, "not a digit" included. It is cropped to the box around its non-zero
pixels, kept at 8 bits a pixel, zlib-compressed (level 9) and base64url-encoded::

    drawing = base64url(zlib(version 2, top, left, height, width, height x width pixels row by row))

Measured (characters of ``drawing``): the ten examples in ``cnn/examples`` 150-342, drawn
sketches 48-332 (a drawn 1: 48), the MNIST test digits 248 on average (at most 400); the worst
case, 28x28 random noise, is 1,067 (zlib stores it: 789 bytes plus 11). ``MAX_CHARS`` is 1,100,
so with a 100-character address in front and the longest ``cell`` a link is at most 1,229
characters (noise: 1,196), under 2,000. Of the alternatives measured, the whole 28x28 field
costs ~10 characters more a digit, a raw deflate stream ~8 fewer but without its checksum, and
PNG-style row filters (sub, up) 25-50 more.

Decoding is bounded: the text's length is checked first (``MAX_CHARS``), then its alphabet,
then zlib is asked for at most one byte more than the largest drawing (``MAX_PAYLOAD``), so a
decompression bomb costs no more than a valid link; then the version, the box (inside 28x28,
tight around the ink) and the size. A blank drawing is refused too. Anything else is a
``LinkError`` with a short sentence.
"""
from __future__ import annotations

import base64
import re
import zlib

import numpy as np
from PIL import Image

from .errors import InputError

PARAM, CELL_PARAM, MOVE_PARAM, NETWORK_PARAM = "drawing", "cell", "move", "network"  # the query parameters
VERSION = 2  # 1: 16 grey levels, the whole field (no longer read)
SIDE = 28
HEADER = 5  # version, top, left, height, width
MAX_PAYLOAD = HEADER + SIDE * SIDE  # the largest drawing: 789 bytes
MAX_CHARS = 1100  # a drawing parameter longer than this is refused unread (noise, the longest: 1,067)
ALPHABET = re.compile(r"[A-Za-z0-9_-]+")
CELL = re.compile(r"(conv1|pool1|conv2|pool2)-(\d{1,2})-(\d{1,2})-(\d{1,2})")
MOVE = re.compile(r"(-?\d{1,2}),(-?\d{1,2})")
CUT = "The link's drawing is cut short or altered."


class LinkError(InputError):
    """A link whose drawing cannot be read: truncated, tampered, too long, blank or not ours."""


def encode(image: np.ndarray) -> str:
    """(28, 28) uint8 network input (255 = ink) -> the ``drawing`` parameter, lossless."""
    a = np.asarray(image)
    if a.shape != (SIDE, SIDE) or a.dtype != np.uint8:
        raise ValueError(f"expected a ({SIDE}, {SIDE}) uint8 image, got {a.shape} {a.dtype}")
    rows, cols = np.flatnonzero(a.any(1)), np.flatnonzero(a.any(0))
    top, left = (int(rows[0]), int(cols[0])) if rows.size else (0, 0)
    height, width = (int(rows[-1]) + 1 - top, int(cols[-1]) + 1 - left) if rows.size else (0, 0)
    raw = bytes([VERSION, top, left, height, width]) + a[top:top + height, left:left + width].tobytes()
    return base64.urlsafe_b64encode(zlib.compress(raw, 9)).rstrip(b"=").decode("ascii")


def decode(text: str) -> np.ndarray:
    """The ``drawing`` parameter -> (28, 28) uint8, or ``LinkError``. Bounded in time and memory."""
    if not isinstance(text, str) or not text:
        raise LinkError("The link carries no drawing.")
    if len(text) > MAX_CHARS:
        raise LinkError(f"The link's drawing is too long (over {MAX_CHARS:,} characters).")
    if not ALPHABET.fullmatch(text):
        raise LinkError("The link's drawing has characters a link of this page never has.")
    try:
        packed = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        raise LinkError(CUT) from None
    inflate = zlib.decompressobj()
    try:
        raw = inflate.decompress(packed, MAX_PAYLOAD + 1)  # never more than one byte past the largest drawing
    except zlib.error:
        raise LinkError(CUT) from None
    if len(raw) > MAX_PAYLOAD or not inflate.eof or inflate.unconsumed_tail or inflate.unused_data:
        raise LinkError(CUT)
    if len(raw) < 1 or raw[0] != VERSION:
        raise LinkError("The link was made by another version of this page.")
    if len(raw) < HEADER:
        raise LinkError(CUT)
    top, left, height, width = raw[1:HEADER]
    if top + height > SIDE or left + width > SIDE or len(raw) != HEADER + height * width:
        raise LinkError(CUT)
    crop = np.frombuffer(raw, np.uint8, offset=HEADER).reshape(height, width)
    if height * width == 0 or not crop.any():
        raise LinkError("The link's drawing is blank.")
    if not (crop[0].any() and crop[-1].any() and crop[:, 0].any() and crop[:, -1].any()):
        raise LinkError(CUT)  # not the tight box ``encode`` makes
    image = np.zeros((SIDE, SIDE), np.uint8)
    image[top:top + height, left:left + width] = crop
    return image


def encode_cell(selection) -> str | None:
    """(layer, channel, row, col) -> ``conv2-5-3-9`` (the ``cell`` parameter), or None."""
    return None if selection is None else "-".join(str(v) for v in selection)


def decode_cell(text: str | None) -> tuple[str, int, int, int] | None:
    """The ``cell`` parameter -> (layer, channel, row, col); range checks are the inspector's."""
    if not text:
        return None
    m = CELL.fullmatch(text) if isinstance(text, str) and len(text) <= 20 else None
    if m is None:
        raise LinkError("The link names a map cell this page does not have.")
    return m[1], int(m[2]), int(m[3]), int(m[4])


def encode_move(move) -> str:
    """(dx, dy) -> ``2,-1`` (the ``move`` parameter)."""
    return f"{int(move[0])},{int(move[1])}"


def decode_move(text: str | None) -> tuple[int, int]:
    """The ``move`` parameter -> (dx, dy), (0, 0) when absent; the range check is ``cnn.shift``'s."""
    if not text:
        return 0, 0
    m = MOVE.fullmatch(text) if isinstance(text, str) and len(text) <= 8 else None
    if m is None:
        raise LinkError("The link's move is not two whole numbers of pixels.")
    return int(m[1]), int(m[2])


def canvas(image: np.ndarray, side: int) -> Image.Image:
    """The 28x28 ``image`` as a drawing to put on the canvas: black ink on a white ``side`` x
    ``side`` picture, scaled smoothly, as if it had been uploaded."""
    ink = Image.fromarray(np.asarray(image), "L").resize((side, side), Image.Resampling.BILINEAR)
    return Image.fromarray(255 - np.asarray(ink), "L").convert("RGB")
