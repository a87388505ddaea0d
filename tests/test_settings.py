"""The serving settings the README states (its "Limits, and why" table and "Sharing it"), each
measured on a running app rather than read back from the code: two requests at a time, shared by
the page's updates and /predict; one torch thread per request; the address from Gradio's
variables; one clear line when the port is taken."""
from __future__ import annotations

import socket
import threading
import time

import gradio as gr
import httpx
import pytest
import torch

import app
from conftest import free_port

EXAMPLE = next(p for p in app.EXAMPLES if p.stem.endswith("_7"))
HOLD = 0.2  # s: how long each forward pass is made to take in the concurrency test
SETTLE = 0.5  # s: how long the concurrency test waits for requests beyond the first two to start


@pytest.fixture(autouse=True)
def torch_threads_restored():
    """``app.main`` sets this process's torch threads to 1, as it does for the served app."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def example_value():
    from gradio_client import handle_file

    f = handle_file(str(EXAMPLE))
    return {"background": f, "layers": [], "composite": f, "id": None}


def test_two_requests_run_at_a_time_shared_by_updates_and_predict(served_app, shipped_model):
    """Six requests at once, three /update and three /predict, whose forward passes wait at a
    gate until every request that the server lets in has come in: never more than two run
    together (a limit of 2 per endpoint would let four in; no limit, six)."""
    from gradio_client import Client

    lock, running, most, gate = threading.Lock(), [0], [0], threading.Event()

    def enter(module, args):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        gate.wait(30)
        time.sleep(HOLD)  # then a slow forward pass: the others must queue behind it

    def leave(module, args, output):
        with lock:
            running[0] -= 1

    hooks = [shipped_model.register_forward_pre_hook(enter), shipped_model.register_forward_hook(leave)]
    try:
        clients = [Client(served_app, verbose=False) for _ in range(3)]  # a session may hold only 3 events
        value = example_value()
        jobs = [client.submit(value, api_name=name) for client in clients for name in ["/update", "/predict"]]
        deadline = time.monotonic() + 30
        while most[0] < 2 and time.monotonic() < deadline:  # the first two are in...
            time.sleep(0.01)
        time.sleep(SETTLE)  # ...and any more the server would let in have had time to follow
        gate.set()
        results = [job.result(timeout=60) for job in jobs]
    finally:
        gate.set()
        for h in hooks:
            h.remove()
    assert [r[0]["label"] if isinstance(r, (tuple, list)) else r["label"] for r in results] == ["7"] * 6
    assert most[0] == 2


def test_the_served_app_runs_each_request_on_one_torch_thread_at_gradios_address(monkeypatch):
    """``app.main`` as ``python app.py`` runs it (weights, torch settings, launch), with the
    address from GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (Spaces' way), until told to stop;
    inside a request torch has one thread."""
    from gradio_client import Client

    port = free_port()
    monkeypatch.setenv("GRADIO_SERVER_NAME", "127.0.0.2")  # loopback, but not the default 127.0.0.1
    monkeypatch.setenv("GRADIO_SERVER_PORT", str(port))
    serving, stop = threading.Event(), threading.Event()

    def block_thread(demo):  # instead of waiting for Ctrl-C
        serving.set()
        stop.wait(120)

    monkeypatch.setattr(gr.Blocks, "block_thread", block_thread)
    threads_in_requests = []
    real_extract = app.extract

    def extract(model, x):
        threads_in_requests.append(torch.get_num_threads())
        return real_extract(model, x)

    monkeypatch.setattr(app, "extract", extract)
    # main() removes the process's cache when it stops: here that folder is shared with the
    # session's served_app (whose pictures later tests fetch), so keep it.
    monkeypatch.setattr(app.serving, "remove_cache", lambda: None)
    torch.set_num_threads(2)  # what this process had before main, whatever ran earlier
    status = []
    server = threading.Thread(target=lambda: status.append(app.main([])), daemon=True)
    server.start()
    try:
        assert serving.wait(120), "app.main did not start serving"
        url = f"http://127.0.0.2:{port}/"
        result = Client(url, verbose=False).predict(example_value(), api_name="/predict")
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/", timeout=5)  # only where it was told to listen
    finally:
        stop.set()
        server.join(60)
    assert result["label"] == "7"
    assert threads_in_requests == [1]
    assert status == [0]


def test_a_port_already_in_use_is_one_line_and_exit_status_1(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert app.main(["--port", str(port)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"app.py: cannot serve on 127.0.0.1:{port}: "), err


def test_the_address_comes_from_gradios_variable_unless_given(monkeypatch):
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    assert app.parse_args([]).host == "127.0.0.1"
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    assert app.parse_args([]).host == "0.0.0.0"
    assert app.parse_args(["--host", "127.0.0.1"]).host == "127.0.0.1"
