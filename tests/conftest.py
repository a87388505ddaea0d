"""Shared fixtures.

The web page (tests/test_app.py, tests/test_browser.py): ``served_app`` is the real page,
built by ``app.build_page`` from the shipped weights and served by ``app.launch`` (the same
settings as ``python app.py``) on a free localhost port, once per test session.
"""
from __future__ import annotations

import socket

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def shipped_model():
    """The shipped weights, loaded and verified once (eval mode)."""
    from cnn import weights

    return weights.load()


@pytest.fixture(scope="session")
def served_app(shipped_model):
    """URL of the draw-a-digit page, running in this process on a free localhost port."""
    import app

    demo = app.build_page(shipped_model)
    app.launch(demo, "127.0.0.1", free_port(), block=False, quiet=True)
    try:
        yield demo.local_url
    finally:
        demo.close()
