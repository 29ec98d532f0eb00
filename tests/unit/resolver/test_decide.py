"""The resolver's decisions as pure functions (kdns/resolver/decide.py), from tables: what to do
with a query given the cache and the route, what a full route answers, what a fetch's outcome
becomes, and which failures are cached. No cache, lane, clock or upstream."""

from __future__ import annotations

import pytest

from kdns.resolver import decide
from kdns.resolver.config import StaleMode
from kdns.resolver.decide import Cached, Settlement, Step
from kdns.resolver.message import Kind
from kdns.resolver.reasons import Reason
from kdns.resolver.upstream import Failure

IMM, VER, OFF = StaleMode.IMMEDIATE, StaleMode.VERIFY, StaleMode.OFF

# (cached, routed, stale mode, failure recheck pending) -> step
FIRST_STEP = [
    (Cached.FRESH, True, VER, False, Step.HIT),
    (Cached.FRESH, False, IMM, True, Step.HIT),  # a fresh hit needs no route
    (Cached.NONE, False, VER, False, Step.REFUSE),
    (Cached.STALE, False, IMM, False, Step.REFUSE),
    (Cached.NONE, True, VER, False, Step.FETCH),
    (Cached.NONE, True, IMM, False, Step.FETCH),
    (Cached.NONE, True, OFF, False, Step.FETCH),
    (Cached.STALE, True, IMM, False, Step.STALE_REFRESH),  # RFC 8767 "immediate"
    (Cached.STALE, True, VER, False, Step.VERIFY),  # ask first, stale after the timeout
    (Cached.STALE, True, IMM, True, Step.STALE),  # §5 recheck timer: no refresh yet
    (Cached.STALE, True, VER, True, Step.STALE),
]


@pytest.mark.parametrize(("cached", "routed", "mode", "recheck", "step"), FIRST_STEP)
def test_first_step(
    cached: Cached, routed: bool, mode: StaleMode, recheck: bool, step: Step
) -> None:
    assert decide.first_step(cached, routed, mode, recheck) is step


# (internal, joins a fetch in flight, busy workers, workers) -> shed
SHED = [
    (False, False, 32, 32, False),  # client queries queue
    (True, False, 31, 32, False),
    (True, False, 32, 32, True),  # a walk never waits for a worker
    (True, True, 32, 32, False),  # joining a fetch in flight takes no worker
    (True, False, 40, 32, True),
]


@pytest.mark.parametrize(("internal", "joining", "busy", "workers", "shed"), SHED)
def test_shed_internal(internal: bool, joining: bool, busy: int, workers: int, shed: bool) -> None:
    assert decide.shed_internal(internal, joining, busy, workers) is shed


@pytest.mark.parametrize(
    ("stale", "settlement"), [(True, Settlement.STALE_HIT), (False, Settlement.SERVFAIL)]
)
def test_on_full(stale: bool, settlement: Settlement) -> None:
    assert decide.on_full(stale) is settlement


POS, NX, ERR = Kind.POSITIVE, Kind.NXDOMAIN, Kind.ERROR

# (failed, kind of the entry left in the cache, a fresh build, stale mode, a stale hit) -> reply
SETTLE = [
    (False, POS, True, OFF, False, Settlement.ENTRY),
    (False, NX, True, VER, True, Settlement.ENTRY),
    (False, None, True, OFF, False, Settlement.BUILT),  # served, not cacheable
    (False, None, False, IMM, True, Settlement.SERVFAIL),  # nothing to serve
    (True, POS, False, IMM, False, Settlement.LAST_GOOD),  # kept last-known-good
    (True, NX, False, VER, True, Settlement.LAST_GOOD),
    (True, ERR, False, VER, True, Settlement.STALE_HIT),  # a SERVFAIL entry is no answer
    (True, None, False, IMM, True, Settlement.STALE_HIT),
    (True, None, False, IMM, False, Settlement.SERVFAIL),
    (True, ERR, False, IMM, False, Settlement.SERVFAIL),
    (True, POS, False, OFF, True, Settlement.SERVFAIL),  # serve-stale off: never stale
]


@pytest.mark.parametrize(("failed", "kind", "built", "mode", "stale_hit", "settlement"), SETTLE)
def test_settle(
    failed: bool,
    kind: Kind | None,
    built: bool,
    mode: StaleMode,
    stale_hit: bool,
    settlement: Settlement,
) -> None:
    assert decide.settle(failed, kind, built, mode, stale_hit) is settlement


# reason -> a SERVFAIL about the name is cached
CACHES = [
    (Reason.TIMEOUT, True),
    (Reason.UNREACHABLE, True),
    (Reason.SERVFAIL, True),
    (Reason.REFUSED, True),
    (Reason.TRUNCATED, True),
    (Reason.INTERNAL, True),
    (Reason.OVERLOADED, False),  # our own capacity says nothing about the name
    (Reason.CLOSED, False),
]


@pytest.mark.parametrize(("reason", "cached"), CACHES)
def test_caches_failure(reason: Reason, cached: bool) -> None:
    assert decide.caches_failure(reason) is cached


# the strings kdns.resolver.upstream and the lanes produce -> the typed reason
PARSE = [
    ("timeout", Reason.TIMEOUT),
    ("unreachable", Reason.UNREACHABLE),
    ("servfail", Reason.SERVFAIL),
    ("refused", Reason.REFUSED),
    ("notimp", Reason.NOTIMP),
    ("formerr", Reason.FORMERR),
    ("truncated", Reason.TRUNCATED),
    ("overloaded", Reason.OVERLOADED),
    ("closed", Reason.CLOSED),
    ("expired", Reason.EXPIRED),
    ("internal", Reason.INTERNAL),
    ("something new", Reason.INTERNAL),  # unknown: treated as before (cached SERVFAIL)
    (Reason.CLOSED, Reason.CLOSED),
]


@pytest.mark.parametrize(("text", "reason"), PARSE)
def test_reason_of(text: str, reason: Reason) -> None:
    assert Reason.of(text) is reason
    assert reason == reason.value  # a StrEnum: equal to the string callers compared before


@pytest.mark.parametrize(
    ("given", "reason"),
    [(Reason.TIMEOUT, Reason.TIMEOUT), ("servfail", Reason.SERVFAIL),
     ("no such reason", Reason.INTERNAL)],
    ids=["member", "string-of-a-member", "unknown-string"],
)  # fmt: skip
def test_a_failure_carries_a_typed_reason(given: str, reason: Reason) -> None:
    failure = Failure(given)  # type: ignore[arg-type]
    assert type(failure.reason) is Reason
    assert failure.reason is reason
