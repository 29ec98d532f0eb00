"""nodecache vs unbound as caching forwarders to the same NSD: CPU per query on cache hits,
on misses, and the hit ratio over a Zipf workload.

Method (../shared/docs/performance.md; the helpers are bench/run.py's, imported): NSD serves a
zone ``bench.example`` from a zone file. unbound (Debian ``unbound``, set up as a plain cache:
one thread, forward-zone to NSD, no prefetch, no ratelimit, iterator only) and nodecache (its
``--upstream`` is the same NSD) both run pinned to core 0; dnsperf and NSD run on core 1. CPU is
utime+stime from /proc/PID/stat over the server's process tree, before and after each fixed-rate
run (``dnsperf -Q RATE -l SECONDS``), divided by the completed queries. Both servers run side by
side in the same run and take turns; the ratio is the figure to read.

Workloads:

* **hit**: ``HIT_NAMES`` distinct ``hN.hit.bench.example A``, every one warmed first, so every
  query is a cache hit in both servers (nodecache's TTL cap for the zone is raised to the records'
  3600 s in its config file, as unbound keeps them 3600 s, so no entry expires mid-run);
  optionally with EDNS (``--edns``). A third server, **py-floor**, runs here too (``--no-floor``
  leaves it out): not a cache, but kdns.serve.udp's loop answering from a dict of prebuilt
  replies, the least any Python server on that loop spends; nodecache minus py-floor is what the
  cache's semantics cost per hit.
* **miss**: every query a name never asked before (``rRUN-N.miss.bench.example``, a wildcard in
  NSD), at a low rate: the full path to NSD and back, plus storing the answer.
* **zipf**: ``--zipf-queries`` names drawn from a Zipf(s) distribution over ``--zipf-names``
  names (``zN.zipf.bench.example``), both servers cold, NodeLocal's default TTL policy for
  nodecache; reports each server's own hit counters (nodecache ``/metrics``, ``unbound-control
  stats_noreset``) and its CPU per query.

Usage: python3 bench/nodecache_bench.py [--rate 20000 --rate 40000] [--duration 5] [--repeat 3]
                                        [--edns] [--no-floor] [--only hit,miss,zipf]
                                        [--miss-rate 2000] [--zipf-queries 100000] [--keep]

It prints a Markdown section (tables, machine facts, command lines) on stdout; progress goes to
stderr.

Stdlib only (plus bench/run.py). Every load is bounded by dnsperf's -l; every server is stopped
on the way out (by its own pid).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from bisect import bisect_left
from itertools import accumulate
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402  (bench/run.py: process CPU accounting, dnsperf, Server, NSD config)
from run import Measurement, Server, Workload, log  # noqa: E402

ZONE = "bench.example"  # not under .test/.invalid: unbound answers those locally by default
HIT_NAMES = 1000
RECORD_TTL = 3600


# --- the zone and the query files -------------------------------------------------------------


def zone_text() -> str:
    lines = [
        f"$ORIGIN {ZONE}.",
        f"$TTL {RECORD_TTL}",
        f"@ IN SOA ns1.{ZONE}. hostmaster.{ZONE}. 1 7200 1800 86400 60",
        f"@ IN NS ns1.{ZONE}.",
        "ns1 IN A 192.0.2.53",
        "*.miss IN A 192.0.2.2",
        "*.zipf IN A 192.0.2.3",
    ]
    lines += [
        f"h{i}.hit IN A 10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}" for i in range(HIT_NAMES)
    ]
    return "\n".join(lines) + "\n"


def hit_names() -> list[str]:
    return [f"h{i}.hit.{ZONE}" for i in range(HIT_NAMES)]


def write_queries(path: Path, names: list[str]) -> Path:
    path.write_text("".join(f"{name} A\n" for name in names))
    return path


def zipf_names(universe: int, count: int, s: float, seed: int) -> list[str]:
    """``count`` draws of ``zRANK.zipf.ZONE``, rank r with probability ∝ 1/r**s."""
    cumulative = list(accumulate(1.0 / (rank**s) for rank in range(1, universe + 1)))
    total = cumulative[-1]
    rng = random.Random(seed)
    return [
        f"z{bisect_left(cumulative, rng.random() * total) + 1}.zipf.{ZONE}" for _ in range(count)
    ]


# --- servers ----------------------------------------------------------------------------------


def start_nsd(workdir: Path) -> Server:
    directory = workdir / "nsd"
    directory.mkdir()
    (directory / f"{ZONE}.zone").write_text(zone_text())
    port = run.free_port()
    conf = directory / "nsd.conf"
    conf.write_text(run.NSD_CONF.format(port=port, dir=directory, zone=ZONE, minimal="yes"))
    run.run(["nsd-checkconf", str(conf)])
    err = directory / "stderr"
    # NSD is only the upstream here: it shares core 1 with dnsperf, away from the measured server.
    cmd = ["taskset", "-c", run.CLIENT_CORE, "nsd", "-d", "-c", str(conf)]
    with err.open("wb") as stderr:
        proc = subprocess.Popen(cmd, stdout=stderr, stderr=stderr, stdin=subprocess.DEVNULL)
    return Server("nsd", port, proc, err, {"cmd": shlex.join(cmd)})


UNBOUND_CONF = """server:
    interface: 127.0.0.1
    port: {port}
    do-ip6: no
    do-daemonize: no
    num-threads: 1
    so-reuseport: no
    chroot: ""
    username: ""
    directory: "{dir}"
    pidfile: "{dir}/unbound.pid"
    logfile: ""
    use-syslog: no
    verbosity: 0
    access-control: 127.0.0.0/8 allow
    # A plain cache in front of NSD: no validator (no trust anchor either), no prefetch, no
    # rate limits, no query-name minimisation, no statistics logging.
    module-config: "iterator"
    do-not-query-localhost: no
    prefetch: no
    ratelimit: 0
    ip-ratelimit: 0
    qname-minimisation: no
    statistics-interval: 0
    extended-statistics: no
    statistics-cumulative: no
    serve-expired: no
    msg-cache-size: 64m
    rrset-cache-size: 128m
    minimal-responses: yes
remote-control:
    # A unix socket, for `unbound-control stats_noreset` (the Zipf hit ratio); no TLS.
    control-enable: yes
    control-interface: "{dir}/unbound.ctl"
    control-use-cert: no
forward-zone:
    name: "{zone}."
    forward-addr: 127.0.0.1@{nsd_port}
"""


def start_unbound(workdir: Path, nsd_port: int) -> Server:
    directory = workdir / "unbound"
    directory.mkdir()
    port = run.free_port()
    conf = directory / "unbound.conf"
    conf.write_text(UNBOUND_CONF.format(port=port, dir=directory, zone=ZONE, nsd_port=nsd_port))
    run.run(["unbound-checkconf", str(conf)])
    err = directory / "stderr"
    cmd = ["taskset", "-c", run.SERVER_CORE, "unbound", "-d", "-c", str(conf)]
    with err.open("wb") as stderr:
        proc = subprocess.Popen(cmd, stdout=stderr, stderr=stderr, stdin=subprocess.DEVNULL)
    return Server("unbound", port, proc, err, {"cmd": shlex.join(cmd), "conf": str(conf)})


# dnsdist's packet cache in front of the same NSD: a second peer for the hit workload (issue 12).
# One listener, one backend, a packet cache big enough for every hit name, health checks slowed
# so they cost nothing measurable; no console, no web server, no carbon.
DNSDIST_CONF = """\
setLocal("127.0.0.1:{port}")
newServer({{address="127.0.0.1:{nsd_port}", checkInterval=60}})
pc = newPacketCache(100000, {{maxTTL=86400, minTTL=0}})
getPool(""):setCache(pc)
setSecurityPollSuffix("")
"""


def start_dnsdist(workdir: Path, nsd_port: int) -> Server:
    directory = workdir / "dnsdist"
    directory.mkdir()
    port = run.free_port()
    conf = directory / "dnsdist.conf"
    conf.write_text(DNSDIST_CONF.format(port=port, nsd_port=nsd_port))
    err = directory / "stderr"
    cmd = ["taskset", "-c", run.SERVER_CORE, "dnsdist", "--supervised", "--disable-syslog",
           "-C", str(conf)]  # fmt: skip
    with err.open("wb") as stderr:
        proc = subprocess.Popen(cmd, stdout=stderr, stderr=stderr, stdin=subprocess.DEVNULL)
    return Server("dnsdist", port, proc, err, {"cmd": shlex.join(cmd), "conf": conf.read_text()})


NODECACHE_CONF = """# nodecache for the benchmark: NodeLocal's defaults, except the TTL cap of the hit zone
zone_ttls:
  hit.{zone}: {{success_max_s: {ttl}, denial_max_s: {ttl}}}
cache:
  max_entries: 400000
  max_bytes: 512Mi
"""


def start_nodecache(
    workdir: Path, python: str, nsd_port: int, extra: list[str] | None = None
) -> Server:
    directory = workdir / "nodecache"
    directory.mkdir()
    port = run.free_port()
    health = run.free_port()
    conf = directory / "nodecache.yaml"
    conf.write_text(NODECACHE_CONF.format(zone=ZONE, ttl=RECORD_TTL))
    err = directory / "stderr"
    upstream = f"127.0.0.1:{nsd_port}"
    cmd = ["taskset", "-c", run.SERVER_CORE, python, "-m", "nodecache", "serve",
           "--listen", f"127.0.0.1:{port}", "--cluster-upstream", upstream,
           "--upstream", upstream, "--health-listen", f"127.0.0.1:{health}",
           "--config", str(conf), "--log-level", "WARNING", *run.METRICS_OFF, *(extra or [])]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with err.open("wb") as stderr:
        proc = subprocess.Popen(
            cmd, stdout=stderr, stderr=stderr, stdin=subprocess.DEVNULL, env=env, cwd=REPO
        )
    return Server("nodecache", port, proc, err, {"cmd": shlex.join(cmd), "health": str(health)})


# A reference, not a cache: kdns.serve.udp's blocking loop (the loop nodecache runs) answering
# from a dict of replies prebuilt by asking NSD once per hit name: the least any Python server on
# this loop can spend per query (performance.md's "dict of prebuilt responses" row). The gap
# between it and nodecache is the cost of the cache's semantics on a hit.
FLOOR_SERVER = """\
import signal, socket, struct, sys
from kdns.serve.udp import UDPServer, bind_udp
port, upstream, names = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
table = {}
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
    sock.settimeout(2)
    for line in open(names):
        name = line.split()[0]
        qname = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\\0"
        query = struct.pack(">HHHHHH", 1, 0x0100, 1, 0, 0, 0) + qname + b"\\0\\1\\0\\1"
        sock.sendto(query, ("127.0.0.1", upstream))
        table[query[12:].lower()] = sock.recv(4096)[2:]
def answer(packet, peer):
    body = table.get(packet[12:].lower())
    return None if body is None else packet[:2] + body
UDPServer(bind_udp("127.0.0.1", port), peer_answer=answer).start()
signal.sigwait([signal.SIGTERM, signal.SIGINT])
"""


def start_floor(workdir: Path, python: str, nsd_port: int, names: Path) -> Server:
    port = run.free_port()
    err = workdir / "py-floor.stderr"
    cmd = ["taskset", "-c", run.SERVER_CORE, python, "-c", FLOOR_SERVER, str(port),
           str(nsd_port), str(names)]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with err.open("wb") as stderr:
        proc = subprocess.Popen(
            cmd, stdout=stderr, stderr=stderr, stdin=subprocess.DEVNULL, env=env, cwd=REPO
        )
    shown = [*cmd[:5], "<FLOOR_SERVER: kdns.serve.udp loop + dict of prebuilt replies>", *cmd[6:]]
    return Server("py-floor", port, proc, err, {"cmd": shlex.join(shown)})


# --- counters ---------------------------------------------------------------------------------


def nodecache_counters(server: Server) -> dict[str, float]:
    url = f"http://127.0.0.1:{server.extra['health']}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    values = {}
    for name in ("nodecache_queries_total", "nodecache_cache_hits_total",
                 "nodecache_cache_misses_total", "nodecache_cache_stale_served_total"):  # fmt: skip
        found = re.search(rf"^{name} (\S+)$", text, re.M)
        values[name] = float(found.group(1)) if found else float("nan")
    return {
        "queries": values["nodecache_queries_total"],
        "hits": values["nodecache_cache_hits_total"],
    }


def unbound_counters(server: Server) -> dict[str, float]:
    out = run.run(["unbound-control", "-c", server.extra["conf"], "stats_noreset"]).stdout
    values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return {
        "queries": float(values.get("total.num.queries", "nan")),
        "hits": float(values.get("total.num.cachehits", "nan")),
    }


def counters(server: Server) -> dict[str, float]:
    return nodecache_counters(server) if server.name == "nodecache" else unbound_counters(server)


# --- checks -----------------------------------------------------------------------------------


def dig_answer(port: int, name: str) -> tuple[str, list[str]]:
    """(rcode, answer RRs without their TTLs) of a recursive query (RD=1: unbound refuses
    RD=0 queries from clients it does not allow to snoop its cache)."""
    cmd = ["dig", "@127.0.0.1", "-p", str(port), name, "A", "+tries=1", "+time=2",
           "+nocookie", "+noedns"]  # fmt: skip
    out = run.run(cmd, timeout=10, check=False).stdout
    status = re.search(r"status: (\w+)", out)
    records = []
    in_answer = False
    for line in out.splitlines():
        if line.startswith(";; ANSWER SECTION:"):
            in_answer = True
        elif not line.strip():
            in_answer = False
        elif in_answer and not line.startswith(";"):
            fields = line.split()
            records.append(" ".join(fields[:1] + fields[2:]))
    return (status.group(1) if status else "NO ANSWER"), sorted(records)


def same_answers(servers: list[Server], names: list[str]) -> list[str]:
    """Differences in rcode and answer RRs (TTL aside) between the servers, one line each."""
    problems = []
    for name in names:
        seen = {server.name: dig_answer(server.port, name) for server in servers}
        if len(set(map(json.dumps, seen.values()))) > 1:
            problems.append(f"{name}: {seen}")
    return problems


def tree_digest() -> str:
    """Which nodecache was measured: a digest of nodecache/*.py (it may be uncommitted)."""
    digest = hashlib.sha1()
    for path in sorted((REPO / "nodecache").glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    status = run.tool_output(["git", "-C", str(REPO), "status", "--short", "--", "nodecache"])
    state = "uncommitted changes" if status.strip() else "as committed"
    return f"nodecache/*.py sha1 {digest.hexdigest()[:10]} ({state})"


# --- main -------------------------------------------------------------------------------------


def pooled(results: list[Measurement], server: str, workload: str, rate: int) -> float:
    runs = [m for m in results if (m.server, m.workload, m.rate) == (server, workload, rate)]
    return run.pooled_us(runs)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    default_python = REPO / ".venv" / "bin" / "python"
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--rate",
        type=int,
        action="append",
        help="hit workload rate(s), qps (default 20000 and 40000)",
    )
    p.add_argument(
        "--duration", type=float, default=5.0, help="seconds per fixed-rate run (default 5)"
    )
    p.add_argument(
        "--repeat", type=int, default=3, help="runs per server, workload and rate (default 3)"
    )
    p.add_argument(
        "--warmup",
        type=float,
        default=2.0,
        help="warm-up seconds of the hit load per server (default 2)",
    )
    p.add_argument(
        "--edns", action="store_true", help="also run the hit workload with EDNS (dnsperf -e)"
    )
    p.add_argument(
        "--miss-rate", type=int, default=2000, help="miss workload rate, qps (default 2000)"
    )
    p.add_argument(
        "--miss-duration", type=float, default=5.0, help="seconds per miss run (default 5)"
    )
    p.add_argument(
        "--zipf-names", type=int, default=50000, help="Zipf universe size (default 50000)"
    )
    p.add_argument(
        "--zipf-queries", type=int, default=100000, help="queries in the Zipf run (default 100000)"
    )
    p.add_argument("--zipf-s", type=float, default=1.0, help="Zipf exponent (default 1.0)")
    p.add_argument("--zipf-rate", type=int, default=5000, help="Zipf run rate, qps (default 5000)")
    p.add_argument(
        "--floor",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure py-floor on the hit workload (default yes)",
    )
    p.add_argument(
        "--only", default="hit,miss,zipf", help="workloads to run (default hit,miss,zipf)"
    )
    p.add_argument(
        "--python", default=str(default_python if default_python.exists() else sys.executable)
    )
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument(
        "--dnsdist",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure dnsdist's packet cache on the hit workloads (Debian dnsdist)",
    )
    p.add_argument(
        "--nodecache-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra nodecache flag, repeatable (e.g. --nodecache-arg=--autopath=off)",
    )
    args = p.parse_args(argv)
    args.rate = args.rate or [20000, 40000]
    args.only = set(args.only.split(","))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join(
        ["python3", "bench/nodecache_bench.py", *(sys.argv[1:] if argv is None else argv)]
    )
    for tool in (
        "taskset",
        "nsd",
        "nsd-checkconf",
        "unbound",
        "unbound-checkconf",
        "unbound-control",
        "dnsperf",
        "dig",
    ):
        if shutil.which(tool) is None:
            print(f"bench: {tool} not found", file=sys.stderr)
            return 2
    if (os.cpu_count() or 1) < 2:
        print("bench: needs two cores (servers on 0, dnsperf and NSD on 1)", file=sys.stderr)
        return 2
    (REPO / "bench" / "out").mkdir(exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="nodecache-", dir=REPO / "bench" / "out"))
    servers: dict[str, Server] = {}
    notes: list[str] = []
    try:
        log(f"work directory {workdir}")
        nsd = servers["nsd"] = start_nsd(workdir)
        run.wait_answering(nsd, f"ns1.{ZONE}", 30)
        servers["unbound"] = start_unbound(workdir, nsd.port)
        servers["nodecache"] = start_nodecache(workdir, args.python, nsd.port, args.nodecache_arg)
        measured = ["nodecache", "unbound"]
        for name in measured:
            took = run.wait_answering(servers[name], f"ns1.{ZONE}", 60)
            log(f"{name} answering on 127.0.0.1:{servers[name].port} after {took:.1f}s")

        # Warm every hit name in both, then check they answer alike.
        names = hit_names()
        hit_file = write_queries(workdir / "hit.txt", names)
        hit_servers = list(measured)
        if args.floor:
            servers["py-floor"] = start_floor(workdir, args.python, nsd.port, hit_file)
            run.wait_answering(servers["py-floor"], names[0], 60)
            hit_servers.append("py-floor")
        peers = list(measured)
        if args.dnsdist and shutil.which("dnsdist") is not None:
            servers["dnsdist"] = start_dnsdist(workdir, nsd.port)
            run.wait_answering(servers["dnsdist"], f"ns1.{ZONE}", 30)
            hit_servers.append("dnsdist")
            peers.append("dnsdist")
        elif args.dnsdist:
            log("dnsdist not found: its column stays empty (apt-get install dnsdist)")
        for name in peers:
            run.dnsperf(servers[name].port, hit_file, 2000, HIT_NAMES / 2000 + 1, False)
        problems = same_answers([servers[n] for n in measured], random.Random(3).sample(names, 20))
        problems += same_answers([servers[n] for n in measured], [f"x1.miss.{ZONE}", f"nx.{ZONE}"])
        for p in problems:
            log(f"ANSWER DIFFERENCE {p}")

        results: list[Measurement] = []
        hit_workloads = [
            Workload("hit", hit_file, False, "NOERROR", f"{HIT_NAMES} warmed names, no EDNS")
        ]
        if args.edns:
            hit_workloads.append(
                Workload("hit+edns", hit_file, True, "NOERROR", "the same with EDNS0 (dnsperf -e)")
            )
        for workload in hit_workloads if "hit" in args.only else []:
            # py-floor answers only the plain queries it prebuilt replies for (no EDNS).
            group = (
                hit_servers if not workload.edns else [n for n in hit_servers if n != "py-floor"]
            )
            for name in group:
                run.dnsperf(servers[name].port, hit_file, args.rate[0], args.warmup, workload.edns)
            for rate in args.rate:
                for repeat in range(args.repeat):
                    shift = repeat % len(group)
                    for name in group[shift:] + group[:shift]:
                        results.append(
                            run.measure(servers[name], workload, rate, args.duration, notes)
                        )

        # Misses: fresh names every run (a wildcard in NSD answers them all).
        count = int(args.miss_rate * args.miss_duration * 1.2) + 100
        for repeat in range(args.repeat if "miss" in args.only else 0):
            for name in measured:
                path = write_queries(
                    workdir / f"miss-{name}-{repeat}.txt",
                    [f"r{repeat}-{name}-{i}.miss.{ZONE}" for i in range(count)],
                )
                workload = Workload("miss", path, False, "NOERROR", "names never asked before")
                results.append(
                    run.measure(servers[name], workload, args.miss_rate, args.miss_duration, notes)
                )

        # Zipf: both cold for these names; each server's own hit counters.
        zipf = zipf_names(args.zipf_names, args.zipf_queries, args.zipf_s, seed=11)
        zipf_file = write_queries(workdir / "zipf.txt", zipf)
        distinct = len(set(zipf))
        zipf_seconds = args.zipf_queries / args.zipf_rate
        zipf_rows = []
        for name in measured if "zipf" in args.only else []:
            before = counters(servers[name])
            workload = Workload("zipf", zipf_file, False, "NOERROR", "Zipf names")
            m = run.measure(servers[name], workload, args.zipf_rate, zipf_seconds, notes)
            after = counters(servers[name])
            queries = after["queries"] - before["queries"]
            hits = after["hits"] - before["hits"]
            zipf_rows.append((name, m, queries, hits))
            results.append(m)

        facts = run.machine_facts(args.python)
        facts.append(("unbound -V", run.tool_output(["unbound", "-V"]).splitlines()[0]))
        facts.append(("nodecache tree", tree_digest()))
        lines = [
            f"## nodecache vs unbound: cache hits, misses and a Zipf workload ({dt.date.today()})",
            "",
            f"Command: `{command}`",
            "",
            *[f"- {key}: {value}" for key, value in facts],
            "",
            "CPU µs per answered query, pooled over the repeats. py-floor is not a cache: "
            "kdns.serve.udp's loop answering from a dict of prebuilt replies, the least a "
            "Python server on that loop spends (hit workload only).",
            "",
            "| workload | offered qps | nodecache µs/q | unbound µs/q | dnsdist µs/q "
            "| py-floor µs/q | nodecache/unbound | nodecache/dnsdist | py-floor/unbound |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        keys = dict.fromkeys((m.workload, m.rate) for m in results)
        for workload_name, rate in keys:
            mine = pooled(results, "nodecache", workload_name, rate)
            theirs = pooled(results, "unbound", workload_name, rate)
            floor = pooled(results, "py-floor", workload_name, rate)
            floor_cell = f"{floor:.2f}" if floor == floor else "—"
            dnsdist = pooled(results, "dnsdist", workload_name, rate)
            dnsdist_cell = f"{dnsdist:.2f}" if dnsdist == dnsdist else "—"
            lines.append(
                f"| {workload_name} | {rate} | {mine:.2f} | {theirs:.2f} | {dnsdist_cell} "
                f"| {floor_cell} | {run.fmt_ratio(mine, theirs)} | "
                f"{run.fmt_ratio(mine, dnsdist) if dnsdist == dnsdist else '—'} | "
                f"{run.fmt_ratio(floor, theirs) if floor == floor else '—'} |"
            )
        lines += [
            "",
            f"Zipf: {args.zipf_queries} queries, s={args.zipf_s:g}, over {args.zipf_names} names "
            f"({distinct} distinct asked; the best any cache can do is {1 - distinct / args.zipf_queries:.1%} hits), "
            f"{args.zipf_rate} qps, both servers cold.",
            "",
            "| server | queries counted | cache hits | hit ratio | CPU µs/q | lost |",
            "|---|---|---|---|---|---|",
        ]
        for name, m, queries, hits in zipf_rows:
            ratio = hits / queries if queries else float("nan")
            lines.append(
                f"| {name} | {queries:.0f} | {hits:.0f} | {ratio:.1%} | {m.us_per_query:.2f} | {m.perf.lost} |"
            )
        lines += [
            "",
            "Runs (each fixed-rate run):",
            "",
            "| server | workload | rate | completed | lost | µs/q | latency ms |",
            "|---|---|---|---|---|---|---|",
        ]
        for m in results:
            lines.append(
                f"| {m.server} | {m.workload} | {m.rate} | {m.perf.completed} | {m.perf.lost} | {m.us_per_query:.2f} | {m.perf.latency_ms:.3f} |"
            )
        if problems:
            lines += ["", "Answer differences:", *[f"- {p}" for p in problems]]
        if notes:
            lines += ["", "Notes:", *[f"- {n}" for n in notes]]
        lines += ["", "Server command lines:", *[f"- `{s.extra['cmd']}`" for s in servers.values()]]
        print("\n".join(lines))
        return 0
    finally:
        for server in servers.values():
            server.stop()
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
