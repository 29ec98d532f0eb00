"""The hardened upstream client: one group of servers, UDP with TCP fallback or TCP only.

**Threads and blocking sockets, not asyncio.** The callers are a blocking UDP loop thread and an
asyncio TCP thread (``kdns.serve``), and the resolver runs each upstream fetch on a small worker
pool (``core.Resolver``). A blocking ``query()`` is callable from all of them (from asyncio via
``run_in_executor``) without a third event loop to own, and a fresh UDP socket per query is one
syscall pair here, where an asyncio datagram endpoint costs a transport object and loop
round-trips (stdlib asyncio UDP measured 6x slower than a blocking loop, performance.md). The
price is a thread per in-flight query, which the concurrency bound keeps small.

**Spoofing defences** (RFC 5452 §9-10, RFC 1035 §7.3):

* UDP: a new socket per query, bound to port 0 (the kernel picks a random ephemeral port) and
  ``connect``-ed to the server, so datagrams from any other address never reach us; a random
  16-bit ID from ``secrets`` per query.
* A reply is accepted only if its ID matches, QR is set, the opcode is QUERY, it parses
  (``message.inspect``: bounded names, RFC 9267) and its question equals ours (name compared
  case-insensitively, type, class). Anything else is dropped and counted (``stats.mismatched``,
  ``stats.garbage``) and we keep listening until the try's deadline: a spoofer racing the real
  server must not be able to end the wait.
* TC=1 over UDP → the same server again over TCP (RFC 7766 §5); a truncated reply is never
  returned. TCP connections are pooled per server, reused and pipelined: many queries in flight
  on one connection, replies matched by ID in any order (RFC 7766 §6.2.1.1), closed after
  ``tcp_idle_s`` idle.
* FORMERR to a query with EDNS → one retry without it (RFC 6891 §7).

**Failure is explicit.** ``query`` returns ``Reply`` or ``Failure``; it never raises for network
trouble and never invents an answer. Callers turn ``Failure`` into SERVFAIL (or stale data),
never NXDOMAIN (dnslib's ProxyResolver turns a timeout into NXDOMAIN, a cacheable lie).

**Health** (CoreDNS forward): ``max_fails`` consecutive failures (timeouts, refused connections,
unreadable replies) mark a server down; down servers are tried only after the healthy ones; a
probe (``. IN NS``, any well-formed reply) brings one back, from the background prober every
``probe_interval_s`` or whenever a real query to it succeeds. Servers that answer SERVFAIL or
REFUSED are alive: the next server is asked, but health is not touched.

**Timeouts**: each try gets ``min(try_timeout_s, time left)``; tries go round the servers until
``overall_timeout_s`` (2 s and 5 s by default, CoreDNS forward's read timeout and deadline).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import secrets
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, NamedTuple, Protocol

from kdns import dns as wire  # the wire package, under the name this module reads it by
from kdns.histogram import Histogram, exponential
from kdns.resolver import message
from kdns.resolver.config import Address, Policy, Transport, UpstreamConfig
from kdns.resolver.message import MessageError, ReplyFacts
from kdns.resolver.reasons import Reason

logger = logging.getLogger(__name__)

RECEIVE_SIZE: Final = 65535
PROBE_NAME: Final = b"\x00"
"""``. IN NS``: CoreDNS forward's health-check query; any authoritative or recursive server
answers it quickly."""

# Rcodes that mean "alive, but no answer from this server": ask the next one.
_ANSWERED_ERRORS: Final = {
    wire.SERVFAIL: Reason.SERVFAIL,
    wire.REFUSED: Reason.REFUSED,
    wire.NOTIMP: Reason.NOTIMP,
    wire.FORMERR: Reason.FORMERR,
}


@dataclass(frozen=True, slots=True)
class Reply:
    """An accepted reply (NOERROR or NXDOMAIN) to our question."""

    message: bytes
    facts: ReplyFacts
    server: Address
    transport: Transport


@dataclass(frozen=True, slots=True)
class Failure:
    """No usable answer, and why (``kdns.resolver.reasons.Reason``). Callers answer SERVFAIL
    (or stale data), never NXDOMAIN."""

    reason: Reason
    detail: str = ""

    def __post_init__(self) -> None:
        if type(self.reason) is not Reason:  # a plain string (a test's fake upstream)
            object.__setattr__(self, "reason", Reason.of(self.reason))

    @property
    def answered(self) -> bool:
        """The servers replied (with an error) rather than being unreachable."""
        return self.reason in _ANSWERED_ERRORS.values()


Result = Reply | Failure


class _Ask(NamedTuple):
    """One question we send (every try of it, over either transport)."""

    qname: bytes
    qtype: int
    qclass: int
    do: bool
    cd: bool
    qname_lower: bytes

    def packet(self, qid: int, udp_size: int | None) -> bytes:
        return message.make_query(
            qid, self.qname, self.qtype, self.qclass, cd=self.cd, do_bit=self.do, udp_size=udp_size
        )


class Upstream(Protocol):
    """What the resolver needs from an upstream group (tests substitute fakes)."""

    def query(
        self, qname: bytes, qtype: int, qclass: int, *, do: bool = False, cd: bool = False
    ) -> Result: ...


@dataclass(slots=True)
class UpstreamStats:
    """Counters (monotonic) for metrics."""

    queries: int = 0
    replies: int = 0
    failures: int = 0
    timeouts: int = 0
    unreachable: int = 0
    mismatched: int = 0
    """Replies dropped for a wrong ID, QR, opcode or question (spoofing attempts)."""
    garbage: int = 0
    """Replies dropped because they did not parse."""
    truncated: int = 0
    """UDP replies with TC=1, retried over TCP."""
    failovers: int = 0
    """Tries that went to another server after one failed."""
    overloaded: int = 0
    tcp_connects: int = 0
    marked_down: int = 0
    recovered: int = 0
    probes: int = 0
    all_down: int = 0
    """Queries that found every server marked down (CoreDNS's healthcheck_broken)."""


class Health:
    """Per-server consecutive failures and down marks. Pure bookkeeping; ``clock`` injected."""

    def __init__(
        self,
        count: int,
        max_fails: int,
        probe_interval_s: float,
        clock: Callable[[], float],
        policy: Policy = Policy.SEQUENTIAL,
        rand: Callable[[int], int] = secrets.randbelow,
    ) -> None:
        """``rand(n)`` picks in ``range(n)`` for ``Policy.RANDOM`` (injected for tests)."""
        self.policy = policy
        self.rand = rand
        self._turn = 0
        self.max_fails = max_fails
        self.probe_interval_s = probe_interval_s
        self.clock = clock
        self._fails = [0] * count
        self._down_since: list[float | None] = [None] * count
        self._probed_at = [0.0] * count
        self.failures = [0] * count
        """Per server: failed tries and failed probes (CoreDNS's healthcheck failures)."""
        self._lock = threading.Lock()

    def is_down(self, index: int) -> bool:
        return self._down_since[index] is not None

    def order(self) -> list[int]:
        """Healthy servers in the policy's order, then the down ones in configured order
        (tried only as a last resort, which doubles as an on-demand probe)."""
        with self._lock:
            up = [i for i, down in enumerate(self._down_since) if down is None]
            down = [i for i, since in enumerate(self._down_since) if since is not None]
            turn = self._turn
            self._turn += 1
        if len(up) > 1:
            if self.policy is Policy.ROUND_ROBIN:
                start = turn % len(up)
                up = up[start:] + up[:start]
            elif self.policy is Policy.RANDOM:
                shuffled = []
                while up:  # Fisher-Yates with the injected rand
                    shuffled.append(up.pop(self.rand(len(up))))
                up = shuffled
        return up + down

    def success(self, index: int) -> bool:
        """Record a good reply; True if this brought a down server back."""
        with self._lock:
            self._fails[index] = 0
            was_down = self._down_since[index] is not None
            self._down_since[index] = None
            return was_down

    def failure(self, index: int) -> bool:
        """Record a failed try; True if this marked the server down."""
        with self._lock:
            self._fails[index] += 1
            self.failures[index] += 1
            if self._down_since[index] is None and self._fails[index] >= self.max_fails:
                now = self.clock()
                self._down_since[index] = now
                self._probed_at[index] = now
                return True
            return False

    def probe_failed(self, index: int) -> None:
        with self._lock:
            self.failures[index] += 1

    def probes_due(self) -> list[int]:
        """Down servers whose next probe is due; each is stamped as probed now."""
        now = self.clock()
        due = []
        with self._lock:
            for index, since in enumerate(self._down_since):
                if since is not None and now - self._probed_at[index] >= self.probe_interval_s:
                    self._probed_at[index] = now
                    due.append(index)
        return due


TRY_BUCKETS: Final = exponential(0.00025, 2, 16)
"""CoreDNS's ``plugin.TimeBuckets`` (ExponentialBuckets(0.00025, 2, 16)), upper bounds in s."""
_FAILURE_RCODES: Final = {reason: rcode for rcode, reason in _ANSWERED_ERRORS.items()}


class TryLatency:
    """How long each try that got a reply took, per server and rcode: CoreDNS's
    ``coredns_proxy_request_duration_seconds`` (it observes replies only, not timeouts)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._series: dict[tuple[int, int], Histogram] = {}

    def observe(self, index: int, result: Result, seconds: float) -> None:
        if isinstance(result, Reply):
            rcode = result.facts.rcode
        elif result.reason in _FAILURE_RCODES:
            rcode = _FAILURE_RCODES[result.reason]
        else:
            return
        with self._lock:
            histogram = self._series.get((index, rcode))
            if histogram is None:
                histogram = self._series[(index, rcode)] = Histogram(TRY_BUCKETS)
        histogram.observe(seconds)

    def read(self) -> dict[tuple[int, int], tuple[list[int], float]]:
        """(server index, rcode) -> (count per bucket, not cumulative; sum of seconds)."""
        with self._lock:
            series = dict(self._series)
        return {key: histogram.read() for key, histogram in series.items()}


class _Waiter:
    __slots__ = ("replies",)

    def __init__(self) -> None:
        self.replies: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()


class _TCPConnection:
    """One pipelined TCP connection: callers send framed queries under a lock and wait on
    their ID; a reader thread hands each reply to the waiter of its ID."""

    def __init__(
        self,
        address: Address,
        connect_timeout: float,
        idle_s: float,
        stats: UpstreamStats,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.address = address
        self.clock = clock
        self.idle_s = idle_s
        self.stats = stats
        self.sock = socket.create_connection(address, timeout=connect_timeout)
        # Pipelined queries must not wait for the ACK of the one before (Nagle vs delayed ACK).
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(idle_s)
        self.closed = False
        self.last_used = self.clock()
        self._pending: dict[int, _Waiter] = {}
        self._lock = threading.Lock()
        self._reader = threading.Thread(
            target=self._read_loop, name=f"upstream-tcp-{address[0]}:{address[1]}", daemon=True
        )
        self._reader.start()

    def exchange(self, build: Callable[[int], bytes]) -> tuple[int, _Waiter] | None:
        """Send ``build(id)`` with an ID unused on this connection; None if it is closed."""
        with self._lock:
            if self.closed:
                return None
            while True:
                qid = secrets.randbits(16)
                if qid not in self._pending:
                    break
            packet = build(qid)
            waiter = _Waiter()
            self._pending[qid] = waiter
            self.last_used = self.clock()
            try:
                self.sock.sendall(len(packet).to_bytes(2, "big") + packet)
            except OSError:
                del self._pending[qid]
                self._close_locked()
                return None
            return qid, waiter

    def release(self, qid: int) -> None:
        with self._lock:
            self._pending.pop(qid, None)
            self.last_used = self.clock()

    def _read_exactly(self, size: int) -> bytes | None:
        chunks = bytearray()
        while len(chunks) < size:
            try:
                chunk = self.sock.recv(size - len(chunks))
            except TimeoutError:
                with self._lock:
                    idle = not self._pending and self.clock() - self.last_used >= self.idle_s
                if idle and not chunks:
                    return None
                continue
            except OSError:
                return None
            if not chunk:
                return None
            chunks += chunk
        return bytes(chunks)

    def _read_loop(self) -> None:
        try:
            while True:
                prefix = self._read_exactly(2)
                if prefix is None:
                    return
                reply = self._read_exactly(int.from_bytes(prefix, "big"))
                if reply is None:
                    return
                qid = int.from_bytes(reply[:2], "big") if len(reply) >= 2 else -1
                with self._lock:
                    waiter = self._pending.get(qid)
                if waiter is None:
                    self.stats.mismatched += 1  # an ID we are not waiting for: drop it
                else:
                    waiter.replies.put(reply)
        finally:
            with self._lock:
                self._close_locked()

    def _close_locked(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        for waiter in self._pending.values():
            waiter.replies.put(None)

    def close(self) -> None:
        with self._lock:
            self._close_locked()


class UpstreamClient:
    """Queries one group of servers (``UpstreamConfig``); thread-safe; ``start`` runs the
    health prober, ``close`` stops it and closes pooled connections."""

    def __init__(
        self, config: UpstreamConfig, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config
        self.clock = clock
        """Every deadline and idle check reads it (it must advance with real time: the sockets
        wait in real seconds)."""
        self.stats = UpstreamStats()
        self.latency = TryLatency()
        self.health = Health(
            len(config.servers),
            config.max_fails,
            config.probe_interval_s,
            clock,
            policy=config.policy,
        )
        self._slots = threading.BoundedSemaphore(config.max_concurrent)
        self._connections: dict[int, _TCPConnection] = {}
        self._connect_locks = [threading.Lock() for _ in config.servers]
        self._stop = threading.Event()
        self._prober: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._prober is None:
            self._prober = threading.Thread(target=self._probe_loop, name="upstream-probe")
            self._prober.daemon = True
            self._prober.start()

    def close(self) -> None:
        self._stop.set()
        if self._prober is not None:
            self._prober.join(timeout=self.config.try_timeout_s + 1)
        for connection in list(self._connections.values()):
            connection.close()
        self._connections.clear()

    def _probe_loop(self) -> None:
        while not self._stop.wait(self.config.probe_interval_s):
            self.probe_once()

    def probe_once(self) -> list[int]:
        """Probe every down server whose probe is due; return those that came back."""
        back = []
        for index in self.health.probes_due():
            self.stats.probes += 1
            result = self._try(index, PROBE_NAME, wire.NS, wire.CLASS_IN, False, False, probe=True)
            if isinstance(result, Reply) or (isinstance(result, Failure) and result.answered):
                if self.health.success(index):
                    self.stats.recovered += 1
                    logger.info("upstream %s:%d is back", *self.config.servers[index])
                back.append(index)
            else:
                self.health.probe_failed(index)
        return back

    # --- queries -----------------------------------------------------------------------------

    def query(
        self, qname: bytes, qtype: int, qclass: int, *, do: bool = False, cd: bool = False
    ) -> Result:
        """Ask the group for (qname, qtype, qclass); ``qname`` is wire form, sent as given."""
        if not self._slots.acquire(blocking=False):
            self.stats.overloaded += 1
            return Failure(Reason.OVERLOADED, "max_concurrent upstream queries in flight")
        try:
            self.stats.queries += 1
            result = self._query(qname, qtype, qclass, do, cd)
        finally:
            self._slots.release()
        if isinstance(result, Reply):
            self.stats.replies += 1
        else:
            self.stats.failures += 1
        return result

    def _query(self, qname: bytes, qtype: int, qclass: int, do: bool, cd: bool) -> Result:
        deadline = self.clock() + self.config.overall_timeout_s
        order = self.health.order()
        if self.health.is_down(order[0]):  # healthy servers come first: none is healthy
            self.stats.all_down += 1
        # Only a server that timed out may be tried again within one query (the deadline
        # bounds that); one that refused, answered an error or broke the connection is done.
        done: set[int] = set()
        last: Failure = Failure(Reason.TIMEOUT, "no server answered in time")
        previous = -1
        attempt = 0
        while len(done) < len(order):
            remaining = deadline - self.clock()
            if remaining <= 0.001:
                break
            index = order[attempt % len(order)]
            attempt += 1
            if index in done:
                continue
            if previous >= 0 and index != previous:
                self.stats.failovers += 1
            previous = index
            timeout = min(self.config.try_timeout_s, remaining)
            started = self.clock()
            result = self._try(index, qname, qtype, qclass, do, cd, timeout=timeout)
            self.latency.observe(index, result, self.clock() - started)
            if isinstance(result, Reply):
                if self.health.success(index):
                    self.stats.recovered += 1
                return result
            last = result
            if result.reason is not Reason.TIMEOUT:
                done.add(index)
            if result.answered:
                if self.health.success(index):  # alive: an error reply is not ill health
                    self.stats.recovered += 1
            elif self.health.failure(index):
                self.stats.marked_down += 1
                logger.warning(
                    "upstream %s:%d marked down: %s", *self.config.servers[index], result.reason
                )
        return last

    def _try(
        self,
        index: int,
        qname: bytes,
        qtype: int,
        qclass: int,
        do: bool,
        cd: bool,
        *,
        timeout: float | None = None,
        probe: bool = False,
    ) -> Result:
        """One try at one server, including the TC→TCP and FORMERR→no-EDNS retries."""
        until = self.clock() + (timeout if timeout is not None else self.config.try_timeout_s)
        tcp = self.config.transport is Transport.TCP
        udp_size: int | None = self.config.udp_size
        ask = _Ask(qname, qtype, qclass, do, cd, qname.lower())
        for _ in range(3):
            if tcp:
                result = self._tcp_try(index, ask, udp_size, until)
            else:
                result = self._udp_try(index, ask, udp_size, until)
            if isinstance(result, Failure):
                return result
            facts = result.facts
            if facts.truncated and not tcp:
                self.stats.truncated += 1
                tcp = True
                continue
            if facts.truncated:
                return Failure(Reason.TRUNCATED, "TC=1 over TCP")
            rcode = facts.rcode
            if rcode == wire.FORMERR and udp_size is not None and not probe:
                udp_size = None  # RFC 6891 §7: the server may not speak EDNS
                continue
            if rcode in _ANSWERED_ERRORS:
                return Failure(_ANSWERED_ERRORS[rcode], f"rcode {rcode} from {result.server}")
            if rcode not in (wire.NOERROR, wire.NXDOMAIN) and not probe:
                return Failure(Reason.SERVFAIL, f"unexpected rcode {rcode}")
            return result
        return Failure(Reason.SERVFAIL, "retries exhausted")

    def _verdict(self, data: bytes, qid: int, ask: _Ask) -> ReplyFacts | None:
        """The reply's facts if it answers our query; None (counted) if it must be dropped."""
        if len(data) < wire.HEADER_SIZE:
            self.stats.garbage += 1
            return None
        rid, flags = struct.unpack_from(">HH", data)
        if rid != qid or not flags & message.QR or flags & 0x7800:
            self.stats.mismatched += 1
            return None
        try:
            facts = message.inspect(data)
        except MessageError:
            self.stats.garbage += 1
            return None
        if (facts.qname_lower, facts.qtype, facts.qclass) != (
            ask.qname_lower,
            ask.qtype,
            ask.qclass,
        ):
            self.stats.mismatched += 1
            return None
        return facts

    def _udp_try(self, index: int, ask: _Ask, udp_size: int | None, until: float) -> Result:
        address = self.config.servers[index]
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        qid = secrets.randbits(16)
        packet = ask.packet(qid, udp_size)
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind(("::", 0) if family == socket.AF_INET6 else ("0.0.0.0", 0))
                sock.connect(address)
                sock.send(packet)
            except OSError as error:
                self.stats.unreachable += 1
                return Failure(Reason.UNREACHABLE, str(error))
            while True:
                remaining = until - self.clock()
                if remaining <= 0:
                    self.stats.timeouts += 1
                    return Failure(Reason.TIMEOUT, f"{address[0]}:{address[1]} udp")
                sock.settimeout(remaining)
                try:
                    data = sock.recv(RECEIVE_SIZE)
                except TimeoutError:
                    continue
                except OSError as error:  # ICMP port unreachable on a connected socket
                    self.stats.unreachable += 1
                    return Failure(Reason.UNREACHABLE, str(error))
                facts = self._verdict(data, qid, ask)
                if facts is not None:
                    return Reply(data, facts, address, Transport.UDP)

    def _connection(self, index: int, until: float) -> _TCPConnection | Failure:
        connection = self._connections.get(index)
        if connection is not None and not connection.closed:
            return connection
        with self._connect_locks[index]:
            connection = self._connections.get(index)
            if connection is not None and not connection.closed:
                return connection
            address = self.config.servers[index]
            try:
                connection = _TCPConnection(
                    address,
                    max(0.001, until - self.clock()),
                    self.config.tcp_idle_s,
                    self.stats,
                    self.clock,
                )
            except TimeoutError:
                self.stats.timeouts += 1
                return Failure(Reason.TIMEOUT, f"connect to {address[0]}:{address[1]}")
            except OSError as error:
                self.stats.unreachable += 1
                return Failure(Reason.UNREACHABLE, str(error))
            self.stats.tcp_connects += 1
            self._connections[index] = connection
            return connection

    def _tcp_try(self, index: int, ask: _Ask, udp_size: int | None, until: float) -> Result:
        address = self.config.servers[index]
        for _attempt in range(2):  # a pooled connection the server closed: one fresh retry
            connection = self._connection(index, until)
            if isinstance(connection, Failure):
                return connection
            sent = connection.exchange(lambda qid: ask.packet(qid, udp_size))
            if sent is None:
                continue
            qid, waiter = sent
            try:
                while True:
                    remaining = until - self.clock()
                    if remaining <= 0:
                        self.stats.timeouts += 1
                        return Failure(Reason.TIMEOUT, f"{address[0]}:{address[1]} tcp")
                    try:
                        data = waiter.replies.get(timeout=remaining)
                    except queue.Empty:
                        continue
                    if data is None:
                        break  # connection closed under us
                    facts = self._verdict(data, qid, ask)
                    if facts is not None:
                        return Reply(data, facts, address, Transport.TCP)
            finally:
                connection.release(qid)
        self.stats.unreachable += 1
        return Failure(Reason.CLOSED, f"{address[0]}:{address[1]} closed the connection")
