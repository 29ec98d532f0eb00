"""The tune report: the results as a table or JSON, and the recommendation with its reasoning.

The recommendation is arithmetic on the results, stated with its numbers:

* **Size**: under the config's TTL policy, the smallest size whose hit ratio is within
  ``KNEE_POINTS`` percentage points of that policy's best; ``cache.max_bytes`` must hold its
  peak bytes (with ``BYTES_HEADROOM``).
* **TTL policy**: another policy is suggested only if, at that size, it raises the hit ratio
  by at least ``POLICY_POINTS`` points; its cost is said too (a changed record can be served
  for up to the cap). When every logged TTL is at or below a policy's cap, a longer cap cannot
  show its effect in this log (a nodecache log's TTLs are already capped), and the report says
  so.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from nodecache.admin.tune.logs import LogRead
from nodecache.admin.tune.replay import Result
from nodecache.admin.tune.settings import CONFIG_LABEL

KNEE_POINTS: Final = 0.5
POLICY_POINTS: Final = 2.0
BYTES_HEADROOM: Final = 1.25
MIB: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Recommendation:
    max_entries: int
    max_bytes: int
    policy_label: str
    reasons: tuple[str, ...]


def _points(ratio: float) -> str:
    return f"{100 * ratio:.1f}%"


def recommend(results: Sequence[Result], log: LogRead) -> Recommendation:
    base = sorted(
        (r for r in results if r.policy_label == CONFIG_LABEL), key=lambda r: r.max_entries
    )
    best = max(r.hit_ratio for r in base)
    knee = next(r for r in base if 100 * (best - r.hit_ratio) <= KNEE_POINTS)
    max_bytes = int(knee.peak_bytes * BYTES_HEADROOM) + 1
    reasons = [
        f"cache.max_entries {knee.max_entries}: hit ratio {_points(knee.hit_ratio)}, within "
        f"{KNEE_POINTS} points of the best the config's TTL policy reaches at any size "
        f"({_points(best)}); {knee.upstream_qps:.2f} upstream queries/s",
        f"cache.max_bytes at least {max_bytes / MIB:.1f} MiB: the replay peaked at "
        f"{knee.peak_bytes / MIB:.2f} MiB ({knee.peak_entries} entries), plus "
        f"{int(100 * (BYTES_HEADROOM - 1))}% headroom",
    ]
    logged = [q.ttl for q in log.queries if q.ttl is not None and not q.cache_hit]
    longest = max(logged, default=0)
    chosen = CONFIG_LABEL
    same_size = [
        r for r in results if r.max_entries == knee.max_entries and r.policy_label != CONFIG_LABEL
    ]
    better = max(same_size, key=lambda r: r.hit_ratio, default=None)
    if better is not None and 100 * (better.hit_ratio - knee.hit_ratio) >= POLICY_POINTS:
        chosen = better.policy_label
        floor, cap = better.policy_label.split(":")
        reasons.append(
            f"TTL policy {better.policy_label}: hit ratio {_points(better.hit_ratio)} instead of "
            f"{_points(knee.hit_ratio)} and {better.upstream_qps:.2f} upstream queries/s instead "
            f"of {knee.upstream_qps:.2f}; the price: a changed record may be answered from the "
            f"cache for up to {cap} s, and every denial is kept at least {floor} s (a new "
            "Service can stay NXDOMAIN that long; the config keeps cluster denials 5 s)"
        )
    elif better is not None:
        reasons.append(
            f"keep the config's TTL policy: the best other policy ({better.policy_label}) gains "
            f"{100 * (better.hit_ratio - knee.hit_ratio):.1f} points at this size, less than "
            f"{POLICY_POINTS}, and would serve changed records for longer"
        )
    caps = sorted({r.cap_s for r in results if r.cap_s is not None})
    too_long = [cap for cap in caps if cap > longest > 0]
    if too_long:
        reasons.append(
            f"note: every logged TTL is at most {longest} s (a nodecache log's are already "
            f"capped), so caps above it ({', '.join(f'{cap} s' for cap in too_long)}) cannot "
            "show what they would buy; replay a log with the upstreams' own TTLs to judge them"
        )
    return Recommendation(knee.max_entries, max_bytes, chosen, tuple(reasons))


def table(results: Sequence[Result]) -> list[str]:
    rows = [
        ("ttl policy", "max_entries", "hit ratio", "upstream q/s", "prefetches", "stale served",
         "peak entries", "peak MiB"),
    ]  # fmt: skip
    for r in results:
        rows.append(
            (
                r.policy_label, str(r.max_entries), _points(r.hit_ratio),
                f"{r.upstream_qps:.2f}", str(r.prefetches), str(r.stale_served),
                str(r.peak_entries), f"{r.peak_bytes / MIB:.2f}",
            )
        )  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]


def summary(log: LogRead) -> str:
    text = (
        f"{log.format}: {len(log.queries)} queries over {log.span_s:.0f} s "
        f"({len(log.queries) / log.span_s:.2f}/s), "
        f"{len({(q.name, q.qtype, q.do) for q in log.queries})} distinct questions"
    )
    if log.malformed:
        text += f"; {log.malformed} malformed line(s) skipped: " + "; ".join(log.reasons)
    return text


def text(results: Sequence[Result], log: LogRead, recommendation: Recommendation) -> str:
    lines = [summary(log), "", *table(results), "", "recommendation:"]
    lines += [f"  - {reason}" for reason in recommendation.reasons]
    return "\n".join(lines) + "\n"


def as_json(
    results: Sequence[Result], log: LogRead, recommendation: Recommendation, plot: str | None
) -> str:
    document: dict[str, Any] = {
        "log": {
            "format": log.format,
            "queries": len(log.queries),
            "span_s": log.span_s,
            "lines": log.lines,
            "malformed": log.malformed,
            "malformed_examples": log.reasons,
        },
        "results": [
            {
                "ttl_policy": r.policy_label,
                "max_entries": r.max_entries,
                "hit_ratio": r.hit_ratio,
                "hits": r.hits,
                "stale_served": r.stale_served,
                "upstream_queries": r.upstream_queries,
                "upstream_qps": r.upstream_qps,
                "prefetches": r.prefetches,
                "peak_entries": r.peak_entries,
                "peak_bytes": r.peak_bytes,
            }
            for r in results
        ],
        "recommendation": {
            "max_entries": recommendation.max_entries,
            "max_bytes": recommendation.max_bytes,
            "ttl_policy": recommendation.policy_label,
            "reasons": list(recommendation.reasons),
        },
        "plot": plot,
    }
    return json.dumps(document, indent=2) + "\n"
