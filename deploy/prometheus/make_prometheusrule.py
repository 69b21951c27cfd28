"""Writes deploy/k8s/prometheusrule.yaml, the Prometheus operator's `PrometheusRule`, from
deploy/prometheus/hebbian-rules.yaml (`make deploy-rules`; a test fails when they differ).

The rule file stays the one source: promtool checks and unit-tests it, a plain Prometheus
loads it with `rule_files:`, and the operator gets the same groups as `spec.groups`.

Usage: ``python deploy/prometheus/make_prometheusrule.py [--check]`` (--check: exit 1 if the
checked-in file is not what would be written).
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
RULES = HERE / "hebbian-rules.yaml"
OUTPUT = HERE.parent / "k8s" / "prometheusrule.yaml"
HEADER = (
    "# GENERATED from deploy/prometheus/hebbian-rules.yaml by `make deploy-rules`: edit that\n"
    "# file, not this one. Needs the Prometheus operator's PrometheusRule CRD\n"
    "# (monitoring.coreos.com/v1), like servicemonitor.yaml.\n"
)


class _BlockDumper(yaml.SafeDumper):
    """Writes multi-line strings (PromQL expressions) as `|` blocks, as in the rule file."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _represent_str)


def render(rules_text: str) -> str:
    """The PrometheusRule manifest for the rule file's text."""
    groups = yaml.safe_load(rules_text)["groups"]
    manifest = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "hebbian"},
        "spec": {"groups": groups},
    }
    body = yaml.dump(manifest, Dumper=_BlockDumper, sort_keys=False, width=10_000,
                     allow_unicode=True)
    return HEADER + body


def main(argv: list[str]) -> int:
    """Write (or with --check, compare) deploy/k8s/prometheusrule.yaml."""
    text = render(RULES.read_text())
    if "--check" in argv:
        if OUTPUT.read_text() != text:
            print(f"{OUTPUT} differs from {RULES}: run `make deploy-rules`", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
