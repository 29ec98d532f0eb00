"""The query log of kdns and nodecache: off by default, switched and re-filtered at runtime.

Settings (``QueryLogConfig``; the ``query_log`` config key, or ``POST /querylog?...`` on the
health and metrics ports): ``enabled``; ``format`` ``text`` (CoreDNS's ``log`` plugin line) or
``json`` (``kdns.querylines``); filters, all of which a query must pass: ``rcode`` classes
(CoreDNS's: ``success`` NOERROR with an answer, ``denial`` NXDOMAIN or NODATA, ``error`` any other
rcode), name ``suffix`` (case-insensitive, on label boundaries) and ``client`` CIDRs; then
``sample`` (1 in N of the matching queries) and ``rate`` (at most that many lines a second, a
token bucket with a one-second burst; 0 is no limit); ``output`` ``stderr`` or a file path
(appended to).

Cost. Off, the serving loops test one attribute per query (``enabled``) and the C loop none: it
is told to hand queries to the Python loop only while the log is on (``watch``). On, the
serving thread runs the filters, the sampler and the token bucket on the bytes it has (a few
hundred ns; no parsing) and appends what passes to a bounded queue; a writer thread parses,
formats and writes it, at most ``rate`` lines a second. A full queue drops the oldest line
(counted). ``stats`` counts every outcome; both programs export it on /metrics.
"""

from __future__ import annotations

import collections
import ipaddress
import json
import logging
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any, Final

from kdns import querylines
from kdns.config import ConfigError, QueryLogConfig, parse_query_log

logger = logging.getLogger(__name__)

OUTCOMES: Final = ("written", "filtered", "sampled_out", "rate_limited", "queue_full")
QUEUE_MAX: Final = 10_000
WRITE_INTERVAL_S: Final = 0.05
_CLIENT_MEMO_MAX: Final = 4096


def _suffix_wire(suffix: str) -> bytes:
    return b"".join(bytes([len(label)]) + label.encode() for label in suffix.rstrip(".").split("."))


@dataclass
class QueryLogStats:
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))


class QueryLog:
    """One program's query log. ``offer`` is called by the serving threads; one writer thread
    (started on first enable) formats and writes."""

    def __init__(
        self,
        server: str,
        config: QueryLogConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.server = server
        self.clock = clock
        self.wall_clock = wall_clock
        self.stats = QueryLogStats()
        self.enabled = False
        """Read by the serving loops on every query: the one cost while the log is off."""
        self.config = QueryLogConfig()
        self._watchers: list[Callable[[bool], None]] = []
        self._queue: collections.deque[tuple[Any, ...]] = collections.deque(maxlen=QUEUE_MAX)
        self._lock = threading.Lock()
        self._writer: threading.Thread | None = None
        self._stop = threading.Event()
        self._output: IO[str] | None = None
        self._output_name = ""
        self._suffixes: tuple[bytes, ...] = ()
        self._clients: dict[str, bool] = {}
        self._tokens = 0.0
        self._refilled = clock()
        self._seen = 0
        self.files: set[str] = set()
        """Outputs that ``POST /querylog`` may choose besides stderr: those a config named (an
        HTTP client must not make the process append to a file of its choosing)."""
        self.configure(config or QueryLogConfig())

    # --- control (any thread) ----------------------------------------------------------------

    def configure(self, config: QueryLogConfig, *, from_config: bool = True) -> None:
        """Apply new settings at once (filters, sampling, rate, output, on/off). A config file
        (start, nodecache's reload) may name any output; ``http_route`` only the known ones."""
        with self._lock:
            if from_config:
                self.files.add(config.output)
            if config.enabled and config.output != self._output_name:
                self._open(config.output)
            self._suffixes = tuple(_suffix_wire(s).lower() + b"\x00" for s in config.suffix)
            self._clients = {}
            changed = config.enabled != self.enabled
            if changed or config.rate != self.config.rate:
                self._tokens = config.rate  # a full bucket: the first second's lines pass
                self._refilled = self.clock()
            if changed and config.enabled:
                # The watchers are the C loops' divert flags (a flag store each, so called under
                # the lock): C does not log, so every C loop hands its socket to the Python
                # loop before anyone can see the log on (and take a query's absence from it
                # for a sign that none came).
                for watcher in self._watchers:
                    watcher(True)
            self.config = config
            self.enabled = config.enabled
            if config.enabled and self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_loop, name="querylog", daemon=True
                )
                self._writer.start()
            if changed and not config.enabled:
                for watcher in self._watchers:  # off first, then the C loops take over again
                    watcher(False)
        if changed:
            logger.info(
                "query log %s", "on: " + repr(config.describe()) if config.enabled else "off"
            )

    def watch(self, callback: Callable[[bool], None]) -> None:
        """Call ``callback(enabled)`` now and on every switch (the C loop's divert flag): with
        True before the log is on, with False once it is off. It is called holding the log's
        lock, so it must not call back into the log."""
        with self._lock:
            self._watchers.append(callback)
            enabled = self.enabled
        callback(enabled)

    def close(self) -> None:
        self._stop.set()
        if self._writer is not None:
            self._writer.join(timeout=2)
        self._drain()
        with self._lock:
            if self._output is not None and self._output is not sys.stderr:
                self._output.close()
            self._output = None

    def status(self) -> dict[str, Any]:
        return {**self.config.describe(), "stats": dict(self.stats.outcomes)}

    # --- the serving threads ------------------------------------------------------------------

    def offer(
        self,
        packet: bytes,
        reply: bytes,
        client: str,
        port: int,
        proto: str,
        deferred: bool,
        elapsed_ns: int,
    ) -> None:
        """Consider one answered query: filter, sample, rate-limit, queue. Never raises for
        any bytes; parses nothing."""
        config = self.config
        outcomes = self.stats.outcomes
        if len(reply) < 12 or not self._passes(config, packet, reply, client):
            outcomes["filtered"] += 1
            return
        self._seen += 1
        if config.sample > 1 and self._seen % config.sample:
            outcomes["sampled_out"] += 1
            return
        if config.rate > 0:
            now = self.clock()
            self._tokens = min(config.rate, self._tokens + (now - self._refilled) * config.rate)
            self._refilled = now
            if self._tokens < 1:
                outcomes["rate_limited"] += 1
                return
            self._tokens -= 1
        if len(self._queue) >= QUEUE_MAX:
            outcomes["queue_full"] += 1
        cache_hit = not deferred and not reply[2] & 0x04 and (reply[3] & 0xF) in (0, 3)
        self._queue.append(
            (self.wall_clock(), packet, reply, client, port, proto, elapsed_ns / 1e9, cache_hit)
        )

    def _passes(self, config: QueryLogConfig, packet: bytes, reply: bytes, client: str) -> bool:
        if config.rcode:
            rcode = reply[3] & 0xF
            answers = (reply[6] << 8) | reply[7]
            if rcode == 0 and answers:
                kind = "success"
            elif rcode in (0, 3):
                kind = "denial"
            else:
                kind = "error"
            if kind not in config.rcode:
                return False
        if self._suffixes:
            end = packet.find(b"\x00", 12)
            name = packet[12 : end + 1].lower() if end > 0 else b""
            if not any(name == s or name.endswith(s) for s in self._suffixes):
                return False
        if config.client:
            allowed = self._clients.get(client)
            if allowed is None:
                try:
                    address = ipaddress.ip_address(client.partition("%")[0])
                    allowed = any(address in network for network in config.client)
                except ValueError:
                    allowed = False
                if len(self._clients) >= _CLIENT_MEMO_MAX:
                    self._clients = {}
                self._clients[client] = allowed
            if not allowed:
                return False
        return True

    # --- the writer thread --------------------------------------------------------------------

    def _open(self, output: str) -> None:
        if self._output is not None and self._output is not sys.stderr:
            self._output.close()
        if output == "stderr":
            self._output = sys.stderr
        else:
            try:
                self._output = open(output, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
            except OSError as error:
                raise ConfigError(
                    "query_log.output", f"cannot open {output}: {error.strerror}"
                ) from None
        self._output_name = output

    def _write_loop(self) -> None:
        while not self._stop.wait(WRITE_INTERVAL_S):
            self._drain()

    def _drain(self) -> None:
        lines: list[str] = []
        config = self.config
        render = querylines.json_line if config.format == "json" else querylines.text_line
        while self._queue:
            ts, packet, reply, client, port, proto, duration_s, cache_hit = self._queue.popleft()
            found = querylines.entry(
                packet, reply, ts=ts, server=self.server, client=client, port=port,
                proto=proto, duration_s=duration_s, cache_hit=cache_hit,
            )  # fmt: skip
            if found is not None:
                lines.append(render(found))
        if not lines:
            return
        with self._lock:
            output = self._output
            if output is None:
                return
            try:
                output.write("\n".join(lines) + "\n")
                output.flush()
            except OSError as error:
                logger.warning("query log: cannot write %s: %s", self._output_name, error)
                return
        self.stats.outcomes["written"] += len(lines)


def http_route(log: QueryLog) -> Callable[[str, str], tuple[int, str]]:
    """``GET /querylog``: the settings and counts as JSON; ``POST /querylog?enabled=true&...``:
    change them (the keys of ``query_log``; lists comma-separated), answered with the result,
    or 400 naming the field."""

    def route(method: str, query: str) -> tuple[int, str]:
        if method == "POST":
            pairs = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
            output = pairs.get("output")
            if output is not None and output not in ("stderr", *log.files):
                return 400, (
                    "query_log.output: over HTTP only stderr or the file of the config "
                    f"({', '.join(sorted(log.files))}) can be chosen\n"
                )
            try:
                log.configure(parse_query_log(pairs, log.config), from_config=False)
            except ConfigError as error:
                return 400, f"{error}\n"
        return 200, json.dumps(log.status()) + "\n"

    return route
