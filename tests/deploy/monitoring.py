"""deploy/monitoring as the tests see it: the metric names its alerts and dashboard may use, a
PromQL name extractor, and the Prometheus Operator CRD fields its objects may carry.

``METRICS`` is the checked list: every series a rule or a dashboard query reads must be one of
these families (a histogram's ``_bucket``/``_count``/``_sum`` count as its family). Each entry
says which program exports it, so the list can be checked against the real exposition of both
servers (and the guard).

The CRD schemas are not in the Kubernetes OpenAPI documents kubernetes-validate ships, and no
PyPI package ships them in a form we can validate against strictly, so ``CRD_FIELDS`` holds
the keys each object level may have, transcribed from the prometheus-operator v0.80 CRDs
(monitoring.coreos.com/v1), with the enums and patterns of the fields we set.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Final

COUNTER: Final = "counter"
GAUGE: Final = "gauge"
HISTOGRAM: Final = "histogram"

KDNS: Final = "kdns"
NODECACHE: Final = "nodecache"
GUARD: Final = "nodecache guard"
PROMETHEUS: Final = "Prometheus (every target)"

METRICS: Final[dict[str, tuple[str, tuple[str, ...]]]] = {
    # family: (type, exported by)
    "up": (GAUGE, (PROMETHEUS,)),
    # CoreDNS's families (issue 13 item 1), from kdns and nodecache alike.
    "coredns_build_info": (GAUGE, (KDNS, NODECACHE)),
    "coredns_panics_total": (COUNTER, (KDNS, NODECACHE)),
    "coredns_dns_requests_total": (COUNTER, (KDNS, NODECACHE)),
    "coredns_dns_responses_total": (COUNTER, (KDNS, NODECACHE)),
    "coredns_dns_request_duration_seconds": (HISTOGRAM, (KDNS, NODECACHE)),
    "coredns_dns_response_size_bytes": (HISTOGRAM, (KDNS, NODECACHE)),
    "coredns_cache_entries": (GAUGE, (KDNS, NODECACHE)),
    "coredns_cache_hits_total": (COUNTER, (KDNS, NODECACHE)),
    "coredns_cache_requests_total": (COUNTER, (KDNS, NODECACHE)),
    "coredns_cache_prefetch_total": (COUNTER, (KDNS, NODECACHE)),
    "coredns_cache_served_stale_total": (COUNTER, (KDNS, NODECACHE)),
    "coredns_cache_evictions_total": (COUNTER, (KDNS, NODECACHE)),
    "coredns_proxy_request_duration_seconds": (HISTOGRAM, (KDNS, NODECACHE)),
    "coredns_proxy_healthcheck_failures_total": (COUNTER, (KDNS, NODECACHE)),
    "coredns_forward_healthcheck_broken_total": (COUNTER, (KDNS, NODECACHE)),
    "coredns_forward_max_concurrent_rejects_total": (COUNTER, (KDNS, NODECACHE)),
    "coredns_kubernetes_dns_programming_duration_seconds": (HISTOGRAM, (KDNS,)),
    # kdns's own (kdns/cli.py's start_health today).
    "kdns_synced": (GAUGE, (KDNS,)),
    "kdns_table_records": (GAUGE, (KDNS,)),
    "kdns_watch_staleness_seconds": (GAUGE, (KDNS,)),
    # nodecache's own (nodecache/node/plumbing.py, nodecache/searchpath/service.py).
    "nodecache_node_setup_errors_total": (COUNTER, (NODECACHE,)),
    "nodecache_searchpath_autopath_answers_total": (COUNTER, (NODECACHE,)),
    "nodecache_searchpath_local_answers_total": (COUNTER, (NODECACHE,)),
    "nodecache_searchpath_overflow_total": (COUNTER, (NODECACHE,)),
    # The guard's (nodecache/node/liveness.py).
    "nodecache_guard_fallback_active": (GAUGE, (GUARD,)),
}

HISTOGRAM_SUFFIXES: Final = ("_bucket", "_count", "_sum")


def family(series: str) -> str | None:
    """The ``METRICS`` family a series name belongs to, or None."""
    if series in METRICS and METRICS[series][0] != HISTOGRAM:
        return series
    for suffix in HISTOGRAM_SUFFIXES:
        base = series.removesuffix(suffix)
        if base != series and METRICS.get(base, ("", ()))[0] == HISTOGRAM:
            return base
    return None


# -- PromQL: which metric names an expression reads ------------------------------------------

_KEYWORDS: Final = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
    | {"and", "or", "unless", "inf", "nan", "atan2"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_GRAFANA_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
_LABEL_LIST = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", re.IGNORECASE
)
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_LABEL_VALUES = re.compile(
    r"label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*(?:\{[^}]*\})?\s*(?:,\s*\w+\s*)?\)"
)
"""Grafana's ``label_values(metric, label)``: the metric is a name, the label is not."""


def metric_names(expr: str) -> set[str]:
    """Every metric name ``expr`` selects (PromQL, Grafana variables and ``label_values`` too):
    identifiers that are not functions, keywords, label names or numbers."""
    names = set(_LABEL_VALUES.findall(expr))
    text = _LABEL_VALUES.sub(" ", expr)
    text = _STRING.sub(" ", text)
    text = _GRAFANA_VARIABLE.sub(" ", text)
    text = _LABEL_LIST.sub(" ", text)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    for match in _IDENTIFIER.finditer(text):
        word = match.group()
        following = text[match.end() :].lstrip()
        if following.startswith("(") or word.lower() in _KEYWORDS:
            continue  # a function call, or an operator keyword
        if re.fullmatch(r"[eE]\d*|\d.*", word):
            continue
        names.add(word)
    return names


def dashboard_exprs(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every query of a Grafana dashboard: panel targets (nested rows too)
    and query variables."""

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            yield (
                f"variable {variable['name']}",
                query["query"] if isinstance(query, dict) else query,
            )


# -- Prometheus Operator CRDs: the keys each level may have ----------------------------------

_SELECTOR: Final = frozenset({"matchLabels", "matchExpressions"})
_SCRAPE_SPEC: Final = frozenset(
    {
        "attachMetadata",
        "bodySizeLimit",
        "fallbackScrapeProtocol",
        "jobLabel",
        "keepDroppedTargets",
        "labelLimit",
        "labelNameLengthLimit",
        "labelValueLengthLimit",
        "namespaceSelector",
        "nativeHistogramBucketLimit",
        "nativeHistogramMinBucketFactor",
        "podTargetLabels",
        "sampleLimit",
        "scrapeClass",
        "scrapeClassicHistograms",
        "scrapeProtocols",
        "selector",
        "selectorMechanism",
        "targetLimit",
    }
)
_ENDPOINT: Final = frozenset(
    {
        "authorization",
        "basicAuth",
        "bearerTokenSecret",
        "enableHttp2",
        "filterRunning",
        "followRedirects",
        "honorLabels",
        "honorTimestamps",
        "interval",
        "metricRelabelings",
        "oauth2",
        "params",
        "path",
        "port",
        "proxyUrl",
        "relabelings",
        "scheme",
        "scrapeTimeout",
        "targetPort",
        "tlsConfig",
        "trackTimestampsStaleness",
    }
)
CRD_FIELDS: Final[dict[str, frozenset[str]]] = {
    "ServiceMonitor.spec": _SCRAPE_SPEC | {"endpoints", "targetLabels"},
    "ServiceMonitor.endpoint": _ENDPOINT | {"bearerTokenFile"},
    "PodMonitor.spec": _SCRAPE_SPEC | {"podMetricsEndpoints"},
    "PodMonitor.endpoint": _ENDPOINT | {"portNumber"},
    "namespaceSelector": frozenset({"any", "matchNames"}),
    "selector": _SELECTOR,
    "relabeling": frozenset(
        {"action", "modulus", "regex", "replacement", "separator", "sourceLabels", "targetLabel"}
    ),
    "PrometheusRule.spec": frozenset({"groups"}),
    "group": frozenset(
        {"name", "interval", "rules", "limit", "partial_response_strategy", "query_offset"}
        | {"labels"}
    ),
    "rule": frozenset({"alert", "annotations", "expr", "for", "keep_firing_for", "labels"})
    | {"record"},
}
RELABEL_ACTIONS: Final = frozenset(
    {"replace", "keep", "drop", "hashmod", "labelmap", "labeldrop", "labelkeep"}
    | {"lowercase", "uppercase", "keepequal", "dropequal"}
)
DURATION: Final = re.compile(
    r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?"
    r"(([0-9]+)ms)?)$"
)
"""The CRDs' Duration pattern (intervals, scrape timeouts, ``for``)."""
SEVERITIES: Final = frozenset({"critical", "warning", "info"})
"""What kube-prometheus's Alertmanager routes and inhibits on."""


def crd_problems(obj: dict[str, Any]) -> list[str]:
    """Fields of a ServiceMonitor, PodMonitor or PrometheusRule that its CRD does not have,
    or values outside its enums and patterns; empty when it is well-formed."""
    problems: list[str] = []

    def check(where: str, value: Any, level: str) -> None:
        if not isinstance(value, dict):
            problems.append(f"{where}: expected an object, got {type(value).__name__}")
            return
        unknown = set(value) - CRD_FIELDS[level]
        if unknown:
            problems.append(f"{where}: unknown field(s) {sorted(unknown)}")

    def durations(where: str, item: dict[str, Any], *keys: str) -> None:
        for key in keys:
            if key in item and not DURATION.match(str(item[key])):
                problems.append(f"{where}.{key}: {item[key]!r} is not a duration")

    kind, spec = obj["kind"], obj.get("spec", {})
    check(f"{kind}.spec", spec, f"{kind}.spec")
    if kind in ("ServiceMonitor", "PodMonitor"):
        if "selector" not in spec:
            problems.append(f"{kind}.spec.selector: required")
        check(f"{kind}.spec.selector", spec.get("selector", {}), "selector")
        if "namespaceSelector" in spec:
            check(f"{kind}.spec.namespaceSelector", spec["namespaceSelector"], "namespaceSelector")
        key = "endpoints" if kind == "ServiceMonitor" else "podMetricsEndpoints"
        endpoints = spec.get(key, [])
        if not endpoints:
            problems.append(f"{kind}.spec.{key}: no endpoints")
        for i, endpoint in enumerate(endpoints):
            where = f"{kind}.spec.{key}[{i}]"
            check(where, endpoint, f"{kind}.endpoint")
            durations(where, endpoint, "interval", "scrapeTimeout")
            for field in ("relabelings", "metricRelabelings"):
                for j, relabel in enumerate(endpoint.get(field, [])):
                    check(f"{where}.{field}[{j}]", relabel, "relabeling")
                    action = relabel.get("action", "replace")
                    if action.lower() not in RELABEL_ACTIONS:
                        problems.append(f"{where}.{field}[{j}].action: {action!r}")
    elif kind == "PrometheusRule":
        for i, group in enumerate(spec.get("groups", [])):
            check(f"groups[{i}]", group, "group")
            for j, rule in enumerate(group.get("rules", [])):
                where = f"groups[{i}].rules[{j}]"
                check(where, rule, "rule")
                durations(where, rule, "for", "keep_firing_for")
                if ("alert" in rule) == ("record" in rule):
                    problems.append(f"{where}: exactly one of alert and record")
                if "alert" in rule and rule.get("labels", {}).get("severity") not in SEVERITIES:
                    problems.append(f"{where}: severity must be one of {sorted(SEVERITIES)}")
    else:
        problems.append(f"{kind}: not a Prometheus Operator kind this project uses")
    return problems
