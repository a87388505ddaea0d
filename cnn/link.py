"""A drawing <-> a short URL parameter, so that a link can carry it and the server keeps nothing.

What travels is what the network read: the 28x28 MNIST-style input (``Prepared.image``), at 16
grey levels (4 bits a pixel; the input itself has 256, and one level step is 17/255, far
below what moves an answer), zlib-compressed and base64url-encoded::

    drawing = base64url(zlib(version byte 1 + 392 bytes: 784 pixels, two per byte, row by row))

A digit takes 150-350 characters, so a link stays far under 2,000 characters. Reopening gives
the network the same input (to within half a grey step) and so the same answer; the canvas
shows the 28x28 picture scaled up, as if it had been uploaded.

Decoding is bounded: the text's length is checked first (``MAX_CHARS``), then its alphabet,
then zlib is asked for at most the expected number of bytes, so a decompression bomb costs
no more than a valid link. Anything else is a ``LinkError`` with a short sentence.
"""
from __future__ import annotations

import base64
import re
import zlib

import numpy as np
from PIL import Image

from .errors import InputError

PARAM, CELL_PARAM = "drawing", "cell"  # the query parameters
VERSION = 1
SIDE = 28
LEVELS = 16  # grey levels carried: 4 bits a pixel
PAYLOAD = 1 + SIDE * SIDE // 2  # version byte + two pixels a byte
MAX_CHARS = 1600  # a drawing parameter longer than this is refused unread (a link stays <= 2,000)
ALPHABET = re.compile(r"[A-Za-z0-9_-]+")
CELL = re.compile(r"(conv1|pool1|conv2|pool2)-(\d{1,2})-(\d{1,2})-(\d{1,2})")


class LinkError(InputError):
    """A link whose drawing cannot be read: truncated, tampered, too long or not ours."""


def encode(image: np.ndarray) -> str:
    """(28, 28) uint8 network input (255 = ink) -> the ``drawing`` parameter."""
    a = np.asarray(image)
    if a.shape != (SIDE, SIDE) or a.dtype != np.uint8:
        raise ValueError(f"expected a ({SIDE}, {SIDE}) uint8 image, got {a.shape} {a.dtype}")
    q = ((a.astype(np.uint16) * (LEVELS - 1) + 127) // 255).astype(np.uint8).ravel()  # 0..15, rounded
    packed = (q[0::2] << 4) | q[1::2]
    raw = bytes([VERSION]) + packed.tobytes()
    return base64.urlsafe_b64encode(zlib.compress(raw, 9)).rstrip(b"=").decode("ascii")


def decode(text: str) -> np.ndarray:
    """The ``drawing`` parameter -> (28, 28) uint8, or ``LinkError``. Bounded in time and memory."""
    if not isinstance(text, str) or not text:
        raise LinkError("The link carries no drawing.")
    if len(text) > MAX_CHARS:
        raise LinkError(f"The link's drawing is too long ({len(text):,} characters; at most {MAX_CHARS:,}).")
    if not ALPHABET.fullmatch(text):
        raise LinkError("The link's drawing has characters a link of this page never has.")
    try:
        packed = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        raise LinkError("The link's drawing is cut short or altered.") from None
    inflate = zlib.decompressobj()
    try:
        raw = inflate.decompress(packed, PAYLOAD + 1)  # never more than one byte past a valid drawing
    except zlib.error:
        raise LinkError("The link's drawing is cut short or altered.") from None
    if len(raw) != PAYLOAD or not inflate.eof or inflate.unconsumed_tail or inflate.unused_data:
        raise LinkError("The link's drawing is cut short or altered.")
    if raw[0] != VERSION:
        raise LinkError("The link was made by another version of this page.")
    b = np.frombuffer(raw, np.uint8, offset=1)
    q = np.empty(SIDE * SIDE, np.uint8)
    q[0::2], q[1::2] = b >> 4, b & 15
    return (q.astype(np.uint16) * 255 // (LEVELS - 1)).astype(np.uint8).reshape(SIDE, SIDE)


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


def canvas(image: np.ndarray, side: int) -> Image.Image:
    """The 28x28 ``image`` as a drawing to put on the canvas: black ink on a white ``side`` x
    ``side`` picture, scaled smoothly, as if it had been uploaded."""
    ink = Image.fromarray(np.asarray(image), "L").resize((side, side), Image.Resampling.BILINEAR)
    return Image.fromarray(255 - np.asarray(ink), "L").convert("RGB")
