"""What protects a public link: one job, everything a visitor's requests may not do to the server.

``app.launch`` calls ``protect(demo)`` before ``demo.launch(**launch_options(...))``. Together:

  body caps      every request body is read here first, in full, against a byte cap (uploads:
                 ``max_file_size`` plus a little multipart framing; everything else, JSON:
                 ``MAX_JSON_BODY``) and a deadline (``BODY_TIMEOUT``: slow clients are cut off).
                 Gradio sees only complete, capped bodies: an upload missing its closing boundary,
                 dropped mid-way or trickling is answered here (400/408/413) before Gradio opens a
                 temp file, so none is left behind.
  state routes   polling an unknown session or event, joining with an unknown ``fn_index``, with
                 one the browser runs itself (a js step: Gradio would decode its inputs and then
                 fail), a click without its position, or a call whose body lacks its inputs: a 4xx
                 with one log line, never a traceback.
  closed routes  ``/monitoring`` (off in ``launch_options`` too) and every direct
                 ``/gradio_api/run|api/<event>`` route: all events go through the queue
                 (``protect`` queues every event, so the page itself never needs them).
  cache          the app's cache is a private folder (``CACHE``, under ``$GRADIO_TEMP_DIR`` or
                 the system temp folder): every file an event writes there (the visitor's uploads
                 and the pictures any output makes) is deleted ``CACHE_TTL`` seconds after it was
                 written, its hash-named folder with it; an upload's temp file that outlives its
                 request by ``UPLOAD_TEMP_TTL`` is deleted; the folder is removed on shutdown
                 (Ctrl-C and SIGTERM), and folders of earlier runs that died are removed at start.
  blobs          the page's Sketchpad sends its images as blobs (``accept_blobs``): see
                 ``cnn/sketch.py``, which uses ``current_session`` to tie each blob to its session.
  formats        ``IMAGE_FORMATS``: formats whose decoders run no code (no EPS/PS/PDF, which PIL
                 hands to Ghostscript); checked by ``cnn/preprocess.py`` and ``cnn/sketch.py``, and
                 PIL's EPS reader is unregistered for the whole process (``preprocess``).

Times are module constants read from the environment (``CNN_CACHE_TTL``, ``CNN_UPLOAD_TEMP_TTL``,
``CNN_SWEEP_EVERY``, ``CNN_BODY_TIMEOUT``, ``CNN_BLOB_TTL``) so tests need not wait minutes.
"""
from __future__ import annotations

import asyncio
import contextlib
import contextvars
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
DELETE_CACHE = (max(1, int(SWEEP_EVERY)), max(1, int(CACHE_TTL)))  # gr.Blocks(delete_cache=...): Gradio's own records too
MAX_CONNECTIONS = 256  # open connections + in-flight requests beyond which uvicorn answers 503

from .preprocess import FORMAT_NAMES, IMAGE_FORMATS  # noqa: E402,F401 - the allow-list, re-exported

UPLOAD_ROUTES = ("/gradio_api/upload", "/gradio_api/component_server")
DIRECT_ROUTES = re.compile(r"^/gradio_api/(run|api)/")
CLOSED_ROUTES = re.compile(r"^/monitoring(/|$)")


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


def sweep(demo, now: float | None = None) -> int:
    """Delete what has been in the cache too long; returns the bytes freed.

    A file inside a hash-named folder (an upload moved into place, any picture an event wrote)
    goes ``CACHE_TTL`` s after it was written, unless it is one of the page's own files (initial
    values, examples: Gradio's ``keep_in_cache``); the folder goes when empty. A file directly in
    the cache folder is an upload's temp file: gone ``UPLOAD_TEMP_TTL`` s after it was last written."""
    now = time.time() if now is None else now
    keep = set()
    for block in demo.blocks.values():
        keep.update(getattr(block, "keep_in_cache", ()))
    freed = 0
    for entry in list(_scandir(CACHE)):
        with contextlib.suppress(OSError):
            if entry.is_file(follow_symlinks=False):
                if now - entry.stat().st_mtime > UPLOAD_TEMP_TTL:
                    freed += entry.stat().st_size
                    os.unlink(entry.path)
            elif entry.is_dir(follow_symlinks=False):
                freed += _sweep_folder(Path(entry.path), keep, now)
    return freed


def forget_folders(demo) -> None:
    """Drop folders from Gradio's records of the files it created: an API caller may name a cache
    folder as a file (refused by cnn/sketch.py, but recorded first), and Gradio's own clean-up
    (``delete_cache``, and at shutdown) stops with a traceback at the first folder it meets."""
    for records in list(getattr(demo, "temp_file_sets", ())):
        for path in list(records):
            if os.path.isdir(path):
                records.discard(path)


def _sweep_folder(folder: Path, keep: set, now: float) -> int:
    freed = 0
    for path in folder.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file() and str(path) not in keep and now - path.stat().st_mtime > CACHE_TTL:
                freed += path.stat().st_size
                path.unlink()
    for path in sorted(folder.rglob("*"), reverse=True) + [folder]:  # deepest first
        with contextlib.suppress(OSError):
            path.rmdir()  # only empty folders go
    return freed


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
                forget_folders(demo)
                sweep(demo)
            except Exception:  # noqa: BLE001 - the sweeper must outlive one bad file
                log.exception("cache sweep failed")
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

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope["path"], scope["method"]
        if method in ("GET", "HEAD") and path == "/" and len(scope.get("query_string", b"")) > MAX_PAGE_QUERY:
            return await self._too_long_link(send)
        refused = self._closed(path, method) or self._unknown(path, scope)
        if refused:
            return await self._answer(send, *refused, scope)
        if method in ("POST", "PUT", "PATCH", "DELETE"):
            body, refused = await self._read_body(scope, receive, path)
            if refused:
                return await self._answer(send, *refused, scope)
            if body is None:  # the client went away: nothing to answer
                return None
            refused = self._bad_body(path, body, scope)
            if refused:
                return await self._answer(send, *refused, scope)
            receive = _replay(body, receive)
        started = False

        async def sending(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as e:  # a malformed request that Gradio's handler trips over
            if started:
                log.warning("%s %s: %s (after the response began)", method, path, type(e).__name__)
                return None
            await self._answer(send, *_json(400, f"The request could not be processed ({type(e).__name__}); "
                                                "send the inputs this endpoint takes."), scope)

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
    @staticmethod
    def _closed(path: str, method: str):
        if CLOSED_ROUTES.match(path):
            return _json(404, "Not Found")
        if DIRECT_ROUTES.match(path):
            return _json(404, "This API endpoint does not accept direct HTTP POST requests. "
                              "Please join the queue to use this API.")
        return None

    def _unknown(self, path: str, scope):
        queue = getattr(self.demo, "_queue", None)
        if queue is None or scope["method"] != "GET":
            return None
        if path == "/gradio_api/queue/data":
            session = _query(scope).get("session_hash", "")
            if session not in queue.pending_messages_per_session:
                return _json(404, "Unknown session: join the queue first (POST /gradio_api/queue/join).")
        elif m := re.match(r"^/gradio_api/call/(?:v2/)?[^/]+/([^/]+)/?$", path):
            event_id = m.group(1)
            if event_id not in queue.event_ids_to_events and not any(
                    event_id in ids for ids in list(queue.pending_event_ids_session.values())):
                return _json(404, "Unknown event id: POST /gradio_api/call/<api_name> first, then read its "
                                  "event_id once.")
        return None

    def _bad_body(self, path: str, body: bytes, scope):
        if path.rstrip("/") in UPLOAD_ROUTES:
            boundary = _boundary(scope)
            if boundary is not None and not body.rstrip(b"\r\n").endswith(b"--" + boundary + b"--"):
                return _json(400, "The upload is incomplete: the multipart body has no closing boundary.")
        if path.rstrip("/") == "/gradio_api/queue/join" and self.demo is not None:
            try:
                join = json.loads(body)
                fn_index = join.get("fn_index")
            except (ValueError, AttributeError):
                return None  # Gradio answers malformed JSON with its own 422
            if fn_index is None:
                return None
            step = self.demo.fns.get(fn_index) if isinstance(fn_index, (int, str)) else None
            if step is None:
                return _json(422, f"fn_index {str(fn_index)[:20]!r} is not an event of this app.")
            if step.fn is None:  # a step the browser runs (js): nothing to run here,
                # and Gradio would still decode its inputs first
                return _json(422, f"fn_index {fn_index} runs in the browser only; it has nothing to run here.")
            if any(event == "select" for _, event in step.targets) and not _has_index(join.get("event_data")):
                return _json(422, f"fn_index {fn_index} is a click on a picture: send the clicked position "
                                  '("event_data": {"index": [x, y], ...}).')
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
        log.warning("%s %s -> %d %s", scope["method"], scope["path"][:200], status,
                    json.loads(body)["detail"][:120])
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def _has_index(event_data) -> bool:
    """Whether a queue join's ``event_data`` carries what a click event needs: an ``index``."""
    return isinstance(event_data, dict) and "index" in event_data


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

def protect(demo) -> None:
    """Before ``demo.launch``: every event through the queue (so no direct run route serves any;
    Gradio's own ``api_open=False`` check then refuses them too), sessions tracked for blobs."""
    for fn in demo.fns.values():
        fn.queue = True
    _track_sessions(demo)


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
            forget_folders(demo)

    return dict(
        enable_monitoring=False,
        app_kwargs={"middleware": [Middleware(Guard, demo=demo, max_upload_body=max_file_size + MULTIPART_SLACK)],
                    "lifespan": lifespan},
    )


def after_launch(demo) -> None:
    """uvicorn settings Gradio does not expose: read by each new connection, so set once serving."""
    server = getattr(demo, "server", None)
    config = getattr(server, "config", None)
    if config is not None:
        config.limit_concurrency = MAX_CONNECTIONS  # beyond: 503 at once, no fd held
        config.timeout_keep_alive = 5  # an idle keep-alive connection is closed after 5 s


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
