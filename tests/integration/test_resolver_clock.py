"""One injected clock (issue 12 item 6): the cache, the lanes, the VERIFY timer and the upstream
deadlines all read the clock ``Resolver.from_config`` is given, and an upstream's deadlines follow
it (a silent server on 127.0.0.1:0, a clock that jumps: the try ends on the clock, not on
``try_timeout_s`` of real time). No sleeps."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import pytest

from kdns.resolver.config import ResolverConfig, UpstreamConfig
from kdns.resolver.core import Resolver
from kdns.resolver.upstream import Failure, UpstreamClient
from tests.unit.resolver.fakes import FakeClock


@pytest.fixture
def silent() -> Iterator[tuple[str, int]]:
    """A UDP socket that never answers (nothing reads it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()
    finally:
        sock.close()


def test_from_config_gives_every_part_the_one_clock() -> None:
    clock = FakeClock()
    config = ResolverConfig(upstream=UpstreamConfig((("192.0.2.53", 53),)))
    resolver = Resolver.from_config(config, clock=clock)
    try:
        routes = resolver.router.routes()
        upstreams = [route.upstream for route in routes]
        parts: list[tuple[str, Callable[[], float]]] = [
            ("resolver", resolver.clock),
            ("cache", resolver.cache.clock),
            ("timers", resolver._deadlines.clock),
            *((f"lane {name}", lane.clock) for name, lane in resolver.lanes().items()),
            *(
                (f"upstream {route.name}", upstream.clock)
                for route, upstream in zip(routes, upstreams, strict=True)
                if isinstance(upstream, UpstreamClient)
            ),
        ]
        assert len(parts) >= 5
        assert [name for name, part in parts if part is not clock] == []
        resolver.reconfigure(config)  # a reload builds its upstreams on the same clock
        assert all(
            route.upstream.clock is clock  # type: ignore[attr-defined]
            for route in resolver.router.routes()
        )
    finally:
        resolver.close()


class Jumping:
    """A clock that moves ``step`` seconds every time it is read."""

    def __init__(self, step: float) -> None:
        self.now = 1000.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


# (seconds the clock moves per read, the try and overall timeouts) -> reason, real seconds at most
DEADLINES = [
    (10.0, 5.0, "timeout", 1.0),  # the clock is past every deadline at once: no 5 s wait
    (3.0, 5.0, "timeout", 1.0),
]


@pytest.mark.parametrize(("step", "timeout", "reason", "within"), DEADLINES)
def test_upstream_deadlines_read_the_injected_clock(
    silent: tuple[str, int], step: float, timeout: float, reason: str, within: float
) -> None:
    config = UpstreamConfig((silent,), try_timeout_s=timeout, overall_timeout_s=timeout)
    client = UpstreamClient(config, clock=Jumping(step))
    try:
        started = time.monotonic()
        result = client.query(b"\x03www\x07example\x04test\x00", 1, 1)
        assert isinstance(result, Failure)
        assert result.reason == reason
        assert time.monotonic() - started < within
    finally:
        client.close()
