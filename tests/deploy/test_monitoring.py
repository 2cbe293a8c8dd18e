"""deploy/prometheus and deploy/grafana: the scrape job finds the nmt-api Service and sends the
metrics token, and the alert rules and the dashboard query only series the app exposes (read from
serving.metrics.Metrics' own registry), with labels those series carry and endpoints the app has.
No promtool here: PromQL is checked by a small tokenizer, tested below on expressions it must reject."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from serving.main import create_app
from serving.metrics import Metrics
from serving.settings import Settings
from tests.conftest import ROOT

PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "nmt-dashboard.json"
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
    "summary": ("", "_sum", "_count", "_created"),
}
PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def app_series() -> dict[str, set[str]]:
    """Every series name the app exposes -> its label names (histogram buckets add `le`)."""
    metrics = Metrics()
    labels = {
        wrapper.describe()[0].name: set(wrapper._labelnames)
        for wrapper in vars(metrics).values()
        if isinstance(wrapper, MetricWrapperBase)
    }
    series: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        for suffix in SUFFIXES[family.type]:
            series[family.name + suffix] = labels[family.name] | ({"le"} if suffix == "_bucket" else set())
    return series


def app_endpoints() -> set[str]:
    """The values of the `endpoint` label: the app's paths, or "other" (serving/middleware.py)."""
    return set(create_app(Settings()).openapi()["paths"]) | {"other"}


def scrape_job() -> dict[str, Any]:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "nmt-api"]
    return job


def target_labels() -> set[str]:
    """The labels every scraped series gets: Prometheus' own and the job's relabelling."""
    relabelled = {rule["target_label"] for rule in scrape_job()["relabel_configs"] if "target_label" in rule}
    return {"job", "instance"} | relabelled


def selectors(expr: str) -> list[tuple[str, dict[str, tuple[str, str]]]]:
    """The series selectors of a PromQL expression: (metric, {label: (operator, value)}).
    Raises ValueError on unbalanced brackets, a selector without a metric name, or a bad matcher."""
    if expr.count("(") != expr.count(")") or expr.count("{") != expr.count("}"):
        raise ValueError(f"unbalanced brackets in {expr!r}")
    found: list[tuple[str, dict[str, tuple[str, str]]]] = []
    for match in re.finditer(r"([A-Za-z_:][\w:]*)?\s*\{([^}]*)\}", expr):
        if not match.group(1):
            raise ValueError(f"a selector without a metric name in {expr!r}")
        matchers: dict[str, tuple[str, str]] = {}
        body = match.group(2).strip()
        for part in re.finditer(r'\s*([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)', body):
            label, operator, value = part.groups()
            # two matchers on one label (status=~"5..", status!="503") are both kept
            matchers[label if label not in matchers else f"{label}#{len(matchers)}"] = (operator, value)
        if len(re.findall(r"(=~|!~|!=|=)", body)) != len(matchers):
            raise ValueError(f"a matcher PromQL would not parse in {match.group(0)!r}")
        found.append((match.group(1), matchers))
    # names without matchers: drop strings, selectors, ranges and grouping clauses, then every
    # identifier not called as a function and not a keyword is a metric name
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", bare)
    bare = GROUPING.sub(" ", bare)
    for match in re.finditer(r"(?<![\w.$])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()", bare):
        name = match.group(1)
        if name not in PROMQL_WORDS and name not in {metric for metric, _ in found}:
            found.append((name, {}))
    return found


def test_the_promql_reader_finds_what_it_must():
    expr = 'sum by (status) (rate(http_requests_total{code=~"5..", job="x"}[5m])) / on (job) up > 0.5'
    assert selectors(expr) == [
        ("http_requests_total", {"code": ("=~", "5.."), "job": ("=", "x")}),
        ("up", {}),
    ]
    assert selectors("histogram_quantile(0.95, sum by (le) (rate(a_bucket[$__rate_interval]))) > 2.5e3") == [
        ("a_bucket", {})
    ]
    for broken in ('sum(rate(a{b="c"}[5m])', '{job="x"}', "a{b=c}"):
        with pytest.raises(ValueError):
            selectors(broken)


def check_expr(expr: str, where: str, series: dict[str, set[str]], endpoints: set[str]) -> None:
    for metric, matchers in selectors(expr):
        assert metric == "up" or metric in series, f"{where}: {metric} is not a series the app exposes"
        allowed = target_labels() | series.get(metric, set())
        for key, (operator, value) in matchers.items():
            label = key.split("#")[0]
            assert label in allowed, f"{where}: {metric} has no label {label}"
            if label == "job":
                assert value == scrape_job()["job_name"], f"{where}: job {value}"
            if label == "endpoint" and not value.startswith("$"):
                paths = set(value.split("|")) if operator in ("=~", "!~") else {value}
                assert paths <= endpoints, f"{where}: no endpoint {paths - endpoints} in the app"
            if label == "status":
                assert any(re.fullmatch(value, str(code)) for code in range(100, 600)), f"{where}: {value}"


def alert_rules() -> list[dict[str, Any]]:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [rule for group in rules["groups"] for rule in group["rules"]]


def test_alert_rules_use_only_series_and_labels_the_app_exposes():
    series, endpoints = app_series(), app_endpoints()
    for rule in alert_rules():
        check_expr(rule["expr"], rule["alert"], series, endpoints)


def test_alert_rules_are_complete_prometheus_rules():
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}, rule[
            "alert"
        ]
        assert re.fullmatch(r"Nmt[A-Z]\w+", rule["alert"])
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    for rule_file in config["rule_files"]:
        assert (PROMETHEUS / rule_file).is_file(), f"prometheus.yml loads a missing {rule_file}"


def test_alert_rules_cover_the_failure_modes():
    exprs = {rule["alert"]: " ".join(rule["expr"].split()) for rule in alert_rules()}

    def some(pattern: str) -> bool:
        return any(re.search(pattern, expr) for expr in exprs.values())

    assert some(r"up\{[^}]*ready=\"true\""), "no ready replica"
    assert some(r"up\{[^}]*\} == 0"), "target down"
    assert some(r'nmt_requests_total\{[^}]*status=~"5\.\."'), "5xx ratio"
    assert some(r"histogram_quantile\(0\.95, .*nmt_request_seconds_bucket"), "p95 latency"
    assert some(r'nmt_requests_total\{[^}]*status="503"'), "queue rejections"
    assert some(r"nmt_redis_errors_total"), "Redis errors"


def test_the_scrape_job_finds_the_api_service_and_sends_the_metrics_token():
    job = scrape_job()
    assert job["authorization"]["type"] == "Bearer"
    assert job["authorization"]["credentials_file"].startswith("/")
    assert job["metrics_path"] == "/metrics" and "/metrics" in app_endpoints()
    (sd,) = job["kubernetes_sd_configs"]
    assert sd["role"] == "endpointslice"
    (keep,) = [rule for rule in job["relabel_configs"] if rule.get("action") == "keep"]
    service = yaml.safe_load((ROOT / "deploy" / "k8s" / "service.yaml").read_text())
    labels = service["metadata"]["labels"]
    meta = {
        "__meta_kubernetes_service_label_" + re.sub(r"[^\w]", "_", key): value
        for key, value in labels.items()
    }
    meta["__meta_kubernetes_endpointslice_port_name"] = service["spec"]["ports"][0]["name"]
    joined = ";".join(meta[label] for label in keep["source_labels"])  # Prometheus' default separator
    assert re.fullmatch(keep["regex"], joined), f"the job would drop the nmt-api Service ({joined})"
    # and the Redis Service, which has the same name label, is dropped
    meta["__meta_kubernetes_service_label_app_kubernetes_io_component"] = "redis"
    assert not re.fullmatch(keep["regex"], ";".join(meta[label] for label in keep["source_labels"]))


def dashboard_exprs() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            found.append((f"panel {panel['title']!r}", target["expr"]))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", variable["definition"])
            assert match, f"variable {variable['name']}: expected label_values(selector, label)"
            found.append((f"variable {variable['name']}", match.group(1)))
    return found


def test_the_dashboard_queries_only_series_the_app_exposes():
    series, endpoints = app_series(), app_endpoints()
    exprs = dashboard_exprs()
    assert len(exprs) >= 15
    for where, expr in exprs:
        check_expr(expr, where, series, endpoints)


def test_the_dashboard_shows_what_operators_need():
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
    assert dashboard["uid"] and dashboard["title"]
    for panel in panels:
        assert panel["targets"] and panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert "[5m]" not in target["expr"], f"{panel['title']}: use $__rate_interval"
    text = " ".join(" ".join(target["expr"].split()) for panel in panels for target in panel["targets"])
    assert "sum by (status) (rate(nmt_requests_total" in text  # requests/s by status
    assert "histogram_quantile(0.5, sum by (le) (rate(nmt_request_seconds_bucket" in text  # p50
    assert "histogram_quantile(0.95, sum by (le) (rate(nmt_request_seconds_bucket" in text  # p95
    assert "nmt_cache_hits_total" in text and "nmt_cache_misses_total" in text  # hit ratio
    assert "nmt_batch_sentences_bucket" in text and "nmt_batch_seconds_bucket" in text  # batching
    assert "nmt_redis_errors_total" in text
