"""The drawing canvas: a ``gr.Sketchpad`` set up for digits, where a visitor can draw at once.

The first step of the data path (sketch -> preprocess -> CNN -> feature maps -> page): one
black brush sized for MNIST's stroke-to-digit ratio, an eraser, no layers, and a canvas that
refuses an unreadable upload with a sentence before Gradio decodes it.
"""
from __future__ import annotations

import io
import re
import threading
import time
from collections import OrderedDict
from functools import partial
from pathlib import Path

import gradio as gr
import pydantic
from fastapi import HTTPException
from gradio.components.base import server
from gradio.components.image_editor import AcceptBlobs, EditorData, EditorDataBlobs
from gradio.data_classes import FileData
from PIL import Image

from . import serving
from .errors import InputError
from .preprocess import FORMAT_NAMES, as_8bit, check_size, open_image

MAX_LAYERS = 1  # the page's canvas has one layer (layers=False); a sketch may carry at most this many
MAX_BLOB_BYTES = 2 * 1024 * 1024  # one image sent by accept_blobs (a 400x400 stroke PNG is ~10 kB)
MAX_BLOB_IDS_PER_SESSION = 4  # drawings (ids) a session may have waiting; older ones are dropped
MAX_SESSION_BLOB_BYTES = 4 * 1024 * 1024  # one session's waiting blobs (a stroke's three are ~30 kB)
MAX_BLOBS_BYTES = 64 * 1024 * 1024  # all sessions' waiting blobs together; the largest session's go first
# A sketch from the API: the canvas is 400x400, so 1024x1024 leaves room for any screen's canvas
# (a 2x display) while a decoded RGBA layer stays at 4 MB (a 4096x4096 one was 64 MB, 1.2 s of CPU).
MAX_SKETCH_PIXELS = 1024 * 1024
BLOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")

CANVAS = 400  # px square. Big enough to draw in comfortably, small enough to upload every stroke fast.
PAD_HEIGHT = CANVAS + 2 * 30 + 2  # the pad around it: shown at 100 %, before and after a Clear (see sketchpad())
# Brush radius in canvas px. MNIST strokes are ~0.09 of the digit's height (median over the
# test set; quartiles 0.08-0.11); a digit drawn over ~3/4 of the canvas (300 px) then wants a
# ~28 px wide stroke. Preprocessing rescales the digit to 20 px, so this ratio is what matters.
BRUSH_RADIUS = 14
ERASER_RADIUS = 24

# What the pad needs in the browser (cnn/web/sketch.js, run once on page load): the brush armed
# whenever Gradio shows "select the draw tool to start", the flag a press inside the pad resets
# after a Clear (CLEARED_JS, STALE_JS), and the tool palette moved out of a narrow pad's canvas.
SKETCH_JS = (Path(__file__).resolve().parent / "web" / "sketch.js").read_text()
# A stroke's images reach the server (accept_blobs) and its change event is sent only after the
# pad has turned the canvas into PNGs, which can take a second on a slow device. Clear in that
# moment and the stroke's event arrives after the Clear's: the server alone cannot tell it from a
# stroke drawn after the Clear. The browser can: the Clear sets a flag that only the next press
# inside the pad resets, and each page event sends the flag with it ("stale": the pad has been
# cleared since its last stroke, so the event shows the empty page, never the old drawing).
CLEARED_JS = "() => { window.cnnCleared = true; return (window.cnnClears = (window.cnnClears || 0) + 1); }"
STALE_JS = "(stale) => [window.cnnCleared === true]"


TITLE = "Cannot read this drawing"
# A drawing refused for a reason the visitor can act on: shown as title + sentence, not logged.
refusal = partial(gr.Error, title=TITLE, print_exception=False)


class SketchData(EditorData):
    """Gradio's Sketchpad value, refused with a sentence when a request's JSON is not one.

    Gradio validates the request against this model before any component code runs; its
    pydantic error would reach the caller as a bare error event (``show_error=False``)."""

    @classmethod
    def model_validate(cls, obj, **kwargs):
        try:
            value = super().model_validate(obj, **kwargs)
        except pydantic.ValidationError as e:
            first = e.errors()[0]
            where = ".".join(map(str, first["loc"])) or "the value"
            raise refusal(
                f"The request's sketch is not a Sketchpad value ({where}: {first['msg']}). Send an "
                'object with "background", "layers" and "composite" images, as gradio_client does.'
            ) from None
        if len(value.layers) > MAX_LAYERS:  # before anything is opened, let alone decoded
            raise refusal(f"The sketch has {len(value.layers)} layers; this canvas has {MAX_LAYERS} "
                          "(plus the background and the composite).")
        return value


class BlobStore:
    """The images the page sends with ``accept_blobs`` before each event, until that event uses them.

    Keyed by (session, id): an id is read only by the session that sent it (the session of the
    event being processed comes from ``serving.current_session``). A blob no event used is dropped
    after ``serving.BLOB_TTL`` s; a session keeps at most ``MAX_BLOB_IDS_PER_SESSION`` drawings and
    all of them together at most ``MAX_BLOBS_BYTES``, the oldest dropped first. Gradio's
    ``ImageEditor.preprocess`` uses it like the dict it replaces (``get``, ``in``, ``pop``)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple[str, str], tuple[float, EditorDataBlobs]] = OrderedDict()
        self._read: set[tuple[str, str]] = set()  # drawings an event has decoded (see ``forget``)

    def __deepcopy__(self, memo):  # a per-session copy of the component shares the store
        return self

    @staticmethod
    def _key(blob_id) -> tuple[str, str]:
        return (serving.current_session() or "", str(blob_id))

    def get(self, blob_id, default=None):
        with self._lock:
            item = self._items.get(self._key(blob_id))
        return item[1] if item else default

    def __contains__(self, blob_id) -> bool:
        with self._lock:
            return self._key(blob_id) in self._items

    def pop(self, blob_id, default=None):
        """What Gradio calls once an event has decoded a drawing. The newest drawing of a
        session stays (until it expires or a newer one comes): a repeated stroke event
        (``trigger_mode="always_last"``) reads it again."""
        with self._lock:
            key = self._key(blob_id)
            item = self._items.get(key)
            self._read.add(key)
            if item is not None and key != self._newest(key[0]):
                del self._items[key]
            self._read.intersection_update(self._items)
        return item[1] if item else default

    def _of(self, session: str) -> list[tuple[str, str]]:
        """The session's keys, oldest first (call with the lock held)."""
        return [k for k in self._items if k[0] == session]

    def _newest(self, session: str) -> tuple[str, str] | None:
        mine = self._of(session)
        return mine[-1] if mine else None

    def forget(self) -> None:
        """The visitor cleared the canvas: drop the current session's drawings that an event has
        already read. One not read yet stays (it expires): it may be a stroke's sent after the
        Clear's event left the browser. A stroke sent just before the Clear is never shown: its
        event knows the pad was cleared (``STALE_JS``)."""
        session = serving.current_session() or ""
        with self._lock:
            for key in [k for k in self._of(session) if k in self._read]:
                del self._items[key]
            self._read.intersection_update(self._items)

    def put(self, session: str, blob_id: str, kind: str, index: int | None, data: bytes) -> None:
        with self._lock:
            self._expire()
            key = (session, blob_id)
            _, blobs = self._items.pop(key, (0, None))
            blobs = blobs or EditorDataBlobs(background=None, layers=[], composite=None)
            if kind == "layer":
                blobs.layers = [data]  # index 0, checked by the caller: the one layer
            else:
                setattr(blobs, kind, data)
            self._items[key] = (time.monotonic(), blobs)
            mine = self._of(session)
            for old in mine[:-MAX_BLOB_IDS_PER_SESSION]:
                del self._items[old]
            mine = self._of(session)
            while len(mine) > 1 and sum(self._bytes(k) for k in mine) > MAX_SESSION_BLOB_BYTES:
                del self._items[mine.pop(0)]  # the session's own older drawings make room first
            while self._size() > MAX_BLOBS_BYTES and len(self._items) > 1:
                del self._items[self._heaviest_oldest()]  # never a light visitor's drawing for a heavy one's

    def latest(self) -> str | None:
        """The id of the drawing this session sent last (older ones it sent are dropped: only the
        newest stroke matters), or None."""
        session = serving.current_session() or ""
        with self._lock:
            self._expire()
            mine = self._of(session)
            for old in mine[:-1]:
                del self._items[old]
            return mine[-1][1] if mine else None  # kept (see ``pop``) until it expires or is replaced

    def expire(self) -> None:
        with self._lock:
            self._expire()

    def _expire(self) -> None:
        cutoff = time.monotonic() - serving.BLOB_TTL
        for key in [k for k, (t, _) in self._items.items() if t < cutoff]:
            del self._items[key]

    def _bytes(self, key) -> int:
        blobs = self._items[key][1]
        return sum(len(b or b"") for b in (blobs.background, blobs.composite, *blobs.layers))

    def _size(self) -> int:
        return sum(self._bytes(k) for k in self._items)

    def session_bytes(self, session: str) -> int:
        with self._lock:
            return sum(self._bytes(k) for k in self._of(session))

    def _heaviest_oldest(self) -> tuple[str, str]:
        """The oldest drawing of the session holding the most bytes (call with the lock held)."""
        per_session: dict[str, int] = {}
        for key in self._items:
            per_session[key[0]] = per_session.get(key[0], 0) + self._bytes(key)
        heaviest = max(per_session, key=per_session.get)
        return self._of(heaviest)[0]

    def __len__(self) -> int:
        return len(self._items)


_STORE = BlobStore()  # every Sketchpad's (see ``Sketchpad.blob_storage``)


class Sketchpad(gr.Sketchpad):
    """``gr.Sketchpad`` that refuses an unreadable upload with a sentence instead of a bare "Error".

    Gradio decodes the sketch's images before ``update``/``predict`` run, so an API caller's
    upload that is not an image, is damaged, or declares a huge size fails inside Gradio, where
    ``show_error=False`` hides the reason (rightly: Gradio's messages name server paths). Sizes
    are read from the image headers first: nothing over ``MAX_SKETCH_PIXELS`` is decoded.
    A request whose JSON is not a sketch at all is refused with a sentence too (``SketchData``)."""

    data_model = SketchData

    @property
    def blob_storage(self) -> BlobStore:
        """Replaces Gradio's unbounded, session-blind dict (see ``BlobStore``). One store for the
        process, not one per object: once an event has changed the pad (an example loaded),
        Gradio serves that session from a new copy of it, and the copy must see the drawings.
        Keys are (session, id), so pads never see each other's drawings."""
        return _STORE

    @blob_storage.setter
    def blob_storage(self, _value) -> None:  # ImageEditor.__init__ assigns its dict: keep ours
        pass

    @server
    def accept_blobs(self, data: AcceptBlobs):
        """One image of the drawing the page is about to send (Gradio's route, checked first):
        ``type`` background/composite/layer, ``index`` 0 for the one layer, an id of letters
        and digits, one file of at most ``MAX_BLOB_BYTES``. Anything else is a 400/413."""
        fields, files = data.data, data.files
        kind, index, blob_id = fields.get("type"), fields.get("index"), fields.get("id")
        if kind not in ("background", "composite", "layer"):
            raise HTTPException(400, 'type must be "background", "composite" or "layer".')
        if kind == "layer" and str(index) not in {str(i) for i in range(MAX_LAYERS)}:
            raise HTTPException(400, f"index must be 0: this canvas has {MAX_LAYERS} layer.")
        if not isinstance(blob_id, str) or not BLOB_ID.fullmatch(blob_id):
            raise HTTPException(400, "id must be 1-64 letters, digits, '-' or '_'.")
        if len(files) != 1:
            raise HTTPException(400, "Send exactly one file.")
        if len(files[0][1]) > MAX_BLOB_BYTES:
            raise HTTPException(413, f"File size exceeded maximum allowed size of {MAX_BLOB_BYTES} bytes.")
        try:  # an image, on arrival: its header read, nothing decoded
            check_header(io.BytesIO(files[0][1]))
        except gr.Error as e:
            raise HTTPException(400, e.message) from None
        except Exception:  # noqa: BLE001 - truncated or corrupt headers
            raise HTTPException(400, "The image is damaged and cannot be decoded.") from None
        session = fields.get("session_hash")  # the form field Gradio's route reads the session from
        if not isinstance(session, str) or not session:
            raise HTTPException(400, "session_hash is missing.")
        self.blob_storage.put(session, blob_id, kind, 0 if kind == "layer" else None, files[0][1])

    def latest(self):
        """The drawing this session's page sent last with ``accept_blobs``, decoded exactly as an
        event input is (``preprocess``), or None.

        What the page's per-stroke event reads instead of taking the pad as an input: Gradio's
        front end asks an input Sketchpad for its value again for every status update of the
        event, and each time the pad uploads its three images anew (six unused uploads a stroke)."""
        blob_id = self.blob_storage.latest()
        return None if blob_id is None else self.preprocess(SketchData(id=blob_id))

    def get_block_name(self) -> str:  # the same front-end component as gr.Sketchpad
        return "imageeditor"

    def get_block_class(self) -> str:
        return "imageeditor"

    def preprocess(self, payload):
        """Every image's header checked, then only the composite decoded (as Gradio decodes it).
        The layers and the background are handed on undecoded (bytes, or the upload's path):
        ``cnn.preprocess.prepare`` reads the composite first and decodes them only when it shows
        no digit (Gradio decoded all three, for every stroke and API call)."""
        try:
            for source in self._uploads(payload):
                check_header(source)
            if payload is None:
                return None
            if payload.id is not None:  # the page's blobs (``_uploads`` refused a missing one)
                parts, raw = self.blob_storage.get(payload.id), lambda blob: blob
            else:
                parts, raw = payload, lambda f: f.path
            composite = parts.composite
            value = {"background": None if parts.background is None else raw(parts.background),
                     "layers": [raw(layer) for layer in parts.layers or () if layer is not None],
                     "composite": None if composite is None else
                     self.convert_and_format_image(composite, flatten_on_white=True)}
            if payload.id is not None:
                self.blob_storage.pop(payload.id)  # as Gradio does once a drawing is read
            return value
        except gr.Error:
            raise
        except Exception as e:  # truncated data, corrupt chunks: logged for the operator
            raise gr.Error("The image is damaged and cannot be decoded.", title=TITLE) from e

    def _uploads(self, payload) -> list:
        """The image files (paths) or blobs (bytes) that ``super().preprocess`` will decode."""
        if payload is None:
            return []
        if payload.id is not None:  # the page sends its images as blobs first
            blobs = self.blob_storage.get(payload.id)
            if blobs is None:
                raise refusal("This drawing's images were not received by this session, or have "
                              "expired; draw again.")
            return [io.BytesIO(f) for f in (blobs.background, *blobs.layers, blobs.composite) if f is not None]
        files = [f.path for f in (payload.background, *payload.layers, payload.composite) if f is not None]
        for path in files:
            if not Path(path).is_file():
                raise refusal("The sketch names a folder or a missing file, not an uploaded image; "
                              "upload the image first and send the path that returns.")
        return files

    def convert_and_format_image(self, file, flatten_on_white: bool = False):
        """Gradio's conversion, except for float and 16/32-bit images, which ``Image.convert``
        would clip to near-black: those are read by their value range, as ``prepare`` reads them."""
        if file is not None:
            source = file.path if isinstance(file, FileData) else io.BytesIO(file)
            with open_image(source) as image:
                if image.mode in ("F", "I") or image.mode.startswith("I;16"):
                    return super().convert_and_format_image(_png(as_8bit(image)), flatten_on_white)
        return super().convert_and_format_image(file, flatten_on_white)


def check_header(source) -> None:
    """One image of a sketch (a path or a file object), by its header alone: an allowed format
    (``open_image``) of at most ``MAX_SKETCH_PIXELS``, or a ``refusal`` that says why. Used for
    blobs as they arrive and for every image before Gradio decodes a sketch."""
    limit = (f"more than the {MAX_SKETCH_PIXELS:,}-pixel limit for a sketch (the canvas is {CANVAS}x{CANVAS}); "
             "scale it down first.")
    try:
        with open_image(source) as image:  # parses the header only; allowed formats only
            width, height = image.size
            if width * height > MAX_SKETCH_PIXELS:
                raise InputError(f"The image is {width}x{height} pixels, {limit}")
            check_size(width, height)  # prepare()'s own checks (empty images)
    except InputError as e:
        raise refusal(str(e)) from None
    except Image.DecompressionBombError:  # PIL's own refusal, at twice its MAX_IMAGE_PIXELS
        raise refusal(f"The image declares {limit}") from None
    except Image.UnidentifiedImageError:
        raise refusal(f"The upload is not an image in a format that can be read ({FORMAT_NAMES}).") from None


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def sketchpad() -> Sketchpad:
    """The page's drawing canvas (also the input of bench/load.py's do-nothing twin of the page)."""
    return Sketchpad(
        label="① Draw a digit here",
        elem_id="sketch",
        canvas_size=(CANVAS, CANVAS),
        fixed_canvas=True,  # an example is scaled onto the canvas, not the canvas onto it
        # The drawing area: the canvas plus Gradio's 30 px border on each side and the pad's own
        # 1 px frame. The editor opens "fit to the screen" (any zoom) but a Clear resets it to
        # min(fit, 100 %): a taller pad opened at 112 % and shrank at the first Clear; at this
        # height both are 100 % on a desktop (and the same fit below 100 % on a phone).
        height=PAD_HEIGHT,
        type="numpy",
        image_mode="RGBA",
        brush=gr.Brush(colors=["#000000"], default_color="#000000", color_mode="fixed",
                       default_size=BRUSH_RADIUS),
        eraser=gr.Eraser(default_size=ERASER_RADIUS),
        layers=False,
        transforms=(),
        sources=(),
        buttons=[],
    )
