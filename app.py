"""The web page: draw a digit, see the probabilities and what conv1, conv2 and pooling keep.

    python app.py [--host HOST] [--port PORT] [--share] [--weights PATH]

Wiring only: the model, preprocessing, feature maps and their pictures live in
``cnn/`` (``sketch``, ``preprocess``, ``weights``, ``features``, ``render``). Importing this
module launches nothing: ``build_demo(model)`` returns the ``gr.Blocks`` page,
``launch(demo, ...)`` serves it with the serving settings below, ``main(argv)``
is the command line.

Endpoints (``gradio_client``): ``/predict`` takes a Sketchpad value (a dict of
``background``/``layers``/``composite`` images; a plain image works too) and
returns a ``gr.Label``: ``{"label": "7", "confidences": [ten {"label", "confidence"}]}``.
A blank canvas (or ``None``) is not an error and not a guess: it returns the
label ``"Draw a digit"`` with no confidences, which is also what the page shows.
An unreadable image is a ``gr.Error`` with a one-sentence reason.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
from functools import partial
from pathlib import Path

import gradio as gr
import torch

from cnn import render, weights
from cnn.errors import CNNError, InputError
from cnn.features import extract
from cnn.model import CNN
from cnn.preprocess import prepare
from cnn.sketch import ARM_BRUSH_JS, BRUSH_RADIUS, CANVAS, refusal, sketchpad  # noqa: F401 (re-exported for bench/ and tests/)

HERE = Path(__file__).resolve().parent
EXAMPLES = sorted((HERE / "cnn" / "examples").glob("mnist_test_*.png"))

# ---------------------------------------------------------------- page settings
EMPTY = "Draw a digit"  # the Label's text when there is nothing to classify

INTRO = """
# Draw a digit, and look inside the network that reads it
Draw one digit (0-9) in the box, large and centred. After every stroke the network's answer
updates on the right, and below it you can see **what each layer of the network sees and what
max-pooling keeps**. No click needed: the brush is ready. Or click one of the real MNIST test
digits under the box.
"""
INSIDE = """
## Inside the network, step by step
**① → ②** Your drawing is cropped, scaled into a 20×20 box and centred on a 28×28 field, exactly
as the MNIST digits the network learned from were made. Those 784 numbers are all it receives.

**③ conv1** slides 16 learned 5×5 filters over the image (blue: negative weight, red: positive),
and ReLU keeps only the positive responses: 16 maps of 28×28, each lighting up where its pattern
(an edge, a stroke direction) occurs. **④ Max-pooling** then looks at every 2×2 window and keeps
only its largest value (the **cyan dot**): 16 maps of 14×14, half the size, strongest responses kept.
"""
INSIDE_2 = """
**⑤ conv2** combines all 16 pooled maps with 32 filters of 16×5×5: 32 maps of 14×14 that respond
to larger parts (loops, corners, bars). **⑥ Max-pooling** again: 32 maps of 7×7. Finally one linear
layer reads those 32×7×7 = 1,568 numbers and gives each digit a score; softmax turns the scores into
the probabilities at the top.

Each layer has one colour scale, shown under its maps: black is 0, pale yellow is that layer's
strongest response to your drawing. Dim dots mark windows that look flat (usually all zero):
pooling still keeps one cell there, but there was nothing to win.
"""

CSS = """
/* The pictures are drawn cell by cell at their natural size: show them 1:1 where they fit,
   and never smooth them when the browser has to scale them. Leave room for the floating label. */
.crisp .image-container { padding-top: 30px; }
.crisp img { image-rendering: pixelated; width: auto !important; height: auto !important;
             max-width: 100%; max-height: 100%; object-fit: contain; }
"""


# ---------------------------------------------------------------- serving settings
# Measured by bench/load.py and explained in the README ("Sharing it").
QUEUE = dict(
    # One request at a time per core: a request is all CPU (PNG decoding, preprocessing, a forward
    # pass on 1 torch thread), so a 3rd one would only time-slice the same 2 cores. Measured at 32
    # clients, 1, 2 and 4 all serve 7.2-7.6 requests/s (Gradio's own work dominates); 2 keeps
    # one slow request (a large upload to decode) from holding up everyone behind it.
    default_concurrency_limit=2,
    # Bounded: at the ~7.5 requests/s measured on 2 cores, the 32nd in line waits ~4 s. A burst
    # beyond that is told "Queue is full" at once (HTTP 503) instead of making everyone wait longer.
    max_size=32,
    # No direct POST /gradio_api/run/<endpoint> (Gradio's default off Spaces): it skips the
    # queue, so it would bypass both limits above and everyone's place in line.
    api_open=False,
)
MAX_FILE_SIZE = "2mb"  # a 400x400 stroke upload is ~10 kB; an 800x800 photo-sized PNG still fits


# ---------------------------------------------------------------- request path

def configure_torch(threads: int = 1) -> None:
    """One torch thread per request: a 28x28 forward pass gains nothing from more, and with
    ``QUEUE['default_concurrency_limit']`` requests at once more threads only fight for the cores."""
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # can only be set once, before any inter-op work; harmless if already set
        pass


def _prepare(value):
    """``prepare(value)``, with unreadable input turned into a message for the visitor (the
    InputError's sentence; no internals). Any other exception is a bug: Gradio logs it and,
    with ``show_error=False``, shows the visitor a bare "Error"."""
    try:
        return prepare(value)
    except InputError as e:
        raise refusal(str(e)) from None


def probabilities(features) -> dict[str, float]:
    return {str(d): float(p) for d, p in enumerate(features.probabilities.tolist())}


def predict(model: CNN, value) -> dict[str, float] | str:
    """The ``/predict`` endpoint: {"0": p0, ..., "9": p9}, or ``EMPTY`` for a blank canvas."""
    prepared = _prepare(value)
    if prepared is None:
        return EMPTY
    return probabilities(extract(model, prepared.tensor))


def update(model: CNN, value) -> tuple:
    """Everything the page shows for one sketch, from one preprocess and one forward pass:
    (label, network input, conv1 before/after pooling, conv2 before/after pooling)."""
    prepared = _prepare(value)
    if prepared is None:
        return (EMPTY, None, None, None, None, None)
    features = extract(model, prepared.tensor)
    page = render.page(features, prepared.image)
    return (probabilities(features), page.network_input, page.conv1_before, page.conv1_after,
            page.conv2_before, page.conv2_after)


# ---------------------------------------------------------------- the page

def build_demo(model: CNN, card: dict | None = None) -> gr.Blocks:
    """The page for ``model`` (eval mode), with its queue set. ``card``: its weights card, for the footer."""
    def picture(label: str, height: int, **kw) -> gr.Image:
        return gr.Image(label=label, height=height, format="png", type="pil", interactive=False,
                        buttons=["fullscreen"], elem_classes=["crisp"], **kw)

    with gr.Blocks(title="Draw a digit: inside an MNIST CNN", delete_cache=(1800, 3600)) as demo:
        gr.Markdown(INTRO)
        with gr.Row(equal_height=False):
            with gr.Column(scale=5, min_width=340):
                sketch = sketchpad()
                gr.Examples(
                    examples=[[str(p)] for p in EXAMPLES],
                    inputs=[sketch],
                    label="Or load a real MNIST test digit",
                    examples_per_page=len(EXAMPLES),
                    cache_examples=False,
                )
            with gr.Column(scale=2, min_width=200):
                net_input = picture("② What the network receives: 28×28", 270,
                                    placeholder="Draw a digit", elem_id="network-input")
            with gr.Column(scale=3, min_width=240):
                label = gr.Label(value=EMPTY, num_top_classes=10, label="What the network decides",
                                 elem_id="prediction")
        gr.Markdown(INSIDE)
        with gr.Row(equal_height=False):
            picture("conv1's 16 learned 5×5 filters", 300,
                    value=render.filters(model.conv1[0].weight), scale=2, min_width=200)
            conv1_before = picture("③ conv1 + ReLU: 16 maps, 28×28 (dots: what pooling keeps)", 530,
                                   scale=4, min_width=300, elem_id="conv1-before")
            conv1_after = picture("④ after 2×2 max-pooling: 16 maps, 14×14", 530,
                                  scale=4, min_width=300, elem_id="conv1-after")
        gr.Markdown(INSIDE_2)
        with gr.Row(equal_height=False):
            conv2_before = picture("⑤ conv2 + ReLU: 32 maps, 14×14 (dots: what pooling keeps)", 310,
                                   min_width=300, elem_id="conv2-before")
            conv2_after = picture("⑥ after 2×2 max-pooling: 32 maps, 7×7 → linear → probabilities", 310,
                                  min_width=300, elem_id="conv2-after")
        gr.Markdown(_footer(model, card))

        outputs = [label, net_input, conv1_before, conv1_after, conv2_before, conv2_after]
        # Live: after every stroke and on Clear (the pad's `change`), and when an example loads
        # (which the pad reports as `upload`, not `change`). always_last: strokes that arrive
        # while one is being processed collapse into the latest.
        gr.on([sketch.change, sketch.upload], partial(update, model), sketch, outputs,
              api_name="update", api_visibility="undocumented", trigger_mode="always_last",
              show_progress="hidden", concurrency_id="cnn")
        # The public API: the same sketch value in, the ten probabilities out. No trigger on
        # the page (the page gets its label from `update`, so each stroke runs the model once).
        gr.on(triggers=[], fn=partial(predict, model), inputs=sketch, outputs=label,
              api_name="predict", concurrency_id="cnn")
        demo.load(None, js=ARM_BRUSH_JS)
    demo.queue(**QUEUE)
    return demo


def _footer(model: CNN, card: dict | None) -> str:
    acc = (card or {}).get("test_accuracy")
    acc = f", {acc:.2%} on the 10,000 MNIST test digits" if isinstance(acc, (int, float)) else ""
    return (f"<small>The network: conv(1→16, 5×5) → ReLU → max-pool 2×2 → conv(16→32, 5×5) → ReLU → "
            f"max-pool 2×2 → linear(1568→10); {sum(p.numel() for p in model.parameters()):,} "
            f"parameters{acc}. The maps are read from the model's own layers with forward hooks "
            f"while it makes the prediction above.</small>")


# ---------------------------------------------------------------- serving

def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = 7860, *, share: bool = False,
           block: bool = True, quiet: bool = False):
    """Serve ``demo`` with the page's serving settings; returns Gradio's (app, local_url, share_url).

    ``block=False`` returns at once (tests); the server then runs until ``demo.close()``.
    With ``share``, a share link that cannot be made costs one line, and serving goes on locally."""
    said = io.StringIO()
    with contextlib.redirect_stdout(said) if share else contextlib.nullcontext():
        result = demo.launch(
            server_name=host, server_port=port, share=share, prevent_thread_lock=True, quiet=quiet,
            show_error=False,  # a visitor sees gr.Error sentences only, never an exception's text
            ssr_mode=False,  # no Node.js server beside Python: one process, one port, nothing more exposed
            max_file_size=MAX_FILE_SIZE,  # every upload route answers 413 above it
            run_history=False,  # record nothing: no per-stroke runs kept, no Hub-bucket routes
            css=CSS,
        )
    if share:  # Gradio's own account of a failed share link runs to a dozen lines
        print(f"* Running on local URL:  {demo.local_url}")
        if demo.share_url:
            print(f"* Running on public URL: {demo.share_url}")
        else:
            print(f"No share link could be made ({_share_failure(said.getvalue())}); "
                  f"still serving locally at {demo.local_url}", flush=True)
    if block:
        demo.block_thread()  # until Ctrl-C, which it turns into a clean stop
    return result


def _share_failure(gradio_said: str) -> str:
    """Why Gradio made no share link, in a few words, from what it printed."""
    line = next((line.strip() for line in gradio_said.splitlines()
                 if line.startswith("Could not create share link")), "")
    if "Checksum mismatch" in line:
        return "the downloaded tunnel program failed its checksum"
    if "Missing file" in line or "internet connection" in line:  # the two ways it reports no network
        return "gradio.live could not be reached: no internet connection, or outgoing traffic is blocked"
    return line.removeprefix("Could not create share link.").strip() or "Gradio gave no reason"


def port_number(text: str) -> int:
    """argparse type: a TCP port, 1-65535."""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)")
    return int(text)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Serve the draw-a-digit page.")
    # Hugging Face Spaces (and Docker setups) pass the address through Gradio's variables.
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                   help="interface to listen on (default 127.0.0.1; 0.0.0.0 for every interface)")
    # A string default goes through `type` too, so a bad GRADIO_SERVER_PORT gets the same message.
    p.add_argument("--port", type=port_number, default=os.environ.get("GRADIO_SERVER_PORT", "7860"),
                   help="port (default 7860)")
    p.add_argument("--share", action="store_true", help="also make a temporary public gradio.live link")
    p.add_argument("--weights", default=str(weights.DEFAULT_WEIGHTS),
                   help="weights file, with its .json card beside it (default weights/cnn.pt)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        model = weights.load(args.weights)  # once, before anything is served
        card = weights.read_card(args.weights)
    except CNNError as e:  # missing, truncated or tampered weights: one line, the fix, no traceback
        print(f"app.py: {e}", file=sys.stderr)
        return 1
    configure_torch()
    demo = build_demo(model, card)
    try:
        launch(demo, args.host, args.port, share=args.share)
    except KeyboardInterrupt:  # Ctrl-C while still starting up
        pass
    except OSError as e:  # port taken, address not available
        print(f"app.py: cannot serve on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 1
    finally:
        demo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
