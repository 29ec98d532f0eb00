"""Loading a cluster snapshot from manifest files, and reloading it when they change.

This module owns the on-disk snapshot source: finding the files (explicit files, or the
``.yaml``/``.yml``/``.json`` files of a directory), parsing them (multi-document YAML, JSON, and
``List``/``*List`` wrappers exactly as ``kubectl get ... -o yaml`` prints them), converting each
object with ``kdns.source.convert`` and assembling an immutable ``ClusterState``.

Every failure is reported as a ``ManifestError`` that names the file, the document, the List
item and the field, because the person reading it is editing that file by hand.

``SnapshotWatcher`` polls file metadata (no inotify: it must work on any filesystem, including
bind mounts and ConfigMap volumes whose symlink swaps inotify misses) and only ever replaces the
served snapshot with one that loaded completely.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import yaml

from kdns.model import ClusterState, KubeObject
from kdns.source.convert import DEFAULT_NAMESPACE, USED_KINDS, ConvertError, convert

__all__ = [
    "MANIFEST_SUFFIXES",
    "ManifestError",
    "Snapshot",
    "SnapshotWatcher",
    "expand_paths",
    "load_snapshot",
]

log = logging.getLogger(__name__)

MANIFEST_SUFFIXES: Final = frozenset({".yaml", ".yml", ".json"})

# The C loader is several times faster on large `kubectl get -A -o yaml` dumps; the pure-Python
# one produces identical objects, so falling back is only slower.
_YAML_LOADER: Final[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_USED_KIND_NAMES: Final = frozenset(kind for _, kind in USED_KINDS)

PathLike = str | Path


class ManifestError(Exception):
    """A snapshot could not be loaded; ``str()`` says which file, document, item and field."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A fully loaded snapshot: the state, what was skipped (kind -> count), and its files."""

    state: ClusterState
    skipped: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    files: tuple[Path, ...] = ()


# --- finding and parsing files ---------------------------------------------------------------


def _list_dir(directory: Path) -> list[Path]:
    # Dotfiles are skipped: editors and atomic writers put their temp and swap files there
    # (`.demo.yaml.swp`, `.#demo.yaml`), and loading a half-written one would be wrong.
    return sorted(
        entry
        for entry in directory.iterdir()
        if entry.suffix.lower() in MANIFEST_SUFFIXES
        and not entry.name.startswith(".")
        and entry.is_file()
    )


def expand_paths(paths: Sequence[PathLike]) -> tuple[Path, ...]:
    """The manifest files named by ``paths``: files as given, directories listed (sorted).

    A path that does not exist is returned as is, so reading it reports it by name.
    """
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            try:
                files.extend(_list_dir(path))
            except OSError as exc:
                raise ManifestError(path, f"cannot list directory: {exc.strerror or exc}") from exc
        else:
            files.append(path)
    return tuple(dict.fromkeys(files))


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        problem = exc.problem or exc.context or "syntax error"
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return str(exc).replace("\n", " ")


def _documents(path: Path) -> Iterator[tuple[int, Any]]:
    """(1-based document index, parsed document) for every document in the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(path, f"not UTF-8 text: {exc.reason} at byte {exc.start}") from exc
    except OSError as exc:
        # Includes a file renamed away between listing and reading (atomic editors).
        raise ManifestError(path, f"cannot read: {exc.strerror or exc}") from exc
    if path.suffix.lower() == ".json":
        try:
            yield 1, json.loads(text)
        except json.JSONDecodeError as exc:
            raise ManifestError(
                path, f"document 1: invalid JSON: line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from exc
        return
    index = 0
    try:
        for index, document in enumerate(yaml.load_all(text, Loader=_YAML_LOADER), start=1):
            yield index, document
    except yaml.YAMLError as exc:
        # The failing document is the one after the last one parsed.
        raise ManifestError(
            path, f"document {index + 1}: invalid YAML: {_yaml_problem(exc)}"
        ) from exc


def _identity(obj: Mapping[str, Any]) -> str:
    """Best-effort "Kind ns/name" for messages; must not fail on malformed objects."""
    kind = obj.get("kind")
    label = kind if isinstance(kind, str) and kind else "object"
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping):
        return label
    name, namespace = meta.get("name"), meta.get("namespace")
    if not isinstance(name, str) or not name:
        return label
    if isinstance(namespace, str) and namespace:
        return f"{label} {namespace}/{name}"
    if label in _USED_KIND_NAMES and label != "Namespace":
        # Say where convert() put it, or "Service cart" would look cluster-scoped.
        return f"{label} {DEFAULT_NAMESPACE}/{name}"
    return f"{label} {name}"


def _skip_label(obj: Mapping[str, Any]) -> str:
    kind = str(obj.get("kind"))
    # A used kind at another API version (discovery.k8s.io/v1beta1 EndpointSlice) is counted
    # apart from its kind so the summary shows why objects that look useful were not used.
    if kind in _USED_KIND_NAMES:
        return f"{kind} ({obj.get('apiVersion')})"
    return kind


def _items(document: Mapping[str, Any], path: Path, where: str) -> Iterator[tuple[int | None, Any]]:
    """(List item index or None, object) for a document, unwrapping ``List``/``*List`` kinds."""
    kind = document.get("kind")
    if not (isinstance(kind, str) and kind.endswith("List")):
        yield None, document
        return
    items = document.get("items")
    if items is None:
        return
    if not isinstance(items, list):
        raise ManifestError(path, f"{where} ({kind}): items: expected a list")
    # The API server's typed lists (ServiceList, ...) omit kind/apiVersion on their items;
    # kubectl's generic List always sets them.
    item_kind = kind[: -len("List")]
    api_version = document.get("apiVersion")
    for i, item in enumerate(items):
        if isinstance(item, Mapping) and item_kind and "kind" not in item:
            item = {"kind": item_kind, "apiVersion": api_version, **item}
        yield i, item


def _located(where: str, item: int | None, obj: Any) -> str:
    """``document 2 (items[3], Service shop/cart)`` or ``document 2 (Service shop/cart)``."""
    parts = [] if item is None else [f"items[{item}]"]
    if isinstance(obj, Mapping):
        parts.append(_identity(obj))
    return f"{where} ({', '.join(parts)})" if parts else where


def load_snapshot(paths: Sequence[PathLike]) -> Snapshot:
    """Load every object from ``paths`` (files and/or directories) into a ``Snapshot``.

    Raises ``ManifestError`` on the first unreadable file, syntax error, non-mapping document
    or malformed object: a snapshot is served whole or not at all.
    """
    files = expand_paths(paths)
    objects: dict[tuple[str, str, str], KubeObject] = {}
    origins: dict[tuple[str, str, str], str] = {}
    skipped: dict[str, int] = {}
    for path in files:
        for index, document in _documents(path):
            if document is None:
                continue
            where = f"document {index}"
            if not isinstance(document, Mapping):
                got = "a list" if isinstance(document, list) else repr(document)[:40]
                raise ManifestError(path, f"{where}: expected a mapping, got {got}")
            for item, obj in _items(document, path, where):
                if obj is None:
                    continue
                location = _located(where, item, obj)
                if not isinstance(obj, Mapping):
                    raise ManifestError(path, f"{location}: expected a mapping, got {obj!r:.40}")
                try:
                    record = convert(obj)
                except ConvertError as exc:
                    raise ManifestError(path, f"{location}: {exc}") from exc
                if record is None:
                    label = _skip_label(obj)
                    skipped[label] = skipped.get(label, 0) + 1
                    continue
                key = (type(record).__name__, *record.key)
                origin = f"{path}: {location}"
                if key in objects:
                    log.warning(
                        "duplicate %s %s: %s overrides %s (last one wins)",
                        key[0],
                        "/".join(part for part in key[1:] if part),
                        origin,
                        origins[key],
                    )
                objects[key] = record
                origins[key] = origin
    return Snapshot(
        state=ClusterState.from_objects(objects.values()),
        skipped=MappingProxyType(dict(sorted(skipped.items()))),
        files=files,
    )


# --- watching --------------------------------------------------------------------------------

_Fingerprint = tuple[tuple[object, ...], ...]


def _stat_key(path: Path) -> tuple[object, ...]:
    try:
        st = path.stat()
    except OSError as exc:
        return (str(path), "unreadable", exc.errno)
    # The inode catches an atomic rename that keeps size and (coarse) mtime identical.
    return (str(path), st.st_mtime_ns, st.st_size, st.st_ino)


def _fingerprint(paths: Sequence[Path]) -> _Fingerprint:
    keys: list[tuple[object, ...]] = []
    for path in paths:
        if not path.is_dir():
            keys.append(_stat_key(path))
            continue
        # A directory's own mtime is left out on purpose: it changes whenever an editor drops
        # a swap or temp file there, and those are not manifests. The listing of manifest
        # files (names and their stats) is what decides whether to reload.
        try:
            entries = _list_dir(path)
        except OSError as exc:
            keys.append((str(path), "unlistable", exc.errno))
            continue
        keys.append((str(path), "dir", len(entries)))
        keys.extend(_stat_key(entry) for entry in entries)
    return tuple(keys)


class SnapshotWatcher:
    """Reload the snapshot when its files change; deliver only snapshots that loaded whole.

    Usage: construct the watcher *before* the initial ``load_snapshot`` -- the constructor
    records the files' state, so an edit racing the initial load is seen by the first poll
    (at worst the same content is loaded twice) -- then ``start()``.
    """

    def __init__(
        self,
        paths: Sequence[PathLike],
        on_change: Callable[[Snapshot], None],
        interval_s: float = 0.5,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s!r}")
        self._paths = tuple(Path(p) for p in paths)
        self.on_change = on_change
        self._interval_s = interval_s
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen = _fingerprint(self._paths)
        self.last_error: ManifestError | None = None
        """The error of the latest reload attempt, None once a reload succeeds."""

    def poll_once(self) -> bool:
        """Check the files once; reload if they changed. True iff ``on_change`` was called."""
        current = _fingerprint(self._paths)
        if current == self._seen:
            return False
        # Recorded before loading: if the files change again while we read them, the next
        # poll sees a different fingerprint and reloads, so no edit is lost. A failed load is
        # not retried until the files change again, which avoids a warning every interval.
        self._seen = current
        try:
            snapshot = load_snapshot(self._paths)
        except ManifestError as exc:
            self.last_error = exc
            log.warning("snapshot reload failed, keeping last good snapshot: %s", exc)
            return False
        self.last_error = None
        log.info(
            "snapshot reloaded from %d file(s): %d services, %d slices, %d pods",
            len(snapshot.files),
            len(snapshot.state.services),
            len(snapshot.state.slices),
            len(snapshot.state.pods),
        )
        self.on_change(snapshot)
        return True

    def start(self) -> None:
        """Start polling in a daemon thread."""
        if self._thread is not None:
            raise RuntimeError("SnapshotWatcher already started")
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="kdns-snapshot-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop polling and join the thread; returns after at most one in-flight reload."""
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        # Event.wait doubles as the sleep, so stop() wakes the thread at once.
        while not self._stopping.wait(self._interval_s):
            try:
                self.poll_once()
            except Exception:
                # A bug in on_change must not silently end reloading for the process lifetime.
                log.exception("snapshot watcher poll failed")
