"""An ``Explanation`` as a readable table, or as JSON (``--json``): values in, text out."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from kdns.admin.explain import AS_TYPED, Explanation
from kdns.admin.lookup import QTYPES, Answered, Lookup

ASSUMED_ADDRESSES = "(outside the cluster: addresses not known offline)"
LIVE = "(live)"
"""How the server label of a live explanation ends."""


def _addresses(item: Lookup | Answered) -> str:
    if item.assumed and item.addresses:
        return ASSUMED_ADDRESSES
    return ", ".join(item.addresses)


def _result(item: Lookup) -> str:
    return _addresses(item) if item.addresses else item.error


def _ttl(ttl: int | None) -> str:
    return "-" if ttl is None else str(ttl)


def text(explanation: Explanation) -> str:
    """The table: the lookup as typed query by query, the variants' totals, the suggestions."""
    options = explanation.options
    main = explanation.main
    lines = [
        f"{explanation.libc} lookup of {explanation.name!r} through {explanation.server}",
        f"resolv.conf: search {' '.join(options.search) or '(none)'}; ndots {options.ndots}",
        f"the name has {main.name.count('.')} dot(s): " + _order(explanation),
        "",
    ]
    rows = [("#", "query", "type", "answered by", "rcode", "ttl", "answer", "left the node")]
    left_lines: dict[int, tuple[str, ...]] = {}
    number = 0
    for step in main.steps:
        for query in (step.a, step.aaaa):
            number += 1
            answer = f"CNAME {query.cname} " if query.cname else ""
            answer += _addresses(query)
            rows.append(
                (
                    str(number), query.qname, QTYPES.get(query.qtype, str(query.qtype)),
                    query.how, query.rcode, _ttl(query.ttl), answer.strip() or "-",
                    str(len(query.left)),
                )
            )  # fmt: skip
            left_lines[len(rows) - 1] = query.left
    for index, line in enumerate(_table(rows)):
        lines.append(line)
        lines.extend(f"     -> {left}" for left in _collapsed(left_lines.get(index, ())))
    lines += [
        "",
        f"the application gets: {_result(main)}",
        "",
    ]
    totals = [("lookup", "queries sent", "left the node", "to kdns", "upstream", "latency", "gets")]
    for item in explanation.lookups:
        totals.append(
            (
                item.label, str(item.queries_sent), str(item.queries_left),
                str(item.left_to("kdns")), str(item.left_to("upstream")),
                f"{item.latency_ms:.1f} ms", _result(item),
            )
        )  # fmt: skip
    lines += _table(totals)
    if explanation.suggestions:
        lines.append("")
        for suggestion in explanation.suggestions:
            found = suggestion.lookup
            sent = (
                f"the same {found.queries_sent} queries sent"
                if found.queries_sent == main.queries_sent
                else f"{found.queries_sent} queries sent instead of {main.queries_sent}"
            )
            lines.append(
                f"suggestion: {suggestion.text}: {sent}, {found.queries_left} leave the node "
                f"instead of {main.queries_left}, about {found.latency_ms:.1f} ms"
            )
    if explanation.server.endswith(LIVE):
        lines += [
            "",
            "note: live, each lookup after the first meets the server's cache as the ones "
            "before left it (warm)",
        ]
    if any(item.assumed for item in explanation.lookups) or any(
        query.assumed for step in main.steps for query in (step.a, step.aaaa)
    ):
        lines += [
            "",
            "note: offline, names outside the cluster are assumptions: under a host search "
            "domain NXDOMAIN, any other name exists (give --outside-zone FILE for real data)",
        ]
    return "\n".join(lines) + "\n"


def _collapsed(items: Sequence[str]) -> list[str]:
    """Runs of the same entry as one (``kdns (cluster group, from the metrics) x4``)."""
    out: list[str] = []
    count = 0
    for index, item in enumerate(items):
        count += 1
        if index + 1 == len(items) or items[index + 1] != item:
            out.append(item if count == 1 else f"{item} x{count}")
            count = 0
    return out


def _order(explanation: Explanation) -> str:
    main = explanation.main
    if main.name.endswith("."):
        return "a trailing dot, so only the name itself is asked"
    dots = main.name.count(".")
    ndots = explanation.options.ndots
    if dots >= ndots:
        if explanation.libc == "musl":
            return f"{dots} >= ndots {ndots}, so musl asks the name as typed and never searches"
        return f"{dots} >= ndots {ndots}, so glibc asks it as typed first, then the search list"
    return f"{dots} < ndots {ndots}, so the search list is tried first, the name as typed last"


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        out.append("  ".join(cells).rstrip())
    return out


def as_json(explanation: Explanation) -> str:
    """The same facts as a JSON document (one object)."""
    options = explanation.options
    document: dict[str, Any] = {
        "name": explanation.name,
        "libc": explanation.libc,
        "server": explanation.server,
        "resolv_conf": {
            "nameservers": list(options.nameservers),
            "search": list(options.search),
            "ndots": options.ndots,
        },
        "lookups": [_lookup(item) for item in explanation.lookups],
        "suggestions": [
            {"text": s.text, "lookup": _lookup(s.lookup)} for s in explanation.suggestions
        ],
    }
    return json.dumps(document, indent=2) + "\n"


def _lookup(item: Lookup) -> dict[str, Any]:
    return {
        "label": item.label,
        "as_typed": item.label == AS_TYPED,
        "name": item.name,
        "candidates": list(item.candidates),
        "queries": [
            {
                "qname": query.qname,
                "qtype": QTYPES.get(query.qtype, str(query.qtype)),
                "answered_by": query.how,
                "rcode": query.rcode,
                "ttl": query.ttl,
                "addresses": list(query.addresses),
                "cname": query.cname or None,
                "left_the_node": list(query.left),
                "latency_ms": round(query.latency_ms, 3),
                "assumed": query.assumed,
            }
            for step in item.steps
            for query in (step.a, step.aaaa)
        ],
        "verdicts": [step.verdict.value for step in item.steps],
        "addresses": list(item.addresses),
        "error": item.error or None,
        "assumed": item.assumed,
        "queries_sent": item.queries_sent,
        "queries_left": item.queries_left,
        "to_kdns": item.left_to("kdns"),
        "to_upstream": item.left_to("upstream"),
        "latency_ms": round(item.latency_ms, 3),
    }
