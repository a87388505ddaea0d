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
An unreadable image is a ``gr.Error`` with a one-sentence reason. ``/predict``, ``/inspect``
and ``/evidence`` take an optional last argument, the network (``"shipped"``, or a step of the
tutorial's training: ``cnn/replay.py``).

The page draws its pictures in the browser (``cnn/web/maps.js``) from one value a drawing
(``cnn/payload.py``): a stroke writes no file.
"""
from __future__ import annotations

import argparse
import contextlib
import html
import io
import os
import sys
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qsl, urlencode

import gradio as gr
from gradio.components.label import LabelConfidence, LabelData
import numpy as np
import torch


from cnn import confidence, explain, inspector, link, patches, payload, render, replay, serving, shift, weights
from cnn.errors import CNNError, InputError
from cnn.features import extract
from cnn.model import CNN
from cnn.preprocess import network_input, prepare
from cnn.sketch import BRUSH_RADIUS, CANVAS, CLEARED_JS, SKETCH_JS, STALE_JS, refusal, sketchpad  # noqa: F401 (re-exported for bench/ and tests/)

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
WEB = HERE / "cnn" / "web"  # the browser side: real .html, .css and .js files
CSS = (WEB / "page.css").read_text() + (WEB / "maps.css").read_text() + (WEB / "filters.css").read_text()
PAGE_JS = (WEB / "page.js").read_text()  # alt text, example names, the answer as a live region
MAPS_HTML = (WEB / "maps.html").read_text()  # ③-⑦ and the focus view: drawn by maps.js
DRAW_JS = (WEB / "draw.js").read_text()  # what both drawings below draw with (a js_on_load cannot import)
MAPS_JS = DRAW_JS + (WEB / "maps.js").read_text()  # draws them from one value a drawing; hover, tap, keys
FILTERS_HTML = (WEB / "filters.html").read_text()  # conv1's filters, drawn by filters.js
FILTERS_JS = DRAW_JS + (WEB / "filters.js").read_text()  # from the weights of the network the page reads with
NETWORK_INPUT_HTML = ("<figure class='network-input'><figcaption>② What the network receives: 28×28</figcaption>"
                      "<canvas role='img' aria-label='What the network receives: the 28×28 input'></canvas></figure>")
MOVE_HTML = "<div class='move-info' aria-live='polite'></div>"  # filled by maps.js from the value's "move"
MOVES = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1), "back": None}
MOVE_LABELS = {"left": "←", "right": "→", "up": "↑", "down": "↓", "back": "⟲"}
# "Link to this drawing": the cell the visitor pinned in the browser (maps.js keeps it on #maps).
PINNED_JS = ("(image, cell, move, network) => "
             "[image, document.getElementById('maps')?.dataset.pinned || '', move, network]")
LINK_JS = """
(query) => {
  if (!query) return "";
  const url = new URL(window.location.href);
  url.search = "?" + query;
  url.hash = "";
  const text = url.toString();
  if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(text).catch(() => {});
  return text;
}
"""
# The page's query, when it carries a link (else undefined: the box is left alone, so no change
# event and nothing asked of the server at load; an empty string would count as a change).
LINK_QUERY_JS = """
() => {
  const q = new URLSearchParams(window.location.search);
  return ["drawing", "cell", "move", "network"].some((k) => q.has(k)) ? window.location.search : undefined;
}
"""
CANVAS_JS = """
(picture) => picture ? { background: picture, layers: [], composite: picture, id: null } : undefined
"""
INSPECT_ERROR = partial(gr.Error, title="No such cell", print_exception=False)


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


class AnswerLabel(gr.Label):
    """``gr.Label`` (the same front-end component) that also takes ``{"label": ..., "confidences":
    [{"label", "confidence"}, ...]}``, so "Not a digit?" can head the ten digits' bars."""

    def get_block_name(self) -> str:
        return "label"

    def get_block_class(self) -> str:
        return "label"

    def postprocess(self, value):
        if isinstance(value, dict) and isinstance(value.get("confidences"), list) and "label" in value:
            return LabelData(label=value["label"], confidences=[LabelConfidence(**c) for c in value["confidences"]])
        return super().postprocess(value)


def probabilities(answer: confidence.Answer) -> dict:
    """The label: the ten calibrated probabilities (the card's temperature, cnn/confidence.py) under
    the most likely digit, or under ``explain.NOT_A_DIGIT`` when the card's rule says the drawing
    looks like none of the ten digits."""
    probs = {str(d): p for d, p in enumerate(answer.probabilities)}
    if not answer.not_a_digit:
        return probs
    ranked = sorted(probs.items(), key=lambda kv: kv[1], reverse=True)
    return {"label": explain.NOT_A_DIGIT, "confidences": [{"label": d, "confidence": p} for d, p in ranked]}


def predict(model: CNN, value) -> dict | str:
    """The ``/predict`` endpoint: {"0": p0, ..., "9": p9} (calibrated), the same ten under
    "Not a digit?" for a drawing that looks like no digit, or ``EMPTY`` for a blank canvas."""
    prepared = _prepare(value)
    if prepared is None:
        return EMPTY
    return probabilities(confidence.answer(model, extract(model, prepared.tensor).logits))


def update(model: CNN, value) -> tuple:
    """Everything the page shows for one sketch, from one preprocess and one forward pass:
    (label, answer line, the maps' value, the session's 28x28 input). The maps' value
    (``cnn/payload.py``) carries every activation, the kept cells, the evidence maps and the
    cell the inspector opens on; the browser draws the pictures from it, so nothing is written."""
    prepared = _prepare(value)
    if prepared is None:
        return EMPTY, explain.answer(None), None, None
    return show(model, extract(model, prepared.tensor), prepared.image)


def show(model: CNN, features, image: np.ndarray, pinned: tuple | None = None) -> tuple:
    """``update``'s outputs for one forward pass (``features = extract(model, tensor)``) of a
    network input whose (28, 28) uint8 picture is ``image``; ``pinned``: the cell a link names."""
    answer = confidence.answer(model, features.logits)  # calibrated, and "not a digit" or not
    calibrated = confidence.rule_of(model).calibrated  # a training snapshot's is not (cnn/replay.py)
    top, runner_up = (inspector.evidence(model, features, d) for d in features.ranked()[:2])
    value = payload.encode(model, features, image, answer, inspector.strongest_vote(model, features), pinned,
                           words=explain.evidence(top, runner_up, answer.not_a_digit))
    value |= {"network": network_name(model), "calibrated": calibrated}
    return (probabilities(answer), explain.answer(answer.probabilities, answer.not_a_digit, calibrated), value, image)


def network_name(model: CNN) -> str:
    """The name links and the API use for ``model``: a snapshot's (``cnn.replay``), else "shipped"."""
    return getattr(model, "network_name", replay.SHIPPED)


def moved(model: CNN, image: np.ndarray, dx: int, dy: int, pinned: tuple | None = None) -> tuple:
    """``show`` for the session's input ``image`` moved (dx, dy) pixels (``cnn/shift.py``): the
    page follows the moved input, and the value says how similar each layer's maps are to the
    unmoved input's and how the answer changed. No move: the plain page, one forward pass. The
    last output stays ``image``: the session keeps the drawing as drawn (a move is shown, not
    applied), so the next move and "Link to this drawing" start from it."""
    if (dx, dy) == (0, 0):
        return show(model, extract(model, network_input(image)), image, pinned)
    shifted, lost = shift.shift(image, dx, dy)
    if not shifted.any():
        raise refusal("That move would push the whole drawing out of the 28×28 frame.")
    before, after = (extract(model, network_input(a)) for a in (image, shifted))
    page = show(model, after, shifted, pinned)
    was, now = (confidence.answer(model, f.logits) for f in (before, after))
    page[2]["move"] = {"dx": dx, "dy": dy, "lost": lost, "similarity": shift.similarity(after, before),
                       "before": {"digit": was.digit, "p": was.probabilities[was.digit], "not_a_digit": was.not_a_digit},
                       "after": {"digit": now.digit, "p": now.probabilities[was.digit],
                                 "p_own": now.probabilities[now.digit], "not_a_digit": now.not_a_digit}}
    return page[:3] + (image,)


def session_move(move) -> tuple[int, int]:
    """The session's move state as (dx, dy); (0, 0) for anything else."""
    return tuple(move) if isinstance(move, (tuple, list)) and len(move) == 2 else (0, 0)


def move_by(model: CNN, step: tuple[int, int] | None, image, move) -> tuple:
    """A click on a move button: the session's drawing moved one more pixel ``step`` (None: back
    to where it was), at most ``shift.MAX_SHIFT`` each way. Outputs: label, answer line, the
    maps' value, the move now."""
    if image is None:
        raise gr.Error("Draw a digit first: the buttons move your drawing.", title="Nothing to move",
                       print_exception=False)
    dx, dy = session_move(move)
    if step is None:
        dx, dy = 0, 0
    else:
        dx, dy = (max(-shift.MAX_SHIFT, min(shift.MAX_SHIFT, v + d)) for v, d in zip((dx, dy), step))
    return moved(model, image, dx, dy)[:3] + ((dx, dy),)


LOST_STROKE = ("This stroke did not reach the network (the server was busy or refused it), so the answer "
               "and the maps below are not for what the pad shows. Draw another stroke, or press Clear.")


def stroke(model: CNN, sketch, stale: bool = False) -> tuple:
    """The page's event for a stroke and for Clear: ``update`` for the drawing the pad has just
    sent (as blobs, read from ``sketch.latest()``). ``stale``: the pad has been cleared since its
    last stroke (``STALE_JS``): the empty page, and the session's drawings that were read
    dropped. Last output: the notice, emptied by any drawing shown (a bad link's notice does not
    outlive the next stroke) and set when the session holds no drawing at all: its images were
    refused on arrival (the server's caps: too many new sessions from one address, not an image)
    or dropped since (expired, or evicted by the global cap) — the page then says so instead of
    silently keeping an answer that belongs to another drawing."""
    if stale:
        sketch.blob_storage.forget()
        return update(None, None) + ((0, 0), "")
    value = sketch.latest()
    if value is None:
        return (gr.skip(),) * 5 + (notice(LOST_STROKE),)
    return update(model, value) + ((0, 0), "")


def make_link(image, pinned, move=(0, 0), network: str = replay.SHIPPED) -> str:
    """"Link to this drawing": the query string that carries the session's current network
    input, the cell the visitor pinned (``"layer-channel-row-col"`` from the page, or empty) and
    the move, if any; the page's script puts its own address in front."""
    if image is None:
        raise gr.Error("Draw a digit first: the link carries the drawing.", title="Nothing to link to",
                       print_exception=False)
    query = {link.PARAM: link.encode(image)}
    if pinned:
        try:
            cell = payload.check_cell(link.decode_cell(pinned if isinstance(pinned, str) else "?"))
        except InputError as e:
            raise gr.Error(str(e), title="No such cell", print_exception=False) from None
        query[link.CELL_PARAM] = link.encode_cell(cell)
    if isinstance(move, (tuple, list)) and tuple(move) != (0, 0):
        query[link.MOVE_PARAM] = link.encode_move(move)
    if isinstance(network, str) and network and network != replay.SHIPPED:
        query[link.NETWORK_PARAM] = network
    return urlencode(query, safe=",")


def open_link(model: CNN, request: gr.Request, networks: dict | None = None) -> tuple:
    """Page load: a link's drawing (``?drawing=...&cell=...``) onto the canvas, with the answer,
    the maps and the inspected cell; no link: nothing changes; a bad link: the empty page and
    one short notice (a blank drawing, or a cell named without a drawing, included). Everything
    comes from the link itself; the server keeps nothing."""
    params = request.query_params if request is not None else {}
    if not {link.PARAM, link.CELL_PARAM, link.MOVE_PARAM, link.NETWORK_PARAM} & set(params):
        return (gr.skip(),) * 11
    try:
        if link.PARAM not in params:
            raise link.LinkError("The link names a cell, a move or a network but carries no drawing.")
        image = link.decode(params[link.PARAM])
        selection = link.decode_cell(params.get(link.CELL_PARAM))
        if selection is not None:
            payload.check_cell(selection)
        dx, dy = shift.check(*link.decode_move(params.get(link.MOVE_PARAM)))
        networks = networks or {replay.SHIPPED: (model, None)}
        network = replay.check(params.get(link.NETWORK_PARAM), networks)
        page = moved(networks[network][0], image, dx, dy, selection)  # one forward pass (two with a move)
    except (InputError, gr.Error) as e:
        why = e.message if isinstance(e, gr.Error) else str(e)
        return (gr.skip(),) * 6 + (notice(f"{why} Here is an empty page to draw on."),) + (gr.skip(),) * 4
    # A training step: what the picker sends for it (the browser holds only the shipped weights'
    # yet); the page opened on the shipped weights already shows theirs.
    picked = network_view(networks, network, page[2]) if network != replay.SHIPPED else (gr.skip(),) * 2
    return page + ((dx, dy), link.canvas(image, CANVAS), "", network) + picked + (network,)


def notice(sentence: str) -> str:
    """The page's notice (``#link-notice``, a ``gr.HTML``) saying ``sentence``. The sentence may
    quote what a link carried (a network name, a move), so it is escaped: a link someone shares
    must not put markup (a styled-away page, a foreign link) into the page it opens."""
    return f"<p>{html.escape(sentence, quote=False)}</p>"


def open_query(model: CNN, query, networks: dict | None = None) -> tuple:
    """``open_link`` for the page's query string as the browser sent it (``LINK_QUERY_JS``)."""
    params = dict(parse_qsl(query.lstrip("?"))) if isinstance(query, str) else {}
    return open_link(model, SimpleNamespace(query_params=params), networks)


def example(model: CNN, index) -> tuple:
    """A click on the ``index``-th MNIST example: the page for that file, nothing inspected yet,
    and the digit to put on the canvas (by the browser, as a link's drawing is); a bad link's
    notice goes, as it does after a stroke."""
    if not isinstance(index, int) or not 0 <= index < len(EXAMPLES):
        return (gr.skip(),) * 7
    page = update(model, str(EXAMPLES[index]))
    return page + ((0, 0), link.canvas(page[-1], CANVAS), "")


def _features_or_empty(model: CNN, value):
    prepared = _prepare(value)
    return None if prepared is None else extract(model, prepared.tensor)


def inspect_api(model: CNN, value, layer, channel, row, col) -> dict:
    """``/inspect``: one cell of one layer for a sketch, as JSON (see ``cnn.inspector.inspect``)."""
    features = _features_or_empty(model, value)
    if features is None:
        return {"label": EMPTY}
    try:
        return inspector.inspect(model, features, layer, channel, row, col)
    except InputError as e:
        raise INSPECT_ERROR(str(e)) from None


def evidence_api(model: CNN, value, digit=None) -> dict:
    """``/evidence``: the exact 7x7 map of where ``digit``'s score (default: the answer) came from."""
    features = _features_or_empty(model, value)
    if features is None:
        return {"label": EMPTY}
    try:
        return inspector.evidence(model, features, digit)
    except InputError as e:
        raise INSPECT_ERROR(str(e)) from None


# ---------------------------------------------------------------- the page

def network_choices(networks: dict) -> list[tuple[str, str]]:
    """The network picker's entries: each step of the tutorial's training, then the shipped weights,
    each with its test accuracy; short enough to show whole in a phone's column (the note under
    the picker says the rest: the digits seen, calibrated or not)."""
    def acc(card):
        a = (card or {}).get("test_accuracy")
        return f" ({a:.1%})" if isinstance(a, (int, float)) else ""
    steps = [(f"Step {c['step']:,} of {c['steps_per_epoch']:,}{acc(c)}", n)
             for n, (_, c) in networks.items() if n != replay.SHIPPED]
    return steps + [(f"Shipped weights{acc(networks[replay.SHIPPED][1])}", replay.SHIPPED)]


def network_note(name: str, card: dict | None) -> str:
    """What the picked network is, its test accuracy, and whether its probabilities are calibrated."""
    card = card or {}
    acc, first = card.get("test_accuracy"), card.get("test_accuracy_first2000")
    if name == replay.SHIPPED:
        a = f": {acc:.2%} of the 10,000 MNIST test digits" if isinstance(acc, (int, float)) else ""
        return f"<p class='network-note'>The shipped weights{a}; calibrated probabilities.</p>"
    return (f"<p class='network-note' data-network='{name}'>The tutorial's training after {card['step']:,} of its "
            f"{card['steps_per_epoch']:,} steps ({card['images_seen']:,} digits seen): {acc:.1%} of the 10,000 MNIST "
            f"test digits ({first:.1%} of the first 2,000, as the tutorial prints it). <b>Uncalibrated:</b> its "
            f"probabilities are its plain softmax, and it never says “Not a digit?”. Every map, filter and number "
            f"below is this network's.</p>")


def with_network(value: dict, name: str, model: CNN) -> dict:
    """The maps' value with what the browser needs to read it through network ``name``: its weights
    (the inspector's arithmetic) and, for a training snapshot, what its maps look for (the shipped
    weights' came with the page). Sent when the network changes, so the inspector never computes a
    snapshot's cell with the shipped weights."""
    value["weights"] = payload.weights(model)
    if name != replay.SHIPPED:
        value["patches"] = getattr(model, "looks_for", None)
    return value


def checked_network(name, networks: dict) -> str:
    """``replay.check`` as the page and the API say it: a ``gr.Error`` with its sentence."""
    try:
        return replay.check(name, networks)
    except InputError as e:
        raise gr.Error(str(e), title="No such network", print_exception=False) from None


def network_view(networks: dict, name: str, value: dict) -> tuple:
    """What changes with the network besides the drawing's value: the value gets the network's
    weights and patches (``with_network``); returns conv1's filters (the value the browser draws
    them from) and the note."""
    model, card = networks[name]
    with_network(value, name, model)
    return render.filters(model.conv1[0].weight), network_note(name, card)


def switch(networks: dict, name, image, move) -> tuple:
    """The network picker: the session's drawing (moved as it is) through network ``name``. Outputs:
    the label (and its title), answer line, the maps' value (with this network's weights, which the
    browser keeps for the inspector, and a snapshot's patches: what its maps look for), conv1's
    filters, the note, the network now."""
    name = checked_network(name, networks)
    dx, dy = session_move(move)
    if image is None:
        label, answer, value = EMPTY, explain.answer(None), {"network": name}
    else:
        label, answer, value = moved(networks[name][0], image, dx, dy)[:3]
    title = "What the network decides" + ("" if name == replay.SHIPPED else " (uncalibrated softmax)")
    return (gr.update(value=label, label=title), answer, value, *network_view(networks, name, value), name)


def build_demo(model: CNN, card: dict | None = None, looks_for: dict | None = None,
               networks: dict | None = None) -> gr.Blocks:
    """The page for ``model`` (eval mode), with its queue set. ``card``: its weights card, for the
    footer; ``looks_for``: what each map looks for (``cnn.patches.load``), shown by the inspector;
    ``networks``: the tutorial's training snapshots the visitor can pick (``cnn.replay.load``)."""
    networks = {**(networks or {}), replay.SHIPPED: (model, card)}

    def pick(network) -> CNN:
        """The model a network name names (the API's optional argument, the session's pick)."""
        return networks[checked_network(network, networks)][0]

    # No delete_cache: cnn/serving.py's sweep is the one owner of the cache, files and records together.
    with gr.Blocks(title="Draw a digit: inside an MNIST CNN") as demo:
        gr.Markdown(INTRO, elem_id="intro")
        with gr.Row(equal_height=False):
            with gr.Column(scale=5, min_width=340):
                answer = gr.HTML(explain.answer(None), elem_id="answer")
                notice = gr.HTML("", elem_id="link-notice")
                sketch = sketchpad()
                with gr.Row(equal_height=True):
                    share = gr.Button("Link to this drawing", elem_id="share-button", scale=1, size="sm")
                    share_link = gr.Textbox(show_label=False, placeholder="a link that reopens this drawing",
                                            interactive=False, elem_id="share-link", scale=3, max_lines=1,
                                            buttons=["copy"])
                # Not gr.Examples: its own event would write the file into the pad, after which the
                # pad re-uploads its images on every later event of the tab (~90 uploads a click).
                examples = gr.Dataset(components=[gr.Image(visible=False, type="filepath")],
                                      samples=[[str(p)] for p in EXAMPLES], type="index",
                                      label="Or load a real MNIST test digit", samples_per_page=len(EXAMPLES),
                                      elem_id="examples")
            with gr.Column(scale=2, min_width=200):
                gr.HTML(NETWORK_INPUT_HTML, elem_id="network-input")  # drawn by maps.js
                # Move it: the input by whole pixels, to see what pooling keeps (cnn/shift.py).
                with gr.Row(elem_id="move-buttons"):
                    move_buttons = {name: gr.Button(MOVE_LABELS[name], size="sm", min_width=40, elem_id=f"move-{name}")
                                    for name in MOVES}
                gr.HTML(MOVE_HTML, elem_id="move-info")
                # conv1's filters, drawn by the browser (cnn/web/filters.js) from the picked network's weights
                filters = gr.HTML(render.filters(model.conv1[0].weight), html_template=FILTERS_HTML, js_on_load=FILTERS_JS,
                                  elem_id="filters", padding=False, colours=render.WEIGHT_SCALE.tolist())
            with gr.Column(scale=3, min_width=240):
                # Which network reads the drawing: each step of the tutorial's training, or the shipped weights.
                # (allow_custom_value: any other value reaches `switch`, which answers it with a
                # sentence; Gradio's own check would log a traceback for each hostile request)
                choice = gr.Dropdown(network_choices(networks), value=replay.SHIPPED,
                                     label="The network: a step of the tutorial's training, or the shipped weights",
                                     elem_id="network", visible=len(networks) > 1, allow_custom_value=True)
                note = gr.HTML(network_note(replay.SHIPPED, card), elem_id="network-note")
                label = AnswerLabel(value=EMPTY, num_top_classes=10, label="What the network decides",
                                 elem_id="prediction")
        gr.Markdown(INSIDE)
        # ②-⑦ and the inspector: one value a drawing (cnn/payload.py), drawn by the browser
        # (cnn/web/maps.js); the weights and colour scales come once, with the page.
        maps = gr.HTML(None, html_template=MAPS_HTML, js_on_load=MAPS_JS, elem_id="maps", padding=False,
                       network=payload.weights(model), look=payload.look(), patches=looks_for)
        gr.Markdown(_footer(model, card))

        # The session's own state: its current 28x28 input (what "Link to this drawing" encodes).
        # the input as drawn; the move shown; the network picked
        drawing, move, network = gr.State(None), gr.State((0, 0)), gr.State(replay.SHIPPED)
        outputs = [label, answer, maps, drawing]
        # Live: after every stroke and on Clear. The pad sends its images with `accept_blobs`
        # first; the event reads them from there (`stroke`) rather than taking the pad as an
        # input, which would make the front end upload them six more times (see
        # `Sketchpad.latest`). The browser marks a Clear (CLEARED_JS) and every event carries the
        # mark (`stale`, STALE_JS): the event of a stroke that was still being sent when Clear
        # was pressed then knows the pad is empty. One event for both, always_last: the browser
        # never runs two at once, so a Clear's empty page is never overtaken by the answer to a
        # stroke that was already on its way (strokes and Clears that arrive while one is being
        # processed collapse into the latest). The Clear reaches it through a hidden counter that
        # CLEARED_JS bumps, not as the pad's own `clear`: the front end asks each trigger of an
        # event for its value, and a pad asked twice for one stroke uploads its images again.
        stale = gr.Checkbox(visible=False, label="stale")
        clears = gr.Number(0, visible="hidden", label="clears")
        sketch.clear(None, None, clears, js=CLEARED_JS)
        gr.on([sketch.change, clears.change], lambda stale, net: stroke(pick(net), sketch, stale), [stale, network],
              [*outputs, move, notice],
              js=STALE_JS, api_visibility="private", trigger_mode="always_last", show_progress="hidden",
              concurrency_id="cnn")
        # An example: the page is computed from its file, then the browser puts the digit on the
        # canvas (CANVAS_JS, as for a link below).
        linked = serving.Picture(visible=False, type="pil", format="png")
        examples.click(lambda index, net: example(pick(net), index), [examples, network], [*outputs, move, linked, notice],
                       api_visibility="private",
                       show_progress="hidden", concurrency_id="cnn").success(None, linked, sketch, js=CANVAS_JS)
        # The page's undocumented /update endpoint: what a stroke computes, for a sketch value.
        gr.on(triggers=[], fn=partial(update, model), inputs=[sketch], outputs=outputs, api_name="update",
              api_visibility="undocumented", concurrency_id="cnn")
        # The public API: the same sketch value in, the ten probabilities out. No trigger on
        # the page (the page gets its label from `update`, so each stroke runs the model once).
        # Each takes an optional network name ("shipped", or a step of the tutorial's training).
        network_in = gr.Textbox(replay.SHIPPED, visible=False, label="network")
        gr.on(triggers=[], fn=lambda value, network=replay.SHIPPED: predict(pick(network), value), inputs=[sketch, network_in],
              outputs=label, api_name="predict", concurrency_id="cnn")
        # /inspect and /evidence: what the inspector and the evidence map show, as JSON.
        layer_in = gr.Textbox(visible=False, label="layer")
        channel_in, row_in, col_in, digit_in = (gr.Number(visible=False, label=n) for n in
                                                ("channel", "row", "col", "digit"))
        json_out = gr.JSON(visible=False)
        gr.on(triggers=[], fn=lambda value, layer, channel, row, col, network=replay.SHIPPED:
              inspect_api(pick(network), value, layer, channel, row, col),
              inputs=[sketch, layer_in, channel_in, row_in, col_in, network_in],
              outputs=json_out, api_name="inspect", concurrency_id="cnn")
        gr.on(triggers=[], fn=lambda value, digit=None, network=replay.SHIPPED: evidence_api(pick(network), value, digit),
              inputs=[sketch, digit_in, network_in], outputs=json_out, api_name="evidence", concurrency_id="cnn")
        # A link to the drawing: the server turns the session's input and the cell pinned in the
        # browser (PINNED_JS) into a query string, the browser puts its own address in front
        # (localhost, gradio.live, a Space) and copies it.
        query, pinned = gr.Textbox(visible=False), gr.Textbox(visible=False, label="pinned cell")
        share.click(make_link, [drawing, pinned, move, network], query, js=PINNED_JS, api_visibility="private",
                    show_progress="hidden", concurrency_id="cnn").success(None, query, share_link, js=LINK_JS)
        # Opening a link: the page from the link's drawing, then the drawing onto the canvas by a
        # browser-side step (a server event with the pad as an output would make the pad upload
        # its images on every later event's status update, see `stroke`).
        # Only a page opened with a link asks the server anything when it loads: the browser hands
        # the page's query to a hidden box (LINK_QUERY_JS; left alone without a link), whose change runs
        # open_link. A plain page open costs no queue slot (a crowd arriving at ~20 tabs a second
        # used to fill the queue with load events that did nothing).
        link_query = gr.Textbox(visible=False, label="link query")
        demo.load(None, None, link_query, js=LINK_QUERY_JS)
        link_query.change(lambda query: open_query(model, query, networks), link_query,
                          [*outputs, move, linked, notice, choice, filters, note, network],
                          api_visibility="private", show_progress="hidden", concurrency_id="cnn",
                          ).success(None, linked, sketch, js=CANVAS_JS)
        for name, button in move_buttons.items():  # one pixel a click; ⟲ back to the drawing as drawn
            button.click(lambda image, shown, net, step=MOVES[name]: move_by(pick(net), step, image, shown),
                         [drawing, move, network], [label, answer, maps, move],
                         api_visibility="private", show_progress="hidden", concurrency_id="cnn")
        # The network picker: the same drawing through the picked network.
        # (`input`: the visitor's pick only; a link sets the picker and sends its network itself)
        choice.input(partial(switch, networks), [choice, drawing, move], [label, answer, maps, filters, note, network],
                     api_visibility="private", show_progress="hidden", concurrency_id="cnn")
        demo.load(None, js=SKETCH_JS)
        demo.load(None, js=PAGE_JS)
    demo.queue(**QUEUE)
    return demo


def build_page(model: CNN, path: str | os.PathLike = weights.DEFAULT_WEIGHTS) -> gr.Blocks:
    """What ``python app.py --weights path`` serves for ``model`` (loaded from ``path``): the page
    with its weights card, what each map looks for (when ``path``'s patches file was made from
    these weights; else one line says so) and the tutorial's training snapshots. A bad card or
    snapshot raises ``CNNError``."""
    looks_for = patches.load(path)  # None when missing or made for other weights
    if looks_for is None:
        print(f"app.py: no patches file for these weights: the inspector will not show what each map looks for "
              f"(make one: python -m cnn patches --weights {path})", file=sys.stderr)
    return build_demo(model, weights.read_card(path), looks_for, replay.load())


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
    serving.protect(demo)  # every event queued (no direct run route), sessions tied to their blobs
    with contextlib.redirect_stdout(said) if share else contextlib.nullcontext():
        result = demo.launch(
            server_name=host, server_port=port, share=share, prevent_thread_lock=True, quiet=quiet,
            show_error=False,  # a visitor sees gr.Error sentences only, never an exception's text
            ssr_mode=False,  # no Node.js server beside Python: one process, one port, nothing more exposed
            max_file_size=MAX_FILE_SIZE,  # every upload route answers 413 above it
            run_history=False,  # record nothing: no per-stroke runs kept, no Hub-bucket routes
            css=CSS,
            # body caps, slow-client timeouts, unknown sessions answered 4xx, monitoring off, cache sweep
            **serving.launch_options(demo, MAX_FILE_SIZE),
        )
    serving.after_launch(demo)
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
        configure_torch()
        demo = build_page(model, args.weights)
    except CNNError as e:  # missing, truncated or tampered weights: one line, the fix, no traceback
        print(f"app.py: {e}", file=sys.stderr)
        return 1
    try:
        with serving.sigterm_as_ctrl_c():  # SIGTERM (docker stop, Spaces) cleans up like Ctrl-C
            launch(demo, args.host, args.port, share=args.share)
    except KeyboardInterrupt:  # Ctrl-C while still starting up
        pass
    except OSError as e:  # port taken, address not available
        print(f"app.py: cannot serve on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 1
    finally:
        demo.close()
        serving.remove_cache()  # every file a visitor sent or the page drew, and their folders
    return 0


if __name__ == "__main__":
    sys.exit(main())
