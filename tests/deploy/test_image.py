"""Build deploy/Dockerfile with podman (Debian's package) and run the image the way the
StatefulSet runs it: read-only root file system, UID 10001, all capabilities dropped, a data
volume on /data and a tmpfs on /tmp. The container must get ready, learn samples, export
them on /metrics, and on SIGTERM exit 0 after writing a final snapshot into the volume.

Slow (minutes: TensorFlow is installed into the image), so it runs only with
HEBBIAN_IMAGE_TEST=1, which `make test-image` sets after installing podman, runc and
debootstrap. The base image is $HEBBIAN_PYTHON_IMAGE when set (e.g. python:3.11-slim-bookworm
where a registry is reachable); otherwise a Debian bookworm root file system with python3,
made by debootstrap from Debian's packages (the only source this project's machines reach).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from service.client import HebbianClient
from tests.deploy.dockerfile import exec_form, parse
from tests.deploy.tools import DOCKERFILE, REPO, run
from tests.server_process import free_port, health_status

pytestmark = pytest.mark.skipif(
    os.environ.get("HEBBIAN_IMAGE_TEST") != "1",
    reason="builds the container image (minutes): run `make test-image` (HEBBIAN_IMAGE_TEST=1)",
)

IMAGE = "localhost/hebbian-service:test"
LOCAL_BASE = "localhost/hebbian-python-base:bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
SAMPLES = 1000


def tool(name: str) -> str:
    found = shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed: `make test-image` installs it (as root)")
    return found


def checked(*command: str, timeout: float = 600) -> str:
    result = run(*command, timeout=timeout)
    assert result.returncode == 0, (
        f"{' '.join(command)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result.stdout


def base_image(podman: str, workdir: Path) -> str:
    """The Python base image: $HEBBIAN_PYTHON_IMAGE, or a debootstrapped Debian bookworm."""
    configured = os.environ.get("HEBBIAN_PYTHON_IMAGE")
    if configured:
        return configured
    if run(podman, "image", "exists", LOCAL_BASE).returncode == 0:
        return LOCAL_BASE
    rootfs = workdir / "rootfs"
    checked(tool("debootstrap"), "--variant=minbase", "--include=python3,python3-venv",
            "bookworm", str(rootfs), DEBIAN_MIRROR, timeout=900)
    shutil.rmtree(rootfs / "var" / "lib" / "apt" / "lists", ignore_errors=True)
    archive = workdir / "rootfs.tar"
    checked("tar", "-C", str(rootfs), "-cf", str(archive), ".")
    checked(podman, "import", "--change", 'CMD ["/bin/bash"]', str(archive), LOCAL_BASE)
    return LOCAL_BASE


def runtime_options() -> list[str]:
    """runc where it is installed: crun cannot start containers on hosts with hybrid cgroups
    (this sandbox). (The explicit --ulimit flags of the run: podman's default open-files
    limit is above what a sandbox may set.)"""
    return ["--runtime", "runc"] if shutil.which("runc") else []


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> str:
    podman = tool("podman")
    base = base_image(podman, tmp_path_factory.mktemp("image-base"))
    build = [podman, "build", "--isolation", "chroot", "--file", str(DOCKERFILE),
             "--build-arg", f"PYTHON_IMAGE={base}", "--tag", IMAGE]
    if Path("/etc/ssl/certs").is_dir():  # the host's CAs (a TLS-intercepting proxy's too)
        build += ["--volume", "/etc/ssl/certs:/etc/ssl/certs:ro"]
    checked(*build, str(REPO), timeout=1800)
    return IMAGE


def test_image_runs_read_only_as_non_root_and_snapshots_on_sigterm(image):
    podman = tool("podman")
    name, volume = f"hebbian-test-{os.getpid()}", f"hebbian-test-{os.getpid()}"
    port, metrics_port, health_port = free_port(), free_port(), free_port()
    checked(podman, "volume", "create", volume)
    try:
        checked(
            podman, *runtime_options(), "run", "--detach", "--name", name, "--network", "host",
            "--read-only", "--read-only-tmpfs=false", "--tmpfs", "/tmp:rw,size=256m,mode=1777",
            "--volume", f"{volume}:/data", "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges", "--ulimit", "nofile=1024:1024",
            "--ulimit", "nproc=1024:1024",
            "--env", f"HEBBIAN_PORT={port}", "--env", f"HEBBIAN_METRICS_PORT={metrics_port}",
            "--env", f"HEBBIAN_HEALTH_PORT={health_port}", image,
        )
        deadline = time.monotonic() + 300
        while health_status(f"127.0.0.1:{health_port}", "readiness", 1.0) != "SERVING":
            state = checked(podman, "inspect", "--format", "{{.State.Status}}", name).strip()
            assert state == "running" and time.monotonic() < deadline, checked(
                podman, "logs", name)
            time.sleep(1)
        assert checked(podman, "inspect", "--format", "{{.Config.User}}", name).strip() == (
            "10001:10001")
        healthcheck = parse(DOCKERFILE.read_text())[-1].last("HEALTHCHECK")
        checked(podman, "exec", name, *exec_form(healthcheck.split(" CMD ", 1)[1]))

        with HebbianClient(f"127.0.0.1:{port}", timeout=60) as client:
            samples = np.random.default_rng(0).normal(size=(SAMPLES, 16)).astype(np.float32)
            assert client.process(samples).shape == (SAMPLES, 4)
            assert client.get_model().step == SAMPLES
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            page = response.read().decode()
        assert f'hebbian_samples_learned_total{{model="default"}} {float(SAMPLES)}' in page

        checked(podman, "stop", "--time", "60", name, timeout=90)
        assert checked(podman, "inspect", "--format", "{{.State.ExitCode}}", name).strip() == "0"
        logs = subprocess.run([podman, "logs", name], capture_output=True, text=True,
                              check=False)
        output = logs.stdout + logs.stderr
        assert "final snapshot" in output and f"at step {SAMPLES}" in output
        assert "Read-only file system" not in output
        mountpoint = Path(checked(podman, "volume", "inspect", "--format",
                                  "{{.Mountpoint}}", volume).strip())
        snapshots = list((mountpoint / "models" / "default" / "snapshots").glob("*.hsnap"))
        assert snapshots and all(path.stat().st_uid == 10001 for path in snapshots)
    finally:
        run(podman, "rm", "--force", name)
        run(podman, "volume", "rm", "--force", volume)
