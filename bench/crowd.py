"""Crowd capacity: how many people can use one shared link at once?

A crowd is K open tabs and V visitors drawing, against (a) one replica (``python app.py`` on a
free localhost port) and (b) ``deploy/run --replicas 2`` (nginx with sticky sessions in front of
two replicas), when ``deploy/run`` exists.

  tabs      K open tabs, opened one after another over --open-seconds, as a browser opens the
            page: ``GET /``, ``GET /config``, the page's load event (``queue/join`` +
            ``queue/data``; --no-load-event leaves it out), then ``GET
            /gradio_api/heartbeat/<session>`` held open and read, as Gradio's front end does
            (the server sends "ALIVE" every 15 s). A heartbeat that fails or ends is not
            reopened (Gradio's front end does not reopen it either). A tab is alive while its
            heartbeat is open and has sent something within the last 25 s.
  visitors  V of those tabs draw: one stroke every 2 s through the page's per-stroke path as
            ``bench/load.py``'s ``StrokeClient`` makes it (three ``accept_blobs`` posts to
            ``component_server``, ``queue/join`` of the pad's stroke event, ``queue/data`` until
            ``process_completed``, a GET of every picture in the answer: none since the
            browser draws the maps from one value). A stroke that is due while the
            previous one is still on its way goes out when that one is answered (the page's
            event is ``always_last``). Latency: ``queue/join`` sent -> ``process_completed``
            read. Error: anything but a completed answer (an HTTP error, "Queue is full", a
            failed event, a dropped connection, no answer within 30 s).
  addresses tabs go round-robin over 127.0.0.2 ... 127.0.0.254 (--tabs-per-address each), one
            httpx client per address (its cookies and connection pool: one browser); visitor k
            draws in tab k, so up to one visitor per address. The proxy's per-address limits
            (connections, request rate) apply to each address separately.
  ramp      with the K tabs open, V steps up through --steps, --step-seconds each (visitors'
            first strokes spread over 2 s; a warm-up of a few strokes first, not counted). A
            step meets the goal with p95 <= 2 s, 0 errors and >= 95 % of the strokes due drawn
            (a visitor's next stroke waits for its previous answer, so a saturated server shows
            as strokes not drawn); "keeping up" also asks the whole stroke (first blob posted ->
            last picture fetched, what the visitor waits) p95 <= 2 s. The ramp stops after
            --patience steps in a row miss the goal (--all-steps: never).

Per step: V, strokes drawn / due, errors (by reason), p50/p95 latency, the whole stroke's p95,
tabs alive / K, established connections into the server (and, behind the proxy, to the
replicas: /proc/net/tcp), CPU in cores of the server processes, of this load generator and of
everything else on the machine (/proc/stat: other jobs skew the figures; this says how much),
and the app processes' resident memory (peak VmRSS from /proc/<pid>/status, sampled every
second during the step). Behind the proxy, which replica answered each stroke (X-Replica).
Then, side by side, the largest V meeting the goal and keeping up for each target, and the
arithmetic for 10,000 visitors drawing and 10,000 open tabs (replicas; proxy connections
against what deploy/run writes into nginx's config).

The load generator (one process, asyncio + httpx) runs on the same machine as the server(s), so
on a small machine the figures are a floor: its CPU column says how much it took. Only
127.0.0.x is ever contacted. Exit status 0 when the run completed (whatever the figures), 1 when
the app did not start.

Usage: python bench/crowd.py [--tabs 1000] [--steps 2,4,8,12,16,24,32,48,64] [--step-seconds 20]
                             [--open-seconds 45] [--patience 2] [--no-proxy] [--dry-run]
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple
from urllib.parse import urlsplit

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import load  # noqa: E402  (bench/load.py: free_port, served, drawings, stroke_values)

ADDRESSES = [f"127.0.0.{i}" for i in range(2, 255)]  # where the crowd comes from: never anything else
STROKE_EVERY_S = 2.0  # a visitor draws a stroke every 2 s
STROKE_TIMEOUT_S = 30.0  # no answer within this: an error
P95_GOAL_MS = 2000.0  # a step "serves" V visitors when its p95 is at most this, with 0 errors
DRAWN_SHARE = 0.95  # ... and at least this share of the strokes due (one every 2 s each) were drawn
HEARTBEAT_STALE_S = 25.0  # Gradio sends ALIVE every 15 s: silent longer than this is not alive
DEPLOY_WAIT_S = 240.0  # deploy/run's "serving on" line, at most this long
CROWD = 10_000  # the arithmetic: visitors, and open tabs


# ---------------------------------------------------------------- the page, as the browser sees it

class PageIds(NamedTuple):
    stroke_fn: int  # the pad's change event (the page's per-stroke event)
    stroke_inputs: int  # how many inputs it takes (the session's state: sent as nulls)
    pad: int  # the Sketchpad's component id (accept_blobs goes to it)
    load_fns: tuple  # page-load events with a Python function (the browser joins each on open)


def page_ids(config: dict) -> PageIds:
    """What ``StrokeClient`` reads from ``/config``, plus the page's load events."""
    pad = next(c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == "sketch")
    dep = next((d for d in config["dependencies"] if [pad, "change"] in d.get("targets", [])), None)
    if dep is None:
        raise RuntimeError("the page has no stroke (change) event")
    loads = tuple(d["id"] for d in config["dependencies"]
                  if d.get("backend_fn") and any(t[1] == "load" for t in d.get("targets", [])))
    return PageIds(dep["id"], len(dep["inputs"]), pad, loads)


def browser(url: str, address: str, connections: int):
    """One visitor's browser: an httpx client whose connections all leave from ``address``."""
    import httpx

    if not (address.startswith("127.0.0.") and (urlsplit(url).hostname or "").startswith("127.0.0.")):
        raise ValueError(f"this bench talks to 127.0.0.x only, not {url} from {address}")
    transport = httpx.AsyncHTTPTransport(
        local_address=address,
        # Drop an idle connection before the server's 5 s keep-alive timeout does, as browsers do.
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections, keepalive_expiry=4),
    )
    return httpx.AsyncClient(base_url=url, transport=transport, timeout=httpx.Timeout(STROKE_TIMEOUT_S, pool=None))


class Refused(Exception):
    """Not a completed answer: why, in a few words (what was asked and what came back)."""


def refusal(what: str, r) -> Refused:
    try:
        body = r.text.strip().replace("\n", " ")[:60]
    except Exception:  # a stream not read
        body = ""
    return Refused(f"{what}: HTTP {r.status_code} {body}".rstrip())


async def checked(what: str, request):
    """Await an httpx request; an HTTP error status or a transport error becomes ``Refused``."""
    import httpx

    try:
        r = await request
    except httpx.HTTPError as e:
        raise Refused(f"{what}: {type(e).__name__}") from None
    if r.status_code >= 400:
        raise refusal(what, r)
    return r


async def run_event(http, session: str, fn_index: int, data: list, trigger_id) -> tuple[dict, float, str]:
    """``queue/join`` one event of ``session``, read ``queue/data`` until it completes: (the
    completion message, seconds from the join to it, the replica that answered: the proxy's
    X-Replica header, "" without one)."""
    import httpx

    t = time.perf_counter()
    joined = await checked("queue/join", http.post("/gradio_api/queue/join", json={
        "data": data, "fn_index": fn_index, "session_hash": session, "trigger_id": trigger_id, "event_data": None}))
    msg = {}
    try:
        async with http.stream("GET", "/gradio_api/queue/data", params={"session_hash": session}) as sse:
            if sse.status_code >= 400:
                await sse.aread()
                raise refusal("queue/data", sse)
            async for line in sse.aiter_lines():
                if not line.startswith("data:"):
                    continue
                msg = json.loads(line[5:])
                kind = msg.get("msg")
                if kind == "process_completed":
                    break
                if kind in ("queue_full", "unexpected_error", "broken_connection"):
                    raise Refused(f"queue/data: {kind} {str(msg.get('message') or '')[:60]}".rstrip())
    except httpx.HTTPError as e:
        raise Refused(f"queue/data: {type(e).__name__}") from None
    if msg.get("msg") != "process_completed":
        raise Refused("queue/data: stream ended before process_completed")
    if not msg.get("success"):
        raise Refused(f"event failed: {str((msg.get('output') or {}).get('error') or msg.get('title'))[:60]}")
    return msg, time.perf_counter() - t, joined.headers.get("x-replica", "")


async def stroke(http, page: PageIds, session: str, blobs: dict) -> tuple[float, float, int, str]:
    """One stroke, as ``StrokeClient.predict`` makes it: (join -> completion ms, whole stroke ms,
    requests made, the replica). Raises ``Refused`` for anything but a completed answer."""
    t0 = time.perf_counter()
    blob_id = uuid.uuid4().hex[:10]
    for kind, data in blobs.items():
        await checked("POST component_server", http.post(
            "/gradio_api/component_server", files=[("files", ("blob", data, "image/png"))],
            data={"session_hash": session, "component_id": str(page.pad), "fn_name": "accept_blobs", "type": kind,
                  "index": "0" if kind == "layer" else "null", "id": blob_id}))
    msg, seconds, replica = await run_event(http, session, page.stroke_fn, [None] * page.stroke_inputs, page.pad)
    requests = len(blobs) + 2
    for item in msg["output"]["data"]:  # the pictures, as the browser fetches them
        if isinstance(item, dict) and item.get("url"):
            u = urlsplit(item["url"])  # the path only: never follow a host the answer names
            await checked("GET picture", http.get(u.path + (f"?{u.query}" if u.query else "")))
            requests += 1
    return seconds * 1e3, (time.perf_counter() - t0) * 1e3, requests, replica


# ---------------------------------------------------------------- tabs

@dataclass
class Tab:
    index: int
    http: object  # its address's client
    session: str = field(default_factory=lambda: uuid.uuid4().hex[:11])
    opened: bool = False  # GET / and /config answered
    beating: bool = False  # heartbeat stream open
    last_beat: float = 0.0
    beats: int = 0
    replica: str = ""  # behind the proxy: the replica that served its page (X-Replica)
    dead: str = ""  # why its heartbeat failed or ended
    died_at: float = 0.0

    def alive(self, now: float) -> bool:
        return self.beating and now - self.last_beat <= HEARTBEAT_STALE_S


async def open_tab(tab: Tab, page: PageIds, load_event: bool, counts: collections.Counter) -> None:
    """The requests a browser makes on opening the page, then the heartbeat, held until cancelled."""
    try:
        tab.replica = (await checked("GET /", tab.http.get("/"))).headers.get("x-replica", "")
        await checked("GET /config", tab.http.get("/config"))
        tab.opened = True
        if load_event:
            for fn in page.load_fns:
                try:
                    await run_event(tab.http, tab.session, fn, [], None)
                    counts["load event: answered"] += 1
                except Refused as e:
                    counts[f"load event: {e}"] += 1
    except Refused as e:
        counts[f"open: {e}"] += 1
        tab.dead, tab.died_at = f"not opened ({e})", time.monotonic()
        return
    await heartbeat(tab)


async def heartbeat(tab: Tab) -> None:
    import httpx

    try:
        async with tab.http.stream("GET", f"/gradio_api/heartbeat/{tab.session}",
                                   timeout=httpx.Timeout(STROKE_TIMEOUT_S, read=None, pool=None)) as r:
            if r.status_code != 200:
                await r.aread()
                raise refusal("heartbeat", r)
            tab.beating, tab.last_beat = True, time.monotonic()
            async for line in r.aiter_lines():
                if line.startswith("data:"):
                    tab.last_beat, tab.beats = time.monotonic(), tab.beats + 1
        tab.dead = "heartbeat: stream ended by the server"
    except Refused as e:
        tab.dead = str(e)
    except httpx.HTTPError as e:
        tab.dead = f"heartbeat: {type(e).__name__}"
    finally:
        tab.beating = False
        tab.died_at = time.monotonic()


@dataclass
class Crowd:
    url: str
    page: PageIds
    tabs: list
    clients: dict  # address -> client
    tasks: list
    opening: collections.Counter
    per_address: int

    def client_for(self, i: int):
        return self.clients[ADDRESSES[i % len(self.clients)]]

    def alive(self) -> int:
        now = time.monotonic()
        return sum(t.alive(now) for t in self.tabs)


async def open_crowd(url: str, k: int, per_address: int, open_seconds: float, load_event: bool) -> Crowd:
    """``k`` tabs, round-robin over ceil(k / per_address) addresses, opened evenly over ``open_seconds``."""
    n = max(1, min(len(ADDRESSES), math.ceil(k / per_address)))
    clients = {a: browser(url, a, connections=min(60, per_address * 2 + 8)) for a in ADDRESSES[:n]}
    first = await checked("GET /config", clients[ADDRESSES[0]].get("/config"))
    page = page_ids(first.json())
    crowd = Crowd(url, page, [], clients, [], collections.Counter(), math.ceil(k / n))
    t0 = time.monotonic()
    for i in range(k):
        await asyncio.sleep(max(0.0, t0 + open_seconds * i / k - time.monotonic()))
        tab = Tab(i, crowd.client_for(i))
        crowd.tabs.append(tab)
        crowd.tasks.append(asyncio.create_task(open_tab(tab, page, load_event, crowd.opening)))
    await asyncio.sleep(3)  # the last ones' page loads
    return crowd


async def close_crowd(crowd: Crowd) -> None:
    for t in crowd.tasks:
        t.cancel()
    await asyncio.gather(*crowd.tasks, return_exceptions=True)
    for c in crowd.clients.values():
        await c.aclose()


# ---------------------------------------------------------------- visitors and steps

@dataclass
class Stroke:
    ms: float = float("nan")  # join -> completion
    whole_ms: float = float("nan")  # blobs -> last picture
    requests: int = 0
    error: str = ""
    replica: str = ""  # behind the proxy: which replica answered (X-Replica)


async def visitor(crowd: Crowd, tab: Tab, values: list, start: float, until: float, out: list) -> None:
    """Tab ``tab`` draws a stroke every STROKE_EVERY_S from ``start`` until ``until``."""
    due, n = start, tab.index
    while due < until:
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        s = Stroke()
        try:
            async with asyncio.timeout(STROKE_TIMEOUT_S):
                s.ms, s.whole_ms, s.requests, s.replica = await stroke(tab.http, crowd.page, tab.session,
                                                            values[n % len(values)][0])
        except TimeoutError:
            s.error = f"no answer within {STROKE_TIMEOUT_S:.0f} s"
        except Refused as e:
            s.error = str(e)
        out.append(s)
        n += 1
        due = max(due + STROKE_EVERY_S, time.monotonic())  # late: the next goes out at once


async def warm_up(crowd: Crowd, values: list, tabs: int) -> collections.Counter:
    """Two strokes from each of the first ``tabs`` tabs (different addresses, so every replica
    behind a proxy is likely to get some): the first strokes pay for lazy imports and thread
    pools. Returns the errors, counted by reason."""
    out: list[Stroke] = []
    now = time.monotonic()
    await asyncio.gather(*(visitor(crowd, crowd.tabs[k], values, now, now + STROKE_EVERY_S * 1.5, out)
                           for k in range(min(tabs, len(crowd.tabs)))))
    return collections.Counter(s.error for s in out if s.error)


class Sampler:
    """During a step: peak resident memory (VmRSS) and CPU time of the server's processes, and the
    peak of established TCP connections into the server (its front port) and, behind a proxy,
    from the proxy to the replicas (their ports)."""

    def __init__(self, target: "Target"):
        self.procs = target.pids()  # {pid: name}, once: they do not change during a step
        self.front = urlsplit(target.url).port
        self.upstream = {p for p in target.ports().values() if p != self.front}
        self.peak: dict = {}
        self.conns = {"front": 0, "upstream": 0}
        self.cpu0 = self.cpu_now()

    def cpu_now(self) -> dict:
        return {pid: cpu_seconds(pid) for pid in self.procs}

    def sample(self) -> None:
        for pid, name in self.procs.items():
            rss = vm_rss_mb(pid)
            if rss is not None:
                self.peak[(pid, name)] = max(self.peak.get((pid, name), 0.0), rss)
        ports = established()
        self.conns["front"] = max(self.conns["front"], ports[self.front])
        self.conns["upstream"] = max(self.conns["upstream"], sum(ports[p] for p in self.upstream))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    def cpu_seconds(self) -> float:
        now = self.cpu_now()
        return sum(now[p] - self.cpu0[p] for p in now if now[p] is not None and self.cpu0.get(p) is not None)


def established() -> collections.Counter:
    """Established TCP connections on this machine by local port (/proc/net/tcp): for a server's
    port, the connections it has accepted."""
    counts = collections.Counter()
    with contextlib.suppress(OSError):
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                fields = line.split(None, 4)
                if fields[3] == "01":  # ESTABLISHED
                    counts[int(fields[1].rsplit(":", 1)[1], 16)] += 1
    return counts


def vm_rss_mb(pid: int) -> float | None:
    """VmRSS of ``pid`` from /proc/<pid>/status, in MB (of 2**20 bytes)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class Step(NamedTuple):
    visitors: int
    strokes: list
    seconds: float
    alive: int
    tabs: int
    rss: dict  # (pid, name) -> peak MB
    conns: dict  # peak established connections: "front" (into the server), "upstream" (proxy -> replicas)
    server_cpu: float  # cores
    gen_cpu: float  # cores (this process)
    died: collections.Counter  # heartbeats lost during the step, by reason
    due: int  # strokes the visitors' schedule called for (one every 2 s each)
    machine_cpu: float  # cores busy on the whole machine (/proc/stat): server + this + anything else

    @property
    def other_cpu(self) -> float:
        return max(0.0, self.machine_cpu - self.server_cpu - self.gen_cpu)

    @property
    def errors(self) -> list[str]:
        return [s.error for s in self.strokes if s.error]

    def pct(self, q: float, whole: bool = False) -> float:
        ok = [s.whole_ms if whole else s.ms for s in self.strokes if not s.error]
        return float(np.percentile(ok, q)) if ok else float("nan")

    @property
    def done(self) -> int:
        return len(self.strokes) - len(self.errors)

    @property
    def serves(self) -> bool:
        """The goal: p95 (queue/join -> process_completed) <= 2 s, 0 errors, and the V visitors really
        drew a stroke every 2 s: at least 95 % of the strokes due were drawn. (A visitor's next
        stroke waits for the previous answer, as the page's always_last event does, so a saturated
        server also shows as strokes never sent, while the queue, never longer than V, keeps the
        join -> completion time bounded.)"""
        return (bool(self.strokes) and not self.errors and self.pct(95) <= P95_GOAL_MS
                and self.done >= DRAWN_SHARE * self.due)

    @property
    def keeps_up(self) -> bool:
        """Stricter: also the whole stroke (first blob posted -> last picture fetched) p95 <= 2 s."""
        return self.serves and self.pct(95, whole=True) <= P95_GOAL_MS


async def step(crowd: Crowd, visitors: int, seconds: float, values: list, target: "Target") -> Step:
    """``visitors`` tabs draw for ``seconds`` (starts spread over the first 2 s); in-flight strokes finish."""
    while len(crowd.tabs) < visitors:  # more visitors than tabs (tiny runs): they open their own
        tab = Tab(len(crowd.tabs), crowd.client_for(len(crowd.tabs)))
        crowd.tabs.append(tab)
        crowd.tasks.append(asyncio.create_task(open_tab(tab, crowd.page, True, crowd.opening)))
    sampler, stop = Sampler(target), asyncio.Event()
    sampling = asyncio.create_task(sampler.run(stop))
    out: list[Stroke] = []
    t0, c0, m0 = time.monotonic(), time.process_time(), machine_busy()
    until = t0 + seconds
    starts = [t0 + STROKE_EVERY_S * k / visitors for k in range(visitors)]
    await asyncio.gather(*(visitor(crowd, crowd.tabs[k], values, starts[k], until, out) for k in range(visitors)))
    wall = time.monotonic() - t0
    gen = (time.process_time() - c0) / wall
    machine = (machine_busy() - m0) / wall
    stop.set()
    await sampling
    died = collections.Counter(t.dead for t in crowd.tabs if t.dead and t.died_at >= t0)
    due = sum(math.ceil((until - start) / STROKE_EVERY_S) for start in starts)
    return Step(visitors, out, wall, crowd.alive(), len(crowd.tabs), sampler.peak, sampler.conns,
                sampler.cpu_seconds() / wall, gen, died, due, machine)


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all cores; /proc/stat: all but idle and iowait)."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return 0.0
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- targets

class Target(NamedTuple):
    name: str
    url: str
    pids: Callable[[], dict]  # {pid: "app" | "nginx" | ...}, the server's processes now
    replicas: int

    def ports(self) -> dict:
        """{pid: the port it was told to serve on (--port N)} for the app's processes."""
        out = {}
        for pid, name in self.pids().items():
            with contextlib.suppress(OSError, ValueError, IndexError):
                args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
                if name == "app" and "--port" in args:
                    out[pid] = int(args[args.index("--port") + 1])
        return out


def children(pid: int) -> dict:
    """Every descendant of ``pid``: {pid: short name}, the app's replicas named "app"."""
    parents = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            parents[int(p.name)] = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
    out, todo = {}, [pid]
    while todo:
        parent = todo.pop()
        for child, pp in parents.items():
            if pp == parent and child not in out:
                with contextlib.suppress(OSError):
                    cmd = (Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
                    out[child] = "app" if "app.py" in cmd else Path(cmd.split(" ")[0]).name.rstrip(":") or "?"
                todo.append(child)
    return out


@contextlib.contextmanager
def one_replica(log: Path):
    """``python app.py`` on a free localhost port (load.served: started, answered, stopped)."""
    port = load.free_port()
    with load.served([sys.executable, str(ROOT / "app.py"), "--port", str(port)], port, log) as url:
        pid = next(p for p, name in children(os.getpid()).items() if name == "app")
        yield Target("one replica", url, lambda: {pid: "app"} if Path(f"/proc/{pid}").exists() else {}, 1)


@contextlib.contextmanager
def behind_proxy(replicas: int, log: Path):
    """``deploy/run --replicas N --port P``, until its "serving on" line; SIGTERM at the end.
    Yields None (and why) when there is no deploy/run or it did not come up."""
    run = ROOT / "deploy" / "run"
    if not run.exists():
        yield None, "deploy/run does not exist (yet)"
        return
    port = load.free_port()
    command = [str(run), "--replicas", str(replicas), "--port", str(port)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
    ready = threading.Event()

    def drain():  # deploy/run's output to the log, watching for its "serving on" line
        with open(log, "ab") as out:
            for line in proc.stdout:
                out.write(line)
                out.flush()
                if b"serving on" in line.lower():
                    ready.set()

    threading.Thread(target=drain, daemon=True).start()
    try:
        deadline = time.monotonic() + DEPLOY_WAIT_S
        while not ready.is_set() and proc.poll() is None and time.monotonic() < deadline:
            ready.wait(0.5)
        if not ready.is_set():
            why = (f"exited ({proc.returncode})" if proc.poll() is not None
                   else f"no 'serving on' line within {DEPLOY_WAIT_S:.0f} s")
            tail = log.read_text(errors="replace")[-800:].strip().replace("\n", "\n    ")
            yield None, f"{' '.join(command)} {why}; its output ends:\n    {tail}"
            return
        yield Target(f"proxy, {replicas} replicas", f"http://127.0.0.1:{port}/", lambda: children(proc.pid),
                     replicas), ""
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                print(f"  deploy/run did not stop within 60 s of SIGTERM: killed (pid {proc.pid})", flush=True)
                proc.kill()
                proc.wait()
        left = [p for p in children(proc.pid)]
        if left:
            print(f"  note: processes left after deploy/run stopped: {left}", flush=True)


# ---------------------------------------------------------------- one target, end to end

def memory(rss: dict) -> str:
    apps = [mb for (_, name), mb in sorted(rss.items()) if name == "app"]
    others = collections.defaultdict(float)
    for (_, name), mb in rss.items():
        if name != "app":
            others[name] += mb
    text = f"{sum(apps):.0f}" + (f" ({'+'.join(f'{mb:.0f}' for mb in apps)})" if len(apps) > 1 else "")
    return text + "".join(f" +{name} {mb:.0f}" for name, mb in sorted(others.items()) if name == "nginx")


HEADER = (f"{'V':>4} {'strokes/due':>12} {'errors':>7} {'p50 ms':>7} {'p95 ms':>7} {'whole p95':>10} "
          f"{'tabs alive':>11} {'conns':>12} {'CPU: server':>12} {'gen':>6} {'other':>6}  server RSS MB (peak)")


def conns(c: dict) -> str:
    return f"{c['front']}" + (f"+{c['upstream']}up" if c.get("upstream") else "")


def print_step(s: Step) -> None:
    print(f"{s.visitors:>4} {f'{s.done}/{s.due}':>12} {len(s.errors):>7} {s.pct(50):>7.0f} {s.pct(95):>7.0f} "
          f"{s.pct(95, whole=True):>10.0f} {f'{s.alive}/{s.tabs}':>11} {conns(s.conns):>12} {s.server_cpu:>11.2f}c "
          f"{s.gen_cpu:>5.2f}c {s.other_cpu:>5.2f}c  {memory(s.rss)}", flush=True)
    by = collections.Counter(st.replica for st in s.strokes if st.replica and not st.error)
    if by:
        print("       strokes by replica: " + ", ".join(f"{k}: {n}" for k, n in sorted(by.items())))
    for reason, n in collections.Counter(s.errors).most_common(4):
        print(f"       {n} x {reason}")
    for reason, n in s.died.most_common(3):
        print(f"       tabs lost: {n} x {reason}")


async def ramp(target: Target, values: list, args) -> tuple[list[Step], dict]:
    """Open the crowd, step V up; returns the steps and the connections held by the open tabs alone."""
    t, c0, m0, opening = time.monotonic(), time.process_time(), machine_busy(), Sampler(target)
    crowd = await open_crowd(target.url, args.tabs, args.tabs_per_address, args.open_seconds, not args.no_load_event)
    wall = time.monotonic() - t
    server, gen = opening.cpu_seconds() / wall, (time.process_time() - c0) / wall
    other = max(0.0, (machine_busy() - m0) / wall - server - gen)
    await asyncio.sleep(5)  # the page loads' keep-alive connections expire (4-5 s): what the open tabs hold
    idle = Sampler(target)
    idle.sample()
    opened = sum(tab.opened for tab in crowd.tabs)
    print(f"  {args.tabs} tabs opened in {wall:.0f} s ({args.tabs / max(args.open_seconds, 1e-9):.0f} a second) over "
          f"{len(crowd.clients)} addresses (127.0.0.2-{ADDRESSES[len(crowd.clients) - 1]}, <= {crowd.per_address} a "
          f"piece), CPU: server {server:.2f}c, gen {gen:.2f}c, other {other:.2f}c: page loaded {opened}, heartbeat alive "
          f"{crowd.alive()}; then connections held: {conns(idle.conns)}, server RSS MB {memory(idle.peak)}",
          flush=True)
    by = collections.Counter(tab.replica for tab in crowd.tabs if tab.replica)
    if by:
        print("    tabs by replica: " + ", ".join(f"{k}: {n}" for k, n in sorted(by.items())))
    for reason, n in crowd.opening.most_common(6):
        print(f"    {n} x {reason}")
    warm = await warm_up(crowd, values, 2 * target.replicas)
    if warm:
        print(f"    warm-up strokes (not counted): " + "; ".join(f"{n} x {e}" for e, n in warm.most_common(3)))
    steps, missed = [], 0
    print(HEADER)
    try:
        for v in args.steps:
            s = await step(crowd, v, args.step_seconds, values, target)
            steps.append(s)
            print_step(s)
            missed = missed + 1 if not s.serves else 0
            if missed >= args.patience and not args.all_steps:
                print(f"  stopped: {missed} step{'s' if missed > 1 else ''} in a row missed the goal")
                break
            await asyncio.sleep(1)
    finally:
        await close_crowd(crowd)
    return steps, {**idle.conns, "tabs": len(crowd.tabs)}


class Result(NamedTuple):
    target: Target
    steps: list
    idle: dict  # connections the open tabs alone held: front, upstream, tabs

    @property
    def best(self) -> Step | None:
        """The largest V that met the goal (p95 <= 2 s, 0 errors)."""
        ok = [s for s in self.steps if s.serves]
        return max(ok, key=lambda s: s.visitors) if ok else None

    @property
    def kept_up(self) -> Step | None:
        """The largest V that also kept up (whole stroke p95 <= 2 s, >= 95 % of the strokes due)."""
        ok = [s for s in self.steps if s.keeps_up]
        return max(ok, key=lambda s: s.visitors) if ok else None

    @property
    def capped(self) -> bool:
        """The ramp ended without a step missing the goal: the largest V is a lower bound."""
        return bool(self.steps) and all(s.serves for s in self.steps)


def measure(target: Target, values: list, args) -> Result:
    print(f"\n{target.name}: {target.url}  (server processes: "
          f"{', '.join(f'{n} {p}' for p, n in sorted(target.pids().items())) or 'none found'})", flush=True)
    steps, idle = asyncio.run(ramp(target, values, args))
    return Result(target, steps, idle)


# ---------------------------------------------------------------- the answer

def deploy_settings(replicas: int) -> dict:
    """nginx's worker settings as deploy/run would write them (its --dry-run prints the config)."""
    run = ROOT / "deploy" / "run"
    if not run.exists():
        return {}
    try:
        text = subprocess.run([str(run), "--dry-run", "--replicas", str(replicas), "--port", "8080"], cwd=ROOT,
                              capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return dict(re.findall(r"^\s*(worker_\w+)\s+([^;\s]+)\s*;", text, re.M))


def summary(results: list[Result], skipped: str, args, max_connections: int) -> None:
    names = [r.target.name for r in results] + ([f"proxy, {args.replicas} replicas"] if skipped else [])
    print(f"\nlargest V (visitors drawing a stroke every {STROKE_EVERY_S:.0f} s) with p95 <= "
          f"{P95_GOAL_MS / 1e3:.0f} s, 0 errors and >= {DRAWN_SHARE:.0%} of the strokes due drawn, with {args.tabs} "
          f"tabs open:")
    print(f"{'':<25}" + "".join(f"{n:>32}" for n in names))
    rows = [
        ("largest V", lambda r: (f">= {r.best.visitors} (ramp's end)" if r.capped else f"{r.best.visitors}")
         if r.best else "none"),
        ("  per replica", lambda r: f"{r.best.visitors / r.target.replicas:g}" if r.best else "0"),
        ("  p50 / p95 ms", lambda r: f"{r.best.pct(50):.0f} / {r.best.pct(95):.0f}" if r.best else "-"),
        ("  whole stroke p95 ms", lambda r: f"{r.best.pct(95, whole=True):.0f}" if r.best else "-"),
        ("  strokes drawn / due", lambda r: f"{r.best.done}/{r.best.due}" if r.best else "-"),
        ("  tabs alive", lambda r: f"{r.best.alive}/{r.best.tabs}" if r.best else "-"),
        ("  server RSS MB (peak)", lambda r: memory(r.best.rss) if r.best else "-"),
        ("  connections (peak)", lambda r: conns(r.best.conns) if r.best else "-"),
        ("  CPU server/gen/other", lambda r: f"{r.best.server_cpu:.2f}/{r.best.gen_cpu:.2f}/{r.best.other_cpu:.2f}"
         if r.best else "-"),
        ("first V missing it", lambda r: next((f"{s.visitors}" for s in r.steps if not s.serves), "none")),
        ("  steps run", lambda r: ",".join(f"{s.visitors}{'' if s.serves else 'x'}" for s in r.steps)),
        ("largest V keeping up", lambda r: f"{r.kept_up.visitors}" if r.kept_up else "none"),
        ("  per replica", lambda r: f"{r.kept_up.visitors / r.target.replicas:g}" if r.kept_up else "0"),
    ]
    for label, cell in rows:
        print(f"{label:<25}" + "".join(f"{cell(r):>32}" for r in results) + (f"{'skipped':>32}" if skipped else ""))
    print(f"  latency: queue/join -> process_completed. 'Keeping up' also asks the whole stroke (first blob "
          f"posted -> last picture fetched: what the visitor waits) p95 <= {P95_GOAL_MS / 1e3:.0f} s. A visitor's "
          f"next stroke waits for the previous answer (always_last), so a saturated server shows as strokes not "
          f"drawn, not as a longer queue")
    if skipped:
        print(f"  proxy skipped: {skipped}")
    arithmetic(results, args, max_connections)


def arithmetic(results: list[Result], args, max_connections: int) -> None:
    """Replicas and proxy connections for CROWD visitors drawing and CROWD open tabs, from the figures."""
    print(f"\narithmetic for {CROWD:,} people at once (a replica = one python app.py process as measured here: "
          f"alone on this machine's {os.cpu_count()} cores, or 2 of them sharing those cores behind the proxy; either way "
          f"with this load generator on the same cores, so a replica of its own would serve more):")
    strokes = [s for r in results for st in r.steps for s in st.strokes if not s.error]
    per_stroke = float(np.mean([s.requests for s in strokes])) if strokes else float("nan")
    per = [(r.best.visitors / r.target.replicas, r) for r in results if r.best]
    print(f"  {CROWD:,} visitors drawing a stroke every {STROKE_EVERY_S:g} s = {CROWD / STROKE_EVERY_S:,.0f} strokes/s "
          f"= {CROWD / STROKE_EVERY_S * per_stroke:,.0f} requests/s ({per_stroke:.1f} a stroke, measured)")
    for v, r in per:
        print(f"  {r.target.name}: {r.best.visitors} visitors / {r.target.replicas} = {v:g} per replica"
              f"{' (at least: its ramp never missed)' if r.capped else ''} => {CROWD:,} / {v:g} = "
              f"{math.ceil(CROWD / v):,} replicas")
        if r.kept_up and r.kept_up is not r.best:
            k = r.kept_up.visitors / r.target.replicas
            print(f"    keeping up (whole stroke p95 <= {P95_GOAL_MS / 1e3:.0f} s): {r.kept_up.visitors} / "
                  f"{r.target.replicas} = {k:g} per replica => {math.ceil(CROWD / k):,} replicas")
    if not per:
        print(f"  no step met the goal: there is no per-replica figure to size {CROWD:,} drawing visitors with "
              f"(see the errors above)")

    # Connections: what the open tabs held (idle), and what drawing added, measured.
    proxied = next((r for r in results if r.target.replicas > 1 and r.idle.get("tabs")), None)
    base = proxied or next((r for r in results if r.idle.get("tabs")), None)
    if base is None:
        return
    def per_visitor(r: Result, kind: str) -> float:
        """Connections a drawing visitor adds: the highest (step peak - idle) / V measured (sampled
        once a second, so a floor; 1 when nothing was measured)."""
        ratios = [(s.conns[kind] - r.idle[kind]) / s.visitors for s in r.steps if s.visitors >= 4]
        return max([0.0, *ratios]) if ratios else 1.0

    tab_front = base.idle["front"] / base.idle["tabs"]
    draw_front = per_visitor(base, "front")
    front = CROWD * (tab_front + draw_front)
    print(f"  connections measured ({base.target.name}): {tab_front:.2f} per open tab ({base.idle['front']} for "
          f"{base.idle['tabs']} tabs: the heartbeat), +{draw_front:.2f} per visitor drawing (the highest "
          f"(peak - idle) / V of the steps)")
    print(f"  {CROWD:,} open tabs, all drawing: ~{front:,.0f} connections into the proxy "
          f"({CROWD:,} x {tab_front:.2f} + {CROWD:,} x {draw_front:.2f})")
    if proxied:
        tab_up = proxied.idle["upstream"] / proxied.idle["tabs"]
        draw_up = per_visitor(proxied, "upstream")
        up = CROWD * (tab_up + draw_up)
    else:
        tab_up, draw_up, up = tab_front, draw_front, front  # a streaming request holds one upstream connection
    print(f"  ... and ~{up:,.0f} from the proxy to the replicas ({tab_up:.2f} per tab + {draw_up:.2f} per visitor "
          f"drawing{', measured' if proxied else ', assumed: nginx holds one per streaming request'}): nginx needs "
          f"worker_connections x worker_processes >= {front + up:,.0f} (both kinds count), with headroom for "
          f"uneven workers, and open files per worker (worker_rlimit_nofile) >= its connections")
    settings = deploy_settings(args.replicas)
    if settings:
        workers = settings.get("worker_processes", "?")
        n = os.cpu_count() if workers == "auto" else int(workers) if workers.isdigit() else None
        have = int(settings["worker_connections"]) * n if n and settings.get("worker_connections", "").isdigit() else None
        tabs_only = CROWD * (tab_front + tab_up)
        print(f"    deploy/run writes: " + ", ".join(f"{k} {v}" for k, v in settings.items())
              + (f" = {have:,} connections on this {os.cpu_count()}-core machine: "
                 f"{'enough' if have >= tabs_only else 'NOT enough'} for {CROWD:,} open tabs ({tabs_only:,.0f}), "
                 f"{'enough' if have >= front + up else 'NOT enough'} for them all drawing ({front + up:,.0f})"
                 if have else ""))
    tabs_up = CROWD * tab_up
    print(f"  each replica answers 503 to everything once it holds {max_connections:,} connections "
          f"(uvicorn limit_concurrency, cnn/serving.py MAX_CONNECTIONS): {CROWD:,} open tabs alone need >= "
          f"{tabs_up:,.0f} / {max_connections:,} = {math.ceil(tabs_up / max_connections):,} replicas, all drawing "
          f">= {up:,.0f} / {max_connections:,} = {math.ceil(up / max_connections):,}"
          + (f"; at {math.ceil(CROWD / min(per)[0]):,} replicas (above) each holds ~{up / math.ceil(CROWD / min(per)[0]):,.0f}"
             if per else ""))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--tabs", type=int, default=1000, help="open tabs (K), each with its heartbeat")
    p.add_argument("--steps", default="2,4,8,12,16,24,32,48,64",
                   help="visitors drawing (V) at each step, comma-separated, increasing")
    p.add_argument("--step-seconds", type=float, default=20.0, help="seconds per step")
    p.add_argument("--open-seconds", type=float, default=45.0, help="the K tabs are opened evenly over this")
    p.add_argument("--tabs-per-address", type=int, default=8,
                   help="tabs per client address (127.0.0.2 ... 127.0.0.254)")
    p.add_argument("--replicas", type=int, default=2, help="replicas behind the proxy (deploy/run --replicas)")
    p.add_argument("--digits", type=int, default=20, help="distinct MNIST test digits drawn (the ten examples "
                   "without MNIST)")
    p.add_argument("--no-load-event", action="store_true", help="tabs skip the page's load event on opening")
    p.add_argument("--no-proxy", action="store_true", help="measure one replica only")
    p.add_argument("--patience", type=int, default=2,
                   help="stop the ramp after this many steps in a row miss the goal (the machine's speed drifts)")
    p.add_argument("--all-steps", action="store_true", help="never stop the ramp early")
    p.add_argument("--dry-run", action="store_true",
                   help="tiny numbers (40 tabs, steps 2,4, 8 s each, opened over 4 s): a ~1.5 minute check, "
                        "most of it starting the app (once alone, twice behind the proxy)")
    args = p.parse_args(argv)
    if args.dry_run:
        args.tabs, args.steps, args.step_seconds, args.open_seconds, args.digits = 40, "2,4", 8.0, 4.0, 4
    args.steps = [int(v) for v in str(args.steps).split(",") if v.strip()]
    if not args.steps or min(args.steps) < 1 or args.tabs < 0 or args.tabs_per_address < 1:
        p.error("--steps must be positive numbers, --tabs >= 0, --tabs-per-address >= 1")
    return args


def canvases(n: int, folder: Path) -> tuple[list, str]:
    """The blobs of ``n`` drawn digits (load.drawings: MNIST test digits on the 400x400 canvas), or
    of the page's ten examples drawn the same way when MNIST is not there."""
    from cnn.errors import CNNError

    try:
        return load.stroke_values(load.drawings(n, folder)), f"{n} MNIST test digits"
    except CNNError:
        pass
    from PIL import Image

    out = []
    for path in load.app.EXAMPLES[:n]:
        ink = 255 - np.asarray(Image.open(path).convert("L").resize((280, 280), Image.BILINEAR), np.float32)
        layer = np.zeros((load.app.CANVAS, load.app.CANVAS, 4), np.uint8)
        o = (load.app.CANVAS - 280) // 2
        layer[o:o + 280, o:o + 280, 3] = np.clip((ink - 64) * 2, 0, 255).astype(np.uint8)
        layer = Image.fromarray(layer, "RGBA")
        background = Image.new("RGBA", layer.size, (255, 255, 255, 255))
        blobs = {}
        for name, im in (("background", background), ("layer", layer),
                         ("composite", Image.alpha_composite(background, layer))):
            im.save(folder / f"{path.stem}_{name}.png")
            blobs[name] = (folder / f"{path.stem}_{name}.png").read_bytes()
        out.append((blobs, int(path.stem[-1])))
    return out, f"the page's {len(out)} examples (no MNIST: set MNIST_ROOT)"


def main(argv=None) -> int:
    args = parse_args(argv)
    import resource

    from cnn import serving

    need = args.tabs * 2 + max(args.steps) * 4 + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:  # one socket per heartbeat, plus the visitors'
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))
    started = time.monotonic()
    print(f"crowd bench{' (dry run)' if args.dry_run else ''}: {args.tabs} open tabs (opened over "
          f"{args.open_seconds:g} s, heartbeats held), then V visitors drawing a stroke every {STROKE_EVERY_S:g} s, "
          f"V = {','.join(map(str, args.steps))}, {args.step_seconds:g} s a step")
    print(f"serving: queue {load.app.QUEUE}, uvicorn limit_concurrency {serving.MAX_CONNECTIONS}; "
          f"{os.cpu_count()} CPUs. The load generator (this one process) shares the cores with the "
          f"server(s): its CPU is the 'gen' column, other jobs' the 'other' one; figures are a floor for a machine "
          f"of the server's own. 'conns': established connections into the server (+ proxy -> replicas).",
          flush=True)
    results, skipped, failed = [], "", ""
    with tempfile.TemporaryDirectory(prefix="crowd-") as folder:
        tmp = Path(folder)
        values, what = canvases(args.digits, tmp)
        print(f"drawings: {what}", flush=True)
        try:
            try:
                with one_replica(tmp / "replica.log") as target:
                    results.append(measure(target, values, args))
            except RuntimeError as e:  # the app did not start: say why, go on to the proxy
                failed = f"python app.py did not start: {str(e).strip().splitlines()[-1][:300]}"
                print(f"\none replica: {failed}", flush=True)
            refusals(tmp / "replica.log")
            if args.no_proxy:
                skipped = "--no-proxy"
            else:
                with behind_proxy(args.replicas, tmp / "deploy.log") as (target, why):
                    if target is None:
                        skipped = why
                        print(f"\nproxy, {args.replicas} replicas: skipped: {why}", flush=True)
                    else:
                        results.append(measure(target, values, args))
                if (tmp / "deploy.log").exists() and not skipped:
                    refusals(tmp / "deploy.log")
        finally:
            serving.remove_cache()  # the empty private folder importing the app made for this process
    summary(results, skipped, args, serving.MAX_CONNECTIONS)
    print(f"\nbench took {time.monotonic() - started:.0f} s")
    return 1 if failed or not results else 0


def refusals(log: Path) -> None:
    """What the server(s) logged about refusing requests (uvicorn's limit, nginx's limits)."""
    text = log.read_text(errors="replace") if log.exists() else ""
    counts = collections.Counter()
    for line in text.splitlines():
        for pattern in ("Exceeded concurrency limit", "limiting requests", "limiting connections",
                        "Queue is full", "worker_connections are not enough", "Too many open files"):
            if pattern in line:
                counts[pattern] += 1
    if counts:
        print("  the server's log: " + "; ".join(f"{n} x '{p}'" for p, n in counts.most_common()), flush=True)


if __name__ == "__main__":
    sys.exit(main())
