"""The live source: the set of informers one configuration needs, sync, and staleness.

This module owns what to watch and the source-level state built from the informers:

* which collections: Namespaces always cluster-wide (exposure needs every Namespace object);
  Services and EndpointSlices cluster-wide, or one informer per namespace when ``namespaces``
  narrows them (RBAC can then be a Role per namespace); Pods only for ``--pods verified``;
* sync: ``synced()`` is true once every informer's first list has been handed to the runtime;
  at that moment one ``store.mark_synced(True)`` is submitted behind those lists, so the first
  table that says "synced" already holds them all (until then NXDOMAIN becomes SERVFAIL, R8.2);
* staleness: seconds since each resource last showed it is current (an event, a bookmark, a
  completed list or a clean end of a watch), and warnings in the log while it grows during an
  API outage. Answers keep coming from the last known state all along.

Each informer gets its own ``ApiClient`` (sharing the caller's ``Configuration``, hence its
credentials and token refresh): a long-lived watch holds its connection, and separate pools
mean no informer waits for, or is cut together with, another one's connection.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

from kubernetes.client import ApiClient

from kdns.watch.informer import (
    ENDPOINT_SLICES,
    NAMESPACES,
    PODS,
    SERVICES,
    Informer,
    Resource,
    Sink,
    WatchSettings,
)

__all__ = ["WatchSource"]

logger = logging.getLogger(__name__)


class WatchSource:
    """List+watch of every collection kdns serves from, feeding ``runtime``."""

    def __init__(
        self,
        api_client: ApiClient,
        runtime: Sink,
        *,
        namespaces: frozenset[str] | None,
        pods: bool,
        endpoints: bool = True,
        pod_field_selector: str | None = None,
        settings: WatchSettings | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.runtime = runtime
        self.settings = settings or WatchSettings()
        self._api_client = api_client
        self._clients: list[ApiClient] = []
        self._lock = threading.Lock()
        self._synced = threading.Event()
        self._pending: set[str] = set()
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None
        self._started = False
        self._warned_at: dict[str, float] = {}

        plan: list[tuple[Resource, str | None, str | None]] = [(NAMESPACES, None, None)]
        scopes: list[str | None] = [None]
        if namespaces is not None:
            scopes = [*sorted(namespaces)]
        # noendpoints serves no endpoint records, so the slices need not be listed at all.
        for resource in (SERVICES, ENDPOINT_SLICES) if endpoints else (SERVICES,):
            plan.extend((resource, ns, None) for ns in scopes)
        if pods:
            plan.extend((PODS, ns, pod_field_selector) for ns in scopes)
        self.informers: tuple[Informer, ...] = tuple(
            Informer(
                self._client(),
                resource,
                runtime,
                namespace=ns,
                field_selector=field_selector,
                settings=self.settings,
                on_synced=self._informer_synced,
                rand=rand,
            )
            for resource, ns, field_selector in plan
        )
        self._pending = {informer.name for informer in self.informers}

    def _client(self) -> ApiClient:
        client = ApiClient(self._api_client.configuration)
        client.default_headers.update(self._api_client.default_headers)
        self._clients.append(client)
        return client

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start every informer and the staleness monitor (returns at once)."""
        if self._started:
            return
        self._started = True
        for informer in self.informers:
            informer.start()
        self._monitor = threading.Thread(target=self._watch_staleness, name="watch-staleness")
        self._monitor.daemon = True
        self._monitor.start()
        logger.info("watching %s", ", ".join(informer.name for informer in self.informers))

    def stop(self) -> None:
        """Stop every informer and wait for their threads (bounded by ``stop_timeout_s``)."""
        self._stop.set()
        for informer in self.informers:
            informer.stop()  # all at once: their connections are cut in parallel
        deadline = time.monotonic() + self.settings.stop_timeout_s
        for informer in self.informers:
            if not informer.join(max(0.0, deadline - time.monotonic())):
                # Only a request still connecting can do this; its thread is a daemon and
                # ends at the connect timeout.
                logger.warning("%s: watch thread did not stop in time", informer.name)
        if self._monitor is not None:
            self._monitor.join(max(0.0, deadline - time.monotonic()))
        for client in self._clients:
            client.close()  # type: ignore[no-untyped-call]

    # -- sync ----------------------------------------------------------------------------------

    def _informer_synced(self, informer: Informer) -> None:
        with self._lock:
            self._pending.discard(informer.name)
            done = not self._pending and not self._synced.is_set()
            if done:
                # Submitted after every informer's first replace_all (the runtime applies
                # changes in order), so the first "synced" table holds all the lists.
                self.runtime.submit(lambda store: store.mark_synced(True))
                self._synced.set()
        if done:
            logger.info("initial lists complete: serving the cluster's state")

    def synced(self) -> bool:
        """Every initial list has completed (and ``mark_synced(True)`` has been submitted)."""
        return self._synced.is_set()

    def wait_synced(self, timeout: float) -> bool:
        """Wait until synced and the synced table is published; False on timeout."""
        deadline = time.monotonic() + timeout
        if not self._synced.wait(timeout):
            return False
        return self.runtime.flush(max(0.0, deadline - time.monotonic()))

    # -- staleness -----------------------------------------------------------------------------

    def staleness(self) -> dict[str, float]:
        """Seconds since each resource last showed its state is current (plural -> seconds).

        With one informer per namespace, a resource is as stale as its stalest namespace.
        """
        out: dict[str, float] = {}
        for informer in self.informers:
            plural = informer.resource.plural
            out[plural] = max(out.get(plural, 0.0), informer.staleness())
        return out

    def status(self) -> dict[str, dict[str, object]]:
        """Per informer: synced, resourceVersion, staleness, last error and counters."""
        return {
            informer.name: {
                "synced": informer.synced.is_set(),
                "resource_version": informer.resource_version,
                "staleness_s": round(informer.staleness(), 3),
                "last_error": informer.last_error,
                "lists": informer.stats.lists,
                "watches": informer.stats.watches,
                "events": informer.stats.events,
                "errors": informer.stats.errors,
            }
            for informer in self.informers
        }

    def check_staleness(self, now: float | None = None) -> list[str]:
        """Log a warning for each informer staler than ``stale_warning_s``; return their names.

        A warning repeats at most every ``stale_check_interval_s`` per informer, and a line
        at INFO says when it has caught up.
        """
        now = time.monotonic() if now is None else now
        limit = self.settings.stale_warning_s
        stale: list[str] = []
        for informer in self.informers:
            age = informer.staleness()
            name = informer.name
            if age < limit:
                if self._warned_at.pop(name, None) is not None:
                    logger.info("%s: caught up with the API", name)
                continue
            stale.append(name)
            last = self._warned_at.get(name)
            if last is not None and now - last < self.settings.stale_check_interval_s:
                continue
            self._warned_at[name] = now
            logger.warning(
                "%s: no news from the API for %.0f s (%s); answering from the last known state",
                name,
                age,
                informer.last_error or "no error yet",
            )
        return stale

    def _watch_staleness(self) -> None:
        interval = max(self.settings.stale_check_interval_s, 0.05)
        while not self._stop.wait(interval):
            try:
                self.check_staleness()
            except Exception:  # a logging problem must not end the monitor
                logger.exception("staleness check failed")
