"""deploy/Dockerfile agrees with the CLI and with the StatefulSet: `hebbian serve` as the
entrypoint, a numeric non-root user, the data volume, the ports, writable paths only under
/tmp, CPU TensorFlow, and a build context that holds what the build copies.

(Building and running the image itself: tests/deploy/test_image.py, `make test-image`.)
"""

from __future__ import annotations

import re
import shlex
import subprocess
import tomllib

import pytest

from service.server.config import SETTINGS, load_config
from tests.deploy.dockerfile import Stage, exec_form, parse
from tests.deploy.tools import DOCKERFILE, REPO, env_of, ports_of
from tests.server_process import hebbian_command

WRITABLE_ENV = ("HOME", "TMPDIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "KERAS_HOME",
                "MPLCONFIGDIR")


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def runtime(stages) -> Stage:
    """The final stage: what the image is."""
    return stages[-1]


@pytest.fixture(scope="module")
def serve_help() -> str:
    result = subprocess.run([*hebbian_command(), "serve", "--help"], capture_output=True,
                            text=True, timeout=60, check=True)
    return " ".join(result.stdout.split())


def test_multi_stage_build_installs_cpu_tensorflow(stages):
    assert len(stages) == 2
    build, runtime = stages
    assert build.base[1:] == ["AS", "build"] and runtime.base == build.base[:1]
    assert any(args.startswith("--from=build /opt/hebbian") for args in runtime.all("COPY"))
    installs = " ".join(build.all("RUN"))
    assert "sed 's/^tensorflow==/tensorflow-cpu==/' requirements.lock > constraints.txt" in installs
    assert "--requirement requirements.txt --constraint constraints.txt" in installs
    assert "['optional-dependencies']['keras']" in installs
    keras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["keras"]
    assert any(re.match(r"tensorflow[<>=]", d) for d in keras)
    assert re.search(r"^tensorflow==", (REPO / "requirements.lock").read_text(), re.MULTILINE)
    assert re.search(r"ARG PYTHON_IMAGE=python:3\.\d+-slim", DOCKERFILE.read_text())


def test_entrypoint_is_hebbian_serve_with_existing_flags(runtime, serve_help):
    entrypoint = exec_form(runtime.last("ENTRYPOINT"))
    assert entrypoint == ["/opt/hebbian/bin/hebbian", "serve"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["hebbian"] == "service.cli:main"
    assert runtime.all("CMD") == []
    env_names = {setting.env: setting for setting in SETTINGS}
    for name in runtime.env():
        if name.startswith("HEBBIAN_"):
            assert name in env_names, f"{name} is not a setting of hebbian serve"
            assert f"[env {name};" in serve_help and env_names[name].flag in serve_help


def test_container_defaults_make_a_valid_config(runtime):
    env = {k: v for k, v in runtime.env().items() if k.startswith("HEBBIAN_")}
    config = load_config(None, env)
    assert config.host == "0.0.0.0"
    assert str(config.data_dir) == "/data"
    assert config.health_port == 8081


def test_user_is_numeric_non_root_and_matches_the_pod(runtime, statefulset):
    user, _, group = runtime.last("USER").partition(":")
    assert user.isdigit() and group.isdigit() and int(user) >= 10000 and int(group) > 0
    pod = statefulset["spec"]["template"]["spec"]["securityContext"]
    assert (pod["runAsUser"], pod["runAsGroup"], pod["fsGroup"]) == (int(user), int(group),
                                                                   int(group))


def test_only_tmp_and_the_data_volume_are_written(runtime, container):
    env = runtime.env()
    for name in WRITABLE_ENV:
        assert env[name] == "/tmp" or env[name].startswith("/tmp/"), name
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert exec_form(runtime.last("VOLUME")) == [env["HEBBIAN_DATA_DIR"]]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["data"] == env["HEBBIAN_DATA_DIR"] == env_of(container)["HEBBIAN_DATA_DIR"]
    assert mounts["tmp"] == "/tmp"


def test_exposed_ports_are_the_pod_ports(runtime, container):
    exposed = {int(port.split("/")[0]) for port in runtime.last("EXPOSE").split()}
    assert exposed == set(ports_of(container).values())
    healthcheck = runtime.last("HEALTHCHECK")
    assert "os.environ.get('HEBBIAN_HEALTH_PORT')" in healthcheck
    assert "'127.0.0.1:' + port" in healthcheck and "service='liveness'" in healthcheck


def test_build_context_holds_what_the_build_copies(stages):
    ignore = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*"
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = set()
    for args in stages[0].all("COPY"):
        *sources, _destination = args.split()
        copied.update(s.rstrip("/") for s in sources if not s.startswith("--"))
    assert copied == kept == {"pyproject.toml", "README.md", "requirements.lock", "service"}


def test_image_carries_the_oci_labels(runtime):
    labels = dict(pair.split("=", 1) for pair in shlex.split(runtime.last("LABEL")))
    prefix = "org.opencontainers.image."
    assert {f"{prefix}{key}" for key in (
        "title", "description", "version", "revision", "created", "source", "licenses",
        "base.name")} <= set(labels)
    args = dict(arg.split("=", 1) if "=" in arg else (arg, "") for arg in runtime.all("ARG"))
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert labels[f"{prefix}version"] == "${VERSION}" and args["VERSION"] == project["version"]
    assert labels[f"{prefix}licenses"] == project["license"]["text"]
    assert labels[f"{prefix}revision"] == "${REVISION}" and "REVISION" in args


def test_the_image_carries_the_compiled_native_kernels_for_a_warm_start(stages):
    build, runtime = stages
    warm = [run for run in build.all("RUN") if "warm_cache()" in run]
    assert warm and "configure_cache('/opt/hebbian/engine-cache')" in warm[0]
    prebuilt = runtime.env()["HEBBIAN_ENGINE_PREBUILT_CACHE"]
    assert prebuilt == "/opt/hebbian/engine-cache"
    assert load_config(None, {"HEBBIAN_ENGINE_PREBUILT_CACHE": prebuilt}).engine_prebuilt_cache
    # the engine cache itself defaults to $XDG_CACHE_HOME, which the image points into /tmp
    assert runtime.env()["XDG_CACHE_HOME"].startswith("/tmp")
