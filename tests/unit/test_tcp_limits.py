"""The TCP limit rules without sockets: ``ConnectionTable`` admission, eviction and the buffer
bound, ``TCPLimits`` validation, and when ``HeapTrimmer`` gives memory back (injected clock)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from kdns.serve.heap import (
    CONNECTION_OVERHEAD_BYTES,
    TRIM_AFTER_FREED_BYTES,
    TRIM_INTERVAL_S,
    HeapTrimmer,
)
from kdns.serve.tcplimits import ConnectionTable, TCPLimits

LIMITS = TCPLimits(max_connections=4, max_per_client=2, max_buffer_bytes=200_000)


@dataclass(frozen=True)
class Conn:
    name: str


def table_with(*entries: tuple[str, str]) -> ConnectionTable[Conn]:
    table: ConnectionTable[Conn] = ConnectionTable(LIMITS)
    for name, client in entries:
        assert table.admit(Conn(name), client).admitted
    return table


@dataclass(frozen=True)
class AdmitCase:
    id: str
    open: tuple[tuple[str, str], ...]
    touched: tuple[str, ...]
    client: str
    admitted: bool
    evicted: str | None


ADMIT = [
    AdmitCase("room-left", (("a", "10.0.0.1"),), (), "10.0.0.2", True, None),
    AdmitCase("client-at-its-limit", (("a", "10.0.0.1"), ("b", "10.0.0.1")), (), "10.0.0.1",
              False, None),
    AdmitCase("cap-evicts-the-oldest", (("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3"),
              ("d", "10.0.0.4")), (), "10.0.0.5", True, "a"),
    AdmitCase("cap-evicts-the-longest-idle", (("a", "10.0.0.1"), ("b", "10.0.0.2"),
              ("c", "10.0.0.3"), ("d", "10.0.0.4")), ("a", "b"), "10.0.0.5", True, "c"),
    AdmitCase("per-client-limit-before-eviction", (("a", "10.0.0.1"), ("b", "10.0.0.1"),
              ("c", "10.0.0.3"), ("d", "10.0.0.4")), (), "10.0.0.1", False, None),
]  # fmt: skip


@pytest.mark.parametrize("case", ADMIT, ids=lambda c: c.id)
def test_admission(case: AdmitCase) -> None:
    table = table_with(*case.open)
    for name in case.touched:
        table.touch(Conn(name))
    admission = table.admit(Conn("new"), case.client)
    assert admission.admitted is case.admitted
    assert admission.evict == (None if case.evicted is None else Conn(case.evicted))
    expected = len(case.open) + (1 if case.admitted else 0) - (1 if case.evicted else 0)
    assert len(table) == expected
    if case.evicted is not None:
        assert Conn(case.evicted) not in list(table)


def test_removal_gives_the_client_its_slot_back_and_its_bytes() -> None:
    table = table_with(("a", "10.0.0.1"), ("b", "10.0.0.1"))
    table.report(Conn("a"), 5000)
    assert table.held_bytes == 5000
    assert not table.admit(Conn("c"), "10.0.0.1").admitted
    table.remove(Conn("a"))
    table.remove(Conn("a"))  # twice is harmless
    assert table.held_bytes == 0
    assert table.client_count("10.0.0.1") == 1
    assert table.admit(Conn("c"), "10.0.0.1").admitted


def test_buffer_bound_names_the_largest_holder() -> None:
    table = table_with(("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3"))
    assert not table.report(Conn("a"), 95_000)
    assert not table.report(Conn("b"), 85_000)
    assert table.report(Conn("c"), 100_000), "280,000 > 200,000"
    assert table.largest() == Conn("c")
    table.remove(Conn("c"))
    assert not table.over_budget()
    assert not table.relieved(), "180,000 > 7/8 of 200,000"
    table.remove(Conn("a"))
    assert table.relieved()
    assert table.report(Conn("b"), 10_000) is False
    assert table.held_bytes == 10_000
    assert not table.report(Conn("gone"), 10**9), "a connection not in the table is ignored"


LIMIT_ERRORS = [
    ({"max_connections": 0}, "max_connections"),
    ({"max_per_client": 0}, "max_per_client"),
    ({"max_connections": 8, "max_per_client": 9}, "max_per_client"),
    ({"idle_timeout_s": 0.0}, "idle_timeout_s"),
    ({"write_timeout_s": -1.0}, "write_timeout_s"),
    ({"max_queued_bytes": 100}, "max_queued_bytes"),
    ({"max_buffer_bytes": 1000}, "max_buffer_bytes"),
    ({"socket_buffer_bytes": 1000}, "socket_buffer_bytes"),
]


@pytest.mark.parametrize(("fields", "name"), LIMIT_ERRORS, ids=[n for _, n in LIMIT_ERRORS])
def test_limits_errors_start_with_the_field(fields: dict[str, float], name: str) -> None:
    with pytest.raises(ValueError, match=rf"^{name} must be"):
        TCPLimits(**fields)  # type: ignore[arg-type]


def test_default_limits_are_consistent() -> None:
    limits = TCPLimits()
    assert limits.max_per_client * 8 <= limits.max_connections, "well under the global cap"
    assert limits.per_connection_bytes <= limits.max_buffer_bytes


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("closed", "each_bytes", "after_s", "trims"),
    [
        pytest.param(10, 1000, TRIM_INTERVAL_S, 0, id="little-freed"),
        pytest.param(1024, 64 * 1024, TRIM_INTERVAL_S, 1, id="a-burst-closed"),
        pytest.param(1024, 64 * 1024, TRIM_INTERVAL_S / 2, 0, id="too-soon-after-the-last"),
        pytest.param(
            TRIM_AFTER_FREED_BYTES // CONNECTION_OVERHEAD_BYTES,
            0,
            TRIM_INTERVAL_S,
            1,
            id="many-idle-connections",
        ),
    ],
)
def test_heap_is_trimmed_after_enough_is_freed(
    closed: int, each_bytes: int, after_s: float, trims: int
) -> None:
    clock = Clock()
    released: list[float] = []
    trimmer = HeapTrimmer(clock, release=lambda: released.append(clock.now) is None)
    for _ in range(closed):
        trimmer.freed(each_bytes)
    clock.now += after_s
    trimmer.maybe_trim()
    assert len(released) == trims == trimmer.trims
    assert not trimmer.maybe_trim(), "the count starts again after a trim"
