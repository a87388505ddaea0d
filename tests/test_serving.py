"""The page as a public demo: hostile HTTP requests against the launched app, a bounded queue,
``--share`` without a network, refusing bad weights end to end, weights that survive a killed save.

Every hostile request must be refused with a clear message (an HTTP 4xx with its ``detail``, or
a ``gr.Error`` sentence through the API), leak nothing (no file content, no traceback, no server
path), and leave the app answering the next ordinary request correctly.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image, ImageDraw

import app
from cnn import weights
from cnn.sketch import MAX_SKETCH_PIXELS

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = weights.DEFAULT_WEIGHTS
EXAMPLE_7 = next(p for p in app.EXAMPLES if p.stem.endswith("_7"))
INTERNALS = ("Traceback", 'File "', "site-packages", str(ROOT), "/tmp/gradio")  # never in a refusal


# ---------------------------------------------------------------- talking to the served app

@pytest.fixture(scope="module")
def http(served_app):
    with httpx.Client(base_url=served_app, timeout=120) as client:
        yield client


def file_data(path: str) -> dict:
    return {"path": path, "meta": {"_type": "gradio.FileData"}}


def upload(http, name: str, content: bytes) -> dict:
    r = http.post("/gradio_api/upload", files=[("files", (name, content, "image/png"))])
    assert r.status_code == 200, r.text
    return file_data(r.json()[0])


def opened(http, session: str) -> str:
    """A session that has joined the queue once (the page's load event makes one): the server
    takes sketch blobs only from sessions it knows."""
    r = http.post("/gradio_api/call/predict", json={"data": [None], "session_hash": session})
    assert r.status_code == 200, r.text
    assert "event: complete" in http.get(f"/gradio_api/call/predict/{r.json()['event_id']}").text
    return session


def pad_id(http) -> int:
    components = http.get("/config").json()["components"]
    return next(c["id"] for c in components if c.get("props", {}).get("elem_id") == "sketch")


def sketch(image: dict) -> dict:
    """A Sketchpad value with ``image`` as background, only layer and composite."""
    return {"background": image, "layers": [image], "composite": image, "id": None}


def call(http, data: list, api: str = "predict") -> tuple[str, object]:
    """POST /gradio_api/call/<api>, then read its event stream: ("complete"|"error", data)."""
    r = http.post(f"/gradio_api/call/{api}", json={"data": data})
    assert r.status_code == 200, r.text
    r = http.get(f"/gradio_api/call/{api}/{r.json()['event_id']}")
    events = re.findall(r"^event: (\w+)\ndata: (.*)$", r.text, re.MULTILINE)
    final = [(event, json.loads(data)) for event, data in events if event in ("complete", "error")]
    assert final, r.text
    return final[-1]


def assert_no_internals(text: str) -> None:
    for leak in INTERNALS:
        assert leak not in text, f"{leak!r} in {text!r}"


def assert_refused_with(result: tuple[str, object], *words: str) -> None:
    """A gr.Error through the API: an error event whose message holds ``words``, and nothing else."""
    event, data = result
    assert event == "error", result
    assert data.get("title") == "Cannot read this drawing", data
    assert all(w in data["error"] for w in words), data
    assert_no_internals(json.dumps(data))


def assert_still_answers(http) -> None:
    """An ordinary request after the hostile one: a real MNIST 7, uploaded, read as a 7."""
    event, data = call(http, [sketch(upload(http, "seven.png", EXAMPLE_7.read_bytes()))])
    assert event == "complete", data
    assert data[0]["label"] == "7", data


def png(width: int, height: int) -> bytes:
    """A well-formed PNG header declaring ``width`` x ``height`` RGBA pixels, with almost no data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def drawn_png(side: int = app.CANVAS) -> bytes:
    im = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    ImageDraw.Draw(im).line([(side * 0.3, side * 0.2), (side * 0.7, side * 0.8)], fill=(0, 0, 0, 255),
                            width=side // 14)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raw_get(url: str, path: str) -> tuple[int, bytes]:
    """GET ``path`` exactly as written (no client-side normalisation of ``..`` or %-escapes)."""
    host, port = urlsplit(url).hostname, urlsplit(url).port
    with socket.create_connection((host, port), timeout=60) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        response = b""
        while chunk := s.recv(65536):
            response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


# ---------------------------------------------------------------- uploads

@pytest.mark.parametrize("route", ["/gradio_api/upload", "/gradio_api/component_server"],
                         ids=["upload", "sketch-blobs"])
def test_an_upload_over_the_size_limit_is_refused(http, route):
    """Both routes that take files from a visitor (uploads, and the page's sketch blobs) stop at
    MAX_FILE_SIZE with a 413 that says so."""
    too_big = b"\0" * (2 * 1024 * 1024 + 1)
    r = http.post(route, files=[("files", ("big.png", too_big, "image/png"))],
                  data={"session_hash": opened(http, "big"), "component_id": str(pad_id(http)),
                        "fn_name": "accept_blobs"})
    assert r.status_code == 413, r.text
    assert "maximum allowed size of 2097152 bytes" in r.text
    assert_no_internals(r.text)
    assert_still_answers(http)


def test_bytes_that_are_not_an_image_are_refused_with_a_sentence(http):
    notes = upload(http, "notes.png", b"these are my private notes, not a picture\n" * 20)
    assert_refused_with(call(http, [sketch(notes)]), "not an image")
    assert_still_answers(http)


@pytest.mark.parametrize("size", [(100_000, 100_000), (5000, 4000), (1100, 1000)],
                         ids=["100000x100000", "5000x4000", "1100x1000"])
def test_an_image_declaring_too_many_pixels_is_refused_before_decoding(http, size):
    """100 000 x 100 000 is over PIL's own bomb limit, 5000 x 4000 over the CLI's (MAX_PIXELS),
    1100 x 1000 only over a sketch's (MAX_SKETCH_PIXELS: the canvas is 400x400): each header is
    checked before Gradio decodes anything."""
    assert size[0] * size[1] > MAX_SKETCH_PIXELS
    bomb = upload(http, "bomb.png", png(*size))
    assert_refused_with(call(http, [sketch(bomb)]), f"{MAX_SKETCH_PIXELS:,}-pixel limit")
    assert_still_answers(http)


def test_the_pages_own_blob_route_is_checked_the_same_way(http):
    """The page sends its images as blobs (component_server's accept_blobs), then calls with the
    blobs' id: a bomb, or bytes that are no image, sent that way are refused on arrival (before
    they take any of the blob store's room) with the same sentences as an uploaded one."""
    session = opened(http, "hostile")
    for content, words in ((png(100_000, 100_000), f"{MAX_SKETCH_PIXELS:,}-pixel limit"),
                           (png(1100, 1000), f"{MAX_SKETCH_PIXELS:,}-pixel limit"),
                           (b"my private notes" * 100, "not an image")):
        for kind in ("background", "composite"):
            r = http.post("/gradio_api/component_server", files=[("files", ("blob", content, "image/png"))],
                          data={"session_hash": session, "component_id": str(pad_id(http)), "fn_name": "accept_blobs",
                                "type": kind, "index": "null", "id": "bomb"})
            assert r.status_code == 400 and words in r.json()["detail"], r.text
    r = http.post("/gradio_api/call/predict", json={"data": [{"background": None, "layers": [], "composite": None,
                                                              "id": "bomb"}], "session_hash": session})
    text = http.get(f"/gradio_api/call/predict/{r.json()['event_id']}").text
    event, data = re.findall(r"^event: (\w+)\ndata: (.*)$", text, re.MULTILINE)[-1]
    assert_refused_with((event, json.loads(data)), "not received by this session")
    assert_still_answers(http)


def test_a_damaged_image_is_refused_with_a_sentence(http):
    data = drawn_png()
    torn = upload(http, "torn.png", data[: len(data) // 2])
    assert_refused_with(call(http, [sketch(torn)]), "damaged")
    assert_still_answers(http)


# ---------------------------------------------------------------- malformed requests

@pytest.mark.parametrize("body, says", [
    (b"{not json", "JSON decode error"),
    (b'{"data": "not a list"}', "Input should be a valid list"),
    (b'{"nope": 1}', "Field required"),
], ids=["not-json", "data-not-a-list", "no-data"])
def test_a_malformed_request_is_refused_with_a_422(http, body, says):
    r = http.post("/gradio_api/call/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422 and says in r.text, r.text
    assert_no_internals(r.text)
    assert_still_answers(http)


@pytest.mark.parametrize("value, where", [
    ({"background": 5}, "background"),
    ("not a sketch", "the value"),
    ({"background": {"path": ["a", "list"], "meta": {"_type": "gradio.FileData"}}}, "background"),
    ({"background": None, "layers": "x", "composite": None}, "layers"),
], ids=["number-for-image", "string", "list-for-path", "string-for-layers"])
def test_a_malformed_sketch_is_refused_with_a_sentence(http, value, where):
    """Well-formed JSON whose sketch is not a Sketchpad value: refused before the app's code runs,
    with a sentence that says which field is wrong, and no internals."""
    assert_refused_with(call(http, [value]), "not a Sketchpad value", f"({where}: ")
    assert_still_answers(http)


@pytest.mark.parametrize("route", ["/gradio_api/run/predict", "/gradio_api/api/predict"])
def test_the_queue_cannot_be_skipped(http, route):
    """Direct POSTs would bypass the queue's size and concurrency limits: closed (api_open=False)."""
    r = http.post(route, json={"data": [None]})
    assert r.status_code == 404 and "does not accept direct HTTP POST requests" in r.text, r.text
    assert_still_answers(http)


# ---------------------------------------------------------------- files outside the app

def secret(path: Path, size: int = 24) -> bytes:
    """A chunk of ``path``'s content that no refusal could contain by chance."""
    data = path.read_bytes()
    return data[len(data) // 3: len(data) // 3 + size]


FILE_ROUTE_ATTACKS = [
    ("/gradio_api/file=/etc/passwd", "/etc/passwd"),
    ("/gradio_api/file=%2Fetc%2Fpasswd", "/etc/passwd"),
    ("/gradio_api/file=../../../../../../etc/passwd", "/etc/passwd"),
    ("/gradio_api/file=..%2F..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd", "/etc/passwd"),
    ("/gradio_api/file=%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/etc/passwd"),
    ("/gradio_api/file=//etc/passwd", "/etc/passwd"),
    ("/gradio_api/file=/tmp/gradio/../../etc/passwd", "/etc/passwd"),
    ("/gradio_api/file=file:///etc/passwd", "/etc/passwd"),
    ("/gradio_api/file=app.py", "app.py"),
    ("/gradio_api/file=../../app.py", "app.py"),
    (f"/gradio_api/file=../{ROOT.name}/app.py", "app.py"),
    (f"/gradio_api/file={ROOT}/app.py", "app.py"),
    ("/gradio_api/file=weights/cnn.pt", "weights/cnn.pt"),
    ("/gradio_api/file=./weights/cnn.pt", "weights/cnn.pt"),
    (f"/gradio_api/file={ROOT}/weights/cnn.pt", "weights/cnn.pt"),
    (f"/gradio_api/file={ROOT}/weights/cnn.json", "weights/cnn.json"),
    ("/gradio_api/file=cnn/preprocess.py", "cnn/preprocess.py"),
]
OTHER_ROUTE_ATTACKS = [
    ("/static/../../../../../../etc/passwd", "/etc/passwd", 403, "Forbidden"),
    ("/static/..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd", "/etc/passwd", 403, "Forbidden"),
    ("/assets/../../app.py", "app.py", 403, "Forbidden"),
    ("/assets/..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd", "/etc/passwd", 403, "Forbidden"),
    ("/svelte/../../../../../../etc/passwd", "/etc/passwd", 404, "Not Found"),  # not on the allow-list
    ("/file=/etc/passwd", "/etc/passwd", 404, "Not Found"),  # Gradio 3's route, gone
]


@pytest.mark.parametrize("path, target", FILE_ROUTE_ATTACKS, ids=[a for a, _ in FILE_ROUTE_ATTACKS])
def test_the_file_route_serves_nothing_outside_the_app(http, served_app, path, target):
    status, body = raw_get(served_app, path)
    assert status == 403, body
    assert json.loads(body)["detail"].startswith("File not allowed"), body
    assert secret(ROOT / target) not in body
    assert_still_answers(http)


@pytest.mark.parametrize("path, target, status, detail", OTHER_ROUTE_ATTACKS,
                         ids=[a[0] for a in OTHER_ROUTE_ATTACKS])
def test_static_routes_serve_nothing_outside_their_folders(http, served_app, path, target, status, detail):
    got, body = raw_get(served_app, path)
    assert got == status and json.loads(body)["detail"] == detail, (got, body)
    assert secret(ROOT / target) not in body
    assert_still_answers(http)


def test_the_file_and_proxy_routes_fetch_no_url_for_a_visitor(http, served_app):
    """SSRF: no fetching of loopback or cloud-metadata URLs on a visitor's behalf."""
    for path, status, detail in [
        (f"/gradio_api/file=http://127.0.0.1:{urlsplit(served_app).port}/gradio_api/file=/etc/passwd", 403,
         "File not allowed"),
        ("/gradio_api/file=http://169.254.169.254/latest/meta-data/", 403, "File not allowed"),
        ("/gradio_api/proxy=http://169.254.169.254/latest/meta-data/", 404, "Not Found"),  # not on the allow-list
        (f"/gradio_api/proxy=http://127.0.0.1:{urlsplit(served_app).port}/config", 404, "Not Found"),
    ]:
        got, body = raw_get(served_app, path)
        assert got == status and json.loads(body)["detail"].startswith(detail), (path, got, body)
        assert secret(Path("/etc/passwd")) not in body
    assert_still_answers(http)


@pytest.mark.parametrize("image", [
    file_data("/etc/passwd"),
    file_data(str(WEIGHTS)),
    file_data("../../../../../../etc/passwd"),
    file_data("http://169.254.169.254/latest/meta-data/"),
    {"path": "x.png", "url": "http://169.254.169.254/latest/meta-data/", "meta": {"_type": "gradio.FileData"}},
], ids=["etc-passwd", "weights", "relative", "metadata-url", "metadata-url-field"])
def test_a_sketch_naming_a_file_it_did_not_upload_is_refused(http, served_app, image):
    """The API takes file paths; only files uploaded to this app are read. Gradio refuses the rest
    before any of the app's code runs, and cnn/serving.py turns its bare error into a sentence."""
    result = call(http, [sketch(image)])
    assert_refused_with(result, "names a URL" if image["path"].startswith("http") else "not uploaded to this app")
    assert_still_answers(http)


# ---------------------------------------------------------------- a bounded, fair queue

def test_a_burst_beyond_the_queue_is_told_at_once_and_the_rest_are_served(http, served_app):
    """More simultaneous requests than QUEUE['max_size']: the surplus gets an immediate 503
    saying the queue is full; every request that got in is answered correctly."""
    big = upload(http, "big.png", drawn_png(1000))  # a sketch's largest (~0.05 s of decoding each): the queue fills
    burst = 3 * app.QUEUE["max_size"]

    def join(_):
        with httpx.Client(base_url=served_app, timeout=120) as client:
            r = client.post("/gradio_api/call/predict", json={"data": [sketch(big)]})
            return r.status_code, r.json()

    with ThreadPoolExecutor(burst) as pool:
        answers = list(pool.map(join, range(burst)))
    accepted = [a["event_id"] for status, a in answers if status == 200]
    refused = [a for status, a in answers if status != 200]
    assert refused, "the queue never filled: the test proves nothing"
    assert all(status in (200, 503) for status, _ in answers), answers
    full = re.compile(rf"Queue is full\. Max size is {app.QUEUE['max_size']} and size is \d+\.")
    assert all(full.fullmatch(a["detail"]) for a in refused), refused
    assert len(accepted) >= app.QUEUE["max_size"]
    for event_id in accepted:
        text = http.get(f"/gradio_api/call/predict/{event_id}").text
        assert "event: complete" in text, text
    assert_still_answers(http)


# ---------------------------------------------------------------- --share without a network

@contextlib.contextmanager
def interruptible_children():
    """Children started here get the default SIGINT (Ctrl-C) even when this process ignores it,
    as it does when started in the background by a non-interactive shell."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # a handler: reset by exec
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def network_namespace_works() -> bool:
    """True where this process may give a child its own, empty network namespace (root, unshare, ip)."""
    if not (shutil.which("unshare") and shutil.which("nsenter") and shutil.which("ip")):
        return False
    probe = subprocess.run(["unshare", "-n", "ip", "link", "set", "lo", "up"], capture_output=True, check=False)
    return probe.returncode == 0


def test_share_without_a_network_says_so_in_one_line_and_keeps_serving(tmp_path):
    """``python app.py --share`` where no share link can be made: one clear line, the page still
    served locally, Ctrl-C ends it with status 0 and no traceback, and no flagging folder appears.

    The network is really gone where a network namespace can be made (only loopback inside);
    elsewhere every proxy variable points at a closed port, so every request Gradio makes (share
    server, tunnel download, version check) fails at once the same way."""
    port = free_port()
    closed = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"),  # no tunnel binary from an earlier run
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
           **{k: closed for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                                   "all_proxy")}}
    command = [sys.executable, str(ROOT / "app.py"), "--share", "--port", str(port)]
    isolated = network_namespace_works()
    if isolated:
        command = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *command]
    with interruptible_children():
        proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    lines: list[str] = []
    said = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("No share link"):
                said.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 180
        while not said.wait(0.5) and proc.poll() is None and time.monotonic() < deadline:
            pass
        assert said.is_set(), (lines, proc.poll())
        # The page answers meanwhile (from inside the namespace where the app lives).
        page = f"http://127.0.0.1:{port}/"
        get = [sys.executable, "-c", f"import urllib.request as u; print(u.urlopen({page!r}, timeout=60).status)"]
        if isolated:
            get = ["nsenter", f"--net=/proc/{proc.pid}/ns/net", *get]
        answered = subprocess.run(get, capture_output=True, text=True, timeout=120, env=env, check=False)
        assert answered.stdout.strip() == "200", answered
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=10)
    stderr = proc.stderr.read()
    share_lines = [line for line in lines if "share link" in line.lower()]
    expected = ("No share link could be made (gradio.live could not be reached: no internet connection, "
                f"or outgoing traffic is blocked); still serving locally at http://127.0.0.1:{port}/")
    assert share_lines == [expected], lines
    assert "Traceback" not in stderr and "Traceback" not in "\n".join(lines), stderr
    assert not [p for p in tmp_path.rglob("*") if "flagged" in p.name], "a flagging folder appeared"


# ---------------------------------------------------------------- weights, end to end

def shipped_copy(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(WEIGHTS, folder / "cnn.pt")
    shutil.copy(weights.card_path(WEIGHTS), folder / "cnn.json")
    return folder / "cnn.pt"


def break_weights(kind: str, folder: Path) -> Path:
    if kind == "missing":
        return folder / "nowhere" / "cnn.pt"
    path = shipped_copy(folder)
    data = bytearray(path.read_bytes())
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "one-byte-changed":
        data[len(data) // 2] ^= 0x01
        path.write_bytes(data)
    elif kind == "card-missing":
        weights.card_path(path).unlink()
    elif kind == "code-with-a-matching-card":
        # A pickle that would create a file when unpickled, its card updated to match: the hash
        # check passes, and torch.load(weights_only=True) must still refuse to run it.
        marker = folder / "pwned"
        path.write_bytes(b"cbuiltins\nopen\n(V" + str(marker).encode() + b"\nVw\ntR.")  # open(marker, "w")
        card = json.loads(weights.card_path(path).read_text())
        card["sha256"] = weights.sha256_file(path)
        weights.card_path(path).write_text(json.dumps(card))
    elif kind == "card-without-calibration":
        # weights and card intact (hash matches) but no temperature/threshold: no "not a digit" rule
        card = json.loads(weights.card_path(path).read_text())
        del card["confidence"]
        weights.card_path(path).write_text(json.dumps(card))
    return path


@pytest.mark.parametrize("kind", ["missing", "truncated", "one-byte-changed", "card-missing",
                                  "code-with-a-matching-card", "card-without-calibration"])
def test_the_page_refuses_to_start_on_bad_weights_with_one_line(tmp_path, kind, capsys, monkeypatch):
    """``app.main`` (what ``python app.py`` runs) on broken weights: status 1 and one line on
    stderr naming the fix, before anything is built or served. In-process: a whole ``python
    app.py`` costs ~9 s of imports; the test below runs one end to end."""
    path = break_weights(kind, tmp_path)
    monkeypatch.setattr(app, "build_demo", lambda *a: pytest.fail("the page was built on broken weights"))
    assert app.main(["--weights", str(path), "--port", str(free_port())]) == 1
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("app.py: ") and "python train.py" in lines[0], err
    assert "Running on" not in out
    assert not (tmp_path / "pwned").exists()
    if kind == "card-without-calibration":
        assert "calibration" in lines[0]  # the line names what the card lacks


def test_python_app_py_on_code_carrying_weights_exits_with_one_line_and_runs_no_code(tmp_path):
    """The same, as a process: exit status 1, one line, no traceback, no server, no code run."""
    path = break_weights("code-with-a-matching-card", tmp_path)
    proc = subprocess.run([sys.executable, str(ROOT / "app.py"), "--weights", str(path), "--port", str(free_port())],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "python train.py" in err[0] and "Traceback" not in proc.stderr, proc.stderr
    assert "Running on" not in proc.stdout  # refused before serving anything
    assert not (tmp_path / "pwned").exists()


def test_the_code_carrying_weights_would_run_code_if_unpickled_unsafely(tmp_path):
    """The test above is only meaningful if its payload is live: plain pickle does run it."""
    import pickle

    path = break_weights("code-with-a-matching-card", tmp_path)
    pickle.loads(path.read_bytes()).close()
    assert (tmp_path / "pwned").exists()


# A save of slightly changed shipped weights that pauses, so that it can be killed right there,
# at its n-th call of an os function: fsync 1 = the new weights are being written, nothing renamed
# yet; replace 2 = the new weights are in place (the commit point passed), their card not yet.
SLOW_SAVE = """
import os, sys, time
sys.path.insert(0, {root!r})
import torch
from cnn import weights
calls = []
real = getattr(os, {function!r})
def paused(*args):
    calls.append(args)
    if len(calls) == {pause_at}:
        print("paused", flush=True)
        time.sleep(600)
    return real(*args)
setattr(os, {function!r}, paused)
model = weights.load(sys.argv[1])
with torch.no_grad():
    model.out.bias.add_(1e-3)  # other bytes, the same digits
weights.save(model, sys.argv[1], {{"recipe": "killed", "confidence": weights.read_card(sys.argv[1])["confidence"]}})
"""


@pytest.mark.parametrize("function, pause_at, survivor", [("fsync", 1, "previous"), ("replace", 2, "new")],
                         ids=["while-writing-the-weights", "between-weights-and-card"])
def test_a_save_killed_midway_leaves_the_previous_weights_serving(tmp_path, function, pause_at, survivor):
    """SIGKILL in the middle of saving new weights over the shipped ones: the page must still
    load weights verified against their card and read a 7 as a 7. Killed before the commit
    point those are the previous weights; after it, the new ones with their own card."""
    path = shipped_copy(tmp_path / "w")
    before = weights.sha256_file(path)
    script = SLOW_SAVE.format(root=str(ROOT), function=function, pause_at=pause_at)
    proc = subprocess.Popen([sys.executable, "-c", script, str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout.readline().strip() == "paused", proc.stdout.read()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    model = weights.load(path)  # what app.main does first; a WeightsError here = a page that won't start
    card = weights.read_card(path)
    assert card["sha256"] == weights.sha256_file(path)
    if survivor == "previous":
        assert weights.sha256_file(path) == before
        assert card["recipe"] == weights.read_card(WEIGHTS)["recipe"]
    else:
        assert weights.sha256_file(path) != before
        assert card["recipe"] == "killed"
        assert not list(path.parent.glob(".cnn.json.*.tmp"))  # the pending card was moved into place
    result = app.predict(model, str(EXAMPLE_7))
    assert max(result, key=result.get) == "7"
