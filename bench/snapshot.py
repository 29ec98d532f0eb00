"""Synthetic cluster snapshot and dnsperf query files for the benchmark (stdlib only).

The snapshot is one ``kind: List`` YAML document in the shape ``kubectl get -A -o yaml`` prints:
``NAMESPACES`` namespaces ``ns0..``, ``services`` ClusterIP Services ``svcN`` spread round-robin
over them (named port ``http`` 80, one ready endpoint each, one EndpointSlice each), plus
``services // 20`` headless Services ``hlN`` with three ready endpoints that have hostnames.
"""

from __future__ import annotations

import random
from pathlib import Path

NAMESPACES = 10
ZONE = "cluster.local"


def namespace_of(index: int, namespaces: int = NAMESPACES) -> str:
    return f"ns{index % namespaces}"


def cluster_ip(index: int) -> str:
    # 10.96.0.0/12 leaves plenty of room: 10.96.0.0 - 10.111.255.255.
    n = 1000 + index
    return f"10.{96 + n // 65536}.{n // 256 % 256}.{n % 256}"


def pod_ip(index: int) -> str:
    n = 256 + index
    return f"10.{244 + n // 65536}.{n // 256 % 256}.{n % 256}"


def _namespace(name: str) -> str:
    return f"""- apiVersion: v1
  kind: Namespace
  metadata:
    name: {name}
    labels:
      kubernetes.io/metadata.name: {name}
"""


def _service(name: str, namespace: str, ip: str, port_name: str, port: int) -> str:
    return f"""- apiVersion: v1
  kind: Service
  metadata:
    name: {name}
    namespace: {namespace}
  spec:
    type: ClusterIP
    clusterIP: {ip}
    clusterIPs:
    - {ip}
    ipFamilies:
    - IPv4
    ports:
    - name: {port_name}
      port: {port}
      protocol: TCP
      targetPort: {port}
"""


def _slice(
    service: str, namespace: str, endpoints: list[tuple[str, str | None]], port_name: str, port: int
) -> str:
    text = f"""- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  addressType: IPv4
  metadata:
    name: {service}-abcde
    namespace: {namespace}
    labels:
      kubernetes.io/service-name: {service}
      endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io
  ports:
  - name: {port_name}
    port: {port}
    protocol: TCP
  endpoints:
"""
    for address, hostname in endpoints:
        text += f"""  - addresses:
    - {address}
    conditions:
      ready: true
      serving: true
      terminating: false
"""
        if hostname:
            text += f"    hostname: {hostname}\n"
    return text


def write_snapshot(path: Path, services: int, namespaces: int = NAMESPACES) -> dict[str, int]:
    """Write the snapshot to ``path``; return counts of what it holds."""
    parts = ["apiVersion: v1\nkind: List\nmetadata: {}\nitems:\n"]
    for n in range(namespaces):
        parts.append(_namespace(f"ns{n}"))
    pod = 0
    for i in range(services):
        ns = namespace_of(i, namespaces)
        parts.append(_service(f"svc{i}", ns, cluster_ip(i), "http", 80))
        parts.append(_slice(f"svc{i}", ns, [(pod_ip(pod), None)], "http", 80))
        pod += 1
    headless = max(1, services // 20)
    for i in range(headless):
        ns = namespace_of(i, namespaces)
        name = f"hl{i}"
        parts.append(_service(name, ns, "None", "tcp", 5432))
        endpoints = []
        for k in range(3):
            endpoints.append((pod_ip(pod), f"{name}-{k}"))
            pod += 1
        parts.append(_slice(name, ns, endpoints, "tcp", 5432))
    path.write_text("".join(parts))
    return {"namespaces": namespaces, "services": services, "headless": headless, "pods": pod}


def positive_names(services: int, namespaces: int = NAMESPACES) -> list[str]:
    return [f"svc{i}.{namespace_of(i, namespaces)}.svc.{ZONE}" for i in range(services)]


def nxdomain_names(services: int, namespaces: int = NAMESPACES, seed: int = 1) -> list[str]:
    """In-zone names that do not exist, as a pod's ndots:5 search list produces them.

    A pod in namespace nsX looking up ``svcN.nsM`` or ``svcN.nsM.svc.cluster.local`` (fewer than
    5 dots) or an external name such as ``api.github.com`` first tries each search suffix
    ``nsX.svc.cluster.local``, ``svc.cluster.local``, ``cluster.local``.
    """
    rng = random.Random(seed)
    externals = ["api.github.com", "www.google.com", "registry-1.docker.io", "s3.amazonaws.com",
                 "pypi.org", "login.microsoftonline.com", "sts.amazonaws.com", "example.org"]  # fmt: skip
    names: list[str] = []
    for i in range(services):
        home = f"ns{rng.randrange(namespaces)}"
        target = f"svc{i}.{namespace_of(i, namespaces)}"
        kind = i % 5
        if kind == 0:
            names.append(f"{target}.{home}.svc.{ZONE}")
        elif kind == 1:
            names.append(f"{target}.svc.{ZONE}.{home}.svc.{ZONE}")
        elif kind == 2:
            names.append(f"{externals[i % len(externals)]}.{home}.svc.{ZONE}")
        elif kind == 3:
            names.append(f"{externals[i % len(externals)]}.svc.{ZONE}")
        else:
            names.append(f"{externals[i % len(externals)]}.{ZONE}")
    return names


def write_queries(path: Path, names: list[str], qtype: str = "A") -> None:
    path.write_text("".join(f"{name} {qtype}\n" for name in names))
