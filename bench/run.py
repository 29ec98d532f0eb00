"""kdns vs NSD on the same records: server CPU per answered query and highest loss-free rate.

Method (../shared/docs/performance.md, docs/benchmarks.md): both servers are pinned to core 0,
dnsperf to core 1, loopback only. For each workload a fixed rate is offered with
``dnsperf -Q RATE -l SECONDS``; the server's CPU is utime+stime from /proc/PID/stat summed over
its process tree, read before and after, divided by the completed queries. Then short runs step
the offered rate up until more than 0.1% of queries are lost. NSD serves the zone file that
``kdns zonefile`` renders from the very same snapshot, in the same run; we report ratios.

kdns runs twice, side by side: with the optional C accelerator of the UDP loop
(kdns/serve/_fastpath.c, "kdns-c") and without it (``KDNS_NO_ACCEL=1``, the pure-Python loop,
"kdns-py"); ``--accel on|off`` runs only one of them.

Usage: python3 bench/run.py [--rate 30000 --rate 60000] [--duration 4] [--repeat 3]
                            [--services 1000] [--skip-max] [--accel both|on|off]
                            [--out docs/benchmarks.md] [--keep]

Stdlib only. Every load is bounded by dnsperf's -l; both servers are killed on the way out.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import platform
import random
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import snapshot  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVER_CORE = "0"
CLIENT_CORE = "1"
LOSS_LIMIT = 0.001  # "loss-free": at most 0.1% of sent queries lost
SECTION_START = "<!-- bench/run.py: kdns-vs-nsd start -->"
SECTION_END = "<!-- bench/run.py: kdns-vs-nsd end -->"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- processes and CPU accounting -------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 (comm) is in parentheses and may contain spaces: split after the last ')'.
    return text[text.rindex(")") + 2 :].split()


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def cpu_seconds(root: int) -> float:
    """utime + stime of the live process tree under ``root`` (all threads included)."""
    ticks = 0
    for pid in process_tree(root):
        fields = _stat_fields(pid)
        if fields is not None:
            ticks += int(fields[11]) + int(fields[12])  # stat fields 14 and 15
    return ticks / CLK_TCK


def core_times(core: str) -> tuple[float, float]:
    """(user+nice+system, steal) seconds of one CPU, from /proc/stat.

    Process time (utime+stime) of everything that ran on the core lands in the first figure;
    interrupt and softirq time (loopback delivery) does not, so it is left out of both.
    """
    for line in Path("/proc/stat").read_text().splitlines():
        fields = line.split()
        if fields[0] == f"cpu{core}":
            user, nice, system, _idle, _iowait, _irq, _softirq, steal = map(int, fields[1:9])
            return (user + nice + system) / CLK_TCK, steal / CLK_TCK
    return 0.0, 0.0


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


def run(
    cmd: list[str], timeout: float = 60, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} exited {result.returncode}:\n{result.stderr}")
    return result


def tool_output(cmd: list[str]) -> str:
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"unavailable ({error})"
    return (result.stdout + result.stderr).strip()


# --- a tiny stdlib DNS probe ------------------------------------------------------------------


def encode_query(name: str, qtype: int = 1, query_id: int = 0x1234) -> bytes:
    wire = b"".join(bytes([len(label)]) + label.encode() for label in name.strip(".").split("."))
    return (
        struct.pack(">HHHHHH", query_id, 0x0100, 1, 0, 0, 0)
        + wire
        + b"\x00"
        + struct.pack(">HH", qtype, 1)
    )


def probe(port: int, name: str, timeout: float = 0.3) -> int | None:
    """The rcode of one UDP query, or None if nothing (matching) came back."""
    query_id = random.randrange(65536)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(encode_query(name, query_id=query_id), ("127.0.0.1", port))
            reply = sock.recv(4096)
        except OSError:
            return None
    if len(reply) < 12 or struct.unpack_from(">H", reply)[0] != query_id:
        return None
    return reply[3] & 0xF


# --- servers ----------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    stderr_path: Path
    extra: dict[str, str] = field(default_factory=dict)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr_tail(self, lines: int = 40) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def ensure_alive(self) -> None:
        if not self.alive():
            raise RuntimeError(
                f"{self.name} exited with {self.proc.returncode}; stderr:\n{self.stderr_tail()}"
            )

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        try:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            # Only our own process tree, by pid.
            for pid in reversed(process_tree(self.proc.pid)):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.wait(timeout=5)


def wait_answering(server: Server, name: str, deadline_s: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        server.ensure_alive()
        if probe(server.port, name) is not None:
            return time.monotonic() - start
        time.sleep(0.1)
    raise RuntimeError(
        f"{server.name} did not answer within {deadline_s}s:\n{server.stderr_tail()}"
    )


NSD_CONF = """server:
    ip-address: 127.0.0.1
    port: {port}
    do-ip6: no
    server-count: 1
    verbosity: 0
    username: ""
    chroot: ""
    zonesdir: "{dir}"
    database: ""
    zonelistfile: "{dir}/zone.list"
    xfrdfile: "{dir}/xfrd.state"
    xfrdir: "{dir}"
    pidfile: "{dir}/nsd.pid"
    logfile: "{dir}/nsd.log"
    hide-version: yes
    minimal-responses: {minimal}
    # Debian's NSD is built with response rate limiting, on by default at 200 qps per source
    # /24 and response class; every NXDOMAIN of a zone is one class, so it would drop the
    # nxdomain workload. kdns has no RRL: turn it off for a like-for-like comparison.
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
remote-control:
    control-enable: no
zone:
    name: "{zone}"
    zonefile: "{zone}.zone"
"""


def start_nsd(workdir: Path, zone_text: str, minimal: bool) -> Server:
    nsd_dir = workdir / "nsd"
    nsd_dir.mkdir()
    (nsd_dir / f"{snapshot.ZONE}.zone").write_text(zone_text)
    port = free_port()
    conf = nsd_dir / "nsd.conf"
    conf.write_text(
        NSD_CONF.format(
            port=port, dir=nsd_dir, zone=snapshot.ZONE, minimal="yes" if minimal else "no"
        )
    )
    run(["nsd-checkconf", str(conf)])
    err = nsd_dir / "stderr"
    cmd = ["taskset", "-c", SERVER_CORE, "nsd", "-d", "-c", str(conf)]
    with err.open("wb") as stderr:
        proc = subprocess.Popen(cmd, stdout=stderr, stderr=stderr, stdin=subprocess.DEVNULL)
    return Server("nsd", port, proc, err, {"cmd": shlex.join(cmd), "conf": conf.read_text()})


# ``python -m kdns`` plus one thing: each UDP server thread writes which loop it runs (the C
# accelerator or the Python loop) to $KDNS_BENCH_LOOP_REPORT, so the report states what was
# measured. While kdns/serve/udp.py does not pick the C loop itself (it imports
# kdns.serve.accel once it does), this also makes it do so, by the same rule (accel.responder_of;
# a kdns with UDPServer.fast_path opts in explicitly).
# The benchmark needs no metrics listener; a kdns from before --metrics-listen has none anyway.
METRICS_OFF = (
    ["--metrics-listen", "none"]
    if "metrics_listen" in (REPO / "kdns" / "config.py").read_text()
    else []
)


KDNS_BOOT = """\
import os, sys
from kdns.serve import accel, udp
original_run = udp.UDPServer._run
udp_picks_loop = hasattr(udp, "accel")
def run(self):
    if hasattr(self, "fast_path"):  # the explicit opt-in (kdns.serve.accel.FastPath)
        responder = self.fast_path
    else:  # a kdns from before it: the C loop took the unwrapped Responder.answer
        responder = accel.responder_of(self.answer)
    with open(os.environ["KDNS_BENCH_LOOP_REPORT"], "a") as report:
        report.write(("c" if responder is not None else "python") + "\\n")
    if responder is not None and not udp_picks_loop:
        accel.serve(self.sock.fileno(), responder, self)
    else:
        original_run(self)
udp.UDPServer._run = run
from kdns.cli import main
sys.exit(main())
"""


@dataclass
class KdnsVariant:
    name: str
    accel: bool

    @property
    def env(self) -> dict[str, str]:
        return {"KDNS_NO_ACCEL": "" if self.accel else "1"}


VARIANTS = {"on": [KdnsVariant("kdns-c", True)], "off": [KdnsVariant("kdns-py", False)]}
VARIANTS["both"] = VARIANTS["on"] + VARIANTS["off"]


def accel_status(python: str, variant: KdnsVariant) -> tuple[bool, str]:
    """(available, reason) of kdns.serve.accel under the variant's environment."""
    env = dict(os.environ, PYTHONPATH=str(REPO), **variant.env)
    code = "from kdns.serve import accel; print(accel.available); print(accel.reason)"
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60,
                         env=env, cwd=REPO)  # fmt: skip
    if out.returncode != 0:
        return False, f"importing kdns.serve.accel failed: {out.stderr.strip()[-300:]}"
    available, reason = out.stdout.strip().split("\n", 1)
    return available == "True", reason


def start_kdns(workdir: Path, manifests: Path, python: str, variant: KdnsVariant) -> Server:
    port = free_port()
    err = workdir / f"{variant.name}.stderr"
    loops = workdir / f"{variant.name}.loops"
    cmd = ["taskset", "-c", SERVER_CORE, python, "-c", KDNS_BOOT, "serve", "--manifests",
           str(manifests), "--listen", f"127.0.0.1:{port}", "--log-level", "WARNING",
           # In-zone names only: no forwarding (nothing may leave loopback), no health port.
           "--upstream", "none", "--health-listen", "none", *METRICS_OFF]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(REPO), KDNS_BENCH_LOOP_REPORT=str(loops), **variant.env)
    with err.open("wb") as stderr:
        proc = subprocess.Popen(
            cmd, stdout=stderr, stderr=stderr, stdin=subprocess.DEVNULL, env=env, cwd=REPO
        )
    shown = [*cmd[:5], "<KDNS_BOOT: python -m kdns + UDP loop report>", *cmd[6:]]
    prefix = "KDNS_NO_ACCEL=1 " if not variant.accel else ""
    return Server(
        variant.name, port, proc, err, {"cmd": prefix + shlex.join(shown), "loops": str(loops)}
    )


def udp_loops(server: Server) -> str:
    """Which UDP loop(s) the kdns process runs, as its threads reported them."""
    try:
        kinds = Path(server.extra["loops"]).read_text().split()
    except OSError:
        return "unknown (no report)"
    return ", ".join(sorted(set(kinds))) or "unknown (no report)"


# --- answers: kdns and NSD must agree before we time them -------------------------------------


def dig(port: int, name: str, qtype: str = "A", edns: bool = False) -> dict[str, object]:
    cmd = ["dig", "@127.0.0.1", "-p", str(port), name, qtype, "+norecurse", "+tries=1",
           "+time=2", "+nocookie", "+edns=0" if edns else "+noedns"]  # fmt: skip
    out = run(cmd, timeout=10, check=False).stdout
    status = re.search(r"status: (\w+)", out)
    flags = re.search(r";; flags: ([\w ]*);", out)
    sections: dict[str, list[str]] = {}
    current = None
    for line in out.splitlines():
        head = re.match(r";; (\w+) SECTION:", line)
        if head:
            current = head.group(1)
            sections[current] = []
        elif not line.strip() or line.startswith(";"):
            if not line.strip():
                current = None
        elif current in ("ANSWER", "AUTHORITY", "ADDITIONAL"):
            fields = line.split()
            if len(fields) > 6 and fields[3] == "SOA":
                fields[6] = "SERIAL"  # time-based: kdns zonefile and kdns serve differ by seconds
            sections[current].append(" ".join(fields))
    return {
        "status": status.group(1) if status else "NO ANSWER",
        "flags": sorted(flags.group(1).split()) if flags else [],
        "opt": "OPT PSEUDOSECTION" in out,
        "answer": sorted(sections.get("ANSWER", [])),
        "authority": sorted(sections.get("AUTHORITY", [])),
        "additional": sorted(sections.get("ADDITIONAL", [])),
        "raw": out,
    }


def compare_answers(kdns: Server, nsd: Server, checks: list[tuple[str, str, bool]]) -> list[str]:
    """Differences between the two servers' answers (dig), one line each."""
    problems = []
    for name, qtype, edns in checks:
        a, b = dig(kdns.port, name, qtype, edns), dig(nsd.port, name, qtype, edns)
        what = f"{name} {qtype}{' +edns' if edns else ''}"
        if a["status"] == "NO ANSWER":
            problems.append(f"kdns did not answer {what}")
            continue
        for key in ("status", "flags", "answer", "opt"):
            if a[key] != b[key]:
                problems.append(f"{what}: {key} kdns={a[key]} nsd={b[key]}")
        if a["status"] == "NXDOMAIN" and a["authority"] != b["authority"]:
            problems.append(f"{what}: authority kdns={a['authority']} nsd={b['authority']}")
    return problems


# --- dnsperf ----------------------------------------------------------------------------------


@dataclass
class Perf:
    sent: int
    completed: int
    lost: int
    rcodes: dict[str, int]
    qps: float
    latency_ms: float
    seconds: float
    cmd: str

    @property
    def loss(self) -> float:
        return self.lost / self.sent if self.sent else 1.0


def dnsperf(port: int, datafile: Path, rate: int | None, seconds: float, edns: bool) -> Perf:
    cmd = ["taskset", "-c", CLIENT_CORE, "dnsperf", "-s", "127.0.0.1", "-p", str(port),
           "-d", str(datafile), "-l", f"{seconds:g}", "-c", "1", "-T", "1", "-t", "2",
           "-q", "200"]  # fmt: skip
    if rate:
        cmd += ["-Q", str(rate)]
    if edns:
        cmd.append("-e")
    out = run(cmd, timeout=seconds + 30).stdout

    def number(label: str, cast: type = int) -> float:
        found = re.search(rf"{label}:\s+([\d.]+)", out)
        if not found:
            raise RuntimeError(f"dnsperf output lacks {label!r}:\n{out}")
        return cast(found.group(1))

    rcodes = {}
    codes = re.search(r"Response codes:\s+(.*)", out)
    if codes:
        for code, count in re.findall(r"(\w+) (\d+) \(", codes.group(1)):
            rcodes[code] = int(count)
    return Perf(
        sent=int(number("Queries sent")),
        completed=int(number("Queries completed")),
        lost=int(number("Queries lost")),
        rcodes=rcodes,
        qps=number("Queries per second", float),
        latency_ms=number("Average Latency \\(s\\)", float) * 1000,
        seconds=number("Run time \\(s\\)", float),
        cmd=shlex.join(cmd),
    )


@dataclass
class Workload:
    name: str
    datafile: Path
    edns: bool
    rcode: str  # every answer must carry this rcode
    describe: str


@dataclass
class Measurement:
    server: str
    workload: str
    rate: int
    perf: Perf
    cpu_s: float
    other_load: float  # share of core 0 that other processes used during the run
    steal: float  # share of core 0 the hypervisor took during the run

    @property
    def us_per_query(self) -> float:
        return self.cpu_s / self.perf.completed * 1e6 if self.perf.completed else float("nan")


def check_rcodes(server: Server, workload: Workload, perf: Perf, notes: list[str]) -> None:
    wrong = {code: n for code, n in perf.rcodes.items() if code != workload.rcode}
    if wrong or perf.rcodes.get(workload.rcode, 0) != perf.completed:
        note = (
            f"{server.name} {workload.name}: expected every answer {workload.rcode}, "
            f"dnsperf saw {perf.rcodes} of {perf.completed} completed"
        )
        log("WARNING " + note)
        notes.append(note)


def measure(
    server: Server, workload: Workload, rate: int, seconds: float, notes: list[str]
) -> Measurement:
    server.ensure_alive()
    before, (busy_before, steal_before) = cpu_seconds(server.proc.pid), core_times(SERVER_CORE)
    started = time.monotonic()
    perf = dnsperf(server.port, workload.datafile, rate, seconds, workload.edns)
    elapsed = time.monotonic() - started
    after, (busy_after, steal_after) = cpu_seconds(server.proc.pid), core_times(SERVER_CORE)
    server.ensure_alive()
    check_rcodes(server, workload, perf, notes)
    other = max(0.0, (busy_after - busy_before) - (after - before)) / elapsed
    steal = (steal_after - steal_before) / elapsed
    m = Measurement(server.name, workload.name, rate, perf, after - before, other, steal)
    log(
        f"{server.name:4} {workload.name:13} {rate:>6} qps: completed {perf.completed} "
        f"lost {perf.lost} cpu {m.cpu_s:.2f}s = {m.us_per_query:.2f} us/query "
        f"(latency {perf.latency_ms:.3f} ms, core {SERVER_CORE}: other processes {other:.0%}, steal {steal:.0%})"
    )
    return m


@dataclass
class MaxResult:
    server: str
    workload: str
    best_rate: int | None  # highest offered rate with loss <= 0.1% and >= 95% of it achieved
    best_qps: float
    steps: list[tuple[int, Perf, float]]  # offered rate, dnsperf result, server CPU share
    stopped_by: str


def find_max(
    server: Server, workload: Workload, steps: list[int], seconds: float, notes: list[str]
) -> MaxResult:
    best_rate, best_qps, done, stopped = None, 0.0, [], "all steps passed"
    for rate in steps:
        server.ensure_alive()
        before, started = cpu_seconds(server.proc.pid), time.monotonic()
        perf = dnsperf(server.port, workload.datafile, rate, seconds, workload.edns)
        busy = (cpu_seconds(server.proc.pid) - before) / (time.monotonic() - started)
        check_rcodes(server, workload, perf, notes)
        done.append((rate, perf, busy))
        log(
            f"{server.name:4} {workload.name:13} max-step {rate:>6}: {perf.qps:.0f} qps, "
            f"lost {perf.lost}/{perf.sent}, server CPU {busy:.0%}"
        )
        # dnsperf keeps at most -q queries outstanding, so a saturated server mostly shows up
        # as dnsperf falling short of the offered rate, not as loss. The server's CPU share
        # says whether it (near all of its core) or the client was the bottleneck.
        bound = "server-bound" if busy > 0.9 else "client-bound"
        if perf.loss > LOSS_LIMIT:
            stopped = f"loss {perf.loss:.2%} at {rate} offered, server CPU {busy:.0%}"
            break
        if perf.qps < 0.95 * rate:
            stopped = f"{perf.qps:.0f} qps at {rate} offered, server CPU {busy:.0%}: {bound}"
            best_qps = max(best_qps, perf.qps)
            break
        best_rate, best_qps = rate, max(best_qps, perf.qps)
    server.ensure_alive()
    return MaxResult(server.name, workload.name, best_rate, best_qps, done, stopped)


# --- report -----------------------------------------------------------------------------------


def machine_facts(python: str) -> list[tuple[str, str]]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dnsperf_h = tool_output(["dnsperf", "-h"])
    version = re.search(r"Version ([\w.]+)", dnsperf_h)
    nsd_v = tool_output(["nsd", "-v"]).splitlines()
    commit = tool_output(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    diff = subprocess.run(
        ["git", "-C", str(REPO), "diff", "HEAD", "--", "kdns"], capture_output=True, timeout=10
    ).stdout
    dirty = f" + uncommitted changes under kdns/ (diff sha1 {hashlib.sha1(diff).hexdigest()[:10]})"
    untracked = tool_output(
        ["git", "-C", str(REPO), "ls-files", "--others", "--exclude-standard", "--", "kdns"]
    ).split()
    new_files = f" + untracked: {', '.join(untracked)}" if untracked else ""
    return [
        ("date", dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")),
        ("nproc", tool_output(["nproc"])),
        ("cpu", cpu),
        ("kernel", platform.release()),
        ("python3 --version", tool_output(["python3", "--version"])),
        ("kdns interpreter", tool_output([python, "--version"]) + f" ({python})"),
        ("nsd -v", nsd_v[0] if nsd_v else "unknown"),
        ("dnsperf", f"dnsperf {version.group(1)}" if version else "unknown"),
        ("kdns tree", f"{commit}{dirty if diff else ''}{new_files}"),
    ]


def fmt_ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "—"


def pooled_us(runs: list[Measurement]) -> float:
    """Total server CPU over total completed queries, in µs."""
    done = sum(r.perf.completed for r in runs)
    return sum(r.cpu_s for r in runs) / done * 1e6 if done else float("nan")


def summary_table(results: list[Measurement], servers: dict[str, Server]) -> list[str]:
    """One row per workload and rate: pooled CPU µs/query of each kdns variant and NSD."""
    kdns = [name for name in servers if name.startswith("kdns")]
    if not results or not kdns:
        return []
    pooled: dict[tuple[str, int, str], float] = {}
    groups: dict[tuple[str, int, str], list[Measurement]] = {}
    for m in results:
        groups.setdefault((m.workload, m.rate, m.server), []).append(m)
    for key, runs in groups.items():
        pooled[key] = pooled_us(runs)
    cells = [f"{k} µs/q" for k in kdns] + ["nsd µs/q"] + [f"{k}/nsd" for k in kdns]
    if "kdns-c" in kdns and "kdns-py" in kdns:
        cells.append("kdns-c/kdns-py")
    lines = [
        "### Summary: CPU µs per answered query, kdns with (kdns-c) and without (kdns-py) the "
        "C accelerator, and NSD",
        "",
        "Pooled over the repeats below. kdns-c serves UDP from the optional C loop "
        "(kdns/serve/_fastpath.c); kdns-py is the same kdns with `KDNS_NO_ACCEL=1`, the "
        "pure-Python loop. Lower is better; ratios under 1.00x beat NSD.",
        "",
        "| workload | offered qps | " + " | ".join(cells) + " |",
        "|---|---|" + "---|" * len(cells),
    ]
    for workload, rate in dict.fromkeys((m.workload, m.rate) for m in results):
        nsd = pooled.get((workload, rate, "nsd"), float("nan"))
        mine = [pooled.get((workload, rate, k), float("nan")) for k in kdns]
        row = [f"{v:.2f}" for v in mine] + [f"{nsd:.2f}"] + [fmt_ratio(v, nsd) for v in mine]
        if "kdns-c" in kdns and "kdns-py" in kdns:
            row.append(fmt_ratio(mine[kdns.index("kdns-c")], mine[kdns.index("kdns-py")]))
        lines.append(f"| {workload} | {rate} | " + " | ".join(row) + " |")
    return [*lines, ""]


def render_section(
    args: argparse.Namespace,
    command: str,
    facts: list[tuple[str, str]],
    counts: dict[str, int],
    workloads: list[Workload],
    results: list[Measurement],
    maxima: list[MaxResult],
    notes: list[str],
    problems: list[str],
    servers: dict[str, Server],
) -> str:
    lines = [
        "## kdns vs NSD (bench/run.py)",
        "",
        f"Command: `{command}`",
        "",
        "| fact | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in facts],
        "",
        f"Snapshot: {counts['namespaces']} namespaces, {counts['services']} ClusterIP Services "
        f"(one ready endpoint each), {counts['headless']} headless Services (3 endpoints each). "
        f"NSD serves the `kdns zonefile` rendering of the same snapshot "
        f"(`minimal-responses: {'yes' if args.nsd_minimal else 'no'}`, `server-count: 1`).",
        "",
        "Workloads:",
        *[f"- **{w.name}**: {w.describe}" for w in workloads],
        "",
        *summary_table(results, servers),
        "### CPU per answered query at a fixed offered rate",
        "",
        f"{args.repeat} x {args.duration:g} s per server, workload and rate (the servers in "
        f"rotating order), after a {args.warmup:g} s warm-up per server and workload. "
        "CPU = utime+stime of the server's process tree over the run / completed queries, "
        "pooled over the repeats; each run's value in parentheses. The last column is a noise "
        f"indicator: the largest share of core {SERVER_CORE} that other processes on this "
        "shared machine (and the hypervisor, as steal) took during one of those runs.",
        "",
        "| server | workload | offered qps | completed | lost | rcodes | CPU µs/query "
        f"| kdns/NSD | core {SERVER_CORE}: other procs / steal |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, int, str], list[Measurement]] = {}
    for m in results:
        groups.setdefault((m.workload, m.rate, m.server), []).append(m)
    for (workload, rate, server), runs in groups.items():
        peer = groups.get((workload, rate, "nsd"))
        ratio = ""
        if server.startswith("kdns") and peer:
            ratio = fmt_ratio(pooled_us(runs), pooled_us(peer))
            if len(runs) > 1:
                pairs = zip(runs, peer, strict=False)
                each = [fmt_ratio(a.us_per_query, b.us_per_query) for a, b in pairs]
                ratio += f" ({', '.join(each)})"
        rcodes: dict[str, int] = {}
        for r in runs:
            for code, n in r.perf.rcodes.items():
                rcodes[code] = rcodes.get(code, 0) + n
        per_run = ", ".join(f"{r.us_per_query:.1f}" for r in runs)
        lines.append(
            f"| {server} | {workload} | {rate} | {sum(r.perf.completed for r in runs)} "
            f"| {sum(r.perf.lost for r in runs)} "
            f"| {', '.join(f'{c} {n}' for c, n in sorted(rcodes.items()))} "
            f"| {pooled_us(runs):.2f} ({per_run}) | {ratio} "
            f"| {max(r.other_load for r in runs):.0%} / {max(r.steal for r in runs):.0%} |"
        )
    if maxima:
        lines += [
            "",
            "### Highest loss-free rate",
            "",
            f"Offered rates stepped up ({', '.join(str(s) for s in args.max_steps)}), "
            f"{args.max_duration:g} s each, until more than {LOSS_LIMIT:.1%} was lost or dnsperf "
            "could not reach 95% of the offered rate. dnsperf keeps at most 200 queries "
            "outstanding, so a saturated server shows up as the offered rate not being reached "
            "rather than as loss; the server's CPU share in that step says whether the server "
            "(over 90% of its core) or the single dnsperf thread was the limit.",
            "",
            "| server | workload | highest loss-free offered qps | achieved qps | stopped by |",
            "|---|---|---|---|---|",
        ]
        for r in maxima:
            lines.append(
                f"| {r.server} | {r.workload} | {r.best_rate or 'none'} | {r.best_qps:.0f} | "
                f"{r.stopped_by} |"
            )
    lines += ["", "### Answer check (dig, before and after the load)", ""]
    if problems:
        lines += [f"- {p}" for p in problems]
    else:
        lines.append("kdns and NSD gave the same rcode, flags, answer section, OPT presence and "
                     "(for NXDOMAIN) authority section for every sampled name.")  # fmt: skip
    if notes:
        lines += ["", "### Notes from this run", "", *[f"- {n}" for n in notes]]
    lines += [
        "",
        "Server command lines:",
        "",
        *[f"- `{server.extra['cmd']}`" for server in servers.values()],
        f"- dnsperf: `{results[0].perf.cmd}`" if results else "",
    ]
    return "\n".join(lines).rstrip() + "\n"


INTRO = """# Benchmarks

What is measured, and how (the method of `../shared/docs/performance.md`, in the repo as
`bench/run.py`; run it on demand, it is not a test):

- The server under test is pinned to core 0 (`taskset -c 0`) and dnsperf to core 1, over
  loopback only. Every load is bounded by `dnsperf -l SECONDS`.
- **CPU per answered query** at a fixed offered rate (`dnsperf -Q RATE`): utime+stime from
  `/proc/PID/stat`, summed over the server's process tree, read before and after the run, divided
  by the completed queries. This is the stable figure on a shared machine.
- **Highest loss-free rate**: short runs at rising offered rates until more than 0.1% is lost.
  One dnsperf thread tops out near 88k qps here, so high figures are client-bound.
- The peer, NSD, runs in the same run on the same records (the zone file `kdns zonefile`
  renders from the same snapshot). Absolute numbers drift between runs and machines; the
  kdns/NSD ratio within one run is the number to compare.
- kdns runs twice in the same run: **kdns-c** with the optional C accelerator of the UDP loop
  (`kdns/serve/_fastpath.c`, built by `pip install -e .`) and **kdns-py** with
  `KDNS_NO_ACCEL=1`, the pure-Python loop (`--accel on|off|both`, default both). Each kdns
  process reports which loop its UDP threads run, and the report says it.

Setup details that change the numbers:

- Debian's NSD is built with response rate limiting and enables it by default (200 qps per
  source /24 and response class). All NXDOMAINs of a zone share one class, so NSD silently
  drops most of an NXDOMAIN load from 127.0.0.1 and dnsperf stalls on timeouts. The benchmark
  sets `rrl-ratelimit: 0` and `rrl-whitelist-ratelimit: 0`.
- NSD runs with `minimal-responses: yes`, so its positive answers carry no NS/glue, like kdns's;
  `server-count: 1`, foreground (`nsd -d`), no chroot, `username: ""`, `database: ""`.
  `nsd -d` still forks (xfrd, main, one server); CPU is summed over that process tree.
- dnsperf 2.10: `-e` adds an OPT (payload 4096, no options), `-D` also sets DO; `-q` bounds the
  queries in flight (200 here), which is why a saturated server shows as a shortfall against
  `-Q` rather than as loss. `-l` bounds every run in time.
- Before and after the load, dig compares kdns and NSD on sampled names (rcode, flags, answer,
  OPT, NXDOMAIN authority). The SOA serial is time-based, so it is ignored in that comparison.

"""


def write_doc(path: Path, section: str) -> None:
    block = f"{SECTION_START}\n{section}{SECTION_END}\n"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(INTRO + block)
        return
    text = path.read_text()
    if SECTION_START in text and SECTION_END in text:
        head, rest = text.split(SECTION_START, 1)
        _, tail = rest.split(SECTION_END, 1)
        path.write_text(head + block.rstrip("\n") + tail)
        return
    heading = re.search(r"^## kdns vs NSD.*$", text, re.M)
    if heading:
        following = re.search(r"^## ", text[heading.end() :], re.M)
        end = heading.end() + following.start() if following else len(text)
        path.write_text(text[: heading.start()] + block + ("\n" + text[end:] if following else ""))
        return
    path.write_text(text.rstrip("\n") + "\n\n" + block)


# --- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    default_python = REPO / ".venv" / "bin" / "python"
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rate", type=int, action="append", help="fixed offered rate(s) in qps (repeatable; default 30000 and 60000)")  # fmt: skip
    p.add_argument(
        "--duration", type=float, default=4.0, help="seconds per fixed-rate run (default 4)"
    )
    p.add_argument(
        "--repeat", type=int, default=3, help="runs per server, workload and rate (default 3)"
    )
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per server and workload (default 2)")  # fmt: skip
    p.add_argument("--services", type=int, default=1000, help="ClusterIP Services in the snapshot (default 1000)")  # fmt: skip
    p.add_argument("--skip-max", action="store_true", help="skip the highest-loss-free-rate search")
    p.add_argument("--accel", choices=("both", "on", "off"), default="both",
                   help="kdns with the C accelerator (on), without it (off: KDNS_NO_ACCEL=1), or both side by side (default)")  # fmt: skip
    p.add_argument("--max-steps", default="20000,40000,60000,80000,100000", help="offered rates for the max search")  # fmt: skip
    p.add_argument("--max-duration", type=float, default=3.0, help="seconds per max-search step (default 3)")  # fmt: skip
    p.add_argument("--out", default=str(REPO / "docs" / "benchmarks.md"), help="Markdown file to write ('-' for none)")  # fmt: skip
    p.add_argument("--workdir", help="directory for the snapshot, zone, queries and logs (default: a new temp dir)")  # fmt: skip
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--python", default=str(default_python if default_python.exists() else sys.executable), help="interpreter that runs kdns")  # fmt: skip
    p.add_argument("--nsd-minimal", action=argparse.BooleanOptionalAction, default=True,
                   help="NSD minimal-responses (default yes: no NS/glue in positive answers, like kdns)")  # fmt: skip
    args = p.parse_args(argv)
    args.rate = args.rate or [30000, 60000]
    args.max_steps = [int(s) for s in args.max_steps.split(",") if s]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join(["python3", "bench/run.py", *(sys.argv[1:] if argv is None else argv)])
    for tool in ("taskset", "nsd", "nsd-checkconf", "dnsperf", "dig"):
        if shutil.which(tool) is None:
            print(f"bench: {tool} not found", file=sys.stderr)
            return 2
    if (os.cpu_count() or 1) < 2:
        print("bench: needs two cores (server on 0, dnsperf on 1)", file=sys.stderr)
        return 2
    if args.workdir:
        workdir = Path(args.workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        made_temp = False
    else:
        (REPO / "bench" / "out").mkdir(exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix="run-", dir=REPO / "bench" / "out"))
        made_temp = True
    servers: dict[str, Server] = {}
    notes: list[str] = []
    try:
        log(f"work directory {workdir}")
        manifests = workdir / "snapshot.yaml"
        counts = snapshot.write_snapshot(manifests, args.services)
        env = dict(os.environ, PYTHONPATH=str(REPO))
        zone = subprocess.run(
            [args.python, "-m", "kdns", "zonefile", "--manifests", str(manifests), "--log-level", "WARNING"],
            capture_output=True, text=True, timeout=120, env=env, cwd=REPO,
        )  # fmt: skip
        if zone.returncode != 0:
            raise RuntimeError(f"kdns zonefile exited {zone.returncode}:\n{zone.stderr}")
        (workdir / "cluster.local.zone").write_text(zone.stdout)
        log(f"snapshot {counts}; zone file {len(zone.stdout.splitlines())} lines")

        positive = snapshot.positive_names(args.services)
        nxdomain = snapshot.nxdomain_names(args.services)
        snapshot.write_queries(workdir / "positive.txt", positive)
        snapshot.write_queries(workdir / "nxdomain.txt", nxdomain)
        workloads = [
            Workload("positive", workdir / "positive.txt", False, "NOERROR",
                     f"{len(positive)} distinct `svcN.nsM.svc.cluster.local A`, no EDNS"),
            Workload("positive+edns", workdir / "positive.txt", True, "NOERROR",
                     "the same names with EDNS0 (`dnsperf -e`: OPT, payload 4096, no DO)"),
            Workload("nxdomain", workdir / "nxdomain.txt", False, "NXDOMAIN",
                     f"{len(nxdomain)} in-zone names that do not exist ({len(set(nxdomain))} "
                     "distinct), as ndots:5 search expansion makes them: "
                     "`svcN.nsM.nsX.svc.cluster.local`, "
                     "`svcN.nsM.svc.cluster.local.nsX.svc.cluster.local`, "
                     "`api.github.com.nsX.svc.cluster.local`, `…svc.cluster.local`, "
                     "`…cluster.local`; no EDNS"),
        ]  # fmt: skip

        variants = []
        for variant in VARIANTS[args.accel]:
            available, reason = accel_status(args.python, variant)
            log(f"{variant.name}: accelerator available={available} ({reason})")
            if variant.accel and not available:
                if args.accel == "on":
                    raise RuntimeError(
                        f"--accel on, but the accelerator is not available: {reason}"
                    )
                notes.append(f"kdns-c not run: the C accelerator is not available ({reason})")
                continue
            variants.append(variant)
        for variant in variants:
            servers[variant.name] = start_kdns(workdir, manifests, args.python, variant)
        servers["nsd"] = start_nsd(workdir, zone.stdout, args.nsd_minimal)
        kdns_names = [v.name for v in variants]
        for server in servers.values():
            took = wait_answering(server, positive[0], 60)
            log(f"{server.name} answering on 127.0.0.1:{server.port} after {took:.1f}s")

        rng = random.Random(7)
        checks = [(n, "A", False) for n in rng.sample(positive, 10)]
        checks += [(n, "A", True) for n in rng.sample(positive, 5)]
        checks += [(n, "A", False) for n in rng.sample(nxdomain, 10)]
        checks += [(n, "A", True) for n in rng.sample(nxdomain, 3)]
        checks += [("hl0.ns0.svc.cluster.local", "A", False),
                   ("hl0.ns0.svc.cluster.local", "SRV", False),
                   ("_http._tcp.svc1.ns1.svc.cluster.local", "SRV", False),
                   ("hl0-1.hl0.ns0.svc.cluster.local", "A", False),
                   ("svc1.ns1.svc.cluster.local", "AAAA", False),
                   ("cluster.local", "SOA", False)]  # fmt: skip
        problems = []
        for name in kdns_names:
            for p in compare_answers(servers[name], servers["nsd"], checks):
                problems.append(f"{name}: {p}")
                log(f"ANSWER DIFFERENCE {name}: {p}")
            sample = dig(servers[name].port, positive[1], "A", True)
            (workdir / f"dig-{name}-sample.txt").write_text(str(sample["raw"]))
        for name in kdns_names:
            loops = udp_loops(servers[name])
            log(f"{name} UDP loop: {loops}")
            expected = "c" if name == "kdns-c" else "python"
            if loops != expected:
                raise RuntimeError(f"{name} runs the {loops} UDP loop, not the {expected} one")
        everyone = [*kdns_names, "nsd"]

        results: list[Measurement] = []
        for workload in workloads:
            for name in everyone:
                dnsperf(
                    servers[name].port, workload.datafile, args.rate[0], args.warmup, workload.edns
                )
            for rate in args.rate:
                for repeat in range(args.repeat):
                    shift = repeat % len(everyone)
                    for name in everyone[shift:] + everyone[:shift]:
                        m = measure(servers[name], workload, rate, args.duration, notes)
                        results.append(m)

        maxima: list[MaxResult] = []
        if not args.skip_max:
            for workload in workloads:
                for name in everyone:
                    maxima.append(find_max(servers[name], workload, args.max_steps, args.max_duration, notes))  # fmt: skip

        for name in kdns_names:
            for p in compare_answers(servers[name], servers["nsd"], checks):
                if f"{name}: {p}" not in problems:
                    problems.append(f"after the load: {name}: {p}")
                    log(f"ANSWER DIFFERENCE after the load: {name}: {p}")
            kdns_err = servers[name].stderr_tail()
            if kdns_err.strip():
                notes.append(f"{name} stderr during the run: `{kdns_err.strip()[:500]}`")

        facts = machine_facts(args.python)
        for variant in variants:
            loops = udp_loops(servers[variant.name])
            facts.append(
                (f"{variant.name} UDP loop", f"{loops}: {accel_status(args.python, variant)[1]}")
            )
        section = render_section(args, command, facts, counts, workloads, results, maxima,
                                 notes, problems, servers)  # fmt: skip
        print(section)
        if args.out != "-":
            write_doc(Path(args.out), section)
            log(f"wrote {args.out}")
        return 0
    finally:
        for server in servers.values():
            server.stop()
        if made_temp and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        elif args.keep or not made_temp:
            log(f"kept {workdir}")


if __name__ == "__main__":
    sys.exit(main())
