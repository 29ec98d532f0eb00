"""The live source (kdns.watch) against the fake API server, asserted through real DNS queries.

These tests own the proof of issue 3's list+watch behaviour: the initial list then the watch,
add/modify/delete of Services and slices (headless endpoints turning ready and not-ready),
slices before their Service, several slices, ``endpoints: null``, a clean server-side close
(re-watch from the last resourceVersion, no relist), compaction and 410 (exactly one relist,
deletions during the gap disappear), a stalled stream cut by the read timeout, 500s and a
refused connection (backoff, no lost updates), paged lists and an expired continue token,
bookmarks moving the resourceVersion, the in-cluster path over TLS with a token file, an API
outage (answers stay, then catch up) and SERVFAIL instead of NXDOMAIN before sync.

The unmodified ``kubernetes`` client talks to ``tests.fakeapi.FakeKube`` over loopback; kdns
answers on a real UDP socket (``tests.support.servers.running_server``). Timeouts and backoffs
are shrunk through ``WatchSettings`` so each test takes one to three seconds, and every wait
is a ``wait_until`` deadline on a condition, never a fixed sleep.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from kubernetes.client import ApiClient, Configuration

from kdns.config import ZoneConfig
from kdns.state import Store
from kdns.watch import Informer, WatchSettings, WatchSource, load_api_client
from kdns.watch.informer import SERVICES, Backoff
from tests.fakeapi import FakeKube
from tests.support.servers import RunningServer, running_server
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

# Small enough for sub-second scenarios, consistent with the fake's 0.2 s bookmarks: the read
# timeout (1 s) is longer than the bookmark gap, as it must be against a real server (60 s).
FAST = WatchSettings(
    page_size=500,
    watch_timeout_s=1,
    watch_timeout_jitter_s=0,
    request_connect_timeout_s=1.0,
    request_read_timeout_s=1.0,
    backoff_initial_s=0.02,
    backoff_max_s=0.2,
    min_watch_s=0.05,
    stale_warning_s=0.5,
    stale_check_interval_s=0.05,
    stop_timeout_s=2.0,
)
BOOKMARK_INTERVAL_S = 0.2

# ---------------------------------------------------------------------------------------------
# Objects


def namespace(name: str) -> dict[str, Any]:
    return {"kind": "Namespace", "metadata": {"name": name}}


def service(name: str, ns: str = "prod", ip: str = "10.0.0.1") -> dict[str, Any]:
    """A ClusterIP Service, or a headless one with ``ip="None"``."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "clusterIP": ip,
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
        },
    }


Endpoint = tuple[str, bool | None, str]
"""(address, ready, hostname)."""


def endpoint_slice(
    name: str, svc: str, endpoints: list[Endpoint] | None, ns: str = "prod"
) -> dict[str, Any]:
    """A slice of ``svc``; ``endpoints=None`` is sent as JSON null, as the API server may."""
    entries = None
    if endpoints is not None:
        entries = []
        for address, ready, hostname in endpoints:
            entry: dict[str, Any] = {"addresses": [address], "conditions": {"ready": ready}}
            if hostname:
                entry["hostname"] = hostname
            entries.append(entry)
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {"kubernetes.io/service-name": svc},
        },
        "addressType": "IPv4",
        "endpoints": entries,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }


# ---------------------------------------------------------------------------------------------
# DNS helpers


def fqdn(name: str, ns: str = "prod") -> str:
    return f"{name}.{ns}.svc.cluster.local."


def lookup(server: RunningServer, qname: str, rdtype: str = "A") -> tuple[str, list[str]]:
    """(rcode, sorted rdata of the answer RRset for qname/rdtype) over real UDP."""
    reply = server.query(dns.message.make_query(qname, rdtype))
    addresses: list[str] = []
    for rrset in reply.answer:
        if rrset.rdtype == dns.rdatatype.from_text(rdtype):
            addresses.extend(r.to_text() for r in rrset)
    return dns.rcode.to_text(reply.rcode()), sorted(addresses)


def wait_answer(
    server: RunningServer,
    qname: str,
    addresses: list[str],
    rcode: str = "NOERROR",
    timeout: float = 3.0,
) -> None:
    expected = (rcode, sorted(addresses))

    def matches() -> bool:
        got = lookup(server, qname)
        assert got == expected, f"{qname}: got {got}, want {expected}"
        return True

    wait_until(matches, timeout=timeout, interval=0.01, message=f"{qname} -> {expected}")


def gone(server: RunningServer, qname: str, timeout: float = 3.0) -> None:
    wait_answer(server, qname, [], rcode="NXDOMAIN", timeout=timeout)


# ---------------------------------------------------------------------------------------------
# Fixtures


class Cluster:
    """One fake API server, one DNS server fed by a WatchSource, and their teardown."""

    def __init__(self, stack: ExitStack, tmp_path: Path) -> None:
        self.stack = stack
        self.tmp_path = tmp_path
        self._kube: FakeKube | None = None
        self._dns: RunningServer | None = None
        self._source: WatchSource | None = None

    def fake(self, **kwargs: Any) -> FakeKube:
        kwargs.setdefault("bookmark_interval", BOOKMARK_INTERVAL_S)
        self._kube = FakeKube(**kwargs).start()
        self.stack.callback(self._stop_kube)
        return self._kube

    def _stop_kube(self) -> None:
        assert self._kube is not None
        self._kube.stop()
        assert self._kube.errors == []

    @property
    def kube(self) -> FakeKube:
        if self._kube is None:
            self.fake()
        assert self._kube is not None
        return self._kube

    @property
    def dns(self) -> RunningServer:
        if self._dns is None:
            self._dns = self._running_server()
        return self._dns

    def _running_server(self) -> RunningServer:
        # running_server binds UDP to port 0, then TCP to the same number, which fails now and
        # then when that number is the local port of a TCP connection in TIME_WAIT (the
        # watchers close many client connections). A fresh port is the cure; the bind fails
        # before anything has started, so nothing is left behind.
        for _ in range(9):
            try:
                return self.stack.enter_context(running_server([], synced=False))
            except OSError as error:
                if error.errno != errno.EADDRINUSE:
                    raise
        return self.stack.enter_context(running_server([], synced=False))

    @property
    def source(self) -> WatchSource:
        assert self._source is not None, "call start() first"
        return self._source

    def api_client(self) -> ApiClient:
        kubeconfig = self.kube.write_kubeconfig(self.tmp_path / "kubeconfig")
        client = load_api_client(str(kubeconfig), None, {})
        self.stack.callback(client.close)
        return client

    def start(
        self,
        settings: WatchSettings = FAST,
        *,
        api_client: ApiClient | None = None,
        wait: bool = True,
        **kwargs: Any,
    ) -> WatchSource:
        kwargs.setdefault("namespaces", None)
        kwargs.setdefault("pods", False)
        source = WatchSource(
            api_client or self.api_client(), self.dns.runtime, settings=settings, **kwargs
        )
        self._source = source
        source.start()
        self.stack.callback(self._stop_source, source)
        if wait:
            assert source.wait_synced(5.0), f"not synced: {source.status()}"
        return source

    def _stop_source(self, source: WatchSource) -> None:
        started = time.monotonic()
        source.stop()
        assert time.monotonic() - started < 1.5, "stop() was not prompt"
        alive = [i.name for i in source.informers if not i.join(0)]
        assert alive == [], f"watch threads still running: {alive}"

    def informer(self, name: str) -> Informer:
        [informer] = [i for i in self.source.informers if i.name == name]
        return informer

    def lists(self, resource: str) -> int:
        return len(self.kube.requests_for(verb="list", resource=resource))

    def watches(self, resource: str) -> list[str]:
        """The resourceVersion of every watch request of ``resource``, in order."""
        return [
            r.query["resourceVersion"]
            for r in self.kube.requests_for(verb="watch", resource=resource)
        ]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with ExitStack() as stack:
        yield Cluster(stack, tmp_path)


# ---------------------------------------------------------------------------------------------
# 1. Initial list, then watch


def test_initial_list_then_watch(cluster: Cluster) -> None:
    kube = cluster.kube
    kube.apply(namespace("prod"))
    kube.apply(service("web", ip="10.0.0.1"))
    kube.apply(service("db", ip="None"))
    kube.apply(endpoint_slice("db-1", "db", [("10.1.0.1", True, "db-0")]))
    list_rv = kube.resource_version

    source = cluster.start()
    assert source.synced()
    # The first table that says "synced" already holds every list.
    assert lookup(cluster.dns, fqdn("web")) == ("NOERROR", ["10.0.0.1"])
    assert lookup(cluster.dns, fqdn("db")) == ("NOERROR", ["10.1.0.1"])
    assert lookup(cluster.dns, "db-0." + fqdn("db")) == ("NOERROR", ["10.1.0.1"])

    kube.apply(service("api", ip="10.0.0.7"))
    wait_answer(cluster.dns, fqdn("api"), ["10.0.0.7"])

    for resource in ("namespaces", "services", "endpointslices"):
        assert cluster.lists(resource) == 1
        [first_list] = kube.requests_for(verb="list", resource=resource)
        assert first_list.query == {"limit": "500"}  # no resourceVersion: a consistent read
        first_watch = kube.requests_for(verb="watch", resource=resource)[0]
        assert first_watch.query["resourceVersion"] == list_rv
        assert first_watch.query["allowWatchBookmarks"] == "true"
        assert first_watch.query["timeoutSeconds"] == "1"
    assert kube.requests_for(resource="pods") == []


# ---------------------------------------------------------------------------------------------
# 2. Add, modify, delete; headless endpoints turning ready and not ready


def test_services_and_slices_follow_add_modify_delete(cluster: Cluster) -> None:
    kube = cluster.kube
    kube.apply(namespace("prod"))
    cluster.start()
    dns_server = cluster.dns

    kube.apply(service("web", ip="10.0.0.1"))
    wait_answer(dns_server, fqdn("web"), ["10.0.0.1"])
    kube.apply(service("web", ip="10.0.0.2"))
    wait_answer(dns_server, fqdn("web"), ["10.0.0.2"])

    kube.apply(service("db", ip="None"))
    both = [("10.1.0.1", True, "db-0"), ("10.1.0.2", True, "db-1")]
    kube.apply(endpoint_slice("db-x", "db", both))
    wait_answer(dns_server, fqdn("db"), ["10.1.0.1", "10.1.0.2"])
    wait_answer(dns_server, "db-1." + fqdn("db"), ["10.1.0.2"])

    # db-1 turns not ready: gone from the Service's answer and its own name.
    kube.apply(endpoint_slice("db-x", "db", [both[0], ("10.1.0.2", False, "db-1")]))
    wait_answer(dns_server, fqdn("db"), ["10.1.0.1"])
    assert lookup(dns_server, "db-1." + fqdn("db"))[1] == []
    # ... and ready again (ready unset counts as ready, R5.2).
    kube.apply(endpoint_slice("db-x", "db", [both[0], ("10.1.0.2", None, "db-1")]))
    wait_answer(dns_server, fqdn("db"), ["10.1.0.1", "10.1.0.2"])
    wait_answer(dns_server, "db-1." + fqdn("db"), ["10.1.0.2"])

    # The slice goes: a headless Service without ready endpoints has no name (R4.2).
    kube.delete("EndpointSlice", "prod", "db-x")
    gone(dns_server, fqdn("db"))
    kube.apply(endpoint_slice("db-y", "db", [("10.1.0.3", True, "db-2")]))
    wait_answer(dns_server, fqdn("db"), ["10.1.0.3"])

    kube.delete("Service", "prod", "db")
    kube.delete("Service", "prod", "web")
    gone(dns_server, fqdn("db"))
    gone(dns_server, fqdn("web"))
    assert cluster.informer("services").stats.events == 5


# ---------------------------------------------------------------------------------------------
# 3. A slice before its Service; several slices; endpoints: null


def test_slice_before_service_several_slices_and_null_endpoints(cluster: Cluster) -> None:
    kube = cluster.kube
    kube.apply(namespace("prod"))
    cluster.start()
    dns_server = cluster.dns

    kube.apply(endpoint_slice("api-a", "api", [("10.2.0.1", True, "")]))
    wait_until(lambda: cluster.informer("endpointslices").stats.events == 1, timeout=2)
    gone(dns_server, fqdn("api"))  # no Service yet: nothing to serve
    kube.apply(service("api", ip="None"))
    wait_answer(dns_server, fqdn("api"), ["10.2.0.1"])

    kube.apply(endpoint_slice("api-b", "api", [("10.2.0.2", True, ""), ("10.2.0.3", True, "")]))
    wait_answer(dns_server, fqdn("api"), ["10.2.0.1", "10.2.0.2", "10.2.0.3"])
    kube.apply(endpoint_slice("api-c", "api", None))  # endpoints: null
    kube.apply(service("empty", ip="10.0.0.8"))
    kube.apply(endpoint_slice("empty-a", "empty", None))
    wait_answer(dns_server, fqdn("empty"), ["10.0.0.8"])
    wait_until(lambda: cluster.informer("endpointslices").stats.events == 4, timeout=2)
    assert lookup(dns_server, fqdn("api")) == ("NOERROR", ["10.2.0.1", "10.2.0.2", "10.2.0.3"])
    assert cluster.dns.runtime.store.slices[("prod", "api-c")].endpoints == ()

    # Dropping one slice drops only its endpoints.
    kube.delete("EndpointSlice", "prod", "api-a")
    wait_answer(dns_server, fqdn("api"), ["10.2.0.2", "10.2.0.3"])
    # The Service vanishes before its slices, then comes back: the slices join it again.
    kube.delete("Service", "prod", "api")
    gone(dns_server, fqdn("api"))
    kube.apply(service("api", ip="None"))
    wait_answer(dns_server, fqdn("api"), ["10.2.0.2", "10.2.0.3"])
    assert cluster.informer("endpointslices").stats.skipped == 0


# ---------------------------------------------------------------------------------------------
# 4. A clean server-side close re-watches from the last resourceVersion, with no relist


def test_server_close_rewatches_from_last_resource_version_without_relist(
    cluster: Cluster,
) -> None:
    kube = cluster.kube
    kube.apply(namespace("prod"))
    list_rv = kube.resource_version
    cluster.start()
    kube.apply(service("web", ip="10.0.0.1"))
    change_rv = int(kube.resource_version)
    wait_answer(cluster.dns, fqdn("web"), ["10.0.0.1"])

    # timeoutSeconds=1: the fake ends each watch cleanly after a second. Wait for two more.
    wait_until(lambda: len(cluster.watches("services")) >= 3, timeout=3)
    watch_rvs = cluster.watches("services")
    assert watch_rvs[0] == list_rv
    assert [int(rv) for rv in watch_rvs] == sorted(int(rv) for rv in watch_rvs)
    assert int(watch_rvs[-1]) >= change_rv  # resumed after the change, not from the list
    answered = [r.status for r in kube.requests_for(verb="watch") if r.status is not None]
    assert set(answered) == {200}
    for resource in ("namespaces", "services", "endpointslices"):
        assert cluster.lists(resource) == 1, f"{resource} was relisted"
        assert cluster.informer(resource).stats.errors == 0
    kube.apply(service("web", ip="10.0.0.3"))
    wait_answer(cluster.dns, fqdn("web"), ["10.0.0.3"])


# ---------------------------------------------------------------------------------------------
# 5. Compaction and 410: exactly one relist; deletions during the gap disappear


@pytest.mark.parametrize("watch_gone", ["event", "status"])
def test_compaction_410_relists_once_and_drops_objects_deleted_in_the_gap(
    cluster: Cluster, watch_gone: str
) -> None:
    kube = cluster.fake(watch_gone=watch_gone)  # 410 as an ERROR event, or as the HTTP status
    kube.apply(namespace("prod"))
    kube.apply(namespace("old-ns"))
    kube.apply(service("keep", ip="10.0.0.1"))
    kube.apply(service("doomed", ip="10.0.0.2"))
    kube.apply(service("hl", ip="None"))
    kube.apply(endpoint_slice("hl-a", "hl", [("10.3.0.1", True, "")]))
    kube.apply(endpoint_slice("hl-b", "hl", [("10.3.0.2", True, "")]))
    kube.apply(service("x", ns="old-ns", ip="10.0.0.5"))
    cluster.start()
    dns_server = cluster.dns
    wait_answer(dns_server, fqdn("doomed"), ["10.0.0.2"])
    wait_answer(dns_server, fqdn("x", "old-ns"), ["10.0.0.5"])

    kube.stop()  # the gap: the watcher cannot see what happens now
    kube.delete("Service", "prod", "doomed")
    kube.delete("EndpointSlice", "prod", "hl-b")
    kube.delete("Namespace", None, "old-ns")
    kube.apply(service("born", ip="10.0.0.9"))
    kube.compact()  # those events are gone from the history: resuming is impossible
    kube.start()

    gone(dns_server, fqdn("doomed"))
    gone(dns_server, fqdn("x", "old-ns"))  # its Namespace went
    wait_answer(dns_server, fqdn("hl"), ["10.3.0.1"])
    wait_answer(dns_server, fqdn("born"), ["10.0.0.9"])
    assert lookup(dns_server, fqdn("keep")) == ("NOERROR", ["10.0.0.1"])
    # Each resource got its 410 and relisted exactly once, then watched from the new list.
    relist_rv = int(kube.resource_version)
    wait_until(
        lambda: all(
            int(cluster.watches(r)[-1]) >= relist_rv
            for r in ("namespaces", "services", "endpointslices")
        ),
        timeout=3,
    )
    for resource in ("namespaces", "services", "endpointslices"):
        assert cluster.lists(resource) == 2, resource
        assert cluster.informer(resource).stats.gone == 1, resource


# ---------------------------------------------------------------------------------------------
# 6. A stalled stream is cut by the read timeout, and the watcher recovers


def test_stalled_watch_is_cut_by_the_read_timeout_and_recovers(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="kdns.watch")
    kube = cluster.kube
    kube.apply(namespace("prod"))
    # The first services watch gets its headers, then nothing, forever (a half-dead peer).
    stall = kube.stall_next(1, verb="watch", resource="services")
    cluster.start()
    assert stall.triggered.wait(2)
    stalled_at = time.monotonic()
    kube.apply(service("web", ip="10.0.0.1"))
    wait_answer(cluster.dns, fqdn("web"), ["10.0.0.1"])
    recovered_in = time.monotonic() - stalled_at
    assert not stall.released.is_set()  # still stalled: only our read timeout ended it
    assert recovered_in < FAST.request_read_timeout_s + 1.0
    assert "services: watch failed (read timed out" in caplog.text
    assert cluster.lists("services") == 1  # resumed from the same resourceVersion
    assert len(set(cluster.watches("services")[:2])) == 1


# ---------------------------------------------------------------------------------------------
# 7. 500s and a refused connection: backoff, recovery, no lost updates


def test_500s_and_refused_connection_back_off_and_lose_nothing(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kdns.watch")
    kube = cluster.kube
    kube.apply(namespace("prod"))
    cluster.start()
    expected: dict[str, str] = {}

    def change(name: str, ip: str) -> None:
        kube.apply(service(name, ip=ip))
        expected[name] = ip

    failing = kube.fail_next(3, status=500, resource="services")
    for i in range(5):
        change(f"during-500-{i}", f"10.0.1.{i + 1}")
    wait_until(lambda: failing.hits == 3, timeout=3)

    kube.stop(graceful=False)  # a crash: open streams are cut, new connections refused
    for i in range(5):
        change(f"while-down-{i}", f"10.0.2.{i + 1}")
    change("during-500-0", "10.0.1.100")  # a modification made while down
    services = cluster.informer("services")
    errors_before = services.stats.errors
    wait_until(lambda: services.stats.errors >= errors_before + 2, timeout=3)
    assert "cannot connect" in (services.last_error or "")
    kube.start()

    for name, ip in expected.items():
        wait_answer(cluster.dns, fqdn(name), [ip])
    assert cluster.lists("services") == 1  # the history covered the gap: no relist needed
    assert "services: watch failed (HTTP 500 InternalError" in caplog.text
    assert "services: watch failed (cannot connect" in caplog.text
    assert "services: the API answers again" in caplog.text
    assert services.last_error is None


def test_429_retry_after_is_honoured(cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    """Retries are off in the client (retries=0), so the 429 reaches the informer's backoff."""
    caplog.set_level(logging.WARNING, logger="kdns.watch")
    kube = cluster.kube
    kube.apply(service("web"))
    kube.throttle_next(1, retry_after=7, verb="list", resource="services")
    sink = RecordingSink()
    waits: list[float] = []

    def record(seconds: float) -> bool:
        waits.append(seconds)
        return False  # not stopped; and no real sleep

    informer = Informer(
        cluster.api_client(),
        SERVICES,
        sink,
        settings=FAST,
        wait=record,
        rand=lambda: 0.0,
    )
    informer.run(max_cycles=2)  # the throttled list, then the retry
    assert waits == [7.0]
    assert informer.synced.is_set()
    assert [r.status for r in kube.requests_for(verb="list")] == [429, 200]
    assert "services: list failed (HTTP 429 TooManyRequests" in caplog.text
    store = Store(ZoneConfig())
    sink.apply(store)
    assert set(store.services) == {("prod", "web")}


# ---------------------------------------------------------------------------------------------
# 8. Paged lists (and an expired continue token restarting the list)


def test_paged_lists(cluster: Cluster) -> None:
    kube = cluster.kube
    kube.apply(namespace("prod"))
    for i in range(7):
        kube.apply(service(f"svc{i}", ip=f"10.0.3.{i + 1}"))
    cluster.start(replace(FAST, page_size=2))
    for i in range(7):
        assert lookup(cluster.dns, fqdn(f"svc{i}")) == ("NOERROR", [f"10.0.3.{i + 1}"])
    pages = kube.requests_for(verb="list", resource="services")
    assert [r.query.get("limit") for r in pages] == ["2"] * 4
    assert "continue" not in pages[0].query
    assert all(r.query.get("continue") for r in pages[1:])
    assert cluster.informer("services").stats.lists == 1


def test_expired_continue_token_restarts_the_list(cluster: Cluster) -> None:
    kube = cluster.fake(continue_ttl=0.2)
    kube.apply(namespace("prod"))
    for i in range(3):
        kube.apply(service(f"svc{i}", ip=f"10.0.4.{i + 1}"))
    # The first page is held back 0.4 s, so its continue token (valid 0.2 s) is stale on use.
    kube.stall_next(1, seconds=0.4, verb="list", resource="services")
    cluster.start(replace(FAST, page_size=2, request_read_timeout_s=2.0))
    pages = kube.requests_for(verb="list", resource="services")
    assert [(r.status, "continue" in r.query) for r in pages] == [
        (200, False),
        (410, True),  # expired: start over from the first page
        (200, False),
        (200, True),
    ]
    for i in range(3):
        assert lookup(cluster.dns, fqdn(f"svc{i}")) == ("NOERROR", [f"10.0.4.{i + 1}"])


# ---------------------------------------------------------------------------------------------
# 9. A bookmark-only stream moves the resourceVersion forward


def test_bookmarks_move_the_resource_version_forward(cluster: Cluster) -> None:
    kube = cluster.kube
    kube.apply(namespace("prod"))
    kube.apply(service("web"))
    list_rv = kube.resource_version
    cluster.start()
    services = cluster.informer("services")
    for i in range(3):  # other kinds move the global resourceVersion; services see nothing
        kube.apply(namespace(f"other{i}"))
    later_rv = kube.resource_version
    assert int(later_rv) > int(list_rv)
    wait_until(lambda: services.resource_version == later_rv, timeout=2)
    assert services.stats.events == 0
    assert services.stats.bookmarks >= 1

    # Compacting up to there would 410 a watcher still at the list RV; this one is past it.
    kube.compact()
    wait_until(lambda: later_rv in cluster.watches("services"), timeout=3)
    assert cluster.watches("services")[0] == list_rv
    assert services.stats.gone == 0
    assert cluster.lists("services") == 1


# ---------------------------------------------------------------------------------------------
# 10. In-cluster configuration over TLS with a token file


def test_in_cluster_config_over_tls_with_a_token_file(cluster: Cluster, tmp_path: Path) -> None:
    kube = cluster.fake(tls=True, tls_dir=tmp_path / "tls", token="s3cret-token")
    kube.apply(namespace("prod"))
    kube.apply(service("web", ip="10.0.0.1"))
    files = kube.write_incluster_files(tmp_path / "serviceaccount")
    environ = {**files.environ, "HOME": str(tmp_path / "nohome")}
    api_client = load_api_client(
        None, None, environ, token_file=str(files.token_file), cert_file=str(files.cert_file)
    )
    cluster.stack.callback(api_client.close)
    assert api_client.configuration.host == kube.url
    cluster.start(api_client=api_client)
    wait_answer(cluster.dns, fqdn("web"), ["10.0.0.1"])
    kube.apply(service("web", ip="10.0.0.2"))
    wait_answer(cluster.dns, fqdn("web"), ["10.0.0.2"])
    requests = kube.requests
    assert requests
    assert {r.headers.get("authorization") for r in requests} == {"bearer s3cret-token"}


def test_tls_and_rbac_failures_back_off_and_say_why(
    cluster: Cluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="kdns.watch")
    kube = cluster.fake(tls=True, tls_dir=tmp_path / "tls", token="s3cret-token")
    waits: list[float] = []

    def record(seconds: float) -> bool:
        waits.append(seconds)
        return False

    untrusted = Configuration(host=kube.url, retries=0)  # no CA: verification fails
    with ApiClient(untrusted) as client:
        informer = Informer(
            client, SERVICES, RecordingSink(), settings=FAST, wait=record, rand=lambda: 0.0
        )
        informer.run(max_cycles=2)
    assert waits == [FAST.backoff_initial_s, 2 * FAST.backoff_initial_s]  # no jitter here
    assert (informer.last_error or "").startswith("TLS error")
    assert not informer.synced.is_set()

    kube.fail_next(1, status=403, verb="list")
    informer = Informer(cluster.api_client(), SERVICES, RecordingSink(), settings=FAST, wait=record)
    informer.run(max_cycles=2)
    assert informer.synced.is_set()
    assert "services: list failed (HTTP 403 Forbidden" in caplog.text
    assert "RBAC: get, list and watch are needed" in caplog.text


# ---------------------------------------------------------------------------------------------
# 11. An API outage: answers stay correct, staleness grows and is logged, then catch-up


def test_api_outage_keeps_answers_then_catches_up(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kdns.watch")
    kube = cluster.kube
    kube.apply(namespace("prod"))
    kube.apply(service("web", ip="10.0.0.1"))
    kube.apply(service("old", ip="10.0.0.2"))
    source = cluster.start()
    assert max(source.staleness().values()) < FAST.stale_warning_s

    kube.stop()
    kube.apply(service("web", ip="10.0.0.9"))
    kube.apply(service("late", ip="10.0.0.3"))
    kube.delete("Service", "prod", "old")

    def stale_and_still_answering() -> bool:
        # Every poll is a real query: the last known state is served throughout.
        assert lookup(cluster.dns, fqdn("web")) == ("NOERROR", ["10.0.0.1"])
        assert lookup(cluster.dns, fqdn("old")) == ("NOERROR", ["10.0.0.2"])
        return min(source.staleness().values()) > FAST.stale_warning_s

    wait_until(stale_and_still_answering, timeout=3)
    wait_until(lambda: "services: no news from the API" in caplog.text, timeout=2)
    assert source.synced()

    kube.start()
    wait_answer(cluster.dns, fqdn("web"), ["10.0.0.9"])
    wait_answer(cluster.dns, fqdn("late"), ["10.0.0.3"])
    gone(cluster.dns, fqdn("old"))
    wait_until(lambda: max(source.staleness().values()) < FAST.stale_warning_s, timeout=2)
    wait_until(lambda: "services: caught up with the API" in caplog.text, timeout=2)
    assert cluster.lists("services") == 1


# ---------------------------------------------------------------------------------------------
# 12. Before sync: SERVFAIL instead of NXDOMAIN; synced() turns true after the last list


def test_servfail_before_sync_then_nxdomain(cluster: Cluster) -> None:
    kube = cluster.kube
    kube.apply(namespace("prod"))
    kube.apply(service("web", ip="10.0.0.1"))
    stall = kube.stall_next(1, verb="list", resource="namespaces")  # the namespaces list hangs
    source = cluster.start(replace(FAST, request_read_timeout_s=10.0), wait=False)
    wait_until(lambda: cluster.informer("services").synced.is_set(), timeout=2)
    wait_until(lambda: cluster.informer("endpointslices").synced.is_set(), timeout=2)
    cluster.dns.runtime.flush()

    assert not source.synced()
    assert not source.wait_synced(0.05)
    assert lookup(cluster.dns, fqdn("nope")) == ("SERVFAIL", [])
    assert lookup(cluster.dns, "nope.cluster.local.") == ("SERVFAIL", [])

    stall.release()
    assert source.wait_synced(3)
    assert source.synced()
    assert lookup(cluster.dns, fqdn("nope")) == ("NXDOMAIN", [])
    assert lookup(cluster.dns, fqdn("web")) == ("NOERROR", ["10.0.0.1"])


# ---------------------------------------------------------------------------------------------
# More: scoping, bad objects, shutdown, backoff arithmetic


def test_noendpoints_lists_and_watches_no_endpointslices(cluster: Cluster) -> None:
    kube = cluster.kube
    kube.apply(namespace("prod"))
    kube.apply(service("web"))
    kube.apply(endpoint_slice("web-1", "web", [("10.244.0.9", True, "")]))
    source = cluster.start(endpoints=False)
    assert [i.name for i in source.informers] == ["namespaces", "services"]
    assert lookup(cluster.dns, fqdn("web")) == ("NOERROR", ["10.0.0.1"])
    assert not [r for r in kube.requests if "endpointslices" in r.path]


def test_namespaces_option_watches_per_namespace_and_pods_only_when_asked(
    cluster: Cluster,
) -> None:
    kube = cluster.kube
    for ns in ("a", "b"):
        kube.apply(namespace(ns))
        kube.apply(service("web", ns=ns, ip="10.0.5.1" if ns == "a" else "10.0.5.2"))
    kube.apply(
        {
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": "a"},
            "spec": {"nodeName": "node-1"},
            "status": {"podIP": "10.244.0.5"},
        }
    )
    source = cluster.start(
        namespaces=frozenset({"a"}), pods=True, pod_field_selector="spec.nodeName=node-1"
    )
    assert [i.name for i in source.informers] == [
        "namespaces",
        "services/a",
        "endpointslices/a",
        "pods/a",
    ]
    assert lookup(cluster.dns, fqdn("web", "a")) == ("NOERROR", ["10.0.5.1"])
    assert lookup(cluster.dns, fqdn("web", "b"))[0] == "NXDOMAIN"  # never listed
    paths = {(r.verb, r.path) for r in kube.requests if r.verb == "list"}
    assert paths == {
        ("list", "/api/v1/namespaces"),
        ("list", "/api/v1/namespaces/a/services"),
        ("list", "/apis/discovery.k8s.io/v1/namespaces/a/endpointslices"),
        ("list", "/api/v1/namespaces/a/pods"),
    }
    [pods_list] = kube.requests_for(verb="list", resource="pods")
    assert pods_list.query["fieldSelector"] == "spec.nodeName=node-1"
    assert set(cluster.dns.runtime.store.pods) == {("a", "p")}
    # Replacing one namespace's list leaves the rest alone.
    kube.apply(service("web2", ns="a", ip="10.0.5.3"))
    wait_answer(cluster.dns, fqdn("web2", "a"), ["10.0.5.3"])


def test_objects_that_fail_conversion_are_logged_and_skipped(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="kdns.watch")
    kube = cluster.kube
    kube.apply(namespace("prod"))
    kube.apply(service("bad-at-list", ip="not-an-ip"))
    kube.apply(service("web", ip="10.0.0.1"))
    cluster.start()
    assert lookup(cluster.dns, fqdn("web")) == ("NOERROR", ["10.0.0.1"])
    assert "services: skipping prod/bad-at-list: spec.clusterIP" in caplog.text

    kube.apply(service("web", ip="999.1.1.1"))  # a modification we cannot serve
    kube.apply(service("after", ip="10.0.0.4"))  # the loop goes on
    wait_answer(cluster.dns, fqdn("after"), ["10.0.0.4"])
    # Serving the previous version would be stale, and a relist would leave it out too.
    gone(cluster.dns, fqdn("web"))
    services = cluster.informer("services")
    assert services.stats.skipped == 2
    assert services.stats.errors == 0


def test_stop_ends_every_thread_promptly(cluster: Cluster) -> None:
    kube = cluster.kube
    kube.apply(namespace("prod"))
    before = set(threading.enumerate())
    source = cluster.start(replace(FAST, watch_timeout_s=30, request_read_timeout_s=30.0))
    wait_until(lambda: kube.active_watches() == 3, timeout=2)
    started = time.monotonic()
    source.stop()
    assert time.monotonic() - started < 0.5  # open watches are cut, not waited out
    left = [t.name for t in set(threading.enumerate()) - before if t.name.startswith("watch")]
    assert left == []
    wait_until(lambda: kube.active_watches() == 0, timeout=2)


def test_backoff_doubles_with_jitter_and_caps() -> None:
    settings = WatchSettings(backoff_initial_s=1.0, backoff_max_s=8.0, backoff_jitter_ratio=0.5)
    top = Backoff(settings, rand=lambda: 0.0)
    assert [top.next() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    low = Backoff(settings, rand=lambda: 1.0)
    assert [low.next() for _ in range(3)] == [0.5, 1.0, 2.0]
    low.reset()
    assert low.next() == 0.5
    assert low.next(retry_after=5.0) == 5.0  # never sooner than the server asked
    assert low.next(retry_after=3600.0) == settings.retry_after_max_s
    with pytest.raises(ValueError, match="watch_timeout_s"):
        WatchSettings(watch_timeout_s=0)
    with pytest.raises(ValueError, match="backoff_jitter_ratio"):
        WatchSettings(backoff_jitter_ratio=1.5)


class RecordingSink:
    """A runtime stand-in: keeps submitted changes for a test to apply to its own Store."""

    def __init__(self) -> None:
        self.changes: list[Callable[[Store], None]] = []

    def submit(self, change: Callable[[Store], None]) -> int:
        self.changes.append(change)
        return len(self.changes)

    def flush(self, timeout: float = 10.0) -> bool:
        return True

    def apply(self, store: Store) -> None:
        for change in self.changes:
            change(store)
