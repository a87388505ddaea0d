"""Load test: the page's ``/predict`` under many concurrent users, next to a do-nothing twin.

Starts the real app (``python app.py``) and a do-nothing Sketchpad -> Label app built from the
same pieces (``app.sketchpad()``, ``app.QUEUE``, ``app.launch``: same queue, limits, file size,
torch threads), each in its own process on a free localhost port. The same
client code drives both: ``gradio_client`` sends real drawings, MNIST test digits drawn as black
strokes on a transparent 400x400 RGBA layer (the page's canvas) over a white background, as the
Sketchpad's ``{background, layers, composite}`` value with each image uploaded as a file.

Both apps are started together; after a warm-up of each:
  single client     one client per app, --single sequential requests to each, alternating
                    between the two apps (so background noise hits both alike): p50
  N clients         --clients threads, each its own Client (own session), --requests each,
                    back to back, one app at a time: p50/p95/p99 latency, throughput, errors

On 2 cores the framework and this load generator (which runs on the same cores) dominate: the
do-nothing twin measures them, so the page's figures are also given as ratios to the twin's.
Goals: 0 errors; throughput >= 0.8x the twin's; single-client p50 within 25 ms of the twin's.
Exit status 0 when every goal is met, 1 otherwise.

The same three goals are then measured again on the page's own per-stroke path, as a browser
makes it (``StrokeClient``): the sketch's three images sent as blobs to ``component_server``,
``queue/join`` for ``update`` naming them, ``queue/data`` (the maps' value comes in it: no
picture to fetch since the browser draws the maps; before, every stroke also GOT five pictures).

Usage: python bench/load.py [--clients 32] [--requests 20] [--single 40] [--digits 100]
"""
from __future__ import annotations

import argparse
import itertools
import contextlib
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import app  # noqa: E402
from cnn.errors import CNNError  # noqa: E402

THROUGHPUT_RATIO = 0.8  # the page's throughput at N clients, at least this fraction of the twin's
SINGLE_P50_MS = 25.0  # the page's single-client p50, at most this much above the twin's
STARTUP_S = 180  # importing torch + gradio on a busy 2-core machine can take a while
CONSTANT = {str(d): 0.1 for d in range(10)}  # what the twin answers: the same shape as the page's


# ---------------------------------------------------------------- the do-nothing twin

def twin_demo():
    """The page's Sketchpad -> Label ``/predict`` with nothing in between, and the page's queue."""
    import gradio as gr

    from cnn import weights

    with gr.Blocks(title="do-nothing twin") as demo:
        sketch = app.sketchpad()
        label = gr.Label(num_top_classes=10)
        gr.on(triggers=[], fn=lambda value: CONSTANT, inputs=sketch, outputs=label,
              api_name="predict", concurrency_id="cnn")
        # The page's per-stroke event, doing nothing with the drawing it reads but sending back
        # what the page sends: the label, the answer line and the maps' value (one example's, made
        # once; a new copy each time), so Gradio's own cost of sending them weighs on both alike.
        state = gr.State(None)
        _, line, value, _ = app.update(weights.load(), str(app.EXAMPLES[0]))
        answer, maps = gr.HTML(), gr.HTML()
        count = itertools.count()

        def stroke(_):
            sketch.latest()
            return CONSTANT, line, {**value, "n": next(count)}

        sketch.change(stroke, state, [label, answer, maps], trigger_mode="always_last", concurrency_id="cnn")
    demo.queue(**app.QUEUE)
    return demo


def serve_twin(port: int) -> int:
    app.configure_torch()
    demo = twin_demo()
    try:
        app.launch(demo, "127.0.0.1", port, quiet=True)
    except KeyboardInterrupt:
        pass
    finally:
        demo.close()
    return 0


# ---------------------------------------------------------------- the drawings

def drawings(n: int, folder: Path) -> list[tuple[dict, int]]:
    """``n`` MNIST test digits as Sketchpad values of uploaded files, with their labels.

    Each digit is scaled x10 (its 20x20 box becomes ~200 px, its strokes ~25 px wide, as drawn
    with the page's brush), its ink turned into the alpha of black strokes on a transparent layer,
    centred on a 400x400 canvas over a white background; the composite is the two flattened."""
    from gradio_client import handle_file
    from PIL import Image

    from cnn import data

    split = data.load(train=False)
    out = []
    for i in range(n):
        digit = Image.fromarray(split.images[i].numpy()).resize((280, 280), Image.BILINEAR)
        ink = np.asarray(digit, np.float32)
        alpha = np.clip((ink - 64) * 2, 0, 255).astype(np.uint8)  # crisp strokes, anti-aliased edges
        layer = np.zeros((app.CANVAS, app.CANVAS, 4), np.uint8)
        o = (app.CANVAS - 280) // 2
        layer[o:o + 280, o:o + 280, 3] = alpha
        layer = Image.fromarray(layer, "RGBA")
        background = Image.new("RGBA", layer.size, (255, 255, 255, 255))
        composite = Image.alpha_composite(background, layer)
        files = {}
        for name, im in (("background", background), ("layer", layer), ("composite", composite)):
            path = folder / f"{i}_{name}.png"
            im.save(path)
            files[name] = handle_file(str(path))
        value = {"background": files["background"], "layers": [files["layer"]],
                 "composite": files["composite"], "id": None}
        out.append((value, int(split.labels[i])))
    return out


# ---------------------------------------------------------------- servers

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def served(command: list[str], port: int, log: Path):
    """Run ``command`` (a server on ``port``) until the block ends; yield its URL once it answers."""
    import httpx

    url = f"http://127.0.0.1:{port}/"
    # A Python handler for SIGINT here (reset to the default by exec) means the server gets a working
    # Ctrl-C even when this process ignores SIGINT, as it does when started in the background.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with open(log, "wb") as out:
            proc = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{' '.join(command)} exited ({proc.returncode}):\n{log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "config", timeout=5).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{' '.join(command)} did not answer within {STARTUP_S} s")
            time.sleep(0.5)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------- the load

class Run(NamedTuple):
    latencies_ms: np.ndarray  # of the requests that succeeded
    seconds: float  # wall time from the start signal to the last answer
    errors: list[str]
    correct: int  # answers whose top label is the digit drawn


def client(url: str):
    from gradio_client import Client

    return Client(url, verbose=False, analytics_enabled=False, download_files=False)


def drive(url: str, values: list[tuple[dict, int]], clients: int, requests: int, offset: int = 0,
          make=None) -> Run:
    """``clients`` threads, each with its own Client, send ``requests`` drawings back to back."""
    users = [(make or client)(url) for _ in range(clients)]  # connected before the clock starts
    start = threading.Barrier(clients + 1)
    lock = threading.Lock()
    latencies, errors, correct = [], [], [0]

    def user(k: int) -> None:
        start.wait()
        for j in range(requests):
            value, digit = values[(offset + k * requests + j) % len(values)]
            t = time.perf_counter()
            try:
                result = users[k].predict(value, api_name="/predict")
            except Exception as e:  # every failure is counted, whatever it is
                with lock:
                    errors.append(f"{type(e).__name__}: {e}"[:200])
                continue
            ms = (time.perf_counter() - t) * 1e3
            with lock:
                latencies.append(ms)
                correct[0] += result.get("label") == str(digit)

    threads = [threading.Thread(target=user, args=(k,), daemon=True) for k in range(clients)]
    for th in threads:
        th.start()
    start.wait()
    t0 = time.perf_counter()
    for th in threads:
        th.join()
    seconds = time.perf_counter() - t0
    for u in users:
        with contextlib.suppress(Exception):
            u.close()
    return Run(np.array(latencies), seconds, errors, correct[0])


# ---------------------------------------------------------------- the page's own per-stroke path

def stroke_values(values) -> list[tuple[dict, int]]:
    """The same drawings as PNG bytes, as the browser's Sketchpad sends them with accept_blobs."""
    return [({k: Path(v["path"]).read_bytes() for k, v in (("background", value["background"]),
                                                           ("layer", value["layers"][0]),
                                                           ("composite", value["composite"]))}, digit)
            for value, digit in values]


class StrokeClient:
    """One browser tab: after each stroke the page's Sketchpad posts its background, layer and
    composite to ``component_server`` (accept_blobs), joins the queue for the pad's ``change``
    event (which reads those blobs; its only input is the session's state), reads the answer
    from ``queue/data``, then fetches every picture in it: what Chromium was traced doing."""

    def __init__(self, url: str):
        import uuid

        import httpx

        # Drop an idle connection before the server's 5 s keep-alive timeout does, as browsers do
        # (they also retry a request the server's close raced with).
        self.http = httpx.Client(base_url=url, timeout=120, limits=httpx.Limits(keepalive_expiry=4))
        self.session = uuid.uuid4().hex[:11]
        config = self.http.get("/config").json()
        self.pad = next(c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == "sketch")
        dep = next((d for d in config["dependencies"] if [self.pad, "change"] in d.get("targets", [])), None)
        if dep is None:
            raise RuntimeError("no stroke (change) event")
        self.fn_index, self.inputs = dep["id"], dep["inputs"]

    def predict(self, blobs: dict, api_name: str = "/update") -> dict:
        import uuid

        blob_id = uuid.uuid4().hex[:10]
        for kind, data in blobs.items():
            r = self.http.post("/gradio_api/component_server", files=[("files", ("blob", data, "image/png"))],
                               data={"session_hash": self.session, "component_id": str(self.pad),
                                     "fn_name": "accept_blobs", "type": kind,
                                     "index": "0" if kind == "layer" else "null", "id": blob_id})
            r.raise_for_status()
        data = [None for _ in self.inputs]  # the session's state: held by the server
        r = self.http.post("/gradio_api/queue/join", json={"data": data, "fn_index": self.fn_index,
                                                           "session_hash": self.session, "trigger_id": self.pad,
                                                           "event_data": None})
        r.raise_for_status()
        import json

        with self.http.stream("GET", "/gradio_api/queue/data", params={"session_hash": self.session}) as sse:
            for line in sse.iter_lines():
                if not line.startswith("data:"):
                    continue
                msg = json.loads(line[5:])
                if msg.get("msg") == "process_completed":
                    break
        if not msg.get("success"):
            raise RuntimeError(str(msg.get("output"))[:200])
        out = msg["output"]["data"]
        for item in out:  # the pictures, as the browser fetches them
            if isinstance(item, dict) and item.get("url"):
                self.http.get(item["url"]).raise_for_status()
        label = next((o for o in out if isinstance(o, dict) and "label" in o), {})
        return {"label": label.get("label")}

    def close(self) -> None:
        self.http.close()


class Figures(NamedTuple):
    single: Run
    load: Run

    @property
    def throughput(self) -> float:
        return len(self.load.latencies_ms) / self.load.seconds


def single_client(urls: list[str], values, requests: int, make=None) -> list[Run]:
    """One client per app, sending ``requests`` drawings to each app in turn (a, b, a, b, ...):
    whatever else the machine is doing meanwhile weighs on both alike."""
    runs: list[list] = [[[], [], 0] for _ in urls]
    users = [(make or client)(url) for url in urls]
    t0 = time.perf_counter()
    for j in range(requests):
        value, digit = values[j % len(values)]
        for k, (user, (latencies, errors, _)) in enumerate(zip(users, runs, strict=True)):
            t = time.perf_counter()
            try:
                result = user.predict(value, api_name="/predict")
            except Exception as e:  # every failure is counted, whatever it is
                errors.append(f"{type(e).__name__}: {e}"[:200])
                continue
            latencies.append((time.perf_counter() - t) * 1e3)
            runs[k][2] += result.get("label") == str(digit)
    seconds = time.perf_counter() - t0
    for u in users:
        with contextlib.suppress(Exception):
            u.close()
    return [Run(np.array(lat), seconds, err, ok) for lat, err, ok in runs]


def measure(urls: dict[str, str], values, args, make=None) -> dict[str, Figures]:
    for url in urls.values():  # first requests pay for lazy imports and the thread pools' first threads
        drive(url, values, 1, args.warmup, offset=len(values) // 2, make=make)
        drive(url, values, min(4, args.clients), args.warmup, make=make)
    singles = dict(zip(urls, single_client(list(urls.values()), values, args.single, make=make), strict=True))
    print("  single client: " + ", ".join(f"{name} {pct(run, 50):.1f} ms p50" for name, run in singles.items()),
          flush=True)
    figures = {}
    for name, url in urls.items():  # one at a time: the other app sits idle meanwhile
        load = drive(url, values, args.clients, args.requests, make=make)
        figures[name] = Figures(singles[name], load)
        print(f"  {name}: {args.clients} clients done ({figures[name].throughput:.1f} requests/s)", flush=True)
    return figures


def pct(run: Run, q: float) -> float:
    return float(np.percentile(run.latencies_ms, q)) if len(run.latencies_ms) else float("nan")


def report(twin: Figures, page: Figures, args) -> bool:
    n = args.clients
    rows = [
        ("single client p50 (ms)", pct(twin.single, 50), pct(page.single, 50)),
        (f"{n} clients p50 (ms)", pct(twin.load, 50), pct(page.load, 50)),
        (f"{n} clients p95 (ms)", pct(twin.load, 95), pct(page.load, 95)),
        (f"{n} clients p99 (ms)", pct(twin.load, 99), pct(page.load, 99)),
        (f"{n} clients throughput (req/s)", twin.throughput, page.throughput),
    ]
    print(f"\n{'':<32}{'do-nothing twin':>16}{'the page':>12}{'page/twin':>11}")
    for label, a, b in rows:
        print(f"{label:<32}{a:>16.1f}{b:>12.1f}{b / a:>10.2f}x")
    twin_err = len(twin.single.errors) + len(twin.load.errors)
    page_err = len(page.single.errors) + len(page.load.errors)
    total = len(page.single.latencies_ms) + len(page.load.latencies_ms) + page_err
    print(f"{'errors':<32}{twin_err:>16}{page_err:>12}")
    print(f"{'digits read correctly':<32}{'-':>16}{(page.single.correct + page.load.correct) / total:>12.1%}")
    for who, run in (("twin", twin), ("page", page)):
        for e in sorted(set(run.single.errors + run.load.errors))[:5]:
            print(f"  {who} error: {e}")

    ratio = page.throughput / twin.throughput
    extra = pct(page.single, 50) - pct(twin.single, 50)
    goals = [
        ("0 errors", page_err == 0, f"{page_err} errors"),
        (f"throughput at {n} clients >= {THROUGHPUT_RATIO}x the twin's", ratio >= THROUGHPUT_RATIO, f"{ratio:.2f}x"),
        (f"single-client p50 within {SINGLE_P50_MS:.0f} ms of the twin's", extra <= SINGLE_P50_MS,
         f"{extra:+.1f} ms"),
    ]
    print()
    for goal, met, got in goals:
        print(f"goal: {goal}: {'met' if met else 'NOT MET'} ({got})")
    return all(met for _, met, _ in goals)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=32, help="concurrent clients (default 32)")
    p.add_argument("--requests", type=int, default=20, help="requests per client (default 20)")
    p.add_argument("--single", type=int, default=40, help="sequential single-client requests (default 40)")
    p.add_argument("--warmup", type=int, default=5, help="warm-up requests per client (default 5)")
    p.add_argument("--digits", type=int, default=100, help="distinct MNIST test digits to draw (default 100)")
    p.add_argument("--serve-twin", type=int, metavar="PORT", help=argparse.SUPPRESS)  # the twin's process
    args = p.parse_args(argv)
    if args.serve_twin:
        return serve_twin(args.serve_twin)

    import gradio
    import gradio_client

    print(f"load test: {args.clients} clients x {args.requests} requests (+ {args.single} from one client), "
          f"{args.digits} MNIST test digits drawn on {app.CANVAS}x{app.CANVAS} canvases")
    print(f"serving: queue {app.QUEUE}, max_file_size {app.MAX_FILE_SIZE}, 1 torch thread; "
          f"gradio {gradio.__version__}, gradio_client {gradio_client.__version__}; "
          f"{os.cpu_count()} CPUs ({platform.machine()})", flush=True)
    with tempfile.TemporaryDirectory(prefix="load-") as folder:
        tmp = Path(folder)
        try:
            values = drawings(args.digits, tmp)
        except CNNError as e:  # no MNIST: one line saying where to put it
            print(f"load.py: {e}", file=sys.stderr)
            return 2
        twin_port, page_port = free_port(), free_port()
        with served([sys.executable, __file__, "--serve-twin", str(twin_port)], twin_port, tmp / "twin.log") as twin, \
                served([sys.executable, str(ROOT / "app.py"), "--port", str(page_port)], page_port,
                       tmp / "page.log") as page:
            print("/predict through gradio_client:", flush=True)
            figures = measure({"do-nothing twin": twin, "the page": page}, values, args)
            print("the page's per-stroke path (accept_blobs x3, queue/join update, queue/data):",
                  flush=True)
            strokes = measure({"do-nothing twin": twin, "the page": page}, stroke_values(values), args,
                              make=StrokeClient)
    print("\n/predict")
    ok = report(figures["do-nothing twin"], figures["the page"], args)
    print("\nper stroke (/update as the browser sends it)")
    ok &= report(strokes["do-nothing twin"], strokes["the page"], args)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
