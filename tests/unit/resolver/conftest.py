"""Resolver unit tests touch no sockets and no real time: sockets raise here."""

from __future__ import annotations

import socket

import pytest


class _NoSockets(socket.socket):
    def __init__(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("unit tests must not open sockets")


@pytest.fixture(autouse=True)
def _no_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "socket", _NoSockets)
