"""One list+watch loop per (resource, namespace): the part of the watcher that talks to the API.

This module owns the protocol rules of ``../shared/docs/kube-api.md`` for one collection:

* **List** in pages (``limit`` + ``continue``; every page belongs to the first page's snapshot).
  An expired continue token (HTTP 410) restarts the list from the first page. The whole result
  goes to the store as ONE scoped ``replace_all`` (this kind, this namespace), so an object
  deleted while we were not watching disappears, and nothing outside the list's scope does.
* **Watch** from the list's resourceVersion with ``allowWatchBookmarks``, an integer
  ``timeoutSeconds`` (jittered, so informers do not reconnect in lock-step) and a client
  ``_request_timeout=(connect, read)``. ``timeoutSeconds`` does not protect against a dead
  TCP connection; only the read timeout does, so it is always set, longer than the bookmark gap.
* A clean end of the stream re-watches from the last resourceVersion seen (an event's or a
  bookmark's), with no relist. 410 Gone -- an ``ERROR`` event or the HTTP status -- relists.
* Anything else (5xx, 429 with ``Retry-After``, a refused connection, TLS failures, a read
  timeout, a cut stream) waits a capped exponential backoff with jitter and retries, keeping
  the resourceVersion: a watch that resumes in time loses nothing; one that resumes too late
  gets a 410 and relists.

Raw JSON goes straight into ``kdns.source.convert``. The request is made through
``ApiClient.param_serialize``/``call_api`` rather than the generated ``CoreV1Api`` and
``DiscoveryV1Api`` methods because those two classes alone cost about 22 MB of resident memory
(pydantic validators for every operation of those APIs), nearly as much as the whole slim
model of the 10,000-Service benchmark cluster (about 35 MB), and the raw JSON path needs none
of it. The watch stream is
parsed here too: ``kubernetes.watch.Watch`` with ``deserialize=False`` in 37.0.2 neither tracks
the resourceVersion nor survives an ``ERROR`` event (it reads a ``raw_object`` key it never set).

Nothing here assumes an order across resources: each informer only ever touches its own kind.
"""

from __future__ import annotations

import json
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol

import urllib3
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from kdns.model import KubeObject, ObjectKey
from kdns.source.convert import DEFAULT_NAMESPACE, ConvertError, convert
from kdns.state import Store

__all__ = [
    "CONFIG_MAPS",
    "ENDPOINT_SLICES",
    "NAMESPACES",
    "PODS",
    "SERVICES",
    "Backoff",
    "Informer",
    "InformerStats",
    "Resource",
    "Sink",
    "WatchSettings",
    "describe_error",
]

logger = logging.getLogger(__name__)

Change = Callable[[Store], None]
Converter = Callable[[Mapping[str, Any]], Any]
"""Raw object -> the record a sink's store takes, or None for an unusable kind; raises
``ConvertError`` for a malformed field."""
JSON = dict[str, Any]


class Sink(Protocol):
    """Where informers send store changes: ``kdns.runtime.Runtime`` (batched, one thread)."""

    def submit(self, change: Change) -> int: ...

    def flush(self, timeout: float = ...) -> bool: ...


# --------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class WatchSettings:
    """Tunables of the list+watch loops. Durations are in seconds (``_s``).

    The defaults suit a real API server, which sends a bookmark about every 60 s and closes a
    watch at its ``timeoutSeconds``; tests shrink them to keep each scenario under a second.
    """

    page_size: int = 500
    """``limit`` of each list page: bounds the JSON held in memory at once during a list."""
    watch_timeout_s: int = 240
    """Base ``timeoutSeconds`` of a watch (the server ends the stream cleanly after it)."""
    watch_timeout_jitter_s: int = 60
    """A random 0..this is added to each watch's ``timeoutSeconds`` (spreads reconnects)."""
    request_connect_timeout_s: float = 10.0
    """TCP/TLS connect timeout of every request."""
    request_read_timeout_s: float = 120.0
    """Longest silence on a socket before the request fails: a dead connection's bound.

    Must exceed the server's bookmark gap (about 60 s), or quiet watches are cut for nothing.
    """
    backoff_initial_s: float = 0.5
    """First delay after a failure; it doubles (``backoff_multiplier``) per failure in a row."""
    backoff_max_s: float = 30.0
    """Cap of the exponential backoff."""
    backoff_multiplier: float = 2.0
    backoff_jitter_ratio: float = 0.5
    """Each delay is scaled by a random factor in [1 - ratio, 1] (decorrelates informers)."""
    retry_after_max_s: float = 60.0
    """Cap on a server's ``Retry-After``; the delay is at least the (capped) header value."""
    min_watch_s: float = 1.0
    """A watch that ends cleanly sooner than this with no event counts as a failure (backoff),
    so a server that closes every watch at once is not hammered in a tight loop."""
    bookmarks: bool = True
    """Ask for BOOKMARK events (``allowWatchBookmarks``)."""
    stale_warning_s: float = 90.0
    """``WatchSource`` warns when a resource has had no event, bookmark or list this long."""
    stale_check_interval_s: float = 10.0
    """How often ``WatchSource`` checks staleness (and repeats the warning at most)."""
    stop_timeout_s: float = 5.0
    """How long ``stop()`` waits for a loop thread (a request still connecting may lag)."""

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            if isinstance(value, bool):
                continue
            if not isinstance(value, int | float) or value < 0:
                raise ValueError(f"WatchSettings.{spec.name} must be >= 0, got {value!r}")
        for name in ("page_size", "watch_timeout_s"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                # The API takes integers; 37.0.2's own API classes reject floats outright.
                raise ValueError(f"WatchSettings.{name} must be a positive integer")
        if not isinstance(self.watch_timeout_jitter_s, int):
            raise ValueError("WatchSettings.watch_timeout_jitter_s must be an integer")
        if self.request_connect_timeout_s <= 0 or self.request_read_timeout_s <= 0:
            raise ValueError("WatchSettings request timeouts must be > 0")
        if not 0 <= self.backoff_jitter_ratio <= 1:
            raise ValueError("WatchSettings.backoff_jitter_ratio must be within [0, 1]")
        if self.backoff_multiplier < 1:
            raise ValueError("WatchSettings.backoff_multiplier must be >= 1")


# --------------------------------------------------------------------------------------------
# Resources


@dataclass(frozen=True)
class Resource:
    """An API collection the watcher reads, and the model kind its objects become."""

    kind: str
    plural: str
    group: str = ""
    version: str = "v1"
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None) -> str:
        """URL path of the collection; ``{namespace}`` is filled in by the client, quoted."""
        prefix = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if namespace is None:
            return f"{prefix}/{self.plural}"
        if not self.namespaced:
            raise ValueError(f"{self.kind} is cluster-scoped; it has no namespaced collection")
        return f"{prefix}/namespaces/{{namespace}}/{self.plural}"


NAMESPACES = Resource("Namespace", "namespaces", namespaced=False)
SERVICES = Resource("Service", "services")
ENDPOINT_SLICES = Resource("EndpointSlice", "endpointslices", group="discovery.k8s.io")
PODS = Resource("Pod", "pods")
CONFIG_MAPS = Resource("ConfigMap", "configmaps")


# --------------------------------------------------------------------------------------------
# Backoff and error description


class Backoff:
    """Capped exponential backoff with jitter; ``reset()`` after progress."""

    def __init__(self, settings: WatchSettings, rand: Callable[[], float]) -> None:
        self.settings = settings
        self.rand = rand
        self.failures = 0

    def next(self, retry_after: float | None = None) -> float:
        """The delay before the next attempt, counting one more failure."""
        s = self.settings
        base = min(s.backoff_max_s, s.backoff_initial_s * s.backoff_multiplier**self.failures)
        self.failures += 1
        delay = base * (1.0 - s.backoff_jitter_ratio * self.rand())
        if retry_after is not None:
            # The server said when to come back: never earlier than that (capped, so a bogus
            # header cannot park the watcher for an hour).
            delay = max(delay, min(retry_after, s.retry_after_max_s))
        return delay

    def reset(self) -> None:
        self.failures = 0


def retry_after_of(error: BaseException) -> float | None:
    """``Retry-After`` (seconds) of an API error, from the header or the Status details."""
    if not isinstance(error, ApiException):
        return None
    headers = error.headers
    if headers is not None:
        value = headers.get("Retry-After")
        if value is not None:
            try:
                return max(0.0, float(value))
            except ValueError:
                pass  # an HTTP-date; the API server never sends one
    status = _status_body(error)
    details = status.get("details") if status else None
    if isinstance(details, Mapping):
        seconds = details.get("retryAfterSeconds")
        if isinstance(seconds, int | float) and not isinstance(seconds, bool):
            return max(0.0, float(seconds))
    return None


def _status_body(error: ApiException) -> JSON | None:
    body = error.body
    if not body:
        return None
    try:
        parsed = json.loads(body)
    except (ValueError, TypeError):
        return None
    return parsed if isinstance(parsed, dict) else None


def describe_error(error: BaseException) -> str:
    """One line saying what went wrong, for the logs (no traceback: these are expected)."""
    if isinstance(error, ApiException):
        status = _status_body(error)
        message = status.get("message") if status else None
        reason = status.get("reason") if status else None
        if error.status == 0:  # the client wraps TLS failures as "SSLError\n<details>"
            return "TLS error: " + " ".join(str(error.reason).split())
        text = f"HTTP {error.status} {reason or error.reason or ''}".rstrip()
        if message:
            text += f": {message}"
        if error.status in (401, 403):
            text += " (check the credentials and RBAC: get, list and watch are needed)"
        return text
    if isinstance(error, _GoneError | _StreamError | _ShortWatchError):
        return str(error)
    if isinstance(error, urllib3.exceptions.MaxRetryError) and error.reason is not None:
        return describe_error(error.reason)
    if isinstance(error, urllib3.exceptions.NewConnectionError):
        # urllib3 prefixes the OS error with a repr of the connection object; keep it short.
        conn = getattr(error, "conn", None)
        where = f" to {conn.host}:{conn.port}" if conn is not None else ""
        cause = str(error).rpartition("new connection: ")[2]
        return f"cannot connect{where}: {cause}"
    if isinstance(error, urllib3.exceptions.SSLError):
        return f"TLS error: {error}"
    if isinstance(error, urllib3.exceptions.ReadTimeoutError):
        return "read timed out: no data from the server, not even a bookmark"
    if isinstance(error, urllib3.exceptions.ConnectTimeoutError):
        return f"connect timed out: {error}"
    if isinstance(error, urllib3.exceptions.ProtocolError):
        return f"connection cut: {error}"
    return f"{type(error).__name__}: {error}"


class _GoneError(Exception):
    """410 Gone/Expired: the resourceVersion (or continue token) is too old; relist."""


class _StreamError(Exception):
    """An ``ERROR`` event other than 410, or a reply that breaks the protocol."""


class _ShortWatchError(Exception):
    """The server ended a watch at once, with nothing in it; back off before the next."""


# --------------------------------------------------------------------------------------------
# The informer


@dataclass
class InformerStats:
    """Counters for logs, tests and the health endpoint (written by the loop thread only)."""

    lists: int = 0
    """Completed lists (the first one plus every relist)."""
    pages: int = 0
    watches: int = 0
    """Watch requests answered with HTTP 200."""
    events: int = 0
    """ADDED/MODIFIED/DELETED events applied."""
    bookmarks: int = 0
    gone: int = 0
    """410s seen (each leads to a relist)."""
    errors: int = 0
    skipped: int = 0
    """Objects convert() rejected."""


class Informer:
    """The list+watch loop of one collection, on its own thread (or in the caller's: ``run``).

    ``wait(seconds) -> stopped`` and ``rand() -> [0, 1)`` are injectable so tests can drive
    the backoff without sleeping; by default ``wait`` returns early when ``stop()`` is called.
    """

    def __init__(
        self,
        api_client: ApiClient,
        resource: Resource,
        sink: Sink,
        *,
        namespace: str | None = None,
        field_selector: str | None = None,
        label_selector: str | None = None,
        settings: WatchSettings | None = None,
        on_synced: Callable[[Informer], None] | None = None,
        wait: Callable[[float], bool] | None = None,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
        converter: Converter = convert,
    ) -> None:
        """``converter`` turns one raw object into what ``sink`` stores (kdns's model by
        default; ``kdns.watch.configmap`` reads ConfigMaps through it into its own store)."""
        self.client = api_client
        self._converter = converter
        self.resource = resource
        self.sink = sink
        self.namespace = namespace
        self.field_selector = field_selector
        self.label_selector = label_selector
        self.settings = settings or WatchSettings()
        self.name = resource.plural if namespace is None else f"{resource.plural}/{namespace}"
        self._path = resource.path(namespace)
        self._on_synced = on_synced
        self._stopping = threading.Event()
        self._wait = wait or self._stopping.wait
        self._rand = rand
        self._clock = clock
        self._backoff = Backoff(self.settings, rand)
        self._gone_streak = 0
        self._response_lock = threading.Lock()
        self._response: urllib3.BaseHTTPResponse | None = None
        self._thread: threading.Thread | None = None
        self.synced = threading.Event()
        """Set once the first complete list has been handed to the sink."""
        self.resource_version: str | None = None
        """Where the next watch starts; None means "list first"."""
        self.started_at = clock()
        self.last_contact: float | None = None
        """Monotonic time of the last event, bookmark, completed list or clean end of stream."""
        self.last_list: float | None = None
        self.last_error: str | None = None
        self.stats = InformerStats()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self.run, name=f"watch-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the loop to end and unblock it; does not wait (see ``join``)."""
        self._stopping.set()
        with self._response_lock:
            response = self._response
            if response is not None:
                _shutdown(response)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end; True when it has (or never started)."""
        thread = self._thread
        if thread is None:
            return True
        thread.join(self.settings.stop_timeout_s if timeout is None else timeout)
        return not thread.is_alive()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def staleness(self) -> float:
        """Seconds since the last sign that our state is current (or since start if none)."""
        since = self.last_contact if self.last_contact is not None else self.started_at
        return max(0.0, self._clock() - since)

    # -- the loop ------------------------------------------------------------------------------

    def run(self, max_cycles: int | None = None) -> None:
        """Loop until ``stop()``; a cycle is one list or one watch (with its error handling).

        ``max_cycles`` bounds the loop for tests that drive it in their own thread.
        """
        cycles = 0
        while not self._stopping.is_set() and (max_cycles is None or cycles < max_cycles):
            cycles += 1
            try:
                if self.resource_version is None:
                    self._list()
                else:
                    self._watch()
            except _GoneError as gone:
                if self._stopping.is_set():
                    break
                self.stats.gone += 1
                self.resource_version = None
                # The first 410 relists at once (that is the whole point); a 410 again right
                # after a fresh list means something is wrong server-side, so back off.
                delay = self._backoff.next() if self._gone_streak else 0.0
                self._gone_streak += 1
                logger.info("%s: %s; relisting%s", self.name, gone, _in(delay))
                if delay and self._wait(delay):
                    break
            except Exception as error:
                if self._stopping.is_set():
                    break  # stop() cut the connection under us: not an error
                self._failed(error)
        logger.debug("%s: watch loop ended", self.name)

    def _failed(self, error: Exception) -> None:
        self.stats.errors += 1
        what = describe_error(error)
        self.last_error = what
        delay = self._backoff.next(retry_after_of(error))
        operation = "list" if self.resource_version is None else "watch"
        if isinstance(error, _ShortWatchError):
            logger.debug("%s: %s; re-watching%s", self.name, what, _in(delay))
        else:
            logger.warning(
                "%s: %s failed (%s); retrying%s; last contact %.1f s ago",
                self.name,
                operation,
                what,
                _in(delay),
                self.staleness(),
            )
        self._wait(delay)

    def _progress(self) -> None:
        """Data arrived: the state is current as of now, and failures are behind us."""
        self.last_contact = self._clock()
        if self._backoff.failures:
            logger.info(
                "%s: the API answers again after %d failed attempts",
                self.name,
                self._backoff.failures,
            )
        self._backoff.reset()
        self.last_error = None

    # -- requests --------------------------------------------------------------------------

    def _request(self, query: Sequence[tuple[str, str]]) -> urllib3.BaseHTTPResponse:
        """GET the collection with ``query``; the raw, unread response (2xx only)."""
        method, url, headers, body, post_params = self.client.param_serialize(
            method="GET",
            resource_path=self._path,
            path_params={"namespace": self.namespace} if self.namespace is not None else None,
            query_params=list(query),
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        timeout = (self.settings.request_connect_timeout_s, self.settings.request_read_timeout_s)
        reply = self.client.call_api(
            method,
            url,
            header_params=headers,
            body=body,
            post_params=post_params,
            _request_timeout=timeout,
        )
        response: urllib3.BaseHTTPResponse = reply.response
        with self._response_lock:
            self._response = response
            if self._stopping.is_set():
                _shutdown(response)
        if not 200 <= response.status <= 299:
            try:
                data = response.read()  # the Status body, for the error message
            finally:
                self._release(response, reuse=False)
            raise ApiException(http_resp=response, body=data.decode("utf-8", "replace"))
        return response

    def _release(self, response: urllib3.BaseHTTPResponse, *, reuse: bool) -> None:
        with self._response_lock:
            self._response = None
        if not reuse:
            # A connection whose reply was not read to the end (or was cut) cannot carry
            # another request; closing it keeps it out of the pool.
            response.close()
        response.release_conn()

    def _selectors(self) -> list[tuple[str, str]]:
        query: list[tuple[str, str]] = []
        if self.field_selector:
            query.append(("fieldSelector", self.field_selector))
        if self.label_selector:
            query.append(("labelSelector", self.label_selector))
        return query

    # -- list ----------------------------------------------------------------------------------

    def _list(self) -> None:
        started = self._clock()
        objects: list[KubeObject] = []
        token: str | None = None
        list_rv: str | None = None
        pages = 0
        while True:
            query = [("limit", str(self.settings.page_size)), *self._selectors()]
            if token is not None:
                query.append(("continue", token))
            try:
                page = self._get_json(query)
            except ApiException as error:
                if error.status == 410 and token is not None:
                    raise _GoneError("the list's continue token expired (410)") from None
                raise
            pages += 1
            self.stats.pages += 1
            items = page.get("items")
            if items is not None and not isinstance(items, list):
                raise _StreamError("list reply: items is not a list")
            for item in items or ():
                obj = self._convert(item, "list")
                if obj is not None:
                    objects.append(obj)
            metadata = page.get("metadata")
            if not isinstance(metadata, Mapping):
                raise _StreamError("list reply has no metadata")
            if list_rv is None:
                rv = metadata.get("resourceVersion")
                if not isinstance(rv, str) or not rv:
                    raise _StreamError("list reply has no metadata.resourceVersion")
                list_rv = rv
            next_token = metadata.get("continue")
            if not next_token:
                break
            token = str(next_token)
        assert list_rv is not None
        kind, namespace = self.resource.kind, self.namespace
        # One change for the whole list: the store swaps this scope in one step (and the
        # publisher builds one table), so no reader sees a half-applied relist.
        self.sink.submit(lambda store: store.replace_all(objects, [kind], namespace))
        self.resource_version = list_rv
        self.last_list = self._clock()
        self.stats.lists += 1
        first = not self.synced.is_set()
        self._progress()
        logger.info(
            "%s: %s %d objects in %d page%s at resourceVersion %s (%.2f s)",
            self.name,
            "listed" if first else "relisted",
            len(objects),
            pages,
            "" if pages == 1 else "s",
            list_rv,
            self.last_list - started,
        )
        if first:
            self.synced.set()
            if self._on_synced is not None:
                self._on_synced(self)

    def _get_json(self, query: Sequence[tuple[str, str]]) -> JSON:
        response = self._request(query)
        reuse = False
        try:
            data = response.read()
            reuse = True
        finally:
            self._release(response, reuse=reuse)
        try:
            parsed = json.loads(data)
        except ValueError as error:
            raise _StreamError(f"list reply is not JSON: {error}") from None
        if not isinstance(parsed, dict):
            raise _StreamError("list reply is not a JSON object")
        return parsed

    # -- watch ---------------------------------------------------------------------------------

    def _watch(self) -> None:
        assert self.resource_version is not None
        s = self.settings
        timeout_s = s.watch_timeout_s + int(self._rand() * (s.watch_timeout_jitter_s + 1))
        query = [
            ("watch", "true"),
            ("resourceVersion", self.resource_version),
            ("timeoutSeconds", str(timeout_s)),
            *self._selectors(),
        ]
        if s.bookmarks:
            query.append(("allowWatchBookmarks", "true"))
        started = self._clock()
        try:
            response = self._request(query)
        except ApiException as error:
            if error.status == 410:
                rv = self.resource_version
                raise _GoneError(f"watch from resourceVersion {rv}: HTTP 410") from None
            raise
        self.stats.watches += 1
        received = 0
        clean = False
        try:
            for line in _lines(response):
                self._handle(line)
                received += 1
                if self._stopping.is_set():
                    return
            clean = True
        finally:
            self._release(response, reuse=clean)
        # A clean end: the server's timeoutSeconds or a graceful shutdown. Everything up to
        # now was delivered, so the state is current; the loop re-watches from the last RV.
        if received:
            self._progress()
        else:
            self.last_contact = self._clock()
        elapsed = self._clock() - started
        if not received and elapsed < s.min_watch_s:
            raise _ShortWatchError(f"watch ended after {elapsed:.2f} s with no events")
        logger.debug(
            "%s: watch ended cleanly after %.1f s; re-watching from %s",
            self.name,
            elapsed,
            self.resource_version,
        )

    def _handle(self, line: bytes) -> None:
        try:
            event = json.loads(line)
        except ValueError as error:
            raise _StreamError(f"watch event is not JSON: {error}") from None
        if not isinstance(event, dict):
            raise _StreamError("watch event is not a JSON object")
        kind = event.get("type")
        obj = event.get("object")
        if not isinstance(obj, dict):
            raise _StreamError(f"{kind} event without an object")
        if kind == "ERROR":
            code = obj.get("code")
            message = obj.get("message") or obj.get("reason") or "no message"
            if code == 410:
                raise _GoneError(f"watch expired (410 {obj.get('reason', 'Gone')}: {message})")
            raise _StreamError(f"ERROR event {code} {obj.get('reason', '')}: {message}")
        metadata = obj.get("metadata")
        rv = metadata.get("resourceVersion") if isinstance(metadata, Mapping) else None
        if kind == "BOOKMARK":
            self.stats.bookmarks += 1
        elif kind in ("ADDED", "MODIFIED"):
            self._upsert(obj)
            self.stats.events += 1
        elif kind == "DELETED":
            self._delete(obj)
            self.stats.events += 1
        else:
            logger.debug("%s: ignoring a watch event of type %r", self.name, kind)
            return
        if isinstance(rv, str) and rv:
            # Resume point for the next watch. RVs are opaque: never compared, only echoed.
            self.resource_version = rv
        self._gone_streak = 0
        self._progress()

    def _convert(self, raw: Any, where: str) -> Any:
        """The converter's record (a ``KubeObject`` by default), or None (logged) when the
        object is unusable."""
        if not isinstance(raw, dict):
            self.stats.skipped += 1
            logger.warning("%s: skipping a %s item that is not an object", self.name, where)
            return None
        # Items of a typed list carry no kind/apiVersion; the collection says what they are.
        raw.setdefault("kind", self.resource.kind)
        raw.setdefault("apiVersion", self.resource.api_version)
        try:
            obj = self._converter(raw)
        except ConvertError as error:
            self.stats.skipped += 1
            logger.warning("%s: skipping %s: %s", self.name, _object_name(raw), error)
            return None
        if obj is None:
            self.stats.skipped += 1
            logger.warning(
                "%s: skipping %s of unexpected kind %s %s",
                self.name,
                _object_name(raw),
                raw.get("apiVersion"),
                raw.get("kind"),
            )
        return obj

    def _upsert(self, raw: JSON) -> None:
        obj = self._convert(raw, "watch")
        if obj is not None:
            self.sink.submit(lambda store: store.upsert(obj))
            return
        # The object exists but cannot be served. Serving its previous version would be
        # stale, and a relist would leave it out too, so drop it: watch and relist agree.
        key = self._key(raw)
        if key is not None:
            kind = self.resource.kind
            self.sink.submit(lambda store: store.delete(kind, key))

    def _delete(self, raw: JSON) -> None:
        key = self._key(raw)
        if key is None:
            self.stats.skipped += 1
            logger.warning("%s: DELETED event without metadata.name; ignored", self.name)
            return
        kind = self.resource.kind
        self.sink.submit(lambda store: store.delete(kind, key))

    def _key(self, raw: Mapping[str, Any]) -> ObjectKey | None:
        metadata = raw.get("metadata")
        if not isinstance(metadata, Mapping):
            return None
        name = metadata.get("name")
        if not isinstance(name, str) or not name:
            return None
        if not self.resource.namespaced:
            return ("", name)
        namespace = metadata.get("namespace")
        # Same default as convert(), so a delete finds what an upsert stored.
        if not isinstance(namespace, str) or not namespace:
            namespace = DEFAULT_NAMESPACE
        return (namespace, name)


def _lines(response: urllib3.BaseHTTPResponse) -> Iterator[bytes]:
    """Newline-delimited JSON events of a chunked watch stream, as they arrive."""
    buffer = bytearray()
    # amt=None: yield each chunk as soon as it arrives instead of waiting to fill a block.
    for chunk in response.stream(amt=None, decode_content=True):
        buffer += chunk
        start = 0
        while (end := buffer.find(b"\n", start)) != -1:
            line = bytes(buffer[start:end]).strip()
            start = end + 1
            if line:
                yield line
        del buffer[:start]
    tail = bytes(buffer).strip()
    if tail:
        yield tail


def _shutdown(response: urllib3.BaseHTTPResponse) -> None:
    """Unblock a thread reading ``response`` by shutting its socket down.

    ``socket.socket.shutdown`` on purpose: ``SSLSocket.shutdown`` also unwraps the TLS object,
    which can deadlock against the reader holding it (kubernetes-client/python#2527).
    """
    connection = getattr(response, "connection", None)
    sock = getattr(connection, "sock", None)
    if isinstance(sock, socket.socket):
        try:
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass


def _object_name(raw: Mapping[str, Any]) -> str:
    metadata = raw.get("metadata")
    if not isinstance(metadata, Mapping):
        return "an object without metadata"
    name = metadata.get("name")
    namespace = metadata.get("namespace")
    return f"{namespace}/{name}" if namespace else str(name)


def _in(delay: float) -> str:
    return f" in {delay:.2f} s" if delay else " now"
