"""A link to one drawing: the URL parameter round trip, its size, and every bad parameter
refused with a sentence, in bounded time and memory."""
from __future__ import annotations

import base64
import os
import threading
import time
import zlib

import gradio as gr
import numpy as np
import pytest
import torch

import app
from cnn import link
from cnn.features import extract
from cnn.preprocess import prepare
from test_app import drawn_seven

TOLERANCE = 9  # 16 grey levels: half a step (8) plus rounding, out of 255


def drawings() -> list[tuple[str, np.ndarray]]:
    """The ten example digits and drawn sketches, as the network inputs the page computed."""
    out = [(p.stem, prepare(str(p)).image) for p in app.EXAMPLES]
    _, _, composite = drawn_seven()
    out.append(("drawn_7", prepare(np.asarray(composite)).image))
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    import latency

    out += [(f"drawn_{d}", prepare(latency.sketch(s, 400)).image) for d, s in latency.DIGITS.items()]
    return out


@pytest.mark.parametrize("name, image", drawings(), ids=lambda v: v if isinstance(v, str) else "")
def test_round_trip_gives_the_same_input_and_the_same_answer(shipped_model, name, image):
    text = link.encode(image)
    back = link.decode(text)
    assert back.shape == (28, 28) and back.dtype == np.uint8
    assert np.abs(back.astype(int) - image).max() <= TOLERANCE
    url = f"https://abcdefghijklmnop-7860.hf.space/?{link.PARAM}={text}&{link.CELL_PARAM}=pool2-31-6-6"
    assert len(url) <= 2000 and len(text) <= link.MAX_CHARS

    def answer(a):
        return int(extract(shipped_model, torch.from_numpy(a).float().div(255)[None, None]).probabilities.argmax())

    assert answer(back) == answer(image)
    # The canvas the link puts on the page, read again by the page's preprocessing: same answer.
    redrawn = prepare(np.asarray(link.canvas(back, app.CANVAS)))
    assert answer(redrawn.image) == answer(image)


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
    assert out[13] == ("conv1", 3, 4, 5) and out[14] == ""  # the cell, and no notice
    assert "data-layer='conv1' data-channel='3' data-row='4' data-col='5'" in out[8]
    assert out[12].size == (app.CANVAS, app.CANVAS)
    no_link = app.open_link(shipped_model, type("Request", (), {"query_params": {}}))
    assert no_link == (gr.skip(),) * 15  # no link: the page as it loads


def good() -> str:
    return link.encode(prepare(str(app.EXAMPLES[0])).image)


BAD = {
    "empty": "",
    "truncated": good()[:-9],
    "tampered": good()[:20] + ("A" if good()[20] != "A" else "B") + good()[21:],
    "over-long": "A" * 5000,
    "not base64url": good()[:30] + "+/=" + good()[33:],
    "html": "<script>alert(1)</script>",
    "random bytes": base64.urlsafe_b64encode(os.urandom(300)).decode().rstrip("="),
    "wrong size": base64.urlsafe_b64encode(zlib.compress(bytes([1]) + bytes(100))).decode().rstrip("="),
    "extra data": base64.urlsafe_b64encode(zlib.compress(bytes([1]) + bytes(392)) + b"xx").decode().rstrip("="),
    "other version": base64.urlsafe_b64encode(zlib.compress(bytes([9]) + bytes(392))).decode().rstrip("="),
    # 1 GB of zeros compresses to ~1 MB, too long for a link; 100 MB is ~100 kB: still refused unread,
    # and a bomb that fits the length limit expands to at most one byte past a real drawing.
    "bomb (long)": base64.urlsafe_b64encode(zlib.compress(bytes(100_000_000), 9)).decode().rstrip("="),
    "bomb (fits)": base64.urlsafe_b64encode(zlib.compress(bytes([1]) + bytes(1_000_000), 9)).decode().rstrip("="),
}


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
    assert sizes and max(sizes) <= link.PAYLOAD + 1


@pytest.mark.parametrize("cell", ["conv9-0-0-0", "pool2-1-2", "pool2-1-2-3-4", "x" * 500, "conv1-100-0-0"])
def test_a_bad_cell_parameter_is_refused(cell):
    with pytest.raises(link.LinkError, match="cell"):
        link.decode_cell(cell)


@pytest.mark.parametrize("query", [{link.PARAM: BAD["tampered"]}, {link.PARAM: good(), link.CELL_PARAM: "pool2-40-0-0"},
                                   {link.PARAM: good(), link.CELL_PARAM: "junk"}, {link.PARAM: ""}])
def test_a_bad_link_opens_the_empty_page_with_one_notice(shipped_model, query):
    out = app.open_link(shipped_model, type("Request", (), {"query_params": query}))
    assert len(out) == 15 and out[:14] == (gr.skip(),) * 14  # nothing drawn, nothing inspected
    assert "Here is an empty page to draw on." in out[14] and "Traceback" not in out[14]


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
