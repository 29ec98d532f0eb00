"""ndots: what a ClusterFirst pod's search path costs, in queries and latency, with nodecache's
absorption (issue 5: autopath and local NXDOMAIN) off and on.

Method: the lab of tests/support/ndots.py (the test tests/integration/test_ndots.py runs the
same one), in a network namespace made for the run: kdns with the demo snapshot, NSD for
example.test, the host search domains corp.test and lab.test and the root zone, and nodecache
in front, asking kdns over UDP; the pod's resolv.conf as the kubelet writes it for namespace
``shop`` (ndots:5, 3 cluster search domains and H=2 host ones). Clients: one getaddrinfo client
(tests/support/gai_client.c) built against glibc and against musl (static), timing each call
in-process with CLOCK_MONOTONIC.

For every case, libc and mode a fresh nodecache is started. Then:

* **cold**: one lookup on the empty cache;
* **warm**: one lookup right after (within every TTL);
* the **warm median** of ``--repeat`` more lookups, back to back;
* the **warm latency** of the external name against the same name with a trailing dot, on one
  nodecache, interleaved (``--rounds`` rounds of ``--repeat`` lookups each);
* **late** (unless ``--no-late``): the external and nowhere names once, then again past
  nodecache's 5 s cap on cluster-zone denials, with what nodecache sent upstream while idle
  (prefetch).

Queries are UDP datagrams counted by iptables rules in the namespace: sent by the client (to
nodecache), and those that left the node (to kdns, to NSD). Everything stays inside the
namespace; every process is stopped on the way out.

Usage (root): .venv/bin/python bench/ndots.py [--repeat 50] [--rounds 10] [--no-late]

It prints a Markdown section on stdout (the tables, the targets, the command); progress goes to
stderr.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from tests.support import ndots  # noqa: E402  (the lab, shared with tests/integration/test_ndots.py)
from tests.support.ndots import CaseResult, Late  # noqa: E402

CASE_NAME = {case.id: case.name for case in ndots.CASES}
METRIC_PREFIX = "nodecache_searchpath_"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def mode(absorb: bool) -> str:
    return "on" if absorb else "off"


def main_table(results: list[CaseResult]) -> list[str]:
    lines = [
        "| case | name | libc | absorption | cold: client / kdns / NSD | cold µs |"
        " warm: client / kdns / NSD | warm median µs | answer |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        c, w = r.cold.counts, r.warm.counts
        lines.append(
            f"| {r.case.id} | `{r.case.name}` | {r.libc} | {mode(r.absorb)} |"
            f" {c.client} / {c.kdns} / {c.nsd} | {r.cold.micros[0]} |"
            f" {w.client} / {w.kdns} / {w.nsd} | {r.warm_median_us:.0f} |"
            f" {' '.join(r.cold.answer)} |"
        )
    return lines


Comparison = tuple[str, bool, dict[str, list[int]]]
"""(libc, absorption, name -> warm lookup µs) of ``Lab.compare_latency``."""


def targets(results: list[CaseResult], comparisons: list[Comparison]) -> list[str]:
    """Issue 5 part 5, for the external name with H=2, per libc; the latency ratio from the
    interleaved comparison (the per-case medians come from separate runs, minutes apart)."""
    by = {(r.case.id, r.libc, r.absorb): r for r in results}
    ratios = {(libc, absorb): ratio(micros) for libc, absorb, micros in comparisons}
    lines = [
        "| libc | absorption | client queries (target 2) | cold leaving (≤ H+3 = 5) |"
        " warm leaving (≤ 2; 0 if cached) | warm µs / trailing-dot warm µs (≤ 1.2) |",
        "|---|---|---|---|---|---|",
    ]
    for absorb in (False, True):
        for libc in ndots.LIBCS:
            external = by[("external", libc, absorb)]
            shown = ratios.get((libc, absorb))
            lines.append(
                f"| {libc} | {mode(absorb)} | {external.cold.counts.client} |"
                f" {external.cold.counts.leaving} | {external.warm.counts.leaving} |"
                f" {'-' if shown is None else f'{shown:.2f}'} |"
            )
    return lines


def ratio(micros: dict[str, list[int]]) -> float:
    name, dot = micros[CASE_NAME["external"]], micros[CASE_NAME["external-dot"]]
    return statistics.median(name) / statistics.median(dot)


def latency_table(comparisons: list[Comparison]) -> list[str]:
    external, dot = CASE_NAME["external"], CASE_NAME["external-dot"]
    lines = [
        f"| libc | absorption | `{external}` median µs | `{dot}` median µs | ratio (target ≤ 1.2) |"
        " p90 µs (name / dot) |",
        "|---|---|---|---|---|---|",
    ]
    for libc, absorb, micros in comparisons:
        a, b = micros[external], micros[dot]
        lines.append(
            f"| {libc} | {mode(absorb)} | {statistics.median(a):.0f} | {statistics.median(b):.0f} |"
            f" {ratio(micros):.2f} | {percentile(a, 90):.0f} / {percentile(b, 90):.0f} |"
        )
    return lines


def percentile(values: list[int], pct: int) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, len(ordered) * pct // 100)])


def late_table(lates: list[Late]) -> list[str]:
    lines = [
        "| absorption | case | libc | first: client / kdns / NSD |"
        " idle (background): kdns / NSD | late: client / kdns / NSD |",
        "|---|---|---|---|---|---|",
    ]
    for late in lates:
        for key, lookup in late.late.items():
            first = late.first[key].counts
            c = lookup.counts
            b = late.background
            lines.append(
                f"| {mode(late.absorb)} | {key[0]} | {key[1]} |"
                f" {first.client} / {first.kdns} / {first.nsd} | {b.kdns} / {b.nsd} |"
                f" {c.client} / {c.kdns} / {c.nsd} |"
            )
    return lines


def metrics_lines(results: list[CaseResult]) -> list[str]:
    lines = []
    for r in results:
        if r.absorb and r.metrics:
            shown = ", ".join(
                f"`{k.removeprefix(METRIC_PREFIX)}` {v:g}"
                for k, v in sorted(r.metrics.items())
                if v
            )
            lines.append(f"- {r.case.id} / {r.libc}: {shown or 'all zero'}")
    return lines


def machine() -> str:
    def version(argv: list[str]) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except OSError:
            return "?"
        return (
            (out.stdout or out.stderr).splitlines()[0].strip()
            if (out.stdout or out.stderr)
            else "?"
        )

    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--", "kdns", "nodecache"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return (
        f"{platform.node()}, {platform.machine()}, Linux {platform.release()},"
        f" Python {platform.python_version()}; {version(['ldd', '--version'])};"
        f" musl {version(['dpkg-query', '-W', '-f=${Version}', 'musl'])};"
        f" {version(['nsd', '-v'])}; commit {commit}{' (kdns/nodecache modified)' if dirty else ''}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=50, help="warm lookups for the median")
    parser.add_argument(
        "--rounds", type=int, default=10, help="interleaved rounds of the latency comparison"
    )
    parser.add_argument("--no-late", action="store_true", help="skip the late lookups")
    args = parser.parse_args()
    if not 1 <= args.repeat <= 1000:
        parser.error("--repeat: 1-1000")
    if not 1 <= args.rounds <= 100:
        parser.error("--rounds: 1-100")
    reason = ndots.missing_reason()
    if reason is not None:
        print(f"bench/ndots.py: cannot run: {reason}", file=sys.stderr)
        return 2
    started = dt.datetime.now(dt.UTC)
    with ndots.lab() as laboratory:
        modes = (False, True)
        results = ndots.run_matrix(laboratory, modes=modes, repeat=args.repeat, progress=log)
        comparisons: list[Comparison] = []
        names = [CASE_NAME["external"], CASE_NAME["external-dot"]]
        for absorb in modes:
            for libc in ndots.LIBCS:
                log(f"interleaved warm latency, {libc}, absorption {mode(absorb)}")
                micros = laboratory.compare_latency(libc, absorb, names, args.rounds, args.repeat)
                comparisons.append((libc, absorb, micros))
        lates = []
        if not args.no_late:
            cases = [ndots.CASE_BY_ID["external"], ndots.CASE_BY_ID["nowhere"]]
            for absorb in modes:
                log(f"late lookups, absorption {mode(absorb)}")
                lates.append(laboratory.run_late(cases, ndots.LIBCS, absorb))
    command = shlex.join([".venv/bin/python", "bench/ndots.py", *sys.argv[1:]])
    out = [
        f"## The ndots search path through nodecache (bench/ndots.py, {started:%Y-%m-%d})",
        "",
        f"Command (root): `{command}`. Machine: {machine()}.",
        "",
        "Queries are UDP datagrams counted in the namespace: *client* = sent by the libc to"
        " nodecache, *kdns* and *NSD* = left the node. Cold is the first lookup on a fresh"
        " nodecache, warm the one right after; the warm median is over"
        f" {args.repeat} more lookups, in-process (no program start).",
        "",
        *main_table(results),
        "",
        "### Targets (issue 5 part 5): the external name `www.example.test`, H=2",
        "",
        *targets(results, comparisons),
    ]
    out += [
        "",
        "### Warm latency: the external name vs the same name with a trailing dot",
        "",
        f"One fresh nodecache per row, both names warmed, then {args.rounds} interleaved rounds of"
        f" {args.repeat} lookups of each (the machine's noise falls on both alike).",
        "",
        *latency_table(comparisons),
    ]
    if lates:
        out += [
            "",
            f"### Late: again after {ndots.LATE_S:g} s (cluster-zone denials expired, host ones"
            " not)",
            "",
            "One fresh nodecache per mode; the rows in order (so the musl rows' first lookups"
            " find what glibc's left in the cache).",
            "",
            *late_table(lates),
        ]
    local = metrics_lines(results)
    if local:
        out += [
            "",
            "### nodecache's search-path counters after each case (absorption on)",
            "",
            f"`{METRIC_PREFIX}*` on /metrics, non-zero ones, over all of the case's lookups"
            " (cold, warm and the timed ones).",
            "",
            *local,
        ]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
