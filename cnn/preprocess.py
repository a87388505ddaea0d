"""Any drawing -> the ``(1, 1, 28, 28)`` tensor the network was trained on.

MNIST digits were fitted into a 20x20 box (aspect ratio kept, anti-aliased) and
shifted so their centre of mass sits at the centre of a 28x28 field, white ink
on black. A sketch arrives as an 800x800 canvas with a small, huge or
off-centre digit, often as a transparent layer with its strokes in the alpha
channel. Resizing the whole canvas to 28x28 scores ~20-30 % on re-drawn MNIST
digits; this module replays MNIST's own recipe instead:

  ink      alpha if the canvas is transparent, else distance from the border's colour
  find     bounding box on a cheap box-reduced view, leaving out far-away specks
  crop     only the digit's surroundings are read at working resolution
  thicken  thin-pen strokes widened to MNIST's width for the digit's size
  fit      Lanczos into 20x20, aspect ratio kept; centre of mass to (14, 14)

bench/robustness.py measures each step; an 800x800 RGBA canvas takes a few ms.

Safety: sizes are checked from the array shape or the image header before
anything is converted or decoded; every unreadable input ends in ``InputError``
and a blank canvas in ``None``. Nothing here changes global state.
"""
from __future__ import annotations

import functools
import io
import math
import os
import warnings
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from .errors import InputError

MAX_PIXELS = 4096 * 4096  # largest image accepted (64 MiB as RGBA), checked before decoding
MIN_SIDE = 8  # a side shorter than this cannot hold a recognisable digit
MAX_ASPECT = 16  # a strip longer than this is not a drawing of a digit
FIELD = 28  # MNIST image side
BOX = 20  # MNIST digits were fitted into a BOX x BOX square...
CENTRE = 14.0  # ...and shifted so their centre of mass lands here (MNIST train: 14.00 +- 0.29, row and column)
VIEW_SIDE = 200  # longest side of the cheap view the ink is found on
WORK_SIDE = 80  # the crop around the ink is box-reduced to a longest side in [WORK_SIDE, 2 * WORK_SIDE)
MIN_CONTRAST = 40  # strongest ink (out of 255) in the view below which a canvas counts as blank
INK_LEVEL = 0.2  # a view pixel belongs to a stroke when it has this fraction of the strongest ink
EDGE_LEVEL = 0.05  # the box to fit includes anti-aliased edges down to this fraction, as MNIST's did
MIN_EXTENT = 0.04  # ink spanning less than this fraction of the canvas's longest side is a speck
THIN_STROKE = 0.06  # strokes thinner than this fraction of the digit's size (below ~all of MNIST)...
STROKE = 0.124  # ...are thickened to MNIST's median (both measured with _stroke_width on drawn MNIST digits)
SPECK_MASS = 0.2  # a mark with less than this fraction of all the ink...
SPECK_GAP = 0.25  # ...separated from the digit by more than this fraction of the digit's extent is dropped

# PIL's own decompression-bomb guard, lowered to the same cap. Our own decoding checks the
# header first (``check_size``); the lowered limit also guards the decoding Gradio does of an
# upload before ``prepare`` sees it (PIL warns above the limit and refuses above twice it).
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

# Formats whose PIL decoders only decode pixels. Not EPS/PS/PDF (PIL hands those to Ghostscript,
# which runs the file as a program), nor anything else PIL might open: PIL is told to try only
# these (``Image.open(..., formats=IMAGE_FORMATS)``), so no other plugin ever sees the bytes.
Image.init()  # registers every plugin PIL has, so the list below can be checked against them
IMAGE_FORMATS = tuple(f for f in ("PNG", "JPEG", "WEBP", "GIF", "BMP", "DIB", "TIFF", "JPEG2000", "AVIF")
                      if f in Image.OPEN)  # JPEG covers MPO (multi-picture) files too
FORMAT_NAMES = "PNG, JPEG, WebP, GIF, BMP or TIFF"
# And for the whole process: PIL's EPS reader (EPS and PostScript; PDF PIL only writes) is taken
# out of PIL's registry, so no ``Image.open`` anywhere (Gradio's decoding of an event's image
# input included) can hand a visitor's file to Ghostscript.
EXECUTES_CODE = ("EPS",)
for _format in EXECUTES_CODE:
    Image.OPEN.pop(_format, None)
    if _format in Image.ID:
        Image.ID.remove(_format)

_NATIVE_MODES = {"L", "LA", "RGB", "RGBA"}  # what the pipeline reads; every other mode is converted


class Prepared(NamedTuple):
    tensor: torch.Tensor  # (1, 1, 28, 28) float32 in [0, 1], ink high, background 0
    image: np.ndarray  # (28, 28) uint8, the same picture for display (255 = ink)


class Background(NamedTuple):
    transparent: bool  # True: ink is the alpha channel; False: ink is the distance from `colour`
    colour: np.ndarray  # (C,) float32 colour channels of the canvas, read from its border


def prepare(value) -> Prepared | None:
    """MNIST-style tensor and 28x28 picture of the digit in ``value``.

    ``value`` is a Gradio Sketchpad/ImageEditor dict, a PIL image, a numpy array
    or an image file path (str, ``PathLike`` or the file's bytes). ``None`` means
    "no digit" (blank or near-blank canvas). Raises ``InputError`` for unreadable input.
    """
    if isinstance(value, dict):
        return _prepare_editor(value)
    image = _to_image(value)
    return None if image is None else _prepare_image(image)


# --- Reading every input form into a checked PIL image ---------------------------------------

def _to_image(value) -> Image.Image | None:
    """``value`` as a PIL image in mode L, LA, RGB or RGBA (``None`` stays ``None``)."""
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike, bytes, bytearray)):
        return _from_pil(_open(value))
    if isinstance(value, Image.Image):
        return _from_pil(value)
    if isinstance(value, np.ndarray):
        return _from_array(value)
    raise InputError(
        f"A drawing cannot be read from a value of type {type(value).__name__}; give an image file, "
        "a PIL image, a numpy array or a Sketchpad value."
    )


def check_size(width: int, height: int) -> None:
    """Raise ``InputError`` unless a ``width`` x ``height`` image is worth reading."""
    if min(width, height) < MIN_SIDE:
        raise InputError(
            f"The image is {width}x{height} pixels, too small to hold a digit "
            f"(it needs at least {MIN_SIDE}x{MIN_SIDE})."
        )
    if width * height > MAX_PIXELS:
        raise InputError(
            f"The image is {width}x{height} pixels, more than the {MAX_PIXELS:,}-pixel limit; "
            "scale it down first."
        )
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise InputError(f"The image is {width}x{height} pixels, too long and thin to be a drawing of a digit.")


def open_image(source) -> Image.Image:
    """``Image.open`` for a path, bytes or a binary file, trying only ``IMAGE_FORMATS``: the header
    is parsed, nothing is decoded. Raises PIL's own errors (``UnidentifiedImageError`` for any
    other format, EPS included) and ``OSError`` for a path that is not a readable file."""
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    with warnings.catch_warnings():
        # PIL warns about images over MAX_IMAGE_PIXELS while opening; check_size rejects them anyway.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(source, formats=IMAGE_FORMATS)


def _open(source: str | os.PathLike | bytes | bytearray) -> Image.Image:
    """Decode an image file (path or bytes), checking its format and size from the header first."""
    in_memory = isinstance(source, (bytes, bytearray))
    name = "The data" if in_memory else f"The file '{os.fsdecode(source)}'"
    try:
        image = open_image(source)
    except FileNotFoundError:
        raise InputError(f"{name} does not exist.") from None
    except IsADirectoryError:
        raise InputError(f"{name} is a folder, not an image.") from None
    except Image.DecompressionBombError:  # over twice MAX_IMAGE_PIXELS (set above)
        raise InputError(f"{name} declares an image too large to decode safely.") from None
    except Image.UnidentifiedImageError:
        raise InputError(f"{name} is not an image in a format that can be read ({FORMAT_NAMES}).") from None
    except Exception as e:  # PermissionError, plugin errors on a malformed header: all unreadable to a user
        raise InputError(f"{name} cannot be opened as an image ({type(e).__name__}: {e}).") from None
    with image:
        check_size(*image.size)  # only the header is parsed so far: nothing decoded yet
        try:
            image.load()
            # Phone photos are stored sideways with an EXIF note saying how to turn them.
            return ImageOps.exif_transpose(image)  # a decoded copy that outlives the file
        except Exception as e:  # truncated data, corrupt chunks, decoder errors
            raise InputError(f"{name} is damaged and cannot be decoded ({type(e).__name__}: {e}).") from None


def _from_pil(image: Image.Image) -> Image.Image:
    if image.format not in (None, "MPO", *IMAGE_FORMATS):  # a PIL image opened from a file elsewhere
        raise InputError(f"{image.format} images are not read here (only {FORMAT_NAMES}).")
    check_size(*image.size)  # before load(), which decodes a lazily opened image
    try:
        image.load()
        if image.mode in _NATIVE_MODES:
            return image
        if image.mode in ("I", "F") or image.mode.startswith("I;16"):
            return _from_array(np.asarray(image))  # same range rules as arrays (0-1, 0-255, 0-65535)
        alpha = image.has_transparency_data  # alpha band, palette alpha or a tRNS colour
        grey = image.mode in ("1", "La")
        return image.convert(("LA" if alpha else "L") if grey else ("RGBA" if alpha else "RGB"))
    except InputError:
        raise
    except Exception as e:  # a lazy image that fails to decode, a closed one, a mode PIL cannot convert
        raise InputError(f"Cannot read this {image.mode} image ({type(e).__name__}: {e}).") from None


def as_8bit(image: Image.Image) -> Image.Image:
    """``image`` in mode L, LA, RGB or RGBA, read as ``prepare`` reads it (float and 16-bit
    images by their value range, not clipped to 0-255 the way ``Image.convert`` does)."""
    return _from_pil(image)


def _from_array(a: np.ndarray) -> Image.Image:
    if a.dtype.kind not in "buif":
        raise InputError(f"An image array must hold numbers, not {a.dtype} values.")
    if not (a.ndim == 2 or (a.ndim == 3 and 1 <= a.shape[2] <= 4)):
        raise InputError(f"An image array must be (H, W) or (H, W, 1-4 channels), not {a.shape}.")
    check_size(a.shape[1], a.shape[0])  # before any conversion allocates a copy
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    return Image.fromarray(np.ascontiguousarray(_to_uint8(a)))  # L, LA, RGB or RGBA from the shape


def _to_uint8(a: np.ndarray) -> np.ndarray:
    """0-255 uint8 from bool, 0-1 numbers, 0-255 numbers or 16-bit 0-65535 numbers."""
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * np.uint8(255)
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise InputError("The image has NaN or infinite pixel values.")
    lo, hi = a.min(), a.max()
    if lo < 0:
        raise InputError(f"The image has negative pixel values (down to {lo:g}); they must lie in 0-1 or 0-255.")
    if hi > 65535:
        raise InputError(f"The image has pixel values up to {hi:g}; they must lie in 0-1, 0-255 or 0-65535.")
    scale = 255.0 if hi <= 1 else 1.0 if hi <= 255 else 255 / 65535
    # Writing straight into uint8 avoids a float copy of the whole image (casting checked above).
    return np.multiply(a, scale, out=np.empty(a.shape, np.uint8), casting="unsafe")


# --- The Gradio Sketchpad / ImageEditor value ------------------------------------------------

def _prepare_editor(value: dict) -> Prepared | None:
    """The digit in the composite, else in the layers' own composite, else in the background.

    The composite Gradio hands over may have lost the strokes (black ink flattened onto a
    black or transparent canvas), while the layers still hold them in their alpha channel.
    """
    layers = value.get("layers")
    layers = [] if layers is None else layers
    if not isinstance(layers, (list, tuple)):
        raise InputError("The sketch's layers must be a list of images.")
    for source in (lambda: value.get("composite"), lambda: _composite(layers), lambda: value.get("background")):
        image = _to_image(source())
        if image is not None and (found := _prepare_image(image)) is not None:
            return found
    return None


def _composite(layers) -> Image.Image | None:
    """The layers stacked in order onto a transparent canvas, as the editor draws them."""
    images = [im.convert("RGBA") for im in map(_to_image, layers) if im is not None]
    if not images:
        return None
    size = (max(im.width for im in images), max(im.height for im in images))
    check_size(*size)
    canvas = Image.new("RGBA", size, (0, 0, 0, 0))
    for im in images:
        canvas.alpha_composite(im)
    return canvas


# --- The MNIST recipe ------------------------------------------------------------------------

def _prepare_image(image: Image.Image) -> Prepared | None:
    background = _background(image)
    # Split once: the view and the crop are both reduced from these bands. A transparent
    # canvas has all its ink in the alpha band, so nothing else is read.
    bands = [image.getchannel("A")] if background.transparent else image.split()
    view, k = _view(bands)
    box = _digit_box(_ink(view, background))
    if box is None:
        return None
    field = _centre(_fit(_thicken(_tight(_crop(bands, box, k, background)))))
    return Prepared(network_input(field), field)


def network_input(field: np.ndarray) -> torch.Tensor:
    """A (28, 28) uint8 picture -> the (1, 1, 28, 28) float tensor in [0, 1] the network reads
    (``ToTensor``'s scaling). Every tensor the page runs is made here: a drawing's, a link's and
    the session's picture re-read for a click, so the picture shown and the input never differ."""
    return torch.from_numpy(np.array(field, dtype=np.float32)).div_(255).view(1, 1, FIELD, FIELD)


def _view(bands: list[Image.Image]) -> tuple[np.ndarray, int]:
    """A box-averaged view, longest side at most ~VIEW_SIDE, and its reduction factor."""
    k = max(1, math.ceil(max(bands[0].size) / VIEW_SIDE))
    return _reduced(bands, k), k


def _reduced(bands: list[Image.Image], k: int, region: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """(H, W, C) pixels of ``region`` (default: everything) box-averaged over k x k blocks.

    Band by band: PIL reduces an RGBA image with premultiplied alpha, four times slower,
    and the ink is computed from straight (not premultiplied) channels anyway.
    """
    return np.stack([np.asarray(band.reduce(k, region)) for band in bands], axis=2)


def _background(image: Image.Image) -> Background:
    """The canvas colour as the median of the outermost pixels; transparent when they mostly are."""
    w, h = image.size
    strips = [(0, 0, w, 1), (0, h - 1, w, h), (0, 0, 1, h), (w - 1, 0, w, h)]
    border = np.concatenate([np.asarray(image.crop(s)).reshape(-1, len(image.getbands())) for s in strips])
    median = np.median(border, axis=0).astype(np.float32)
    has_alpha = image.mode in ("LA", "RGBA")
    transparent = has_alpha and median[-1] < 128
    return Background(transparent, median[:-1] if has_alpha else median)


def _ink(a: np.ndarray, background: Background) -> np.ndarray:
    """(H, W) float32 ink in 0-255 from (H, W, C) pixels: alpha, or distance from the canvas colour.

    The largest per-channel difference makes black-on-white, white-on-black and any coloured
    ink equally strong, and stays proportional to stroke coverage on anti-aliased edges.
    """
    if background.transparent:
        return a[..., -1].astype(np.float32)  # the alpha band
    has_alpha = a.shape[2] in (2, 4)
    channels = a.shape[2] - has_alpha
    # One channel at a time: numpy's max over a short last axis is ~10x slower.
    ink = functools.reduce(np.maximum, (np.abs(a[..., c] - background.colour[c]) for c in range(channels)))
    # Composited onto the canvas colour, a pixel with alpha a keeps a fraction a of its contrast.
    return ink * (a[..., -1] / np.float32(255)) if has_alpha else ink


def _digit_box(ink: np.ndarray) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right) of the digit in ``ink`` (ends exclusive), or None if blank."""
    peak = ink.max()
    if peak < MIN_CONTRAST:
        return None
    top, bottom, left, right = _main_part(ink >= INK_LEVEL * peak)
    if max(bottom - top, right - left) < MIN_EXTENT * max(ink.shape):
        return None
    return top, bottom, left, right


def _main_part(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Bounding box of the ink without small marks lying apart from the digit.

    Cuts along empty rows and columns, alternately, until the box stops shrinking: a stray
    dot far from the digit would otherwise stretch the box and shrink the digit inside it.
    """
    top, bottom, left, right = 0, mask.shape[0], 0, mask.shape[1]
    while True:
        lo, hi = _kept_span(mask[top:bottom, left:right].sum(axis=0))
        new_left, new_right = left + lo, left + hi
        lo, hi = _kept_span(mask[top:bottom, new_left:new_right].sum(axis=1))
        new_top, new_bottom = top + lo, top + hi
        if (new_top, new_bottom, new_left, new_right) == (top, bottom, left, right):
            return top, bottom, left, right
        top, bottom, left, right = new_top, new_bottom, new_left, new_right


def _kept_span(profile: np.ndarray) -> tuple[int, int]:
    """Span of the runs of a 1-D ink profile that belong to the digit (ends exclusive)."""
    edges = np.diff(np.concatenate(([0], (profile > 0).view(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    cumulative = np.concatenate(([0], np.cumsum(profile)))
    mass = cumulative[ends] - cumulative[starts]
    main = mass.argmax()
    gap = np.maximum(starts - ends[main], starts[main] - ends)  # empty pixels between a run and the main run
    keep = (mass >= SPECK_MASS * mass.sum()) | (gap <= SPECK_GAP * (ends[main] - starts[main]))
    return int(starts[keep].min()), int(ends[keep].max())


def _crop(bands: list[Image.Image], box: tuple[int, int, int, int], k: int, background: Background) -> np.ndarray:
    """Ink around the digit at working resolution (longest side WORK_SIDE to 2 * WORK_SIDE)."""
    top, bottom, left, right = box
    width, height = bands[0].size
    # One view cell of margin: a cell at the digit's edge may hold ink below INK_LEVEL.
    region = (max(0, (left - 1) * k), max(0, (top - 1) * k),
              min(width, (right + 1) * k), min(height, (bottom + 1) * k))
    r = max(1, max(region[2] - region[0], region[3] - region[1]) // WORK_SIDE)
    return _ink(_reduced(bands, r, region), background)


def _tight(ink: np.ndarray) -> np.ndarray:
    """``ink`` cut to the bounding box of its strokes."""
    mask = ink >= EDGE_LEVEL * ink.max()
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _stroke_width(mask: np.ndarray) -> float:
    """Mean stroke width in pixels: a stroke of width w and length L has area wL and ~2L edge pixels."""
    mask = np.pad(mask, 1)  # outside the crop is background, so strokes touching its edge have an edge there
    inner = mask.copy()
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return 2 * mask.sum() / max(1, (mask & ~inner).sum())


def _thicken(ink: np.ndarray) -> np.ndarray:
    """Thin-pen strokes widened to MNIST's width relative to the digit's size.

    A thin pen on a large digit shrinks to a faint hairline in the 20x20 box, where MNIST
    strokes are ~2.5 px wide. Thick markers are left alone: thinning them (erosion) lost
    accuracy on bench/robustness.py, and breaks thin joins.
    """
    side = max(ink.shape)
    width = _stroke_width(ink >= 0.5 * ink.max())  # half coverage marks a stroke's edge
    grow = round((STROKE * side - width) / 2)  # pixels to add on each side of a stroke
    if width >= THIN_STROKE * side or grow < 1:
        return ink
    x = F.pad(torch.from_numpy(ink)[None, None], (grow,) * 4)  # room for the strokes to grow
    return F.max_pool2d(x, 2 * grow + 1, stride=1, padding=grow)[0, 0].numpy()  # grey dilation


def _fit(ink: np.ndarray) -> np.ndarray:
    """The ink scaled, aspect ratio kept, so its longest side is BOX; peak ink 255 like MNIST."""
    h, w = ink.shape
    scale = BOX / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    # Lanczos on a float image: anti-aliased like MNIST, no rounding before the last step.
    small = np.asarray(Image.fromarray(ink).resize(size, Image.LANCZOS)).clip(0)  # drop ringing below 0
    return small * (255 / small.max())


def _centre(digit: np.ndarray) -> np.ndarray:
    """The fitted digit pasted into a FIELD x FIELD image with its centre of mass at CENTRE."""
    h, w = digit.shape
    total = digit.sum()
    rows, cols = np.indices(digit.shape)
    top = round(CENTRE - (digit * rows).sum() / total)
    left = round(CENTRE - (digit * cols).sum() / total)
    # MNIST shifts by whole pixels; keep the whole digit inside the field.
    top, left = min(max(top, 0), FIELD - h), min(max(left, 0), FIELD - w)
    field = np.zeros((FIELD, FIELD), np.uint8)
    field[top:top + h, left:left + w] = digit.round().clip(0, 255)
    return field
