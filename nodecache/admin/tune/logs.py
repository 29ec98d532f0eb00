"""Reading query logs for ``tune``: text lines in, ``Query`` values out, in time order.

Two formats, told apart by the first non-blank line (``{`` starts a JSON line):

* **The query log** (kdns and nodecache, one JSON object per answered query). Read keys:
  ``ts`` (unix seconds), ``qname`` (presentation format, escapes read), ``qtype`` (mnemonic or
  ``TYPEnnn``), ``rcode`` (mnemonic, or a number for the unnamed ones),
  ``ttl`` (the answer's smallest TTL, or the denial's negative TTL; null when none), ``size``
  (reply bytes), ``do`` and ``cache_hit``. Other keys (``server``, ``client``, ``port``,
  ``proto``, ``id``, ``qclass``, ``duration_s``...) are ignored. A nodecache log's cache hits
  carry the *remaining* TTL, so a key's TTL is taken from its last cache miss when it had one.
* **A dnsperf list**: ``name type`` per line (``#`` comments), as ``dnsperf -d`` reads. It has
  no answers and no times: queries are spaced at ``rate`` per second from t=0, and every
  answer is assumed NOERROR with ``assumed_ttl`` seconds and ``assumed_size`` bytes.

A line that cannot be read (bad JSON, a missing or mistyped key, an unknown type or rcode) is
counted with its line number and reason, never fatal. pcap is not read: see the README.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import dnslib

from kdns import dns

DEFAULT_RATE: Final = 100.0
ASSUMED_TTL_S: Final = 30
ASSUMED_SIZE: Final = 100
MAX_REASONS: Final = 5
MAX_LABEL: Final = 63
MAX_NAME: Final = 255
RCODES: Final = {
    name: number
    for number, name in enumerate(
        ("NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN",
         "YXRRSET", "NXRRSET", "NOTAUTH", "NOTZONE")
    )
} | {"BADSIG": 16, "BADVERS": 16, "BADKEY": 17, "BADTIME": 18, "BADMODE": 19, "BADNAME": 20,
     "BADALG": 21, "BADTRUNC": 22, "BADCOOKIE": 23}  # fmt: skip
"""The rcode mnemonics the query log writes (miekg/dns's, as CoreDNS logs them)."""


@dataclass(frozen=True, slots=True)
class Query:
    """One answered query, as the replay needs it."""

    ts: float
    name: bytes
    """Lower-case wire name."""
    qtype: int
    do: bool
    rcode: int
    ttl: int | None
    size: int
    cache_hit: bool


@dataclass(slots=True)
class LogRead:
    """What was read, and what could not be."""

    format: str
    queries: list[Query] = field(default_factory=list)
    lines: int = 0
    malformed: int = 0
    reasons: list[str] = field(default_factory=list)
    """The first few malformed lines: ``"line 7: ts: expected a number"``."""

    def bad(self, number: int, reason: str) -> None:
        self.malformed += 1
        if len(self.reasons) < MAX_REASONS:
            self.reasons.append(f"line {number}: {reason}")

    @property
    def span_s(self) -> float:
        """Seconds from the first query to the last (at least 1, for rates)."""
        if not self.queries:
            return 1.0
        return max(1.0, self.queries[-1].ts - self.queries[0].ts)


class LineError(ValueError):
    """Why one line cannot be used."""


def _mnemonic(text: str, generic: str, table: dict[str, int], what: str) -> int:
    upper = text.strip().upper()
    if upper.startswith(generic) and upper[len(generic) :].isdigit():
        return int(upper[len(generic) :])
    number = table.get(upper)
    if number is None:
        raise LineError(f"{what}: unknown {what} {text!r}")
    return int(number)


def qtype_number(text: str) -> int:
    """``"AAAA"`` -> 28, ``"TYPE65"`` -> 65 (RFC 3597 §5)."""
    return _mnemonic(text, "TYPE", dnslib.QTYPE.reverse, "qtype")


def rcode_number(text: str) -> int:
    """``"NXDOMAIN"`` -> 3, ``"BADCOOKIE"`` -> 23, ``"11"`` (unnamed, as logged) -> 11."""
    if text.strip().isdigit():
        return int(text)
    return _mnemonic(text, "RCODE", RCODES, "rcode")


def wire_name(text: str) -> bytes:
    """A name in presentation format (``\\.`` and ``\\DDD`` escapes, as the query log
    writes bytes outside printable ASCII) -> its lower-case wire form."""
    labels: list[bytes] = []
    label = bytearray()
    index = 0
    body = text.strip()
    if body in ("", "."):
        return b"\0"
    while index < len(body):
        char = body[index]
        if char == "\\":
            digits = body[index + 1 : index + 4]
            if len(digits) == 3 and digits.isdigit() and int(digits) < 256:
                label.append(int(digits))
                index += 4
                continue
            if index + 1 >= len(body):
                raise LineError(f"qname: a lone backslash ends {text!r}")
            label += body[index + 1].encode("latin-1", "replace")
            index += 2
            continue
        if char == ".":
            labels.append(bytes(label))
            label = bytearray()
        else:
            label += char.encode("latin-1", "replace")
        index += 1
    if label:
        labels.append(bytes(label))
    out = bytearray()
    for part in labels:
        if not part or len(part) > MAX_LABEL:
            raise LineError(f"qname: bad label in {text!r}")
        out.append(len(part))
        out += bytes(b + 32 if 65 <= b <= 90 else b for b in part)  # ASCII only (RFC 4343)
    out.append(0)
    if len(out) > MAX_NAME:
        raise LineError(f"qname: longer than {MAX_NAME} octets")
    return bytes(out)


def _typed(record: dict[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    if key not in record:
        raise LineError(f"{key}: missing")
    value = record[key]
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise LineError(f"{key}: expected {what}, got {value!r}")
    if not isinstance(value, kind):
        raise LineError(f"{key}: expected {what}, got {value!r}")
    return value


def query_from_json(record: object) -> Query:
    """One query-log object -> ``Query`` (module docstring); raises ``LineError``."""
    if not isinstance(record, dict):
        raise LineError("expected a JSON object")
    ts = float(_typed(record, "ts", (int, float), "a number"))
    if not math.isfinite(ts):
        raise LineError(f"ts: expected a finite number, got {ts!r}")
    name = wire_name(_typed(record, "qname", str, "a string"))
    qtype = qtype_number(_typed(record, "qtype", str, "a type mnemonic"))
    rcode = rcode_number(_typed(record, "rcode", str, "an rcode mnemonic"))
    ttl = record.get("ttl")
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 0):
        raise LineError(f"ttl: expected a non-negative integer or null, got {ttl!r}")
    size = record.get("size", ASSUMED_SIZE)
    if isinstance(size, bool) or not isinstance(size, int) or size < dns.HEADER_SIZE:
        raise LineError(f"size: expected reply bytes (at least 12), got {size!r}")
    do = record.get("do", False)
    hit = record.get("cache_hit", False)
    if not isinstance(do, bool) or not isinstance(hit, bool):
        raise LineError("do and cache_hit: expected true or false")
    return Query(ts, name, qtype, do, rcode, ttl, size, hit)


def read(
    lines: Iterable[str],
    *,
    rate: float = DEFAULT_RATE,
    assumed_ttl: int = ASSUMED_TTL_S,
    assumed_size: int = ASSUMED_SIZE,
) -> LogRead:
    """Read either format (module docstring); queries sorted by time (stable)."""
    result: LogRead | None = None
    sent = 0
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if result is None:
            result = LogRead("query log" if line.startswith("{") else "dnsperf")
        result.lines += 1
        try:
            if result.format == "query log":
                try:
                    record = json.loads(line)
                except ValueError as error:
                    raise LineError(f"not JSON: {error}") from None
                result.queries.append(query_from_json(record))
            else:
                words = line.split()
                if len(words) != 2:
                    raise LineError("expected 'name type'")
                query = Query(
                    sent / rate, wire_name(words[0]), qtype_number(words[1]), False,
                    dns.NOERROR, assumed_ttl, assumed_size, False,
                )  # fmt: skip
                sent += 1
                result.queries.append(query)
        except LineError as error:
            result.bad(number, str(error))
    if result is None:
        return LogRead("empty")
    result.queries.sort(key=lambda query: query.ts)
    return result
