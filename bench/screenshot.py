"""The README's two pictures, made the way a visitor makes them: real strokes in headless Chromium.

  bench/screenshot.png   the whole page after drawing a 7, with the cell of ④ (conv1 after
                         pooling) that holds the strongest response clicked: the inspector shows
                         its 2x2 window, the kept cell and both receptive fields
  bench/not_a_digit.png  the top of the page after drawing a star: "Not a digit?" and its reason

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
                          expect_digit, expect_inspected, page_input, ready_to_draw)


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
    demo = app.build_demo(model, weights.read_card())
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
            browser.close()
    finally:
        demo.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
