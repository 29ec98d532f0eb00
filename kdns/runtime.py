"""The rebuild path: source changes -> store -> index -> answer table -> published to servers.

Sources hand changes to ``submit`` (watch events) or ``replace`` (a whole snapshot, or a
relist) from any thread. One publisher thread drains everything queued, applies it to the
single-writer store, and publishes one new table built only from the owners that changed; a
burst of watch events therefore costs one rebuild, not one per event. The swap into the
``Responder`` is one reference assignment, so no reader sees a half-built table.

``flush`` waits until everything submitted before it is published (tests and start-up use it).

Each publish also measures DNS programming latency as CoreDNS does
(``coredns_kubernetes_dns_programming_duration_seconds``): for each changed EndpointSlice of a
headless Service carrying the controller's trigger time, the wall-clock time from that trigger
to the table that answers it. The initial load is not a change and is not measured.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from kdns.config import ZoneConfig
from kdns.histogram import Histogram, exponential
from kdns.model import KubeObject
from kdns.names import Name, name_to_text
from kdns.serve.protocol import Responder
from kdns.state import Index, Store
from kdns.synth.resolve import custom_collisions
from kdns.table import AnswerTable, TableBuilder

logger = logging.getLogger(__name__)

Change = Callable[[Store], None]

PROGRAMMING_BUCKETS = exponential(0.001, 2, 20)
"""CoreDNS's buckets for DNS programming latency: 1 ms to about 17 minutes."""
SERVICE_KINDS = ("cluster_ip", "headless_with_selector", "headless_without_selector")


class Runtime:
    """Owns the store and the table builder for one server."""

    def __init__(self, config: ZoneConfig, responder: Responder, synced: bool = True) -> None:
        self.store = Store(config)
        self.store.synced = synced
        self.builder = TableBuilder()
        self.responder = responder
        self._lock = threading.Lock()
        self._pending: list[Change] = []
        self._wake = threading.Condition()
        self._submitted = 0
        self._published = 0
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.last_publish_s = 0.0
        self.collisions: list[Name] = []
        """Custom names the cluster also defines, as of the last publish (they win)."""
        self.programming = {kind: Histogram(PROGRAMMING_BUCKETS) for kind in SERVICE_KINDS}
        """Per service kind (CoreDNS's labels; only headless_with_selector is measured)."""

    @property
    def table(self) -> AnswerTable | None:
        return self.builder.table

    # -- synchronous -------------------------------------------------------------------------

    def replace(
        self,
        objects: Iterable[KubeObject],
        kinds: Iterable[str] | None = None,
        namespace: str | None = None,
    ) -> None:
        """Replace what ``kinds``/``namespace`` cover with ``objects`` and publish now."""
        materialized = list(objects)
        kind_list = list(kinds) if kinds is not None else None
        self.apply(lambda store: store.replace_all(materialized, kind_list, namespace))

    def apply(self, change: Change) -> None:
        """Apply one change and publish, in the caller's thread."""
        with self._lock:
            change(self.store)
            self._publish()

    # -- batched -------------------------------------------------------------------------------

    def submit(self, change: Change) -> int:
        """Queue a change for the publisher thread; returns its sequence number."""
        with self._wake:
            self._pending.append(change)
            self._submitted += 1
            ticket = self._submitted
            self._wake.notify_all()
        if self._thread is None:
            self.start()
        return ticket

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every change submitted so far is published."""
        with self._wake:
            target = self._submitted
            return self._wake.wait_for(lambda: self._published >= target, timeout)

    def start(self) -> None:
        with self._wake:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: bool(self._pending) or self._stopping)
                if self._stopping and not self._pending:
                    return
                batch, self._pending = self._pending, []
                upto = self._submitted
            with self._lock:
                for change in batch:
                    try:
                        change(self.store)
                    except Exception:
                        logger.exception("a source change failed to apply; skipped")
                try:
                    self._publish()
                except Exception:
                    logger.exception("publishing a new table failed; serving the previous one")
            with self._wake:
                self._published = upto
                self._wake.notify_all()

    # -- publishing ----------------------------------------------------------------------------

    def _report_collisions(self, index: Index) -> None:
        """Log each custom name when it starts (or stops) shadowing a cluster name."""
        collisions = custom_collisions(index)
        for name in sorted(set(collisions) - set(self.collisions)):
            logger.warning(
                "custom record %s shadows the cluster's name (custom records win)",
                name_to_text(name),
            )
        for name in sorted(set(self.collisions) - set(collisions)):
            logger.info("custom record %s no longer shadows a cluster name", name_to_text(name))
        self.collisions = collisions

    def _publish(self) -> None:
        started = time.perf_counter()
        result = self.store.publish()
        if result is None:
            if self.builder.table is not None:
                return
            result = self.store.publish_all()
        index, dirty = result
        if self.builder.table is None:
            dirty = dirty | self.builder.all_owners(index)
        first = self.builder.table is None
        table = self.builder.publish(index, dirty, always=self.store.external_name_owners())
        self.responder.table = table
        if index.config.custom:
            self._report_collisions(index)
        programmed = self.store.take_programmed(self.store.clock())
        if not first and self.store.synced:
            for kind, seconds in programmed:
                self.programming[kind].observe(seconds)
        self.last_publish_s = time.perf_counter() - started
        logger.debug(
            "published generation %d: %d owners rebuilt, %d records, in %.1f ms",
            index.serial,
            len(dirty),
            len(table.records),
            self.last_publish_s * 1000,
        )
