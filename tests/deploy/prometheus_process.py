"""A real Prometheus server (Debian's `prometheus`) on 127.0.0.1, for the tests.

    with PrometheusProcess(workdir, targets=["127.0.0.1:9464"], rule_files=[RULES]) as prom:
        prom.query('hebbian_samples_learned_total')      # the `data.result` list

It scrapes its targets every second (job `hebbian`), evaluates the rule files every second,
keeps its data under `workdir`, and stops with SIGTERM.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from tests.deploy.tools import debian_tool
from tests.server_process import free_port

JOB = "hebbian"


class PrometheusProcess:
    """One Prometheus subprocess on a free loopback port."""

    def __init__(self, workdir: Path, targets: list[str], rule_files: list[Path]):
        self.workdir = Path(workdir)
        self.port = free_port()
        self.targets = targets
        self.rule_files = rule_files
        self.log_path = self.workdir / "prometheus.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        """Write the config, start Prometheus and wait until it is ready."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s",
                       "scrape_timeout": "1s"},
            "rule_files": [str(path) for path in self.rule_files],
            "scrape_configs": [
                {"job_name": JOB, "static_configs": [{"targets": self.targets}]}
            ],
        }
        config_path = self.workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        command = [
            str(debian_tool("prometheus")), f"--config.file={config_path}",
            f"--storage.tsdb.path={self.workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn",
        ]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"prometheus not ready:\n{self.log_path.read_text()[-3000:]}")

    def api(self, path: str, **params: str) -> dict:
        """GET /api/v1/<path>; the `data` of a successful answer (else AssertionError)."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as err:
            body = json.load(err)
        assert body.get("status") == "success", f"{path} {params}: {body}"
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        """An instant query's result vector."""
        return self.api("query", query=expr)["result"]

    def wait_for(self, expr: str, predicate, timeout: float = 60.0) -> list[dict]:
        """Query `expr` until `predicate(result)` holds; the last result either way."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if predicate(result) or time.monotonic() > deadline:
                return result
            time.sleep(0.5)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> PrometheusProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
