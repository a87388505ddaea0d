"""Issue 13: a public link that one script cannot take down.

One ``python app.py`` subprocess with its own ``GRADIO_TEMP_DIR`` (under tmp_path) and short
clean-up times (the real sweeper, with ``CNN_*`` times of seconds instead of minutes), attacked
with bounded requests on 127.0.0.1. Each test asserts the refusal (status, message), what it cost
the server (RSS sampled from /proc while the request runs; bytes left in the cache), that no
Ghostscript ever starts (a fake ``gs`` first on the server's PATH records any start), and that an
ordinary drawing is still read right afterwards.
"""
from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from cnn import sketch as cnn_sketch  # noqa: E402

EXAMPLE_7 = next((ROOT / "cnn" / "examples").glob("mnist_test_*_digit_7.png"))
TIMES = {"CNN_CACHE_TTL": "2", "CNN_UPLOAD_TEMP_TTL": "2", "CNN_SWEEP_EVERY": "0.4", "CNN_BODY_TIMEOUT": "2",
         "CNN_BLOB_TTL": "2"}
SETTLE = 2 + 1.5  # longest of those times, plus a few sweeps
# An EPS that draws a thick 7: read as "7" wherever Pillow hands it to Ghostscript.
EPS_7 = b"""%!PS-Adobe-3.0 EPSF-3.0
%%BoundingBox: 0 0 100 100
newpath 20 80 moveto 80 80 lineto 40 10 lineto 12 setlinewidth stroke
showpage
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fake_gs(folder: Path) -> Path:
    """A ``gs`` that records that it was started: first on the PATH given to what runs images."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / "gs-was-started"
    gs = folder / "gs"
    gs.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    gs.chmod(0o755)
    return marker


class Server:
    def __init__(self, tmp: Path, env: dict | None = None):
        self.cache_base = tmp / "cache"
        self.gs_marker = fake_gs(tmp / "bin")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / "server.log"
        env = {**os.environ, **TIMES, **(env or {}), "GRADIO_TEMP_DIR": str(self.cache_base),
               "PATH": f"{tmp / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(self.port)],
                                         cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while True:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if httpx.get(self.url + "/config", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the app did not start"
            time.sleep(0.3)
        self.http = httpx.Client(base_url=self.url, timeout=60)

    @property
    def cache(self) -> Path:
        return next(self.cache_base.glob("cnn-*"))

    def rss(self) -> int:
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", text).group(1)) * 1024

    def peak_rss_during(self, action) -> tuple[int, object]:
        """Growth of the server's RSS over its value before ``action``, sampled every 5 ms while it runs."""
        before, peak, done = self.rss(), [0], threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], self.rss())
                time.sleep(0.005)

        t = threading.Thread(target=sample)
        t.start()
        try:
            result = action()
        finally:
            done.set()
            t.join()
        return max(peak[0], self.rss()) - before, result

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig=signal.SIGTERM) -> int:
        self.http.close()
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("hostile"))
    try:
        yield s
    finally:
        if s.proc.poll() is None:
            s.stop()


# ---------------------------------------------------------------- requests

def file_data(path: str) -> dict:
    return {"path": path, "meta": {"_type": "gradio.FileData"}}


def upload(server, name: str, content: bytes) -> dict:
    r = server.http.post("/gradio_api/upload", files=[("files", (name, content, "application/octet-stream"))])
    assert r.status_code == 200, r.text
    return file_data(r.json()[0])


def sketch_of(image: dict | None, layers: list | None = None) -> dict:
    return {"background": image, "layers": [image] if layers is None else layers, "composite": image, "id": None}


def call(server, data: list, api: str = "predict", session: str | None = None) -> tuple[str, object]:
    body = {"data": data} if session is None else {"data": data, "session_hash": session}
    r = server.http.post(f"/gradio_api/call/{api}", json=body)
    assert r.status_code == 200, r.text
    r = server.http.get(f"/gradio_api/call/{api}/{r.json()['event_id']}")
    events = re.findall(r"^event: (\w+)\ndata: (.*)$", r.text, re.MULTILINE)
    final = [(event, json.loads(data)) for event, data in events if event in ("complete", "error")]
    assert final, r.text
    return final[-1]


def refused(result, *words: str) -> None:
    event, data = result
    assert event == "error", result
    assert data.get("error") and all(w in data["error"] for w in words), data
    assert "Traceback" not in json.dumps(data)


def still_reads_a_7(server) -> None:
    event, data = call(server, [sketch_of(upload(server, "seven.png", EXAMPLE_7.read_bytes()))])
    assert (event, data[0]["label"]) == ("complete", "7"), data


def png_bytes(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    out = io.BytesIO()
    im.save(out, fmt, **kw)
    return out.getvalue()


def visitor_bytes(cache: Path, keep: set[Path]) -> int:
    return sum(p.stat().st_size for p in cache.rglob("*") if p.is_file() and p not in keep)


def page_files(server) -> set[Path]:
    return {p for p in server.cache.rglob("*") if p.is_file() and time.time() - p.stat().st_mtime > 60} | {
        p for p in server.cache.rglob("*.png") if "mnist_test" in p.name}


def multipart(boundary: str, content: bytes, close: bool = True) -> bytes:
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + content + b"\r\n"
    return body + (f"--{boundary}--\r\n".encode() if close else b"")


def raw(server, head: str, body: bytes, *, send: int | None = None, read: bool = True, timeout: float = 30) -> bytes:
    """Send ``head`` and the first ``send`` bytes of ``body`` (all by default) on a raw socket."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as s:
        s.sendall(head.encode() + body[:send])
        if not read:
            return b""
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
        return answer


def post_head(path: str, ctype: str, length: int) -> str:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {length}\r\nConnection: close\r\n\r\n")


# ---------------------------------------------------------------- 1, 6: uploads that never finish

def test_incomplete_dropped_and_trickling_uploads_leave_nothing_behind(server):
    keep = page_files(server)
    before = visitor_bytes(server.cache, keep)
    big = os.urandom(1_500_000)
    boundary = uuid.uuid4().hex
    ctype = f"multipart/form-data; boundary={boundary}"
    # 1a. a body without its closing boundary: refused, not "200 []"
    for _ in range(5):
        body = multipart(boundary, big, close=False)
        answer = raw(server, post_head("/gradio_api/upload", ctype, len(body)), body)
        assert answer.startswith(b"HTTP/1.1 400") and b"no closing boundary" in answer, answer[:300]
    # 1b. the connection dropped half way
    body = multipart(boundary, big)
    for _ in range(5):
        raw(server, post_head("/gradio_api/upload", ctype, len(body)), body, send=len(body) // 2, read=False)
    # 6. a client that trickles: cut off after CNN_BODY_TIMEOUT with a 408
    t = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(post_head("/gradio_api/upload", ctype, len(body)).encode() + body[:1000])
        answer = b""
        s.settimeout(0.5)
        while not answer:  # one byte every 0.5 s until the server answers
            try:
                s.sendall(b"x")
                answer = s.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                break
            if not answer:
                break
    assert answer.startswith(b"HTTP/1.1 408"), answer[:300]
    assert time.monotonic() - t < 15
    time.sleep(SETTLE)
    assert visitor_bytes(server.cache, keep) - before < 100_000
    assert not list(server.cache.glob("tmp*"))  # no upload temp file anywhere
    still_reads_a_7(server)


# ---------------------------------------------------------------- 2: EPS and friends

def test_eps_is_refused_and_ghostscript_never_starts(server, tmp_path, monkeypatch):
    result = call(server, [sketch_of(upload(server, "seven.eps", EPS_7))])
    refused(result, "not an image in a format that can be read", "PNG, JPEG, WebP, GIF, BMP or TIFF")
    pdf = Image.new("RGB", (64, 64), "white")
    refused(call(server, [sketch_of(upload(server, "seven.pdf", png_bytes(pdf, "PDF")))]), "not an image")
    # the command line (its main, in this process), with a fake gs first on the PATH
    import contextlib

    from PIL import EpsImagePlugin

    import cnn.__main__ as cli

    marker = fake_gs(tmp_path / "bin")
    (tmp_path / "seven.eps").write_bytes(EPS_7)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", None)  # looked up again on that PATH if ever asked
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = cli.main(["predict", str(tmp_path / "seven.eps")])
    assert status == 1 and "not an image in a format that can be read" in out.getvalue(), out.getvalue()
    assert not marker.exists() and not server.gs_marker.exists(), "Ghostscript was started"
    # every event of the page, the browser-only steps included, offered the EPS as every input
    eps = upload(server, "seven.eps", EPS_7)
    for event in every_event(server):
        joined(server, event["id"], [eps] * len(event["inputs"]), {"index": [0, 0], "value": None})
    assert not server.gs_marker.exists(), "Ghostscript was started"
    still_reads_a_7(server)


def every_event(server) -> list[dict]:
    return server.http.get("/config").json()["dependencies"]


def joined(server, fn_index: int, data: list, event_data=None) -> int:
    """Join the queue with ``fn_index`` and, if it got in, read its session's stream to the end
    (so whatever the event does has been done). The join's status."""
    session = f"probe{fn_index}"
    r = server.http.post("/gradio_api/queue/join", json={"data": data, "fn_index": fn_index,
                                                         "session_hash": session, "event_data": event_data})
    if r.status_code == 200:
        with server.http.stream("GET", "/gradio_api/queue/data", params={"session_hash": session}) as stream:
            for line in stream.iter_lines():
                if "close_stream" in line or "process_completed" in line:
                    break
    return r.status_code


def test_the_eps_would_start_ghostscript_if_pil_were_asked_to_read_it(tmp_path, monkeypatch):
    """The test above is only meaningful if the payload is live: plain Pillow does start gs."""
    marker = fake_gs(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    from PIL import EpsImagePlugin

    monkeypatch.setattr(EpsImagePlugin, "gs_binary", None)  # found again on the new PATH
    monkeypatch.setattr(EpsImagePlugin, "gs_windows_binary", None)
    with pytest.raises(Exception):
        EpsImagePlugin.EpsImageFile(io.BytesIO(EPS_7)).load()  # PIL's reader, as Image.open would pick it
    assert marker.exists()


def test_no_image_open_in_the_app_can_pick_the_eps_reader(tmp_path, monkeypatch):
    """Defence in depth for every decoding path we do not call ourselves (Gradio decoding an event's
    image input): once cnn.preprocess is loaded, PIL does not know EPS at all."""
    from PIL import EpsImagePlugin, UnidentifiedImageError

    from cnn import preprocess

    marker = fake_gs(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", None)
    assert "EPS" in preprocess.EXECUTES_CODE
    Image.init()  # registering again is a no-op once done: the reader stays out
    with pytest.raises(UnidentifiedImageError):
        Image.open(io.BytesIO(EPS_7)).load()
    assert not marker.exists()


# ---------------------------------------------------------------- 3: layers

def test_a_sketch_with_many_layers_is_refused_before_decoding(server):
    blank = upload(server, "blank.png", png_bytes(Image.new("RGBA", (4096, 4096))))
    growth, result = server.peak_rss_during(lambda: call(server, [sketch_of(blank, layers=[blank] * 16)]))
    refused(result, "16 layers", "1")
    assert growth < 60e6, growth  # one decoded 4096x4096 RGBA layer alone is 64 MB
    still_reads_a_7(server)


# ---------------------------------------------------------------- 4: blobs

def pad_id(server) -> int:
    components = server.http.get("/config").json()["components"]
    return next(c["id"] for c in components if c.get("props", {}).get("elem_id") == "sketch")


def opened(server, session: str) -> str:
    """A session that has joined the queue once, as the page's load event makes one (the server
    takes blobs only from sessions it knows)."""
    event, data = call(server, [None], session=session)
    assert event == "complete", data
    return session


def blob(server, session: str, blob_id: str, kind: str, content: bytes, index: str = "null"):
    return server.http.post("/gradio_api/component_server", files=[("files", ("blob", content, "image/png"))],
                            data={"session_hash": session, "component_id": str(pad_id(server)),
                                  "fn_name": "accept_blobs", "type": kind, "index": index, "id": blob_id})


def test_blob_indices_are_checked_and_blobs_belong_to_their_session(server):
    small = png_bytes(Image.new("RGBA", (64, 64)))
    for session in ("attacker", "owner", "thief"):
        opened(server, session)
    growth, answers = server.peak_rss_during(
        lambda: [blob(server, "attacker", "a1", "layer", small, index) for index in ("50000000", "abc", "-3", "1")])
    assert [r.status_code for r in answers] == [400] * 4, [r.text for r in answers]
    assert all("index must be 0" in r.json()["detail"] for r in answers)
    assert growth < 50e6, growth
    for r in (blob(server, "attacker", "../x", "composite", small), blob(server, "attacker", "a2", "bogus", small)):
        assert r.status_code == 400, r.text
    # the owner's drawing, sent as blobs: another session naming its id gets a refusal, not the drawing
    seven = EXAMPLE_7.read_bytes()
    for kind in ("background", "composite"):
        assert blob(server, "owner", "d7", kind, seven).status_code == 200
    value = {"background": None, "layers": [], "composite": None, "id": "d7"}
    refused(call(server, [value], session="thief"), "not received by this session")
    event, data = call(server, [value], session="owner")
    assert (event, data[0]["label"]) == ("complete", "7"), data
    # a blob no event uses expires
    assert blob(server, "owner", "late", "composite", seven).status_code == 200
    time.sleep(SETTLE)
    refused(call(server, [{**value, "id": "late"}], session="owner"), "expired")
    still_reads_a_7(server)


# ---------------------------------------------------------------- 5: body size

def test_a_large_json_body_is_refused_unread(server):
    body = b'{"data": ["' + b"x" * 20_000_000 + b'"]}'
    growth, r = server.peak_rss_during(lambda: server.http.post("/gradio_api/call/predict", content=body,
                                                                headers={"content-type": "application/json"}))
    assert r.status_code == 413 and "maximum allowed size of 65536 bytes" in r.text, r.text
    assert growth < 15e6, growth
    # an upload body over the cap, even spread over several files
    files = [("files", (f"{i}.png", b"\0" * 1_000_000, "image/png")) for i in range(3)]
    r = server.http.post("/gradio_api/upload", files=files)
    assert r.status_code == 413, r.text
    still_reads_a_7(server)


# ---------------------------------------------------------------- 7: no log flooding

def test_unknown_sessions_events_and_functions_get_a_4xx_and_one_log_line(server):
    start = len(server.log_text())
    probes = [
        server.http.get("/gradio_api/queue/data", params={"session_hash": "nobody"}),
        server.http.get("/gradio_api/call/predict/no-such-event"),
        server.http.post("/gradio_api/call/v2/predict", json={}),
        server.http.post("/gradio_api/queue/join", json={"data": [None], "fn_index": 999, "session_hash": "s"}),
        server.http.post("/gradio_api/queue/join", json={"data": [None], "fn_index": "abc", "session_hash": "s"}),
        server.http.post("/gradio_api/queue/join", json={"data": [None], "fn_index": [1], "session_hash": "s"}),
    ]
    events = every_event(server)
    browser_only = [e["id"] for e in events if not e["backend_fn"]]
    clicks = [e["id"] for e in events if any(t[1] == "select" for t in e["targets"])]
    assert browser_only, "the page has browser-only steps: they must be probed"
    assert clicks == [], "a click on a map is answered in the browser (cnn/web/maps.js), never by an event"
    probes += [server.http.post("/gradio_api/queue/join", json={"data": [None] * 8, "fn_index": i, "session_hash": "s"})
               for i in browser_only]
    assert [400 <= r.status_code < 500 for r in probes] == [True] * len(probes), [(r.status_code, r.text)
                                                                                  for r in probes]
    assert all(r.json()["detail"] for r in probes)
    assert "is not an event of this app" in probes[3].json()["detail"], probes[3].text  # not a KeyError caught late
    time.sleep(0.5)
    said = server.log_text()[start:]
    assert "Traceback" not in said, said
    assert len(said.strip().splitlines()) <= len(probes), said
    still_reads_a_7(server)


# ---------------------------------------------------------------- malformed values

MALFORMED = {"list": '["a", "b"]', "NaN": "NaN", "Infinity": "Infinity", "dict": '{"x": 1}', "three": "[1, 2, 3]"}


def test_every_malformed_value_of_the_api_is_a_sentence(server):
    """Each non-picture input of /predict, /inspect and /evidence sent as a list, NaN, Infinity
    (JSON's own extensions, as a script can send them), a dict or three numbers: an error event
    whose message is a sentence, never a bare {"error": null}, and no traceback in the log."""
    start = len(server.log_text())
    seven = json.dumps(sketch_of(upload(server, "seven.png", EXAMPLE_7.read_bytes())))
    good = {"predict": ['"shipped"'], "inspect": ['"conv1"', "3", "10", "12", '"shipped"'], "evidence": ["7", '"shipped"']}
    seen = []
    for api, values in good.items():
        for i in range(len(values)):
            for kind, bad in MALFORMED.items():
                data = '{"data": [' + ", ".join([seven, *values[:i], bad, *values[i + 1:]]) + "]}"
                r = server.http.post(f"/gradio_api/call/{api}", content=data,
                                     headers={"content-type": "application/json"})
                assert r.status_code == 200, r.text
                text = server.http.get(f"/gradio_api/call/{api}/{r.json()['event_id']}").text
                events = re.findall(r"^event: (\w+)\ndata: (.*)$", text, re.MULTILINE)
                event, said = events[-1][0], json.loads(events[-1][1])
                seen.append((api, i, kind, event))
                assert event == "error" and isinstance(said, dict) and said.get("error"), (api, i, kind, text)
                assert len(said["error"]) < 300 and "Traceback" not in said["error"], said
    time.sleep(0.3)
    assert "Traceback" not in server.log_text()[start:], server.log_text()[start:][-3000:]
    assert len(seen) == 8 * len(MALFORMED)


def test_an_absurdly_long_link_is_redirected_to_the_pages_own_notice(server):
    """A page address with a 60,000-character query (Gradio's own answer: 200 up to ~64k, then
    a bare JSON 400): a redirect to a drawing the page refuses with its usual notice."""
    from cnn import link

    for size in (5_000, 60_000):  # (httpx itself refuses to send a longer address)
        r = server.http.get("/", params={link.PARAM: "A" * size}, follow_redirects=False)
        assert r.status_code == 303, (size, r.status_code, r.text[:200])
        drawing = r.headers["location"].split("=", 1)[1]
        with pytest.raises(link.LinkError, match="too long"):
            link.decode(drawing)
        assert server.http.get("/" + r.headers["location"]).status_code == 200  # the page, to show it
    ordinary = server.http.get("/", params={link.PARAM: "A" * 900}, follow_redirects=False)
    assert ordinary.status_code == 200  # a query of a real link's size is the page itself
    still_reads_a_7(server)


# ---------------------------------------------------------------- 8: exposure and the cache

def test_monitoring_and_direct_run_routes_are_closed(server):
    assert server.http.get("/monitoring/summary").status_code == 404
    assert server.http.get("/monitoring").status_code == 404
    api_names = [d.get("api_name") for d in server.http.get("/config").json()["dependencies"] if d.get("api_name")]
    assert {"predict", "inspect", "evidence"} <= set(api_names)
    for name in api_names:
        r = server.http.post(f"/gradio_api/run/{name}", json={"data": [0]})
        assert r.status_code == 404 and "does not accept direct HTTP POST" in r.text, (name, r.text)


def test_the_visitors_uploads_leave_the_cache_and_shutdown_removes_it(server, tmp_path):
    files = {p for p in server.cache.rglob("*") if p.is_file()}
    folders = {p for p in server.cache.iterdir() if p.is_dir()}
    sent = upload(server, "seven.png", EXAMPLE_7.read_bytes() + os.urandom(8))  # (bytes after IEND: a new file)
    event, data = call(server, [sketch_of(sent)], api="update")
    assert event == "complete", data
    written = [p for p in server.cache.rglob("*") if p.is_file() and p not in files]
    assert written == [Path(sent["path"])], written  # the upload only: the page's pictures are drawn by the browser
    url = f"/gradio_api/file={sent['path']}"
    assert server.http.get(url).status_code == 200
    time.sleep(SETTLE)
    assert not [p for p in written if p.exists()]
    assert {p for p in server.cache.iterdir() if p.is_dir()} <= folders  # their folders went too
    assert server.http.get(url).status_code != 200
    still_reads_a_7(server)


# ---------------------------------------------------------------- 9: right answers or a sentence

def test_float_tiff_folder_and_unknown_path_get_right_answers(server):
    seven = np.asarray(Image.open(EXAMPLE_7).convert("L").resize((280, 280)), np.float32) / 255
    tiff = png_bytes(Image.fromarray(seven, "F"), "TIFF")
    event, data = call(server, [sketch_of(upload(server, "seven.tif", tiff))])
    assert (event, data[0]["label"]) == ("complete", "7"), data
    folder = str(Path(upload(server, "seven.png", EXAMPLE_7.read_bytes())["path"]).parent)
    refused(call(server, [sketch_of(file_data(folder))]), "folder or a missing file")
    refused(call(server, [sketch_of(file_data("/etc/passwd"))]), "not uploaded to this app")
    still_reads_a_7(server)


def test_sigterm_removes_the_cache(server):
    """Last: stops the module's server."""
    call(server, [sketch_of(upload(server, "seven.png", EXAMPLE_7.read_bytes()))], api="update")
    assert server.stop(signal.SIGTERM) == 0, server.log_text()[-2000:]
    left = [p for p in server.cache_base.rglob("*") if p.is_file() or p.name.startswith("cnn-")]
    assert not left, left
    assert "Traceback" not in server.log_text()


def test_blob_store_limits_are_enforced_in_process():
    store = cnn_sketch.BlobStore()
    for i in range(50):
        store.put("s", f"id{i}", "composite", None, b"x" * 1000)
    assert len(store) == cnn_sketch.MAX_BLOB_IDS_PER_SESSION


def test_blob_store_serves_each_session_its_newest_drawing_and_clear_drops_only_what_was_read():
    """What the page's stroke event relies on (``Sketchpad.latest``): a session reads only its own
    newest drawing; reading it again gives it again (a repeated stroke event); older ones go;
    Clear drops the drawings already read but not one sent after the Clear."""
    from cnn import serving

    store = cnn_sketch.BlobStore()

    def as_session(session, fn, *args):
        token = serving._SESSION.set(session)
        try:
            return fn(*args)
        finally:
            serving._SESSION.reset(token)

    store.put("a", "a1", "composite", None, b"1")
    store.put("a", "a2", "composite", None, b"2")
    store.put("b", "b1", "composite", None, b"3")
    assert as_session("a", store.latest) == "a2" and as_session("b", store.latest) == "b1"
    assert as_session("c", store.latest) is None  # another session sees nothing
    assert as_session("a", store.get, "a1") is None  # the older drawing went when the newer was read
    assert as_session("a", store.pop, "a2").composite == b"2"
    assert as_session("a", store.latest) == "a2"  # kept for a repeated event
    as_session("a", store.forget)  # Clear: a2 was read, so it goes
    assert as_session("a", store.latest) is None and as_session("b", store.latest) == "b1"
    store.put("a", "a3", "composite", None, b"4")  # a stroke after the Clear, not read yet...
    as_session("a", store.forget)  # ...when the Clear's event runs: it stays
    assert as_session("a", store.latest) == "a3"
    # The page's event when the browser says the pad was cleared since its last stroke (the
    # Clear itself, or a stroke sent before it and arriving after): the empty page, whatever the
    # store holds, and what was read goes.
    import app

    class Pad:
        blob_storage = store

        def latest(self):
            raise AssertionError("a stale event must not read the drawing")

    as_session("a", store.pop, "a3")
    assert as_session("a", app.stroke, None, Pad(), True) == app.update(None, None) + ((0, 0), "")
    assert as_session("a", store.latest) is None and as_session("b", store.latest) == "b1"


def test_a_picture_drawn_again_replaces_its_file_and_never_rewrites_it_in_place(tmp_path, monkeypatch):
    """Two sessions drawing the same picture at once: the second save must not truncate the file
    the first is being served from (Gradio's own save rewrites it in place)."""
    from cnn import serving

    picture = serving.Picture(type="pil", format="png")
    monkeypatch.setattr(picture, "GRADIO_CACHE", str(tmp_path))
    im = Image.new("L", (64, 64), 7)
    path = picture.postprocess(im).path
    reader = open(path, "rb")  # a response being sent
    first = os.stat(path).st_ino
    assert picture.postprocess(im).path == path  # the same picture: the same URL
    assert os.stat(path).st_ino != first  # a new file swapped in...
    with reader:
        assert reader.read() == Path(path).read_bytes()  # ...and the one being read is still whole
    assert [p.name for p in Path(path).parent.iterdir()] == ["image.png"]  # no temporary left


def test_the_sweep_removes_orphaned_upload_temp_files_and_old_pictures(tmp_path, monkeypatch):
    """In process: the Guard reads every body before Gradio opens a temp file, so the server
    tests above never leave one; the sweep must still remove one (and old pictures, their folder)."""
    from types import SimpleNamespace

    from cnn import serving

    monkeypatch.setattr(serving, "CACHE", tmp_path)
    old = time.time() - 10_000
    orphan, fresh = tmp_path / "tmpk3j2h1", tmp_path / "tmpfresh"
    orphan.write_bytes(b"x" * 1000)
    fresh.write_bytes(b"y")
    (tmp_path / "hash").mkdir()
    picture = tmp_path / "hash" / "image.png"
    picture.write_bytes(b"z" * 10)
    (tmp_path / "page").mkdir()
    example = tmp_path / "page" / "example.png"
    example.write_bytes(b"e")
    (tmp_path / "new").mkdir()  # an upload's folder, its file about to be moved in
    for p in (orphan, picture, example, tmp_path / "hash"):
        os.utime(p, (old, old))
    demo = SimpleNamespace(blocks={0: SimpleNamespace(keep_in_cache={str(example)})},
                           temp_file_sets=[{str(picture), str(example), str(tmp_path / "hash")}])
    assert serving.sweep(demo) == 1010
    assert not orphan.exists() and not (tmp_path / "hash").exists()
    assert fresh.exists() and example.exists()
    assert (tmp_path / "new").is_dir(), "a folder made this instant was taken from an upload moving into it"
    assert demo.temp_file_sets == [{str(example)}], "Gradio's records of what the sweep deleted must go with it"
    assert (serving.USAGE.bytes, serving.USAGE.files) == (2, 2)  # fresh + example: what the cache holds now


def test_the_guard_itself_closes_monitoring_and_direct_run_routes():
    """Gradio refuses these too (api_open=False, queued events, enable_monitoring=False), so the
    server test above passes with any one layer gone: each layer is checked here on its own."""
    from cnn import serving

    guard = serving.Guard(None)
    for path in ("/monitoring", "/monitoring/summary", "/gradio_api/run/predict", "/gradio_api/api/predict"):
        assert guard._route(path, "POST")[1][0] == 404, path
    assert guard._route("/gradio_api/queue/join", "POST")[1] is None
    assert serving.launch_options(None, "2mb")["enable_monitoring"] is False

