"""deploy/: every kustomization builds, every object passes the Kubernetes OpenAPI schema, the
container args parse with the real CLI parsers (config files included), the kdns ClusterRole
grants exactly what the watcher requests, and ports and probes agree across the workloads, the
Services and the CLI defaults. Each test is a table over every kustomization under deploy/.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

import kdns.cli
import kdns.config
import nodecache.cli
import nodecache.config
from nodecache.node.settings import node_settings
from tests.deploy.manifests import (
    DEPLOY,
    MISSING_KUBECTL,
    NODE_NAME,
    Container,
    Obj,
    bound_rules,
    containers,
    expand_args,
    find,
    find_kubectl,
    ident,
    kustomizations,
    one,
    pod_environment,
    render,
    selects,
)

if find_kubectl() is None:
    # The tables below are built from `kubectl kustomize` output at collection time.
    pytest.skip(MISSING_KUBECTL, allow_module_level=True)

DIRS = kustomizations()
WORKLOAD_DIRS = [d for d in DIRS if any(True for _ in containers(render(d)))]
"""The kustomizations that run our programs (deploy/monitoring runs none)."""
CRD_GROUP = "monitoring.coreos.com/"
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
        "monitoring",
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
        if obj["apiVersion"].startswith(CRD_GROUP):
            continue  # not in the OpenAPI documents: test_monitoring.py checks these
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
    settings: Callable[[argparse.Namespace], Any]
    commands: frozenset[str]
    """The subcommands whose settings are loaded (and validated) at start."""


def _nodecache_settings(args: argparse.Namespace) -> Any:
    config = nodecache.cli.load_config(args)
    node_settings(args)  # the node-plumbing and guard flags, validated as main() does
    return config


PROGRAMS = {
    "kdns": Program(kdns.cli.make_parser, kdns.cli.load_settings, frozenset({"serve"})),
    "nodecache": Program(
        nodecache.cli.make_parser, _nodecache_settings, frozenset({"serve", "check", "guard"})
    ),
}


@dataclass(frozen=True)
class Parsed:
    program: str
    args: argparse.Namespace
    config: Any  # kdns.config.Config or nodecache.config.Config, when the command has one
    env: Mapping[str, str]


METRICS_LISTEN_DEFAULTS = {"kdns": ("0.0.0.0", 9153), "nodecache": ("0.0.0.0", 9253)}
"""``--metrics-listen``'s defaults (issue 13 item 4): CoreDNS's metrics port for kdns, NodeLocal
DNSCache's for nodecache. The manifests rely on them and never pass the flag."""


def metrics_listen(parsed: Parsed) -> tuple[str, int] | None:
    """Where the program serves ``/metrics`` besides its health port: the config's
    ``metrics_listen``; for a build that predates the setting, the default it will have."""
    if hasattr(parsed.config, "metrics_listen"):
        return parsed.config.metrics_listen  # type: ignore[no-any-return]
    return METRICS_LISTEN_DEFAULTS[parsed.program]


def metrics_port(parsed: Parsed) -> int:
    """The port a scraper is pointed at: metrics_listen's, else the health port's."""
    address = metrics_listen(parsed) or parsed.config.health_listen
    return int(address[1])


@contextmanager
def environment(env: Mapping[str, str]) -> Iterator[None]:
    """The process environment replaced by the pod's while settings load (nodecache reads
    NODE_NAME and KUBERNETES_SERVICE_HOST from it), nothing of the test host's leaking in."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("NODE_NAME", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
            patch.delenv(name, raising=False)
        for name, value in env.items():
            patch.setenv(name, value)
        yield


def parse(container: Container, objects: list[Obj], tmp_path: Path) -> Parsed:
    """The container's command and args through our CLI's own parser; its ``--config`` file
    is read from the ConfigMap mounted at that path, and loaded as the program loads it, in
    the environment the kubelet would give the container."""
    command = container.spec.get("command", [])
    assert command, f"{container.name}: no command (the image has no ENTRYPOINT)"
    program = Path(command[0]).name
    assert program in PROGRAMS, f"{container.name}: runs {program!r}, not kdns or nodecache"
    env = pod_environment(container, objects, {"kube-dns-upstream": ALLOCATED_IP})
    argv = [*command[1:], *expand_args(container, env)]
    args = PROGRAMS[program].parser().parse_args(argv)
    config = None
    if args.command in PROGRAMS[program].commands:
        if getattr(args, "config", None):
            local = tmp_path / f"{container.spec['name']}-{Path(args.config).name}"
            local.write_text(container.mounted_file(objects, args.config))
            args.config = str(local)
        with environment(env):
            config = PROGRAMS[program].settings(args)
    return Parsed(program, args, config, env)


CASES = [
    pytest.param(directory, container.name, id=f"{ident(directory)}:{container.name}")
    for directory in DIRS
    for container in containers(render(directory))
]
SERVERS = [
    pytest.param(directory, container.name, id=f"{ident(directory)}:{container.name}")
    for directory in DIRS
    for container in containers(render(directory))
    if container.spec["args"][0] == "serve"  # kdns serve, nodecache serve (not the guard)
]


@pytest.mark.parametrize(("directory", "name"), CASES)
def test_container_args_parse_with_the_real_cli(directory: Path, name: str, tmp_path: Path) -> None:
    objects = render(directory)
    container = next(c for c in containers(objects) if c.name == name)
    parsed = parse(container, objects, tmp_path)
    assert parsed.config is not None, f"{name}: {parsed.args.command} loads no settings"


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


class NoRuntime:
    """A sink for informers that are built, never started."""

    def submit(self, change: Any) -> int:
        raise AssertionError("nothing is started")

    def flush(self, timeout: float = 0) -> bool:
        return True


KUBECONFIG = """
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
"""


def watched(parsed: Parsed, tmp_path: Path) -> set[tuple[str, str]]:
    """(API group, resource) of every informer the parsed command starts, taken from the
    objects the program itself builds for that config (never started, never connected)."""
    from kubernetes.client import ApiClient

    if parsed.program == "kdns" and parsed.args.command == "serve":
        from kdns.watch import WatchSource

        assert not parsed.config.manifests, "a deployed kdns watches the cluster"
        # Built with the arguments kdns.cli.serve gives it.
        source = WatchSource(
            ApiClient(),
            NoRuntime(),
            namespaces=parsed.config.zone.namespaces,
            pods=parsed.config.zone.pods == "verified",
            endpoints=not parsed.config.zone.noendpoints,
        )
        return {(i.resource.group, i.resource.plural) for i in source.informers}
    if parsed.program == "nodecache" and parsed.args.command == "serve":
        if not parsed.config.searchpath.watch_pods:
            return set()
        from nodecache.searchpath.clients import PodDirectory
        from nodecache.searchpath.pods import PodWatch

        # The cluster is a placeholder kubeconfig: only the informer's resource is read.
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(KUBECONFIG)
        watch = PodWatch(
            PodDirectory(parsed.config.searchpath.node_name), kubeconfig=str(kubeconfig)
        )
        assert watch.informer.field_selector == f"spec.nodeName={NODE_NAME}"
        return {(watch.informer.resource.group, watch.informer.resource.plural)}
    return set()  # nodecache guard and check make no API request


@pytest.mark.parametrize("directory", WORKLOAD_DIRS, ids=ident)
def test_rbac_grants_exactly_what_the_programs_watch(directory: Path, tmp_path: Path) -> None:
    objects = render(directory)
    accounts: dict[tuple[str, str], set[tuple[str, str]]] = {}
    tokens: dict[tuple[str, str], bool] = {}
    for container in containers(objects):
        parsed = parse(container, objects, tmp_path)
        key = (container.workload["metadata"]["namespace"], container.pod["serviceAccountName"])
        accounts.setdefault(key, set()).update(watched(parsed, tmp_path))
        tokens[key] = container.pod.get("automountServiceAccountToken", True)
    assert accounts, f"{ident(directory)} runs none of our programs"
    for (namespace, account), used in accounts.items():
        granted: dict[tuple[str, str], set[str]] = {}
        for rule in bound_rules(objects, account, namespace):
            assert not rule.get("nonResourceURLs"), rule
            assert not rule.get("resourceNames"), rule
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    granted.setdefault((group, resource), set()).update(rule["verbs"])
        assert set(granted) == used, account
        for key, verbs in granted.items():
            assert verbs == VERBS_USED | VERBS_GRANTED_EXTRA, (account, key, verbs)
        # A program that asks the API needs its token mounted; one that does not, does not.
        assert tokens[(namespace, account)] is bool(used), account


# --------------------------------------------------------------------------------------------
# Ports and probes agree


def _probe(container: Container, kind: str) -> tuple[str, int]:
    probe = container.spec.get(kind)
    assert probe, f"{container.name}: no {kind}"
    assert "httpGet" in probe, f"{container.name}: {kind} is not an HTTP GET"
    get = probe["httpGet"]
    return get["path"], container.port(get["port"])


def _surges(workload: Obj) -> bool:
    rolling = workload["spec"].get("updateStrategy", {}).get("rollingUpdate", {})
    return workload["kind"] == "DaemonSet" and str(rolling.get("maxSurge", 0)) not in ("0", "0%")


@pytest.mark.parametrize(("directory", "name"), SERVERS)
def test_ports_and_probes_agree_with_the_cli(directory: Path, name: str, tmp_path: Path) -> None:
    objects = render(directory)
    container = next(c for c in containers(objects) if c.name == name)
    parsed = parse(container, objects, tmp_path)
    assert parsed.args.command == "serve"
    config = parsed.config
    assert config.health_listen is not None, f"{name}: the probes need the health endpoint"
    health_port = config.health_listen[1]
    assert _probe(container, "livenessProbe") == ("/health", health_port)
    assert _probe(container, "readinessProbe") == ("/ready", health_port)
    if _surges(container.workload) and container.pod.get("hostNetwork"):
        # A declared port on the node's network is a hostPort: the surge pod could never be
        # scheduled beside the old one (kubernetes#106417).
        assert not container.spec.get("ports"), f"{name}: surge with hostNetwork ports"
    else:
        ports = container.container_ports()
        for _, port in config.listen:
            assert {(port, "UDP"), (port, "TCP")} <= ports, f"{name}: DNS port {port} not declared"
        assert (health_port, "TCP") in ports
        assert (metrics_port(parsed), "TCP") in ports
        assert container.port("metrics") == metrics_port(parsed)
    if container.pod.get("hostNetwork"):
        # On the node's network 8080 collides (kops#9245): never the NodeLocal default there.
        assert health_port != 8080
    else:
        # In its own pod network kdns keeps its CLI defaults, which the docs describe.
        defaults = kdns.config.Config()
        assert (config.listen, config.health_listen) == (defaults.listen, defaults.health_listen)
        assert metrics_listen(parsed) == getattr(
            defaults, "metrics_listen", METRICS_LISTEN_DEFAULTS["kdns"]
        )


def test_the_guard_gets_the_cache_s_arguments() -> None:
    # It removes what the cache installs by deriving the rules from the same flags.
    for directory in DIRS:
        for daemonset in find(render(directory), "DaemonSet"):
            by_command: dict[str, Obj] = {}
            for spec in daemonset["spec"]["template"]["spec"]["containers"]:
                if spec.get("command") == ["nodecache"]:
                    by_command[spec["args"][0]] = spec
            if "serve" not in by_command:
                continue
            guard, serve = by_command.get("guard"), by_command["serve"]
            assert guard is not None, f"{ident(directory)}: no guard beside the cache"
            assert guard["args"][1:] == serve["args"][1:]
            assert guard["env"] == serve["env"]
            assert guard["volumeMounts"] == serve["volumeMounts"]


def _serving(objects: list[Obj], service: Obj) -> list[Container]:
    return [
        c
        for c in containers(objects)
        if selects(service["spec"]["selector"], c.pod_labels) and c.spec["args"][0] == "serve"
    ]


def _service_cases() -> list[Any]:
    # A Service is checked where its pods are rendered too: kube-dns-upstream in the nodecache
    # base selects the cluster DNS pods of another base (kdns, or CoreDNS).
    return [
        pytest.param(d, s["metadata"]["name"], id=f"{ident(d)}:{s['metadata']['name']}")
        for d in DIRS
        for s in find(render(d), "Service")
        if _serving(render(d), s)
    ]


@pytest.mark.parametrize(("directory", "service_name"), _service_cases())
def test_service_ports_reach_a_serving_port(
    directory: Path, service_name: str, tmp_path: Path
) -> None:
    objects = render(directory)
    service = one(objects, "Service", service_name)
    backends = _serving(objects, service)
    assert backends
    for container in backends:
        parsed = parse(container, objects, tmp_path)
        config = parsed.config
        serving = {port for _, port in config.listen} | {config.health_listen[1]}
        serving.add(metrics_port(parsed))
        for port in service["spec"]["ports"]:
            protocol = port.get("protocol", "TCP")
            target = container.port(port.get("targetPort", port["port"]), protocol)
            if container.spec.get("ports"):
                assert (target, protocol) in container.container_ports(), (service_name, port)
            assert target in serving, f"{service_name}:{port['name']} -> {target}: not served"
            if port["name"] == "metrics":
                assert target == metrics_port(parsed)
        # Annotation-driven scrapers (role: endpoints) dial the pod IP at this port, not the
        # Service port: it must be the port the pods serve /metrics on.
        annotated = service["metadata"].get("annotations", {}).get("prometheus.io/port")
        if annotated is not None:
            assert int(annotated) == metrics_port(parsed), f"{service_name}: prometheus.io/port"


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
    (kdns_config,) = [parse(c, objects, tmp_path).config for c in kdns_pods]
    kdns_zones = {".".join(zone) for zone in kdns_config.zone.zones}
    for parsed in serving:
        # nodecache sends kdns exactly the zones kdns serves.
        assert {z.rstrip(".") for z in parsed.config.resolver.cluster_zones} == kdns_zones
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
    # The autoscaler owns the count (its min is 2); a spec.replicas here would be re-applied
    # on every upgrade and fight it (server-side apply conflict, or a scale back to 2).
    assert "replicas" not in deployment["spec"]
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
    assert params["min"] == 2
    assert json.loads(flags["default-params"])["linear"]["min"] == 2


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
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"]["drop"] == ["ALL"]
        added = set(context["capabilities"]["add"])
        # NET_ADMIN is the one capability for the node plumbing; NET_BIND_SERVICE only lets
        # the serving root process keep port 53 once every default capability is dropped.
        expected = (
            {"NET_ADMIN", "NET_BIND_SERVICE"} if container["args"][0] == "serve" else {"NET_ADMIN"}
        )
        assert added == expected, container["name"]
        # Both change iptables rules: both take the node's xtables lock.
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        lock = volumes[mounts["/run/xtables.lock"]]["hostPath"]
        assert lock == {"path": "/run/xtables.lock", "type": "FileOrCreate"}
    assert {c["args"][0] for c in pod["containers"]} == {"serve", "guard"}
    metrics = one(objects, "Service", "nodecache")
    assert metrics["spec"]["clusterIP"] == "None"


# --------------------------------------------------------------------------------------------
# The guard's liveness


GUARDS = [
    pytest.param(directory, container.name, id=f"{ident(directory)}:{container.name}")
    for directory in DIRS
    for container in containers(render(directory))
    if container.spec["args"][0] == "guard"
]


@pytest.mark.parametrize(("directory", "name"), GUARDS)
def test_the_guard_liveness_probe_matches_its_flags(
    directory: Path, name: str, tmp_path: Path
) -> None:
    objects = render(directory)
    container = next(c for c in containers(objects) if c.name == name)
    node = node_settings(parse(container, objects, tmp_path).args)
    assert node.guard_listen is not None, f"{name}: no --guard-listen, nothing to probe"
    assert _probe(container, "livenessProbe") == ("/health", node.guard_listen[1])
    probe = container.spec["livenessProbe"]
    # The kubelet must wait out a probe before the next one, and restart a hung guard within
    # a few minutes of its loop stopping (--guard-stall, then failureThreshold periods).
    assert probe["timeoutSeconds"] < probe["periodSeconds"]
    assert node.guard_stall_s + probe["periodSeconds"] * probe["failureThreshold"] <= 180


def _bound_ports(parsed: Parsed, node_args: argparse.Namespace) -> set[int]:
    """The TCP ports one container binds besides DNS: the health port and a separate metrics
    listener (serve), or the guard's endpoint (guard)."""
    if parsed.args.command == "guard":
        listen = node_settings(node_args).guard_listen
        return {listen[1]} if listen is not None else set()
    ports = {parsed.config.health_listen[1]} if parsed.config.health_listen else set()
    metrics = metrics_listen(parsed)
    # The same address as the health port is taken to be served by the health listener
    # (/metrics is on the health port too), not bound a second time.
    if metrics is not None and metrics != parsed.config.health_listen:
        ports.add(metrics[1])
    return ports


@pytest.mark.parametrize("directory", WORKLOAD_DIRS, ids=ident)
def test_no_two_listeners_share_a_node_port(directory: Path, tmp_path: Path) -> None:
    # With hostNetwork every port is the node's: the cache's and the guard's must differ.
    objects = render(directory)
    for daemonset in find(objects, "DaemonSet"):
        if not daemonset["spec"]["template"]["spec"].get("hostNetwork"):
            continue
        owners: dict[int, str] = {}
        for container in containers([daemonset]):
            parsed = parse(container, objects, tmp_path)
            for port in _bound_ports(parsed, parsed.args):
                assert port not in owners, f"{port}: {owners.get(port)} and {container.name}"
                owners[port] = container.name


# --------------------------------------------------------------------------------------------
# Monitoring scrapes what the pods serve

KUBE_PROMETHEUS_COREDNS = {
    "jobLabel": "app.kubernetes.io/name",
    "namespaceSelector": {"matchNames": ["kube-system"]},
    "selector": {"matchLabels": {"k8s-app": "kube-dns"}},
    "endpoints": [{"port": "metrics"}],
}
"""kube-prometheus's CoreDNS ServiceMonitor (manifests/kubernetesControlPlane-serviceMonitorCoreDNS.yaml)."""

BOTH = DEPLOY / "overlays" / "kdns-with-nodecache"
"""kdns and nodecache together: what deploy/monitoring scrapes."""


def _ours(kind: str) -> Obj:
    (obj,) = find(render(DEPLOY / "monitoring"), kind)
    return obj


def _scraped_services(spec: Obj, objects: list[Obj]) -> list[tuple[Obj, Obj]]:
    """(Service, its port) pairs a ServiceMonitor spec scrapes."""
    namespaces = spec["namespaceSelector"]["matchNames"]
    found = []
    for service in find(objects, "Service"):
        if service["metadata"]["namespace"] not in namespaces:
            continue
        if not selects(spec["selector"]["matchLabels"], service["metadata"].get("labels", {})):
            continue
        for endpoint in spec["endpoints"]:
            for port in service["spec"]["ports"]:
                if port["name"] == endpoint["port"]:
                    found.append((service, port))
    return found


@pytest.mark.parametrize(
    "monitor",
    [
        pytest.param("ours", id="deploy-monitoring"),
        pytest.param("kube-prometheus", id="kube-prometheus"),
    ],
)
def test_a_service_monitor_scrapes_kdns_as_job_kube_dns(monitor: str, tmp_path: Path) -> None:
    spec = _ours("ServiceMonitor")["spec"] if monitor == "ours" else KUBE_PROMETHEUS_COREDNS
    objects = render(BOTH)
    scraped = _scraped_services(spec, objects)
    assert [service["metadata"]["name"] for service, _ in scraped] == ["kube-dns"]
    ((service, port),) = scraped
    # The operator's job: the Service's jobLabel label when it has one, else its name.
    labels = service["metadata"].get("labels", {})
    assert labels.get(spec.get("jobLabel", ""), service["metadata"]["name"]) == "kube-dns"
    for container in _serving(objects, service):
        parsed = parse(container, objects, tmp_path)
        assert container.port(port["targetPort"]) == metrics_port(parsed)


def test_kube_prometheus_stack_finds_kdns_metrics_on_9153(tmp_path: Path) -> None:
    # Its own headless Service selects k8s-app=kube-dns pods at coreDns.service.targetPort,
    # 9153 by default: kdns's pods must serve /metrics there.
    objects = render(DEPLOY / "kdns")
    kdns = [c for c in containers(objects) if c.pod_labels.get("k8s-app") == "kube-dns"]
    assert kdns
    for container in kdns:
        assert metrics_port(parse(container, objects, tmp_path)) == 9153


def test_the_pod_monitor_scrapes_the_cache_and_the_guard(tmp_path: Path) -> None:
    monitor = _ours("PodMonitor")["spec"]
    objects = render(BOTH)
    pods = [
        c
        for c in containers(objects)
        if selects(monitor["selector"]["matchLabels"], c.pod_labels)
        and c.workload["metadata"]["namespace"] in monitor["namespaceSelector"]["matchNames"]
    ]
    expected: dict[str, int] = {}
    for container in pods:
        parsed = parse(container, objects, tmp_path)
        if parsed.args.command == "guard":
            listen = node_settings(parsed.args).guard_listen
            assert listen is not None
            expected[container.spec["name"]] = listen[1]
        else:
            expected[container.spec["name"]] = metrics_port(parsed)
    scraped: dict[str, int] = {}
    for endpoint in monitor["podMetricsEndpoints"]:
        assert endpoint["path"] == "/metrics"
        relabels = endpoint["relabelings"]
        keep = [r for r in relabels if r.get("action") == "keep"]
        assert [r["sourceLabels"] for r in keep] == [["__meta_kubernetes_pod_container_name"]]
        addresses = [r for r in relabels if r.get("targetLabel") == "__address__"]
        ports = {int(r["replacement"].rsplit(":", 1)[1]) for r in addresses}
        assert len(addresses) == 2, "an address for IPv4 and one for IPv6 pod IPs"
        assert len(ports) == 1, "the same port in both"
        scraped[keep[0]["regex"]] = ports.pop()
    assert scraped == expected
    # The job is the pods' jobLabel label, the job the alerts select.
    assert {c.pod_labels[monitor["jobLabel"]] for c in pods} == {"nodecache"}
