"""Fixtures of the deploy checks: the rendered kustomization, parsed once."""

from __future__ import annotations

import pytest

from tests.deploy.tools import render_kustomization, resources


@pytest.fixture(scope="session")
def rendered() -> str:
    """`kubectl kustomize deploy/k8s` as YAML text."""
    return render_kustomization()


@pytest.fixture(scope="session")
def manifests(rendered) -> dict[tuple[str, str], dict]:
    """The rendered resources by (kind, name)."""
    return resources(rendered)


@pytest.fixture(scope="session")
def statefulset(manifests) -> dict:
    """The StatefulSet `hebbian`."""
    return manifests[("StatefulSet", "hebbian")]


@pytest.fixture(scope="session")
def container(statefulset) -> dict:
    """The server container of the StatefulSet's pod template."""
    (server,) = statefulset["spec"]["template"]["spec"]["containers"]
    return server
