"""deploy/monitoring: the Prometheus Operator objects are well-formed, the PrometheusRule passes
``promtool check rules`` and ``promtool test rules`` (each alert fires on a failing series and
stays quiet on a healthy one), the Grafana dashboard is one the kube-prometheus-stack sidecar
loads, and every metric a rule or a panel reads is in the checked list (tests/deploy/monitoring.py).
Whether the scrape configs reach the ports the pods serve is in test_manifests.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.manifests import DEPLOY, MISSING_KUBECTL, Obj, find, find_kubectl, one, render
from tests.deploy.monitoring import METRICS, crd_problems, dashboard_exprs, family, metric_names

if find_kubectl() is None:
    pytest.skip(MISSING_KUBECTL, allow_module_level=True)

MONITORING = DEPLOY / "monitoring"
ALERTS_TEST = Path(__file__).parent / "alerts-test.yaml"
CRD_KINDS = ("ServiceMonitor", "PodMonitor", "PrometheusRule")

MIXIN_ALERTS = {
    "CoreDNSDown",
    "CoreDNSLatencyHigh",
    "CoreDNSErrorsHigh",
    "CoreDNSForwardLatencyHigh",
    "CoreDNSForwardErrorsHigh",
    "CoreDNSForwardHealthcheckFailureCount",
    "CoreDNSForwardHealthcheckBrokenCount",
}
"""The coredns-mixin's alerts (alerts/coredns.libsonnet, alerts/forward.libsonnet)."""
OWN_ALERTS = {
    "KdnsUnsynced",
    "KdnsWatchStale",
    "NodecacheDown",
    "NodecacheGuardFallbackActive",
    "NodecacheGuardDown",
    "NodecacheNodePlumbingErrors",
    "NodecacheSearchPathOverflow",
}

MISSING_PROMTOOL = (
    "promtool is not installed (Debian's prometheus package; `./dev test` installs it as root)"
)


def objects() -> list[Obj]:
    return render(MONITORING)


def rule_groups() -> list[dict[str, Any]]:
    return one(objects(), "PrometheusRule", "kdns")["spec"]["groups"]  # type: ignore[no-any-return]


def rules() -> list[dict[str, Any]]:
    return [rule for group in rule_groups() for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    data = one(objects(), "ConfigMap", "kdns-grafana-dashboard")["data"]
    (text,) = data.values()
    return json.loads(text)  # type: ignore[no-any-return]


def test_monitoring_renders_the_four_objects() -> None:
    kinds = sorted(obj["kind"] for obj in objects())
    assert kinds == ["ConfigMap", "PodMonitor", "PrometheusRule", "ServiceMonitor"]


# --------------------------------------------------------------------------------------------
# The CRD objects' structure


@pytest.mark.parametrize(
    "name", [f"{o['kind']}/{o['metadata']['name']}" for o in objects() if o["kind"] in CRD_KINDS]
)
def test_crd_objects_are_well_formed(name: str) -> None:
    kind, _, object_name = name.partition("/")
    obj = one(objects(), kind, object_name)
    assert obj["apiVersion"] == "monitoring.coreos.com/v1"
    assert crd_problems(obj) == []


def _broken(kind: str, path: list[str | int], value: Any) -> Obj:
    obj = json.loads(
        json.dumps(one(objects(), kind, "kdns" if kind != "PodMonitor" else "nodecache"))
    )
    target = obj
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return obj  # type: ignore[no-any-return]


BROKEN = [
    pytest.param(
        "ServiceMonitor", ["spec", "endpoints", 0, "prot"], "metrics", id="misspelt-field"
    ),
    pytest.param("ServiceMonitor", ["spec", "endpoints", 0, "interval"], "15 s", id="bad-interval"),
    pytest.param(
        "PodMonitor",
        ["spec", "podMetricsEndpoints", 0, "relabelings", 0, "action"],
        "kept",
        id="bad-relabel-action",
    ),
    pytest.param(
        "PodMonitor",
        ["spec", "podMetricsEndpoints", 0, "relabelings", 0, "source_labels"],
        ["x"],
        id="snake-case-field",
    ),
    pytest.param("PrometheusRule", ["spec", "groups", 0, "rules", 0, "for"], "15min", id="bad-for"),
    pytest.param(
        "PrometheusRule", ["spec", "groups", 0, "rules", 0, "labels"], {}, id="no-severity"
    ),
    pytest.param(
        "PrometheusRule", ["spec", "groups", 0, "rules", 0, "record"], "x", id="alert-and-record"
    ),
]


@pytest.mark.parametrize(("kind", "path", "value"), BROKEN)
def test_the_crd_check_catches_a_broken_object(
    kind: str, path: list[str | int], value: Any
) -> None:
    assert crd_problems(_broken(kind, path, value))


# --------------------------------------------------------------------------------------------
# promtool


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip(MISSING_PROMTOOL)
    return found


def _rule_files(tmp_path: Path) -> Path:
    """The PrometheusRule's groups as a Prometheus rule file, with the promtool test beside it
    (the test names ``rules.yaml``)."""
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups()}))
    shutil.copy(ALERTS_TEST, tmp_path / ALERTS_TEST.name)
    return tmp_path


def _promtool(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_check_rules(tmp_path: Path) -> None:
    result = _promtool(_rule_files(tmp_path), "check", "rules", "rules.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_promtool_test_rules(tmp_path: Path) -> None:
    result = _promtool(_rule_files(tmp_path), "test", "rules", ALERTS_TEST.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules_fails_on_a_broken_threshold(tmp_path: Path) -> None:
    # The promtool test must be able to fail: with CoreDNSErrorsHigh's critical threshold
    # raised past the synthetic 9 % SERVFAIL ratio, its "fires" case does.
    groups = rule_groups()
    broken = json.loads(json.dumps(groups))
    for group in broken:
        for rule in group["rules"]:
            if (
                rule.get("alert") == "CoreDNSErrorsHigh"
                and rule["labels"]["severity"] == "critical"
            ):
                rule["expr"] = rule["expr"].replace("> 0.03", "> 0.5")
    assert broken != groups
    _rule_files(tmp_path)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": broken}))
    result = _promtool(tmp_path, "test", "rules", ALERTS_TEST.name)
    assert result.returncode != 0
    assert "CoreDNSErrorsHigh fires" in result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    cases: dict[str, set[bool]] = {}
    for test in yaml.safe_load(ALERTS_TEST.read_text())["tests"]:
        for check in test["alert_rule_test"]:
            cases.setdefault(check["alertname"], set()).add(bool(check["exp_alerts"]))
    alerts = {rule["alert"] for rule in rules() if "alert" in rule}
    assert {name: cases.get(name, set()) for name in alerts} == {
        name: {True, False} for name in alerts
    }


def test_the_alerts_are_the_mixin_s_and_our_own() -> None:
    assert {rule["alert"] for rule in rules()} == MIXIN_ALERTS | OWN_ALERTS


# --------------------------------------------------------------------------------------------
# Metric names


def _queries() -> list[Any]:
    found = [
        pytest.param(rule["expr"], id=f"rule:{rule['alert']}:{rule['labels']['severity']}")
        for rule in rules()
    ]
    found += [
        pytest.param(expr, id=f"dashboard:{where}") for where, expr in dashboard_exprs(dashboard())
    ]
    return found


@pytest.mark.parametrize("expr", _queries())
def test_every_metric_used_is_in_the_checked_list(expr: str) -> None:
    names = metric_names(expr)
    assert names, f"no metric found in {expr!r}"
    unknown = sorted(name for name in names if family(name) is None)
    assert not unknown, f"not in tests/deploy/monitoring.py METRICS: {unknown}"


def test_every_listed_metric_is_used() -> None:
    # The list is what the lead checks against the real exposition: nothing unused in it.
    used = {family(name) for _, expr in _exprs() for name in metric_names(expr)}
    assert set(METRICS) == used


def _exprs() -> list[tuple[str, str]]:
    return [("rule", rule["expr"]) for rule in rules()] + list(dashboard_exprs(dashboard()))


EXTRACTED = [
    pytest.param('absent(up{job="kube-dns"} == 1)', {"up"}, id="absent"),
    pytest.param(
        'histogram_quantile(0.99, sum without (instance, pod) (rate(x_bucket{job=~"a|b"}[5m]))) > 4',
        {"x_bucket"},
        id="histogram-without",
    ),
    pytest.param(
        'sum by (job, to) (rate(a_total{rcode="SERVFAIL"}[5m])) / sum by (job, to) (rate(b_total[5m])) > 0.03',
        {"a_total", "b_total"},
        id="ratio-by",
    ),
    pytest.param(
        'sum(rate(a_total{job=~"$job"}[$__rate_interval])) or on (job) c',
        {"a_total", "c"},
        id="grafana",
    ),
    pytest.param(
        "label_values(coredns_build_info, job)", {"coredns_build_info"}, id="label-values"
    ),
    pytest.param("count by (job, version) (m) * 1e3", {"m"}, id="number"),
]


@pytest.mark.parametrize(("expr", "names"), EXTRACTED)
def test_metric_names_are_extracted(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


@pytest.mark.parametrize(
    ("series", "expected"),
    [
        pytest.param("coredns_dns_request_duration_seconds_bucket", "coredns_dns_request_duration_seconds", id="bucket"),
        pytest.param("coredns_proxy_request_duration_seconds_count", "coredns_proxy_request_duration_seconds", id="count"),
        pytest.param("kdns_synced", "kdns_synced", id="gauge"),
        pytest.param("kdns_synced_bucket", None, id="not-a-histogram"),
        pytest.param("coredns_forward_responses_total", None, id="removed-in-coredns-1.11"),
        pytest.param("kdns_internal_errors", None, id="unlisted"),
    ],
)  # fmt: skip
def test_family(series: str, expected: str | None) -> None:
    assert family(series) == expected


# --------------------------------------------------------------------------------------------
# The dashboard


def test_the_dashboard_configmap_is_what_the_grafana_sidecar_loads() -> None:
    (configmap,) = find(objects(), "ConfigMap")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    (key,) = configmap["data"]
    assert key.endswith(".json")
    # A fixed name, so an update replaces the dashboard instead of adding a copy.
    assert configmap["metadata"]["name"] == "kdns-grafana-dashboard"


def test_the_dashboard_is_well_formed() -> None:
    board = dashboard()
    assert board["uid"]
    assert board["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
    # No two panels overlap.
    cells = set()
    for panel in board["panels"]:
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, panel["title"]
                cells.add((x, y))


DASHBOARD_FAMILIES = [
    pytest.param("coredns_dns_requests_total", id="requests"),
    pytest.param("coredns_dns_responses_total", id="rcodes"),
    pytest.param("coredns_dns_request_duration_seconds", id="latency"),
    pytest.param("coredns_cache_hits_total", id="cache-hit-ratio"),
    pytest.param("coredns_proxy_request_duration_seconds", id="forward"),
    pytest.param("kdns_watch_staleness_seconds", id="kdns"),
    pytest.param("nodecache_guard_fallback_active", id="nodecache"),
]


@pytest.mark.parametrize("name", DASHBOARD_FAMILIES)
def test_the_dashboard_shows(name: str) -> None:
    used = {family(n) for _, expr in dashboard_exprs(dashboard()) for n in metric_names(expr)}
    assert name in used
