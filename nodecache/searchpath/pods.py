"""The edge that knows this node's Pods: kdns's own list+watch, limited to ``spec.nodeName``.

``PodWatch`` runs one ``kdns.watch.informer.Informer`` for Pods with the field selector
``spec.nodeName=<node>`` (so the API sends only this node's Pods: a few hundred at most, where
CoreDNS's autopath watches every Pod of the cluster), through the cluster configuration kdns
uses (``kdns.watch.client.load_api_client``: ``--kubeconfig``, else in-cluster). The informer's
changes are applied to a ``kdns.state.Store`` exactly as kdns applies them (paging, relists,
410s, backoff are the informer's), and after each change the ``PodDirectory`` is rebuilt from
the store's Pods. Until the first list completes, the directory is empty, so no pod is
eligible and autopath does not act: the safe side.

The RBAC this needs: get, list and watch on pods (deploy/nodecache's ClusterRole).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping

from kdns.config import ZoneConfig
from kdns.state import Store
from kdns.watch.client import load_api_client
from kdns.watch.informer import PODS, Change, Informer, WatchSettings
from nodecache.searchpath.clients import PodDirectory

logger = logging.getLogger(__name__)


class _DirectorySink:
    """The informer's sink: apply each change to a store, then refresh the directory."""

    def __init__(self, directory: PodDirectory) -> None:
        self.directory = directory
        self.store = Store(ZoneConfig())
        self._lock = threading.Lock()
        self._submitted = 0

    def submit(self, change: Change) -> int:
        with self._lock:
            change(self.store)
            self.directory.replace(self.store.pods)
            self._submitted += 1
            return self._submitted

    def flush(self, timeout: float = 10.0) -> bool:
        return True  # applied in submit


class PodWatch:
    """See the module docstring."""

    def __init__(
        self,
        directory: PodDirectory,
        *,
        kubeconfig: str | None,
        environ: Mapping[str, str] = os.environ,
        settings: WatchSettings | None = None,
    ) -> None:
        if not directory.node_name:
            raise ValueError("a node-scoped Pod watch needs the node's name")
        self.directory = directory
        self._client = load_api_client(kubeconfig, None, environ)
        self._sink = _DirectorySink(directory)
        self.informer = Informer(
            self._client,
            PODS,
            self._sink,
            field_selector=f"spec.nodeName={directory.node_name}",
            settings=settings,
            on_synced=self._synced,
        )

    def _synced(self, informer: Informer) -> None:
        self.directory.synced = True
        logger.info(
            "autopath: %d pod addresses on node %s",
            len(self.directory),
            self.directory.node_name,
        )

    def start(self) -> None:
        self.informer.start()
        logger.info("watching pods on node %s for autopath", self.directory.node_name)

    def stop(self) -> None:
        self.informer.stop()
        self.informer.join(5.0)
        self._client.close()  # type: ignore[no-untyped-call]
