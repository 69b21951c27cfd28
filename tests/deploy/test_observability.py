"""The Grafana dashboard and the Prometheus alert rules against a real `hebbian serve`
(started with the Kubernetes ConfigMap's config and a token file without tokens): they use only
metric names the server exports (a live /metrics scrape), promtool accepts the rules and
passes their unit tests, and a real Prometheus (Debian's package, on loopback) scrapes the
server, returns the per-model sample counter, evaluates every rule without error and
answers every dashboard query.
"""

from __future__ import annotations

import json
import time
import urllib.request

import numpy as np
import pytest
import yaml

from service.client import HebbianClient, HebbianError
from tests.deploy.prometheus_process import JOB, PrometheusProcess
from tests.deploy.promql import exported_names, metric_names
from tests.deploy.tools import (
    CONFIG_TOML,
    DASHBOARD,
    RULE_TESTS,
    RULES,
    debian_tool,
    run,
)
from tests.server_process import ServerProcess, free_port

LEARNED = 1500  # samples the fixture sends for learning
MORE = 100  # samples sent while Prometheus watches
PROMETHEUS_OWN = {"up"}  # series Prometheus makes itself, usable in alert rules
# What an operator asks the dashboard: throughput, latency percentiles, micro-batch sizes,
# queue depth, weight norms, snapshot age, log size, errors by code.
DASHBOARD_MUST_SHOW = {
    "hebbian_samples_learned_total", "grpc_server_handling_seconds_bucket",
    "hebbian_microbatch_samples_bucket", "hebbian_queue_depth_samples",
    "hebbian_layer_weight_norm", "hebbian_snapshot_last_timestamp_seconds",
    "hebbian_wal_bytes", "grpc_server_handled_total",
}
ALERTS_MUST_INCLUDE = {
    "HebbianServerDown", "HebbianNotReady", "HebbianHighErrorRatio", "HebbianSnapshotTooOld",
    "HebbianLogGrowing", "HebbianWeightsNonFinite", "HebbianRequestsRejected",
}
# Grafana variables, as the queries are sent to Prometheus.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m", "$namespace": ".*", "$job": ".*", "$pod": ".*", "$model": ".*",
}


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel or variable, PromQL) of every query on the dashboard."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [(panel["title"], target["expr"]) for panel in dashboard["panels"]
               for target in panel.get("targets", [])]
    queries += [(f"${v['name']}", v["definition"]) for v in dashboard["templating"]["list"]
                if v["type"] == "query"]
    return queries


def alert_rules() -> list[dict]:
    """Every rule of the alert rule file."""
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"]
            for rule in group["rules"]]


def grafana_to_promql(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def send(target: str, rng: np.random.Generator, samples: int) -> None:
    with HebbianClient(target, timeout=60) as client:
        client.process(rng.normal(size=(samples, 16)).astype(np.float32))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`hebbian serve` with deploy/k8s/hebbian.toml and an empty token file (the Secret
    `kubectl create secret ... --from-file=tokens=EMPTY` makes), after learned,
    inference-only and rejected requests and one snapshot."""
    workdir = tmp_path_factory.mktemp("deploy-server")
    tokens = workdir / "tokens"
    tokens.write_text("")
    server = ServerProcess(workdir, "--config", str(CONFIG_TOML), "--token-file", str(tokens),
                           "--health-port", str(free_port()))
    server.start()
    rng = np.random.default_rng(0)
    for _ in range(3):
        send(server.target, rng, LEARNED // 3)
    with HebbianClient(server.target, timeout=60) as client:
        client.process(rng.normal(size=(10, 16)).astype(np.float32), learn=False)
        with pytest.raises(HebbianError):
            client.process(np.ones((2, 3), np.float32))
        client.snapshot()
    yield server
    code = server.stop()
    assert code == 0, f"hebbian serve exited with {code}:\n{server.log_tail()}"


@pytest.fixture(scope="module")
def exported(server) -> set[str]:
    """Every series name on the server's live /metrics page."""
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        return exported_names(response.read().decode())


def test_dashboard_parses_and_answers_the_operators_questions():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["targets"] and panel["datasource"]["uid"] == "${datasource}"
    used = set().union(*(metric_names(expr) for _, expr in dashboard_queries()))
    assert used >= DASHBOARD_MUST_SHOW
    assert any("by (grpc_code" in expr for _, expr in dashboard_queries())


def test_dashboard_filters_every_server_query_by_namespace_job_and_pod():
    dashboard = json.loads(DASHBOARD.read_text())
    variables = [v["name"] for v in dashboard["templating"]["list"]]
    assert variables == ["datasource", "namespace", "job", "pod", "model"]
    for where, expr in dashboard_queries():
        if where in ("$namespace", "$job"):
            continue  # the variables that the later ones are filtered by
        for label in ("namespace", "job", "pod")[: 2 if where == "$pod" else 3]:
            selector = f'{label}=~"${label}"'
            assert expr.count(selector) == expr.count("{"), (where, label, expr)


def test_dashboard_uses_only_metrics_the_server_exports(exported):
    unknown = sorted((where, name) for where, expr in dashboard_queries()
                     for name in metric_names(expr) if name not in exported)
    assert unknown == []


def test_alert_rules_use_only_metrics_the_server_exports(exported):
    unknown = sorted((rule["alert"], name) for rule in alert_rules()
                     for name in metric_names(rule["expr"])
                     if name not in exported | PROMETHEUS_OWN)
    assert unknown == []


def test_alert_rules_cover_the_failure_modes():
    rules = alert_rules()
    assert {rule["alert"] for rule in rules} >= ALERTS_MUST_INCLUDE
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_every_alert_links_its_own_section_of_the_runbook():
    runbook = (RULES.parent / "RUNBOOK.md").read_text()
    sections = {line[3:].strip().lower() for line in runbook.splitlines()
                if line.startswith("## ")}
    for rule in alert_rules():
        url = rule["annotations"]["runbook_url"]
        page, _, anchor = url.partition("#")
        assert page.startswith("https://") and page.endswith("deploy/prometheus/RUNBOOK.md")
        assert anchor == rule["alert"].lower() and anchor in sections, rule["alert"]


def test_promtool_accepts_the_rules_and_they_pass_their_unit_tests():
    promtool = debian_tool("promtool")
    checked = run(promtool, "check", "rules", RULES)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in checked.stdout
    tested = run(promtool, "test", "rules", RULE_TESTS)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_real_prometheus_scrapes_the_server_and_evaluates_rules_and_panels(server, tmp_path):
    target = f"127.0.0.1:{server.metrics_port}"
    with PrometheusProcess(tmp_path, [target], [RULES]) as prometheus:
        counter = 'hebbian_samples_learned_total{model="default"}'

        def learned(expected):
            return lambda result: bool(result) and float(result[0]["value"][1]) == expected

        result = prometheus.wait_for(counter, learned(LEARNED))
        assert learned(LEARNED)(result), result
        assert result[0]["metric"]["job"] == JOB and result[0]["metric"]["instance"] == target
        send(server.target, np.random.default_rng(1), MORE)
        result = prometheus.wait_for(counter, learned(LEARNED + MORE))
        assert learned(LEARNED + MORE)(result), result

        (scraped,) = prometheus.api("targets")["activeTargets"]
        assert scraped["health"] == "up", scraped

        def rules_evaluated() -> list[dict]:
            groups = prometheus.api("rules")["groups"]
            return [rule for group in groups for rule in group["rules"]]

        for _ in range(60):
            rules = rules_evaluated()
            if all(not r["lastEvaluation"].startswith("0001") for r in rules):
                break
            time.sleep(0.5)
        assert {rule["name"] for rule in rules} == {rule["alert"] for rule in alert_rules()}
        for rule in rules:
            assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
        firing = [a["labels"]["alertname"] for a in prometheus.api("alerts")["alerts"]
                  if a["state"] == "firing"]
        assert firing == []

        for where, expr in dashboard_queries():
            if where.startswith("$"):
                continue  # label_values(...) is Grafana's, not PromQL
            answer = prometheus.query(grafana_to_promql(expr))
            assert answer or not metric_names(expr) & {
                "hebbian_samples_learned_total", "grpc_server_handling_seconds_bucket",
                "hebbian_snapshot_last_timestamp_seconds", "hebbian_wal_bytes",
                "hebbian_queue_depth_samples", "hebbian_layer_weight_norm", "hebbian_ready",
            }, f"{where}: no data for {expr}"
