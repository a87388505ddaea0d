"""The drawing canvas: a ``gr.Sketchpad`` set up for digits, where a visitor can draw at once.

The first step of the data path (sketch -> preprocess -> CNN -> feature maps -> page): one
black brush sized for MNIST's stroke-to-digit ratio, an eraser, no layers, and a canvas that
refuses an unreadable upload with a sentence before Gradio decodes it.
"""
from __future__ import annotations

import io
from functools import partial

import gradio as gr
import pydantic
from gradio.components.image_editor import EditorData
from PIL import Image

from .errors import InputError
from .preprocess import MAX_PIXELS, check_size

CANVAS = 400  # px square. Big enough to draw in comfortably, small enough to upload every stroke fast.
# Brush radius in canvas px. MNIST strokes are ~0.09 of the digit's height (median over the
# test set; quartiles 0.08-0.11); a digit drawn over ~3/4 of the canvas (300 px) then wants a
# ~28 px wide stroke. Preprocessing rescales the digit to 20 px, so this ratio is what matters.
BRUSH_RADIUS = 14
ERASER_RADIUS = 24

# Gradio 6.31's Sketchpad opens with no tool selected and an overlay saying "select the draw
# tool to start", and goes back to that state after Clear: a visitor's first stroke draws
# nothing. Whenever that overlay is showing in our sketchpad, press the Brush button for the
# visitor (it is the first tool: the pad has no upload sources and no crop). Each overlay is
# pressed at most once, so this can never loop.
ARM_BRUSH_JS = """
() => {
  const pressed = new WeakSet();
  const arm = () => {
    const pad = document.getElementById("sketch");
    const overlay = pad && pad.querySelector(".empty.wrap");
    const brush = pad && pad.querySelector(".toolbar-wrap button");
    if (!overlay || !brush || pressed.has(overlay)) return;
    pressed.add(overlay);
    brush.click();
  };
  new MutationObserver(arm).observe(document.body, { childList: true, subtree: true });
  arm();
}
"""


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
            return super().model_validate(obj, **kwargs)
        except pydantic.ValidationError as e:
            first = e.errors()[0]
            where = ".".join(map(str, first["loc"])) or "the value"
            raise refusal(
                f"The request's sketch is not a Sketchpad value ({where}: {first['msg']}). Send an "
                'object with "background", "layers" and "composite" images, as gradio_client does.'
            ) from None


class Sketchpad(gr.Sketchpad):
    """``gr.Sketchpad`` that refuses an unreadable upload with a sentence instead of a bare "Error".

    Gradio decodes the sketch's images before ``update``/``predict`` run, so an API caller's
    upload that is not an image, is damaged, or declares a huge size fails inside Gradio, where
    ``show_error=False`` hides the reason (rightly: Gradio's messages name server paths). Sizes
    are read from the image headers first: nothing over ``preprocess.MAX_PIXELS`` is decoded.
    A request whose JSON is not a sketch at all is refused with a sentence too (``SketchData``)."""

    data_model = SketchData

    def get_block_name(self) -> str:  # the same front-end component as gr.Sketchpad
        return "imageeditor"

    def get_block_class(self) -> str:
        return "imageeditor"

    def preprocess(self, payload):
        try:
            for source in self._uploads(payload):
                with Image.open(source) as image:  # parses the header only
                    check_size(*image.size)  # the same limits prepare() applies
            return super().preprocess(payload)
        except gr.Error:
            raise
        except InputError as e:
            raise refusal(str(e)) from None
        except Image.DecompressionBombError:  # PIL's own refusal, at twice MAX_PIXELS
            raise refusal(f"The image declares more than the {MAX_PIXELS:,}-pixel limit; "
                          "scale it down first.") from None
        except Image.UnidentifiedImageError:
            raise refusal("The upload is not an image in a format that can be read "
                          "(PNG, JPEG, WebP, ...).") from None
        except Exception as e:  # truncated data, corrupt chunks: logged for the operator
            raise gr.Error("The image is damaged and cannot be decoded.", title=TITLE) from e

    def _uploads(self, payload) -> list:
        """The image files (paths) or blobs (bytes) that ``super().preprocess`` will decode."""
        if payload is None:
            return []
        if payload.id is not None:  # the page sends its images as blobs first
            blobs = self.blob_storage.get(payload.id)
            files = [blobs.background, *blobs.layers, blobs.composite] if blobs else []
            return [io.BytesIO(f) for f in files if f is not None]
        return [f.path for f in (payload.background, *payload.layers, payload.composite) if f is not None]


def sketchpad() -> Sketchpad:
    """The page's drawing canvas (also the input of bench/load.py's do-nothing twin of the page)."""
    return Sketchpad(
        label="① Draw a digit here",
        elem_id="sketch",
        canvas_size=(CANVAS, CANVAS),
        fixed_canvas=True,  # an example is scaled onto the canvas, not the canvas onto it
        height=CANVAS + 110,
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
