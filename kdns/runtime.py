"""The rebuild path: source changes -> store -> index -> answer table -> published to servers.

Sources call ``replace`` (a whole snapshot, or a relist) or ``apply`` (watch events) from any
thread; a lock makes the store single-writer. Each call publishes at most one new table, built
only from the owners that changed, and swaps it into the ``Responder`` with one assignment.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from kdns.config import ZoneConfig
from kdns.model import KubeObject
from kdns.serve.protocol import Responder
from kdns.state import Store
from kdns.table import AnswerTable, TableBuilder

logger = logging.getLogger(__name__)


class Runtime:
    """Owns the store and the table builder for one server."""

    def __init__(self, config: ZoneConfig, responder: Responder, synced: bool = True) -> None:
        self.store = Store(config)
        self.store.synced = synced
        self.builder = TableBuilder()
        self.responder = responder
        self._lock = threading.Lock()
        self.last_publish_s = 0.0

    @property
    def table(self) -> AnswerTable | None:
        return self.builder.table

    def replace(self, objects: Iterable[KubeObject], kinds: Iterable[str] | None = None) -> None:
        with self._lock:
            self.store.replace_all(objects, kinds)
            self._publish()

    def apply(self, change: Callable[[Store], None]) -> None:
        with self._lock:
            change(self.store)
            self._publish()

    def _publish(self) -> None:
        started = time.perf_counter()
        result = self.store.publish()
        if result is None:
            if self.builder.table is None:
                result = self.store.publish_all()
            else:
                return
        index, dirty = result
        if self.builder.table is None:
            dirty = dirty | self.builder.all_owners(index)
        table = self.builder.publish(index, dirty, always=self.store.external_name_owners())
        self.responder.table = table
        self.last_publish_s = time.perf_counter() - started
        logger.debug(
            "published generation %d: %d owners rebuilt, %d records, in %.1f ms",
            index.serial,
            len(dirty),
            len(table.records),
            self.last_publish_s * 1000,
        )
