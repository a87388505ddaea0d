"""The page in a real browser: headless Chromium, driven through Python Playwright.

Digits are drawn with real mouse strokes on the sketchpad (press, move in small steps,
release) without clicking any tool first, as a first-time visitor would. After each one the
top label must name the digit and every feature-map picture must have loaded at its size;
Clear must bring back the empty state, and drawing must work again after it.

Chromium: /usr/bin/chromium (Debian's), or the executable named by $CHROMIUM. `.ci/run`
installs it; this test never skips. A full-page screenshot is written to pytest's tmp dir (the
README's pictures come from bench/screenshot.py, which draws with the helpers below).
"""
from __future__ import annotations

import math
import re
import os
import shutil
from pathlib import Path

import pytest

import app
from cnn import explain

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 60_000  # generous: the CPU is small and may be shared with a training run

# Strokes in the unit square of the drawing area (x right, y down), as polylines: the brush
# joins consecutive points with a straight band. Few points on purpose: in headless Chromium
# without a GPU the sketchpad (PixiJS on software WebGL) takes ~0.4 s to handle one move.
ONE = [[(0.5, 0.12), (0.5, 0.5), (0.5, 0.88)]]
ZERO = [[(0.5 + 0.27 * math.sin(t * math.pi / 4), 0.5 - 0.38 * math.cos(t * math.pi / 4)) for t in range(9)]]
SEVEN = [[(0.22, 0.15), (0.5, 0.15), (0.78, 0.15), (0.6, 0.52), (0.42, 0.88)]]
STAR = [[(0.5, 0.05), (0.2, 0.95), (0.95, 0.35), (0.05, 0.35), (0.8, 0.95), (0.5, 0.05)]]  # a doodle

GRIDS = {"conv1-before": "conv1", "conv1-after": "pool1", "conv2-before": "conv2", "conv2-after": "pool2"}


def chromium() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail(f"Chromium not found at {path}: install it (apt-get install chromium, as .ci/run does) "
                    "or set $CHROMIUM to its executable.")
    return path


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def page(browser, served_app):
    pg = browser.new_page(viewport={"width": 1280, "height": 1000}, locale="en-US")
    pg.set_default_timeout(TIMEOUT_MS)
    pg.joins = []  # every queue join the page makes, from its opening (the first test reads them)
    pg.on("request", lambda r: pg.joins.append(r.post_data) if "/queue/join" in r.url else None)
    pg.goto(served_app)
    pg.wait_for_selector("#sketch .pixi-target canvas")
    yield pg
    pg.close()


def top_label(pg):
    return pg.locator("#prediction [data-testid=label-output-value]")


def ready_to_draw(pg) -> None:
    """Wait until the brush is the selected tool and the pad shows no "select the draw tool to
    start" overlay: the state in which a visitor's stroke draws. The page gets there by itself
    (on load, after Clear); the test clicks no tool."""
    from playwright.sync_api import TimeoutError

    try:
        pg.wait_for_selector("#sketch button[aria-label='Brush'].highlight")  # the brush is the tool
        pg.wait_for_selector("#sketch .empty.wrap", state="detached")
    except TimeoutError:
        pytest.fail("The sketchpad still says 'select the draw tool to start': the brush was not made "
                    "active for the visitor (cnn/web/sketch.js).")


def draw(pg, strokes) -> None:
    """Real mouse strokes inside the drawing area (the square canvas, centred in the pad)."""
    pad = pg.locator("#sketch .pixi-target canvas").first
    pad.scroll_into_view_if_needed()
    box = pad.bounding_box()
    side = 0.8 * min(box["width"], box["height"])
    x0, y0 = box["x"] + (box["width"] - side) / 2, box["y"] + (box["height"] - side) / 2
    for stroke in strokes:
        points = [(x0 + side * x, y0 + side * y) for x, y in stroke]
        pg.mouse.move(*points[0])
        pg.mouse.down()
        for p in points[1:]:
            pg.mouse.move(*p, steps=1)
        pg.mouse.up()


def clear(pg) -> None:
    pg.click("#sketch button[aria-label='Clear canvas']")


def expect_digit(pg, digit: str) -> None:
    """The label names ``digit``, the browser has drawn that drawing's value (maps.js marks the
    value it drew on #maps; the answer line says the same digit), and every grid is drawn."""
    from playwright.sync_api import expect

    expect(top_label(pg)).to_have_text(digit, timeout=TIMEOUT_MS)
    pg.wait_for_function("""(d) => {
      const a = document.querySelector('#answer .answer'), m = document.getElementById('maps');
      return a && m && m.dataset.drawnDigit === a.dataset.digit && (d !== '' || a.dataset.notADigit === 'true')
        && document.querySelectorAll('#maps .maps .grid-block.empty').length === 0;
    }""", arg=digit if digit.isdigit() else "", timeout=TIMEOUT_MS)
    # the answer is for the pad: no notice says otherwise (a lost stroke's, a bad link's)
    assert pg.locator("#link-notice p").count() == 0
    for elem_id, layer in GRIDS.items():
        grid = pg.locator(f"#{elem_id} canvas.grid")
        assert grid.get_attribute("data-layer") == layer
        assert grid.evaluate("c => c.width > 0 && c.height > 0")
    bars = pg.locator("#prediction .confidence-set")
    expect(bars).to_have_count(10)  # all ten probabilities


def expect_empty(pg) -> None:
    from playwright.sync_api import expect

    expect(top_label(pg)).to_have_text(app.EMPTY, timeout=TIMEOUT_MS)
    expect(pg.locator("#maps .maps .grid-block.empty")).to_have_count(4, timeout=TIMEOUT_MS)
    assert pg.locator("#link-notice p").count() == 0  # nothing to say on an empty page (a load, a Clear)


def zoom(pg) -> list[str]:
    """The sketchpad's zoom label(s), as the visitor reads them ("100%")."""
    return pg.evaluate("""() => [...document.querySelectorAll('#sketch *')]
      .filter((e) => e.childElementCount === 0 && /^\\d+%$/.test(e.textContent.trim())).map((e) => e.textContent.trim())""")


def tools_clear_of_the_square(pg) -> None:
    """No button of the pad's tool palette lies over the square the 400 px canvas is drawn in (the
    pad's canvas fitted with Gradio's 30 px border all round): a stroke begun anywhere in the
    square draws."""
    box = pg.locator("#sketch .pixi-target canvas").first.bounding_box()
    side = min(box["width"], box["height"]) - 60
    left, top = box["x"] + (box["width"] - side) / 2, box["y"] + (box["height"] - side) / 2
    tools = pg.locator("#sketch .toolbar-wrap button")
    assert tools.count() >= 2
    for i in range(tools.count()):
        t = tools.nth(i).bounding_box()
        clear = (t["x"] + t["width"] <= left + 1 or t["x"] >= left + side - 1 or
                 t["y"] + t["height"] <= top + 1 or t["y"] >= top + side - 1)
        assert clear, (tools.nth(i).get_attribute("aria-label"), t, (left, top, side))


def cache_files() -> set:
    """Every file under the app's cache ($GRADIO_TEMP_DIR)."""
    from pathlib import Path

    return {p for p in Path(os.environ["GRADIO_TEMP_DIR"]).rglob("*") if p.is_file()}


def test_draw_digits_clear_and_draw_again(page, tmp_path, monkeypatch):
    """A plain page open joins no queue (a crowd arriving used to fill the queue with load events
    that did nothing); then a 1 (the first stroke works in the session it starts), a 7 cleared while
    on its way, a star and a 0, Clear between each: each answered, the canvas never moving and at
    100 %; and not one file appears under the app's cache: the maps are drawn in the browser from
    the stroke's value (its size: tests/test_app.py)."""
    expect_empty(page)
    before = cache_files()
    ready_to_draw(page)
    page.wait_for_timeout(300)  # a load event is sent as the page loads: by now it would have been
    assert page.joins == [], page.joins
    assert zoom(page) == ["100%"]  # the canvas at its own size, as it is again after every Clear
    tools_clear_of_the_square(page)
    canvas = page.locator("#sketch .pixi-target canvas").first
    where = canvas.bounding_box()["y"]  # the canvas never moves under the pen, whatever the answer says
    draw(page, ONE)  # the very first stroke on the page, no tool clicked
    expect_digit(page, "1")
    assert len(page.joins) >= 1
    assert abs(canvas.bounding_box()["y"] - where) < 1
    clear_while_the_stroke_is_sent(page, monkeypatch)

    for strokes, digit in ((STAR, explain.NOT_A_DIGIT), (ZERO, "0")):  # (a 7: the link and phone tests)
        clear(page)
        expect_empty(page)
        ready_to_draw(page)
        assert zoom(page) == ["100%"], "the zoom jumped at a Clear"
        draw(page, strokes)
        expect_digit(page, digit)  # a star: "Not a digit?" heads the ten bars, every map still drawn
        if digit == explain.NOT_A_DIGIT:
            from playwright.sync_api import expect

            expect(page.locator("#answer")).to_contain_text(explain.NOT_A_DIGIT_REASON)
        assert abs(canvas.bounding_box()["y"] - where) < 1, digit
    page.screenshot(path=str(tmp_path / "screenshot.png"), full_page=True)
    clear(page)
    expect_empty(page)
    assert cache_files() - before == set(), sorted(cache_files() - before)[:5]


def clear_while_the_stroke_is_sent(page, monkeypatch) -> None:
    """Clear pressed while a stroke is still on its way must end on the empty page, never on the
    stroke's answer. Two ways it goes there:
    1. at once: the pad is still turning the stroke into PNGs, so the stroke's event leaves the
       browser ~1 s after the Clear's (5 of 6 tries here ended on the stroke's answer before
       STALE_JS);
    2. while the server is working on the stroke (here made to take 1 s, as on a busy public
       link): the Clear's quick answer must not be overtaken by the stroke's (2 of 2 tries did
       when the Clear was an event of its own and a stale event left the page as it was).
    The strokes drawn after it must be answered as usual (the caller checks)."""
    import threading
    import time

    from playwright.sync_api import expect

    def stays_empty(seconds: float, why: str) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            assert top_label(page).inner_text() == app.EMPTY, why
            page.wait_for_timeout(100)

    ready_to_draw(page)
    draw(page, SEVEN)
    clear(page)  # 1.
    expect_empty(page)
    stays_empty(2, "the stroke's answer came back after Clear")

    real, answered = app.update, threading.Event()

    def busy(model, value, *rest):  # a drawing takes the server 1 s; the empty page no time
        if value is None:
            return real(model, value, *rest)
        time.sleep(1)
        try:
            return real(model, value, *rest)
        finally:
            answered.set()

    monkeypatch.setattr(app, "update", busy)
    page.evaluate("""() => {  // every text the top label shows from now on, however briefly
      const seen = window.cnnLabels = [];
      const label = () => document.querySelector("#prediction [data-testid=label-output-value]");
      new MutationObserver(() => seen.push(label() && label().innerText))
        .observe(document.getElementById("prediction"), {subtree: true, childList: true, characterData: true});
    }""")
    ready_to_draw(page)
    with page.expect_request(lambda r: "/queue/join" in r.url):
        draw(page, SEVEN)
    clear(page)  # 2.: the stroke's event is being worked on
    assert answered.wait(30)
    page.wait_for_function("() => window.cnnLabels.includes('7')")  # its answer reached the page...
    expect(top_label(page)).to_have_text(app.EMPTY, timeout=5000)  # ...and the Clear's came after it
    stays_empty(1, "a Clear during the stroke's event was overtaken by its answer")
    monkeypatch.undo()


def test_an_example_loads_with_one_click(page):
    clear(page)
    expect_empty(page)
    uploads = []  # the pad must not start re-sending its images as files (it did: ~90 a click)
    page.on("request", lambda r: uploads.append(r.url) if "/gradio_api/upload" in r.url else None)
    path = next(p for p in app.EXAMPLES if p.stem.endswith("_4"))
    page.locator(".gallery-item").nth(app.EXAMPLES.index(path)).click()
    expect_digit(page, "4")
    ready_to_draw(page)  # and the brush is ready to add to it
    with page.expect_request(lambda r: "/queue/join" in r.url):
        draw(page, [[(0.1, 0.9), (0.2, 0.9)]])  # a dot in a corner: still a 4, read from the canvas
    expect_digit(page, "4")
    assert uploads == [], uploads


# ---------------------------------------------------------------- the inspector: click or tap a cell

INPUT_JS = """() => {  // the 28x28 input as #network-input's canvas shows it: each pixel's grey, read back
  const c = document.querySelector('#network-input canvas'), g = c.getContext('2d');
  const k = c.width / 28, d = g.getImageData(0, 0, c.width, c.height).data, out = [];
  for (let r = 0; r < 28; r++) for (let q = 0; q < 28; q++) {
    const i = (Math.floor((r + 0.5) * k) * c.width + Math.floor((q + 0.5) * k)) * 4;
    out.push(d[i]);
  }
  return out;
}"""


def page_input(pg):
    """The 28x28 network input the page shows, read from its picture's pixels (the grey of each
    input pixel is drawn as it is), so the test can ask the model what any cell must hold."""
    import numpy as np

    return np.array(pg.evaluate(INPUT_JS), np.uint8).reshape(28, 28)


def cell_point(pg, elem_id: str, layer: str, channel: int, row: int, col: int, scroll: bool = True,
               grid: str | None = None) -> tuple[float, float]:
    """Page coordinates of the centre of a cell, from the grid's own data-* attributes (the
    element that receives the pointer says its cell size, tiles across, gutter and number band)."""
    el = pg.locator(grid or f"#{elem_id} canvas.grid")
    if scroll:
        el.scroll_into_view_if_needed()
    d = el.evaluate("c => ({...c.dataset})")
    assert d["layer"] == layer, d
    cell, gap, label, cols, rows, width = (float(d[k]) for k in ("cell", "gap", "label", "tileCols", "rows", "cols"))
    first = int(d.get("channel", 0))
    t = channel - first
    tr, tc = divmod(t, int(cols))
    box = el.bounding_box()
    x = tc * (width * cell + gap) + (col + 0.5) * cell
    y = tr * (rows * cell + label + gap) + label + (row + 0.5) * cell
    return box["x"] + x, box["y"] + y


def expect_inspected(pg, shipped_model, layer, channel, row, col, clicked: bool = False) -> None:
    import torch
    from playwright.sync_api import expect

    from cnn import inspector
    from cnn.features import extract

    head = pg.locator(f"#inspector h3[data-layer='{layer}'][data-channel='{channel}'][data-row='{row}']"
                      f"[data-col='{col}']")
    expect(head).to_have_count(1, timeout=TIMEOUT_MS)
    if clicked:  # what was clicked is shown where the visitor is looking
        expect(head).to_be_in_viewport()
    x = torch.from_numpy(page_input(pg).copy()).float().div(255)[None, None]  # noqa: the page's own input
    want = inspector.inspect(shipped_model, extract(shipped_model, x), layer, channel, row, col)["value"]
    got = float(head.locator("b[data-value]").get_attribute("data-value"))
    assert abs(got - want) < 1e-5, (layer, channel, row, col, got, want)


CLICKS = [("conv1-before", "conv1", 5, 9, 14), ("conv1-after", "pool1", 2, 6, 7),
          ("conv2-before", "conv2", 30, 4, 9), ("conv2-after", "pool2", 11, 3, 3)]


class Requests:
    """Every request the page makes while in a ``with`` block (URLs)."""

    def __init__(self, pg):
        self.pg, self.urls = pg, []

    def __enter__(self):
        self.pg.on("request", self._seen)
        return self

    def _seen(self, request):
        self.urls.append(request.url)

    def __exit__(self, *exc):
        self.pg.remove_listener("request", self._seen)


def test_hover_click_and_keys_inspect_any_cell_with_no_request(page, shipped_model):
    """Pointing at a cell of any grid shows it at once, with no request; leaving the grid goes
    back to the pinned (clicked) cell; the arrow keys move it, Tab reaches each grid; a new stroke
    keeps the pinned cell. The inspector's heading and its green-box picture stay on screen beside
    the maps, also for a cell of ⑥'s last row at the top of the screen. A double-click (or F) opens
    a map large, where the mouse inspects as over the page's grids; the page does not move."""
    from playwright.sync_api import expect

    def inspector_in_view() -> None:  # the sticky inspector column: its heading and picture on screen
        expect(page.locator("#inspector h3")).to_be_in_viewport()
        expect(page.locator("#receptive-field canvas")).to_be_in_viewport(ratio=1)

    def last_row_of_6_at_the_top(act) -> None:  # ⑥ scrolled up until its last row is near the top
        page.locator("#conv2-after canvas.grid").evaluate("c => window.scrollBy(0, c.getBoundingClientRect().bottom - 90)")
        act(*cell_point(page, "conv2-after", "pool2", 31, 6, 3, scroll=False))
        expect(page.locator("#inspector h3[data-layer='pool2'][data-channel='31'][data-row='6']")).to_have_count(1)
        inspector_in_view()

    clear(page)
    ready_to_draw(page)
    draw(page, SEVEN)
    expect_digit(page, "7")
    last_row_of_6_at_the_top(page.mouse.move)
    page.set_viewport_size({"width": 1280, "height": 800})  # a laptop: the inspector is taller than the window
    try:
        with Requests(page) as seen:
            for elem_id, layer, channel, row, col in CLICKS:
                page.mouse.move(*cell_point(page, elem_id, layer, channel, row, col))
                expect_inspected(page, shipped_model, layer, channel, row, col)
                inspector_in_view()  # the sticky inspector column stays in view
            last_row_of_6_at_the_top(page.mouse.click)
            elem_id, layer, channel, row, col = CLICKS[2]
            page.mouse.click(*cell_point(page, elem_id, layer, channel, row, col))  # pinned
            page.mouse.move(*cell_point(page, "conv1-before", "conv1", 0, 0, 0))
            expect_inspected(page, shipped_model, "conv1", 0, 0, 0)
            page.mouse.move(5, 5)  # off the grids: back to the pinned cell
            expect_inspected(page, shipped_model, layer, channel, row, col)
            page.locator("#conv2-before canvas.grid").focus()
            for key in ("ArrowRight", "ArrowRight", "ArrowDown", "PageDown"):
                page.keyboard.press(key)
            expect_inspected(page, shipped_model, "conv2", channel + 1, row + 1, col + 2)
            page.keyboard.press("Enter")  # kept
            assert page.locator("#maps").get_attribute("data-pinned") == f"conv2-{channel + 1}-{row + 1}-{col + 2}"
            page.keyboard.press("Tab")  # the next grid takes the keys
            assert page.evaluate("document.activeElement.dataset.layer") == "pool2"
            # the focus view with a mouse and keys: F opens the focused grid's map, Escape closes it
            scrolled, focus, main = page.evaluate("window.scrollY"), page.locator("#focus"), "#focus .focus-main canvas.grid"
            page.keyboard.press("f")
            expect(focus).to_be_visible()
            assert page.locator(main).get_attribute("data-layer") == "pool2"
            opened_on = int(page.locator(main).get_attribute("data-channel"))
            page.keyboard.press("PageDown")  # the next map, in the view too
            assert page.locator(main).get_attribute("data-channel") == str((opened_on + 1) % 32)
            expect(page.locator("#focus .focus-title")).to_contain_text(f"map {(opened_on + 1) % 32} of 32")
            page.keyboard.press("PageUp")
            assert page.locator(main).get_attribute("data-channel") == str(opened_on)
            page.locator("#focus .focus-title").click()  # the keys leave the grids: Escape still closes
            page.keyboard.press("Escape")
            expect(focus).to_be_hidden()
            assert page.evaluate("document.activeElement.dataset.layer") == "pool2"  # the keys go back to the grid
            assert page.evaluate("window.scrollY") == scrolled
            at = cell_point(page, "conv1-after", "pool1", 2, 6, 7)
            scrolled = page.evaluate("window.scrollY")
            page.mouse.dblclick(*at)  # a double-click: that map, large
            expect(focus).to_be_visible()
            d = page.locator(main).evaluate("c => ({...c.dataset, box: c.getBoundingClientRect().toJSON()})")
            assert (d["layer"], d["channel"]) == ("pool1", "2") and float(d["cell"]) >= 24, d  # 14x14 cells, large
            assert d["box"]["bottom"] <= 800 and d["box"]["right"] <= 1280, d  # the whole map on screen
            page.mouse.move(*cell_point(page, None, "pool1", 2, 11, 3, scroll=False, grid=main))  # hovered: inspected
            expect(page.locator("#focus .focus-inspector h3[data-layer='pool1'][data-channel='2'][data-row='11'][data-col='3']")).to_have_count(1)
            assert page.locator("#maps").get_attribute("data-pinned") == "pool1-2-6-7"  # not kept: only pointed at
            page.locator("#focus .focus-close").click()
            expect(focus).to_be_hidden()
            assert page.evaluate("window.scrollY") == scrolled  # opening, pointing, closing: the page stayed
            page.mouse.click(*cell_point(page, "conv2-before", "conv2", channel + 1, row + 1, col + 2))  # kept again
        assert seen.urls == [], seen.urls  # all of it without asking the server
    finally:
        page.set_viewport_size({"width": 1280, "height": 1000})
    page.mouse.move(5, 5)
    before = page.locator("#maps").get_attribute("data-drawn")
    ready_to_draw(page)
    draw(page, [[(0.3, 0.5), (0.7, 0.5)]])  # a new stroke: the inspector follows the drawing, same cell
    page.wait_for_function("(n) => document.getElementById('maps').dataset.drawn !== n", arg=before)
    expect_inspected(page, shipped_model, "conv2", channel + 1, row + 1, col + 2)


def touch_stroke(cdp, points) -> None:
    def touch(kind, pts):
        cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [{"x": x, "y": y} for x, y in pts]})

    touch("touchStart", points[:1])
    for p in points[1:]:
        touch("touchMove", [p])
    touch("touchEnd", [])


PAD_COVERED_JS = """() => {  // points of what shows of the pad where something else is on top
  const pad = document.getElementById('sketch'), r = pad.getBoundingClientRect(), out = [];
  for (let y = Math.max(0, r.top) + 1; y < Math.min(innerHeight, r.bottom) - 1; y += 4)
    for (const x of [r.left + 2, (r.left + r.right) / 2, r.right - 2]) {
      const e = document.elementFromPoint(x, y);
      if (!e || !pad.contains(e)) out.push([x, y, e && (e.closest('[id]') || e).id]);
    }
  return out.slice(0, 5);
}"""


def test_on_a_phone_the_answer_stays_in_view_and_a_tapped_map_opens_large(browser, served_app, shipped_model):
    """390x844, touch: the pad is square around the canvas fitted to its width (66 %), its tools
    clear of the drawing square; the answer
    stays on screen while drawing, also after the visitor scrolled, and nothing ever lies over the
    pad (a stroke begun at the top of what shows of the drawing square draws);
    a tap on a tile opens that map in the focus view with cells >= 12 px (28x28) / >= 24 px
    (14x14), named for screen readers, no wider than the screen, and the page never scrolls (not
    on opening, sliding, scrolling the view to the inspector's numbers, nor closing); 20 taps with
    2 px of jitter (sigma) around random cells'
    centres land on the intended cell at least 19 times; a finger sliding across inspects cell by
    cell; a sideways swipe across the network input moves the drawing, an upward one scrolls."""
    import random

    from playwright.sync_api import expect

    ctx = browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True)
    try:
        pg = ctx.new_page()
        pg.set_default_timeout(TIMEOUT_MS)
        pg.goto(served_app)
        canvas = pg.locator("#sketch .pixi-target canvas").first
        canvas.wait_for()
        ready_to_draw(pg)
        # the network picker shows every entry whole in the phone's column (a step's accuracy was cut off)
        pg.locator("#network input").click()
        entries = pg.get_by_role("option").all_inner_texts()
        pg.keyboard.press("Escape")
        too_wide = pg.locator("#network input").evaluate("""(i, entries) => {  // each text's width, in the input's font
          const cs = getComputedStyle(i), ctx = document.createElement('canvas').getContext('2d');
          ctx.font = `${cs.fontWeight} ${cs.fontSize} ${cs.fontFamily}`;
          return entries.filter((t) => ctx.measureText(t.trim()).width > i.clientWidth);
        }""", entries)
        assert len(entries) == 11 and too_wide == [], (len(entries), too_wide)
        pad = pg.locator("#sketch").bounding_box()  # no taller than wide: no empty pad above and below the canvas
        assert pad["height"] <= pad["width"] + 1 and zoom(pg) == ["66%"], (pad, zoom(pg))
        tools_clear_of_the_square(pg)  # the palette moved out of the square into the bottom border
        assert pg.evaluate(PAD_COVERED_JS) == []  # at the top of the page
        canvas.evaluate("c => c.scrollIntoView({block: 'start'})")  # scrolled until the canvas is at the top
        pg.wait_for_timeout(300)
        assert pg.evaluate("window.scrollY") > 100
        assert pg.evaluate(PAD_COVERED_JS) == []  # nothing over the top of the pad (a sticky answer was)
        box = canvas.bounding_box()
        side = min(box["width"], box["height"]) - 60  # the drawing square (Gradio's 30 px border all round)
        top = max(0, box["y"] + (box["height"] - side) / 2)  # what shows of it
        x0, s = box["x"] + (box["width"] - side) / 2 + 0.1 * side, 0.8 * side
        cdp = ctx.new_cdp_session(pg)  # the 7's bar 6 px under the square's visible top
        touch_stroke(cdp, [(x0 + s * x, top + 6 + s * (y - SEVEN[0][0][1])) for x, y in SEVEN[0]])
        answer = pg.locator("#answer .answer[data-digit='7']")
        expect(answer).to_have_count(1, timeout=TIMEOUT_MS)
        a = answer.bounding_box()
        assert 0 <= a["y"] and a["y"] + a["height"] <= 844, a  # on screen after the scroll
        pg.evaluate("window.scrollBy(0, 250)")  # most of the pad above the screen: the answer still shows
        pg.wait_for_timeout(100)
        a = answer.bounding_box()
        assert 0 <= a["y"] and a["y"] + a["height"] <= 844, a
        assert pg.evaluate(PAD_COVERED_JS) == []
        if os.environ.get("PHONE_SCREENSHOT"):
            pg.screenshot(path=os.environ["PHONE_SCREENSHOT"])
        expect(top_label(pg)).to_have_text("7", timeout=TIMEOUT_MS)
        expect_digit(pg, "7")

        elem_id, layer, channel, row, col = CLICKS[0]
        tap = cell_point(pg, elem_id, layer, channel, row, col)
        pg.wait_for_timeout(100)
        scrolled = pg.evaluate("window.scrollY")  # before the tap: the page stays there from now on
        pg.touchscreen.tap(*tap)
        focus = pg.locator("#focus")
        expect(focus).to_be_visible()
        pg.wait_for_timeout(100)
        assert pg.evaluate("window.scrollY") == scrolled  # opening did not move the page
        main = "#focus .focus-main canvas.grid"
        d = pg.locator(main).evaluate("c => ({...c.dataset, w: c.getBoundingClientRect().width})")
        assert (d["layer"], int(d["channel"])) == (layer, channel), d
        assert float(d["cell"]) >= 12 and d["w"] <= 390, d  # 28x28 cells of >= 12 px, the whole map in view
        wide = focus.evaluate("f => [f.scrollWidth, f.clientWidth]")
        assert wide[0] <= wide[1] <= 390, wide  # nothing runs past the screen's right edge
        names = focus.evaluate("""f => [...f.querySelectorAll("canvas[role='img']")].map((c) =>
                                  [c.className, c.closest('.grid-wrap')?.className || '', c.getAttribute('aria-label')])""")
        assert all(label for *_, label in names) and len(names) >= 3, names  # every picture named
        grids = {wrap.split()[-1]: label for cls, wrap, label in names if cls == "grid"}
        assert grids["focus-main"].startswith("conv1 + ReLU, map 5 of 16, large: 28×28 cells. Arrow keys"), grids
        assert grids["focus-partner"].startswith("conv1 after max-pooling, map 5: 14×14 cells"), grids
        rng = random.Random(7)
        hits = 0
        for _ in range(20):
            r, q = rng.randrange(28), rng.randrange(28)
            x, y = cell_point(pg, None, layer, channel, r, q, scroll=False, grid=main)
            pg.touchscreen.tap(x + rng.gauss(0, 2), y + rng.gauss(0, 2))
            pg.wait_for_timeout(30)
            hits += pg.locator("#maps").get_attribute("data-shown") == f"{layer},{channel},{r},{q}"
        assert hits >= 19, hits
        # a finger sliding along row 10 inspects the cells it passes, one by one
        start = cell_point(pg, None, layer, channel, 10, 3, scroll=False, grid=main)
        end = cell_point(pg, None, layer, channel, 10, 20, scroll=False, grid=main)
        seen = pg.evaluate("""() => { const s = window.cnnSeen = new Set();
          new MutationObserver(() => s.add(document.getElementById('maps').dataset.shown))
            .observe(document.getElementById('maps'), {attributes: true, attributeFilter: ['data-shown']}); }""")
        touch_stroke(cdp, [(start[0] + (end[0] - start[0]) * i / 17, start[1]) for i in range(18)])
        seen = pg.evaluate("[...window.cnnSeen]")
        assert {f"{layer},{channel},10,{q}" for q in range(3, 21)} <= set(seen), seen
        expect(pg.locator("#focus .focus-inspector h3[data-row='10'][data-col='20']")).to_have_count(1)
        assert pg.evaluate("window.scrollY") == scrolled  # sliding did not move the page
        # a finger swiping up over the words scrolls the focus view, not the page, to the numbers
        touch_stroke(cdp, [(200, 800 - 40 * i) for i in range(9)])
        numbers = pg.locator("#focus .focus-inspector table.cells").first
        expect(numbers).to_be_in_viewport(ratio=1)
        assert focus.evaluate("f => f.scrollTop") > 0
        assert pg.evaluate("window.scrollY") == scrolled
        # the pooled map opens with cells >= 24 px
        pg.locator("#focus .focus-close").tap()
        expect(focus).to_be_hidden()
        pg.wait_for_timeout(100)
        assert pg.evaluate("window.scrollY") == scrolled  # closing did not move it either
        pg.touchscreen.tap(*cell_point(pg, "conv1-after", "pool1", 2, 6, 7))
        d = pg.locator(main).evaluate("c => ({...c.dataset})")
        assert d["layer"] == "pool1" and float(d["cell"]) >= 24, d
        expect(pg.locator("#focus .focus-inspector h3[data-layer='pool1'][data-channel='2'][data-row='6'][data-col='7']")).to_have_count(1)
        # a swipe across ② moves the drawing a pixel that way, and the page stays where it is
        pg.locator("#focus .focus-close").tap()
        swipe_moves_the_input(pg, cdp)
    finally:
        ctx.close()


def swipe_moves_the_input(pg, cdp) -> None:
    """A finger swiped right, then left across the network input (②) moves it (1, 0), then back to
    (0, 0), the page staying put; swiped up, it scrolls the page as anywhere else and moves nothing."""
    import numpy as np

    from test_shift import moved_reference

    net_input = pg.locator("#network-input canvas")
    net_input.scroll_into_view_if_needed()
    drawn, scrolled = page_input(pg), pg.evaluate("window.scrollY")
    b = net_input.bounding_box()
    x, y = b["x"] + b["width"] / 2, b["y"] + b["height"] / 2

    def swipe(dx: float, dy: float) -> None:
        touch_stroke(cdp, [(x - dx / 2 + dx * i / 8, y - dy / 2 + dy * i / 8) for i in range(9)])

    for dx, want in ((60, (1, 0)), (-60, (0, 0))):
        before = pg.locator("#maps").get_attribute("data-drawn")
        swipe(dx, 0)
        pg.wait_for_function("(n) => document.getElementById('maps').dataset.drawn !== n", arg=before)
        np.testing.assert_array_equal(page_input(pg), moved_reference(drawn, *want), err_msg=str(want))
    assert pg.evaluate("window.scrollY") == scrolled  # the swipes moved the drawing, not the page
    before = pg.locator("#maps").get_attribute("data-drawn")
    swipe(0, -120)  # up: the page scrolls down under the finger
    pg.wait_for_function("(y) => window.scrollY > y", arg=scrolled, timeout=5000)
    pg.wait_for_timeout(300)
    assert pg.locator("#maps").get_attribute("data-drawn") == before


# ---------------------------------------------------------------- a link to one drawing

def test_a_link_reopens_the_same_drawing_and_cell_and_a_tampered_one_the_empty_page(page, browser, shipped_model):
    import numpy as np
    from playwright.sync_api import expect

    clear(page)
    ready_to_draw(page)
    draw(page, SEVEN)
    expect_digit(page, "7")
    elem_id, layer, channel, row, col = CLICKS[2]
    page.mouse.click(*cell_point(page, elem_id, layer, channel, row, col))
    page.mouse.move(5, 5)
    expect_inspected(page, shipped_model, layer, channel, row, col)
    page.click("#share-button")
    box = page.locator("#share-link textarea, #share-link input").first
    expect(box).to_have_value(re.compile(r"^http://127\.0\.0\.1:\d+/\?drawing=[A-Za-z0-9_-]+&cell=conv2-30-4-9$"),
                              timeout=TIMEOUT_MS)
    url = box.input_value()
    assert len(url) <= 2000
    made_from = page_input(page)

    other = browser.new_page(viewport={"width": 1280, "height": 1000})
    try:
        other.set_default_timeout(TIMEOUT_MS)
        other.goto(url)
        expect_digit(other, "7")
        expect_inspected(other, shipped_model, layer, channel, row, col)
        np.testing.assert_array_equal(page_input(other), made_from)  # links are lossless
        other.locator("#sketch .pixi-target canvas").first.wait_for()
        expect(other.locator(".toast-body")).to_have_count(0)  # no error on the way
        assert other.locator("#link-notice").inner_text().strip() == ""

        # a link altered on the way (every other bad parameter, e.g. a cell that does not exist, gets
        # the same notice: tests/test_link.py, without a browser)
        other.goto(url.replace("drawing=", "drawing=AAAA"))
        expect(other.locator("#link-notice")).to_contain_text("Here is an empty page", timeout=TIMEOUT_MS)
        expect(top_label(other)).to_have_text(app.EMPTY)
        expect(other.locator("#sketch .pixi-target canvas").first).to_be_visible()
        ready_to_draw(other)  # the visitor draws after the notice: it goes with the empty page
        draw(other, ONE)
        expect_digit(other, "1")
        expect(other.locator("#link-notice")).to_have_text("")
    finally:
        other.close()


# ---------------------------------------------------------------- readable in both themes, named for screen readers

CONTRAST_JS = """
(selectors) => {
  // WCAG contrast of each element's own text against what it is drawn on: every ancestor's
  // background, from the page down, blended in turn (an rgba colour over what lies under it; a
  // gradient image (the padding cells' stripes) over it at each of its stops, the worst one counts),
  // starting from the browser's white canvas. Text with alpha is blended over that too.
  const rgba = (c) => {
    const v = (c.match(/[\\d.]+/g) || []).map(Number);
    return v.length >= 3 ? [v[0], v[1], v[2], v.length > 3 ? v[3] : 1] : null;
  };
  const over = ([r, g, b, a], base) => [r, g, b].map((v, i) => a * v + (1 - a) * base[i]);
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const backgrounds = (el) => {  // every colour the text may lie on
    const chain = [];
    for (let e = el; e; e = e.parentElement) chain.unshift(e);
    let under = [[255, 255, 255]];
    for (const e of chain) {
      const s = getComputedStyle(e), colour = rgba(s.backgroundColor);
      if (colour && colour[3] > 0) under = under.map((u) => over(colour, u));
      if (s.backgroundImage.includes("gradient")) {
        const stops = (s.backgroundImage.match(/rgba?\\([^)]*\\)/g) || []).map(rgba);
        under = under.flatMap((u) => stops.map((c) => over(c, u)));
      }
    }
    return under;
  };
  const out = [];
  for (const sel of selectors) {
    for (const el of document.querySelectorAll(sel)) {
      const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
      if (!own || !el.offsetParent || getComputedStyle(el).visibility === "hidden") continue;
      const fg = rgba(getComputedStyle(el).color);
      const worst = Math.min(...backgrounds(el).map((bg) => {
        const a = lum(over(fg, bg)), b = lum(bg);
        return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
      }));
      out.push([sel, el.textContent.trim().slice(0, 30), worst]);
    }
  }
  return out;
}
"""
READ_TEXTS = ["#answer .answer", "#answer .answer *", "#inspector *", "#evidence-text *", "#maps figcaption",
              "#maps .bar .ends span", "#filters figcaption", "#filters figcaption *", "#filters .bar .ends span",
              "#network-note *"]


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_every_word_of_the_answer_inspector_and_evidence_is_readable_in_both_themes(browser, served_app, shipped_model,
                                                                                  theme):
    """Every word ≥ 4.5:1 against the background it is drawn on (each ancestor's colour blended
    down to the page's), in both themes: a bad link's notice, the answer line, the network note,
    conv1's filters (caption, colour-bar ends), the maps' captions and bars, the evidence words,
    and the inspector on pool2 (where it opens), on conv1 at a corner (the padding's striped cells)
    and inside, and on conv2 (their cells' red and blue backgrounds), and the move table. In dark
    mode nothing between the tiles of the filters and the maps is white (no white strips), and the
    filters drawn are conv1's weights."""
    from playwright.sync_api import expect

    pg = browser.new_page(viewport={"width": 1280, "height": 1000}, locale="en-US")
    pg.set_default_timeout(TIMEOUT_MS)
    pairs = []

    def read(*selectors) -> None:
        got = pg.evaluate(CONTRAST_JS, list(selectors))
        assert {sel for sel, _, _ in got} == set(selectors), (selectors, got)  # every part was read
        pairs.extend(got)

    try:
        # a bad link: its notice, on the empty page
        pg.goto(served_app + "?drawing=AAAAbad" + ("&__theme=dark" if theme == "dark" else ""))
        pg.wait_for_selector("#sketch .pixi-target canvas")
        assert pg.evaluate("document.body.classList.contains('dark')") == (theme == "dark")
        expect(pg.locator("#link-notice")).to_contain_text("empty page", timeout=TIMEOUT_MS)
        read("#link-notice *")
        path = next(p for p in app.EXAMPLES if p.stem.endswith("_7"))
        pg.locator(".gallery-item").nth(app.EXAMPLES.index(path)).click()
        expect_digit(pg, "7")
        pg.wait_for_function("document.querySelector('#evidence-text').textContent.includes('7')")
        read(*READ_TEXTS)
        for elem_id, layer, cell, parts in (("conv1-before", "conv1", (2, 0, 0), ["#inspector td.pad"]),
                                            ("conv1-before", "conv1", (5, 9, 14), ["#inspector td[style]"]),
                                            ("conv2-before", "conv2", (30, 4, 9), ["#inspector td[style]"])):
            pg.mouse.move(*cell_point(pg, elem_id, layer, *cell))
            pg.wait_for_selector(f"#inspector h3[data-layer='{layer}'][data-channel='{cell[0]}']")
            read("#inspector *", *parts)  # the signed cells' own backgrounds; the padding's stripes
        pg.mouse.move(5, 5)
        before = pg.locator("#maps").get_attribute("data-drawn")
        pg.click("#move-right")
        pg.wait_for_function("(n) => document.getElementById('maps').dataset.drawn !== n", arg=before)
        pg.wait_for_selector("#move-info table.similarity")
        read("#move-info *")
        poor = [p for p in pairs if p[2] < 4.5]
        assert not poor, poor
        expect_filters(pg, shipped_model.conv1[0].weight)
        if theme == "dark":
            no_white_strips(pg)
    finally:
        pg.close()


def test_pictures_examples_and_the_answer_are_named_for_screen_readers(page):
    """Every picture has its label as alt text or aria-label (the grids drawn in the browser too,
    which also say how to move through them), each example button is named after its digit, and
    the answer line is a polite live region (cnn/web/page.js), as is the inspector."""
    path = next(p for p in app.EXAMPLES if p.stem.endswith("_2"))
    page.locator(".gallery-item").nth(app.EXAMPLES.index(path)).click()
    expect_digit(page, "2")
    named = page.evaluate("""[...document.querySelectorAll("canvas[role='img']")]
                             .filter((c) => c.offsetParent).map((c) => [(c.closest('#network-input, #filters') || c.closest('[id]')).id,
                                                        c.getAttribute('aria-label')])""")
    assert all(label for _, label in named), named  # every picture drawn in the browser is named
    assert {"network-input", *GRIDS, "receptive-field", "evidence", "filters"} <= {i for i, _ in named}, named
    grids = dict(named)
    assert grids["filters"].startswith("conv1's 16 learned 5×5 filters"), grids
    assert grids["conv1-before"].startswith("conv1 + ReLU: 16 maps of 28×28. Arrow keys"), grids
    assert all(page.locator(f"#{g} canvas.grid").get_attribute("tabindex") == "0" for g in GRIDS)
    names = page.evaluate("[...document.querySelectorAll('#examples button')].map((b) => b.getAttribute('aria-label'))")
    digits = [p.stem.rsplit("_", 1)[1] for p in app.EXAMPLES]
    assert names == [f"Load the MNIST test digit {d}" for d in digits], names
    assert page.locator("#answer").get_attribute("aria-live") == "polite"
    assert page.locator("#answer").get_attribute("role") == "status"
    assert page.locator("#inspector").get_attribute("aria-live") == "polite"


# ---------------------------------------------------------------- the browser's numbers are the model's

READ_INSPECTOR_JS = """() => {  // every number the inspector shows, by what it is
  const box = document.getElementById('inspector'), n = (t) => Number(t.trim().replace('\\u2212', '-'));
  const h = box.querySelector('h3'), out = {layer: h.dataset.layer, channel: +h.dataset.channel,
    row: +h.dataset.row, col: +h.dataset.col, value: n(h.querySelector('b[data-value]').textContent)};
  const field = /input rows (\\d+)–(\\d+), columns (\\d+)–(\\d+)/g;
  out.fields = [...box.textContent.matchAll(field)].map((m) => [+m[1], +m[3], +m[2] + 1, +m[4] + 1]);
  for (const t of box.querySelectorAll('table[data-table]'))
    out[t.dataset.table] = [...t.querySelectorAll('tr')].map((r) => [...r.querySelectorAll('td')].map((c) => n(c.textContent)));
  const span = (k) => box.querySelector(`[data-${k}]`);
  if (span('sum')) for (const k of ['sum', 'bias', 'pre', 'relu']) out[k] = n(span(k).textContent);
  out.terms = [...box.querySelectorAll('tr[data-term]')].map((r) => [+r.dataset.term, n(r.lastElementChild.textContent)]);
  out.votes = [...box.querySelectorAll('tr[data-digit]')].map((r) => n(r.lastElementChild.textContent));
  const kept = span('kept');
  if (kept) out.kept = kept.dataset.kept.split(',').map(Number);
  out.won = [...box.querySelectorAll('td.won')].map((c) => [+c.dataset.i, +c.dataset.j]);
  return out;
}"""

PIXEL_JS = """([sel, cells]) => {  // the colour drawn at each cell, where the kept-cell dot would be
  const c = document.querySelector(sel), g = c._g, k = window.devicePixelRatio || 1;
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  return cells.map(([ch, r, q]) => {
    const t = ch, ox = (t % g.tileCols) * (g.w * g.cell + g.gap), oy = Math.floor(t / g.tileCols) * (g.h * g.cell + g.label + g.gap) + g.label;
    const x0 = Math.round((ox + q * g.cell) * k), x1 = Math.round((ox + (q + 1) * g.cell) * k);
    const y0 = Math.round((oy + r * g.cell) * k), y1 = Math.round((oy + (r + 1) * g.cell) * k);
    const s = Math.max(1, Math.round((x1 - x0) / 2));
    const x = x0 + Math.floor((x1 - x0 - s) / 2), y = y0 + Math.floor((y1 - y0 - s) / 2), i = (y * c.width + x) * 4;
    return [d[i], d[i + 1], d[i + 2]];
  });
}"""


def close(shown, expected, what) -> None:
    """A number as printed (3 decimals) against the model's: within one unit of the last digit."""
    import numpy as np

    shown, expected = np.asarray(shown, float), np.asarray(expected, float)
    assert shown.shape == expected.shape, (what, shown.shape, expected.shape)
    assert np.abs(shown - expected).max() <= 0.001 + 1e-9, (what, shown, expected)


def test_every_number_the_inspector_shows_is_inspects_and_every_cell_its_colour(page, served_app, shipped_model):
    """32 random cells, 8 of each layer, pointed at with the mouse on an example digit: every number
    the browser's inspector prints equals /inspect's for that cell (the value, the conv1 patch,
    filter and products, conv2's 16 channel terms, the sum, bias, pre-activation and ReLU, the
    pooling window with its marked winner, the class votes, the receptive fields); and the colour
    drawn at every cell of the four grids is its activation on the layer's scale (or the kept-cell
    dot, bright or dim, where pooling kept it)."""
    import random

    import numpy as np
    from gradio_client import Client, handle_file

    from cnn import inspector, render
    from cnn.features import extract
    from cnn.preprocess import prepare

    path = next(p for p in app.EXAMPLES if p.stem.endswith("_2"))
    clear(page)  # nothing pinned: the inspector opens on its default cell
    expect_empty(page)
    page.locator(".gallery-item").nth(app.EXAMPLES.index(path)).click()
    expect_digit(page, "2")
    default_cell_and_evidence_picture(page, shipped_model, prepare(str(path)))
    client = Client(served_app, verbose=False)
    value = {"background": handle_file(str(path)), "layers": [], "composite": handle_file(str(path))}
    rng, cells = random.Random(20), []
    for elem_id, layer in GRIDS.items():
        c, h, w = (16, 28, 28) if layer == "conv1" else (16, 14, 14) if layer == "pool1" else \
            (32, 14, 14) if layer == "conv2" else (32, 7, 7)
        cells += [(elem_id, layer, (rng.randrange(c), rng.randrange(h), rng.randrange(w))) for _ in range(8)]
    cells += [("conv1-before", "conv1", (3, 0, 27)), ("conv1-before", "conv1", (5, 1, 14))]  # padding zeros read
    # /inspect asked two cells ahead (a session may have 3 events at once), answered while the
    # browser is pointed at the cell before
    jobs = {}

    def ask(i: int) -> None:
        if i < len(cells):
            jobs[i] = client.submit(value, cells[i][1], *cells[i][2], api_name="/inspect")

    ask(0), ask(1)
    from test_shift import layers as model_layers

    maps_of = model_layers(shipped_model, prepare(str(path)).image)
    before_pooling = {"pool1": maps_of["conv1"], "pool2": maps_of["conv2"]}
    for i, (elem_id, layer, cell) in enumerate(cells):
        ask(i + 2)
        page.mouse.move(*cell_point(page, elem_id, layer, *cell))
        shown = page.evaluate(READ_INSPECTOR_JS)
        assert "\u22120.000" not in page.locator("#inspector").inner_text()  # never "−0.000"
        want = jobs.pop(i).result()
        assert (shown["layer"], shown["channel"], shown["row"], shown["col"]) == (layer, *cell)
        close(shown["value"], want["value"], "value")
        assert shown["fields"][0] == want["receptive_field"], (shown["fields"], want["receptive_field"])
        if layer.startswith("conv"):
            close([shown[k] for k in ("bias", "pre", "relu")],
                  [want["bias"], want["pre_activation"], want["value"]], "bias, pre-activation, ReLU")
            assert shown["relu"] == max(shown["pre"], 0) or abs(shown["pre"]) < 0.001
        if layer == "conv1":
            for k in ("patch", "weights", "products"):
                close(shown[k], want[k], k)
            close(shown["sum"], sum(map(sum, want["products"])), "sum")
            # the patch's padding zeros are marked as such: exactly the 5x5 positions outside the input
            _, r, q = cell
            outside = [[not (0 <= r + di - 2 < 28 and 0 <= q + dj - 2 < 28) for dj in range(5)] for di in range(5)]
            marked = page.evaluate("""() => { const out = [...Array(5)].map(() => Array(5).fill(false));
              for (const td of document.querySelectorAll('#inspector table[data-table=patch] td.pad'))
                out[+td.dataset.i][+td.dataset.j] = true;
              return out; }""")
            assert marked == outside, (cell, marked)
        elif layer == "conv2":
            terms = dict(shown["terms"])
            assert sorted(terms) == list(range(16))
            close([terms[k] for k in range(16)], want["channel_terms"], "channel terms")
            close(shown["sum"], sum(want["channel_terms"]), "sum")
            assert [abs(t) for _, t in shown["terms"]] == sorted((abs(t) for _, t in shown["terms"]), reverse=True)
        else:
            close(shown["window"], want["window"], "window")
            top, left = want["window_origin"]
            assert shown["kept"] == want["kept"] and shown["won"] == [[want["kept"][0] - top, want["kept"][1] - left]]
            # the window and its marked winner against the model's own maps before pooling (its modules)
            c, r, q = cell
            window = before_pooling[layer][0, c, 2 * r:2 * r + 2, 2 * q:2 * q + 2].double().numpy()
            close(shown["window"], window, "window, from the model")
            (i, j), = shown["won"]
            assert window[i, j] == window.max(), (cell, shown["won"], window)  # the marked cell holds the maximum
            if (window == window.max()).sum() == 1:
                assert (i, j) == np.unravel_index(int(window.argmax()), (2, 2)), (cell, shown["won"], window)
            assert shown["fields"][1] == want["kept_receptive_field"]
        if layer == "pool2":
            close(shown["votes"], want["class_terms"], "class votes")
            weight = shipped_model.out.weight.detach().view(10, 32, 7, 7)[:, cell[0], cell[1], cell[2]]
            close(shown["votes"], (weight.double() * want["value"]).numpy(), "W_out[c] * value")

    # the colours: every cell of every grid, read back from the canvases
    f = extract(shipped_model, prepare(str(path)).tensor)
    for elem_id, layer in GRIDS.items():
        maps = inspector.layer_map(f, layer).numpy()
        block = f.conv1 if layer in ("conv1", "pool1") else f.conv2
        hi = float(block.before.max()) or 1.0  # the layer's one scale: 0 to its largest value (before pooling)
        cells = [(ch, r, q) for ch in range(maps.shape[0]) for r in range(maps.shape[1]) for q in range(maps.shape[2])]
        got = np.array(page.evaluate(PIXEL_JS, [f"#{elem_id} canvas.grid", cells]), int).reshape(*maps.shape, 3)
        want = render.ACTIVATION_SCALE[render.levels(maps, 0, hi)].astype(int)
        if layer.startswith("conv"):
            kept = block.kept.numpy()
            dot = np.isin(got.reshape(-1, 3), [render.RGB_KEPT, render.RGB_KEPT_DIM]).all(-1).reshape(maps.shape)
            np.testing.assert_array_equal(dot, kept, err_msg=f"{layer}: the dots are the kept cells")
            got, want = got[~kept], want[~kept]
        np.testing.assert_array_equal(got, want, err_msg=f"{layer}: colours")


EVIDENCE_JS = """() => {  // the evidence picture: the colour at the centre of each of its 2 x 28 x 28 input cells
  const c = document.querySelector('#evidence canvas.evidence'), k = window.devicePixelRatio || 1, cell = 8, gap = 4;
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data, out = [];
  for (let m = 0; m < 2; m++) for (let r = 0; r < 28; r++) for (let q = 0; q < 28; q++) {
    const x = Math.floor((m * (28 * cell + 2 * gap) + (q + 0.5) * cell) * k), y = Math.floor((r + 0.5) * cell * k);
    const i = (y * c.width + x) * 4;
    out.push([d[i], d[i + 1], d[i + 2]]);
  }
  return out;
}"""


def default_cell_and_evidence_picture(pg, shipped_model, prepared) -> None:
    """What the visitor reads and sees for a digit with nothing pinned, against the model's weights
    (test_words.reference, float64 from the state dict):
    - the inspector's heading names the default cell, "⑥ after pooling, map N, row R, column C":
      the arg-max of the answer's votes W_out[answer] * pool2, a positive vote (on the example 2 not
      the largest |vote|, so a change to the magnitude or the most negative vote fails);
    - the evidence picture: each of its 7x7 positions is a 4x4 block of input cells, coloured on the
      signed scale by that position's evidence (the sum over pool2's 32 channels of W_out[digit] * value),
      the answer's map on the left, answer minus runner-up on the right, one scale for both, over the
      faint input. A transposed or mirrored map fails."""
    import numpy as np

    from cnn import payload, render
    from test_words import reference

    ref = reference(shipped_model, prepared.tensor)
    answer, runner_up = (int(d) for d in ref["logits"].argsort(descending=True)[:2])
    assert pg.locator("#maps").get_attribute("data-pinned") in ("", None)
    head = pg.locator("#inspector h3")
    m = re.match(r"(.+), map (\d+), row (\d+), column (\d+): \S+ — the cell that voted most for the answer",
                 head.inner_text().replace("\u2212", "-"))
    assert m, head.inner_text()
    votes = ref["votes"][answer]
    best = tuple(int(i) for i in np.unravel_index(int(votes.argmax()), votes.shape))
    assert (m[1], *map(int, m.groups()[1:])) == (payload.TITLES["pool2"], *best), (m.groups(), best)
    assert head.get_attribute("data-layer") == "pool2" and float(votes[best]) > 0
    largest = tuple(int(i) for i in np.unravel_index(int(votes.abs().argmax()), votes.shape))
    assert largest != best, "the example no longer tells the largest vote from the largest |vote|"

    ev = (ref["W"] * ref["pool2"]).sum(dim=1).numpy()  # (10, 7, 7): position (i, j) sums its 32 channels
    maps = np.stack([ev[answer], ev[answer] - ev[runner_up]])
    hi = np.abs(maps).max()
    scale = render.WEIGHT_SCALE.astype(float)
    n = len(scale)
    level = np.clip(np.floor((maps + hi) * (n - 1) / (2 * hi) + 0.5), 0, n - 1).astype(int)  # (2, 7, 7)
    faint = 1 - 0.45 * prepared.image.astype(float) / 255  # (28, 28): the input drawn faintly over the map
    got = np.array(pg.evaluate(EVIDENCE_JS), int).reshape(2, 28, 28, 3)
    wrong = []
    for k in range(2):
        for i in range(7):
            for j in range(7):
                block = got[k, 4 * i:4 * i + 4, 4 * j:4 * j + 4]  # the 4x4 input cells of position (i, j)
                f = faint[4 * i:4 * i + 4, 4 * j:4 * j + 4, None]
                # its level, or one either side (float32 on the page against float64 here)
                ok = any(np.abs(block - np.floor(scale[lv] * f + 0.5)).max() <= 1
                         for lv in range(max(0, level[k, i, j] - 1), min(n, level[k, i, j] + 2)))
                undone = block[..., 0] / f[..., 0] - block[..., 2] / f[..., 0]  # red minus blue: the sign
                if abs(maps[k, i, j]) > 0.1 * hi and np.sign(undone.mean()) != np.sign(maps[k, i, j]):
                    ok = False
                if not ok:
                    wrong.append((k, i, j, round(float(maps[k, i, j]), 3), block[0, 0].tolist()))
    assert not wrong, wrong


def test_the_move_buttons_move_the_input_and_say_how_similar_each_layer_stayed(page, shipped_model):
    """→ twice and ↑ once on the example 2: the network input the page shows is the drawing moved
    (2, -1), the table's four similarities are the cosines of the model's maps (recomputed here),
    the answer follows, and ⟲ brings back the drawing as drawn. No move: a hint, no table."""
    import numpy as np
    from playwright.sync_api import expect

    from test_shift import cos, layers, moved_reference

    path = next(p for p in app.EXAMPLES if p.stem.endswith("_2"))
    page.locator(".gallery-item").nth(app.EXAMPLES.index(path)).click()
    expect_digit(page, "2")
    drawn = page_input(page)
    expect(page.locator("#move-info .hint")).to_have_count(1)
    for button in ("#move-right", "#move-right", "#move-up"):
        before = page.locator("#maps").get_attribute("data-drawn")
        page.click(button)
        page.wait_for_function("(n) => document.getElementById('maps').dataset.drawn !== n", arg=before)
    want = moved_reference(drawn, 2, -1)
    np.testing.assert_array_equal(page_input(page), want)
    shown = dict(page.evaluate("""[...document.querySelectorAll('#move-info tr[data-layer]')]
        .map((r) => [r.dataset.layer, Number(r.querySelector('[data-value]').textContent)])"""))
    a, b = layers(shipped_model, want), layers(shipped_model, drawn)
    for name in ("conv1", "pool1", "conv2", "pool2"):
        assert abs(shown[name] - cos(a[name], b[name])) <= 0.005 + 1e-9, (name, shown)
    assert "Moved 2 px right, 1 px up" in page.locator("#move-info").inner_text()
    move_words(page, shipped_model, drawn, (2, -1))  # the 2's tail: 3 inked pixels past the right border
    before = page.locator("#maps").get_attribute("data-drawn")
    page.click("#move-back")
    page.wait_for_function("(n) => document.getElementById('maps').dataset.drawn !== n", arg=before)
    np.testing.assert_array_equal(page_input(page), drawn)
    expect(page.locator("#move-info .hint")).to_have_count(1)
    # the keys, on the focused input: ← moves it a pixel left (the pooled maps stay closer: the
    # sentence holds), ↑ four times more (the pooled maps change too and the answer with them: where
    # it does not hold), Escape puts it back
    page.locator("#network-input canvas").focus()
    for key, move in (("ArrowLeft", (-1, 0)), ("ArrowUp", None), ("ArrowUp", None), ("ArrowUp", None),
                      ("ArrowUp", (-1, -4)), ("Escape", (0, 0))):
        before = page.locator("#maps").get_attribute("data-drawn")
        page.keyboard.press(key)
        page.wait_for_function("(n) => document.getElementById('maps').dataset.drawn !== n", arg=before)
        if move is not None:
            np.testing.assert_array_equal(page_input(page), moved_reference(drawn, *move), err_msg=key)
        if move not in (None, (0, 0)):
            move_words(page, shipped_model, drawn, move)


def move_words(pg, shipped_model, drawn, move) -> None:
    """The move's sentences as the visitor reads them, against what is computed here: the inked
    pixels pushed out of the frame (counted from the two inputs), the answer sentence (the digit,
    unmoved and moved, with the calibrated probabilities of test_words.reference), and the sentence
    on what pooling does, with its limit: after the move shown, the pooled maps are closer than
    the ones before (a small move) or the answer changed (a large one, where it does not hold)."""
    import numpy as np
    import torch

    from test_shift import cos, layers, moved_reference
    from test_words import reference

    moved = moved_reference(drawn, *move)
    info = pg.locator("#move-info")
    said = info.inner_text()
    lost = int(np.count_nonzero(drawn)) - int(np.count_nonzero(moved))
    if lost:
        assert f"{lost} inked pixel{'s' if lost > 1 else ''} went out of the frame." in said, (lost, said)
    else:
        assert "went out of the frame" not in said, said
    was, now = (reference(shipped_model, torch.from_numpy(a).float().div(255)[None, None])["probs"] for a in (drawn, moved))
    b, a = int(was.argmax()), int(now.argmax())
    pct = r"(\d+\.\d) %"
    if a == b:
        m = re.search(rf"The network still reads (\d): {pct} sure unmoved, {pct} moved\.", said)
        assert m and int(m[1]) == b, said
        shown, expected = [float(m[2]), float(m[3])], [was[b], now[b]]
    else:
        m = re.search(rf"The answer changed: (\d) \({pct}\) unmoved, (\d) \({pct}\) moved; (\d) is now {pct}\.", said)
        assert m and (int(m[1]), int(m[3]), int(m[5])) == (b, a, b), said
        shown, expected = [float(m[2]), float(m[4]), float(m[6])], [was[b], now[a], now[b]]
    assert all(abs(s - 100 * float(e)) <= 0.05 + 1e-9 for s, e in zip(shown, expected)), (said, expected)
    assert "uncalibrated" not in said  # the shipped weights' probabilities are calibrated
    why = info.locator(".why").inner_text()
    assert why.startswith("Pooling keeps the strongest response in each 2×2 window") and \
        "It does not make the network blind to position" in why, why
    x, y = layers(shipped_model, moved), layers(shipped_model, drawn)
    sim = {k: cos(x[k], y[k]) for k in x}
    if max(map(abs, move)) == 1:  # where it holds
        assert sim["pool1"] > sim["conv1"] and sim["pool2"] > sim["conv2"] and a == b, (move, sim)
    if max(map(abs, move)) == 4:  # where it does not: even the pooled maps changed, and the answer
        assert sim["pool2"] < 0.5 and a != b, (move, sim)


def test_the_inspector_shows_what_each_map_looks_for(page):
    """Pointing at a cell of map m (conv1, or conv2 through ⑥) shows map m's top MNIST test patches
    from the shipped file (cnn/patches.py): their digits, and each patch's pixels as drawn."""
    import numpy as np

    from cnn import patches, weights

    with np.load(patches.path_for(weights.DEFAULT_WEIGHTS)) as z:
        shipped = {k: z[k] for k in z.files}
    path = next(p for p in app.EXAMPLES if p.stem.endswith("_2"))
    page.locator(".gallery-item").nth(app.EXAMPLES.index(path)).click()
    expect_digit(page, "2")
    for elem_id, layer, conv, m in (("conv1-before", "conv1", "conv1", 6), ("conv2-after", "pool2", "conv2", 17)):
        page.mouse.move(*cell_point(page, elem_id, layer, m, 3, 3))
        box = page.locator(f"#inspector .looks-for[data-conv='{conv}'][data-map='{m}']")
        indices = box.locator("canvas.patches").get_attribute("data-indices")
        assert [int(i) for i in indices.split(",")] == shipped[f"{conv}.index"][m].tolist()
        drawn = np.array(box.locator("canvas.patches").evaluate("""(c) => {
          const side = Number(c.closest('.looks-for').dataset.conv === 'conv1' ? 5 : 14), k = window.devicePixelRatio || 1;
          const scale = Math.max(3, Math.round(48 / side)), g = c.getContext('2d');
          const d = g.getImageData(0, 0, c.width, c.height).data, out = [];
          for (let y = 0; y < side; y++) for (let x = 0; x < side; x++) {  // the first patch, cell centres
            const px = Math.floor((x + 0.5) * scale * k), py = Math.floor((y + 0.5) * scale * k);
            out.push(d[(py * c.width + px) * 4]);
          }
          return out;
        }"""))
        side = shipped[f"{conv}.patch"].shape[-1]
        np.testing.assert_array_equal(drawn.reshape(side, side), shipped[f"{conv}.patch"][m, 0], err_msg=conv)


def test_a_picked_training_step_reads_the_drawing_and_its_inspector_uses_its_weights(page, browser, served_app,
                                                                                    shipped_model):
    """The picker on "step 50" with the example 2: the note and the answer say uncalibrated, the
    inspector's numbers for cells of all four layers are /inspect's with network=step-50 (the
    snapshot's weights reached the browser) and its top patches are its own file's, not the
    shipped weights'. Its link opens a new page on step 50 in one event (the picker, the note,
    the inspector's numbers and patches all step 50's). Back to the shipped weights, the shipped
    numbers and patches again."""
    from gradio_client import Client, handle_file
    from playwright.sync_api import expect

    from cnn import replay, weights

    path = next(p for p in app.EXAMPLES if p.stem.endswith("_2"))
    page.locator(".gallery-item").nth(app.EXAMPLES.index(path)).click()
    expect_digit(page, "2")
    client = Client(served_app, verbose=False)
    value = {"background": handle_file(str(path)), "layers": [], "composite": handle_file(str(path))}

    def pick(option: str, network: str) -> None:
        before = page.locator("#maps").get_attribute("data-drawn")
        page.locator("#network input").click()
        page.get_by_role("option", name=option).click()
        page.wait_for_function("([n, net]) => document.getElementById('maps').dataset.drawn !== n && "
                               "document.getElementById('maps').dataset.network === net", arg=[before, network])

    def check(network: str | None, pg=page, layers=("conv1", "pool1", "conv2", "pool2")) -> None:
        for elem_id, layer, cell in (("conv1-before", "conv1", (3, 9, 14)), ("conv1-after", "pool1", (5, 6, 7)),
                                     ("conv2-before", "conv2", (20, 4, 9)), ("conv2-after", "pool2", (11, 3, 3))):
            if layer not in layers:
                continue
            pg.mouse.move(*cell_point(pg, elem_id, layer, *cell))
            shown = pg.evaluate(READ_INSPECTOR_JS)
            args = (value, layer, *cell) + ((network,) if network else ())
            want = client.predict(*args, api_name="/inspect")
            close(shown["value"], want["value"], (network, layer, "value"))
            if layer.startswith("conv"):
                close([shown["bias"], shown["pre"]], [want["bias"], want["pre_activation"]], (network, layer))
            if layer == "conv1":
                close(shown["products"], want["products"], (network, "products"))
            if layer == "conv2":
                close([t for _, t in sorted(shown["terms"])], want["channel_terms"], (network, "terms"))
            if layer == "pool2":
                close(shown["votes"], want["class_terms"], (network, "votes"))

    snapshots = replay.load()
    pick("Step 50 of", "step-50")
    expect_filters(page, snapshots["step-50"][0].conv1[0].weight)  # its own filters
    expect(page.locator("#network-note")).to_contain_text("Uncalibrated")
    expect(page.locator("#answer")).to_contain_text("uncalibrated")
    check("step-50")
    looks_for(page, replay.file_for(replay.DEFAULT_FOLDER, 50))  # its own patches, not the shipped weights'
    snapshot_move_says_uncalibrated(page, path, "step-50")

    page.click("#share-button")
    box = page.locator("#share-link textarea, #share-link input").first
    expect(box).to_have_value(re.compile(r"&network=step-50"), timeout=TIMEOUT_MS)
    other = browser.new_page(viewport={"width": 1280, "height": 1000}, locale="en-US")
    try:
        other.set_default_timeout(TIMEOUT_MS)
        joins = []
        other.on("request", lambda r: joins.append(r.post_data) if "/queue/join" in r.url else None)
        other.goto(box.input_value())
        expect_digit(other, "2")
        assert other.locator("#maps").get_attribute("data-network") == "step-50"
        expect(other.locator("#network input")).to_have_value(re.compile(r"^Step 50 of"))
        expect(other.locator("#network-note")).to_contain_text("Uncalibrated")
        check("step-50", other, ("conv1", "pool2"))  # the first and last weights the browser multiplies
        expect_filters(other, snapshots["step-50"][0].conv1[0].weight)
        looks_for(other, replay.file_for(replay.DEFAULT_FOLDER, 50))
        assert len(joins) == 1, joins  # the link's own event; no second one for the picker
    finally:
        other.close()

    pick("Shipped weights", "shipped")
    expect_filters(page, shipped_model.conv1[0].weight)
    expect(page.locator("#answer")).to_contain_text("sure")
    check(None)
    looks_for(page, weights.DEFAULT_WEIGHTS)


def snapshot_move_says_uncalibrated(page, path, network: str) -> None:
    """Moved 1 px right on a training snapshot, the move's answer sentence says its percentages
    are uncalibrated, and they are the snapshot's plain softmax (from its state dict alone, unmoved
    and moved); ⟲ puts the drawing back."""
    import numpy as np

    from cnn import replay
    from cnn.preprocess import prepare
    from test_replay import reference_probabilities
    from test_shift import moved_reference

    drawn = prepare(str(path)).image
    for button in ("#move-right", "#move-back"):
        before = page.locator("#maps").get_attribute("data-drawn")
        page.click(button)
        page.wait_for_function("(n) => document.getElementById('maps').dataset.drawn !== n", arg=before)
        if button == "#move-right":
            said = page.locator("#move-info table.similarity + p").inner_text()
    model = replay.load()[network][0]
    was, now = (reference_probabilities(model, a) for a in (drawn, moved_reference(drawn, 1, 0)))
    assert int(was.argmax()) == int(now.argmax()), "the snapshot's answer changed: the sentence below is the other one"
    d = int(was.argmax())
    assert "uncalibrated" in said and re.search(rf"reads {d}\b", said), said
    shown = [float(v) for v in re.findall(r"(\d+\.\d) %", said)]
    assert len(shown) == 2 and all(abs(s - 100 * float(e)) <= 0.05 + 1e-9 for s, e in zip(shown, (was[d], now[d]))), \
        (said, float(was[d]), float(now[d]))
    np.testing.assert_array_equal(page_input(page), drawn)


def looks_for(page, path) -> None:
    """The inspector (on pool2 map 11, as ``check`` left it) shows the top patches of the patches
    file beside ``path``: the network the page reads the drawing with."""
    import numpy as np

    from cnn import patches

    with np.load(patches.path_for(path)) as z:
        want = z["conv2.index"][11].tolist()
    indices = page.locator("#inspector .looks-for[data-conv='conv2'][data-map='11'] canvas.patches")
    assert [int(i) for i in indices.get_attribute("data-indices").split(",")] == want, path


# ---------------------------------------------------------------- conv1's filters; dark mode has no white strips

FILTER_PIXELS_JS = """() => {  // the colour at each filter cell's centre, from the canvas's own layout (data-*)
  const c = document.querySelector('#filters canvas.filters-grid'), d = c.dataset, k = window.devicePixelRatio || 1;
  const [n, h, w, cols, cell, gap, label] = ['channels', 'rows', 'cols', 'tileCols', 'cell', 'gap', 'label'].map((x) => +d[x]);
  const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data, out = [];
  for (let t = 0; t < n; t++) {
    const ox = (t % cols) * (w * cell + gap), oy = Math.floor(t / cols) * (h * cell + label + gap) + label;
    for (let r = 0; r < h; r++) for (let q = 0; q < w; q++) {
      const i = (Math.floor((oy + (r + 0.5) * cell) * k) * c.width + Math.floor((ox + (q + 0.5) * cell) * k)) * 4;
      out.push([px[i], px[i + 1], px[i + 2], px[i + 3]]);
    }
  }
  return {colours: out, ends: [...document.querySelectorAll('#filters .bar .ends span')].map((s) => s.textContent),
          label: c.getAttribute('aria-label'), caption: document.querySelector('#filters figcaption').textContent};
}"""


def expect_filters(pg, weight) -> None:
    """The filters the page draws are ``weight`` (conv1's, (16, 1, 5, 5)): each cell's colour is its
    weight on the blue-white-red scale, symmetric about 0 (to one step of 240), positive red and
    negative blue, and the colour bar's ends are ∓ the largest |weight|. Waits (the picker's filters
    come in the same event as the maps) up to 10 s for the drawing to match."""
    import time

    import numpy as np

    from cnn import render

    w = weight.detach().double().numpy().reshape(16, 25)
    m = float(np.abs(w).max())
    scale = render.WEIGHT_SCALE.astype(int)
    want = np.clip(np.floor((w + m) * (len(scale) - 1) / (2 * m) + 0.5), 0, len(scale) - 1)
    ends = [render.fmt(-m), "0", render.fmt(m)]
    deadline = time.monotonic() + 10
    while True:
        got = pg.evaluate(FILTER_PIXELS_JS)
        colours = np.array(got["colours"], int).reshape(16, 25, 4)
        index = ((colours[..., None, :3] - scale) ** 2).sum(-1).argmin(-1)  # the nearest entry of the scale
        ok = (colours[..., 3] == 255).all() and np.abs(index - want).max() <= 1 and got["ends"] == ends
        if ok or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert got["caption"].startswith("conv1's 16 learned 5×5 filters") and got["label"].startswith("conv1's 16"), got
    assert (colours[..., 3] == 255).all(), "every filter cell is opaque"
    assert np.abs(index - want).max() <= 1, (index - want)
    red, blue = colours[..., 0], colours[..., 2]
    step = 2 * m / (len(scale) - 1)
    assert (red[w > step] > blue[w > step]).all() and (blue[w < -step] > red[w < -step]).all()
    assert got["ends"] == ends, got["ends"]


def no_white_strips(pg) -> None:
    """Dark mode: the gutters between the tiles of conv1's filters and of the four maps (the middle
    line of every gap, as the screen shows it) are the page's dark background, not white; the page
    around them is dark; and the examples look like the pad they load into (both keep the drawing's
    white paper: a thumbnail shows what a click puts on the pad)."""
    import io

    import numpy as np
    from PIL import Image

    def shot(box):
        return np.asarray(Image.open(io.BytesIO(pg.screenshot(clip=box))).convert("RGB")).astype(int)

    for sel in ("#filters canvas.filters-grid", *(f"#{g} canvas.grid" for g in GRIDS)):
        el = pg.locator(sel)
        el.scroll_into_view_if_needed()
        box, d = el.bounding_box(), el.evaluate("c => ({...c.dataset})")
        cell, gap, label, cols, h, w, n = (float(d[k]) for k in ("cell", "gap", "label", "tileCols", "rows", "cols", "channels"))
        px = shot(box)
        rows = int(-(-n // cols))
        lines = [px[:, round(t * (w * cell + gap) + w * cell + gap / 2)] for t in range(int(cols) - 1)]
        lines += [px[round(t * (h * cell + label + gap) + label + h * cell + gap / 2)] for t in range(rows - 1)]
        gutters = np.concatenate(lines)
        assert len(gutters) > 100, sel
        white = (gutters > 240).all(-1)
        assert not white.any(), (sel, int(white.sum()), "near-white gutter pixels in dark mode")
        assert np.median(gutters.max(-1)) < 80, (sel, "the gutters are the dark page")
    pad = pg.locator("#sketch .pixi-target canvas").first
    pad.scroll_into_view_if_needed()
    b = pad.bounding_box()
    side = min(b["width"], b["height"]) - 60
    paper = shot({"x": b["x"] + (b["width"] - side) / 2 + 2, "y": b["y"] + (b["height"] - side) / 2 + 2,
                  "width": 4, "height": 4}).mean()
    thumb = pg.locator("#examples .gallery-item img").first.bounding_box()
    corner = shot({"x": thumb["x"] + 1, "y": thumb["y"] + 1, "width": 4, "height": 4}).mean()
    assert abs(paper - corner) < 40, (paper, corner)
