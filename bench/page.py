"""What one stroke and one pointer cost the visitor, measured in headless Chromium on the real page.

  per stroke        requests the page makes and bytes it receives from a real mouse stroke on the
                    sketchpad until the browser has drawn the new maps (goal: <= 5 requests,
                    <= 60 kB); the value the maps are drawn from, alone, is printed too
  pointer -> inspector
                    from a pointer event on a grid cell to the inspector showing that cell (the DOM
                    updated, measured in the page with the event's own timestamp), for 60 cells of
                    the four grids, with 0 and 150 ms of emulated network round trip (Chromium's
                    network emulation: what a Space or a share link adds); goal <= 16 ms median

The strokes, browser settings and helpers are the browser test's (tests/test_browser.py). Headless
Chromium renders the sketchpad in software, so stroke-to-answer times here are not a visitor's; the
figures above do not depend on that.
Usage: python bench/page.py [--cells 60]
"""
from __future__ import annotations

import argparse
import json
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

TIMING_JS = """() => {  // pointer event -> the inspector naming the pointed cell, in ms
  window.cnnTimes = [];
  let t0 = null;
  for (const c of document.querySelectorAll('#maps canvas.grid'))
    c.addEventListener('pointermove', (e) => { t0 = e.timeStamp; }, true);
  new MutationObserver(() => { if (t0 !== null) { window.cnnTimes.push(performance.now() - t0); t0 = null; } })
    .observe(document.getElementById('inspector'), {childList: true, subtree: true});
}"""


def stroke_cost(pg, strokes, digit: str) -> tuple[int, int, int]:
    """(requests, bytes received, bytes of the maps' value) for one stroke, until the maps are drawn."""
    seen = []
    pg.on("requestfinished", seen.append)
    before = pg.locator("#maps").get_attribute("data-drawn")
    draw(pg, strokes)
    pg.wait_for_function("(n) => document.getElementById('maps').dataset.drawn !== n", arg=before, timeout=60_000)
    expect_digit(pg, digit)
    pg.wait_for_timeout(500)  # anything the page still asks for after drawing counts too
    pg.remove_listener("requestfinished", seen.append)
    received = 0
    value = 0
    for r in seen:
        sizes = r.sizes()
        received += sizes["responseBodySize"] + sizes["responseHeadersSize"]
        if "/queue/data" in r.url:  # the event stream: the value travels in it, as JSON
            body = r.response().body().decode("utf-8", "replace")
            value = max([value] + [len(json.dumps(o)) for o in _values(body)])
    return len(seen), received, value


def _values(stream: str):
    """The maps' values inside an SSE body (dicts with a "blob")."""
    for line in stream.splitlines():
        if line.startswith("data:"):
            try:
                msg = json.loads(line[5:])
            except ValueError:
                continue
            for out in (msg.get("output") or {}).get("data") or []:
                if isinstance(out, dict) and "blob" in out:
                    yield out


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
    demo = app.build_demo(model, weights.read_card(str(weights.DEFAULT_WEIGHTS)))
    _, url, _ = app.launch(demo, "127.0.0.1", free_port(), block=False, quiet=True)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS, headless=True)
            pg = browser.new_page(viewport={"width": 1280, "height": 1000})
            pg.goto(url)
            pg.wait_for_selector("#sketch .pixi-target canvas")
            ready_to_draw(pg)
            first = stroke_cost(pg, SEVEN, "7")
            print(f"per stroke (a 7, the first stroke): {first[0]} requests, {first[1] / 1000:.1f} kB received, "
                  f"the maps' value {first[2] / 1000:.1f} kB")
            pg.click("#sketch button[aria-label='Clear canvas']")
            ready_to_draw(pg)
            again = stroke_cost(pg, ZERO, "0")
            print(f"per stroke (a 0, after Clear):     {again[0]} requests, {again[1] / 1000:.1f} kB received, "
                  f"the maps' value {again[2] / 1000:.1f} kB")
            cdp = pg.context.new_cdp_session(pg)
            for rtt in (0, 150):
                cdp.send("Network.enable")
                cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": rtt,
                                                              "downloadThroughput": -1, "uploadThroughput": -1})
                times = pointer_times(pg, args.cells)
                q = statistics.quantiles(times, n=20)
                print(f"pointer -> inspector, {rtt:>3} ms round trip: median {statistics.median(times):.1f} ms, "
                      f"p95 {q[18]:.1f} ms over {len(times)} cells (requests made: 0 by design; see the test)")
            browser.close()
    finally:
        demo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
