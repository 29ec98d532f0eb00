"""The live source at scale: initial sync time, resident memory and change-to-answer latency.

Issue 3's targets, on a fake cluster of 10,000 ClusterIP Services and 100,000 endpoints (one
EndpointSlice of 10 ready endpoints per Service, spread over 100 namespaces):

* initial sync <= 10 s: from starting the server process to every list in a published table;
* resident memory <= 80 MB: VmRSS of that process after sync and a full ``gc.collect()``;
* a Service change visible in answers within 100 ms at p99: ``apply()`` a new ClusterIP on the
  fake API server, then poll the name over UDP until the answer changes (each change bounded
  by a deadline), ~200 times.

The fake API server (``tests/fakeapi``) runs in this process; the kdns server
(``bench/scale_server.py``, wired as ``kdns serve`` wires the live source) runs in a child
process so its memory is its own. For context the script also measures the RSS of a bare
interpreter, of ``import kubernetes`` alone, and of the kdns imports without ``kubernetes``.

Usage: python bench/scale.py [--services 10000] [--endpoints-per-slice 10] [--namespaces 100]
                             [--changes 200] [--out docs/benchmarks.md]
Writes a JSON record under bench/out/ and, with --out, replaces (or appends) the
"Live source at scale" section of that Markdown file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import re
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from tests.fakeapi import FakeKube  # noqa: E402

SECTION_START = "<!-- bench/scale.py: live-source start -->"
SECTION_END = "<!-- bench/scale.py: live-source end -->"
TARGET_SYNC_S = 10.0
TARGET_RSS_MB = 80.0
TARGET_P99_MS = 100.0


# ---------------------------------------------------------------------------------------------
# The fake cluster


def cluster_ip(index: int) -> str:
    n = 1000 + index
    return f"10.{96 + n // 65536}.{n // 256 % 256}.{n % 256}"


def changed_ip(index: int) -> str:
    return f"10.{112 + index // 65536}.{index // 256 % 256}.{index % 256}"


def pod_ip(index: int) -> str:
    n = 256 + index
    return f"10.{128 + n // 65536}.{n // 256 % 256}.{n % 256}"


def service_obj(name: str, ns: str, ip: str) -> dict[str, Any]:
    """Shaped like what the API server returns for a plain ClusterIP Service."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {"app": name, "app.kubernetes.io/part-of": "bench"},
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": ip,
            "clusterIPs": [ip],
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "internalTrafficPolicy": "Cluster",
            "sessionAffinity": "None",
            "selector": {"app": name},
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
        },
        "status": {"loadBalancer": {}},
    }


def slice_obj(name: str, ns: str, first_ip: int, count: int) -> dict[str, Any]:
    endpoints = []
    for k in range(count):
        pod = f"{name}-{k:05d}"
        endpoints.append(
            {
                "addresses": [pod_ip(first_ip + k)],
                "conditions": {"ready": True, "serving": True, "terminating": False},
                "nodeName": f"node-{(first_ip + k) % 50}",
                "targetRef": {"kind": "Pod", "name": pod, "namespace": ns, "uid": f"uid-{pod}"},
            }
        )
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{name}-abcde",
            "namespace": ns,
            "labels": {
                "kubernetes.io/service-name": name,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }


def populate(
    kube: FakeKube, services: int, per_slice: int, namespaces: int
) -> list[tuple[str, str]]:
    names: list[tuple[str, str]] = []
    for n in range(namespaces):
        kube.apply({"kind": "Namespace", "metadata": {"name": f"ns{n}"}})
    for i in range(services):
        ns, name = f"ns{i % namespaces}", f"svc{i}"
        kube.apply(service_obj(name, ns, cluster_ip(i)))
        kube.apply(slice_obj(name, ns, i * per_slice, per_slice))
        names.append((ns, name))
    kube.compact()  # the history is not needed, and it would double the fake's memory
    return names


# ---------------------------------------------------------------------------------------------
# DNS over UDP (stdlib: no dnspython needed in the child or here)


def a_query(qname: str, qid: int) -> bytes:
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    labels = b"".join(bytes([len(p)]) + p.encode() for p in qname.rstrip(".").split("."))
    return header + labels + b"\x00" + struct.pack("!HH", 1, 1)


def a_answers(reply: bytes) -> tuple[int, list[str]]:
    """(rcode, A addresses in the answer section) of a reply to ``a_query``."""
    _, flags, qd, an, _, _ = struct.unpack("!HHHHHH", reply[:12])
    pos = 12
    for _ in range(qd):
        pos = _skip_name(reply, pos) + 4
    out: list[str] = []
    for _ in range(an):
        pos = _skip_name(reply, pos)
        rtype, _, _, rdlen = struct.unpack("!HHIH", reply[pos : pos + 10])
        pos += 10
        if rtype == 1 and rdlen == 4:
            out.append(socket.inet_ntoa(reply[pos : pos + 4]))
        pos += rdlen
    return flags & 0xF, out


def _skip_name(data: bytes, pos: int) -> int:
    while True:
        length = data[pos]
        if length == 0:
            return pos + 1
        if length & 0xC0 == 0xC0:
            return pos + 2
        pos += 1 + length


class Resolver:
    def __init__(self, port: int) -> None:
        self.addr = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(0.5)
        self.qid = 0

    def a(self, qname: str) -> tuple[int, list[str]]:
        self.qid = (self.qid + 1) & 0xFFFF
        self.sock.sendto(a_query(qname, self.qid), self.addr)
        while True:
            reply = self.sock.recv(4096)
            if struct.unpack("!H", reply[:2])[0] == self.qid:
                return a_answers(reply)


# ---------------------------------------------------------------------------------------------
# Measurements


def rss_of_snippet(code: str) -> float:
    """VmRSS (MB) of a fresh interpreter after running ``code``."""
    probe = (
        f"{code}\nimport gc, re; gc.collect()\n"
        "print(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read()).group(1))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO
    )
    return int(out.stdout.strip()) / 1024


def proc_status_kb(pid: int, field: str) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", status, re.M)
    return int(match.group(1)) if match else -1


def read_event(proc: subprocess.Popen[str], name: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"server exited (code {proc.poll()}) before {name!r}")
        event = json.loads(line)
        if event.get("event") == name:
            return event  # type: ignore[no-any-return]
    raise TimeoutError(f"no {name!r} from the server within {timeout} s")


class Child:
    """``bench/scale_server.py`` in a subprocess: launched, synced, measured, then stopped."""

    def __init__(self, kubeconfig: Path, *, store_only: bool) -> None:
        self.command = [
            sys.executable,
            str(HERE / "scale_server.py"),
            "--kubeconfig",
            str(kubeconfig),
        ]
        if store_only:
            self.command.append("--store-only")

    def __enter__(self) -> Child:
        launched = time.monotonic()
        self.proc = subprocess.Popen(
            self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO
        )
        try:
            self.imported = read_event(self.proc, "imported", 60)
            self.port = int(read_event(self.proc, "listening", 60)["port"])
            self.synced = read_event(self.proc, "synced", 300)
            self.sync_s = time.monotonic() - launched
            if not self.synced["ok"]:
                raise RuntimeError("the server did not sync")
            self.rss_kb = proc_status_kb(self.proc.pid, "VmRSS")
            self.hwm_kb = proc_status_kb(self.proc.pid, "VmHWM")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stopping: dict[str, Any] = {}
        try:
            rest, _ = self.proc.communicate(timeout=10)  # closes stdin: the child stops
            for line in rest.splitlines():
                event = json.loads(line)
                if event.get("event") == "stopping":
                    self.stopping = event
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def measure_latency(
    kube: FakeKube, names: list[tuple[str, str]], port: int, changes: int, rng: random.Random
) -> tuple[list[float], int]:
    resolver = Resolver(port)
    latencies: list[float] = []
    timeouts = 0
    picks = rng.sample(range(len(names)), changes)
    for n, index in enumerate(picks):
        ns, name = names[index]
        qname = f"{name}.{ns}.svc.cluster.local"
        new_ip = changed_ip(n + 1)
        started = time.perf_counter()
        kube.apply(service_obj(name, ns, new_ip))
        deadline = started + 2.0
        while True:
            _rcode, addresses = resolver.a(qname)
            now = time.perf_counter()
            if addresses == [new_ip]:
                latencies.append((now - started) * 1000)
                break
            if now > deadline:
                timeouts += 1
                break
            time.sleep(0.0005)  # yield the GIL to the fake API server's threads in this process
        time.sleep(0.01)  # changes arrive one at a time, not as one burst
    return latencies, timeouts


# ---------------------------------------------------------------------------------------------
# Report


def render(result: dict[str, Any]) -> str:
    r = result
    ok = lambda good: "yes" if good else "**no**"  # noqa: E731
    lines = [
        SECTION_START,
        "## Live source at scale (bench/scale.py)",
        "",
        f"Command: `{r['command']}`",
        "",
        "| fact | value |",
        "|---|---|",
        f"| date | {r['date']} |",
        f"| nproc | {r['nproc']} |",
        f"| python | {r['python']} |",
        f"| kubernetes client | {r['kubernetes_version']} |",
        f"| load average (1 min) at start / end | {r['load_start']:.2f} / {r['load_end']:.2f} "
        "(a shared machine: other work inflates the times) |",
        f"| fake cluster | {r['namespaces']} namespaces, {r['services']} ClusterIP Services, "
        f"{r['services']} EndpointSlices, {r['endpoints']} ready endpoints |",
        "",
        "The fake API server (`tests/fakeapi`) runs in the benchmark process; kdns runs in a "
        "child process (`bench/scale_server.py`: `load_api_client` + `Runtime` + `Responder` + "
        "UDP + `WatchSource`, as `kdns serve` wires the live source) with the default "
        "`WatchSettings` (pages of 500).",
        "",
        "| figure | measured | target | met |",
        "|---|---|---|---|",
        f"| initial sync (process start to every list in a published table) | "
        f"{r['sync_s']:.2f} s | <= {TARGET_SYNC_S:g} s | {ok(r['sync_s'] <= TARGET_SYNC_S)} |",
        f"| resident memory after sync + gc (VmRSS) | {r['rss_mb']:.1f} MB | "
        f"<= {TARGET_RSS_MB:g} MB | {ok(r['rss_mb'] <= TARGET_RSS_MB)} |",
        f"| Service change -> answer, p50 / p99 / max over {r['changes']} changes | "
        f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f} / {r['max_ms']:.1f} ms | "
        f"p99 <= {TARGET_P99_MS:g} ms | {ok(r['p99_ms'] <= TARGET_P99_MS and not r['timeouts'])} |",
        "",
        "The watcher alone (`scale_server.py --store-only`: the same informers feeding a bare "
        "`Store`, no answer table, no DNS): "
        f"sync {r['alone_sync_s']:.2f} s, RSS {r['alone_rss_mb']:.1f} MB after sync "
        f"(peak {r['alone_hwm_mb']:.1f} MB).",
        "",
        "Where the time and memory go:",
        "",
        f"- Sync: {r['import_s']:.2f} s of imports in the child, then "
        f"{r['sync_after_imports_s']:.2f} s to list, convert, build and publish the table.",
        f"- Peak RSS during the sync (VmHWM): {r['hwm_mb']:.1f} MB; after sync {r['rss_mb']:.1f} "
        f"MB, of which {r['rss_imported_mb']:.1f} MB were there right after the imports.",
        f"- For scale: a bare `python3` is {r['rss_bare_mb']:.1f} MB; `import kubernetes` alone "
        f"is {r['rss_kubernetes_mb']:.1f} MB; kdns's own imports without it are "
        f"{r['rss_kdns_only_mb']:.1f} MB. The cluster state and the answer table take the rest, "
        f"about {r['rss_mb'] - r['rss_imported_mb']:.1f} MB.",
        f"- Latency: {r['timeouts']} of {r['changes']} changes missed the 2 s deadline. Each "
        "change goes fake apply -> watch event -> convert -> publisher batch -> incremental "
        "table rebuild -> answer; the poller queries every 0.5 ms. The publisher's last "
        f"one-Service rebuild took {r['last_publish_ms']:.1f} ms.",
        "",
        r["verdict"],
        SECTION_END,
    ]
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else ""
    if SECTION_START in text and SECTION_END in text:
        head, _, rest = text.partition(SECTION_START)
        _, _, tail = rest.partition(SECTION_END)
        text = head + section.rstrip("\n") + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def verdict(r: dict[str, Any]) -> str:
    missed = []
    if r["sync_s"] > TARGET_SYNC_S:
        missed.append(
            f"**sync time**: the watcher alone syncs in {r['alone_sync_s']:.1f} s; the other "
            f"{r['sync_s'] - r['alone_sync_s']:.1f} s are building the first answer table"
        )
    if r["rss_mb"] > TARGET_RSS_MB:
        table = r["rss_mb"] - r["alone_rss_mb"]
        missed.append(
            f"**memory**: the interpreter plus `import kubernetes` is "
            f"{r['rss_kubernetes_mb']:.0f} MB before kdns holds a single object; the watcher "
            f"with the whole store is {r['alone_rss_mb']:.0f} MB; the answer table adds the "
            f"other {table:.0f} MB"
        )
    if r["p99_ms"] > TARGET_P99_MS or r["timeouts"]:
        missed.append(
            f"**change latency**: one change costs one table publish "
            f"({r['last_publish_ms']:.0f} ms for the last one), which grows with the table"
        )
    if not missed:
        return "All three targets are met."
    return "Missed: " + "; ".join(missed) + "."


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--endpoints-per-slice", type=int, default=10)
    parser.add_argument("--namespaces", type=int, default=100)
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, help="Markdown file to write the section into")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    load_start = os.getloadavg()[0]

    import kubernetes

    print("measuring import footprints ...", file=sys.stderr)
    rss_bare = rss_of_snippet("pass")
    rss_kubernetes = rss_of_snippet("import kubernetes")
    rss_kdns_only = rss_of_snippet(
        "import kdns.runtime, kdns.serve.udp, kdns.serve.protocol, kdns.source.convert"
    )

    print(f"populating the fake API server ({args.services} services) ...", file=sys.stderr)
    started = time.monotonic()
    kube = FakeKube(bookmark_interval=60.0).start()
    try:
        names = populate(kube, args.services, args.endpoints_per_slice, args.namespaces)
        print(f"  {time.monotonic() - started:.1f} s", file=sys.stderr)
        with tempfile.TemporaryDirectory(prefix="kdns-scale-") as tmp:
            kubeconfig = kube.write_kubeconfig(Path(tmp) / "kubeconfig")
            print("watcher alone (--store-only) ...", file=sys.stderr)
            with Child(kubeconfig, store_only=True) as alone:
                pass
            print(
                f"  synced in {alone.sync_s:.2f} s, RSS {alone.rss_kb / 1024:.1f} MB",
                file=sys.stderr,
            )
            print("full server ...", file=sys.stderr)
            with Child(kubeconfig, store_only=False) as full:
                resolver = Resolver(full.port)
                for ns, name in rng.sample(names, 20):
                    index = int(name[3:])
                    got = resolver.a(f"{name}.{ns}.svc.cluster.local")
                    assert got == (0, [cluster_ip(index)]), (name, got)
                print(
                    f"  synced in {full.sync_s:.2f} s, RSS {full.rss_kb / 1024:.1f} MB",
                    file=sys.stderr,
                )
                latencies, timeouts = measure_latency(kube, names, full.port, args.changes, rng)
    finally:
        kube.stop()

    result: dict[str, Any] = {
        "command": "python bench/scale.py" + (f" --out {args.out}" if args.out else ""),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "load_start": load_start,
        "load_end": os.getloadavg()[0],
        "python": platform.python_version(),
        "kubernetes_version": kubernetes.__version__,
        "namespaces": args.namespaces,
        "services": args.services,
        "endpoints": args.services * args.endpoints_per_slice,
        "sync_s": full.sync_s,
        "import_s": full.imported["seconds"],
        "sync_after_imports_s": full.synced["seconds_after_imports"],
        "rss_mb": full.rss_kb / 1024,
        "hwm_mb": full.hwm_kb / 1024,
        "rss_imported_mb": full.imported["rss_kb"] / 1024,
        "alone_sync_s": alone.sync_s,
        "alone_rss_mb": alone.rss_kb / 1024,
        "alone_hwm_mb": alone.hwm_kb / 1024,
        "rss_bare_mb": rss_bare,
        "rss_kubernetes_mb": rss_kubernetes,
        "rss_kdns_only_mb": rss_kdns_only,
        "changes": args.changes,
        "timeouts": timeouts,
        "p50_ms": statistics.median(latencies) if latencies else float("nan"),
        "p99_ms": percentile(latencies, 99) if latencies else float("nan"),
        "max_ms": max(latencies) if latencies else float("nan"),
        "last_publish_ms": full.stopping.get("last_publish_ms", float("nan")),
        "server_report": full.synced,
        "watcher_alone_report": alone.synced,
    }
    result["verdict"] = verdict(result)
    out_dir = HERE / "out"
    out_dir.mkdir(exist_ok=True)
    record = out_dir / f"scale-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    record.write_text(json.dumps(result, indent=2) + "\n")
    section = render(result)
    print(section)
    print(f"record: {record}", file=sys.stderr)
    if args.out:
        write_section(args.out, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
