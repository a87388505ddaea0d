"""The README's pictures, made the way a visitor makes them: real strokes in headless Chromium.

  bench/screenshot.png   the whole page after drawing a 7, with the cell of ④ (conv1 after
                         pooling) that holds the strongest response clicked: the inspector shows
                         its 2x2 window, the kept cell and both receptive fields
  bench/not_a_digit.png  the top of the page after drawing a star: "Not a digit?" and its reason
  bench/phone_focus.png  a 390x844 phone after a touch-drawn 7 and a tap on a map of ③: the map
                         large in the focus view, its pooled partner, the inspector under them
  bench/dark.png         the whole page in the dark theme (?__theme=dark): pad, examples, filters,
                         maps, inspector

The page is the real one (``app.build_demo`` on the shipped weights, served on 127.0.0.1); the
strokes and browser settings are the browser test's (tests/test_browser.py).
Usage: python bench/screenshot.py [--out bench]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import numpy as np  # noqa: E402

import app  # noqa: E402
from cnn import explain, weights  # noqa: E402
from cnn.features import extract  # noqa: E402
from cnn.preprocess import network_input  # noqa: E402
from conftest import free_port  # noqa: E402
from test_browser import (CHROMIUM_ARGS, SEVEN, STAR, cell_point, chromium, clear, draw,  # noqa: E402
                          expect_digit, expect_inspected, page_input, ready_to_draw, touch_stroke)


def strongest_pool1_cell(model, image) -> tuple[int, int, int]:
    """(channel, row, col) of the largest value after conv1's pooling: a cell whose window,
    kept cell and receptive fields all sit on the stroke."""
    pooled = extract(model, network_input(image)).conv1.after  # (16, 14, 14)
    channel, row, col = (int(i) for i in np.unravel_index(int(pooled.argmax()), tuple(pooled.shape)))
    return channel, row, col


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "bench", help="folder for the two PNGs (default: bench)")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    model = weights.load()
    demo = app.build_page(model)
    app.launch(demo, "127.0.0.1", free_port(), block=False, quiet=True)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 1000}, locale="en-US")
            page.set_default_timeout(60_000)
            page.goto(demo.local_url)
            ready_to_draw(page)
            draw(page, STAR)
            expect_digit(page, explain.NOT_A_DIGIT)
            page.screenshot(path=str(args.out / "not_a_digit.png"), clip={"x": 0, "y": 0, "width": 1280, "height": 640})

            clear(page)
            ready_to_draw(page)
            draw(page, SEVEN)
            expect_digit(page, "7")
            cell = strongest_pool1_cell(model, page_input(page))
            page.mouse.click(*cell_point(page, "conv1-after", "pool1", *cell))
            expect_inspected(page, model, "pool1", *cell)
            page.wait_for_timeout(500)  # the framed grids' pictures finish loading
            page.set_viewport_size({"width": 1400, "height": 1000})
            page.wait_for_timeout(500)
            page.screenshot(path=str(args.out / "screenshot.png"), full_page=True)
            print(f"wrote {args.out / 'not_a_digit.png'} and {args.out / 'screenshot.png'} (pool1 cell {cell})")

            dark = browser.new_page(viewport={"width": 1400, "height": 1000}, locale="en-US")
            dark.set_default_timeout(60_000)
            dark.goto(demo.local_url + "?__theme=dark")
            ready_to_draw(dark)
            draw(dark, SEVEN)
            expect_digit(dark, "7")
            dark.mouse.click(*cell_point(dark, "conv1-after", "pool1", *cell))
            dark.mouse.move(5, 5)
            expect_inspected(dark, model, "pool1", *cell)
            dark.screenshot(path=str(args.out / "dark.png"), full_page=True)  # the pad, examples, filters too
            print(f"wrote {args.out / 'dark.png'}")

            phone = browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True,
                                        locale="en-US")
            pg = phone.new_page()
            pg.set_default_timeout(60_000)
            pg.goto(demo.local_url)
            ready_to_draw(pg)
            pad = pg.locator("#sketch .pixi-target canvas").first
            pad.scroll_into_view_if_needed()
            box = pad.bounding_box()
            side = 0.8 * min(box["width"], box["height"])
            x0, y0 = box["x"] + (box["width"] - side) / 2, box["y"] + max(0, (box["height"] - side) / 2)
            touch_stroke(phone.new_cdp_session(pg), [(x0 + side * x, y0 + side * y) for x, y in SEVEN[0]])
            expect_digit(pg, "7")
            pg.touchscreen.tap(*cell_point(pg, "conv1-before", "conv1", cell[0], 2 * cell[1], 2 * cell[2]))
            pg.locator("#focus").wait_for()
            pg.wait_for_timeout(300)
            pg.screenshot(path=str(args.out / "phone_focus.png"))
            print(f"wrote {args.out / 'phone_focus.png'}")
            browser.close()
    finally:
        demo.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
