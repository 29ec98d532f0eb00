"""The ndots lab: a pod's lookups through real libc resolvers, counted hop by hop, in a network
namespace (issue 5, parts 4 and 5). Shared by tests/integration/test_ndots.py and bench/ndots.py.

One namespace holds, each on its own loopback address, port 53:

* kdns (``KDNS``), serving examples/demo-cluster.yaml;
* NSD (``NSD``), authoritative for the external test zone ``example.test``, for the two host
  search domains ``corp.test`` and ``lab.test`` (negative TTL 30 s), and for the root zone, so a
  name outside every zone is a clean NXDOMAIN too, never REFUSED;
* nodecache (``NODECACHE``), the pod's nameserver: cluster.local to kdns (over UDP, so every
  query is one packet), everything else to NSD, the node's search domains from its
  ``--host-resolv-conf``.

``/etc/netns/NAME/resolv.conf`` is what the kubelet writes for a ClusterFirst pod in ``shop``
(ndots:5, three cluster search domains, then the host's two: H=2). The clients are
tests/support/gai_client.c built twice, against glibc (gcc) and musl (``musl-gcc -static``),
plus ``getent ahosts`` for glibc. The same namespace also has an IPv6 address, so glibc's
``AI_ADDRCONFIG`` (``getent``) asks AAAA as a dual-stack pod does.

Counting: iptables rules with no target in the namespace's INPUT chain count the UDP datagrams
to each server (``iptables -L -v -x -Z`` reads and zeroes them): queries the client sent
(to nodecache), and queries that left the node (to kdns, to NSD). tests/support/dnslog.py
captures the same traffic as a query log, whose lines say which names each count was.

``Lab.run_case`` starts a fresh nodecache (cold cache), looks the name up once (cold), again at
once (warm, within every negative TTL), optionally ``repeat`` more times for the warm median
latency, and for glibc once more with ``getent``; absorption on is
``--autopath on --local-nxdomain on --autopath-clients CLIENTS``, off is both mechanisms off.
"""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdns.admin import lookup as explain_lookup
from kdns.admin.libc import read_options
from kdns.admin.outside import Outside
from kdns.admin.snapshot import ClusterDNS
from kdns.config import ZoneConfig
from kdns.source.manifests import load_snapshot
from nodecache.admin.offline import OfflineNode
from tests.support import nsd
from tests.support.netns import Netns, netns_missing_reason, network_namespace
from tests.support.waiting import stop_process, wait_until

REPO = Path(__file__).resolve().parents[2]
KDNS = "10.53.0.10"
NSD = "10.53.0.20"
NODECACHE = "10.53.0.53"
IPV6 = "fd00:53::53"
"""A non-loopback IPv6 address, so glibc's AI_ADDRCONFIG asks AAAA (as on a dual-stack pod)."""
CLIENTS = "10.53.0.0/24"
"""The trusted pod sources (``--autopath-clients``): a client in the namespace sends from the
nodecache address itself (the local route's preferred source is the destination)."""
POD_NAMESPACE = "shop"
CLUSTER_SEARCH = (f"{POD_NAMESPACE}.svc.cluster.local", "svc.cluster.local", "cluster.local")
HOST_SEARCH = ("corp.test", "lab.test")
H = len(HOST_SEARCH)
NEGATIVE_TTL_S = 30
LIBCS = ("glibc", "musl")
CLUSTER_DENIAL_S = 5
"""How long nodecache keeps a cluster-zone NXDOMAIN (NodeLocal's policy: denials ≤ 5 s)."""
LATE_S = CLUSTER_DENIAL_S + 1.5
"""The late lookup: past the cluster denials, well within the host domains' 30 s."""
LOG_LINES = 40

ZONES = {
    "example.test": """$ORIGIN example.test.
$TTL 300
@    IN SOA ns.example.test. hostmaster.example.test. 1 7200 1800 86400 30
@    IN NS  ns.example.test.
ns   IN A   192.0.2.53
www  IN A   192.0.2.1
www  IN AAAA 2001:db8::1
""",
    **{
        zone: f"""$ORIGIN {zone}.
$TTL 300
@    IN SOA ns.{zone}. hostmaster.{zone}. 1 7200 1800 86400 {NEGATIVE_TTL_S}
@    IN NS  ns.{zone}.
ns   IN A   192.0.2.53
"""
        for zone in HOST_SEARCH
    },
    ".": f""". 300 IN SOA ns.root.test. hostmaster.root.test. 1 7200 1800 86400 {NEGATIVE_TTL_S}
. 300 IN NS ns.root.test.
""",
}
"""NSD's zones: negative answers carry 30 s (the SOA MINIMUM, below its TTL; RFC 2308 §5)."""

NODECACHE_CONFIG = """# tests/support/ndots.py: ask kdns over UDP, one datagram per query, as iptables counts them
cluster_transport: udp
"""


@dataclass(frozen=True)
class Case:
    id: str
    name: str
    what: str


CASES = (
    Case("same-namespace", "cart", "a Service in the pod's namespace"),
    Case("other-namespace", "kubernetes.default", "a Service in another namespace"),
    Case("external", "www.example.test", "an external name (H=2)"),
    Case("external-dot", "www.example.test.", "the external name with a trailing dot"),
    Case("nowhere", "nothere.example.test", "a name that exists nowhere"),
    Case("headless", "db.data", "a headless Service with two ready endpoints"),
)
CASE_BY_ID = {case.id: case for case in CASES}

EXPECTED_ANSWER = {
    "same-namespace": ("10.96.10.11",),
    "other-namespace": ("10.96.0.1",),
    "external": ("192.0.2.1", "2001:db8::1"),
    "external-dot": ("192.0.2.1", "2001:db8::1"),
    "nowhere": ("error NONAME",),
    "headless": ("10.244.1.30", "10.244.2.30"),  # db-0 and db-1; db-2 is not ready
}
# What the lab observes (tests/integration/test_ndots.py), and nodecache explain must agree
# with (tests/unit/test_explain.py). Without absorption, cold: (client, kdns, NSD). A and AAAA per candidate; glibc and musl both
# stop at the first candidate that has an answer, and try the name as-is last.
EXPECTED_OFF_COLD = {
    "same-namespace": (2, 2, 0),  # cart.shop.svc.cluster.local
    "other-namespace": (4, 4, 0),  # .shop.svc... NXDOMAIN, then kubernetes.default.svc...
    "external": (12, 6, 6),  # 3 cluster + 2 host candidates, then as-is: 6 x 2
    "external-dot": (2, 0, 2),  # no search
    "nowhere": (12, 6, 6),
    "headless": (4, 4, 0),
}


@dataclass(frozen=True)
class Counts:
    """UDP queries in one phase: sent by the client (to nodecache), and that left the node."""

    client: int
    kdns: int
    nsd: int

    @property
    def leaving(self) -> int:
        return self.kdns + self.nsd


@dataclass(frozen=True)
class Lookup:
    answer: tuple[str, ...]
    """The sorted addresses, or ``("error NONAME",)`` and the like: what the application got."""
    counts: Counts
    micros: tuple[int, ...]
    queries: tuple[str, ...]
    """The query log of the phase: ``"SRC > DST NAME TYPE -> RCODE"``, in order."""

    @property
    def median_us(self) -> float:
        return statistics.median(self.micros)


@dataclass(frozen=True)
class CaseResult:
    case: Case
    libc: str
    absorb: bool
    cold: Lookup
    warm: Lookup
    timing: tuple[int, ...]
    """Warm lookups after ``warm``, for the median (empty unless ``repeat`` was given)."""
    getent: tuple[str, ...] | None
    """glibc only: the answer ``getent ahosts`` printed, on the warm cache."""
    metrics: dict[str, float]
    """nodecache's local-answer counters after the case (searchpath/absorb metrics)."""

    @property
    def warm_median_us(self) -> float:
        return statistics.median(self.timing or self.warm.micros)


POD_RESOLV_CONF = (
    f"nameserver {NODECACHE}\nsearch {' '.join((*CLUSTER_SEARCH, *HOST_SEARCH))}\noptions ndots:5\n"
)
"""What ``Lab.setup`` writes as the namespace's resolv.conf (the pod's)."""


@functools.cache
def _explain_dns() -> ClusterDNS:
    snapshot = load_snapshot([REPO / "examples" / "demo-cluster.yaml"])
    return ClusterDNS(snapshot, ZoneConfig(), Outside(ZONES.items()))


def explained(case: Case, libc: str, absorb: bool) -> tuple[explain_lookup.Lookup, ...]:
    """``nodecache explain``'s prediction for the case in this lab, offline (the same snapshot,
    resolv.conf and NSD zones): the cold lookup, then the warm one."""
    options = read_options(POD_RESOLV_CONF)
    node = OfflineNode(_explain_dns(), options.search, absorb=absorb)
    return tuple(
        explain_lookup.run(case.name, options, libc, node, phase) for phase in ("cold", "warm")
    )


def predicted_counts(found: explain_lookup.Lookup) -> Counts:
    """An explained lookup in the lab's terms: queries the client sent, to kdns, to NSD."""
    return Counts(found.queries_sent, found.left_to("kdns"), found.left_to("upstream"))


def missing_reason() -> str | None:
    """Why the lab cannot run here, or None."""
    reason = netns_missing_reason(
        "nsd", "nsd-checkconf", "iptables", "gcc", "getent", "dig", "curl"
    )
    if reason is not None:
        return reason
    if shutil.which("musl-gcc") is None:
        return "musl-gcc is not installed (Debian package musl-tools; ./dev test installs it)"
    return None


def parse_client(output: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """gai_client's output: (sorted addresses or the error, the microseconds of each lookup)."""
    addresses: list[str] = []
    micros: tuple[int, ...] = ()
    for line in output.splitlines():
        word, _, rest = line.partition(" ")
        if word == "addr":
            addresses.append(rest)
        elif word == "error":
            addresses.append(line)
        elif word == "us":
            micros = tuple(int(value) for value in rest.split())
    if not micros:
        raise AssertionError(f"gai_client printed no timing:\n{output}")
    return tuple(sorted(set(addresses))), micros


def parse_getent(result: subprocess.CompletedProcess[str]) -> tuple[str, ...]:
    """``getent ahosts``'s answer in gai_client's terms (exit 2 is "not found")."""
    if result.returncode == 2:
        return ("error NONAME",)
    if result.returncode != 0:
        raise AssertionError(f"getent ahosts exited {result.returncode}: {result.stderr}")
    return tuple(sorted({line.split()[0] for line in result.stdout.splitlines() if line}))


COUNTERS = {"client": NODECACHE, "kdns": KDNS, "nsd": NSD}


@dataclass
class Lab:
    netns: Netns
    directory: Path
    python: str
    clients: dict[str, Path] = field(default_factory=dict)
    nodecache: subprocess.Popen[bytes] | None = None
    nodecache_log: Path | None = None
    querylog: Path | None = None
    querylog_offset: int = 0
    querylog_process: subprocess.Popen[bytes] | None = None
    runs: int = 0

    # --- setup ---------------------------------------------------------------------------------

    def setup(self) -> None:
        for address in (KDNS, NSD, NODECACHE, IPV6):
            self.netns.add_address(address)
        self.netns.write_resolv_conf(
            NODECACHE, (*CLUSTER_SEARCH, *HOST_SEARCH), options=("ndots:5",)
        )
        # Counted in mangle INPUT, ahead of any filter rule (nodecache's own ACCEPT rules).
        for counter, address in COUNTERS.items():
            self.netns.run(
                ["iptables", "-w", "-t", "mangle", "-I", "INPUT", "-d", f"{address}/32", "-p", "udp",
                 "--dport", "53", "-m", "comment", "--comment", f"ndots-{counter}"]
            )  # fmt: skip
        self._build_clients()
        self._start_querylog()
        self._start_nsd()
        self._start_kdns()

    def _build_clients(self) -> None:
        source = REPO / "tests" / "support" / "gai_client.c"
        builds = {"glibc": ["gcc", "-O2"], "musl": ["musl-gcc", "-O2", "-static"]}
        for libc, compiler in builds.items():
            binary = self.directory / f"gai_client.{libc}"
            subprocess.run([*compiler, "-o", str(binary), str(source)], check=True)
            self.clients[libc] = binary

    def _start_querylog(self) -> None:
        self.querylog = self.directory / "queries.jsonl"
        script = REPO / "tests" / "support" / "dnslog.py"
        self.querylog_process = self.netns.start(
            [self.python, str(script), str(self.querylog)], log=self.directory / "dnslog.log"
        )
        self._querylog_says({"ready": True})

    def _querylog_says(self, marker: dict[str, bool]) -> None:
        """Wait until the query log's last line is ``marker``; later reads start after it."""
        path = self.querylog
        assert path is not None

        def said() -> bool:
            if not path.exists():
                return False
            lines = path.read_bytes().splitlines()
            return bool(lines) and json.loads(lines[-1]) == marker

        wait_until(said, timeout=15, interval=0.02, message=f"the query log says {marker}")
        self.querylog_offset = path.stat().st_size

    @contextlib.contextmanager
    def querylog_paused(self) -> Iterator[None]:
        """No capture inside (for timed lookups: decoding competes for the cores)."""
        assert self.querylog_process is not None
        self.querylog_process.send_signal(signal.SIGUSR1)
        self._querylog_says({"paused": True})
        try:
            yield
        finally:
            self.querylog_process.send_signal(signal.SIGUSR2)
            self._querylog_says({"ready": True})

    def _start_nsd(self) -> None:
        directory = self.directory / "nsd"
        directory.mkdir()
        conf = nsd.write_config(directory, ZONES, host=NSD, port=53)
        self.netns.start(["nsd", "-d", "-c", str(conf)], log=directory / "stderr")
        self._wait_answer(NSD, "example.test", "SOA", "NSD")

    def _start_kdns(self) -> None:
        manifests = REPO / "examples" / "demo-cluster.yaml"
        self.netns.start(
            [self.python, "-m", "kdns", "serve", "--manifests", str(manifests),
             "--listen", f"{KDNS}:53", "--upstream", "none", "--health-listen", "none"],
            log=self.directory / "kdns.log",
        )  # fmt: skip
        self._wait_answer(KDNS, "cart.shop.svc.cluster.local", "A", "kdns")

    def _wait_answer(self, server: str, name: str, rtype: str, what: str) -> None:
        def answers() -> bool:
            result = self.netns.run(
                ["dig", "+short", "+time=1", "+tries=1", f"@{server}", name, rtype], check=False
            )
            return result.returncode == 0 and bool(result.stdout.strip())

        wait_until(answers, timeout=30, interval=0.1, message=f"{what} answers {name} {rtype}")

    # --- nodecache -----------------------------------------------------------------------------

    def start_nodecache(self, absorb: bool) -> None:
        """A fresh nodecache (empty cache), absorption on or off."""
        self.stop_nodecache()
        self.runs += 1
        run_dir = self.directory / f"nodecache-{self.runs}"
        run_dir.mkdir()
        (run_dir / "nodecache.yaml").write_text(NODECACHE_CONFIG)
        host_resolv = run_dir / "host-resolv.conf"
        host_resolv.write_text(f"nameserver {NSD}\nsearch {' '.join(HOST_SEARCH)}\n")
        argv = [
            self.python, "-m", "nodecache", "serve", "--listen", f"{NODECACHE}:53",
            "--cluster-upstream", f"{KDNS}:53", "--upstream", f"{NSD}:53",
            "--host-resolv-conf", str(host_resolv), "--config", str(run_dir / "nodecache.yaml"),
            "--health-listen", f"{NODECACHE}:8080",
        ]  # fmt: skip
        # The namespace is the node: no dummy interface, no NOTRACK/ACCEPT rules, no guard.
        argv += ["--no-setup-interface", "--no-setup-iptables"]
        state = "on" if absorb else "off"
        argv += ["--autopath", state, "--local-nxdomain", state]
        if absorb:
            argv += ["--autopath-clients", CLIENTS]
        self.nodecache_log = run_dir / "nodecache.log"
        process = self.netns.start(argv, log=self.nodecache_log)
        self.nodecache = process
        log = self.nodecache_log

        def serving() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"nodecache exited {process.returncode}:\n{self.log_tail()}")
            text = log.read_text(errors="replace") if log.exists() else ""
            return "serving on" in text and "health on" in text

        wait_until(serving, timeout=30, interval=0.05, message=f"nodecache serving ({log})")

    def stop_nodecache(self) -> None:
        process = self.nodecache
        if process is None:
            return
        self.nodecache = None
        stop_process(process, timeout=10)
        with contextlib.suppress(ValueError):
            self.netns.processes.remove(process)

    def log_tail(self) -> str:
        if self.nodecache_log is None or not self.nodecache_log.exists():
            return ""
        return "\n".join(self.nodecache_log.read_text(errors="replace").splitlines()[-LOG_LINES:])

    def metrics(self) -> dict[str, float]:
        """nodecache's counters of local answers (the metrics named searchpath or absorb)."""
        result = self.netns.run(
            ["curl", "-s", "--max-time", "5", f"http://{NODECACHE}:8080/metrics"], check=False
        )
        found: dict[str, float] = {}
        for line in result.stdout.splitlines():
            if line.startswith("#") or not any(w in line for w in ("searchpath", "absorb")):
                continue
            key, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                found[key] = float(value)
        return found

    # --- counting ------------------------------------------------------------------------------

    def read_counts(self) -> Counts:
        """The datagrams counted since the last read, and zero the counters."""
        listing = self.netns.run(
            ["iptables", "-w", "-t", "mangle", "-L", "INPUT", "-v", "-n", "-x", "-Z"]
        )
        values: dict[str, int] = {}
        for line in listing.stdout.splitlines():
            for counter in COUNTERS:
                if f"/* ndots-{counter} */" in line:
                    values[counter] = int(line.split()[0])
        return Counts(**values)

    def read_queries(self, expected: Counts) -> tuple[str, ...]:
        """The query log since the last read; waits (briefly) until it holds the counted queries."""
        assert self.querylog is not None
        path = self.querylog

        def lines() -> tuple[list[dict[str, Any]]] | None:
            with path.open("rb") as handle:
                handle.seek(self.querylog_offset)
                data = handle.read()
            if data and not data.endswith(b"\n"):
                return None
            # Markers ({"ready": true}) and undecodable datagrams have no name: not shown.
            records = [r for r in map(json.loads, data.splitlines()) if "name" in r]
            if sum(1 for r in records if not r["qr"]) < expected.client + expected.leaving:
                return None
            self.querylog_offset += len(data)
            return (records,)  # truthy even when there were none

        try:
            found = wait_until(lines, timeout=2, interval=0.02)
        except AssertionError:
            return ("(query log incomplete)",)
        records = found[0] if found is not None else []
        shown = []
        for record in records:
            if record.get("qr"):
                shown.append(
                    f"  {record['src']} > {record['dst']} {record['name']} {record['type']}"
                    f" -> {record['rcode']} {' | '.join(record['answer'])}".rstrip()
                )
            else:
                shown.append(f"{record['src']} > {record['dst']} {record['name']} {record['type']}")
        return tuple(shown)

    def lookup(self, libc: str, name: str, repeat: int = 1, logged: bool = True) -> Lookup:
        """One client run (``repeat`` lookups of ``name``) with the queries it caused (their
        log too, unless ``logged`` is false: inside ``querylog_paused``)."""
        self.read_counts()
        if logged:
            self.read_queries(Counts(0, 0, 0))
        result = self.netns.run([str(self.clients[libc]), name, str(repeat)], timeout=60)
        answer, micros = parse_client(result.stdout)
        counts = self.read_counts()
        return Lookup(answer, counts, micros, self.read_queries(counts) if logged else ())

    def timed(self, libc: str, name: str, repeat: int) -> tuple[int, ...]:
        """The microseconds of ``repeat`` lookups, the query log paused."""
        with self.querylog_paused():
            return self.lookup(libc, name, repeat, logged=False).micros

    def getent(self, name: str) -> tuple[str, ...]:
        return parse_getent(self.netns.run(["getent", "ahosts", name], check=False))

    def run_case(self, case: Case, libc: str, absorb: bool, repeat: int = 0) -> CaseResult:
        self.start_nodecache(absorb)
        cold = self.lookup(libc, case.name)
        warm = self.lookup(libc, case.name)
        timing = self.timed(libc, case.name, repeat) if repeat else ()
        getent = self.getent(case.name) if libc == "glibc" else None
        return CaseResult(case, libc, absorb, cold, warm, timing, getent, self.metrics())

    def compare_latency(
        self, libc: str, absorb: bool, names: Sequence[str], rounds: int, repeat: int
    ) -> dict[str, list[int]]:
        """Warm lookup times of ``names`` on one fresh nodecache, interleaved: ``rounds`` rounds,
        each ``repeat`` lookups of every name in turn, so the machine's noise falls on all alike
        (a ratio between them is the figure to read)."""
        self.start_nodecache(absorb)
        for name in names:
            self.lookup(libc, name)  # cold: fills the cache
        micros: dict[str, list[int]] = {name: [] for name in names}
        with self.querylog_paused():
            for _ in range(rounds):
                for name in names:
                    micros[name] += self.lookup(libc, name, repeat, logged=False).micros
        return micros

    def run_late(
        self, cases: Sequence[Case], libcs: Sequence[str], absorb: bool, after_s: float = LATE_S
    ) -> Late:
        """On one fresh nodecache, each case through each libc once, then once more when
        ``after_s`` have passed since the first lookup: by then the cluster zone's denials
        (capped at 5 s) have expired or been refreshed in the background (prefetch), while the
        host domains' denials (30 s) and the answers (30 s) are still cached."""
        self.start_nodecache(absorb)
        started = time.monotonic()
        first = {(case.id, libc): self.lookup(libc, case.name) for case in cases for libc in libcs}
        self.read_counts()
        # Wall time is what expires nodecache's entries: wait it out (bounded, a few seconds).
        time.sleep(max(0.0, started + after_s - time.monotonic()))
        background = self.read_counts()
        background_queries = self.read_queries(background)
        late = {(case.id, libc): self.lookup(libc, case.name) for case in cases for libc in libcs}
        return Late(absorb, after_s, first, background, background_queries, late)


@dataclass(frozen=True)
class Late:
    """``Lab.run_late``'s lookups, keyed (case id, libc), and what nodecache sent in between."""

    absorb: bool
    after_s: float
    first: dict[tuple[str, str], Lookup]
    background: Counts
    """Queries that left the node during the wait: nodecache's own refreshes (prefetch)."""
    background_queries: tuple[str, ...]
    late: dict[tuple[str, str], Lookup]


@contextlib.contextmanager
def lab(python: str | None = None) -> Iterator[Lab]:
    """The namespace with NSD, kdns and the clients ready; nodecache started per case."""
    python = python or default_python()
    with (
        tempfile.TemporaryDirectory(prefix="kdns-ndots-") as tmp,
        network_namespace("ndots") as netns,
    ):
        # The namespace's processes run as root from a private tmp dir: let them read it.
        Path(tmp).chmod(0o755)
        lab = Lab(netns, Path(tmp), python)
        try:
            lab.setup()
            yield lab
        finally:
            lab.stop_nodecache()


def default_python() -> str:
    """The project venv's interpreter if there is one (kdns and nodecache installed), else ours."""
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def run_matrix(
    laboratory: Lab,
    cases: Sequence[Case] = CASES,
    libcs: Sequence[str] = LIBCS,
    modes: Sequence[bool] = (False, True),
    repeat: int = 0,
    progress: Callable[[str], None] | None = None,
) -> list[CaseResult]:
    """Every case x libc x mode, each on a fresh nodecache; ``progress`` hears of each."""
    results = []
    for absorb in modes:
        for libc in libcs:
            for case in cases:
                started = time.monotonic()
                results.append(laboratory.run_case(case, libc, absorb, repeat))
                if progress is not None:
                    mode = "on" if absorb else "off"
                    took = time.monotonic() - started
                    progress(f"{case.id} {libc} absorption {mode}: {took:.1f} s")
    return results
