"""Fakes for resolver unit tests: clock, executors, an upstream with no sockets, and builders
for queries and replies (dnspython for the bytes, ``kdns.serve.protocol.screen`` for queries)."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset

from kdns.resolver import message
from kdns.resolver.config import Transport
from kdns.resolver.upstream import Failure, Reply, Result
from kdns.serve.protocol import Query, screen


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class InlineExecutor(Executor):
    """Runs every task at once, in the caller's thread."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_result(fn(*args, **kwargs))
        return future


class ManualExecutor(Executor):
    """Queues tasks until the test runs them: an upstream that is 'still in flight'."""

    def __init__(self) -> None:
        self.tasks: list[tuple[Callable[..., Any], tuple[Any, ...], Future[Any]]] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self.tasks.append((lambda: fn(*args, **kwargs), (), future))
        return future

    def run_all(self) -> int:
        count = 0
        while self.tasks:
            fn, _args, future = self.tasks.pop(0)
            future.set_result(fn())
            count += 1
        return count


class SimulatedPool(Executor):
    """A thread pool played in virtual time, for the isolation tests: ``size`` workers (None:
    as many as there are tasks) start tasks in submit order as they free up. A task takes the
    time the clock moved while it ran (a ``FakeUpstream`` with ``latency_s`` moves it), so a
    ``done`` callback reads its delivery time from the clock. ``run`` plays every task,
    including those submitted while playing. (With ``size`` None, tasks start at their submit
    time, in that order; the clock may step back between tasks of different routes, which
    these tests never compare.)"""

    def __init__(self, clock: FakeClock, size: int | None = None) -> None:
        self.clock = clock
        self.size = size
        self._sequence = itertools.count()
        self._pending: list[tuple[float, int, Callable[[], Any], Future[Any]]] = []
        self._free: list[float] = [clock.now] * (size or 0)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        task = (self.clock.now, next(self._sequence), lambda: fn(*args, **kwargs), future)
        if self.size is None:
            heapq.heappush(self._pending, task)
        else:
            self._pending.append(task)
        return future

    def run(self, limit: int = 100_000) -> int:
        count = 0
        while self._pending and count < limit:
            if self.size is None:
                start, _seq, fn, future = heapq.heappop(self._pending)
            else:
                submitted, _seq, fn, future = self._pending.pop(0)
                start = max(submitted, heapq.heappop(self._free))
            self.clock.now = start
            future.set_result(fn())
            if self.size is not None:
                heapq.heappush(self._free, self.clock.now)
            count += 1
        return count


def rr(line: str) -> dns.rrset.RRset:
    name, ttl, rdclass, rdtype, rdata = line.split(None, 4)
    return dns.rrset.from_text(name, int(ttl), rdclass, rdtype, rdata)


def make_reply(
    qname: str,
    qtype: str = "A",
    answer: Sequence[str] = (),
    authority: Sequence[str] = (),
    additional: Sequence[str] = (),
    rcode: int = dns.rcode.NOERROR,
    query_id: int = 0,
    tc: bool = False,
    edns: bool = False,
) -> bytes:
    query = dns.message.make_query(qname, qtype, use_edns=edns)
    query.id = query_id
    response = dns.message.make_response(query)
    response.set_rcode(rcode)
    for line in answer:
        response.answer.append(rr(line))
    for line in authority:
        response.authority.append(rr(line))
    for line in additional:
        response.additional.append(rr(line))
    if tc:
        response.flags |= dns.flags.TC
    return response.to_wire()


def soa(zone: str = "example.test.", ttl: int = 3600, minimum: int = 60) -> str:
    return f"{zone} {ttl} IN SOA ns1.{zone} hostmaster.{zone} 1 7200 1800 86400 {minimum}"


def make_query(
    qname: str,
    qtype: str = "A",
    *,
    edns: bool = False,
    do: bool = False,
    cd: bool = False,
    rd: bool = True,
    query_id: int = 0x1234,
    payload: int = 1232,
    max_udp_size: int = 1232,
) -> Query:
    query = dns.message.make_query(
        qname, qtype, use_edns=0 if (edns or do) else False, want_dnssec=do, payload=payload
    )
    query.id = query_id
    if not rd:
        query.flags &= ~dns.flags.RD
    if cd:
        query.flags |= dns.flags.CD
    screened = screen(query.to_wire(), max_udp_size)
    assert isinstance(screened, Query)
    return screened


def parse(reply: bytes) -> dns.message.Message:
    return dns.message.from_wire(reply)


def ttls(reply: bytes) -> set[int]:
    parsed = parse(reply)
    return {
        rrset.ttl
        for section in (parsed.answer, parsed.authority, parsed.additional)
        for rrset in section
    }


Handler = Callable[[str, str], "bytes | Failure"]


@dataclass
class FakeUpstream:
    """An upstream group without sockets: ``replies[(name, type)]`` is reply bytes (its question
    must be the asked one; the ID is ignored) or a Failure; ``handler`` can compute one."""

    replies: dict[tuple[str, str], bytes | Failure] = field(default_factory=dict)
    handler: Handler | None = None
    calls: list[tuple[str, str, bool, bool]] = field(default_factory=list)
    default: bytes | Failure = field(default_factory=lambda: Failure("timeout", "no script"))
    clock: FakeClock | None = None
    latency_s: float = 0.0
    """With ``clock``: how far each query moves it (a slow upstream, under ``SimulatedPool``)."""

    def query(
        self, qname: bytes, qtype: int, qclass: int, *, do: bool = False, cd: bool = False
    ) -> Result:
        name = dns.name.from_wire(qname + b"", 0)[0].to_text().lower()
        type_text = dns.rdatatype.to_text(qtype)
        self.calls.append((name, type_text, do, cd))
        if self.clock is not None:
            self.clock.advance(self.latency_s)
        if self.handler is not None:
            result = self.handler(name, type_text)
        else:
            result = self.replies.get((name, type_text), self.default)
        if isinstance(result, Failure):
            return result
        facts = message.inspect(result)
        return Reply(result, facts, ("192.0.2.53", 53), Transport.UDP)

    def count(self, name: str | None = None) -> int:
        if name is None:
            return len(self.calls)
        return sum(1 for call in self.calls if call[0] == name)
