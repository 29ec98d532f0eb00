"""The edge that follows one ConfigMap through the API (the kube-dns ConfigMap, by default).

``ConfigMapWatch`` runs a ``kdns.watch.informer.Informer`` over ``configmaps`` in one namespace
with ``fieldSelector=metadata.name=NAME``, so paging, bookmarks, 410 relists and backoff are the
informer's, and calls ``on_change(data)`` with the ConfigMap's ``data`` (None once it is
deleted, or if it never existed) whenever the data differs from what was last reported. The
first call comes with the first complete list, so a caller can wait for it.

The RBAC this needs: get, list and watch on configmaps in that namespace (a Role, not a
ClusterRole: see docs/rbac.md).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes.client import ApiClient

from kdns.model import ObjectKey
from kdns.source.convert import DEFAULT_NAMESPACE, ConvertError
from kdns.watch.informer import CONFIG_MAPS, Change, Informer, WatchSettings

logger = logging.getLogger(__name__)

Data = Mapping[str, str]
OnChange = Callable[[Data | None], object]


@dataclass(frozen=True, slots=True)
class ConfigMap:
    """A v1 ConfigMap: its key and its ``data`` (``binaryData`` is not read)."""

    namespace: str
    name: str
    data: tuple[tuple[str, str], ...]

    @property
    def key(self) -> ObjectKey:
        return (self.namespace, self.name)


def convert_config_map(raw: Mapping[str, Any]) -> ConfigMap | None:
    """The informer's converter for ConfigMaps; raises ``ConvertError`` naming the field."""
    if raw.get("kind") != "ConfigMap" or raw.get("apiVersion") != "v1":
        return None
    metadata = raw.get("metadata")
    if not isinstance(metadata, Mapping) or not isinstance(metadata.get("name"), str):
        raise ConvertError("metadata.name", "expected a string")
    namespace = metadata.get("namespace") or DEFAULT_NAMESPACE
    data = raw.get("data") or {}
    if not isinstance(data, Mapping):
        raise ConvertError("data", "expected a mapping of string to string")
    for key, value in data.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ConvertError(f"data.{key}", "expected a string")
    return ConfigMap(str(namespace), metadata["name"], tuple(sorted(data.items())))


class _ConfigMapStore:
    """What the informer's changes are applied to: the ConfigMaps its list and watch cover
    (at most the one the field selector names)."""

    def __init__(self) -> None:
        self.objects: dict[ObjectKey, ConfigMap] = {}

    def upsert(self, obj: ConfigMap) -> None:
        self.objects[obj.key] = obj

    def delete(self, kind: str, key: ObjectKey) -> None:
        self.objects.pop(key, None)

    def replace_all(
        self, objects: Iterable[ConfigMap], kinds: object = None, namespace: object = None
    ) -> None:
        self.objects = {obj.key: obj for obj in objects}


class _Sink:
    def __init__(self, key: ObjectKey, on_change: OnChange) -> None:
        self.key = key
        self.on_change = on_change
        self.store = _ConfigMapStore()
        self._lock = threading.Lock()
        self._reported: tuple[tuple[str, str], ...] | bool | None = False  # False: nothing yet
        self._submitted = 0

    def submit(self, change: Change) -> int:
        with self._lock:
            change(self.store)  # type: ignore[arg-type]  # the informer's store protocol
            self._submitted += 1
            found = self.store.objects.get(self.key)
            data = found.data if found is not None else None
            changed = data != self._reported
            self._reported = data
        if changed:
            try:
                self.on_change(dict(data) if data is not None else None)
            except Exception:
                logger.exception("applying ConfigMap %s/%s failed", *self.key)
        return self._submitted

    def flush(self, timeout: float = 10.0) -> bool:
        return True  # applied in submit


class ConfigMapWatch:
    """See the module docstring."""

    def __init__(
        self,
        api_client: ApiClient,
        namespace: str,
        name: str,
        on_change: OnChange,
        settings: WatchSettings | None = None,
    ) -> None:
        self.namespace, self.name = namespace, name
        self.informer = Informer(
            api_client,
            CONFIG_MAPS,
            _Sink((namespace, name), on_change),
            namespace=namespace,
            field_selector=f"metadata.name={name}",
            settings=settings,
            converter=convert_config_map,
        )

    def start(self) -> None:
        self.informer.start()
        logger.info("following ConfigMap %s/%s", self.namespace, self.name)

    def wait_synced(self, timeout: float) -> bool:
        return self.informer.synced.wait(timeout)

    def stop(self) -> None:
        self.informer.stop()
        self.informer.join(5.0)
