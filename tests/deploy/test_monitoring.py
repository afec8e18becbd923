"""The Grafana dashboard, its provisioning, and the Prometheus alert rules, checked against the metrics ferserver really exports.

PromQL is checked two ways: every metric and label an expression names must be
one a real ferserver.metrics.Metrics registry exposes, and, where Debian's
`prometheus` package put promtool on the PATH, promtool parses every expression
and runs the alert rules' unit tests (tests/deploy/alerts_test.yml).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath

import pytest
import yaml

from ferserver.config import Config

from ..conftest import ROOT
from . import exported_series

DOCKER = ROOT / "docker"
GRAFANA = DOCKER / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "fercodec.json"
ALERTS = DOCKER / "alerts.yml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(not PROMTOOL, reason="promtool not installed (apt-get install prometheus): PromQL syntax is not checked, the metric names still are")

PROMETHEUS_OWN = {"up": {"job", "instance"}}  # series Prometheus itself records per target
PROMQL_WORDS = {
    "sum", "avg", "min", "max", "count", "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset",
    "rate", "irate", "increase", "histogram_quantile", "avg_over_time", "max_over_time", "min_over_time", "sum_over_time", "topk", "bottomk",
    "quantile", "clamp_min", "clamp_max", "abs", "vector", "scalar", "label_replace", "absent", "delta", "deriv", "time",
}


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_exprs() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in _dashboard()["panels"] for t in p["targets"]]


def alert_rules() -> list[dict]:
    return [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]


def names_in(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) an expression uses; a tokenizer, not a parser, but PromQL's grammar is this regular."""
    expr = re.sub(r"\$__\w+|\$\w+", "1m", expr)              # Grafana's variables stand in ranges
    labels = set()
    for body in re.findall(r"\{([^}]*)\}", expr):              # label matchers
        labels |= set(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", body))
    for body in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr):
        labels |= {w.strip() for w in body.split(",") if w.strip()}
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"|\b(?:by|without|on|ignoring)\s*\([^)]*\)", " ", expr)
    words = set(re.findall(r"\b[a-zA-Z_:][\w:]*\b", bare))
    return {w for w in words if w not in PROMQL_WORDS}, labels


def _check_names(where: str, expr: str) -> None:
    series = exported_series() | PROMETHEUS_OWN
    metrics, labels = names_in(expr)
    assert metrics, f"{where}: no metric in {expr!r}"
    unknown = metrics - set(series)
    assert not unknown, f"{where}: {sorted(unknown)} not exported by ferserver.metrics ({expr!r})"
    allowed = set().union(*(series[m] or {"*"} for m in metrics))
    if "*" not in allowed:  # an Info's labels are only known at run time
        assert labels <= allowed, f"{where}: labels {sorted(labels - allowed)} on none of {sorted(metrics)}"


def _promtool_parses(exprs: list[tuple[str, str]], tmp_path: Path) -> None:
    """Every expression as a recording rule: `promtool check rules` parses each one."""
    rules = [{"record": f"check:expr_{i}", "expr": re.sub(r"\$__\w+", "1m", e)} for i, (_, e) in enumerate(exprs)]
    f = tmp_path / "exprs.yml"
    f.write_text(yaml.safe_dump({"groups": [{"name": "check", "rules": rules}]}))
    r = subprocess.run([PROMTOOL, "check", "rules", str(f)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


# --- the dashboard ---------------------------------------------------------------------

def test_dashboard_is_well_formed():
    d = _dashboard()
    assert d["uid"] == "fercodec" and d["panels"]
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    ds_uid = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text())["datasources"][0]["uid"]
    for p in d["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        assert p["datasource"]["uid"] == ds_uid and p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        assert all(t["datasource"]["uid"] == ds_uid for t in p["targets"])


def test_dashboard_shows_what_the_issue_asks_for():
    exprs = " ".join(e for _, e in dashboard_exprs())
    for needle in ("rate(fercodec_predictions_total",                      # faces/s
                   "histogram_quantile(0.5, sum by (le) (rate(fercodec_request_duration_seconds_bucket",
                   "histogram_quantile(0.9, sum by (le) (rate(fercodec_request_duration_seconds_bucket",
                   "histogram_quantile(0.99, sum by (le) (rate(fercodec_request_duration_seconds_bucket",
                   "fercodec_batch_size_faces_bucket",                     # batch size distribution
                   "fercodec_bitstream_bytes_sum",                         # bytes/face
                   'fercodec_requests_total{code!="OK"}',                  # errors by code
                   "fercodec_queued_faces", "fercodec_faces_shed_total"):
        assert needle in exprs, needle


def test_dashboard_queries_name_only_exported_metrics_and_labels():
    for title, expr in dashboard_exprs():
        _check_names(f"panel {title!r}", expr)


@needs_promtool
def test_dashboard_queries_parse(tmp_path):
    _promtool_parses(dashboard_exprs(), tmp_path)


def test_names_in_finds_metrics_and_labels():
    m, labels = names_in('histogram_quantile(0.99, sum by (le, stage) (rate(fercodec_stage_duration_seconds_bucket{stage!="x"}[$__rate_interval])))')
    assert m == {"fercodec_stage_duration_seconds_bucket"} and labels == {"le", "stage"}
    with pytest.raises(AssertionError, match="not exported"):
        _check_names("x", "rate(fercodec_requests[5m])")  # the counter's name without _total is not a series
    with pytest.raises(AssertionError, match="labels"):
        _check_names("x", 'sum by (stage) (rate(fercodec_requests_total[5m]))')


# --- alert rules ---------------------------------------------------------------------------

def test_alert_rules_are_complete_and_name_only_exported_metrics():
    rules = alert_rules()
    names = {r["alert"] for r in rules}
    assert {"FercodecErrorRateHigh", "FercodecLatencyP99High", "FercodecQueueSaturated"} <= names
    for r in rules:
        assert r["labels"]["severity"] in ("warning", "critical") and r["annotations"]["summary"] and r.get("for"), r["alert"]
        _check_names(f"alert {r['alert']}", r["expr"])
    by_name = {r["alert"]: r["expr"] for r in rules}
    assert "fercodec_requests_total" in by_name["FercodecErrorRateHigh"]
    assert "histogram_quantile(0.99" in by_name["FercodecLatencyP99High"]
    # The queue threshold is below the queue's bound, or it could never fire before shedding.
    threshold = float(re.search(r">\s*(\d+)", by_name["FercodecQueueSaturated"]).group(1))
    assert threshold < Config().max_queue_faces


def test_prometheus_loads_the_rules_compose_mounts():
    prom = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in compose["services"]["prometheus"]["volumes"])
    config_in_container = PurePosixPath(mounts["./prometheus.yml"])
    for rule_file in prom["rule_files"]:
        in_container = str(config_in_container.parent / rule_file)  # Prometheus resolves rule_files against its config's folder
        assert in_container in mounts.values(), f"{rule_file} is not mounted at {in_container}"
        assert (DOCKER / rule_file).is_file()


@needs_promtool
def test_promtool_checks_the_rules_and_the_config():
    for cmd in (["check", "rules", str(ALERTS)], ["check", "config", str(DOCKER / "prometheus.yml")]):
        r = subprocess.run([PROMTOOL, *cmd], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr


@needs_promtool
def test_alerts_fire_on_overload_and_stay_quiet_when_healthy():
    """promtool's unit tests: synthetic series, expected alerts with their labels and text."""
    r = subprocess.run([PROMTOOL, "test", "rules", str(Path(__file__).parent / "alerts_test.yml")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


# --- compose and Grafana provisioning -----------------------------------------------------------

def test_compose_provisions_grafana():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    g = compose["services"]["grafana"]
    image, tag = g["image"].rsplit(":", 1)
    assert image == "grafana/grafana-oss" and re.fullmatch(r"\d+\.\d+\.\d+", tag), "pin an exact Grafana release"
    assert "127.0.0.1:3000:3000" in g["ports"] and "prometheus" in g["depends_on"]  # anonymous viewers: this host only
    mounts = {}
    for v in g["volumes"]:
        host, container, *_ = v.split(":")
        assert (DOCKER / host).is_dir(), host
        mounts[container] = DOCKER / host
    # The provider's path is where compose mounts the dashboards.
    (provider,) = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "fercodec.yaml").read_text())["providers"]
    assert mounts[provider["options"]["path"]] == DASHBOARD.parent
    assert mounts["/etc/grafana/provisioning"] == GRAFANA / "provisioning"
    home = PurePosixPath(g["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert mounts[str(home.parent)] / home.name == DASHBOARD
    # The datasource URL is the compose Prometheus service.
    (ds,) = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text())["datasources"]
    assert ds["url"] == "http://prometheus:9090" and "127.0.0.1:9090:9090" in compose["services"]["prometheus"]["ports"]


def test_compose_server_metrics_are_reachable_from_prometheus():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    assert compose["services"]["server"]["environment"]["FERCODEC_METRICS_HOST"] == "0.0.0.0"
    assert "FERCODEC_METRICS_HOST=0.0.0.0" in (DOCKER / "server.Dockerfile").read_text()
