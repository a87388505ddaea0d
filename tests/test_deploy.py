"""deploy/run: the page as N replicas behind nginx, with sticky sessions, tested through the proxy.

One ``deploy/run --replicas 2`` (and a short-lived ``--replicas 1`` with TLS, started at the same
time so their start-ups overlap) runs as a subprocess in its own process group. Every visitor is a
client socket bound to its own loopback address (127.0.0.2, 127.0.0.3, ...: nginx keys its limits
and its sticky hash on them); Chromium, which cannot bind, is sent to a chosen replica with the
``cnn_replica`` cookie. Nothing is sent anywhere but 127.0.0.x. A copy of deploy/run beside a stub
app.py (seconds, not a replica's start-up) shows what needs a replica to misbehave on cue, and the
generated config in front of an echo server what needs an upstream other than the app.

Replicas are told apart by the ``X-Replica`` header nginx adds (1..N, from ``$upstream_addr``).
nginx answers its own refusals (429) without it. Needs nginx (``apt-get install -y nginx``) and
Chromium at /usr/bin/chromium.

Order matters twice: the TLS deployment's replica is killed early (its restart overlaps the tests
in between) and test_ctrl_c_... checks it answers again, then stops it with SIGINT; the last test
stops the main deployment with SIGTERM, so it must stay last in this file. About 75 s here, ~20 s
of it the replicas' start-up.
"""
from __future__ import annotations

import http.server
import importlib.machinery
import importlib.util
import json
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RUN = ROOT / "deploy" / "run"
NGINX = "/usr/sbin/nginx"
START_TIMEOUT = 240  # the serving line, for replicas importing torch + gradio on a busy 2-core machine
EXAMPLE_7 = next((ROOT / "cnn" / "examples").glob("mnist_test_*_digit_7.png"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def visitor(address: str, **kw) -> httpx.Client:
    """An HTTP client whose connections come from ``address`` (127.0.0.x)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address, verify=kw.pop("verify", True)),
                        timeout=kw.pop("timeout", 30), **kw)


# ---------------------------------------------------------------- processes, from /proc

def _stat(pid: int) -> tuple[int, str, str, int] | None:
    """(ppid, state, start time, process group) of ``pid``, or None if there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # the name, in parentheses, may hold anything
    return int(fields[1]), fields[0], fields[19], int(fields[2])


def descendants(pid: int) -> dict[int, tuple[str, str]]:
    """Every process below ``pid``: {pid: (start time, command line)}."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _stat(int(entry.name))):
            children.setdefault(st[0], []).append(int(entry.name))
    found, todo = {}, list(children.get(pid, []))
    while todo:
        p = todo.pop()
        st = _stat(p)
        if st is None:
            continue
        try:
            cmd = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            cmd = ""
        found[p] = (st[2], cmd)
        todo += children.get(p, [])
    return found


def still_running(procs: dict[int, tuple[str, str]]) -> dict[int, str]:
    """Those of ``procs`` (from ``descendants``) that still run: same pid, same start time, not a zombie."""
    out = {}
    for pid, (start, cmd) in procs.items():
        st = _stat(pid)
        if st is not None and st[2] == start and st[1] != "Z":
            out[pid] = cmd
    return out


def in_groups(groups: set[int]) -> dict[int, str]:
    """Every live process (not a zombie) in one of the process groups ``groups``: {pid: command line}."""
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _stat(int(entry.name))) and st[3] in groups and st[1] != "Z":
            try:
                out[int(entry.name)] = Path(f"/proc/{entry.name}/cmdline").read_bytes().replace(b"\0", b" ").decode(
                    errors="replace").strip()
            except OSError:
                pass
    return out


# ---------------------------------------------------------------- a running deploy/run

class Deployment:
    def __init__(self, name: str, folder: Path, *args: str, run: Path = RUN):
        self.port = free_port()
        self.log = folder / f"{name}.log"
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.proc = subprocess.Popen([str(run), "--port", str(self.port), *args], cwd=run.parent.parent, text=True,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self.log.open("w"), start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()
        self.url = None

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.startswith("serving on "):
                self.ready.set()
        self.ready.set()  # EOF: it exited

    def wait(self) -> "Deployment":
        if not self.ready.wait(START_TIMEOUT) or self.proc.poll() is not None:
            pytest.fail(f"deploy/run did not start within {START_TIMEOUT} s (exit {self.proc.poll()}): "
                        f"{self.stdout()!r}\n{self.stderr()[-3000:]}")
        m = re.fullmatch(r"serving on (https?://127\.0\.0\.1:\d+) with (\d+) replicas?", self.lines[-1])
        assert m, self.lines
        self.url = m.group(1)
        return self

    def stdout(self) -> str:
        return "\n".join(self.lines)

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def folder(self) -> Path:
        m = re.search(r"nginx config in (\S+)/nginx\.conf", self.stderr())
        assert m, self.stderr()[-2000:]
        return Path(m.group(1))

    def processes(self) -> dict[int, tuple[str, str]]:
        return descendants(self.proc.pid)

    def replicas(self) -> dict[int, str]:
        return {pid: cmd for pid, (_, cmd) in self.processes().items() if " app.py " in f"{cmd} "}

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                for pid in [self.proc.pid, *self.processes()]:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                self.proc.wait(10)

    def stops_cleanly(self, signum: int, *, group: bool = False, to: str = "deploy/run", code: int = 0,
                      within: float = 20.0) -> str:
        """Sends ``signum`` to deploy/run (with ``group``, to its whole process group, as Ctrl-C in a
        terminal does; with ``to="nginx"``, to nginx's master instead) and checks that it exited with ``code`` within ``within`` seconds, that every
        process it had started was gone by then (the replicas, nginx's master and workers: a snapshot
        taken just before the signal, and anything else in their process groups) and that its temp
        folder was removed. Returns what it said meanwhile."""
        assert self.running(), "deploy/run had stopped before the signal"
        procs = self.processes()
        groups = {st[3] for pid in procs if (st := _stat(pid))} - {os.getpgid(self.proc.pid)}
        folder = self.folder()
        nginx = [cmd for _, cmd in procs.values() if cmd.startswith("nginx: ")]
        replicas = [cmd for _, cmd in procs.values() if " app.py " in f"{cmd} "]
        # each child leads its own group (a master and its workers share one); nginx has >= 1 worker
        assert len(nginx) >= 2 and replicas and len(groups) == len(replicas) + 1, procs
        assert folder.is_dir()
        said_before = len(self.stderr())
        began = time.monotonic()
        target = self.proc.pid if to == "deploy/run" else next(
            pid for pid, (_, cmd) in procs.items() if cmd.startswith("nginx: master"))
        (os.killpg if group else os.kill)(target, signum)
        while True:  # which of them still run, looked at just before each look at deploy/run itself
            left = {**still_running(procs), **in_groups(groups)}
            if self.proc.poll() is not None or time.monotonic() - began > within:
                break
            time.sleep(0.002)
        took = time.monotonic() - began
        assert self.proc.poll() == code, f"exit {self.proc.poll()} after {took:.1f} s: {self.stderr()[-2000:]}"
        print(f"deploy/run stopped {len(procs)} processes ({len(replicas)} replicas, {len(nginx)} nginx) "
              f"on {signal.Signals(signum).name} in {took:.1f} s")
        # deploy/run stopped them itself, before it exited (not a safety net after it: PR_SET_PDEATHSIG)
        assert not left, f"still running when deploy/run exited: {left}"
        assert not still_running(procs) and not in_groups(groups), (still_running(procs), in_groups(groups))
        assert not folder.exists(), f"{folder} is still there"
        said = self.stderr()[said_before:]
        assert "[alert]" not in said and "[emerg]" not in said and "Traceback" not in said, said
        return said


@pytest.fixture(scope="module")
def started(tmp_path_factory):
    """Both deployments, started at once (their start-ups overlap); stopped at the end."""
    folder = tmp_path_factory.mktemp("deploy")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
                    "-days", "1", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    deployments = {"main": Deployment("main", folder, "--replicas", "2"),
                   "tls": Deployment("tls", folder, "--replicas", "1", "--cert", str(cert), "--key", str(key))}
    yield deployments
    for d in deployments.values():
        d.stop()


@pytest.fixture(scope="module")
def served(started) -> Deployment:
    d = started["main"].wait()
    if not d.running():
        pytest.fail("the main deployment was stopped by an earlier test")
    return d


@pytest.fixture(scope="module")
def tls_served(started) -> Deployment:
    return started["tls"].wait()


@pytest.fixture(scope="module")
def keys(served) -> dict[str, str]:
    """A sticky key for each replica: {"1": "127.0.0.x", "2": "127.0.0.y"}. Each address 127.0.0.10-29
    is asked for /config without a cookie, and a client at 127.0.0.30 with that address as its
    cookie; both must reach the same replica (the page sets the cookie to the address it saw)."""
    found = {}
    for k in range(10, 30):
        address = f"127.0.0.{k}"
        with visitor(address) as by_address:
            r1 = by_address.get(f"{served.url}/config")
        with visitor("127.0.0.30", cookies={"cnn_replica": address}) as by_cookie:
            r2 = by_cookie.get(f"{served.url}/config")
        assert r1.status_code == r2.status_code == 200, (r1.status_code, r2.status_code)
        assert r1.headers["x-replica"] == r2.headers["x-replica"], (address, r1.headers, r2.headers)
        found.setdefault(r1.headers["x-replica"], address)
    assert sorted(found) == ["1", "2"], f"20 addresses all hashed to replica {found}: not spread"
    return found


# ---------------------------------------------------------------- the configuration

def load_run_module():
    loader = importlib.machinery.SourceFileLoader("deploy_run", str(RUN))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("deploy_run", loader))
    loader.exec_module(module)
    return module


def nginx_accepts(config: str, folder: Path) -> subprocess.CompletedProcess:
    (folder / "nginx.conf").write_text(config)
    return subprocess.run([NGINX, "-e", "stderr", "-t", "-c", str(folder / "nginx.conf"), "-p", f"{folder}/"],
                          capture_output=True, text=True)


def test_dry_run_prints_the_config_and_the_replica_commands_and_starts_nothing():
    out = subprocess.run([str(RUN), "--dry-run", "--replicas", "3", "--port", "8080"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    commands = re.findall(r"^# replica (\d): .*FORWARDED_ALLOW_IPS=127\.0\.0\.1 .* app\.py --host 127\.0\.0\.1 "
                          r"--port (\d+)$", text, re.MULTILINE)
    assert [n for n, _ in commands] == ["1", "2", "3"], text[:800]
    upstream = re.search(r"upstream cnn_app \{(.*?)\}", text, re.DOTALL).group(1)
    assert re.findall(r"server 127\.0\.0\.1:(\d+) max_fails=1 fail_timeout=3s;", upstream) == [p for _, p in commands]
    assert "hash $sticky_key consistent;" in upstream
    for line in ("listen 127.0.0.1:8080;", "limit_conn cnn_conn 64;", "limit_req zone=cnn_app burst=60 nodelay;",
                 "limit_req_status 429;", "limit_conn_status 429;", "client_header_timeout 10s;",
                 "client_body_timeout 20s;", "client_max_body_size 3m;", "server_tokens off;",
                 "proxy_set_header X-Forwarded-For $remote_addr;", 'proxy_set_header X-Forwarded-Host "";',
                 "proxy_buffering off;", "daemon off;"):
        assert line in text, line
    assert re.search(r"limit_req_zone \$binary_remote_addr zone=cnn_app:\w+ rate=20r/s;", text)
    assert "ssl" not in re.search(r"listen [^;]*;", text).group(0)
    # nothing was started: no app.py child lingers, and the config is one nginx accepts
    folder = Path(tempfile.mkdtemp(prefix="cnn-deploy-test-"))
    try:
        os.chmod(folder, 0o711)
        placeholder = re.search(r"-p (\S+)/$", text.splitlines()[0]).group(1)
        checked = nginx_accepts(text.replace(placeholder, str(folder)), folder)
        assert checked.returncode == 0, checked.stderr
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_taken_port_or_a_missing_nginx_is_one_line_at_once(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        for extra, said in (([], f"port {port} on 127.0.0.1 is taken"),
                            (["--nginx", str(tmp_path / "no-nginx")], "nginx is not installed")):
            began = time.monotonic()
            out = subprocess.run([str(RUN), "--replicas", "1", "--port", str(port), *extra], capture_output=True,
                                 text=True, timeout=60)
            assert out.returncode == 1, out
            lines = [line for line in out.stderr.splitlines() if line.strip()]
            assert len(lines) == 1 and said in lines[0] and lines[0].startswith("deploy/run: "), out.stderr
            assert out.stdout == "" and time.monotonic() - began < 20  # no replica was started


# ---------------------------------------------------------------- TLS, and a replica that dies

def test_tls(tls_served):
    assert tls_served.url.startswith("https://")
    with visitor("127.0.0.70", verify=False) as c:
        config = c.get(tls_served.url + "/config")
        page = c.get(tls_served.url + "/")
    assert config.status_code == 200 and config.json()["root"] == tls_served.url  # the app knows it is https
    assert page.status_code == 200 and "; Secure" in page.headers["set-cookie"]
    with visitor("127.0.0.70") as c:  # plain http on the TLS port: refused by nginx
        r = c.get(tls_served.url.replace("https://", "http://") + "/config")
    assert r.status_code == 400 and "x-replica" not in r.headers


def test_with_no_replica_to_answer_the_proxy_says_so_in_one_sentence(tls_served):
    """The TLS deployment's only replica killed: until deploy/run has it up again, every request
    is a 503 in the app's JSON with one sentence, never nginx's HTML 502 page. (It starts again
    while the tests below run; test_ctrl_c_... checks that it answers, then stops the deployment.)"""
    victim = next(iter(tls_served.replicas()))
    said_before = len(tls_served.stderr())
    os.kill(victim, signal.SIGKILL)
    answers, end = [], time.monotonic() + 10
    with visitor("127.0.0.71", verify=False) as c:
        while not answers and time.monotonic() < end:
            r = c.get(tls_served.url + "/config")
            if r.status_code != 200:  # (a request or two may still reach it before it is gone)
                answers.append(r)
            time.sleep(0.1)
    assert answers, "a dead replica's requests were all answered"
    r = answers[0]
    assert r.status_code == 503 and r.headers["content-type"] == "application/json", (r.status_code, r.text[:200])
    assert r.json() == {"detail": "The page is restarting or too busy to answer; try again in a minute."}
    end = time.monotonic() + 10
    while "started it again" not in tls_served.stderr()[said_before:] and time.monotonic() < end:
        time.sleep(0.1)
    assert re.search(r"replica 1 .* was killed by SIGKILL; started it again", tls_served.stderr()[said_before:])


# ---------------------------------------------------------------- a visitor in Chromium

from test_browser import browser  # noqa: E402,F401 - the module-scoped Chromium, as tests/test_browser.py starts it


def open_page(browser, url: str, key: str | None = None):
    """A fresh browser context (its own cookies) at ``url``; with ``key``, the sticky cookie set
    first. Returns (page, the page's response, every response's (path, status, X-Replica))."""
    from test_browser import TIMEOUT_MS

    ctx = browser.new_context(viewport={"width": 1280, "height": 1000}, locale="en-US")
    if key is not None:
        ctx.add_cookies([{"name": "cnn_replica", "value": key, "url": url}])
    pg = ctx.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    seen = []
    pg.on("response", lambda r: seen.append((r.url, r.status, r.headers.get("x-replica"))))
    response = pg.goto(url)
    pg.wait_for_selector("#sketch .pixi-target canvas")
    return pg, response, seen


def test_a_stroke_in_chromium_through_the_proxy_is_read_right(served, browser):
    from test_browser import SEVEN, draw, expect_digit, ready_to_draw

    pg, response, seen = open_page(browser, served.url + "/")
    try:
        assert response.status == 200
        ready_to_draw(pg)
        draw(pg, SEVEN)
        expect_digit(pg, "7")  # the answer, and every map picture loaded at its size
        cookie = {c["name"]: c for c in pg.context.cookies()}["cnn_replica"]
        assert cookie["value"] == "127.0.0.1" and cookie["httpOnly"] and cookie["sameSite"] == "Lax"
        answered = [(u, s, r) for u, s, r in seen if u.startswith(served.url)]
        assert len(answered) > 50 and all(s < 400 for _, s, _ in answered), [a for a in answered if a[1] >= 400]
        assert {r for _, _, r in answered} == {response.headers["x-replica"]}  # one replica, every request
    finally:
        pg.context.close()


def test_a_link_opened_on_two_replicas_gives_the_same_answer(served, browser, keys):
    from playwright.sync_api import expect

    from cnn import link
    from cnn.preprocess import prepare
    from test_browser import expect_digit, top_label

    url = f"{served.url}/?{link.PARAM}={link.encode(prepare(str(EXAMPLE_7)).image)}&{link.CELL_PARAM}=pool2-11-3-3"
    shown = {}
    for replica, key in keys.items():
        pg, response, _ = open_page(browser, url, key)
        try:
            assert response.headers["x-replica"] == replica
            expect_digit(pg, "7")
            expect(pg.locator("#inspector h3[data-layer='pool2'][data-channel='11']")).to_have_count(1)
            shown[replica] = (top_label(pg).inner_text(), pg.locator("#prediction").inner_text(),
                              pg.locator("#inspector h3").inner_text())
        finally:
            pg.context.close()
    assert shown["1"] == shown["2"], shown  # the link is the whole state: any replica reads it alike


# ---------------------------------------------------------------- sticky sessions

def test_the_page_sets_the_sticky_cookie_once(served):
    with visitor("127.0.0.2") as client:
        first = client.get(served.url + "/")
        assert first.status_code == 200
        assert first.headers.get("set-cookie") == "cnn_replica=127.0.0.2; Path=/; HttpOnly; SameSite=Lax"
        again = client.get(served.url + "/")  # the client sends the cookie back now
        assert again.status_code == 200 and "set-cookie" not in again.headers
        assert again.headers["x-replica"] == first.headers["x-replica"]


def predict_fn_index(config: dict) -> int:
    return next(d["id"] for d in config["dependencies"] if d.get("api_name") == "predict")


def session_by_hand(url: str, key: str) -> tuple[set[str], str]:
    """One API session with the sticky cookie ``key``, each request from another address (a visitor
    whose address changes): upload, queue/join, queue/data (streamed), heartbeat. Returns the
    replicas that answered and the label predicted."""
    addresses = iter(["127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.7"] * 2)
    replicas, session = set(), uuid.uuid4().hex[:12]

    def client():
        return visitor(next(addresses), base_url=url, cookies={"cnn_replica": key})

    with client() as c:
        r = c.get("/config")
        assert r.status_code == 200, r.text
        replicas.add(r.headers["x-replica"])
        fn_index = predict_fn_index(r.json())
    with client() as c:
        r = c.post("/gradio_api/upload", files=[("files", ("seven.png", EXAMPLE_7.read_bytes(), "image/png"))])
        assert r.status_code == 200, r.text
        replicas.add(r.headers["x-replica"])
        image = {"path": r.json()[0], "meta": {"_type": "gradio.FileData"}}
    with client() as c:
        r = c.post("/gradio_api/queue/join", json={"data": [{"background": None, "layers": [], "composite": image}],
                                                   "fn_index": fn_index, "session_hash": session})
        assert r.status_code == 200, r.text
        replicas.add(r.headers["x-replica"])
    label = None
    with client() as c, c.stream("GET", "/gradio_api/queue/data", params={"session_hash": session}) as r:
        assert r.status_code == 200, r.read()
        replicas.add(r.headers["x-replica"])
        for line in r.iter_lines():
            if line.startswith("data:") and '"process_completed"' in line:
                message = json.loads(line[5:])
                assert message["success"], message
                label = message["output"]["data"][0]["label"]
                break
    with client() as c, c.stream("GET", f"/gradio_api/heartbeat/{session}", timeout=5) as r:
        assert r.status_code == 200
        replicas.add(r.headers["x-replica"])
        # the app's first beat at once, the next in 15 s: it must not wait in a proxy buffer
        assert next(r.iter_lines()) == "data: ALIVE"
    return replicas, label


def test_every_request_of_a_session_reaches_the_same_replica(served, keys):
    for replica, key in keys.items():
        for _ in range(2):
            replicas, label = session_by_hand(served.url, key)
            assert replicas == {replica}, f"one session's requests reached replicas {replicas}"
            assert label == "7"


def test_gradio_client_works_through_the_proxy(served, keys):
    """gradio_client uploads, joins and streams in separate requests: sticky by address (it keeps
    no cookie of its own), and by the cookie when given one."""
    from gradio_client import Client, handle_file

    sketch = {"background": None, "layers": [], "composite": handle_file(str(EXAMPLE_7))}
    clients = [Client(served.url + "/", verbose=False, analytics_enabled=False, download_files=False)]
    clients += [Client(served.url + "/", verbose=False, analytics_enabled=False, download_files=False,
                       httpx_kwargs={"cookies": {"cnn_replica": key}}) for key in keys.values()]
    for client in clients:
        for _ in range(3):
            assert client.predict(sketch, api_name="/predict")["label"] == "7"


# ---------------------------------------------------------------- slow, idle and greedy clients

IDLE = 260  # connections of each kind: the issue's ~260 that stopped the site for everyone


def test_idle_and_half_sent_connections_are_closed_and_others_are_served(served):
    """IDLE connections that send nothing and IDLE whose request head never ends, spread over ten
    addresses (127.0.0.2-11, 52 each: under nginx's 64 per address, which counts requests, not
    connections, anyway). Another visitor is answered while they hang on; nginx closes every one
    by its 10 s header timeout (not at once: they are not refused), all within 15 s."""
    host, port = "127.0.0.1", int(served.url.rsplit(":", 1)[1])
    addresses = [f"127.0.0.{k}" for k in range(2, 12)]
    sel = selectors.DefaultSelector()
    opened = time.monotonic()
    socks = []
    closed: dict[socket.socket, float] = {}
    served_meanwhile = []
    asked = 0
    try:
        for i in range(2 * IDLE):
            s = socket.create_connection((host, port), timeout=5, source_address=(addresses[i % len(addresses)], 0))
            socks.append(s)
            if i % 2:  # a request head that never ends
                s.sendall(b"GET /config HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        print(f"{len(socks)} connections opened in {time.monotonic() - opened:.2f} s")
        while len(closed) < len(socks) and time.monotonic() - opened < 20:
            waited = time.monotonic() - opened
            if asked < 3 and waited > (1, 4, 8)[asked]:  # another visitor, while they hang on
                with visitor("127.0.0.41") as c:
                    served_meanwhile.append((round(waited, 1), c.get(served.url + "/config").status_code))
                asked += 1
            for key, _ in sel.select(timeout=0.2):
                try:
                    data = key.fileobj.recv(4096)
                except (ConnectionResetError, BrokenPipeError):
                    data = b""
                if not data:
                    closed[key.fileobj] = time.monotonic() - opened
                    sel.unregister(key.fileobj)
        times = sorted(closed.values())
        assert len(closed) == len(socks), f"{len(socks) - len(closed)} of {len(socks)} still open after 20 s"
        assert times[-1] <= 15, f"the last was closed after {times[-1]:.1f} s"
        assert times[0] >= 5, f"closed after {times[0]:.1f} s: not held to the header timeout (refused?)"
        assert [status for _, status in served_meanwhile] == [200, 200, 200], served_meanwhile
    finally:
        for s in socks:
            s.close()


def test_a_flood_from_one_address_gets_429_while_another_is_served(served):
    """The proxy's own 429s say why in one sentence, in the app's JSON ({"detail": ...})."""
    statuses, refusals = [], set()
    with visitor("127.0.0.50") as flood:
        for _ in range(300):
            r = flood.get(served.url + "/config")
            statuses.append((r.status_code, r.headers.get("x-replica")))
            if r.status_code == 429 and not r.headers.get("x-replica"):
                refusals.add((r.headers.get("content-type"), r.text))
        with visitor("127.0.0.51") as other:
            r = other.get(served.url + "/config")
        assert r.status_code == 200 and r.headers.get("x-replica"), r.status_code
    by_proxy = [s for s in statuses if s == (429, None)]  # nginx's own answer: no replica behind it
    passed = [s for s in statuses if s[1]]  # answered by a replica (200, or the app's own 429)
    print(f"flood: {len(passed)} reached a replica ({sum(s[0] == 200 for s in passed)} answered 200), "
          f"{len(by_proxy)} refused by the proxy")
    assert len(by_proxy) >= 150, f"{len(by_proxy)} of 300 refused by the proxy"
    assert len(passed) >= 50, f"only {len(passed)} passed the proxy: its burst allowance is gone"
    assert {s[0] for s in statuses} <= {200, 429}, statuses
    assert refusals == {("application/json", json.dumps({"detail": "Too many requests from your address; wait a few "
                                                                    "seconds and try again."}))}, refusals


def length(answer: bytes) -> int:
    """The Content-Length of an HTTP answer's head (0 without one)."""
    found = re.search(rb"(?im)^content-length:\s*(\d+)", answer.partition(b"\r\n\r\n")[0])
    return int(found.group(1)) if found else 0


def test_a_body_over_the_proxy_cap_is_refused_with_a_sentence_before_it_is_sent(served):
    """A request that announces more than the proxy's 3 MB is answered 413 at once, in the app's
    JSON, without nginx reading the body or a replica seeing it."""
    host, port = "127.0.0.1", int(served.url.rsplit(":", 1)[1])
    with socket.create_connection((host, port), timeout=5, source_address=("127.0.0.53", 0)) as s:
        s.sendall(b"POST /gradio_api/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; "
                  b"boundary=x\r\nContent-Length: 4000000\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < length(answer):
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head
    assert b"x-replica" not in head.lower() and b"content-type: application/json" in head.lower(), head
    assert "3 MB" in json.loads(body)["detail"], body


def test_more_than_64_requests_at_once_from_one_address_get_429(served):
    """Requests whose body never comes hold their connection inside nginx (nothing reaches a
    replica before the body is complete): the 65th and later are refused at once."""
    host, port = "127.0.0.1", int(served.url.rsplit(":", 1)[1])
    socks = []
    try:
        for _ in range(70):
            s = socket.create_connection((host, port), timeout=5, source_address=("127.0.0.52", 0))
            s.sendall(b"POST /assets/none HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n")
            socks.append(s)
        sel = selectors.DefaultSelector()
        for s in socks:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        answers, end = {}, time.monotonic() + 3
        while time.monotonic() < end:  # until 3 s, or 0.5 s after the sixth answer (the rest are held)
            for key, _ in sel.select(timeout=0.1):
                answers[key.fileobj] = key.fileobj.recv(200)
                sel.unregister(key.fileobj)
                if len(answers) == 6:
                    end = min(end, time.monotonic() + 0.5)
        refused = [a for a in answers.values() if a.startswith(b"HTTP/1.1 429")]
        assert len(refused) == 6 and len(answers) == 6, [a[:40] for a in answers.values()]
    finally:
        for s in socks:
            s.close()


# ---------------------------------------------------------------- what the visitor may not say

SPOOFED = {"X-Forwarded-For": "1.2.3.4", "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https",
           "X-Real-IP": "1.2.3.4", "X-Gradio-Server": "http://evil.example", "Forwarded": "for=1.2.3.4;host=evil.example"}


def test_client_sent_forwarded_headers_do_not_reach_the_app(served):
    with visitor("127.0.0.60") as c:
        config = c.get(served.url + "/config", headers=SPOOFED)
        page = c.get(served.url + "/", headers=SPOOFED)
    assert config.status_code == page.status_code == 200
    assert config.json()["root"] == served.url  # not evil.example, not https
    assert "evil.example" not in page.text and "evil.example" not in config.text


PAUSE = 1.5  # between an event stream's two events (the upstream below)
STREAMS = ("/gradio_api/queue/data?session_hash=s1", "/gradio_api/heartbeat/s1", "/gradio_api/call/predict/e1")


class Echo(http.server.BaseHTTPRequestHandler):
    """An upstream that answers with the headers it received; on the event-stream routes (and on
    /slow, an ordinary route) with a small event, PAUSE s of nothing, and another, the stream's end
    marked by closing the connection: the framing nginx holds in its buffers unless a route is unbuffered."""
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if re.match(r"/gradio_api/(queue/data|heartbeat/|call/)|/slow", self.path):
            self.close_connection = True
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b'data: {"msg": "estimation"}\n\n')
            time.sleep(PAUSE)
            self.wfile.write(b'data: {"msg": "process_completed"}\n\n')
            return
        body = json.dumps({"peer": self.client_address[0], "headers": dict(self.headers.items())}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def echoed():
    """deploy/run's generated config in nginx, in front of one Echo server: the proxy's own URL."""
    echo = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    echo.daemon_threads = True
    threading.Thread(target=echo.serve_forever, daemon=True).start()
    folder = Path(tempfile.mkdtemp(prefix="cnn-deploy-test-"))
    os.chmod(folder, 0o711)
    port = free_port()
    config = load_run_module().render_config(host="127.0.0.1", port=port, upstreams=[echo.server_address[1]],
                                             tmp=folder)
    assert nginx_accepts(config, folder).returncode == 0
    nginx = subprocess.Popen([NGINX, "-e", "stderr", "-c", str(folder / "nginx.conf"), "-p", f"{folder}/"],
                             stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        end = time.monotonic() + 10  # the master writes its pid file once it listens
        while not (folder / "nginx.pid").exists() or (folder / "nginx.pid").read_text().strip() != str(nginx.pid):
            assert nginx.poll() is None and time.monotonic() < end, "nginx did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        nginx.terminate()
        nginx.wait(10)
        echo.shutdown()
        shutil.rmtree(folder, ignore_errors=True)


def test_the_app_sees_the_proxy_s_forwarded_headers_only(echoed):
    """The same generated config in front of an echo server: what a replica receives is what nginx
    set, whatever the visitor sent."""
    with visitor("127.0.0.61") as c:
        for _ in range(100):
            try:
                r = c.get(f"{echoed}/gradio_api/info", headers=SPOOFED)
                break
            except httpx.TransportError:
                time.sleep(0.1)
    assert r.status_code == 200
    got = {k.lower(): v for k, v in r.json()["headers"].items()}
    assert got["x-forwarded-for"] == "127.0.0.61" and got["x-real-ip"] == "127.0.0.61"
    assert got["x-forwarded-proto"] == "http"
    assert got["host"] == echoed.removeprefix("http://")
    for name in ("x-forwarded-host", "x-gradio-server", "forwarded", "x-forwarded-port"):
        assert name not in got, (name, got)


def test_event_streams_pass_through_the_proxy_as_they_come(echoed):
    """Each event-stream route's first event reaches the visitor while its stream is still open, not
    when it ends. (The replicas' own streams cannot show this: uvicorn sends them in chunks, which
    nginx passes on at once even with proxy_buffering on. A stream ended by closing the connection
    is held in nginx's buffers until it ends unless the route is unbuffered: /slow, an ordinary
    route, shows that it is held there.)"""
    arrivals: dict[str, list] = {}

    def read(path: str) -> None:
        began, times = time.monotonic(), []
        try:
            with visitor("127.0.0.62", timeout=10) as c, c.stream("GET", echoed + path) as r:
                times.append(r.status_code)
                for line in r.iter_lines():
                    if line.startswith("data:"):
                        times.append(round(time.monotonic() - began, 2))
        except httpx.HTTPError as e:
            times.append(repr(e))
        arrivals[path] = times

    readers = [threading.Thread(target=read, args=(path,)) for path in (*STREAMS, "/slow")]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(15)
    print(f"events' arrival (status, s, s): {arrivals}")
    for path in STREAMS:
        status, first, last = arrivals[path]
        assert status == 200 and last - first >= PAUSE / 2, f"{path}: the first event came with the last: {arrivals}"
    status, first, last = arrivals["/slow"]
    assert status == 200 and last - first < PAUSE / 2, f"this upstream's stream is not one nginx buffers: {arrivals}"


# ---------------------------------------------------------------- stopping

def test_ctrl_c_stops_nginx_and_every_replica_and_removes_the_temp_folder(tls_served):
    """The TLS deployment's replica, killed above, answers again through the proxy (started again on
    its port); then SIGINT to deploy/run's process group, as Ctrl-C in its terminal sends it."""
    end = time.monotonic() + START_TIMEOUT
    while ("started it again" in tls_served.stderr() and time.monotonic() < end
           and not re.search(r"replica 1 .* ready again after \d+ s", tls_served.stderr())):
        time.sleep(0.1)
    with visitor("127.0.0.71", verify=False) as c:
        r = c.get(tls_served.url + "/config")
    assert r.status_code == 200 and r.headers["x-replica"] == "1", (r.status_code, tls_served.stderr()[-2000:])
    tls_served.stops_cleanly(signal.SIGINT, group=True)


STUB_APP = """\
import argparse, http.server, os, time
p = argparse.ArgumentParser()
p.add_argument("--host")
p.add_argument("--port", type=int)
a = p.parse_args()
began, slow = time.monotonic(), os.path.exists("starting")
class Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # as the app does while it starts (listening, not ready): 503 for 4 s
        starting = slow and time.monotonic() - began < 4
        self.send_response(503 if starting else 200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer((a.host, a.port), Ok).serve_forever()
"""


def test_a_starting_replica_gets_no_visitor_and_nginx_dying_stops_everything(tmp_path):
    """deploy/run itself (a copy, beside a stub app.py that answers at once, so this takes seconds
    instead of a replica's start-up). A replica killed and started again answers 503 for its first
    4 s, as the app does between listening and being ready: longer than nginx's fail_timeout, after
    which nginx would try it again, so its visitors must be kept off it by deploy/run until it
    answers GET /config; every request meanwhile is a 200, and they are back on it once it is ready.
    Then nginx's master is killed: everything else is stopped, the folder removed, one line, exit 1."""
    (tmp_path / "deploy").mkdir()
    for name in ("run", "nginx.conf.template"):
        shutil.copy2(RUN.parent / name, tmp_path / "deploy" / name)
    (tmp_path / "app.py").write_text(STUB_APP)
    d = Deployment("stub", tmp_path, "--replicas", "2", run=tmp_path / "deploy" / "run").wait()
    try:
        with visitor("127.0.0.72") as c:
            def ask(key: str) -> tuple[int, str]:
                c.cookies.set("cnn_replica", key)
                r = c.get(d.url + "/config")
                return r.status_code, r.headers.get("x-replica", "")

            key = next(k for k in (f"visitor-{i}" for i in range(200)) if ask(k) == (200, "2"))
            victim = next(pid for pid in d.replicas() if re.search(rf"replica 2 \(127\.0\.0\.1:\d+, pid {pid}\)",
                                                                    d.stderr()))
            log = d.stderr()
            (tmp_path / "starting").touch()
            os.kill(victim, signal.SIGKILL)
            answers, end = [], time.monotonic() + 20
            while "ready again" not in d.stderr()[len(log):] and time.monotonic() < end:
                answers.append(ask(key))
                time.sleep(0.05)
            said = d.stderr()[len(log):]
            assert re.search(r"replica 2 \(127\.0\.0\.1:\d+, pid \d+\) ready again after \d+ s", said), said
            # (the first may name both replicas: nginx tried the dead one, then the other)
            assert len(answers) > 40 and {s for s, _ in answers} == {200}, answers
            assert all(replica != "2" for _, replica in answers), answers
            end = time.monotonic() + 5
            while ask(key) != (200, "2") and time.monotonic() < end:
                time.sleep(0.05)
            assert ask(key) == (200, "2")
        said = d.stops_cleanly(signal.SIGKILL, to="nginx", code=1)
        lines = [line for line in said.splitlines() if line.strip()]
        assert lines == ["deploy/run: nginx was killed by SIGKILL; stopped everything else"], said
    finally:
        d.stop()


def test_a_replica_is_started_again_at_most_three_times_in_ten_minutes():
    """deploy/run's restart budget: a fourth death within 600 s stops the deployment instead."""
    run = load_run_module()
    budget = run.Restarts()
    assert (budget.limit, budget.window) == (3, 600.0)
    assert [budget.allow(t) for t in (0, 10, 20, 30)] == [True, True, True, False]
    assert budget.allow(605) and not budget.allow(606)  # 0 left the window; 10 and 20 have not


def test_revive_starts_a_dead_replica_again_kills_a_silent_one_and_gives_up_after_its_budget(monkeypatch):
    """deploy/run's watch loop without real replicas (each a ``sleep``, on a port nothing answers):
    a dead one is started again in its place; one that does not answer within --start-timeout of
    its restart is killed and started again; the fourth death within the window is a Failure; and
    nothing is started again once the deployment is stopping."""
    import argparse

    run = load_run_module()
    monkeypatch.setattr(run, "replica_command", lambda port, weights: ["sleep", "60"])
    monkeypatch.setattr(run, "spawn", lambda cmd, **kw: subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                                                          start_new_session=True))
    d = run.Deployment(argparse.Namespace(start_timeout=0.3, weights=None), "nginx")
    d.ports = [free_port()]
    d.spawn_replica(0)
    seen = [d.replicas[0][1]]
    try:
        def dies() -> None:
            seen[-1].kill()
            seen[-1].wait(5)
            d.revive()
            seen.append(d.replicas[0][1])
            assert seen[-1].pid != seen[-2].pid and seen[-1].poll() is None and 0 in d.restarting

        dies()  # restart 1
        time.sleep(0.5)
        d.revive()  # silent past the start timeout: killed...
        assert seen[-1].wait(5) == -signal.SIGKILL and 0 not in d.restarting
        d.revive()  # ...and started again: restart 2
        seen.append(d.replicas[0][1])
        assert seen[-1].pid != seen[-2].pid and seen[-1].poll() is None
        dies()  # restart 3
        seen[-1].kill()
        seen[-1].wait(5)
        with pytest.raises(run.Failure, match=r"replica 1 .* was killed by SIGKILL, its death number 4 within 600 s"):
            d.revive()
        d.stopping = True
        d.restarts.clear()
        d.revive()  # stopping: nothing started
        assert d.replicas[0][1] is seen[-1]
    finally:
        for proc in seen:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)


def test_sigterm_stops_both_replicas_nginx_and_its_workers_and_removes_the_temp_folder(served):
    """The main deployment, two replicas, stopped with SIGTERM: keep this test last."""
    assert len(served.replicas()) == 2
    served.stops_cleanly(signal.SIGTERM)
