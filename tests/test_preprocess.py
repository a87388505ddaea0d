"""cnn.preprocess: every drawing form -> the MNIST-style tensor; blank -> None; bad input -> InputError.

Tolerances are in [0, 1] pixel units. ``shift_error`` is the mean absolute difference of two
28x28 pictures at the best whole-pixel shift of at most one pixel: MNIST centres digits by
whole pixels, so a centre of mass near a half pixel may round either way on a re-drawn copy.
"""
import io
import re
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from cnn import data, preprocess
from cnn.errors import CNNError, InputError
from cnn.preprocess import Prepared, prepare

PER_CLASS = 2  # the first MNIST test digits of each class are drawn in the tests
EXACT = 0.002  # shift_error between the same pixels handed over in another container or mode
SAME = 0.02  # ...between one drawing rendered in other colours (edge pixels round differently)
CLOSE = 0.06  # ...between a 10x bicubic upscale and the digit at its own size (another digit: ~0.17)


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    split = data.load(train=False)
    picks = torch.cat([torch.nonzero(split.labels == c)[:PER_CLASS, 0] for c in range(10)])
    return split.images[picks].numpy()


@pytest.fixture(scope="module")
def ink(digits) -> np.ndarray:
    """One digit upscaled 10x (280x280 uint8 coverage, 255 = ink)."""
    return upscaled(digits[0])


@pytest.fixture(scope="module")
def reference(ink) -> np.ndarray:
    """What every lossless form of ``ink`` must come back as."""
    return prepare(transparent(ink)).image


def upscaled(digit: np.ndarray, factor: int = 10) -> np.ndarray:
    return np.asarray(Image.fromarray(digit).resize((28 * factor, 28 * factor), Image.BICUBIC))


def transparent(ink: np.ndarray, side: int = 800, at: tuple[int, int] = (470, 60)) -> np.ndarray:
    """Black strokes in the alpha channel of a transparent RGBA canvas, off-centre."""
    canvas = np.zeros((side, side, 4), np.uint8)
    canvas[at[0]:at[0] + ink.shape[0], at[1]:at[1] + ink.shape[1], 3] = ink
    return canvas


def coverage(ink: np.ndarray, side: int = 800, at: tuple[int, int] = (470, 60)) -> np.ndarray:
    """(side, side, 1) float ink coverage in [0, 1], placed like ``transparent``."""
    return transparent(ink, side, at)[..., 3:] / 255


def painted(ink: np.ndarray, pen, paper) -> np.ndarray:
    """Opaque RGB canvas: ``pen`` colour strokes on ``paper`` colour, anti-aliased by coverage."""
    a = coverage(ink)
    return np.round(np.array(paper) * (1 - a) + np.array(pen) * a).astype(np.uint8)


def shift_error(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a / 255, b / 255
    return min(np.abs(np.roll(a, (dy, dx), (0, 1)) - b).mean() for dy in (-1, 0, 1) for dx in (-1, 0, 1))


def centre_of_mass(image: np.ndarray) -> np.ndarray:
    rows, cols = np.indices(image.shape)
    return np.array([(image * rows).sum(), (image * cols).sum()]) / image.sum()


def ink_box(image: np.ndarray) -> tuple[int, int]:
    """(height, width) of the bounding box of the non-zero pixels."""
    rows, cols = np.flatnonzero(image.any(1)), np.flatnonzero(image.any(0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


# --- The MNIST recipe ------------------------------------------------------------------------

def test_result_is_the_mnist_tensor_and_its_picture(ink):
    p = prepare(transparent(ink))
    assert isinstance(p, Prepared)
    assert p.tensor.shape == (1, 1, 28, 28) and p.tensor.dtype == torch.float32
    assert p.image.shape == (28, 28) and p.image.dtype == np.uint8
    assert 0 <= p.tensor.min() and p.tensor.max() == 1  # peak ink is full white, as in MNIST
    assert p.image[0, 0] == 0 and p.tensor[0, 0, 0, 0] == 0  # background 0
    torch.testing.assert_close(p.tensor[0, 0], torch.from_numpy(p.image).float() / 255)


def test_an_mnist_digit_at_its_own_size_comes_back_unchanged():
    # It is already fitted and centred: only rounding may differ (mean |diff| <= 0.002). On the
    # whole test set 22 of 10 000 differ: a stray MNIST speck dropped, or a centre of mass on a
    # half pixel rounding the other way; none among the first 2000.
    for digit in data.load(train=False).images[:2000].numpy():
        assert np.abs(prepare(digit).image / 255 - digit / 255).mean() <= 0.002


def test_upscaled_off_centre_digit_on_transparent_canvas_matches_its_own_size(digits):
    # 10x bicubic upscale, pasted at (470, 60) of an 800x800 transparent layer.
    for digit in digits:
        own = prepare(digit).image
        drawn = prepare(transparent(upscaled(digit))).image
        assert shift_error(drawn, own) <= CLOSE


def test_fitted_into_20px_and_centred_by_mass_wherever_and_however_big_it_is(digits):
    rng = np.random.default_rng(0)
    for digit in digits:
        big = upscaled(digit, int(rng.integers(3, 25)))  # 84 to 672 px
        at = tuple(int(v) for v in rng.integers(0, 800 - big.shape[0] + 1, 2))
        image = prepare(transparent(big, 800, at)).image
        assert max(ink_box(image)) == 20  # MNIST's box
        # Whole-pixel shifts put the centre of mass within half a pixel of MNIST's (14, 14)
        # (measured on the MNIST training set: 14.00 +- 0.29 in rows and columns).
        assert np.abs(centre_of_mass(image) - 14.0).max() <= 0.5


@pytest.mark.parametrize("style", ["black on white", "white on black", "blue on white", "red on yellow",
                                   "white on transparent"])
def test_ink_colour_and_background_do_not_matter(style, digits):
    for digit in digits:
        ink = upscaled(digit)
        assert shift_error(prepare(in_colour(ink, style)).image, prepare(transparent(ink)).image) <= SAME


def in_colour(ink: np.ndarray, style: str) -> np.ndarray:
    pen, paper = {"black on white": ((0, 0, 0), (255, 255, 255)), "white on black": ((255,) * 3, (0, 0, 0)),
                  "blue on white": ((0, 0, 255), (255, 255, 255)), "red on yellow": ((200, 0, 0), (255, 230, 0)),
                  "white on transparent": (None, None)}[style]
    if pen is None:
        value = transparent(ink)
        value[..., :3] = 255  # white strokes: the alpha channel alone says where the ink is
        return value
    return painted(ink, pen, paper)


# --- Every input form ------------------------------------------------------------------------

def pil_forms(ink):
    grey = Image.fromarray(painted(ink, (0, 0, 0), (255, 255, 255))[..., 0])  # black on white, L
    rgba = Image.fromarray(transparent(ink))
    binary = coverage(ink)[..., 0] >= 0.5
    gif = Image.frombytes("P", binary.shape[::-1], binary.astype(np.uint8).tobytes())
    gif.putpalette([255, 255, 255, 0, 0, 0])  # index 0 paper, index 1 black ink...
    gif.info["transparency"] = 0  # ...on a transparent background, as GIFs do it
    return {
        "1": (Image.fromarray(binary), 0.05),  # binarised: coarser edges
        "L": (grey, EXACT),
        "LA": (rgba.convert("LA"), EXACT),
        "P with transparency": (gif, 0.05),  # binarised too
        "RGB": (grey.convert("RGB"), EXACT),
        "RGBA": (rgba, EXACT),
        "I": (grey.convert("I"), EXACT),
        "I;16": (Image.fromarray(np.asarray(grey).astype(np.uint16) * 257), EXACT),
        "F": (grey.convert("F"), EXACT),
        "CMYK": (grey.convert("RGB").convert("CMYK"), EXACT),
    }


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P with transparency", "RGB", "RGBA", "I", "I;16", "F", "CMYK"])
def test_pil_image_in_any_mode(mode, ink, reference):
    image, tolerance = pil_forms(ink)[mode]
    assert image.mode == mode.split()[0]
    assert shift_error(prepare(image).image, reference) <= tolerance


def array_forms(ink):
    a = coverage(ink)  # (H, W, 1) float in [0, 1], ink high
    white_ink = np.round(a * 255).astype(np.uint8)
    return {
        "(H,W) uint8": (white_ink[..., 0], EXACT),
        "(H,W,1) uint8": (white_ink, EXACT),
        "(H,W,3) uint8": (np.repeat(255 - white_ink, 3, axis=2), EXACT),
        "(H,W,4) uint8": (transparent(ink), EXACT),
        "(H,W) bool": (a[..., 0] >= 0.5, 0.05),  # binarised: coarser edges
        "(H,W) int64 0-255": (white_ink[..., 0].astype(np.int64), EXACT),
        "(H,W,3) int32 0-255": (np.repeat(255 - white_ink, 3, axis=2).astype(np.int32), EXACT),
        "(H,W) uint16 0-65535": (white_ink[..., 0].astype(np.uint16) * 257, EXACT),
        "(H,W) float32 0-1": (a[..., 0].astype(np.float32), EXACT),
        "(H,W,3) float64 0-1": (np.repeat(1 - a, 3, axis=2), EXACT),
        "(H,W,4) float64 0-1": (transparent(ink) / 255, EXACT),
        "(H,W) float64 0-255": (a[..., 0] * 255, EXACT),
        "(H,W) view with strides": (np.repeat(white_ink[..., 0], 2, axis=1)[:, ::2], EXACT),
    }


@pytest.mark.parametrize("form", list(array_forms(np.zeros((280, 280), np.uint8))))
def test_numpy_array_of_any_shape_and_dtype(form, ink, reference):
    array, tolerance = array_forms(ink)[form]
    assert shift_error(prepare(array).image, reference) <= tolerance


@pytest.mark.parametrize("form", ["str path", "Path", "bytes", "JPEG"])
def test_image_file(form, ink, reference, tmp_path):
    path = tmp_path / ("digit.jpg" if form == "JPEG" else "digit.png")
    if form == "JPEG":  # no alpha in JPEG: black on white, lossy
        Image.fromarray(painted(ink, (0, 0, 0), (255, 255, 255))).save(path, quality=85)
    else:
        Image.fromarray(transparent(ink)).save(path)
    value = {"str path": str(path), "Path": path, "bytes": path.read_bytes(), "JPEG": str(path)}[form]
    assert shift_error(prepare(value).image, reference) <= (0.01 if form == "JPEG" else EXACT)  # JPEG: lossy


def test_phone_photo_is_turned_upright_by_its_exif_orientation(ink, reference, tmp_path):
    path = tmp_path / "photo.jpg"
    sideways = Image.fromarray(painted(ink, (0, 0, 0), (255, 255, 255))).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    sideways.save(path, quality=95, exif=exif)
    assert shift_error(prepare(str(path)).image, reference) <= 0.01  # JPEG: lossy


def sketch_forms(ink):
    layer = transparent(ink)
    white = np.full_like(layer, 255)
    flat = painted(ink, (0, 0, 0), (255, 255, 255))
    white_composite = np.concatenate([flat, np.full(flat.shape[:2] + (1,), 255, np.uint8)], axis=2)
    black = np.zeros_like(layer)
    black[..., 3] = 255
    return {
        "transparent composite": {"background": None, "layers": [layer], "composite": layer},
        "white composite": {"background": white, "layers": [layer], "composite": white_composite},
        "no composite key": {"background": None, "layers": [layer]},
        "composite None": {"background": None, "layers": [layer], "composite": None},
        # The flattened composite lost the black strokes on black; the layer still has them.
        "strokes only in the layer": {"background": black, "layers": [layer], "composite": black},
        "strokes split over two layers": {"background": None, "composite": None,
                                          "layers": [np.where(np.arange(800)[:, None, None] < 600, layer, 0),
                                                     np.where(np.arange(800)[:, None, None] >= 600, layer, 0)]},
        "upload in the background only": {"background": flat, "layers": [], "composite": None},
        "PIL images": {"background": None, "layers": [Image.fromarray(layer)],
                       "composite": Image.fromarray(layer)},
    }


@pytest.mark.parametrize("form", list(sketch_forms(np.zeros((280, 280), np.uint8))))
def test_gradio_sketchpad_value(form, ink, reference):
    assert shift_error(prepare(sketch_forms(ink)[form]).image, reference) <= EXACT


@pytest.mark.parametrize("kind", ["numpy", "pil", "filepath"])
@pytest.mark.parametrize("mode", ["RGBA", "RGB", "L"])
def test_what_gradio_sketchpad_really_hands_over(kind, mode, ink, reference, tmp_path):
    """The value built by Gradio's own Sketchpad.preprocess from the browser's PNG layers."""
    import gradio as gr  # slow to import: only here
    from gradio.components.image_editor import EditorData
    from gradio.data_classes import FileData

    layer = tmp_path / "layer.png"
    Image.fromarray(transparent(ink)).save(layer)  # the browser sends transparent PNG layers
    value = gr.Sketchpad(type=kind, image_mode=mode).preprocess(
        EditorData(background=None, layers=[FileData(path=str(layer))], composite=FileData(path=str(layer))))
    assert shift_error(prepare(value).image, reference) <= EXACT


# --- Blank canvases and hostile input --------------------------------------------------------

def png(width: int, height: int, idat: bytes = zlib.compress(b"\0" * 64)) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` (8-bit grey) whatever its data holds."""
    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def speck() -> np.ndarray:
    canvas = np.zeros((800, 800, 4), np.uint8)
    canvas[400:410, 300:310, 3] = 255  # one 10 px dab of the brush
    return canvas


def lazily_opened(data: bytes) -> Image.Image:
    """A giant image opened (header only) by someone else, who switched PIL's guard off:
    prepare() must still refuse it before decoding."""
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        return Image.open(io.BytesIO(data))
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def closed_image(tmp_path):
    path = tmp_path / "closed.png"
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(path)
    image = Image.open(path)
    image.close()
    return image


def truncated_png(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 300), np.uint8)).save(buffer, "PNG")
    path = tmp_path / "truncated.png"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return str(path)


def text_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("This is not an image.\n" * 100)
    return str(path)


BLANK = "no digit"
ERROR = "InputError"
HOSTILE = {
    # name: (expected outcome, value factory taking tmp_path)
    "None": (BLANK, lambda t: None),
    "empty dict": (BLANK, lambda t: {}),
    "empty Sketchpad value": (BLANK, lambda t: {"background": None, "layers": [], "composite": None}),
    "fresh Sketchpad canvas": (BLANK, lambda t: {"background": None, "layers": [np.zeros((800, 800, 4), np.uint8)],
                                                 "composite": np.zeros((800, 800, 4), np.uint8)}),
    "all transparent": (BLANK, lambda t: np.zeros((800, 800, 4), np.uint8)),
    "all white": (BLANK, lambda t: np.full((800, 800, 3), 255, np.uint8)),
    "all black": (BLANK, lambda t: np.zeros((800, 800), np.uint8)),
    "full ink (opaque black layer)": (BLANK, lambda t: np.tile(np.uint8([0, 0, 0, 255]), (800, 800, 1))),
    "all mid-grey floats": (BLANK, lambda t: np.full((100, 100), 0.5)),
    "one speck": (BLANK, lambda t: speck()),
    "faint smudge (10/255)": (BLANK, lambda t: np.pad(np.full((200, 200), 10, np.uint8), 300)),
    "1x1": (ERROR, lambda t: np.zeros((1, 1), np.uint8)),
    "0x0": (ERROR, lambda t: np.zeros((0, 0), np.uint8)),
    "1x10000": (ERROR, lambda t: np.zeros((1, 10_000), np.uint8)),
    "8x1000 strip": (ERROR, lambda t: np.zeros((8, 1000), np.uint8)),
    "10000x10000 array": (ERROR, lambda t: np.broadcast_to(np.uint8(0), (10_000, 10_000))),
    "100000x100000x4 array": (ERROR, lambda t: np.broadcast_to(np.uint8(0), (100_000, 100_000, 4))),
    "NaN floats": (ERROR, lambda t: np.where(np.eye(50, dtype=bool), np.nan, 0.5)),
    "inf floats": (ERROR, lambda t: np.full((50, 50), np.inf)),
    "negative values": (ERROR, lambda t: np.linspace(-1, 1, 2500).reshape(50, 50)),
    "values above 65535": (ERROR, lambda t: np.full((50, 50), 70_000, np.int64)),
    "1-D array": (ERROR, lambda t: np.zeros(784, np.uint8)),
    "4-D array": (ERROR, lambda t: np.zeros((1, 1, 28, 28), np.uint8)),
    "5 channels": (ERROR, lambda t: np.zeros((28, 28, 5), np.uint8)),
    "object array": (ERROR, lambda t: np.full((28, 28), None, dtype=object)),
    "complex array": (ERROR, lambda t: np.zeros((28, 28), np.complex64)),
    "string array": (ERROR, lambda t: np.full((28, 28), "ink")),
    "torch tensor": (ERROR, lambda t: torch.zeros(1, 1, 28, 28)),
    "list of lists": (ERROR, lambda t: [[0] * 28] * 28),
    "number": (ERROR, lambda t: 42),
    "layers not a list": (ERROR, lambda t: {"layers": "layer.png"}),
    "composite of the wrong type": (ERROR, lambda t: {"composite": 3.5}),
    "truncated PNG": (ERROR, truncated_png),
    "text file": (ERROR, text_file),
    "missing file": (ERROR, lambda t: str(t / "missing.png")),
    "empty path": (ERROR, lambda t: ""),
    "folder": (ERROR, lambda t: t),
    "empty bytes": (ERROR, lambda t: b""),
    "random bytes": (ERROR, lambda t: np.random.default_rng(0).bytes(5000)),
    "PNG declaring 10000x10000": (ERROR, lambda t: png(10_000, 10_000)),
    "PNG declaring 5000x5000 (over MAX_PIXELS)": (ERROR, lambda t: png(5000, 5000)),
    "PNG bomb declaring 60000x60000": (ERROR, lambda t: png(60_000, 60_000)),
    "lazily opened 10000x10000 PIL image": (ERROR, lambda t: lazily_opened(png(10_000, 10_000))),
    "closed PIL image": (ERROR, closed_image),
    "1x1 PIL image": (ERROR, lambda t: Image.new("RGBA", (1, 1))),
}


def memory_kib(field: str) -> int:
    """A ``/proc/self/status`` memory figure in KiB: VmRSS (now) or VmHWM (peak)."""
    return int(re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1))


class PeakMemory:
    """How far this process's resident memory rose above its level at entry, while in the block.

    Not ``ru_maxrss``: that is a lifetime peak, blind to anything below an earlier one. Here the
    kernel's peak mark (VmHWM) is reset at entry (``/proc/self/clear_refs``) and read at exit,
    which sees even a spike inside one C call; a thread also samples VmRSS every millisecond,
    which is all there is where the reset is not allowed."""

    def __enter__(self):
        try:
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current VmRSS
            self._hwm = True
        except OSError:
            self._hwm = False
        self.base = self.peak = memory_kib("VmRSS")
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, memory_kib("VmRSS"))

    def __exit__(self, *exc):
        self._stop.set()
        self._sampler.join()
        self.peak = max(self.peak, memory_kib("VmHWM") if self._hwm else memory_kib("VmRSS"))

    @property
    def rise_mib(self) -> float:
        return (self.peak - self.base) / 1024


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_input_ends_in_no_digit_or_a_clear_error(name, tmp_path):
    expected, make = HOSTILE[name]
    value = make(tmp_path)
    start = time.perf_counter()
    with PeakMemory() as memory:
        if expected == BLANK:
            assert prepare(value) is None
        else:
            with pytest.raises(InputError) as err:
                prepare(value)
            message = str(err.value)
            assert isinstance(err.value, CNNError)
            assert message[0].isupper() and message.endswith(".") and len(message) > 20  # a whole sentence
    assert time.perf_counter() - start < 2.0  # no hang, no decoding of a huge image
    assert memory.rise_mib < 100, f"{memory.rise_mib:.0f} MiB above where it started"  # nothing huge decoded


def test_peak_memory_sees_a_spike_below_an_earlier_peak():
    """The measurement above can fail: a short 160 MiB allocation is seen even when the
    process has been bigger before (where ``ru_maxrss`` would report nothing)."""
    np.ones(256 * 2**20, np.uint8).sum()  # an earlier, higher peak
    with PeakMemory() as memory:
        np.ones(160 * 2**20, np.uint8).sum()  # touched, then freed at once
    assert memory.rise_mib > 120


def test_size_limits_are_exposed_and_enforced_at_the_edge():
    side = int(preprocess.MAX_PIXELS ** 0.5)
    assert prepare(np.broadcast_to(np.uint8(0), (side, side))) is None  # at the limit: read (blank)
    with pytest.raises(InputError, match="limit"):
        prepare(np.broadcast_to(np.uint8(0), (side, side + 1)))
    assert prepare(np.zeros((preprocess.MIN_SIDE,) * 2, np.uint8)) is None
    with pytest.raises(InputError, match="too small"):
        prepare(np.zeros((preprocess.MIN_SIDE - 1, 28), np.uint8))


# --- What real drawings need -----------------------------------------------------------------

def test_a_stray_dot_far_from_the_digit_is_ignored(ink, reference):
    canvas = transparent(ink)  # digit at rows 470-750, columns 60-340
    canvas[80:110, 650:680, 3] = 255  # a 30 px dab in the opposite corner
    assert shift_error(prepare(canvas).image, reference) <= EXACT


# Digits drawn as polylines on a 400x400 canvas (x, y): strokes that do not touch each other.
SHAPES = {
    # a "4" whose two strokes are 20 px apart: an empty gap in the columns, both parts heavy
    "4": [[(120, 60), (80, 230), (200, 230)], [(240, 110), (240, 350)]],
    # a "5" whose flag (18 % of the ink) floats 20 px above the body
    "5": [[(130, 60), (260, 60)], [(130, 100), (125, 190), (230, 200), (250, 290), (200, 340), (110, 330)]],
    "7": [[(90, 70), (270, 70), (150, 350)]],
    "2": [[(100, 110), (180, 60), (250, 110), (100, 340), (270, 340)]],
}


def drawn(shape: str, pen: int) -> Image.Image:
    image = Image.new("L", (400, 400))
    draw = ImageDraw.Draw(image)
    for stroke in SHAPES[shape]:
        draw.line(stroke, fill=255, width=pen, joint="curve")
    return image


@pytest.mark.parametrize("shape", ["4", "5"])
def test_separate_strokes_of_one_digit_are_all_kept(shape):
    drawing = drawn(shape, 18)
    height, width = ink_box(np.asarray(drawing))
    # Nothing dropped: the 20 px box has the aspect ratio of the whole drawing (+-1 px of rounding).
    out_height, out_width = ink_box(prepare(drawing).image)
    assert out_height == 20 and abs(out_width - 20 * width / height) <= 1


def test_a_thin_one_is_not_stretched_sideways():
    canvas = np.zeros((800, 800), np.uint8)
    canvas[100:700, 400:406] = 255  # a 6 px wide, 600 px tall stroke
    image = prepare(canvas).image
    height, width = ink_box(image)
    assert height == 20 and width <= 4  # MNIST 1s are 20 tall and a few pixels wide
    assert abs(centre_of_mass(image)[1] - 14.0) <= 0.5


def thin_to_mnist_pen_ink_ratios() -> list[float]:
    """Ink in the 28x28 picture of each shape drawn with a 2, 4 and 8 px pen, over a 36 px pen's.

    A 36 px pen on these ~300 px digits has MNIST's median stroke width for their size.
    """
    return [prepare(drawn(shape, pen)).image.sum() / prepare(drawn(shape, 36)).image.sum()
            for shape in SHAPES for pen in (2, 4, 8)]


def test_a_thin_pen_is_thickened_to_mnist_stroke_width():
    ratios = thin_to_mnist_pen_ink_ratios()
    assert 0.7 <= min(ratios) and max(ratios) <= 1.5  # as much ink as the MNIST-width pen, within 1.5x


def test_without_thickening_a_thin_pen_leaves_hairlines(monkeypatch):
    # Guards the test above against passing vacuously: with the step off, every ratio is low.
    monkeypatch.setattr(preprocess, "THIN_STROKE", 0.0)
    assert max(thin_to_mnist_pen_ink_ratios()) < 0.6


def test_pil_decompression_bomb_limit_is_lowered_to_the_cap():
    """Decoding done outside prepare() (Gradio decodes uploads first) is capped as well."""
    assert Image.MAX_IMAGE_PIXELS == preprocess.MAX_PIXELS
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(png(10_000, 10_000)))


def test_network_input_is_torchvisions_to_tensor_of_the_picture():
    """The one function that turns every 28x28 picture the page shows into the tensor it runs
    (a drawing's, a link's, a click's) scales exactly as ToTensor did for the MNIST training set."""
    from torchvision.transforms.functional import to_tensor

    field = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    field.setflags(write=False)  # as the session's stored picture is: no copy warning, no change
    x = preprocess.network_input(field)
    assert x.shape == (1, 1, 28, 28) and x.dtype == torch.float32
    torch.testing.assert_close(x, to_tensor(field.copy())[None], rtol=0, atol=0)
