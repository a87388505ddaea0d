"""A link to one drawing: the URL parameter round trip (exact: the same network input, so the
same answer), its size, and every bad parameter refused with a sentence, in bounded time and
memory."""
from __future__ import annotations

import base64
import os
import threading
import time
import zlib
from urllib.parse import parse_qsl

import gradio as gr
import numpy as np
import pytest
import torch

import app
from cnn import confidence, data, link
from cnn.features import extract
from cnn.preprocess import network_input, prepare
from test_app import drawn_seven

# A realistic address in front of the query: a 100-character Space URL, and the longest cell.
HOST = "https://" + "a" * 82 + ".hf.space/"  # 100 characters
LONGEST_CELL = "conv1-15-27-27"
NOISE = np.random.default_rng(11).integers(0, 256, (28, 28), dtype=np.uint8)  # the worst case
ONE_PIXEL = np.zeros((28, 28), np.uint8)
ONE_PIXEL[27, 0] = 7  # the smallest drawing, in a corner


def url(text: str) -> str:
    return f"{HOST}?{link.PARAM}={text}&{link.CELL_PARAM}={LONGEST_CELL}"


def drawings() -> list[tuple[str, np.ndarray]]:
    """The ten example digits and drawn sketches, as the network inputs the page computed, and
    28x28 random noise (every pixel non-zero: nothing to crop, nothing to compress)."""
    out = [(p.stem, prepare(str(p)).image) for p in app.EXAMPLES]
    _, _, composite = drawn_seven()
    out.append(("drawn_7", prepare(np.asarray(composite)).image))
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    import latency

    out += [(f"drawn_{d}", prepare(latency.sketch(s, 400)).image) for d, s in latency.DIGITS.items()]
    out += [("noise", NOISE), ("noise_no_zero", np.maximum(NOISE, 1)), ("one_pixel", ONE_PIXEL)]
    return out


def answer(model, image: np.ndarray) -> tuple[int, bool]:
    """The page's answer for a 28x28 input: the digit and the "not a digit" flag (cnn/confidence.py)."""
    a = confidence.answer(model, extract(model, network_input(image)).logits)
    return a.digit, a.not_a_digit


@pytest.mark.parametrize("name, image", drawings(), ids=lambda v: v if isinstance(v, str) else "")
def test_round_trip_gives_exactly_the_same_input_and_the_same_answer(shipped_model, name, image):
    text = link.encode(image)
    back = link.decode(text)
    assert back.shape == (28, 28) and back.dtype == np.uint8
    assert np.array_equal(back, image)  # lossless: every pixel, all 256 grey levels
    assert answer(shipped_model, back) == answer(shipped_model, image)
    assert len(text) <= link.MAX_CHARS and len(url(text)) <= 2000
    if not name.startswith(("noise", "one")):
        # The canvas the link puts on the page, read again by the page's preprocessing: same digit.
        redrawn = prepare(np.asarray(link.canvas(back, app.CANVAS)))
        assert answer(shipped_model, redrawn.image)[0] == answer(shipped_model, image)[0]


def test_the_worst_case_noise_fits_the_limit_and_the_url():
    """Random noise can neither be cropped nor compressed: the longest ``drawing`` there is."""
    text = link.encode(NOISE)
    assert 1000 < len(text) <= link.MAX_CHARS < 1200
    # The longest link the page makes: noise, the longest cell, the longest move and the longest
    # network name, each the longest there is, as app.make_link writes them, behind a long Space address.
    from cnn import payload, replay, shift

    cells = [f"{layer}-{c - 1}-{h - 1}-{w - 1}" for layer, (c, h, w) in payload.SHAPES.items()]  # the largest indices
    cell = max(cells, key=len)
    k = shift.MAX_SHIFT
    moves = [(dx, dy) for dx in range(-k, k + 1) for dy in range(-k, k + 1)]
    networks = [replay.SHIPPED, *(replay.name(s) for s in replay.STEPS)]
    move = max(moves, key=lambda m: len(app.make_link(NOISE, cell, m, networks[-1])))
    network = max(networks, key=lambda n: len(app.make_link(NOISE, cell, move, n)))
    query = app.make_link(NOISE, cell, move, network)
    assert len(query) == max(len(app.make_link(NOISE, c, m, n)) for c in cells for m in moves for n in networks)
    params = dict(parse_qsl(query))
    assert params[link.CELL_PARAM] == cell and params[link.MOVE_PARAM] == f"{-k},{-k}" and params[link.NETWORK_PARAM] == network
    assert network == "step-1200"  # the longest name: a four-digit step
    longest = "https://" + "a" * 63 + "-" + "b" * 40 + ".hf.space/?" + query
    assert len(longest) <= 2000, len(longest)
    assert link.decode(params[link.PARAM]).tobytes() == NOISE.tobytes()
    # and that link opens: the same drawing, cell, move and network (the URL the page would load)
    networks = replay.load()
    opened = app.open_query(networks[network][0], "?" + query, {**networks, replay.SHIPPED: (None, None)})
    assert opened[6] == "" and opened[4] == (-k, -k) and opened[7] == network, opened[6]
    assert opened[3].tobytes() == NOISE.tobytes() and opened[2]["pinned"] == list(link.decode_cell(cell))


def test_every_mnist_test_digit_round_trips_exactly():
    """All 10,000: exactly the same input back, so the network's answer cannot change (the answer
    itself is checked on the examples and drawn sketches above)."""
    images = data.load(train=False).images.numpy()
    texts = [link.encode(a) for a in images]
    back = np.stack([link.decode(t) for t in texts])
    assert max(map(len, texts)) <= link.MAX_CHARS
    assert np.array_equal(back, images)


def test_the_page_opens_a_link_with_its_drawing_cell_and_canvas(shipped_model):
    image = prepare(str(app.EXAMPLES[0])).image
    request = type("Request", (), {"query_params": {link.PARAM: link.encode(image), link.CELL_PARAM: "conv1-3-4-5"}})
    passes = []
    hook = shipped_model.register_forward_pre_hook(lambda m, a: passes.append(1))
    try:
        out = app.open_link(shipped_model, request)
    finally:
        hook.remove()
    assert len(passes) == 1  # the cell is checked on the same forward pass the page shows
    label, *_ = out
    assert max(label, key=label.get) == app.EXAMPLES[0].stem[-1]
    assert out[2]["pinned"] == ["conv1", 3, 4, 5] and out[6] == "" and out[7] == "shipped"  # the cell, no notice
    np.testing.assert_array_equal(out[3], image)  # the session's drawing: what the next "link" encodes
    assert out[4] == (0, 0) and out[5].size == (app.CANVAS, app.CANVAS)  # not moved; the canvas
    no_link = app.open_link(shipped_model, type("Request", (), {"query_params": {}}))
    assert out[8:] == (gr.skip(), gr.skip(), "shipped")  # the shipped weights' filters and note: as the page has them
    assert no_link == (gr.skip(),) * 11  # no link: the page as it loads


def good() -> str:
    return link.encode(prepare(str(app.EXAMPLES[0])).image)


def made(raw: bytes, level: int = 6) -> str:
    """A hand-made ``drawing``: ``raw`` zlib-compressed and base64url-encoded, as ``encode`` does."""
    return base64.urlsafe_b64encode(zlib.compress(raw, level)).decode().rstrip("=")


V = bytes([link.VERSION])
BAD = {
    "empty": "",
    "truncated": good()[:-9],
    "tampered": good()[:20] + ("A" if good()[20] != "A" else "B") + good()[21:],
    "over-long": "A" * 5000,
    "not base64url": good()[:30] + "+/=" + good()[33:],
    "html": "<script>alert(1)</script>",
    "random bytes": base64.urlsafe_b64encode(os.urandom(300)).decode().rstrip("="),
    "too few pixels": made(V + bytes([0, 0, 28, 28]) + b"\xff" * 100),
    "too many pixels": made(V + bytes([0, 0, 2, 2]) + b"\xff" * 5),
    "no box": made(V + bytes([0, 0])),
    "box outside": made(V + bytes([20, 0, 9, 1]) + b"\xff" * 9),
    "box not tight": made(V + bytes([0, 0, 2, 2]) + b"\xff\x00\x00\x00"),
    "blank (empty box)": made(V + bytes([0, 0, 0, 0])),
    "blank (zeros)": made(V + bytes([0, 0, 28, 28]) + bytes(784)),
    "extra data": base64.urlsafe_b64encode(zlib.compress(V + bytes([0, 0, 1, 1, 9])) + b"xx").decode().rstrip("="),
    "other version": made(bytes([9, 0, 0, 1, 1, 9])),
    "16-level link (version 1)": made(bytes([1]) + bytes(200) + b"\x77" * 192),
    # 100 MB of zeros compresses to ~100 kB, far too long for a link: refused unread. A bomb that
    # fits the length limit (~0.8 MB of zeros) expands to at most one byte past the largest drawing.
    "bomb (long)": made(bytes(100_000_000), 9),
    "bomb (fits)": made(V + bytes([0, 0, 28, 28]) + bytes(800_000), 9),
}
assert len(BAD["bomb (fits)"]) <= link.MAX_CHARS  # a bomb decode does read


@pytest.mark.parametrize("name", list(BAD))
def test_a_bad_drawing_parameter_is_refused_with_a_sentence_quickly(name):
    text = BAD[name]
    t = time.perf_counter()
    with pytest.raises(link.LinkError) as err:
        link.decode(text)
    assert time.perf_counter() - t < 0.05  # bounded: no decoding beyond one drawing's size
    message = str(err.value)
    assert message.endswith(".") and "Traceback" not in message and len(message) < 120
    if "long" in name:
        assert "too long" in message  # refused by its length, before any decoding
    if "blank" in name:
        assert message == "The link's drawing is blank."
    if "version" in name:
        assert "another version" in message


def test_a_bomb_that_fits_the_limit_never_expands_past_a_drawing(monkeypatch):
    """The 1 MB bomb is asked for at most PAYLOAD + 1 bytes: count what zlib hands back."""
    real = zlib.decompressobj
    sizes = []

    class Counting:
        def __init__(self):
            self.inner = real()

        def decompress(self, data, max_length=0):
            out = self.inner.decompress(data, max_length)
            sizes.append(len(out))
            return out

        def __getattr__(self, name):
            return getattr(self.inner, name)

    monkeypatch.setattr(link.zlib, "decompressobj", Counting)
    with pytest.raises(link.LinkError):
        link.decode(BAD["bomb (fits)"])
    assert sizes and max(sizes) <= link.MAX_PAYLOAD + 1


@pytest.mark.parametrize("cell", ["conv9-0-0-0", "pool2-1-2", "pool2-1-2-3-4", "x" * 500, "conv1-100-0-0"])
def test_a_bad_cell_parameter_is_refused(cell):
    with pytest.raises(link.LinkError, match="cell"):
        link.decode_cell(cell)


@pytest.mark.parametrize("query, says", [
    ({link.PARAM: BAD["tampered"]}, "cut short or altered"),
    ({link.PARAM: good(), link.CELL_PARAM: "pool2-40-0-0"}, "pool2"),
    ({link.PARAM: good(), link.CELL_PARAM: "junk"}, "cell"),
    ({link.PARAM: ""}, "carries no drawing"),
    ({link.PARAM: link.encode(np.zeros((28, 28), np.uint8))}, "The link's drawing is blank."),
    ({link.PARAM: BAD["blank (zeros)"], link.CELL_PARAM: "conv1-0-0-0"}, "The link's drawing is blank."),
    ({link.CELL_PARAM: "conv1-0-0-0"}, "The link names a cell, a move or a network but carries no drawing."),
    ({link.NETWORK_PARAM: "step-50"}, "The link names a cell, a move or a network but carries no drawing."),
    ({link.PARAM: "A" * (link.MAX_CHARS + 1)}, "too long"),
    ({link.PARAM: good(), link.MOVE_PARAM: "9,0"}, "A move is whole pixels from -4 to 4: dx cannot be 9."),
    ({link.PARAM: good(), link.MOVE_PARAM: "1;DROP"}, "The link's move is not two whole numbers of pixels."),
    ({link.PARAM: good(), link.MOVE_PARAM: "1,2,3"}, "The link's move is not two whole numbers of pixels."),
], ids=["tampered", "cell out of range", "bad cell", "empty", "blank", "blank with cell", "cell, no drawing",
        "network, no drawing",
        "too long", "move too far", "move not numbers", "move of three"])
def test_a_bad_link_opens_the_empty_page_with_one_notice(shipped_model, query, says):
    out = app.open_link(shipped_model, type("Request", (), {"query_params": query}))
    assert len(out) == 11 and out[:6] == (gr.skip(),) * 6 and out[7:] == (gr.skip(),) * 4  # nothing drawn or inspected
    assert "Here is an empty page to draw on." in out[6] and "Traceback" not in out[6]
    assert says in out[6] and out[6].count("<p>") == 1


def test_decoding_many_bad_links_keeps_memory_flat():
    """Sampled while decoding: the process's resident memory (VmRSS), not a lifetime peak."""
    def rss() -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) * 1024

    samples, done = [], threading.Event()

    def sample():
        while not done.is_set():
            samples.append(rss())
            time.sleep(0.001)

    base = rss()
    thread = threading.Thread(target=sample)
    thread.start()
    try:
        for _ in range(50):
            for text in BAD.values():
                with pytest.raises(link.LinkError):
                    link.decode(text)
    finally:
        done.set()
        thread.join()
    assert max(samples) - base < 20 * 2**20
