"""Table-driven tests for kdns.source.manifests: loading snapshots from disk and watching them."""

from __future__ import annotations

import json
import logging
import os
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kdns.model import Endpoint, EndpointPort, ServicePort
from kdns.source.manifests import (
    ManifestError,
    Snapshot,
    SnapshotWatcher,
    expand_paths,
    load_snapshot,
)

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "examples" / "demo-cluster.yaml"


def y(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


NS_SHOP = y("""
    apiVersion: v1
    kind: Namespace
    metadata:
      name: shop
    """)

SVC_CART = y("""
    apiVersion: v1
    kind: Service
    metadata:
      name: cart
      namespace: shop
    spec:
      clusterIP: 10.96.10.11
      ports:
      - name: http
        port: 80
    """)

SLICE_CART = y("""
    apiVersion: discovery.k8s.io/v1
    kind: EndpointSlice
    metadata:
      name: cart-abc12
      namespace: shop
      labels:
        kubernetes.io/service-name: cart
    addressType: IPv4
    endpoints:
    - addresses: [10.244.1.11]
      conditions: {ready: true}
    ports:
    - {name: http, port: 8080, protocol: TCP}
    """)

POD_CART = y("""
    apiVersion: v1
    kind: Pod
    metadata:
      name: cart-1
      namespace: shop
    status:
      podIP: 10.244.1.11
    """)

CONFIGMAP = y("""
    apiVersion: v1
    kind: ConfigMap
    metadata:
      name: settings
      namespace: shop
    data:
      k: v
    """)


def multi(*docs: str) -> str:
    return "---\n" + "---\n".join(docs)


def kubectl_list(*docs: str) -> str:
    """Documents wrapped the way `kubectl get ... -o yaml` prints them."""
    items = "".join("- " + textwrap.indent(doc, "  ")[2:] for doc in docs)
    return f'apiVersion: v1\nitems:\n{items}kind: List\nmetadata:\n  resourceVersion: ""\n'


# The API server's typed list: items carry neither kind nor apiVersion.
SERVICE_LIST_JSON = json.dumps(
    {
        "kind": "ServiceList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": "1234"},
        "items": [
            {
                "metadata": {"name": "cart", "namespace": "shop"},
                "spec": {"clusterIP": "10.96.10.11"},
            },
            {"metadata": {"name": "db", "namespace": "data"}, "spec": {"clusterIP": "None"}},
        ],
    }
)


@dataclass(frozen=True)
class LoadCase:
    id: str
    files: dict[str, str]
    paths: tuple[str, ...]
    namespaces: int = 0
    services: int = 0
    slices: int = 0
    pods: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    loaded_files: tuple[str, ...] | None = None
    """Expected Snapshot.files relative to tmp_path; None means "same as paths"."""


LOAD_CASES = [
    LoadCase(
        "single-document",
        {"svc.yaml": SVC_CART},
        ("svc.yaml",),
        services=1,
    ),
    LoadCase(
        "multi-document-yaml",
        {"all.yaml": multi(NS_SHOP, SVC_CART, SLICE_CART, POD_CART)},
        ("all.yaml",),
        namespaces=1,
        services=1,
        slices=1,
        pods=1,
    ),
    LoadCase(
        "empty-documents-skipped",
        {"all.yml": "---\n---\n# only a comment\n---\n" + SVC_CART + "---\n...\n"},
        ("all.yml",),
        services=1,
    ),
    LoadCase("empty-file", {"empty.yaml": ""}, ("empty.yaml",)),
    LoadCase(
        "kubectl-list",
        {"dump.yaml": kubectl_list(NS_SHOP, SVC_CART, SLICE_CART, POD_CART, CONFIGMAP)},
        ("dump.yaml",),
        namespaces=1,
        services=1,
        slices=1,
        pods=1,
        skipped={"ConfigMap": 1},
    ),
    LoadCase(
        "list-with-null-items",
        {"dump.yaml": "apiVersion: v1\nkind: List\nitems:\n"},
        ("dump.yaml",),
    ),
    LoadCase(
        "typed-list-json-infers-item-kind",
        {"svc.json": SERVICE_LIST_JSON},
        ("svc.json",),
        services=2,
    ),
    LoadCase(
        "json-single-object",
        {
            "ns.json": json.dumps(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}
            )
        },
        ("ns.json",),
        namespaces=1,
    ),
    LoadCase(
        "directory-sorted-non-recursive-filtered",
        {
            "d/b-svc.yaml": SVC_CART,
            "d/a-ns.yml": NS_SHOP,
            "d/c-pod.json": json.dumps(
                {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}
            ),
            "d/README.md": "not a manifest",
            "d/.#b-svc.yaml": "editor: [lock",
            "d/sub/deep.yaml": SLICE_CART,
        },
        ("d",),
        namespaces=1,
        services=1,
        pods=1,
        loaded_files=("d/a-ns.yml", "d/b-svc.yaml", "d/c-pod.json"),
    ),
    LoadCase(
        "file-and-directory",
        {"ns.yaml": NS_SHOP, "d/svc.yaml": SVC_CART},
        ("ns.yaml", "d"),
        namespaces=1,
        services=1,
        loaded_files=("ns.yaml", "d/svc.yaml"),
    ),
    LoadCase(
        "same-file-twice-read-once",
        {"ns.yaml": NS_SHOP},
        ("ns.yaml", "ns.yaml"),
        namespaces=1,
        loaded_files=("ns.yaml",),
    ),
    LoadCase(
        "skipped-kinds-counted",
        {
            "x.yaml": multi(
                CONFIGMAP,
                CONFIGMAP.replace("settings", "other"),
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n",
                SLICE_CART.replace("discovery.k8s.io/v1", "discovery.k8s.io/v1beta1"),
                "apiVersion: v1\nkind: Endpoints\nmetadata: {name: cart}\n",
            )
        },
        ("x.yaml",),
        skipped={
            "ConfigMap": 2,
            "Deployment": 1,
            "EndpointSlice (discovery.k8s.io/v1beta1)": 1,
            "Endpoints": 1,
        },
    ),
    LoadCase("empty-directory", {"d/README": ""}, ("d",), loaded_files=()),
]


def write_files(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


@pytest.mark.parametrize("case", LOAD_CASES, ids=lambda c: c.id)
def test_load_snapshot(case: LoadCase, tmp_path: Path) -> None:
    write_files(tmp_path, case.files)
    snap = load_snapshot([tmp_path / p for p in case.paths])
    counts = (
        len(snap.state.namespaces),
        len(snap.state.services),
        len(snap.state.slices),
        len(snap.state.pods),
    )
    assert counts == (case.namespaces, case.services, case.slices, case.pods)
    assert dict(snap.skipped) == case.skipped
    expected_files = case.paths if case.loaded_files is None else case.loaded_files
    assert snap.files == tuple(tmp_path / p for p in expected_files)


def test_loaded_records_match_source(tmp_path: Path) -> None:
    write_files(tmp_path, {"all.yaml": kubectl_list(SVC_CART, SLICE_CART)})
    state = load_snapshot([tmp_path / "all.yaml"]).state
    assert state.services[("shop", "cart")].ports == (ServicePort("http", 80, "TCP"),)
    eps = state.slices[("shop", "cart-abc12")]
    assert eps.endpoints == (Endpoint(("10.244.1.11",), True),)
    assert eps.ports == (EndpointPort("http", 8080, "TCP"),)


def test_skipped_is_read_only(tmp_path: Path) -> None:
    write_files(tmp_path, {"cm.yaml": CONFIGMAP})
    snap = load_snapshot([tmp_path / "cm.yaml"])
    with pytest.raises(TypeError):
        snap.skipped["ConfigMap"] = 5  # type: ignore[index]


# --- errors -----------------------------------------------------------------------------------

BAD_PORT_SVC = SVC_CART.replace("port: 80", "port: eighty")


@dataclass(frozen=True)
class ErrorCase:
    id: str
    files: dict[str, str | bytes]
    paths: tuple[str, ...]
    message: str
    """The exact str() of the ManifestError, or a prefix of it when ``prefix`` is set."""
    prefix: bool = False


ERROR_CASES = [
    ErrorCase(
        "list-item-bad-field",
        {
            "demo.yaml": multi(
                NS_SHOP,
                kubectl_list(NS_SHOP, SVC_CART, SLICE_CART, BAD_PORT_SVC),
            )
        },
        ("demo.yaml",),
        "demo.yaml: document 2 (items[3], Service shop/cart): spec.ports[0].port: "
        "expected an integer 1-65535, got 'eighty'",
    ),
    ErrorCase(
        "plain-document-bad-field",
        {"svc.yaml": multi(NS_SHOP, NS_SHOP, BAD_PORT_SVC)},
        ("svc.yaml",),
        "svc.yaml: document 3 (Service shop/cart): spec.ports[0].port: "
        "expected an integer 1-65535, got 'eighty'",
    ),
    ErrorCase(
        "defaulted-namespace-in-identity",
        {"svc.yaml": BAD_PORT_SVC.replace("  namespace: shop\n", "")},
        ("svc.yaml",),
        "svc.yaml: document 1 (Service default/cart): spec.ports[0].port: ",
        prefix=True,
    ),
    ErrorCase(
        "cluster-scoped-identity",
        {"ns.yaml": NS_SHOP.replace("name: shop", "name: 7")},
        ("ns.yaml",),
        "ns.yaml: document 1 (Namespace): metadata.name: expected a non-empty string, got 7",
    ),
    ErrorCase(
        "json-typed-list-item",
        {"svc.json": SERVICE_LIST_JSON.replace('"None"', '"none"')},
        ("svc.json",),
        "svc.json: document 1 (items[1], Service data/db): spec.clusterIP: "
        "expected an IP address, got 'none'",
    ),
    ErrorCase(
        "object-without-kind",
        {"x.yaml": "apiVersion: v1\nmetadata: {name: a}\n"},
        ("x.yaml",),
        "x.yaml: document 1 (object a): kind: expected a non-empty string, got None",
    ),
    ErrorCase(
        "yaml-syntax-error-names-document",
        {"bad.yaml": NS_SHOP + "---\nkind: Service\nmetadata: {name: [unclosed\n"},
        ("bad.yaml",),
        "bad.yaml: document 2: invalid YAML: line ",
        prefix=True,
    ),
    ErrorCase(
        "yaml-bad-indentation",
        {"bad.yaml": "kind: Service\n  metadata: x\n"},
        ("bad.yaml",),
        "bad.yaml: document 1: invalid YAML: line 2, column ",
        prefix=True,
    ),
    ErrorCase(
        "invalid-json",
        {"bad.json": '{"kind": "Service",}'},
        ("bad.json",),
        "bad.json: document 1: invalid JSON: line 1, column ",
        prefix=True,
    ),
    ErrorCase(
        "document-is-a-list",
        {"list.yaml": NS_SHOP + "---\n- a\n- b\n"},
        ("list.yaml",),
        "list.yaml: document 2: expected a mapping, got a list",
    ),
    ErrorCase(
        "document-is-a-scalar",
        {"s.yaml": "just text\n"},
        ("s.yaml",),
        "s.yaml: document 1: expected a mapping, got 'just text'",
    ),
    ErrorCase(
        "list-items-not-a-list",
        {"l.yaml": "apiVersion: v1\nkind: List\nitems: {a: 1}\n"},
        ("l.yaml",),
        "l.yaml: document 1 (List): items: expected a list",
    ),
    ErrorCase(
        "list-item-not-a-mapping",
        {"l.yaml": "apiVersion: v1\nkind: List\nitems:\n- 42\n"},
        ("l.yaml",),
        "l.yaml: document 1 (items[0]): expected a mapping, got 42",
    ),
    ErrorCase(
        "missing-file",
        {},
        ("nope.yaml",),
        "nope.yaml: cannot read: No such file or directory",
    ),
    ErrorCase(
        "not-utf8",
        {"latin1.yaml": b"kind: Service\nmetadata: {name: caf\xe9}\n"},
        ("latin1.yaml",),
        "latin1.yaml: not UTF-8 text: ",
        prefix=True,
    ),
    ErrorCase(
        "error-in-directory-names-the-file",
        {"d/a.yaml": NS_SHOP, "d/b.yaml": BAD_PORT_SVC},
        ("d",),
        "d/b.yaml: document 1 (Service shop/cart): spec.ports[0].port: ",
        prefix=True,
    ),
]


@pytest.mark.parametrize("case", ERROR_CASES, ids=lambda c: c.id)
def test_load_snapshot_errors(
    case: ErrorCase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for rel, content in case.files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    # Relative paths keep the messages exact: they name the file as the user passed it.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ManifestError) as info:
        load_snapshot(list(case.paths))
    if case.prefix:
        assert str(info.value).startswith(case.message), str(info.value)
    else:
        assert str(info.value) == case.message


# --- duplicates -------------------------------------------------------------------------------


def test_duplicate_last_one_wins_with_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    newer = SVC_CART.replace("10.96.10.11", "10.96.10.99")
    write_files(tmp_path, {"a.yaml": SVC_CART, "b.yaml": multi(NS_SHOP, newer)})
    with caplog.at_level(logging.WARNING, logger="kdns.source.manifests"):
        snap = load_snapshot([tmp_path / "a.yaml", tmp_path / "b.yaml"])
    assert snap.state.services[("shop", "cart")].cluster_ips == ("10.96.10.99",)
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    message = record.getMessage()
    assert "duplicate Service shop/cart" in message
    assert "b.yaml: document 2 (Service shop/cart)" in message
    assert "a.yaml: document 1 (Service shop/cart)" in message


def test_same_name_different_kind_or_namespace_is_not_duplicate(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    other_ns = SVC_CART.replace("namespace: shop", "namespace: data")
    ns_named_cart = NS_SHOP.replace("name: shop", "name: cart")
    write_files(tmp_path, {"a.yaml": multi(SVC_CART, other_ns, ns_named_cart)})
    with caplog.at_level(logging.WARNING, logger="kdns.source.manifests"):
        snap = load_snapshot([tmp_path / "a.yaml"])
    assert set(snap.state.services) == {("shop", "cart"), ("data", "cart")}
    assert set(snap.state.namespaces) == {("", "cart")}
    assert not caplog.records


def test_expand_paths_missing_is_returned_as_is(tmp_path: Path) -> None:
    assert expand_paths([tmp_path / "missing.yaml"]) == (tmp_path / "missing.yaml",)


# --- the watcher ------------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.snapshots: list[Snapshot] = []

    def __call__(self, snapshot: Snapshot) -> None:
        self.snapshots.append(snapshot)


def rewrite(path: Path, text: str) -> None:
    """Write and move mtime forward by a second, so no test depends on timestamp resolution."""
    old = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text, encoding="utf-8")
    new = max(old + 1_000_000_000, path.stat().st_mtime_ns)
    os.utime(path, ns=(new, new))


def ip_of_cart(snapshot: Snapshot) -> tuple[str, ...]:
    return snapshot.state.services[("shop", "cart")].cluster_ips


@pytest.fixture
def watched(tmp_path: Path) -> tuple[Path, Recorder, SnapshotWatcher]:
    path = tmp_path / "cluster.yaml"
    path.write_text(multi(NS_SHOP, SVC_CART), encoding="utf-8")
    recorder = Recorder()
    return path, recorder, SnapshotWatcher([path], recorder, interval_s=0.5)


Watched = tuple[Path, Recorder, SnapshotWatcher]


def test_watcher_no_change_no_reload(watched: Watched) -> None:
    _, recorder, watcher = watched
    assert watcher.poll_once() is False
    assert watcher.poll_once() is False
    assert recorder.snapshots == []


def test_watcher_picks_up_edit(watched: Watched) -> None:
    path, recorder, watcher = watched
    rewrite(path, multi(NS_SHOP, SVC_CART.replace("10.96.10.11", "10.96.10.111")))
    assert watcher.poll_once() is True
    assert [ip_of_cart(s) for s in recorder.snapshots] == [("10.96.10.111",)]
    assert watcher.poll_once() is False
    assert len(recorder.snapshots) == 1


def test_watcher_bad_edit_keeps_last_good(
    watched: Watched, caplog: pytest.LogCaptureFixture
) -> None:
    path, recorder, watcher = watched
    rewrite(path, multi(NS_SHOP, BAD_PORT_SVC))
    with caplog.at_level(logging.WARNING, logger="kdns.source.manifests"):
        assert watcher.poll_once() is False
        # Unchanged bad file: not reloaded, not warned about again.
        assert watcher.poll_once() is False
    assert recorder.snapshots == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "keeping last good snapshot" in warnings[0]
    assert "spec.ports[0].port" in warnings[0]
    assert watcher.last_error is not None

    rewrite(path, multi(NS_SHOP, SVC_CART.replace("10.96.10.11", "10.96.10.12")))
    assert watcher.poll_once() is True
    assert [ip_of_cart(s) for s in recorder.snapshots] == [("10.96.10.12",)]
    assert watcher.last_error is None


def test_watcher_file_vanishing_is_a_failed_reload(
    watched: Watched, caplog: pytest.LogCaptureFixture
) -> None:
    path, recorder, watcher = watched
    path.unlink()
    with caplog.at_level(logging.WARNING, logger="kdns.source.manifests"):
        assert watcher.poll_once() is False
    assert recorder.snapshots == []
    assert "cannot read" in caplog.text
    assert "keeping last good snapshot" in caplog.text
    rewrite(path, multi(NS_SHOP, SVC_CART))
    assert watcher.poll_once() is True
    assert len(recorder.snapshots) == 1


def test_watcher_sees_atomic_rename_with_same_size_and_mtime(watched: Watched) -> None:
    path, recorder, watcher = watched
    before = path.stat()
    # Same length, different content, and the old mtime: only the inode gives it away.
    tmp = path.with_name(".cluster.yaml.tmp")
    tmp.write_text(multi(NS_SHOP, SVC_CART.replace("10.96.10.11", "10.96.10.12")), encoding="utf-8")
    assert tmp.stat().st_size == before.st_size
    os.utime(tmp, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(tmp, path)
    assert watcher.poll_once() is True
    assert ip_of_cart(recorder.snapshots[-1]) == ("10.96.10.12",)


def test_watcher_directory_add_and_remove(tmp_path: Path) -> None:
    d = tmp_path / "manifests"
    d.mkdir()
    (d / "ns.yaml").write_text(NS_SHOP, encoding="utf-8")
    recorder = Recorder()
    watcher = SnapshotWatcher([d], recorder)
    # Editor droppings are not manifests: no reload.
    (d / ".ns.yaml.swp").write_text("junk", encoding="utf-8")
    (d / "notes.txt").write_text("junk", encoding="utf-8")
    assert watcher.poll_once() is False

    (d / "svc.yaml").write_text(SVC_CART, encoding="utf-8")
    assert watcher.poll_once() is True
    assert len(recorder.snapshots[-1].state.services) == 1

    (d / "svc.yaml").unlink()
    assert watcher.poll_once() is True
    assert len(recorder.snapshots[-1].state.services) == 0
    assert recorder.snapshots[-1].files == (d / "ns.yaml",)


def test_watcher_stop_is_immediate_and_joins() -> None:
    # An hour-long interval: stop() must not wait for it, or this test would hang.
    watcher = SnapshotWatcher([], Recorder(), interval_s=3600)
    watcher.start()
    thread = watcher._thread
    assert thread is not None
    assert thread.daemon
    assert thread.is_alive()
    with pytest.raises(RuntimeError):
        watcher.start()
    watcher.stop()
    assert not thread.is_alive()
    watcher.stop()  # idempotent


def test_watcher_rejects_non_positive_interval() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        SnapshotWatcher([], Recorder(), interval_s=0)


# --- the shipped demo -------------------------------------------------------------------------


def test_demo_cluster_loads() -> None:
    snap = load_snapshot([DEMO])
    state = snap.state
    assert set(state.namespaces) == {("", n) for n in ("default", "kube-system", "shop", "data")}
    assert len(state.services) == 10
    assert len(state.slices) == 9
    assert len(state.pods) == 14
    assert dict(snap.skipped) == {"ConfigMap": 1}

    svc = state.services
    assert svc[("default", "kubernetes")].cluster_ips == ("10.96.0.1",)
    assert svc[("kube-system", "kube-dns")].ports == (
        ServicePort("dns", 53, "UDP"),
        ServicePort("dns-tcp", 53, "TCP"),
        ServicePort("metrics", 9153, "TCP"),
    )
    assert svc[("shop", "api")].cluster_ips == ("10.96.10.20", "fd00:10:96::20")
    assert svc[("shop", "checkout")].ports == (ServicePort("", 8080), ServicePort("http", 80))
    assert svc[("shop", "payments")].external_name == "payments.example.com"
    assert svc[("shop", "cart-alias")].external_name == "cart.shop.svc.cluster.local"
    assert svc[("data", "db")].headless
    assert svc[("data", "cache")].headless

    by_service: dict[tuple[str, str], list[Endpoint]] = {}
    for eps in state.slices.values():
        by_service.setdefault(eps.service_key, []).extend(eps.endpoints)
    assert set(by_service) <= set(svc), "every slice joins an existing service"
    db = {e.hostname: e.ready for e in by_service[("data", "db")]}
    assert db == {"db-0": True, "db-1": True, "db-2": False}
    assert [e.ready for e in by_service[("shop", "cart")]] == [True, False]
    assert all(e.hostname == "" and e.ready for e in by_service[("data", "cache")])
    api_families = {eps.address_type for eps in state.slices.values() if eps.service_name == "api"}
    assert api_families == {"IPv4", "IPv6"}

    # Every endpoint that names a pod agrees with that pod's IPs.
    for (namespace, _), endpoints in by_service.items():
        for endpoint in endpoints:
            if endpoint.target_pod:
                pod = state.pods[(namespace, endpoint.target_pod)]
                assert set(endpoint.addresses) <= set(pod.ips)
