"""deploy/k8s renders, validates against the Kubernetes schemas, passes checkov, and agrees
with the server: ports, probes, data directory, config file, grace period, security."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import tomllib
from pathlib import Path

import pytest
import yaml

from service.server.app import add_serve_arguments
from service.server.config import load_config
from service.server.transport.health import LIVENESS, READINESS
from tests.deploy.tools import (
    CONFIG_TOML,
    DOCKERFILE,
    K8S,
    KUBERNETES_VERSION,
    RULES,
    checkov,
    env_of,
    kubectl,
    kubernetes_validate,
    ports_of,
    resources,
    run,
)

EXPECTED = {
    ("Namespace", "hebbian"), ("ServiceAccount", "hebbian"),
    ("StatefulSet", "hebbian"), ("Service", "hebbian"), ("Service", "hebbian-headless"),
    ("ServiceMonitor", "hebbian"), ("PrometheusRule", "hebbian"), ("NetworkPolicy", "hebbian"),
    ("PodDisruptionBudget", "hebbian"),
}
# Kinds of the Prometheus operator's CRDs: no schema in Kubernetes itself.
OPERATOR_KINDS = ("ServiceMonitor", "PrometheusRule")
# Peak RSS (VmHWM) measured for `hebbian serve`: 5 models, two concurrent streams (README).
MEASURED_PEAK_RSS = int(1.3 * 2**30)
# Time the learners get for their final snapshots after the in-flight calls' grace period.
FINAL_SNAPSHOT_BUDGET_S = 30
_MEMORY_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def memory_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity ("2Gi", "512Mi") in bytes."""
    for suffix, factor in _MEMORY_UNITS.items():
        if quantity.endswith(suffix):
            return int(float(quantity.removesuffix(suffix)) * factor)
    return int(quantity)


def only_configmap(manifests: dict) -> dict:
    (name,) = [name for kind, name in manifests if kind == "ConfigMap"]
    return manifests[("ConfigMap", name)]


def test_kustomization_renders_every_resource_in_its_namespace(manifests):
    assert set(manifests) >= EXPECTED
    assert only_configmap(manifests)["metadata"]["name"].startswith("hebbian-config-")
    assert len(manifests) == len(EXPECTED) + 1
    for (kind, name), doc in manifests.items():
        if kind != "Namespace":
            assert doc["metadata"]["namespace"] == "hebbian", (kind, name)


def test_kubernetes_validate_strict_accepts_every_builtin_resource(rendered, manifests, tmp_path):
    path = tmp_path / "rendered.yaml"
    path.write_text(rendered)
    result = run(kubernetes_validate(), "--strict", "-k", KUBERNETES_VERSION, path)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    version = ".".join(KUBERNETES_VERSION.split(".")[:2])
    passed = [line for line in lines if line.startswith("INFO") and "passed" in line]
    assert len(passed) == len(manifests) - len(OPERATOR_KINDS), result.stdout
    assert all(line.endswith(f"against version {version}") for line in passed), result.stdout
    # The ServiceMonitor and the PrometheusRule are CRDs of the Prometheus operator (their
    # fields are checked in test_servicemonitor_... and test_prometheusrule_...).
    warnings = sorted(line for line in lines if line.startswith(("WARN", "ERROR")))
    assert len(warnings) == len(OPERATOR_KINDS), result.stdout
    for kind, warning in zip(sorted(OPERATOR_KINDS), warnings, strict=True):
        assert f"kind {kind}" in warning, result.stdout


def test_servicemonitor_scrapes_the_headless_metrics_port(manifests, container):
    monitor = manifests[("ServiceMonitor", "hebbian")]
    headless = manifests[("Service", "hebbian-headless")]
    client = manifests[("Service", "hebbian")]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= headless["metadata"]["labels"].items()
    assert not selector.items() <= client["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert set(endpoint) <= {"port", "path", "scheme", "interval", "scrapeTimeout"}
    assert endpoint["path"] == "/metrics"
    service_ports = {p["name"]: p["targetPort"] for p in headless["spec"]["ports"]}
    assert service_ports[endpoint["port"]] == "metrics"
    assert "metrics" in ports_of(container)


@pytest.fixture(scope="module")
def checkov_reports(rendered, tmp_path_factory) -> dict[str, dict]:
    """checkov's JSON reports, by framework, on the rendered manifests and the Dockerfile."""
    directory = tmp_path_factory.mktemp("checkov")
    (directory / "rendered.yaml").write_text(rendered)
    (directory / "Dockerfile").write_text(DOCKERFILE.read_text())
    result = run(checkov(), "--directory", directory, "--framework", "kubernetes", "dockerfile",
                 "--output", "json", "--skip-download", timeout=300)
    assert result.returncode in (0, 1), result.stdout[-2000:] + result.stderr[-2000:]
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    return {report["check_type"]: report for report in reports}


@pytest.mark.parametrize("framework", ["kubernetes", "dockerfile"])
def test_checkov_finds_nothing_and_every_skip_has_a_reason(checkov_reports, framework):
    report = checkov_reports[framework]
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert failed == []
    assert report["summary"]["passed"] >= 50
    for check in report["results"]["skipped_checks"]:
        reason = check["check_result"].get("suppress_comment", "")
        assert len(reason) >= 40, f"{check['check_id']} is skipped without a real reason"


def test_probes_are_native_grpc_on_the_health_service_names(container):
    health_port = int(env_of(container)["HEBBIAN_HEALTH_PORT"])
    assert ports_of(container)["health"] == health_port
    for probe, service in (
        ("startupProbe", LIVENESS), ("livenessProbe", LIVENESS), ("readinessProbe", READINESS),
    ):
        assert container[probe]["grpc"] == {"port": health_port, "service": service}, probe
    # Recovery (snapshot + log replay) happens before the ports open: minutes, not seconds.
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300


def test_ports_agree_with_services_and_network_policy(manifests, container):
    env = env_of(container)
    ports = ports_of(container)
    assert ports == {
        "grpc": int(env["HEBBIAN_PORT"]),
        "metrics": int(env["HEBBIAN_METRICS_PORT"]),
        "health": int(env["HEBBIAN_HEALTH_PORT"]),
    }
    assert env["HEBBIAN_HOST"] == "0.0.0.0"
    for name in ("hebbian", "hebbian-headless"):
        for port in manifests[("Service", name)]["spec"]["ports"]:
            assert port["targetPort"] in ports, (name, port)
    assert manifests[("Service", "hebbian-headless")]["spec"]["clusterIP"] == "None"
    policy = manifests[("NetworkPolicy", "hebbian")]["spec"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"} and policy["egress"] == []
    allowed = {port["port"] for rule in policy["ingress"] for port in rule["ports"]}
    assert allowed == {"grpc", "metrics"}


def test_data_directory_is_the_volume_claim_and_only_tmp_is_also_writable(statefulset, container):
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["data"]["mountPath"] == env_of(container)["HEBBIAN_DATA_DIR"]
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    volumes = {v["name"]: v for v in statefulset["spec"]["template"]["spec"]["volumes"]}
    assert mounts["tmp"]["mountPath"] == "/tmp" and "sizeLimit" in volumes["tmp"]["emptyDir"]
    writable = {name for name, mount in mounts.items() if not mount.get("readOnly")}
    assert writable == {"data", "tmp"}


def test_restricted_security_context(manifests, statefulset, container):
    pod = statefulset["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert manifests[("ServiceAccount", "hebbian")]["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    context = container["securityContext"]
    assert context["runAsNonRoot"] is True and context["runAsUser"] >= 10000
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    labels = manifests[("Namespace", "hebbian")]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_resources_are_guaranteed_and_cover_the_measured_peak(container):
    resources = container["resources"]
    assert resources["requests"] == resources["limits"]
    assert {"cpu", "memory"} <= set(resources["limits"])
    assert memory_bytes(resources["limits"]["memory"]) >= MEASURED_PEAK_RSS


def test_grace_period_covers_pre_stop_drain_and_final_snapshot(statefulset, container):
    grace = statefulset["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = tomllib.loads(CONFIG_TOML.read_text())["grace_period"]
    assert grace >= pre_stop + drain + FINAL_SNAPSHOT_BUDGET_S


def test_pod_disruption_budget_never_blocks_a_drain(manifests, statefulset):
    budget = manifests[("PodDisruptionBudget", "hebbian")]["spec"]
    assert budget["maxUnavailable"] == 1 and "minAvailable" not in budget
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert budget["selector"]["matchLabels"].items() <= pod_labels.items()


def test_base_holds_no_secret_so_reapplying_never_replaces_the_real_one(manifests, statefulset):
    assert [key for key in manifests if key[0] == "Secret"] == []
    volumes = {v["name"]: v for v in statefulset["spec"]["template"]["spec"]["volumes"]}
    secret = volumes["secrets"]["secret"]
    assert secret["secretName"] == "hebbian-secrets"
    assert not secret.get("optional")  # the pod waits for it rather than starting without
    comments = (K8S / "kustomization.yaml").read_text()
    assert "kubectl -n hebbian create secret generic hebbian-secrets" in comments
    assert "secretGenerator" in comments


def test_an_overlay_secret_generator_feeds_the_pods_secret_volume(tmp_path):
    # the documented way: an overlay of the base with a secretGenerator for the token file
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "tokens").write_text("admin " + "a" * 32 + "\n")
    (overlay / "kustomization.yaml").write_text(
        f"namespace: hebbian\nresources:\n  - {os.path.relpath(K8S, overlay)}\n"
        "secretGenerator:\n  - name: hebbian-secrets\n    files: [tokens]\n"
    )
    result = run(kubectl(), "kustomize", overlay)
    assert result.returncode == 0, result.stderr
    rendered = resources(result.stdout)
    (secret_key,) = [key for key in rendered if key[0] == "Secret"]
    assert secret_key[1].startswith("hebbian-secrets-")  # hashed: a new value rolls the pods
    pod = rendered[("StatefulSet", "hebbian")]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["secrets"]["secret"]["secretName"] == secret_key[1]
    assert rendered[secret_key]["metadata"]["namespace"] == "hebbian"


def test_prometheusrule_is_the_rule_file_generated(manifests):
    rule = manifests[("PrometheusRule", "hebbian")]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    generator = _load_rule_generator()
    assert generator.OUTPUT.read_text() == generator.render(RULES.read_text()), (
        "deploy/k8s/prometheusrule.yaml differs from the rule file: run `make deploy-rules`"
    )


def _load_rule_generator():
    path = RULES.parent / "make_prometheusrule.py"
    spec = importlib.util.spec_from_file_location("make_prometheusrule", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_config_map_and_environment_make_a_valid_server_config(
    manifests, statefulset, container, tmp_path
):
    configmap = only_configmap(manifests)
    text = configmap["data"]["hebbian.toml"]
    assert text == CONFIG_TOML.read_text()
    volumes = {v["name"]: v for v in statefulset["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert volumes["config"]["configMap"]["name"] == configmap["metadata"]["name"]
    assert container["args"] == [f"--config={mounts['config']}/hebbian.toml"]
    document = tomllib.loads(text)
    assert document["token_file"] == f"{mounts['secrets']}/tokens"

    # The real `hebbian serve` parser and config loader, on local copies of the files.
    (tmp_path / "hebbian.toml").write_text(text)
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    args = parser.parse_args([f"--config={tmp_path / 'hebbian.toml'}"])
    tokens = tmp_path / "tokens"  # the Secret's token file, here without tokens
    tokens.write_text("")
    env = {**env_of(container), "HEBBIAN_TOKEN_FILE": str(tokens)}
    config = load_config(args, env)
    assert (config.host, config.port, config.metrics_port, config.health_port) == (
        "0.0.0.0", 50051, 9464, 8081)
    assert config.data_dir == Path("/data")
    assert config.fsync == "always"
    assert config.log_format == "json"  # for the cluster's log pipeline
    assert config.default_model in config.models
    assert config.models["default"]["input_dim"] == 16
