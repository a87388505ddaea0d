"""What protects a public link: one job, everything a visitor's requests may not do to the server.

``app.launch`` calls ``protect(demo)`` before ``demo.launch(**launch_options(...))``. Together:

  body caps      every request body is read here first, in full, against a byte cap (uploads:
                 ``max_file_size`` plus a little multipart framing; everything else, JSON:
                 ``MAX_JSON_BODY``) and a deadline (``BODY_TIMEOUT``: slow clients are cut off).
                 Gradio sees only complete, capped bodies: an upload missing its closing boundary,
                 dropped mid-way or trickling is answered here (400/408/413) before Gradio opens a
                 temp file, so none is left behind.
  routes         an allow-list (``routes``): what the page and the documented API use; every
                 other path a 404, every other method a 405; Gradio's CORS middleware taken out
                 (``same_origin_only``); a client's X-Forwarded-Host/-Proto and X-Gradio-Server
                 dropped (Gradio would write them into the page's root).
  state routes   polling an unknown session or event, joining with an unknown ``fn_index``, with
                 one the browser runs itself (a js step: Gradio would decode its inputs and then
                 fail), or a call whose body lacks its inputs: a 4xx with one escaped log line, never a traceback.
  fairness       per session: ``MAX_EVENTS_PER_SESSION`` events queued or running,
                 ``MAX_STREAMS_PER_SESSION`` streams; per client address: ``MAX_EVENTS_PER_ADDRESS``,
                 a request rate, a new-session rate (before Gradio creates a session's state) and
                 an upload budget (``Rate``); 429 with a sentence beyond.
  connections    uvicorn's protocol class, ``guarded_protocol``: a request-head deadline
                 (``HEADER_TIMEOUT``) and at most ``MAX_CONNECTIONS_PER_ADDRESS`` per address.
  cache          the app's cache is a private folder (``CACHE``, under ``$GRADIO_TEMP_DIR`` or
                 the system temp folder): every file an event writes there (the visitor's uploads
                 and the pictures any output makes) is deleted ``CACHE_TTL`` seconds after it was
                 written, its hash-named folder with it; an upload's temp file that outlives its
                 request by ``UPLOAD_TEMP_TTL`` is deleted; the folder is removed on shutdown
                 (Ctrl-C and SIGTERM), and folders of earlier runs that died are removed at start.
                 The sweep is its one owner (Gradio's ``delete_cache`` is off): it drops Gradio's
                 records of what it deletes; ``MAX_CACHE_BYTES``/``MAX_CACHE_FILES`` cap it.
  blobs          the page's Sketchpad sends its images as blobs (``accept_blobs``): see
                 ``cnn/sketch.py``, which uses ``current_session`` to tie each blob to its session.
  formats        ``IMAGE_FORMATS``: formats whose decoders run no code (no EPS/PS/PDF, which PIL
                 hands to Ghostscript); checked by ``cnn/preprocess.py`` and ``cnn/sketch.py``, and
                 PIL's EPS reader is unregistered for the whole process (``preprocess``).

Times are module constants read from the environment (``CNN_CACHE_TTL``, ``CNN_UPLOAD_TEMP_TTL``,
``CNN_SWEEP_EVERY``, ``CNN_BODY_TIMEOUT``, ``CNN_BLOB_TTL``, ``CNN_HEADER_TIMEOUT``; also
``CNN_MAX_CACHE_MB``, ``CNN_MAX_EVENTS_PER_SESSION``/``_PER_ADDRESS``, ``CNN_REQUEST_RATE``) so
tests need not wait minutes.
"""
from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ipaddress
import json
import logging
import os
import re
import secrets
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

log = logging.getLogger("cnn.serving")


def _seconds(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return value if value > 0 else default


KIB = 1024
MULTIPART_SLACK = 64 * KIB  # multipart headers and boundaries around an upload's file bytes
MAX_JSON_BODY = 64 * KIB  # a queue/join for a sketch is < 1 kB; deep or huge JSON is refused unread
MAX_PAGE_QUERY = 4 * KIB  # the page's longest link query is ~1.2 kB (cnn/link.py); see Guard._too_long_link
BODY_TIMEOUT = _seconds("CNN_BODY_TIMEOUT", 20.0)  # the whole body must arrive within this
CACHE_TTL = _seconds("CNN_CACHE_TTL", 180.0)  # a visitor's file (upload, picture) lives this long
UPLOAD_TEMP_TTL = _seconds("CNN_UPLOAD_TEMP_TTL", 60.0)  # an orphaned upload temp file, at most
SWEEP_EVERY = _seconds("CNN_SWEEP_EVERY", 10.0)  # how often the cache is swept
BLOB_TTL = _seconds("CNN_BLOB_TTL", 60.0)  # a sketch blob no event used is dropped after this
KEEP_ALIVE = 5  # s: an idle kept-alive connection is closed after this (uvicorn's timeout_keep_alive)
HEADER_TIMEOUT = _seconds("CNN_HEADER_TIMEOUT", 10.0)  # a connection must send a whole request head within this
MAX_CONNECTIONS = 4096  # open connections + in-flight requests beyond which uvicorn answers 503 (open tabs hold one each)
MAX_CONNECTIONS_PER_ADDRESS = 64  # open connections from one client address (a trusted proxy's are not counted)
MAX_EVENTS_PER_SESSION = int(_seconds("CNN_MAX_EVENTS_PER_SESSION", 3))  # queued + running events of one session
MAX_EVENTS_PER_ADDRESS = int(_seconds("CNN_MAX_EVENTS_PER_ADDRESS", 8))  # ... of every session of one address
REFUSAL_LOG_LINES = 60  # refused requests logged one by one in each window; the rest as one count
REFUSAL_LOG_WINDOW = _seconds("CNN_REFUSAL_LOG_WINDOW", 60.0)  # s
MAX_STREAMS_PER_SESSION = 2  # open queue/data streams of one session (the page holds one)
REQUEST_RATE = (_seconds("CNN_REQUEST_RATE", 40.0), 200.0)  # per address: tokens a second, burst (see ROUTES' costs)
NEW_SESSION_RATE = (1.0, 60.0)  # per address: new sessions a second, burst
UPLOAD_RATE = (16 * 1024 * KIB / CACHE_TTL, 16 * 1024 * KIB)  # per address: upload bytes a second, burst
MAX_FILES_PER_UPLOAD = 3  # a sketch's background, layer and composite
MAX_CACHE_BYTES = int(_seconds("CNN_MAX_CACHE_MB", 256) * 1024 * KIB)  # the private cache in all; uploads beyond: 503
MAX_CACHE_FILES = int(_seconds("CNN_MAX_CACHE_FILES", 5_000))  # ... and files in it (the sweep's cost grows with them)

from .preprocess import FORMAT_NAMES, IMAGE_FORMATS  # noqa: E402,F401 - the allow-list, re-exported

UPLOAD_ROUTES = ("/gradio_api/upload", "/gradio_api/component_server")
DIRECT_ROUTES = re.compile(r"^/gradio_api/(run|api)/")
READ = ("GET", "HEAD")
ROOT_HEADERS = (b"x-forwarded-host", b"x-forwarded-proto", b"x-gradio-server")  # dropped from every request


def routes(api_names) -> list[tuple[tuple[str, ...], re.Pattern, str, float]]:
    """What is served: (methods, path pattern, kind, cost in ``REQUEST_RATE`` tokens), for the
    routes the page (traced in Chromium: load, strokes, examples, clicks, links, Clear) and
    ``gradio_client`` (``/predict``, ``/inspect``, ``/evidence``, uploads) use. Every other route
    Gradio has or adds next (upload progress, deep links, recordings, dev reload, custom
    components, MCP, ...) is a 404 here, and every other method a 405 (no CORS preflight: the page
    is same-origin). ``api_names``: the events a caller may name in ``/gradio_api/call/<name>``."""
    apis = "|".join(re.escape(n) for n in api_names) or "(?!)"
    table = [
        (READ, r"/", "page", 10),
        (("GET",), r"/config/?", "config", 10),
        (("GET",), r"/gradio_api/info/?", "config", 10),
        (READ, r"/theme\.css", "asset", 1),
        (READ, r"/favicon\.ico", "asset", 0.2),
        (READ, r"/(?:assets|static)/[^\x00]+", "asset", 0.2),
        (READ, r"/gradio_api/file=[^\x00]+", "file", 1),
        (("GET",), r"/gradio_api/startup-events/?", "small", 1),
        (("GET",), r"/gradio_api/heartbeat/[A-Za-z0-9_-]{1,64}", "heartbeat", 1),
        (("GET",), r"/gradio_api/queue/data", "data", 1),
        (("POST",), r"/gradio_api/queue/join", "join", 1),
        (("POST",), r"/gradio_api/upload", "upload", 1),
        (("POST",), r"/gradio_api/component_server/?", "blob", 1),
        (("POST",), rf"/gradio_api/call/(?:{apis})/?", "call", 1),
        (("GET",), rf"/gradio_api/call/(?:{apis})/[^/]+/?", "result", 1),
    ]
    return [(methods, re.compile(pattern), kind, cost) for methods, pattern, kind, cost in table]


class Rate:
    """A token bucket per key (a client address): ``rate`` tokens a second, at most ``burst``."""

    def __init__(self, rate: float, burst: float, max_keys: int = 50_000):
        self.rate, self.burst, self.max_keys = rate, burst, max_keys
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str, n: float = 1.0) -> bool:
        now = time.monotonic()
        with self._lock:
            tokens, then = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.rate)
            allowed = tokens >= n
            self._buckets[key] = (tokens - n if allowed else tokens, now)
            if len(self._buckets) > self.max_keys:  # forget the keys whose bucket is full again
                full = [k for k, (t, at) in self._buckets.items() if t + (now - at) * self.rate >= self.burst]
                for k in full:
                    del self._buckets[k]
        return allowed


# ---------------------------------------------------------------- the private cache

def _private_cache() -> Path:
    """This process's own cache folder, set as ``GRADIO_TEMP_DIR`` before any Gradio block exists
    (each block reads it when created). Private, so it can be removed whole at shutdown without
    touching another app's files; folders left by earlier runs that died are removed here."""
    base = Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio")
    if base.name.startswith("cnn-"):  # set by a parent process that imported this module
        if base.name.split("-")[1] == str(os.getpid()):
            return base
        base = base.parent
    base.mkdir(parents=True, exist_ok=True)
    for old in base.glob("cnn-*-*"):
        pid = old.name.split("-")[1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(old, ignore_errors=True)
    folder = base / f"cnn-{os.getpid()}-{secrets.token_hex(4)}"
    folder.mkdir(mode=0o700)
    os.environ["GRADIO_TEMP_DIR"] = str(folder)
    return folder


CACHE = _private_cache()


def remove_cache() -> None:
    """The whole private cache, at shutdown."""
    shutil.rmtree(CACHE, ignore_errors=True)


class CacheUse:
    """Bytes and files in the private cache: counted by each sweep, raised by each upload the
    middleware lets through (``Guard``), so the caps hold between sweeps too."""

    def __init__(self):
        self._lock = threading.Lock()
        self.bytes = self.files = 0

    def set(self, size: int, files: int) -> None:
        with self._lock:
            self.bytes, self.files = size, files

    def add(self, size: int, files: int) -> None:
        with self._lock:
            self.bytes += size
            self.files += files

    def full(self) -> bool:
        return self.bytes >= MAX_CACHE_BYTES or self.files >= MAX_CACHE_FILES


USAGE = CacheUse()


def sweep(demo, now: float | None = None) -> int:
    """Delete what has been in the cache too long, and Gradio's records of it; returns the bytes freed.

    The one owner of the cache (Gradio's own ``delete_cache`` task is off): a file inside a
    hash-named folder (an upload moved into place, any picture an event wrote) goes ``CACHE_TTL``
    s after it was written, unless it is one of the page's own files (initial values, examples:
    Gradio's ``keep_in_cache``); the folder goes once it is empty and has not changed for a few
    seconds (an upload creates its folder just before it moves the file in). A file directly in
    the cache folder is an upload's temp file: gone ``UPLOAD_TEMP_TTL`` s after it was last
    written. Then every record Gradio keeps of a file that is gone (or of a folder) is dropped,
    and ``USAGE`` is set to what is left."""
    now = time.time() if now is None else now
    keep = set()
    for block in demo.blocks.values():
        keep.update(getattr(block, "keep_in_cache", ()))
    freed = size = files = 0
    for entry in list(_scandir(CACHE)):
        with contextlib.suppress(OSError):
            if entry.is_file(follow_symlinks=False):
                stat = entry.stat()
                if now - stat.st_mtime > UPLOAD_TEMP_TTL:
                    freed += stat.st_size
                    os.unlink(entry.path)
                else:
                    size, files = size + stat.st_size, files + 1
            elif entry.is_dir(follow_symlinks=False):
                gone, left, count = _sweep_folder(Path(entry.path), keep, now)
                freed, size, files = freed + gone, size + left, files + count
    forget_records(demo)
    USAGE.set(size, files)
    return freed


def forget_records(demo) -> None:
    """Drop from Gradio's records of the files it created every path that is no longer a file:
    the ones the sweep deleted (Gradio would keep them for good), and folders an API caller
    named as files (refused by cnn/sketch.py, but recorded first)."""
    for records in list(getattr(demo, "temp_file_sets", ())):
        for path in list(records):
            if not os.path.isfile(path):
                records.discard(path)


def _sweep_folder(folder: Path, keep: set, now: float) -> tuple[int, int, int]:
    """(bytes freed, bytes left, files left) in one hash-named folder."""
    freed = left = count = 0
    # An upload creates its folder just before it moves the file in: a folder that was new when
    # this sweep began is left for the next one, even if it is empty now.
    settled = False
    with contextlib.suppress(OSError):
        settled = now - folder.stat().st_mtime > 1.0
    for path in folder.rglob("*"):
        with contextlib.suppress(OSError):
            if not path.is_file():
                continue
            stat = path.stat()
            if str(path) not in keep and now - stat.st_mtime > CACHE_TTL:
                freed += stat.st_size
                path.unlink()
            else:
                left, count = left + stat.st_size, count + 1
    for path in sorted(folder.rglob("*"), reverse=True) + ([folder] if settled else []):  # deepest first
        with contextlib.suppress(OSError):
            path.rmdir()  # only empty folders go
    return freed, left, count


def _scandir(folder: Path):
    try:
        return os.scandir(folder)
    except OSError:
        return iter(())


def start_sweeper(demo) -> threading.Event:
    """Sweep every ``SWEEP_EVERY`` s in a daemon thread until the returned event is set."""
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(SWEEP_EVERY):
            try:
                sweep(demo)
            except Exception:  # noqa: BLE001 - the sweeper must outlive one bad file
                log.exception("cache sweep failed")
            REFUSALS_LOGGED.flush()
            for block in list(demo.blocks.values()):  # sketch blobs no event used (cnn/sketch.py)
                expire = getattr(getattr(block, "blob_storage", None), "expire", None)
                if expire:
                    expire()

    threading.Thread(target=run, name="cache-sweeper", daemon=True).start()
    return stop


# ---------------------------------------------------------------- the session of an event

_SESSION: contextvars.ContextVar[str | None] = contextvars.ContextVar("cnn_session", default=None)


def current_session() -> str | None:
    """The session hash of the event being processed (set around ``Blocks.process_api``)."""
    return _SESSION.get()


def _names_a_url(value, depth: int = 0) -> bool:
    """Whether an event's raw inputs hold a file whose path is a URL (scheme://...)."""
    if depth > 8:
        return False
    if isinstance(value, dict):
        path = value.get("path")
        if isinstance(path, str) and "://" in path[:16]:
            return True
        return any(_names_a_url(v, depth + 1) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_names_a_url(v, depth + 1) for v in value)
    return False


def _fill_optional(block_fn, inputs) -> None:
    """A call that leaves out trailing inputs which have a default (the API's optional network,
    ``app.py``) gets those defaults, as ``gradio_client`` would send them: a plain HTTP call made
    before the argument existed still works. Missing inputs without a default stay missing (Gradio's
    own refusal)."""
    fn_inputs = getattr(block_fn, "inputs", None)
    if not isinstance(inputs, list) or not fn_inputs or len(inputs) >= len(fn_inputs):
        return
    missing = fn_inputs[len(inputs):]
    if all(getattr(c, "value", None) is not None and not getattr(c, "stateful", False) for c in missing):
        inputs.extend(c.value for c in missing)


def _track_sessions(demo) -> None:
    """Wrap ``demo.process_api`` (which preprocesses an event's inputs): the session is known
    to ``cnn/sketch.py``'s blob storage, and Gradio's path refusal becomes a sentence."""
    from gradio.exceptions import InvalidPathError

    from .sketch import refusal

    original = demo.process_api

    async def process_api(*args, **kwargs):
        token = _SESSION.set(kwargs.get("session_hash"))
        try:
            inputs = kwargs["inputs"] if "inputs" in kwargs else args[1] if len(args) > 1 else []
            block_fn = kwargs["block_fn"] if "block_fn" in kwargs else args[0] if args else None
            _fill_optional(block_fn, inputs)
            if _names_a_url(inputs):  # Gradio would try to download it (and refuse with a bare error)
                raise refusal("The sketch names a URL; this app reads only images uploaded to it. Upload the "
                              "image first (POST /gradio_api/upload) and send the path that returns.")
            return await original(*args, **kwargs)
        except InvalidPathError:  # Gradio's own refusal of a path, shown as a bare error: a sentence
            raise refusal("The sketch names a file that was not uploaded to this app. Upload the image "
                          "first (POST /gradio_api/upload) and send the path that returns.") from None
        finally:
            _SESSION.reset(token)

    demo.process_api = process_api


# ---------------------------------------------------------------- the middleware

def _json(status: int, detail: str) -> tuple[int, bytes]:
    return status, json.dumps({"detail": detail}).encode()


class Guard:
    """ASGI middleware in front of Gradio's routes (see the module docstring)."""

    def __init__(self, app, demo=None, max_upload_body: int = 2 * 1024 * KIB + MULTIPART_SLACK):
        self.app = app
        self.demo = demo
        self.max_upload_body = max_upload_body
        self.requests = Rate(*REQUEST_RATE)
        self.new_sessions = Rate(*NEW_SESSION_RATE)
        self.uploads = Rate(*UPLOAD_RATE)
        self.streams: dict[str, int] = {}  # open queue/data streams per session
        # joins let through whose event may not be in Gradio's queue yet (its push is awaited):
        # counted with the queue's events, so a burst of joins cannot all pass the same check
        self.joining: dict[str, int] = {}
        self._routes = None
        self._sketch = None  # the page's Sketchpad block id, found once
        # Requests that uvicorn saw come from a trusted proxy without a client named (the proxy
        # itself, a share link's tunnel, the operator on the machine) share one address for many
        # visitors: the per-address caps do not count them (the per-session ones still do). Not
        # under ``*``: there uvicorn names every visitor from X-Forwarded-For, and a request that
        # names none is counted under its own address like any other.
        self.trusted = Trusted(os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1"), wildcard=False)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope["path"], scope["method"]
        # uvicorn is up, `after_launch` not done yet: only what Gradio's own launch asks for
        if getattr(self.demo, "cnn_starting", False) and (method, path) not in STARTING:
            return await self._answer(send, *_json(503, "The server is starting; try again in a moment."), scope)
        if method in READ and path == "/" and len(scope.get("query_string", b"")) > MAX_PAGE_QUERY:
            return await self._too_long_link(send)
        route, refused = self._route(path, method)
        if refused:
            return await self._answer(send, *refused, scope)
        kind, cost = route
        if _address(scope) not in self.trusted and not self.requests.take(_address(scope), cost):
            return await self._answer(send, *_json(429, "Too many requests from your address; wait a few "
                                                        "seconds and try again."), scope)
        # Gradio builds the page's root URL from these headers when present; a client's own would be
        # written into the page it is served. Without them it uses the Host header and the scheme,
        # which uvicorn has already taken from X-Forwarded-Proto where the peer is a trusted proxy.
        scope = dict(scope, headers=[(k, v) for k, v in scope.get("headers", ()) if k.lower() not in ROOT_HEADERS])
        refused = self._unknown(kind, scope)
        if refused:
            return await self._answer(send, *refused, scope)
        body, join = b"", {}
        if method in ("POST", "PUT", "PATCH", "DELETE"):
            body, refused = await self._read_body(scope, receive, path)
            if refused:
                return await self._answer(send, *refused, scope)
            if body is None:  # the client went away: nothing to answer
                return None
            join = _json_object(body) if kind in ("join", "call") else {}  # parsed once, used twice
            refused = self._bad_body(kind, body, join, scope)
            if refused:
                return await self._answer(send, *refused, scope)
            if kind == "upload":
                scope = dict(scope, query_string=b"")  # no upload_id: Gradio's progress registry is never emptied
                USAGE.add(len(body), _files_in(body))
            receive = _replay(body, receive)
        started = False

        async def sending(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        session = _query(scope).get("session_hash", "") if kind == "data" else None
        if session is not None:
            self.streams[session] = self.streams.get(session, 0) + 1
        joining = _joining_keys(kind, join, scope)
        for key in joining:
            self.joining[key] = self.joining.get(key, 0) + 1
        try:
            await self.app(scope, receive, sending)
        except Exception as e:  # a malformed request that Gradio's handler trips over
            if started:
                log.warning("%s %s: %s (after the response began)", method, ascii(path[:120]), type(e).__name__)
                return None
            await self._answer(send, *_json(400, f"The request could not be processed ({type(e).__name__}); "
                                                "send the inputs this endpoint takes."), scope)
        finally:
            if session is not None:
                _release(self.streams, session)
            for key in joining:
                _release(self.joining, key)

    def _route(self, path: str, method: str):
        """((kind, cost), None) for a route of the allow-list, else (None, the refusal)."""
        if self._routes is None:
            fns = getattr(self.demo, "fns", {}).values()
            self._routes = routes(sorted({fn.api_name for fn in fns if isinstance(fn.api_name, str)
                                          and getattr(fn, "api_visibility", "public") != "private"}))
        allowed = [(methods, kind, cost) for methods, pattern, kind, cost in self._routes if pattern.fullmatch(path)]
        for methods, kind, cost in allowed:
            if method in methods:
                return (kind, cost), None
        if allowed:
            return None, _json(405, f"Method {method[:10]} is not allowed here.")
        if DIRECT_ROUTES.match(path):
            return None, _json(404, "This API endpoint does not accept direct HTTP POST requests. "
                                    "Please join the queue to use this API.")
        return None, _json(404, "Not Found")

    @staticmethod
    async def _too_long_link(send) -> None:
        """The page's address with a query far longer than any link of this page (Gradio would
        answer ~64k characters with a bare JSON 400): a redirect to the page with a ``drawing``
        just over ``link.MAX_CHARS``, which the page refuses with its usual notice."""
        from .link import MAX_CHARS, PARAM

        location = f"?{PARAM}={'A' * (MAX_CHARS + 1)}".encode()  # relative: keeps a proxy's path prefix
        await send({"type": "http.response.start", "status": 303,
                    "headers": [(b"location", location), (b"content-length", b"0"), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": b""})

    # -- what is refused
    def _queue(self):
        return getattr(self.demo, "_queue", None)

    def _unknown(self, kind: str, scope):
        queue = self._queue()
        if queue is None:
            return None
        if kind == "data":
            session = _query(scope).get("session_hash", "")
            if session not in queue.pending_messages_per_session:
                return _json(404, "Unknown session: join the queue first (POST /gradio_api/queue/join).")
            if self.streams.get(session, 0) >= MAX_STREAMS_PER_SESSION:
                return _json(429, f"This session already has {MAX_STREAMS_PER_SESSION} open streams; "
                                  "read the one you have.")
        elif kind == "result":
            event_id = scope["path"].rstrip("/").rsplit("/", 1)[1]
            if event_id not in queue.event_ids_to_events and not any(
                    event_id in ids for ids in list(queue.pending_event_ids_session.values())):
                return _json(404, "Unknown event id: POST /gradio_api/call/<api_name> first, then read its "
                                  "event_id once.")
        return None

    def _bad_body(self, kind: str, body: bytes, join: dict, scope):
        """``join``: a join's or a call's JSON object ({} if it is none: Gradio answers it)."""
        if kind in ("upload", "blob"):
            boundary = _boundary(scope)
            if boundary is not None and not body.rstrip(b"\r\n").endswith(b"--" + boundary + b"--"):
                return _json(400, "The upload is incomplete: the multipart body has no closing boundary.")
        if kind == "blob":
            return self._bad_blob(body, scope)
        if kind == "join" and self.demo is not None:
            return self._bad_join(join, scope)
        if kind == "call":
            return self._over_cap(None, _address(scope))
        if kind == "upload":
            return self._bad_upload(body, scope)
        return None

    def _bad_upload(self, body: bytes, scope):
        if _files_in(body) > MAX_FILES_PER_UPLOAD:
            return _json(400, f"At most {MAX_FILES_PER_UPLOAD} files in one upload (a sketch's background, "
                              "layer and composite).")
        if USAGE.full():
            return _json(503, "The server's upload space is full; try again in a few minutes.")
        address = _address(scope)
        if address not in self.trusted and not self.uploads.take(address, len(body)):
            return _json(429, f"Too many uploads from your address (at most {UPLOAD_RATE[1] // (1024 * KIB):g} MB "
                              f"every {CACHE_TTL:g} s); try again later.")
        return None

    def _bad_blob(self, body: bytes, scope):
        """A sketch's image (``accept_blobs``), before Gradio creates any state for its session:
        only the page's own pad and function, and a new session only within its address's rate."""
        boundary = _boundary(scope)
        fields = _form_fields(body, boundary) if boundary else _json_fields(body)
        if self._sketch is None:
            self._sketch = _sketch_id(self.demo)
        if fields.get("fn_name") != "accept_blobs" or self._sketch is None or \
                fields.get("component_id") != str(self._sketch):
            return _json(404, "Function not found: the only component function here is the sketch's "
                              "accept_blobs.")
        return self._new_session_refused(fields.get("session_hash"), _address(scope))

    def _bad_join(self, join: dict, scope):
        fn_index = join.get("fn_index")
        if fn_index is None:  # (or malformed JSON: Gradio answers it with its own 422)
            return None
        step = self.demo.fns.get(fn_index) if isinstance(fn_index, (int, str)) else None
        if step is None:
            return _json(422, f"fn_index {str(fn_index)[:20]!r} is not an event of this app.")
        if step.fn is None:  # a step the browser runs (js): nothing to run here,
            # and Gradio would still decode its inputs first
            return _json(422, f"fn_index {fn_index} runs in the browser only; it has nothing to run here.")
        session, address = join.get("session_hash"), _address(scope)
        if not isinstance(session, str) or not session:
            return None  # Gradio's own 400
        refused = self._over_cap(session, address)
        if refused:
            return refused
        return self._new_session_refused(session, address)

    def _new_session_refused(self, session, address: str):
        """Gradio creates a session's state for the first request that names it (a join, a sketch
        blob): a session it does not know yet takes one of its address's ``NEW_SESSION_RATE``
        tokens first (10,500 posts with new session ids used to make 10,500 sessions, +539 MB,
        and evict visitors' drawings)."""
        if not isinstance(session, str) or not session:
            return _json(400, "session_hash is missing.")
        holder = getattr(getattr(self.demo, "server_app", None), "state_holder", None)
        queue = self._queue()
        known = (holder is not None and session in holder) or (queue is not None and
                                                              session in queue.pending_messages_per_session)
        if not known and address not in self.trusted and not self.new_sessions.take(address):
            return _json(429, "Too many new sessions from your address; wait a minute and reload the page.")
        return None

    def _over_cap(self, session: str | None, address: str):
        """Fairness: no session or address may hold more than its share of the queue."""
        queue = self._queue()
        if queue is None:
            return None
        events = list(queue.event_ids_to_events.values())
        mine, ours = self.joining.get(f"s:{session}", 0), self.joining.get(f"a:{address}", 0)
        for event in events:
            mine += event.session_hash == session
            client = getattr(getattr(event, "request", None), "client", None)
            ours += getattr(client, "host", None) == address
        if session is not None and mine >= MAX_EVENTS_PER_SESSION:
            return _json(429, f"This session already has {mine} requests waiting or running; wait for them.")
        size = getattr(queue, "max_size", None)  # (app.py's QUEUE: 32; None: unbounded, no shrinking)
        held = len(events) + sum(n for key, n in self.joining.items() if key.startswith("a:"))
        share = MAX_EVENTS_PER_ADDRESS if size is None else address_share(size - held)
        if ours >= share and address not in self.trusted:
            return _json(429, f"Your address already has {ours} requests waiting or running; wait for them.")
        return None

    async def _read_body(self, scope, receive, path: str):
        limit = self.max_upload_body if path.rstrip("/") in UPLOAD_ROUTES else MAX_JSON_BODY
        length = _header(scope, b"content-length")
        too_big = _json(413, f"Request body exceeded maximum allowed size of {limit} bytes.")
        if length and length.isdigit() and int(length) > limit:
            return None, too_big
        chunks, size = [], 0
        try:
            async with asyncio.timeout(BODY_TIMEOUT):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None, None
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        return None, too_big
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks), None
        except TimeoutError:
            return None, _json(408, f"The request body did not arrive within {BODY_TIMEOUT:g} s.")

    @staticmethod
    async def _answer(send, status: int, body: bytes, scope) -> None:
        # ascii(): a path's %0A or other control characters cannot forge log lines
        if REFUSALS_LOGGED.take():
            log.warning("%s %s -> %d %s", ascii(scope["method"][:10]), ascii(scope["path"][:120]), status,
                        json.loads(body)["detail"][:120])
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]
        if status == 429:
            headers.append((b"retry-after", b"2"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class LogBudget:
    """At most ``lines`` log lines a ``window`` of seconds; the rest are counted, and one line a
    window says how many were left out. A flood of refused requests (11,000 in 10 s from one
    client were measured) then costs the log a few kB a minute, not 0.6 GB an hour, while the
    first refusals of each window still name what was refused."""

    def __init__(self, lines: int, window: float) -> None:
        self.lines, self.window = lines, window
        self._lock = threading.Lock()
        self._start, self._used, self._left_out = time.monotonic(), 0, 0

    def take(self) -> bool:
        """May one more line be written now?"""
        with self._lock:
            self._roll()
            if self._used < self.lines:
                self._used += 1
                return True
            self._left_out += 1
            return False

    def flush(self) -> None:
        """Say how many lines were left out once their window is over (the sweeper calls this, so
        the count is written even when the flood has stopped)."""
        with self._lock:
            self._roll()

    def _roll(self) -> None:
        now = time.monotonic()
        if now - self._start < self.window:
            return
        if self._left_out:
            log.warning("%d more refused requests in the last %.0f s, not logged one by one",
                        self._left_out, now - self._start)
        self._start, self._used, self._left_out = now, 0, 0


REFUSALS_LOGGED = LogBudget(REFUSAL_LOG_LINES, REFUSAL_LOG_WINDOW)


def address_share(free: int) -> int:
    """How many queued + running events one address may hold when ``free`` places of the queue
    are left: ``MAX_EVENTS_PER_ADDRESS`` while the queue is mostly free, a quarter of the free
    places as it fills, and always at least one. A fixed cap let four addresses fill a queue of 32
    (4 x 8). With this one, greedy addresses leave about 4/(4 + A) of the queue free for the rest
    (of 32 places: one address holds 6; 5 addresses 17 in all, 15 left; 16 addresses 25, 7 left),
    it takes 32 addresses at once to fill it, and an address holding nothing gets in as long as
    one place is free."""
    return max(1, min(MAX_EVENTS_PER_ADDRESS, free // 4))


def _joining_keys(kind: str, join: dict, scope) -> list[str]:
    """The counters a join (or an API call) reserves while Gradio pushes its event: its session's
    (``s:``) and its address's (``a:``)."""
    if kind not in ("join", "call"):
        return []
    session = join.get("session_hash")
    return [f"a:{_address(scope)}"] + ([f"s:{session}"] if isinstance(session, str) else [])


def _json_object(body: bytes) -> dict:
    """A request's JSON object, or {} when the body is not one."""
    try:
        value = json.loads(body)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _release(counts: dict[str, int], key: str) -> None:
    left = counts.pop(key, 1) - 1
    if left > 0:
        counts[key] = left


def _address(scope) -> str:
    """The client's address (uvicorn has already taken it from X-Forwarded-For when the peer is a
    trusted proxy: ``FORWARDED_ALLOW_IPS``, default 127.0.0.1)."""
    client = scope.get("client")
    return str(client[0]) if client else ""


def _files_in(body: bytes) -> int:
    """The file parts of a multipart body."""
    return body.count(b'; filename="')


def _sketch_id(demo):
    from .sketch import Sketchpad

    for block_id, block in getattr(demo, "blocks", {}).items():
        if isinstance(block, Sketchpad):
            return block_id
    return None


def _form_fields(body: bytes, boundary: bytes) -> dict[str, str]:
    """The short text fields of a multipart body (the file parts are skipped)."""
    fields = {}
    for part in body.split(b"--" + boundary)[1:-1]:
        head, _, value = part.partition(b"\r\n\r\n")
        m = re.search(rb'name="([^"]{1,64})"', head)
        if m and b"filename=" not in head and len(value) < 1024:
            fields[m.group(1).decode("latin-1")] = value.removesuffix(b"\r\n").decode("utf-8", "replace")
    return fields


def _json_fields(body: bytes) -> dict[str, str]:
    return {k: str(v) for k, v in _json_object(body).items() if k != "data"}


def _replay(body: bytes, receive):
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: the disconnect, when it comes

    return replay


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _query(scope) -> dict[str, str]:
    from urllib.parse import parse_qsl

    return dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))


def _boundary(scope) -> bytes | None:
    ctype = _header(scope, b"content-type") or ""
    m = re.search(r'boundary="?([^";]+)"?', ctype)
    return m.group(1).encode("latin-1") if ctype.startswith("multipart/") and m else None


# ---------------------------------------------------------------- putting it together

# What Gradio's `launch` itself requests before it returns (its startup events, and a HEAD of the
# page to see that localhost answers): served while the app is still starting.
STARTING = {("GET", "/gradio_api/startup-events"), ("HEAD", "/")}


def protect(demo) -> None:
    """Before ``demo.launch``: every event through the queue (so no direct run route serves any;
    Gradio's own ``api_open=False`` check then refuses them too), sessions tracked for blobs."""
    for fn in demo.fns.values():
        fn.queue = True
    _track_sessions(demo)
    # Nothing is served until `after_launch` has put the connection limits in place: Gradio's
    # launch starts uvicorn before it returns, and a connection accepted in between would be
    # unguarded (a test's idle connections once were, all 520 of them).
    demo.cnn_starting = True


def launch_options(demo, max_file_size: str | int) -> dict:
    """``demo.launch`` arguments: monitoring off, the middleware, the cache sweeper's lifespan.
    ``max_file_size``: what ``launch(max_file_size=...)`` gets ("2mb"); upload bodies are capped
    a little above it, so Gradio's own 413 still answers a file just over it."""
    from gradio.utils import _parse_file_size
    from starlette.middleware import Middleware

    max_file_size = _parse_file_size(max_file_size)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        stop = start_sweeper(demo)
        try:
            yield
        finally:  # before Gradio's own shutdown clean-up, which runs next
            stop.set()
            forget_records(demo)

    return dict(
        enable_monitoring=False,
        app_kwargs={"middleware": [Middleware(Guard, demo=demo, max_upload_body=max_file_size + MULTIPART_SLACK)],
                    "lifespan": lifespan},
    )


def after_launch(demo) -> None:
    """uvicorn settings Gradio does not expose: read by each new connection, so set once serving.
    ``http_protocol_class`` is what uvicorn's server builds each connection's protocol from."""
    server = getattr(demo, "server", None)
    config = getattr(server, "config", None)
    if config is None:
        demo.cnn_starting = False
        return
    _raise_file_limit(MAX_CONNECTIONS + 256)
    config.limit_concurrency = MAX_CONNECTIONS  # beyond: 503 at once, no fd held
    config.timeout_keep_alive = KEEP_ALIVE
    same_origin_only(demo.server_app)
    base = config.http_protocol_class
    if not getattr(base, "guarded", False):
        config.http_protocol_class = guarded_protocol(base, Trusted(config.forwarded_allow_ips))
    demo.cnn_starting = False  # from here on, every connection is guarded


def same_origin_only(app) -> None:
    """Take Gradio's CORS middleware out of the app: it grants credentialed CORS to any localhost
    origin (any origin at all once the host is not localhost). The page and its API are
    same-origin; without the middleware no response grants another origin anything, and a
    preflight (OPTIONS) meets the allow-list's 405."""
    kept = [m for m in app.user_middleware if m.cls.__name__ != "CustomCORSMiddleware"]
    if len(kept) != len(app.user_middleware):
        app.user_middleware = kept
        app.middleware_stack = None  # rebuilt by Starlette on the next request


class Trusted:
    """The proxies uvicorn takes X-Forwarded-For from (its ``FORWARDED_ALLOW_IPS``: addresses,
    networks such as ``10.0.0.0/8``, or ``*``), read as uvicorn reads them. Their connections
    carry many visitors, so the per-address connection cap does not count them; each visitor's
    requests are counted under the address the proxy names. ``*`` (a Space: every connection
    comes through Hugging Face's proxy, from addresses nobody lists) trusts every peer."""

    def __init__(self, allowed, wildcard: bool = True) -> None:
        allowed = allowed.split(",") if isinstance(allowed, str) else list(allowed or ())
        names = [a.strip() for a in allowed if a.strip()]
        self.everyone = wildcard and "*" in names
        self.literals = set(names)
        self.networks = []
        for name in names:
            with contextlib.suppress(ValueError):
                self.networks.append(ipaddress.ip_network(name, strict=False))

    def __contains__(self, host) -> bool:
        if self.everyone or host in self.literals:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)


def _raise_file_limit(wanted: int) -> None:
    """Each open tab holds a connection (its heartbeat): the soft file limit up to ``wanted``."""
    import resource

    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


OPEN_CONNECTIONS: dict[str, int] = {}  # client address -> open connections (event-loop thread only)


def guarded_protocol(base, trusted: Trusted):
    """uvicorn's HTTP protocol class ``base``, with what uvicorn lacks for a public link:

    - a **request-head deadline**: a connection that has not sent a complete request head
      ``HEADER_TIMEOUT`` s after it opened (or after the first bytes of a later request on a
      kept-alive connection) is closed. uvicorn closes only idle kept-alive connections; one that
      sends nothing, or half a head, stayed open for good.
    - a **per-address connection cap**: beyond ``MAX_CONNECTIONS_PER_ADDRESS`` open connections from
      one address, a new one is closed at once (not counted for ``trusted`` proxies, whose
      connections carry many visitors).
    Requests in progress (a heartbeat, a queue stream) are never cut: only waiting for a head is."""

    class Guarded(base):
        guarded = True

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._cnn_host = (self.client or ("",))[0]
            self._cnn_deadline = None
            OPEN_CONNECTIONS[self._cnn_host] = OPEN_CONNECTIONS.get(self._cnn_host, 0) + 1
            if OPEN_CONNECTIONS[self._cnn_host] > MAX_CONNECTIONS_PER_ADDRESS and self._cnn_host not in trusted:
                transport.close()
                return
            self._cnn_arm()

        def connection_lost(self, exc) -> None:
            left = OPEN_CONNECTIONS.get(self._cnn_host, 1) - 1
            if left > 0:
                OPEN_CONNECTIONS[self._cnn_host] = left
            else:
                OPEN_CONNECTIONS.pop(self._cnn_host, None)
            if self._cnn_deadline is not None:
                self._cnn_deadline.cancel()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._waiting_for_head():
                if self._cnn_deadline is None:
                    self._cnn_arm()
            elif self._cnn_deadline is not None:
                self._cnn_deadline.cancel()
                self._cnn_deadline = None

        def _waiting_for_head(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _cnn_arm(self) -> None:
            self._cnn_deadline = self.loop.call_later(HEADER_TIMEOUT, self._cnn_expire)

        def _cnn_expire(self) -> None:
            self._cnn_deadline = None
            if self._waiting_for_head() and not self.transport.is_closing():
                self.transport.close()

    Guarded.__name__ = Guarded.__qualname__ = f"Guarded{base.__name__}"
    return Guarded


@contextlib.contextmanager
def sigterm_as_ctrl_c():
    """SIGTERM (what ``docker stop``, systemd and Spaces send) stops the app like Ctrl-C, so the
    same clean-up runs (``demo.close()``, the cache removed)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    def interrupt(*_):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# ---------------------------------------------------------------- pictures, written atomically

import gradio as gr  # noqa: E402 - after the cache folder is chosen above
from gradio.components.image import ImageData  # noqa: E402
from gradio.processing_utils import encode_pil_to_bytes, hash_bytes  # noqa: E402
from PIL import Image as PILImage  # noqa: E402


class Picture(gr.Image):
    """``gr.Image`` for the page's pictures, saved to the cache atomically.

    Gradio names a picture's file after the hash of its bytes and rewrites it in place each
    time (``save_pil_to_cache``: ``write_bytes``), so when two sessions draw the same picture
    at once (the same example, the same digit) one may be served a file being rewritten: a
    truncated body under the old ``Content-Length`` (seen under load as reset connections).
    Here the bytes go to a temporary file beside it and ``os.replace`` swaps it in: a reader
    keeps the complete old file, and the fresh mtime keeps the sweep from taking it early."""

    def get_block_name(self) -> str:  # the same front-end component as gr.Image
        return "image"

    def postprocess(self, value):
        if not isinstance(value, PILImage.Image):
            return super().postprocess(value)
        data = encode_pil_to_bytes(value, self.format)
        folder = Path(self.GRADIO_CACHE) / hash_bytes(data)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"image.{self.format}"
        tmp = folder / f".{os.getpid()}-{threading.get_ident()}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return ImageData(path=str(path.resolve()), orig_name=path.name)
