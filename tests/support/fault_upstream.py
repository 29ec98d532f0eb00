"""A scriptable in-process DNS upstream on 127.0.0.1:0 (UDP and TCP) that misbehaves on cue.

It answers from a dict of zone-file lines like a small authoritative server (CNAMEs followed
inside its data, NODATA and NXDOMAIN with the SOA of the longest matching zone), and each query
can instead get a scripted fault:

``answer``, ``delay`` (then answer), ``drop``, ``servfail``, ``refused``, ``formerr_edns``
(FORMERR while the query has an OPT), ``garbage`` (right ID, unparseable body), ``wrong_id``,
``wrong_question`` (a reply to a question that was not asked), ``spoof_then_answer`` (wrong ID
and wrong question first, the real answer ``delay_s`` later), ``truncate`` (TC=1 and no records
over UDP; the full answer over TCP), ``poison_cname`` (the name CNAMEs out of the bailiwick to
``POISON_TARGET``, whose A record comes along), ``poison_additional`` (the answer plus an
unrelated A record in additional and a foreign NS in authority) and ``poison_answer`` (the answer
plus an unrelated A record in the answer section).

Script with ``plan(qname_or_None, *actions)``: actions queue per name (None: any name) and are
used up one per query; with none queued, ``default`` applies. Every query is logged in ``seen``
(transport, name, type, ID, source port, whether it had EDNS). Replies go out from worker
threads, so a delayed reply never holds up the next query (TCP replies may come out of order,
which tests pipelining).
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

POISON_TARGET = "evil.attacker.test."
POISON_ADDRESS = "203.0.113.66"


@dataclass(frozen=True)
class Action:
    kind: str = "answer"
    delay_s: float = 0.0


@dataclass(frozen=True)
class Seen:
    transport: str
    name: str
    qtype: str
    id: int
    port: int
    edns: bool
    do: bool


def _rrset(line: str) -> dns.rrset.RRset:
    name, ttl, rdclass, rdtype, rdata = line.split(None, 4)
    return dns.rrset.from_text(name, int(ttl), rdclass, rdtype, rdata)


class FaultUpstream:
    def __init__(self, records: Sequence[str] = (), default: Action | str = "answer") -> None:
        self.data: dict[tuple[dns.name.Name, int], dns.rrset.RRset] = {}
        self.soas: dict[dns.name.Name, dns.rrset.RRset] = {}
        for line in records:
            self.add(line)
        self.default = Action(default) if isinstance(default, str) else default
        self.seen: list[Seen] = []
        self._plans: dict[str | None, deque[Action]] = defaultdict(deque)
        self._lock = threading.Lock()
        self.udp, self.tcp = _bind_pair()
        self.port = self.udp.getsockname()[1]
        self.host = "127.0.0.1"
        self.tcp_connections = 0
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []

    # --- data and script ---------------------------------------------------------------------

    def add(self, line: str) -> None:
        rrset = _rrset(line)
        key = (rrset.name, rrset.rdtype)
        if key in self.data:
            self.data[key].union_update(rrset)
        else:
            self.data[key] = rrset
        if rrset.rdtype == dns.rdatatype.SOA:
            self.soas[rrset.name] = rrset

    def plan(self, qname: str | None, *actions: Action | str) -> None:
        key = None if qname is None else dns.name.from_text(qname).to_text().lower()
        with self._lock:
            for action in actions:
                self._plans[key].append(Action(action) if isinstance(action, str) else action)

    def _next_action(self, qname: str) -> Action:
        with self._lock:
            for key in (qname.lower(), None):
                queued = self._plans.get(key)
                if queued:
                    return queued.popleft()
        return self.default

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def count(self, name: str | None = None, transport: str | None = None) -> int:
        wanted = None if name is None else dns.name.from_text(name).to_text().lower()
        return sum(
            1
            for seen in list(self.seen)
            if (wanted is None or seen.name == wanted)
            and (transport is None or seen.transport == transport)
        )

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FaultUpstream:
        for target in (self._udp_loop, self._tcp_loop):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stopping = True
        for sock in (self.udp, self.tcp, *self._conns):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(timeout=2)

    def __enter__(self) -> FaultUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- answering ---------------------------------------------------------------------------

    def answer(self, query: dns.message.Message) -> dns.message.Message:
        """What a well-behaved authoritative server would say (RD ignored, AA set)."""
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        name, rdtype = question.name, question.rdtype
        for _hop in range(8):
            rrset = self.data.get((name, rdtype))
            if rrset is not None:
                response.answer.append(rrset)
                return response
            cname = self.data.get((name, dns.rdatatype.CNAME))
            if cname is None or rdtype == dns.rdatatype.CNAME:
                break
            response.answer.append(cname)
            name = cname[0].target
        exists = any(owner == name or owner.is_subdomain(name) for owner, _t in self.data)
        if not exists:
            response.set_rcode(dns.rcode.NXDOMAIN)  # of the chain's last name (RFC 6604)
        soa = self._soa_for(name)
        if soa is not None:
            response.authority.append(soa)
        return response

    def _soa_for(self, name: dns.name.Name) -> dns.rrset.RRset | None:
        best = None
        for zone, soa in self.soas.items():
            if name.is_subdomain(zone) and (best is None or len(zone) > len(best.name)):
                best = soa
        return best

    def _replies(self, data: bytes, transport: str, port: int) -> list[tuple[float, bytes]]:
        """(delay, bytes) to send for one query."""
        try:
            query = dns.message.from_wire(data)
        except Exception:
            return []
        question = query.question[0]
        qname = question.name.to_text().lower()
        self.seen.append(
            Seen(
                transport,
                qname,
                dns.rdatatype.to_text(question.rdtype),
                query.id,
                port,
                query.edns >= 0,
                bool(query.ednsflags & dns.flags.DO),
            )
        )
        action = self._next_action(qname)
        kind = action.kind
        if kind == "drop":
            return []
        if kind == "garbage":
            return [(action.delay_s, data[:2] + b"\x81\x80" + os.urandom(9) + b"\xc0\xff")]
        if kind in ("servfail", "refused"):
            response = dns.message.make_response(query)
            response.set_rcode(dns.rcode.SERVFAIL if kind == "servfail" else dns.rcode.REFUSED)
            return [(action.delay_s, response.to_wire())]
        if kind == "formerr_edns" and query.edns >= 0:
            response = dns.message.make_response(query)
            response.use_edns(False)
            response.set_rcode(dns.rcode.FORMERR)
            return [(action.delay_s, response.to_wire())]
        response = self.answer(query)
        if kind == "poison_cname":
            response = dns.message.make_response(query)
            response.answer.append(
                dns.rrset.from_text(question.name, 300, "IN", "CNAME", POISON_TARGET)
            )
            response.answer.append(
                dns.rrset.from_text(POISON_TARGET, 300, "IN", "A", POISON_ADDRESS)
            )
        elif kind == "poison_additional":
            response.additional.append(
                dns.rrset.from_text("www.bank.test.", 86400, "IN", "A", POISON_ADDRESS)
            )
            response.authority.append(
                dns.rrset.from_text("bank.test.", 86400, "IN", "NS", "ns.attacker.test.")
            )
        elif kind == "poison_answer":
            response.answer.append(
                dns.rrset.from_text("www.bank.test.", 86400, "IN", "A", POISON_ADDRESS)
            )
        if kind == "truncate" and transport == "udp":
            response = dns.message.make_response(query)
            response.flags |= dns.flags.TC
        wire = response.to_wire()
        if kind == "wrong_id":
            return [(action.delay_s, struct.pack(">H", (query.id + 1) & 0xFFFF) + wire[2:])]
        if kind == "wrong_question":
            return [(action.delay_s, self._other_question(query))]
        if kind == "spoof_then_answer":
            spoofs = [
                struct.pack(">H", (query.id + 1) & 0xFFFF) + wire[2:],
                self._other_question(query),
            ]
            return [(0.0, spoof) for spoof in spoofs] + [(action.delay_s, wire)]
        return [(action.delay_s, wire)]

    def _other_question(self, query: dns.message.Message) -> bytes:
        other = dns.message.make_query("unasked.example.test.", "A")
        other.id = query.id
        response = dns.message.make_response(other)
        response.answer.append(
            dns.rrset.from_text("unasked.example.test.", 300, "IN", "A", POISON_ADDRESS)
        )
        return response.to_wire()

    def _send_later(self, send: object, delay_s: float, payload: bytes) -> None:
        def run() -> None:
            if delay_s:
                time.sleep(delay_s)
            with contextlib.suppress(OSError):
                send(payload)  # type: ignore[operator]

        if delay_s:
            threading.Thread(target=run, daemon=True).start()
        else:
            run()

    def _udp_loop(self) -> None:
        while not self._stopping:
            try:
                data, peer = self.udp.recvfrom(65535)
            except OSError:
                return
            if self._stopping or peer is None:  # shutdown() wakes recvfrom with no peer
                return
            for delay, payload in self._replies(data, "udp", peer[1]):
                self._send_later(lambda p, peer=peer: self.udp.sendto(p, peer), delay, payload)

    def _tcp_loop(self) -> None:
        while not self._stopping:
            try:
                conn, _peer = self.tcp.accept()
            except OSError:
                return
            self.tcp_connections += 1
            self._conns.append(conn)
            thread = threading.Thread(target=self._serve_tcp, args=(conn,), daemon=True)
            thread.start()

    def _serve_tcp(self, conn: socket.socket) -> None:
        lock = threading.Lock()
        port = conn.getpeername()[1]

        def send(payload: bytes) -> None:
            with lock:
                conn.sendall(len(payload).to_bytes(2, "big") + payload)

        with contextlib.suppress(OSError):
            while True:
                prefix = _read_exactly(conn, 2)
                if prefix is None:
                    return
                data = _read_exactly(conn, int.from_bytes(prefix, "big"))
                if data is None:
                    return
                for delay, payload in self._replies(data, "tcp", port):
                    self._send_later(send, delay, payload)


def _bind_pair() -> tuple[socket.socket, socket.socket]:
    """A UDP and a listening TCP socket on the same free loopback port (the UDP port's TCP
    twin can be taken, e.g. by an ephemeral client port: try again)."""
    for _ in range(50):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            tcp.bind(("127.0.0.1", udp.getsockname()[1]))
        except OSError:
            udp.close()
            tcp.close()
            continue
        tcp.listen(16)
        return udp, tcp
    raise RuntimeError("no free UDP+TCP port pair on 127.0.0.1")


def _read_exactly(conn: socket.socket, size: int) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = conn.recv(size - len(chunks))
        if not chunk:
            return None
        chunks += chunk
    return bytes(chunks)


@contextlib.contextmanager
def fault_upstream(records: Sequence[str] = (), default: str = "answer") -> Iterator[FaultUpstream]:
    upstream = FaultUpstream(records, default)
    upstream.start()
    try:
        yield upstream
    finally:
        upstream.stop()
