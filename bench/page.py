"""What one stroke and one pointer cost the visitor, measured in headless Chromium on the real page.

  per stroke        requests the page makes and body bytes it receives (Chromium's network log, the
                    event stream's chunks included) from a real mouse stroke on the sketchpad until
                    the browser has drawn the new maps (goal: <= 5 requests, <= 60 kB)
  pointer -> inspector
                    from a pointer event on a grid cell to the inspector showing that cell (the DOM
                    updated), for 60 cells of the four grids, with 0 and 150 ms of emulated network
                    round trip (Chromium's network emulation: what a Space or a share link adds);
                    goal <= 16 ms median. Two clocks: from the event's own timestamp (this includes
                    Chromium holding a mouse move until the next frame, up to 16.7 ms at 60 Hz), and
                    from the page's handler starting (the page's own work)

The strokes, browser settings and helpers are the browser test's (tests/test_browser.py). Headless
Chromium renders the sketchpad in software, so stroke-to-answer times here are not a visitor's; the
figures above do not depend on that.
Usage: python bench/page.py [--cells 60]
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import app  # noqa: E402
from cnn import weights  # noqa: E402
from conftest import free_port  # noqa: E402
from test_browser import (CHROMIUM_ARGS, GRIDS, SEVEN, ZERO, cell_point, chromium, draw,  # noqa: E402
                          expect_digit, ready_to_draw)

TIMING_JS = """() => {  // [event -> inspector, handler -> inspector] in ms, for each cell pointed at
  window.cnnTimes = [];
  if (window.cnnTiming) return;
  window.cnnTiming = true;
  let t0 = null, t1 = null;
  for (const c of document.querySelectorAll('#maps canvas.grid'))
    c.addEventListener('onpointerrawupdate' in window ? 'pointerrawupdate' : 'pointermove',
                       (e) => { t0 = e.timeStamp; t1 = performance.now(); }, true);
  new MutationObserver(() => {
    if (t0 !== null) { const now = performance.now(); window.cnnTimes.push([now - t0, now - t1]); t0 = null; }
  }).observe(document.getElementById('inspector'), {childList: true, subtree: true});
}"""


def stroke_cost(pg, cdp, strokes, digit: str) -> tuple[int, int, list[str]]:
    """(requests, body bytes received, the requests' paths) for one stroke, until the maps are
    drawn, from Chromium's own network log (an open event stream's chunks included)."""
    sent, received = [], [0]

    def request(e):
        sent.append(e["request"]["url"].split("?")[0].split("/", 3)[-1])

    def data(e):
        received[0] += e["dataLength"]

    cdp.on("Network.requestWillBeSent", request)
    cdp.on("Network.dataReceived", data)
    before = pg.locator("#maps").get_attribute("data-drawn")
    draw(pg, strokes)
    pg.wait_for_function("(n) => document.getElementById('maps').dataset.drawn !== n", arg=before, timeout=60_000)
    expect_digit(pg, digit)
    pg.wait_for_timeout(500)  # anything the page still asks for after drawing counts too
    cdp.remove_listener("Network.requestWillBeSent", request)
    cdp.remove_listener("Network.dataReceived", data)
    return len(sent), received[0], sent


def pointer_times(pg, n: int) -> list[float]:
    import random

    pg.evaluate(TIMING_JS)
    rng = random.Random(1)
    shapes = {"conv1": (16, 28), "pool1": (16, 14), "conv2": (32, 14), "pool2": (32, 7)}
    for i in range(n):
        elem_id, layer = list(GRIDS.items())[i % 4]
        c, side = shapes[layer]
        pg.mouse.move(*cell_point(pg, elem_id, layer, rng.randrange(c), rng.randrange(side), rng.randrange(side)))
        pg.wait_for_timeout(20)
    return pg.evaluate("window.cnnTimes")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", type=int, default=60, help="cells pointed at per round-trip setting (default 60)")
    args = p.parse_args(argv)
    from playwright.sync_api import sync_playwright

    model = weights.load(str(weights.DEFAULT_WEIGHTS))
    app.configure_torch()
    demo = app.build_page(model)  # as app.main builds it
    _, url, _ = app.launch(demo, "127.0.0.1", free_port(), block=False, quiet=True)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS, headless=True)
            pg = browser.new_page(viewport={"width": 1280, "height": 1000})
            pg.goto(url)
            pg.wait_for_selector("#sketch .pixi-target canvas")
            ready_to_draw(pg)
            cdp = pg.context.new_cdp_session(pg)
            cdp.send("Network.enable")
            for name, strokes, digit in (("a 7, the first stroke", SEVEN, "7"), ("a 0, after Clear", ZERO, "0")):
                n, size, paths = stroke_cost(pg, cdp, strokes, digit)
                print(f"per stroke ({name}): {n} requests, {size / 1000:.1f} kB received ({', '.join(paths)})")
                pg.click("#sketch button[aria-label='Clear canvas']")
                ready_to_draw(pg)
                pg.wait_for_timeout(1500)  # the Clear's own event is over before the next stroke is counted
            pg.click("#examples button >> nth=1")  # the maps of an example, to point at
            expect_digit(pg, "2")
            for rtt in (0, 150):
                cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": rtt,
                                                              "downloadThroughput": -1, "uploadThroughput": -1})
                times = pointer_times(pg, args.cells)
                event, work = ([t[i] for t in times] for i in (0, 1))
                print(f"pointer -> inspector, {rtt:>3} ms round trip, {len(times)} cells: from the pointer event "
                      f"median {statistics.median(event):.1f} ms (p95 {statistics.quantiles(event, n=20)[18]:.1f}); "
                      f"the page's own work median {statistics.median(work):.1f} ms "
                      f"(p95 {statistics.quantiles(work, n=20)[18]:.1f})")
            browser.close()
    finally:
        demo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
