"""deploy/: every kustomization builds, every object passes the Kubernetes OpenAPI schema, the
container args parse with the real CLI parsers (config files included), the kdns ClusterRole
grants exactly what the watcher requests, and ports and probes agree across the workloads, the
Services and the CLI defaults. Each test is a table over every kustomization under deploy/.
"""

from __future__ import annotations

import argparse
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

import kdns.cli
import kdns.config
import nodecache.cli
import nodecache.config
from tests.deploy.manifests import (
    DEPLOY,
    Container,
    Obj,
    bound_rules,
    containers,
    expand_args,
    find,
    ident,
    kustomizations,
    one,
    render,
    selects,
)

DIRS = kustomizations()
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
"""The oldest Kubernetes the manifests support (the preStop ``sleep`` action is on by default
from 1.30) and the newest schema kubernetes-validate ships."""

LINK_LOCAL = "169.254.20.10"
"""nodecache's node-local address (NodeLocal DNSCache's usual one)."""

ALLOCATED_IP = "10.96.0.11"
"""Stands in for the ClusterIP the API server allocates to a Service that fixes none."""


def test_every_kustomization_is_found() -> None:
    # The tables below are only as good as this list; name the ones the docs promise.
    assert {ident(d) for d in DIRS} >= {
        "kdns",
        "nodecache",
        "overlays/pods-verified",
        "overlays/kdns-with-nodecache",
    }


# --------------------------------------------------------------------------------------------
# Builds and schema


@pytest.mark.parametrize("directory", DIRS, ids=ident)
def test_kustomize_builds(directory: Path) -> None:
    objects = render(directory)
    assert objects, f"{directory} renders nothing"
    for obj in objects:
        assert obj.get("apiVersion"), obj
        assert obj.get("kind"), obj
        namespaced = obj["kind"] not in ("ClusterRole", "ClusterRoleBinding", "Namespace")
        if namespaced:
            assert obj["metadata"].get("namespace") == "kube-system", obj["metadata"]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("directory", DIRS, ids=ident)
def test_objects_pass_the_openapi_schema(directory: Path, version: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    failures = []
    for obj in render(directory):
        try:
            # strict: a misspelt or misplaced field is an error, not silently dropped.
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            failures.append(f"{obj['kind']}/{obj['metadata']['name']}: {error.message}")
    assert not failures, "\n".join(failures)


def _referenced_files() -> set[Path]:
    referenced: set[Path] = set()
    for directory in DIRS:
        spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
        referenced.update((directory / r).resolve() for r in spec.get("resources", []))
        for generator in spec.get("configMapGenerator", []):
            for item in generator.get("files", []):
                referenced.add((directory / item.split("=")[-1]).resolve())
    return referenced


def test_every_manifest_file_is_in_a_kustomization() -> None:
    # A YAML file no kustomization names is never rendered, so never validated above.
    files = {
        path.resolve()
        for suffix in ("*.yaml", "*.yml")
        for path in DEPLOY.rglob(suffix)
        if path.name != "kustomization.yaml"
    }
    assert files, "no manifests under deploy/"
    orphans = sorted(str(path.relative_to(DEPLOY)) for path in files - _referenced_files())
    assert not orphans, f"not referenced by any kustomization: {orphans}"


# --------------------------------------------------------------------------------------------
# Container args through the real parsers


@dataclass(frozen=True)
class Program:
    """One of our entry points, parsed the way it parses itself."""

    parser: Callable[[], argparse.ArgumentParser]
    settings: Callable[[argparse.Namespace], Any] | None


PROGRAMS = {
    "kdns": Program(kdns.cli.make_parser, kdns.cli.load_settings),
    "nodecache": Program(nodecache.cli.make_parser, nodecache.cli.load_config),
}
WITH_SETTINGS = {("kdns", "serve"), ("nodecache", "serve"), ("nodecache", "check")}


@dataclass(frozen=True)
class Parsed:
    program: str
    args: argparse.Namespace
    config: Any  # kdns.config.Config or nodecache.config.Config, when the command has one


def parse(container: Container, objects: list[Obj], tmp_path: Path) -> Parsed:
    """The container's command and args through our CLI's own parser; its ``--config`` file
    is read from the ConfigMap mounted at that path, and loaded as the program loads it."""
    command = container.spec.get("command", [])
    assert command, f"{container.name}: no command (the image has no ENTRYPOINT)"
    program = Path(command[0]).name
    assert program in PROGRAMS, f"{container.name}: runs {program!r}, not kdns or nodecache"
    argv = [*command[1:], *expand_args(container, objects, {"kube-dns-upstream": ALLOCATED_IP})]
    args = PROGRAMS[program].parser().parse_args(argv)
    config = None
    settings = PROGRAMS[program].settings
    if settings is not None and (program, args.command) in WITH_SETTINGS:
        if getattr(args, "config", None):
            local = tmp_path / f"{container.spec['name']}-{Path(args.config).name}"
            local.write_text(container.mounted_file(objects, args.config))
            args.config = str(local)
        config = settings(args)
    return Parsed(program, args, config)


CASES = [
    pytest.param(directory, container.name, id=f"{ident(directory)}:{container.name}")
    for directory in DIRS
    for container in containers(render(directory))
]


@pytest.mark.parametrize(("directory", "name"), CASES)
def test_container_args_parse_with_the_real_cli(directory: Path, name: str, tmp_path: Path) -> None:
    objects = render(directory)
    container = next(c for c in containers(objects) if c.name == name)
    parsed = parse(container, objects, tmp_path)
    if (parsed.program, parsed.args.command) in WITH_SETTINGS:
        assert parsed.config is not None


def test_every_workload_runs_our_image_or_is_the_autoscaler() -> None:
    images = {
        c.image_name for d in DIRS for c in containers(render(d), ours=False)
    }  # a typo in an image name would silently drop a container from the tables above
    assert images == {"kdns", "cluster-proportional-autoscaler"}


def test_a_bad_flag_in_a_manifest_would_fail(tmp_path: Path) -> None:
    # The parse above must be able to fail: the same path with an unknown flag does.
    objects = render(DEPLOY / "kdns")
    container = next(c for c in containers(objects) if c.spec["name"] == "kdns")
    broken = Container(container.workload, {**container.spec, "args": ["serve", "--no-such-flag"]})
    with pytest.raises(kdns.cli.UsageError):
        parse(broken, objects, tmp_path)


# --------------------------------------------------------------------------------------------
# RBAC: exactly what the watcher asks for

VERBS_USED = {"list", "watch"}
"""The informer's two requests (kdns/watch/informer.py: a paged list, then watches)."""
VERBS_GRANTED_EXTRA = {"get"}
"""Granted though never issued: docs/rbac.md says why."""


def _watched(config: kdns.config.Config) -> set[tuple[str, str]]:
    """(API group, resource) of every informer ``kdns serve`` starts for this config: the
    WatchSource is built exactly as kdns.cli.serve builds it, and asked for its informers."""
    from kubernetes.client import ApiClient

    from kdns.watch import WatchSource

    class NoRuntime:
        def submit(self, change: Any) -> int:
            raise AssertionError("nothing is started")

        def flush(self, timeout: float = 0) -> bool:
            return True

    source = WatchSource(
        ApiClient(),
        NoRuntime(),
        namespaces=config.zone.namespaces,
        pods=config.zone.pods == "verified",
    )
    return {(i.resource.group, i.resource.plural) for i in source.informers}


@pytest.mark.parametrize("directory", DIRS, ids=ident)
def test_cluster_role_grants_exactly_what_the_watcher_uses(directory: Path, tmp_path: Path) -> None:
    objects = render(directory)
    servers = [
        (c, p)
        for c in containers(objects)
        if (p := parse(c, objects, tmp_path)).program == "kdns" and p.args.command == "serve"
    ]
    if not servers:
        pytest.skip(f"{ident(directory)} runs no kdns server")
    for container, parsed in servers:
        assert not parsed.config.manifests, "a deployed kdns watches the cluster"
        account = container.pod["serviceAccountName"]
        namespace = container.workload["metadata"]["namespace"]
        granted: dict[tuple[str, str], set[str]] = {}
        for rule in bound_rules(objects, account, namespace):
            assert not rule.get("nonResourceURLs"), rule
            assert not rule.get("resourceNames"), rule
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    granted.setdefault((group, resource), set()).update(rule["verbs"])
        assert set(granted) == _watched(parsed.config)
        for key, verbs in granted.items():
            assert verbs == VERBS_USED | VERBS_GRANTED_EXTRA, (key, verbs)


# --------------------------------------------------------------------------------------------
# Ports and probes agree


def _probe(container: Container, kind: str) -> tuple[str, int]:
    probe = container.spec.get(kind)
    assert probe, f"{container.name}: no {kind}"
    assert "httpGet" in probe, f"{container.name}: {kind} is not an HTTP GET"
    get = probe["httpGet"]
    return get["path"], container.port(get["port"])


@pytest.mark.parametrize(("directory", "name"), CASES)
def test_ports_and_probes_agree_with_the_cli(directory: Path, name: str, tmp_path: Path) -> None:
    objects = render(directory)
    container = next(c for c in containers(objects) if c.name == name)
    parsed = parse(container, objects, tmp_path)
    if parsed.args.command != "serve":
        pytest.skip(f"{name} does not serve DNS")
    config = parsed.config
    assert config.health_listen is not None, f"{name}: the probes need the health endpoint"
    health_port = config.health_listen[1]
    ports = container.container_ports()
    for _, port in config.listen:
        assert {(port, "UDP"), (port, "TCP")} <= ports, f"{name}: DNS port {port} not declared"
    assert (health_port, "TCP") in ports
    assert container.port("metrics") == health_port
    assert _probe(container, "livenessProbe") == ("/health", health_port)
    assert _probe(container, "readinessProbe") == ("/ready", health_port)
    if container.pod.get("hostNetwork"):
        # On the node's network 8080 collides (kops#9245): never the NodeLocal default there.
        assert health_port != 8080
    else:
        # In its own pod network kdns keeps its CLI defaults, which the docs describe.
        defaults = kdns.config.Config()
        assert (config.listen, config.health_listen) == (defaults.listen, defaults.health_listen)


def _service_cases() -> list[Any]:
    return [
        pytest.param(d, s["metadata"]["name"], id=f"{ident(d)}:{s['metadata']['name']}")
        for d in DIRS
        for s in find(render(d), "Service")
    ]


@pytest.mark.parametrize(("directory", "service_name"), _service_cases())
def test_service_ports_reach_a_serving_port(
    directory: Path, service_name: str, tmp_path: Path
) -> None:
    objects = render(directory)
    service = one(objects, "Service", service_name)
    backends = [
        c for c in containers(objects) if selects(service["spec"]["selector"], c.pod_labels)
    ]
    if not backends:
        # kube-dns-upstream in the nodecache base selects the cluster DNS pods installed by
        # another base (kdns, or CoreDNS); the combined overlay checks it (test below).
        pytest.skip(f"{service_name} selects no pods in {ident(directory)}")
    for container in backends:
        config = parse(container, objects, tmp_path).config
        serving = {port for _, port in config.listen} | {config.health_listen[1]}
        for port in service["spec"]["ports"]:
            protocol = port.get("protocol", "TCP")
            target = container.port(port.get("targetPort", port["port"]), protocol)
            assert (target, protocol) in container.container_ports(), (service_name, port)
            assert target in serving, f"{service_name}:{port['name']} -> {target}: not served"
            if port["name"] == "metrics":
                assert target == config.health_listen[1]


def test_every_service_selects_pods_in_some_kustomization() -> None:
    selected: dict[str, bool] = {}
    for directory in DIRS:
        objects = render(directory)
        for service in find(objects, "Service"):
            name = service["metadata"]["name"]
            hit = any(
                selects(service["spec"]["selector"], c.pod_labels) for c in containers(objects)
            )
            selected[name] = selected.get(name, False) or hit
    assert selected
    assert all(selected.values()), selected


def test_nodecache_fronts_the_kube_dns_service(tmp_path: Path) -> None:
    objects = render(DEPLOY / "overlays" / "kdns-with-nodecache")
    kube_dns = one(objects, "Service", "kube-dns")
    upstream = one(objects, "Service", "kube-dns-upstream")
    kdns_pods = [c for c in containers(objects) if c.workload["kind"] == "Deployment"]
    assert kdns_pods
    assert all(selects(upstream["spec"]["selector"], c.pod_labels) for c in kdns_pods)
    assert all(selects(kube_dns["spec"]["selector"], c.pod_labels) for c in kdns_pods)
    caches = [
        parse(c, objects, tmp_path)
        for c in containers(objects)
        if c.workload["kind"] == "DaemonSet" and c.spec["command"] == ["nodecache"]
    ]
    serving = [p for p in caches if p.args.command == "serve"]
    assert serving, "no nodecache serve container"
    for parsed in serving:
        listen = set(parsed.config.listen)
        # The ClusterIP pods already use (no kubelet change), and the link-local address.
        assert (kube_dns["spec"]["clusterIP"], 53) in listen
        assert (LINK_LOCAL, 53) in listen
        assert ipaddress.ip_address(LINK_LOCAL).is_link_local
        # Cluster names go to kdns through kube-dns-upstream, never to our own listeners.
        cluster = parsed.config.resolver.cluster_upstream
        assert cluster is not None
        assert {(ALLOCATED_IP, 53)} == set(cluster.servers)
        assert not set(cluster.servers) & listen


# --------------------------------------------------------------------------------------------
# Pod specs the issue and NodeLocal's operators expect


def _workload(objects: list[Obj], kind: str, name: str) -> Obj:
    return one(objects, kind, name)["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def test_kdns_deployment_is_hardened() -> None:
    objects = render(DEPLOY / "kdns")
    deployment = one(objects, "Deployment", "kdns")
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 2
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["affinity"]["podAntiAffinity"]
    assert pod["dnsPolicy"] == "Default"
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    context = container["securityContext"]
    assert context["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert {"cpu", "memory"} <= set(resources["limits"])
    pdb = one(objects, "PodDisruptionBudget", "kdns")
    assert selects(
        pdb["spec"]["selector"]["matchLabels"], deployment["spec"]["template"]["metadata"]["labels"]
    )


def test_the_autoscaler_targets_kdns_and_keeps_two() -> None:
    objects = render(DEPLOY / "kdns")
    pod = _workload(objects, "Deployment", "kdns-autoscaler")
    command = pod["containers"][0]["command"]
    flags = dict(arg.removeprefix("--").split("=", 1) for arg in command[1:])
    assert flags["target"] == "deployment/kdns"
    assert flags["namespace"] == "kube-system"
    params = yaml.safe_load(one(objects, "ConfigMap", flags["configmap"])["data"]["linear"])
    assert params["min"] == one(objects, "Deployment", "kdns")["spec"]["replicas"] == 2


def test_nodecache_daemonset_is_node_local() -> None:
    objects = render(DEPLOY / "nodecache")
    pod = _workload(objects, "DaemonSet", "nodecache")
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "Default"
    assert pod["priorityClassName"] == "system-node-critical"
    assert {"operator": "Exists"} in pod["tolerations"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for container in pod["containers"]:
        context = container["securityContext"]
        assert not context.get("privileged")
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        # NET_ADMIN is the one capability for the node plumbing; NET_BIND_SERVICE only lets
        # root keep port 53 once every default capability is dropped.
        assert set(context["capabilities"]["add"]) <= {"NET_ADMIN", "NET_BIND_SERVICE"}
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        if "NET_ADMIN" in context["capabilities"]["add"]:
            lock = volumes[mounts["/run/xtables.lock"]]["hostPath"]
            assert lock == {"path": "/run/xtables.lock", "type": "FileOrCreate"}
    assert any(
        "NET_ADMIN" in c["securityContext"]["capabilities"]["add"] for c in pod["containers"]
    )
    metrics = one(objects, "Service", "nodecache")
    assert metrics["spec"]["clusterIP"] == "None"
