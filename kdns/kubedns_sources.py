"""Where kdns and nodecache read the kube-dns ConfigMap from (see ``kdns.kubedns``): a mounted
directory polled every 10 s, or the API through ``kdns.watch.configmap``. Each source hands
every new ``data`` to a ``KubeDnsFollower``; ``start_source`` starts the one the settings name.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from kdns.kubedns import POLL_INTERVAL_S, KubeDnsFollower, KubeDnsSettings
from kdns.resolver.kubedns import STUB_DOMAINS, UPSTREAM_NAMESERVERS

logger = logging.getLogger(__name__)

KEYS = (STUB_DOMAINS, UPSTREAM_NAMESERVERS)


class Source(Protocol):
    def stop(self) -> None: ...


def read_directory(path: str) -> dict[str, str] | None:
    """The keys a mounted ConfigMap directory holds; None when the directory does not exist
    (the ConfigMap is optional, as for NodeLocal: kubelet mounts it empty or not at all)."""
    directory = Path(path)
    if not directory.is_dir():
        return None
    data = {}
    for key in KEYS:
        try:
            data[key] = (directory / key).read_text()
        except FileNotFoundError:
            continue
    return data


class DirectorySource:
    """Polls a mounted ConfigMap; ``poll`` is one read (the thread calls it every interval)."""

    def __init__(self, path: str, follower: KubeDnsFollower, interval_s: float = POLL_INTERVAL_S):
        self.path = path
        self.follower = follower
        self.interval_s = interval_s
        self._last: dict[str, str] | bool | None = False  # False: never read
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kube-dns-configmap", daemon=True)

    def poll(self) -> None:
        try:
            data = read_directory(self.path)
        except OSError as error:
            logger.warning("cannot read the kube-dns ConfigMap at %s: %s", self.path, error)
            return
        if data != self._last:
            self._last = data
            self.follower.offer(data, self.path)

    def start(self) -> None:
        self.poll()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


def start_source(
    settings: KubeDnsSettings,
    follower: KubeDnsFollower,
    kubeconfig: str | None,
    environ: Mapping[str, str] = os.environ,
) -> Source | None:
    """Start the source ``settings`` names (None if neither is set)."""
    if settings.directory is not None:
        source = DirectorySource(settings.directory, follower)
        source.start()
        return source
    if settings.configmap is None:
        return None
    from kdns.watch.client import load_api_client
    from kdns.watch.configmap import ConfigMapWatch

    namespace, name = settings.configmap
    client = load_api_client(kubeconfig, None, environ)
    watch = ConfigMapWatch(
        client, namespace, name, lambda data: follower.offer(data, f"{namespace}/{name}")
    )
    watch.start()
    return watch
