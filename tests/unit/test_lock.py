"""requirements.lock (the exact environment `make` installs) agrees with pyproject.toml's
compatible ranges, and is complete: every locked package's own requirements are locked too."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "requirements.lock"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
EXTRAS = sorted(PYPROJECT["optional-dependencies"])


def locked() -> dict[str, Version]:
    """name (canonical) -> exact version, from the lock's `name==version` lines."""
    pins: dict[str, Version] = {}
    for number, line in enumerate(LOCK.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        requirement = Requirement(line)
        (spec,) = requirement.specifier  # exactly one `==` pin, nothing else
        assert spec.operator == "==" and not requirement.marker, f"line {number}: {line}"
        name = canonicalize_name(requirement.name)
        assert name not in pins, f"line {number}: {name} is pinned twice"
        pins[name] = Version(spec.version)
    return pins


def applies(requirement: Requirement, extra: str = "") -> bool:
    """Whether `requirement` applies here (its marker, for the given extra)."""
    if requirement.marker is None:
        return True
    return requirement.marker.evaluate({**default_environment(), "extra": extra})


@pytest.mark.parametrize("group", ["dependencies", *EXTRAS])
def test_every_pyproject_range_is_satisfied_by_the_lock(group):
    pins = locked()
    lines = (PYPROJECT["dependencies"] if group == "dependencies"
             else PYPROJECT["optional-dependencies"][group])
    for line in lines:
        requirement = Requirement(line)
        assert not any(spec.operator == "==" for spec in requirement.specifier), (
            f"{line}: pyproject.toml takes compatible ranges; exact pins go in the lock")
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{line} is not in requirements.lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name]}, outside pyproject's {line}")


def test_the_lock_pins_the_engines_compiler_and_the_project_is_not_in_it():
    pins = locked()
    assert pins["numba"] >= Version("0.68") and "llvmlite" in pins
    assert canonicalize_name(PYPROJECT["name"]) not in pins


def test_every_locked_package_has_its_own_requirements_locked():
    # read from the installed metadata of each locked package (`make` installed the lock)
    pins = locked()
    missing = []
    for name, version in pins.items():
        try:
            installed = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            pytest.fail(f"{name}=={version} is locked but not installed: run `make`")
        assert Version(installed.version) == version, (
            f"{name} {installed.version} is installed, the lock says {version}: run `make`")
        for line in installed.requires or []:
            requirement = Requirement(line)
            if applies(requirement) and canonicalize_name(requirement.name) not in pins:
                missing.append(f"{name} needs {line}")
    assert missing == []
