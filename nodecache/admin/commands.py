"""``nodecache explain`` and ``nodecache tune``: their flags and their runs, apart from the
serving commands (no listen address, no upstream: they answer from files or ask a server).

Both return an exit code: 0, or 2 with ``nodecache: error: <message naming the flag>``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Final, TextIO

from kdns.admin import command as explain_command
from kdns.admin.snapshot import ClusterDNS
from kdns.config import ZoneConfig
from kdns.names import text_to_name
from kdns.resolver.config import ResolverConfig
from kdns.source.manifests import Snapshot
from nodecache.admin.offline import OfflineNode
from nodecache.admin.tune import logs, plot, report
from nodecache.admin.tune.progress import Progress
from nodecache.admin.tune.replay import replay
from nodecache.admin.tune.settings import (
    DEFAULT_POLICIES,
    SettingsError,
    parse_sizes,
    settings,
)
from nodecache.config import ConfigError, build_config, load_file

EXIT_USAGE: Final = 2
ABSORPTION_OFF: Final = "absorption off"
ABSORPTION_ON: Final = "absorption on"
_PLACEHOLDERS: Final = {
    "listen": ["127.0.0.1:0"],
    "cluster_upstream": ["127.0.0.1:53"],
    "upstream": "none",
}
"""Settings ``build_config`` requires that tune never uses (it runs no listener)."""


class AdminError(ValueError):
    """Bad flags or inputs (the message names the flag)."""


def add_parsers(commands: Any) -> None:
    """Add ``explain`` and ``tune`` to the CLI's subcommands (an argparse subparsers action)."""
    explain = commands.add_parser(
        "explain",
        help="a pod's lookup of NAME query by query, through nodecache (offline or live)",
    )
    explain.add_argument("--manifests", action="append", metavar="PATH",
                         help="offline: the cluster snapshot kdns answers from "
                         "(repeatable)")  # fmt: skip
    explain.add_argument("--cluster-zone", action="append", metavar="ZONE",
                         help="cluster zone (repeatable; default cluster.local)")  # fmt: skip
    explain.add_argument("--absorption", choices=("on", "off"), default="on",
                         help="offline: nodecache's search-path absorption for the lookup "
                         "as typed (default on; the other is shown beside it)")  # fmt: skip
    explain_command.add_flags(explain)
    tune = commands.add_parser(
        "tune", help="replay a query log through the cache at several sizes and TTL policies"
    )
    tune.add_argument("--log", required=True, metavar="FILE",
                      help="a query log (JSON lines) or a dnsperf list "
                      "('name type' lines)")  # fmt: skip
    tune.add_argument("--sizes", metavar="N,N,...", help="cache.max_entries values to try")
    tune.add_argument("--ttl", action="append", metavar="FLOOR:CAP",
                      help="a TTL policy to try besides the config's (repeatable; default "
                      f"{' '.join(DEFAULT_POLICIES)})")  # fmt: skip
    tune.add_argument("--config", metavar="FILE",
                      help="nodecache config file: its TTL, prefetch and "
                      "serve-stale settings")  # fmt: skip
    tune.add_argument("--rate", type=float, default=logs.DEFAULT_RATE,
                      help="dnsperf lists: queries per second assumed "
                      f"(default {logs.DEFAULT_RATE:g})")  # fmt: skip
    tune.add_argument("--plot", metavar="FILE.png", help="write the hit-ratio plot here")
    tune.add_argument("--json", action="store_true", help="print JSON instead of the table")
    tune.add_argument("--progress", choices=("auto", "on", "off"), default="auto",
                      help="progress bar on stderr (auto: when stderr is a terminal and "
                      "without --json)")  # fmt: skip


def main(args: argparse.Namespace) -> int:
    try:
        if args.command == "explain":
            sys.stdout.write(run_explain(args))
        else:
            sys.stdout.write(run_tune(args, sys.stderr))
    except (AdminError, explain_command.ExplainError, SettingsError, ConfigError) as error:
        sys.stderr.write(f"nodecache: error: {error}\n")
        return EXIT_USAGE
    return 0


def run_explain(args: argparse.Namespace) -> str:
    zones = tuple(text_to_name(zone) for zone in args.cluster_zone or ["cluster.local"])
    if any(not zone for zone in zones):
        raise AdminError("--cluster-zone: empty zone")
    absorb = args.absorption == "on"

    def offline(given: explain_command.Inputs, snapshot: Snapshot) -> str:
        outside = explain_command.outside(args, given.options)
        dns = ClusterDNS(snapshot, ZoneConfig(zones=zones), outside)

        def node(absorbing: bool) -> OfflineNode:
            return OfflineNode(dns, given.options.search, absorb=absorbing, latency=given.latency)

        other = ABSORPTION_OFF if absorb else ABSORPTION_ON
        label = f"nodecache ({ABSORPTION_ON if absorb else ABSORPTION_OFF})"
        return explain_command.run(
            given, label, lambda: node(absorb), {other: lambda: node(not absorb)}, args.json
        )

    return explain_command.explain_main(args, ".".join(zones[0]), args.manifests, offline)


def resolver_config(path: str | None) -> ResolverConfig:
    """The resolver settings of a nodecache config file (or the defaults)."""
    values = dict(_PLACEHOLDERS)
    if path is not None:
        values.update(load_file(path))
        for key in ("listen", "cluster_upstream"):
            values[key] = _PLACEHOLDERS[key]
        values["upstream"] = "none"
    return build_config(values, config_file=path).resolver


def run_tune(args: argparse.Namespace, stderr: TextIO) -> str:
    if args.rate <= 0:
        raise AdminError("--rate: must be > 0")
    try:
        with Path(args.log).open(encoding="utf-8", errors="replace") as handle:
            log = logs.read(handle, rate=args.rate)
    except OSError as error:
        raise AdminError(f"--log: cannot read {args.log}: {error.strerror}") from None
    if not log.queries:
        reasons = "; ".join(log.reasons)
        detail = f" ({reasons})" if reasons else ""
        raise AdminError(f"--log: no usable queries in {args.log}{detail}")
    config = resolver_config(args.config)
    distinct = len({(q.name, q.qtype, q.do) for q in log.queries})
    sizes = parse_sizes(args.sizes, distinct)
    sweep = settings(sizes, DEFAULT_POLICIES if args.ttl is None else args.ttl, config)
    shown = args.progress == "on" or (args.progress == "auto" and not args.json and stderr.isatty())
    bar = Progress(len(log.queries) * len(sweep), stderr) if shown else None
    results = [
        replay(log, setting, config, bar.advance if bar is not None else None) for setting in sweep
    ]
    if bar is not None:
        bar.finish()
    recommendation = report.recommend(results, log)
    written = None
    if args.plot:
        title = f"{Path(args.log).name}: {len(log.queries)} queries over {log.span_s:.0f} s"
        try:
            plot.write_png(results, Path(args.plot), title)
        except plot.PlotError as error:
            raise AdminError(str(error)) from None
        written = args.plot
    if args.json:
        return report.as_json(results, log, recommendation, written)
    out = report.text(results, log, recommendation)
    if written:
        out += f"plot: {written}\n"
    return out
