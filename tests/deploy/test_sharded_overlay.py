"""deploy/overlays/sharded-3 (three shards behind the HAProxy router of deploy/router)
renders, validates strictly, passes checkov, and agrees with the server and the router:
ordinals, the mounted slot table, the rendered HAProxy files, ports and policies."""

from __future__ import annotations

import argparse
import json
import re

import pytest
import yaml

from service.server.app import add_serve_arguments
from service.server.config import load_config
from service.sharding.haproxy import MAP_FILE, render_config, render_map
from service.sharding.slot_table import SlotTable
from tests.deploy.tools import (
    DEPLOY,
    KUBERNETES_VERSION,
    checkov,
    env_of,
    kubectl,
    kubernetes_validate,
    ports_of,
    resources,
    run,
)
from tests.sharding.haproxy_process import check_config

OVERLAY = DEPLOY / "overlays" / "sharded-3"
SHARDS = 3
OPERATOR_KINDS = ("ServiceMonitor", "PrometheusRule")
HEADLESS_SERVER = "hebbian-{shard}.hebbian-headless.hebbian.svc.cluster.local:50051"


@pytest.fixture(scope="module")
def rendered() -> str:
    result = run(kubectl(), "kustomize", OVERLAY)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def manifests(rendered) -> dict:
    return resources(rendered)


@pytest.fixture(scope="module")
def server(manifests) -> dict:
    (container,) = manifests[("StatefulSet", "hebbian")]["spec"]["template"]["spec"]["containers"]
    return container


@pytest.fixture(scope="module")
def router(manifests) -> dict:
    return manifests[("Deployment", "hebbian-router")]


def _configmap(manifests: dict, prefix: str) -> dict:
    (key,) = [k for k in manifests if k[0] == "ConfigMap" and k[1].startswith(prefix)]
    return manifests[key]


def test_overlay_adds_the_router_and_the_slot_table_to_the_base(manifests):
    assert {("Deployment", "hebbian-router"), ("NetworkPolicy", "hebbian-router"),
            ("PodDisruptionBudget", "hebbian-router"),
            ("ConfigMap", "hebbian-slot-table")} <= set(manifests)
    assert _configmap(manifests, "hebbian-router-")["metadata"]["name"] != "hebbian-router"
    for (kind, name), doc in manifests.items():
        if kind != "Namespace":
            assert doc["metadata"]["namespace"] == "hebbian", (kind, name)


def test_kubernetes_validate_strict_accepts_the_overlay(rendered, manifests, tmp_path):
    path = tmp_path / "rendered.yaml"
    path.write_text(rendered)
    result = run(kubernetes_validate(), "--strict", "-k", KUBERNETES_VERSION, path)
    assert result.returncode == 0, result.stdout + result.stderr
    passed = [line for line in result.stdout.splitlines() if "passed" in line]
    assert len(passed) == len(manifests) - len(OPERATOR_KINDS), result.stdout


def test_checkov_finds_nothing_in_the_overlay(rendered, tmp_path):
    (tmp_path / "rendered.yaml").write_text(rendered)
    result = run(checkov(), "--directory", tmp_path, "--framework", "kubernetes",
                 "--output", "json", "--skip-download", timeout=300)
    assert result.returncode in (0, 1), result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads(result.stdout)
    report = report[0] if isinstance(report, list) else report
    assert [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]] == []
    for check in report["results"]["skipped_checks"]:
        assert len(check["check_result"].get("suppress_comment", "")) >= 40, check["check_id"]


def test_each_pod_is_the_shard_of_its_ordinal_and_reads_the_mounted_table(
    manifests, server, tmp_path
):
    statefulset = manifests[("StatefulSet", "hebbian")]
    assert statefulset["spec"]["replicas"] == SHARDS
    env = {e["name"]: e for e in server["env"]}
    assert env["HOSTNAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    table_path = env["HEBBIAN_SLOT_TABLE"]["value"]
    mounts = {m["name"]: m for m in server["volumeMounts"]}
    assert table_path.startswith(mounts["slot-table"]["mountPath"] + "/")
    volumes = {v["name"]: v for v in statefulset["spec"]["template"]["spec"]["volumes"]}
    # a fixed name: an edit updates the mounted file in place and the shards reload it
    assert volumes["slot-table"]["configMap"]["name"] == "hebbian-slot-table"
    text = manifests[("ConfigMap", "hebbian-slot-table")]["data"][table_path.rsplit("/")[-1]]
    table = SlotTable.parse(text)
    assert table.shards() == list(range(SHARDS))

    # the real config loader, on local copies, as pod hebbian-2 sees them
    config_text = _configmap(manifests, "hebbian-config-")["data"]["hebbian.toml"]
    (tmp_path / "hebbian.toml").write_text(config_text)
    (tmp_path / "slots.yaml").write_text(text)
    (tmp_path / "tokens").write_text("")
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    args = parser.parse_args([f"--config={tmp_path / 'hebbian.toml'}"])
    env = {**env_of(server), "HEBBIAN_SLOT_TABLE": str(tmp_path / "slots.yaml"),
           "HOSTNAME": "hebbian-2", "HEBBIAN_TOKEN_FILE": str(tmp_path / "tokens")}
    config = load_config(args, env)
    assert config.shard == 2 and config.slot_table == tmp_path / "slots.yaml"


def test_router_files_are_the_ones_rendered_from_the_table(manifests):
    files = _configmap(manifests, "hebbian-router-")["data"]
    table = SlotTable.parse(manifests[("ConfigMap", "hebbian-slot-table")]["data"][
        "slot-table.yaml"])
    assert files["slots.map"] == render_map(table), (
        "slots.map differs from the slot table: run the command in the overlay's "
        "kustomization.yaml")
    servers = {shard: HEADLESS_SERVER.format(shard=shard) for shard in range(SHARDS)}
    expected = render_config(servers, dns=True, stats_bind=":8404", map_file=MAP_FILE)
    assert files["haproxy.cfg"] == expected, "haproxy.cfg differs: render it again"


def test_haproxy_accepts_the_shipped_config(manifests, tmp_path):
    files = _configmap(manifests, "hebbian-router-")["data"]
    (tmp_path / "slots.map").write_text(files["slots.map"])
    local = files["haproxy.cfg"].replace(MAP_FILE, str(tmp_path / "slots.map"))
    (tmp_path / "haproxy.cfg").write_text(local)
    checked = check_config(tmp_path / "haproxy.cfg")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_clients_reach_the_router_and_the_router_reaches_the_shards(manifests, router):
    pod = router["spec"]["template"]
    (haproxy,) = pod["spec"]["containers"]
    config = _configmap(manifests, "hebbian-router-")
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == config["metadata"]["name"]
    mounts = {m["name"]: m["mountPath"] for m in haproxy["volumeMounts"]}
    assert MAP_FILE.startswith(mounts["config"] + "/")
    cfg = config["data"]["haproxy.cfg"]
    ports = ports_of(haproxy)
    assert re.search(rf"bind :{ports['grpc']} proto h2", cfg)
    assert f"bind :{ports['health']}" in cfg
    assert haproxy["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}

    client = manifests[("Service", "hebbian")]["spec"]
    assert client["selector"].items() <= pod["metadata"]["labels"].items()
    assert {p["targetPort"] for p in client["ports"]} <= set(ports)
    # the shards' policy admits the API from the router's pods
    labels = pod["metadata"]["labels"]
    shards_policy = manifests[("NetworkPolicy", "hebbian")]["spec"]
    api_rule = next(r for r in shards_policy["ingress"] if r["ports"][0]["port"] == "grpc")
    assert any(peer["podSelector"]["matchLabels"].items() <= labels.items()
               for peer in api_rule["from"])
    egress = manifests[("NetworkPolicy", "hebbian-router")]["spec"]["egress"]
    server_labels = manifests[("StatefulSet", "hebbian")]["spec"]["template"]["metadata"][
        "labels"]
    assert any(peer.get("podSelector", {}).get("matchLabels", {}).items()
               <= server_labels.items() and rule["ports"] == [{"port": 50051, "protocol": "TCP"}]
               for rule in egress for peer in rule["to"])


def test_overlay_comment_names_the_render_command_that_made_its_files():
    comment = (OVERLAY / "kustomization.yaml").read_text()
    assert "hebbian shards render-haproxy --slot-table slot-table.yaml --out . --dns" in comment
    assert yaml.safe_load(comment)["namespace"] == "hebbian"
