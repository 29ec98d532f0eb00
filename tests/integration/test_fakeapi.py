"""The fake API server (tests/fakeapi) against the unmodified ``kubernetes`` client.

These tests own the proof that the fake speaks the protocol the watcher will meet: lists and
paging, watch streams with resourceVersions, bookmarks, timeouts and 410s, selectors, the fault
hooks, TLS with a bearer token, and the request log.  Each test takes well under 3 s and waits on
conditions with deadlines, never on fixed sleeps.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes import config, watch
from kubernetes.client import ApiClient, Configuration, CoreV1Api, DiscoveryV1Api
from kubernetes.client.exceptions import ApiException
from kubernetes.config.incluster_config import InClusterConfigLoader

from tests.fakeapi import (
    INITIAL_EVENTS_END_ANNOTATION,
    FakeKube,
    SelectorError,
    parse_bool,
    parse_label_selector,
)
from tests.support.waiting import WaitTimeoutError, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

# ---------------------------------------------------------------------------------------------
# Objects and helpers


def namespace(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}


def service(
    name: str, ns: str = "default", labels: dict[str, str] | None = None, ip: str = "10.0.0.1"
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
        "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
    }


def pod(name: str, ns: str, node: str) -> dict[str, Any]:
    return {
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
        "status": {"phase": "Running", "podIP": "10.1.0.7"},
    }


def endpoint_slice(name: str, ns: str, svc: str, addresses: list[str] | None) -> dict[str, Any]:
    endpoints = (
        None
        if addresses is None
        else [{"addresses": [a], "conditions": {"ready": True}} for a in addresses]
    )
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {"kubernetes.io/service-name": svc},
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }


def status_body(err: ApiException) -> dict[str, Any]:
    body = json.loads(err.body)
    assert body["kind"] == "Status"
    return body


class Collector:
    """Runs ``Watch().stream(func, **kwargs)`` on a thread and collects what it yields."""

    def __init__(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.watch = watch.Watch()
        self.events: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.started = time.monotonic()
        self.elapsed: float | None = None
        self.stopped = False
        self._thread = threading.Thread(target=self._run, args=(func, args, kwargs), daemon=True)
        self._thread.start()

    def _run(self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        try:
            for event in self.watch.stream(func, *args, **kwargs):
                self.events.append(event)
        except urllib3.exceptions.ProtocolError as err:
            # Watch.stop() (kubernetes >= 36) shuts the socket down under the blocked read, so
            # the generator raises "Response ended prematurely" instead of just ending.
            if not self.stopped:
                self.error = err
        except BaseException as err:  # handed to the test thread
            self.error = err
        finally:
            self.elapsed = time.monotonic() - self.started
            self.done.set()

    def types(self, *, bookmarks: bool = True) -> list[str]:
        return [e["type"] for e in self.events if bookmarks or e["type"] != "BOOKMARK"]

    def names(self) -> list[tuple[str, str]]:
        return [
            (e["type"], e["raw_object"]["metadata"]["name"])
            for e in self.events
            if e["type"] != "BOOKMARK"
        ]

    def finish(self, timeout: float = 3.0) -> None:
        """Wait for the stream to end by itself (e.g. timeout_seconds)."""
        assert self.done.wait(timeout), "watch did not end"
        self._thread.join(timeout)

    def stop(self, timeout: float = 3.0) -> None:
        self.stopped = True
        self.watch.stop()
        self.finish(timeout)


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    with FakeKube(bookmark_interval=0.2) as fake:
        yield fake
    assert fake.errors == []


@pytest.fixture
def api_client(kube: FakeKube) -> Iterator[ApiClient]:
    with ApiClient(Configuration(host=kube.url)) as client:
        yield client


@pytest.fixture
def core(api_client: ApiClient) -> CoreV1Api:
    return CoreV1Api(api_client)


# ---------------------------------------------------------------------------------------------
# Lists and paging


def test_list_namespace_pages_with_limit_and_continue(kube: FakeKube, core: CoreV1Api) -> None:
    for i in range(5):
        kube.apply(namespace(f"ns{i}"))

    first = core.list_namespace(limit=2)
    assert [n.metadata.name for n in first.items] == ["ns0", "ns1"]
    assert first.metadata.resource_version == kube.resource_version
    assert first.metadata.remaining_item_count == 3
    names = [n.metadata.name for n in first.items]
    token = first.metadata._continue
    pages = 1
    while token:
        page = core.list_namespace(limit=2, _continue=token)
        assert page.metadata.resource_version == first.metadata.resource_version
        names += [n.metadata.name for n in page.items]
        token = page.metadata._continue
        pages += 1
    assert names == [f"ns{i}" for i in range(5)]
    assert pages == 3
    assert [r.query.get("limit") for r in kube.requests_for(verb="list")] == ["2", "2", "2"]


def test_paged_list_is_one_consistent_snapshot(kube: FakeKube, core: CoreV1Api) -> None:
    for i in range(4):
        kube.apply(service(f"svc{i}", ns="a" if i < 2 else "b"))
    first = core.list_service_for_all_namespaces(limit=2)
    snapshot_rv = first.metadata.resource_version

    kube.apply(service("svc3", ns="b", ip="10.9.9.9"))  # modified after the first page
    kube.apply(service("svc9", ns="b"))  # created after the first page
    kube.delete("Service", "b", "svc2")  # deleted after the first page

    rest = core.list_service_for_all_namespaces(limit=2, _continue=first.metadata._continue)
    assert rest.metadata.resource_version == snapshot_rv
    assert rest.metadata._continue is None
    assert [(s.metadata.namespace, s.metadata.name) for s in rest.items] == [
        ("b", "svc2"),
        ("b", "svc3"),
    ]
    assert rest.items[1].spec.cluster_ip == "10.0.0.1"  # the version of the snapshot
    fresh = core.list_service_for_all_namespaces()
    assert [s.metadata.name for s in fresh.items] == ["svc0", "svc1", "svc3", "svc9"]
    assert int(fresh.metadata.resource_version) > int(snapshot_rv)


def test_expired_continue_token_is_http_410_expired(kube: FakeKube, core: CoreV1Api) -> None:
    for i in range(3):
        kube.apply(service(f"svc{i}"))
    token = core.list_service_for_all_namespaces(limit=1).metadata._continue
    kube.expire_continue_tokens()

    with pytest.raises(ApiException) as caught:
        core.list_service_for_all_namespaces(limit=1, _continue=token)
    assert caught.value.status == 410
    body = status_body(caught.value)
    assert body["reason"] == "Expired"
    assert body["code"] == 410
    assert body["message"].startswith("The provided continue parameter is too old")
    # Starting the list again without the token works.
    assert len(core.list_service_for_all_namespaces(limit=5).items) == 3


def test_continue_token_expires_after_its_ttl() -> None:
    with (
        FakeKube(continue_ttl=0.3) as kube,
        ApiClient(Configuration(host=kube.url)) as client,
    ):
        core = CoreV1Api(client)
        kube.apply(namespace("a"))
        kube.apply(namespace("b"))
        token = core.list_namespace(limit=1).metadata._continue
        assert core.list_namespace(limit=1, _continue=token).items  # still valid

        def expired() -> bool:
            try:
                core.list_namespace(limit=1, _continue=token)
            except ApiException as err:
                return err.status == 410
            return False

        wait_until(expired, timeout=2.0)


def test_compaction_expires_older_continue_tokens(kube: FakeKube, core: CoreV1Api) -> None:
    kube.apply(namespace("a"))
    kube.apply(namespace("b"))
    token = core.list_namespace(limit=1).metadata._continue
    kube.apply(namespace("c"))
    kube.compact()
    with pytest.raises(ApiException) as caught:
        core.list_namespace(limit=1, _continue=token)
    assert caught.value.status == 410


def test_preload_content_false_returns_the_raw_json_list(kube: FakeKube, core: CoreV1Api) -> None:
    kube.apply(service("web", ns="prod"))
    response = core.list_service_for_all_namespaces(_preload_content=False)
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json"
    body = json.loads(response.data)
    assert body["kind"] == "ServiceList"
    assert body["apiVersion"] == "v1"
    assert body["metadata"] == {"resourceVersion": kube.resource_version}
    [item] = body["items"]
    # Like the real server, items of a typed list carry no kind/apiVersion.
    assert "kind" not in item
    assert "apiVersion" not in item
    assert item["metadata"]["name"] == "web"
    assert item["metadata"]["resourceVersion"] == kube.resource_version


def test_endpoint_slices_through_discovery_v1(kube: FakeKube, api_client: ApiClient) -> None:
    kube.apply(endpoint_slice("web-abc", "prod", "web", ["10.1.0.1", "10.1.0.2"]))
    kube.apply(endpoint_slice("web-def", "prod", "web", None))
    kube.apply(endpoint_slice("db-xyz", "data", "db", ["10.1.0.9"]))
    discovery = DiscoveryV1Api(api_client)

    everything = discovery.list_endpoint_slice_for_all_namespaces()
    assert [s.metadata.name for s in everything.items] == ["db-xyz", "web-abc", "web-def"]
    by_name = {s.metadata.name: s for s in everything.items}
    assert [e.addresses for e in by_name["web-abc"].endpoints] == [["10.1.0.1"], ["10.1.0.2"]]
    assert by_name["web-def"].endpoints is None
    assert by_name["web-abc"].address_type == "IPv4"

    web = discovery.list_namespaced_endpoint_slice(
        "prod", label_selector="kubernetes.io/service-name=web"
    )
    assert [s.metadata.name for s in web.items] == ["web-abc", "web-def"]
    assert kube.requests[-1].path == "/apis/discovery.k8s.io/v1/namespaces/prod/endpointslices"


def test_label_and_field_selectors_on_lists(kube: FakeKube, core: CoreV1Api) -> None:
    kube.apply(service("a", ns="x", labels={"app": "web", "tier": "front"}))
    kube.apply(service("b", ns="x", labels={"app": "db"}))
    kube.apply(service("c", ns="y"))
    kube.apply(pod("p1", "x", "node-1"))
    kube.apply(pod("p2", "x", "node-2"))

    def names(**kwargs: Any) -> list[str]:
        return [s.metadata.name for s in core.list_service_for_all_namespaces(**kwargs).items]

    assert names(label_selector="app=web") == ["a"]
    assert names(label_selector="app==web") == ["a"]
    assert names(label_selector="app!=web") == ["b", "c"]
    assert names(label_selector="app") == ["a", "b"]
    assert names(label_selector="!app") == ["c"]
    assert names(label_selector="app,tier!=back") == ["a", "b"]
    assert names(label_selector="app in (web, db)") == ["a", "b"]
    assert names(label_selector="app notin (web)") == ["b", "c"]
    assert names(field_selector="metadata.name=b") == ["b"]
    assert names(field_selector="metadata.namespace!=x") == ["c"]
    listed = core.list_namespaced_service("x", label_selector="app")
    assert [s.metadata.name for s in listed.items] == ["a", "b"]
    on_node = core.list_pod_for_all_namespaces(field_selector="spec.nodeName=node-2")
    assert [p.metadata.name for p in on_node.items] == ["p2"]

    with pytest.raises(ApiException) as caught:
        core.list_service_for_all_namespaces(field_selector="spec.nodeName=node-2")
    assert caught.value.status == 400
    assert status_body(caught.value)["message"] == "field label not supported: spec.nodeName"
    with pytest.raises(ApiException) as caught:
        core.list_service_for_all_namespaces(label_selector="app=(")
    assert caught.value.status == 400


def test_get_one_object_and_404(kube: FakeKube, core: CoreV1Api) -> None:
    kube.apply(service("web", ns="prod"))
    kube.apply(namespace("prod"))
    assert core.read_namespaced_service("web", "prod").metadata.name == "web"
    assert core.read_namespace("prod").metadata.name == "prod"
    with pytest.raises(ApiException) as caught:
        core.read_namespaced_service("nope", "prod")
    assert caught.value.status == 404
    assert status_body(caught.value)["reason"] == "NotFound"


def test_list_from_a_future_resource_version_is_504_too_large(
    kube: FakeKube, core: CoreV1Api
) -> None:
    future = str(int(kube.resource_version) + 10)
    with pytest.raises(ApiException) as caught:
        core.list_service_for_all_namespaces(
            resource_version=future, resource_version_match="NotOlderThan"
        )
    assert caught.value.status == 504
    assert caught.value.headers["Retry-After"] == "1"
    assert "Too large resource version" in status_body(caught.value)["message"]


# ---------------------------------------------------------------------------------------------
# Watches


def test_watch_replays_history_after_list_rv_then_streams_live(
    kube: FakeKube, core: CoreV1Api
) -> None:
    kube.apply(service("old", ns="prod"))
    listed = core.list_service_for_all_namespaces()
    list_rv = listed.metadata.resource_version
    kube.apply(namespace("unrelated"))  # bumps the global RV: service RVs have gaps
    kube.apply(service("web", ns="prod"))
    kube.apply(service("old", ns="prod", ip="10.0.0.2"))

    collector = Collector(
        core.list_service_for_all_namespaces, resource_version=list_rv, timeout_seconds=2
    )
    wait_until(lambda: len(collector.events) == 2, timeout=2)
    assert collector.names() == [("ADDED", "web"), ("MODIFIED", "old")]
    kube.delete("Service", "prod", "web")
    kube.apply(service("new", ns="dev"))
    wait_until(lambda: len(collector.events) == 4, timeout=2)
    collector.stop()

    assert collector.error is None
    assert collector.names() == [
        ("ADDED", "web"),
        ("MODIFIED", "old"),
        ("DELETED", "web"),
        ("ADDED", "new"),
    ]
    rvs = [int(e["object"].metadata.resource_version) for e in collector.events]
    assert rvs == sorted(rvs)
    assert rvs[0] == int(list_rv) + 2  # the namespace took list_rv + 1
    assert type(collector.events[0]["object"]).__name__ == "V1Service"
    assert collector.watch.resource_version == kube.resource_version
    [request] = kube.requests_for(verb="watch")
    assert request.query["watch"] in ("true", "True")
    assert request.query["resourceVersion"] == list_rv


def test_watch_without_resource_version_starts_with_synthetic_added(
    kube: FakeKube, core: CoreV1Api
) -> None:
    kube.apply(service("b", ns="x"))
    kube.apply(service("a", ns="y"))
    kube.apply(service("a", ns="x"))
    collector = Collector(core.list_service_for_all_namespaces, timeout_seconds=2)
    wait_until(lambda: len(collector.events) == 3, timeout=2)
    assert collector.names() == [("ADDED", "a"), ("ADDED", "b"), ("ADDED", "a")]
    # Key order, not RV order: the last one seen is not the newest RV.
    rvs = [int(e["object"].metadata.resource_version) for e in collector.events]
    assert rvs != sorted(rvs)
    wait_until(lambda: kube.active_watches("Service") == 1, timeout=2)
    kube.apply(service("c", ns="x"))
    wait_until(lambda: len(collector.events) == 4, timeout=2)
    collector.stop()
    assert collector.names()[-1] == ("ADDED", "c")


def test_label_selected_watch_turns_transitions_into_added_and_deleted(
    kube: FakeKube, core: CoreV1Api
) -> None:
    rv = kube.resource_version
    kube.apply(service("web", ns="x", labels={"dns": "on"}))
    kube.apply(service("web", ns="x", labels={"dns": "off"}))  # stops matching
    kube.apply(service("web", ns="x", labels={"dns": "on"}))  # matches again
    kube.apply(service("web", ns="x", labels={"dns": "on", "v": "2"}))
    kube.apply(service("other", ns="x", labels={"dns": "off"}))  # never matches
    kube.delete("Service", "x", "web")
    collector = Collector(
        core.list_namespaced_service,
        "x",
        label_selector="dns=on",
        resource_version=rv,
        timeout_seconds=2,
    )
    wait_until(lambda: len(collector.events) == 5, timeout=2)
    collector.stop()
    assert collector.types() == ["ADDED", "DELETED", "ADDED", "MODIFIED", "DELETED"]
    assert collector.events[1]["raw_object"]["metadata"]["labels"] == {"dns": "off"}


def test_field_selected_pod_watch_on_node(kube: FakeKube, core: CoreV1Api) -> None:
    rv = kube.resource_version
    kube.apply(pod("p1", "x", "node-1"))
    kube.apply(pod("p2", "x", "node-2"))
    collector = Collector(
        core.list_pod_for_all_namespaces,
        field_selector="spec.nodeName=node-2",
        resource_version=rv,
        timeout_seconds=2,
    )
    wait_until(lambda: len(collector.events) == 1, timeout=2)
    collector.stop()
    assert collector.names() == [("ADDED", "p2")]


def test_bookmarks_carry_only_the_resource_version_and_advance_the_watch(
    kube: FakeKube, core: CoreV1Api
) -> None:
    kube.apply(service("web"))
    list_rv = core.list_service_for_all_namespaces().metadata.resource_version
    collector = Collector(
        core.list_service_for_all_namespaces,
        resource_version=list_rv,
        allow_watch_bookmarks=True,
        timeout_seconds=2,
    )
    wait_until(lambda: kube.active_watches("services") == 1, timeout=2)
    kube.apply(namespace("elsewhere"))  # only other resources change
    target = kube.resource_version

    def bookmarked_at_target() -> bool:
        return any(
            e["type"] == "BOOKMARK" and e["raw_object"]["metadata"]["resourceVersion"] == target
            for e in list(collector.events)
        )

    wait_until(bookmarked_at_target, timeout=2)
    collector.stop()
    bookmark = next(e for e in collector.events if e["type"] == "BOOKMARK")
    assert bookmark["raw_object"] == {
        "kind": "Service",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": bookmark["raw_object"]["metadata"]["resourceVersion"]},
    }
    assert collector.types(bookmarks=False) == []
    # kubernetes >= 36 moves the watch's RV forward on bookmarks.
    assert collector.watch.resource_version == target
    assert kube.requests_for(verb="watch")[0].query["allowWatchBookmarks"] == "true"


def test_no_bookmarks_unless_asked_for() -> None:
    with (
        FakeKube(bookmark_interval=0.05) as kube,
        ApiClient(Configuration(host=kube.url)) as client,
    ):
        core = CoreV1Api(client)
        collector = Collector(core.list_namespace, timeout_seconds=1)
        collector.finish()
        assert collector.error is None
        assert collector.events == []


def test_timeout_seconds_ends_the_stream_cleanly(kube: FakeKube, core: CoreV1Api) -> None:
    collector = Collector(
        core.list_namespace, resource_version=kube.resource_version, timeout_seconds=1
    )
    collector.finish(timeout=2.5)
    assert collector.error is None
    assert collector.elapsed is not None
    assert 0.9 <= collector.elapsed < 2.0
    assert len(kube.requests_for(verb="watch")) == 1  # with timeout_seconds: no re-watch


def test_watch_list_sends_initial_events_then_an_end_bookmark(
    kube: FakeKube, core: CoreV1Api
) -> None:
    kube.apply(service("a"))
    kube.apply(service("b"))
    collector = Collector(
        core.list_service_for_all_namespaces,
        send_initial_events=True,
        resource_version_match="NotOlderThan",
        allow_watch_bookmarks=True,
        timeout_seconds=1,
    )
    wait_until(lambda: len(collector.events) >= 3, timeout=2)
    collector.stop()
    assert collector.types()[:3] == ["ADDED", "ADDED", "BOOKMARK"]
    end = collector.events[2]["raw_object"]["metadata"]
    assert end["annotations"] == {INITIAL_EVENTS_END_ANNOTATION: "true"}
    assert end["resourceVersion"] == kube.resource_version

    with pytest.raises(ApiException) as caught:  # resourceVersionMatch is required
        list(
            watch.Watch().stream(
                core.list_service_for_all_namespaces,
                send_initial_events=True,
                allow_watch_bookmarks=True,
                timeout_seconds=1,
            )
        )
    assert caught.value.status == 422
    kube.watch_list = False  # a 1.33 server: the feature gate is off
    with pytest.raises(ApiException) as caught:
        list(
            watch.Watch().stream(
                core.list_service_for_all_namespaces,
                send_initial_events=True,
                resource_version_match="NotOlderThan",
                allow_watch_bookmarks=True,
                timeout_seconds=1,
            )
        )
    assert caught.value.status == 422


# ---------------------------------------------------------------------------------------------
# 410 Gone after compaction


def test_watch_from_compacted_rv_raises_410_at_once_with_timeout_seconds(
    kube: FakeKube, core: CoreV1Api
) -> None:
    old_rv = kube.resource_version
    kube.apply(service("web"))
    kube.compact()
    with pytest.raises(ApiException) as caught:
        list(
            watch.Watch().stream(
                core.list_service_for_all_namespaces, resource_version=old_rv, timeout_seconds=1
            )
        )
    assert caught.value.status == 410
    assert caught.value.reason.startswith("Expired: too old resource version")
    assert len(kube.requests_for(verb="watch")) == 1
    assert kube.requests_for(verb="watch")[0].status == 200  # the 410 came as an ERROR event


def test_watch_from_compacted_rv_without_timeout_retries_once_then_raises(
    kube: FakeKube, core: CoreV1Api
) -> None:
    old_rv = kube.resource_version
    kube.apply(service("web"))
    kube.compact()
    with pytest.raises(ApiException) as caught:
        list(watch.Watch().stream(core.list_service_for_all_namespaces, resource_version=old_rv))
    assert caught.value.status == 410
    watches = kube.requests_for(verb="watch")
    assert [w.query["resourceVersion"] for w in watches] == [old_rv, old_rv]
    assert kube.requests_for(verb="list") == []  # the client never re-lists by itself


def test_watch_from_compacted_rv_as_http_410_status(core: CoreV1Api, kube: FakeKube) -> None:
    kube.watch_gone = "status"
    old_rv = kube.resource_version
    kube.apply(service("web"))
    kube.compact()
    with pytest.raises(ApiException) as caught:
        list(
            watch.Watch().stream(
                core.list_service_for_all_namespaces, resource_version=old_rv, timeout_seconds=1
            )
        )
    assert caught.value.status == 410
    body = status_body(caught.value)
    assert (body["reason"], body["code"]) == ("Expired", 410)
    assert kube.requests_for(verb="watch")[0].status == 410


def test_compact_keeps_watches_from_the_compaction_point_and_live_watches(
    kube: FakeKube, core: CoreV1Api
) -> None:
    kube.apply(service("a"))
    live = Collector(
        core.list_service_for_all_namespaces,
        resource_version=kube.resource_version,
        timeout_seconds=2,
    )
    wait_until(lambda: kube.active_watches() == 1, timeout=2)
    kube.apply(service("b"))
    compacted_at = kube.compact()
    kube.apply(service("c"))
    wait_until(lambda: live.names() == [("ADDED", "b"), ("ADDED", "c")], timeout=2)
    live.stop()
    assert live.error is None

    resumed = Collector(
        core.list_service_for_all_namespaces,
        resource_version=str(compacted_at),
        timeout_seconds=2,
    )
    wait_until(lambda: resumed.names() == [("ADDED", "c")], timeout=2)
    resumed.stop()
    assert resumed.error is None


def test_expire_watches_sends_410_to_open_watches(kube: FakeKube, core: CoreV1Api) -> None:
    collector = Collector(
        core.list_service_for_all_namespaces,
        resource_version=kube.resource_version,
        timeout_seconds=2,
    )
    other = Collector(
        core.list_namespace, resource_version=kube.resource_version, timeout_seconds=2
    )
    wait_until(lambda: kube.active_watches() == 2, timeout=2)
    assert kube.expire_watches("Service") == 1
    collector.finish()
    assert isinstance(collector.error, ApiException)
    assert collector.error.status == 410
    wait_until(lambda: kube.active_watches() == 1, timeout=2)  # server side ends just after
    other.stop()
    assert other.error is None


# ---------------------------------------------------------------------------------------------
# The wire format, checked without the client


def _raw_get(port: int, target: str, timeout: float = 3.0) -> tuple[str, bytes]:
    """Send one GET and read until the server ends the response; return (head, raw body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(
            f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head.decode(), body


def _dechunk(body: bytes) -> list[bytes]:
    chunks: list[bytes] = []
    while True:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            assert body == b"\r\n"  # terminating chunk, no trailers
            return chunks
        chunks.append(body[:size])
        assert body[size : size + 2] == b"\r\n"
        body = body[size + 2 :]


@pytest.mark.parametrize("flag", ["true", "True", "1"])
def test_watch_is_chunked_one_json_event_per_chunk(kube: FakeKube, flag: str) -> None:
    kube.apply(namespace("a"))
    kube.apply(namespace("b"))
    head, body = _raw_get(kube.port, f"/api/v1/namespaces?watch={flag}&timeoutSeconds=1")
    assert head.startswith("HTTP/1.1 200")
    assert "Transfer-Encoding: chunked" in head
    assert "Content-Type: application/json" in head
    assert "Content-Length" not in head
    chunks = _dechunk(body)
    assert all(c.endswith(b"\n") and c.count(b"\n") == 1 for c in chunks)
    events = [json.loads(c) for c in chunks]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "a"),
        ("ADDED", "b"),
    ]
    assert events[0]["object"]["kind"] == "Namespace"  # watch objects do carry kind


def test_bad_query_boolean_is_400(kube: FakeKube) -> None:
    head, body = _raw_get(kube.port, "/api/v1/namespaces?watch=yes")
    assert head.startswith("HTTP/1.1 400")
    assert json.loads(body)["reason"] == "BadRequest"
    assert parse_bool("True") is True
    assert parse_bool("false") is False


def test_selector_parser_rejects_garbage() -> None:
    assert [r.op for r in parse_label_selector("a=b,c!=d,e,!f,g in (h,i)")] == [
        "=",
        "!=",
        "exists",
        "!",
        "in",
    ]
    with pytest.raises(SelectorError):
        parse_label_selector("a=b,,c")


# ---------------------------------------------------------------------------------------------
# Fault hooks


def test_fail_next_answers_500_then_recovers(kube: FakeKube, core: CoreV1Api) -> None:
    fault = kube.fail_next(1)
    with pytest.raises(ApiException) as caught:
        core.list_namespace()
    assert caught.value.status == 500
    assert status_body(caught.value)["reason"] == "InternalError"
    assert core.list_namespace().items == []
    assert [r.status for r in kube.requests] == [500, 200]
    assert fault.hits == 1
    assert fault.triggered.is_set()


def test_fail_next_can_target_watches_of_one_resource(kube: FakeKube, core: CoreV1Api) -> None:
    kube.fail_next(1, status=503, verb="watch", resource="Service")
    core.list_service_for_all_namespaces()  # a list is not affected
    with pytest.raises(ApiException) as caught:
        list(watch.Watch().stream(core.list_service_for_all_namespaces, timeout_seconds=1))
    assert caught.value.status == 503


def test_429_with_retry_after_is_retried_by_urllib3_unless_retries_are_off(
    kube: FakeKube, core: CoreV1Api
) -> None:
    # Surprise: the client's default urllib3 Retry (3 tries) honours Retry-After on 429.
    kube.throttle_next(2, retry_after=0)
    assert core.list_namespace().items == []
    assert [r.status for r in kube.requests] == [429, 429, 200]

    kube.clear_requests()
    kube.throttle_next(1, retry_after=7)
    with (
        ApiClient(Configuration(host=kube.url, retries=0)) as client,
        pytest.raises(ApiException) as caught,
    ):
        CoreV1Api(client).list_namespace()
    assert caught.value.status == 429
    assert caught.value.headers["Retry-After"] == "7"
    body = status_body(caught.value)
    assert body["reason"] == "TooManyRequests"
    assert body["details"] == {"retryAfterSeconds": 7}


def test_stalled_watch_is_cut_by_the_client_read_timeout(kube: FakeKube, core: CoreV1Api) -> None:
    fault = kube.stall_next()  # until released
    started = time.monotonic()
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        list(
            watch.Watch().stream(
                core.list_namespace,
                resource_version=kube.resource_version,
                timeout_seconds=5,
                _request_timeout=(2, 0.3),
            )
        )
    assert time.monotonic() - started < 1.5
    assert fault.triggered.is_set()
    assert kube.requests_for(verb="watch")[0].status == 200  # headers went out, then nothing
    fault.release()
    kube.apply(namespace("after"))
    events = list(
        watch.Watch().stream(core.list_namespace, timeout_seconds=1, _request_timeout=(2, 2))
    )
    assert [e["raw_object"]["metadata"]["name"] for e in events] == ["after"]


def test_timed_stall_delays_but_loses_nothing(kube: FakeKube, core: CoreV1Api) -> None:
    rv = kube.resource_version
    kube.apply(namespace("a"))
    kube.stall_next(seconds=0.3)
    started = time.monotonic()
    events = list(watch.Watch().stream(core.list_namespace, resource_version=rv, timeout_seconds=1))
    assert [e["raw_object"]["metadata"]["name"] for e in events] == ["a"]
    assert time.monotonic() - started >= 0.3


def test_stalled_list_after_headers(kube: FakeKube, core: CoreV1Api) -> None:
    kube.stall_next(verb="list")
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        core.list_namespace(_request_timeout=(2, 0.3))
    kube.release_stalls()
    assert core.list_namespace().items == []


def test_close_mid_stream_after_k_events(kube: FakeKube, core: CoreV1Api) -> None:
    for name in ("a", "b", "c"):
        kube.apply(namespace(name))
    kube.close_next_watch(after_events=2)
    seen: list[str] = []

    def consume() -> None:
        for event in watch.Watch().stream(core.list_namespace, timeout_seconds=2):
            seen.append(event["raw_object"]["metadata"]["name"])

    with pytest.raises(urllib3.exceptions.ProtocolError, match="ended prematurely"):
        consume()
    assert seen == ["a", "b"]
    # The next watch is unaffected.
    events = list(watch.Watch().stream(core.list_namespace, timeout_seconds=1))
    assert len(events) == 3


def test_stop_refuses_connections_and_restart_keeps_port_and_state(
    kube: FakeKube, core: CoreV1Api
) -> None:
    kube.apply(service("web"))
    rv = kube.resource_version
    port = kube.port
    collector = Collector(
        core.list_service_for_all_namespaces, resource_version=rv, timeout_seconds=5
    )
    wait_until(lambda: kube.active_watches() == 1, timeout=2)

    kube.stop()
    assert not kube.running
    collector.finish(timeout=2)  # the open watch ended cleanly when the server went away
    assert collector.error is None
    with pytest.raises(urllib3.exceptions.MaxRetryError) as caught:
        core.list_namespace()
    assert isinstance(caught.value.reason, urllib3.exceptions.NewConnectionError)
    kube.apply(service("while-down"))  # the store lives on, like etcd

    kube.start()
    assert kube.port == port
    assert [s.metadata.name for s in core.list_service_for_all_namespaces().items] == [
        "web",
        "while-down",
    ]
    events = list(
        watch.Watch().stream(
            core.list_service_for_all_namespaces, resource_version=rv, timeout_seconds=1
        )
    )
    assert [e["raw_object"]["metadata"]["name"] for e in events] == ["while-down"]


def test_crash_cuts_open_watches(kube: FakeKube, core: CoreV1Api) -> None:
    collector = Collector(
        core.list_namespace, resource_version=kube.resource_version, timeout_seconds=5
    )
    wait_until(lambda: kube.active_watches() == 1, timeout=2)
    kube.restart(graceful=False)
    collector.finish(timeout=2)
    assert isinstance(collector.error, urllib3.exceptions.ProtocolError)
    assert core.list_namespace().items == []  # back on the same port


def test_stop_ends_every_thread_it_started() -> None:
    before = set(threading.enumerate())
    kube = FakeKube(bookmark_interval=0.1).start()
    client = ApiClient(Configuration(host=kube.url))
    try:
        api = CoreV1Api(client)
        api.list_namespace()  # leaves an idle keep-alive connection
        collector = Collector(api.list_namespace, allow_watch_bookmarks=True)  # no timeout
        stall = kube.stall_next(verb="list")
        stalled = threading.Thread(target=lambda: _swallow(api.list_namespace), daemon=True)
        stalled.start()
        wait_until(lambda: kube.active_watches() == 1 and stall.triggered.is_set(), timeout=2)
        started = time.monotonic()
        kube.stop()
        assert time.monotonic() - started < 1.0
        collector.stop()
        stalled.join(2)
    finally:
        client.close()
        kube.stop()
    left = [t for t in set(threading.enumerate()) - before if t.is_alive()]
    assert left == []
    assert kube.errors == []


def _swallow(call: Callable[[], Any]) -> None:
    try:
        call()
    except Exception:  # the stalled list loses its server; the error is irrelevant here
        return


# ---------------------------------------------------------------------------------------------
# TLS, tokens, client configuration


@pytest.fixture
def tls_kube(tmp_path: Path) -> Iterator[FakeKube]:
    with FakeKube(tls=True, tls_dir=tmp_path / "tls", token="s3cret-token") as fake:
        yield fake
    assert fake.errors == []


def test_tls_with_bearer_token(tls_kube: FakeKube) -> None:
    tls_kube.apply(service("web", ns="prod"))
    assert tls_kube.url.startswith("https://127.0.0.1:")
    assert tls_kube.ca_file is not None
    configuration = Configuration(
        host=tls_kube.url,
        ssl_ca_cert=str(tls_kube.ca_file),
        api_key={"BearerToken": "s3cret-token"},
        api_key_prefix={"BearerToken": "Bearer"},
    )
    with ApiClient(configuration) as client:
        core = CoreV1Api(client)
        assert [s.metadata.name for s in core.list_service_for_all_namespaces().items] == ["web"]
        events = list(watch.Watch().stream(core.list_service_for_all_namespaces, timeout_seconds=1))
        assert [e["type"] for e in events] == ["ADDED"]
    assert tls_kube.requests[0].headers["authorization"] == "Bearer s3cret-token"

    wrong = Configuration(
        host=tls_kube.url, ssl_ca_cert=str(tls_kube.ca_file), api_key={"BearerToken": "Bearer x"}
    )
    with ApiClient(wrong) as client, pytest.raises(ApiException) as caught:
        CoreV1Api(client).list_namespace()
    assert caught.value.status == 401

    untrusted = Configuration(host=tls_kube.url, retries=0)  # no CA: verification fails
    with ApiClient(untrusted) as client, pytest.raises(urllib3.exceptions.MaxRetryError) as err:
        CoreV1Api(client).list_namespace()
    assert isinstance(err.value.reason, urllib3.exceptions.SSLError)


def test_in_cluster_config_loader(tls_kube: FakeKube, tmp_path: Path) -> None:
    tls_kube.apply(namespace("kube-system"))
    files = tls_kube.write_incluster_files(tmp_path / "serviceaccount")
    configuration = Configuration()
    InClusterConfigLoader(
        token_filename=str(files.token_file),
        cert_filename=str(files.cert_file),
        environ=files.environ,
    ).load_and_set(configuration)
    assert configuration.host == tls_kube.url
    with ApiClient(configuration) as client:
        names = [n.metadata.name for n in CoreV1Api(client).list_namespace().items]
    assert names == ["kube-system"]
    # The in-cluster loader sends a lower-case scheme; the API server accepts it.
    assert tls_kube.requests[-1].headers["authorization"] == "bearer s3cret-token"


def test_kubeconfig_file(tls_kube: FakeKube, tmp_path: Path) -> None:
    path = tls_kube.write_kubeconfig(tmp_path / "kubeconfig")
    with config.new_client_from_config(config_file=str(path)) as client:
        assert CoreV1Api(client).list_namespace().items == []


# ---------------------------------------------------------------------------------------------
# The request log and direct mutation


def test_request_log_shows_rewatch_without_relist(kube: FakeKube, core: CoreV1Api) -> None:
    started = time.monotonic()
    listed = core.list_namespace(limit=10)
    rv = listed.metadata.resource_version
    w = watch.Watch()
    list(w.stream(core.list_namespace, resource_version=rv, timeout_seconds=1))
    list(w.stream(core.list_namespace, resource_version=w.resource_version, timeout_seconds=1))

    [list_request] = kube.requests_for(verb="list", resource="namespaces")
    assert list_request.method == "GET"
    assert list_request.path == "/api/v1/namespaces"
    assert list_request.query == {"limit": "10"}
    assert list_request.time >= started
    watches = kube.requests_for(verb="watch")
    assert [r.query["resourceVersion"] for r in watches] == [rv, rv]
    assert all(r.resource == "namespaces" and r.namespace is None for r in watches)


def test_apply_and_delete_keep_one_global_resource_version(kube: FakeKube) -> None:
    start = int(kube.resource_version)
    created = kube.apply(service("web", ns="prod"))
    assert created["metadata"]["resourceVersion"] == str(start + 1)
    kube.apply(namespace("prod"))
    updated = kube.apply(service("web", ns="prod", ip="10.0.0.9"))
    assert updated["metadata"]["resourceVersion"] == str(start + 3)
    assert updated["metadata"]["uid"] == created["metadata"]["uid"]
    deleted = kube.delete("Service", "prod", "web")
    assert deleted["metadata"]["resourceVersion"] == str(start + 4)
    assert kube.get("Service", "prod", "web") is None
    assert [e["type"] for e in kube.events("Service")] == ["ADDED", "MODIFIED", "DELETED"]
    defaulted = kube.apply({"kind": "Service", "metadata": {"name": "x"}})
    assert defaulted["metadata"]["namespace"] == "default"
    with pytest.raises(KeyError):
        kube.delete("Service", "prod", "web")
    with pytest.raises(ValueError, match="unknown kind"):
        kube.apply({"kind": "Deployment", "metadata": {"name": "x"}})


# ---------------------------------------------------------------------------------------------
# wait_until


def test_wait_until_returns_the_truthy_value() -> None:
    calls: list[int] = []

    def third_time() -> int:
        calls.append(1)
        return len(calls) if len(calls) >= 3 else 0

    assert wait_until(third_time, timeout=1, interval=0.001) == 3


def test_wait_until_times_out_with_the_last_assertion() -> None:
    def never() -> None:
        raise AssertionError("still 0")

    started = time.monotonic()
    with pytest.raises(WaitTimeoutError, match="never") as caught:
        wait_until(never, timeout=0.1)
    assert 0.1 <= time.monotonic() - started < 1.0
    assert isinstance(caught.value.__cause__, AssertionError)
    assert str(caught.value.__cause__) == "still 0"
