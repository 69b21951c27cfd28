"""Server processes for the service benchmark, and what they cost, read from /proc.

`ServeProcess` runs `hebbian serve` on 127.0.0.1 with free ports and its own data
directory and measures the time from start to readiness SERVING; `EchoProcess` runs the
bare gRPC echo server (`service.bench.echo`). Both expose `pid`, so `usage(pid)` can
read a server's CPU seconds (user + system, all threads) and its peak resident memory
(VmHWM) while it runs; `micro_batches(url)` reads a server's micro-batch totals
from its Prometheus endpoint.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class Usage:
    """A process's CPU seconds so far (user + system, every thread), its peak RSS, and the
    anonymous part of its RSS now (without the shared libraries' file-backed pages)."""

    cpu_seconds: float
    peak_rss_mb: float
    anon_rss_mb: float


def usage(pid: int | None) -> Usage | None:
    """`Usage` of a live process from /proc; None without a pid or without /proc."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rpartition(")")[2].split()
        with open(f"/proc/{pid}/status") as handle:
            status = dict(line.split(":", 1) for line in handle if ":" in line)
    except OSError:
        return None
    # fields[0] is the state (field 3 of stat): utime and stime are fields 14 and 15
    cpu = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    anon = status.get("RssAnon", status["VmRSS"])
    return Usage(cpu, int(status["VmHWM"].split()[0]) / 1024, int(anon.split()[0]) / 1024)


def thread_cpu(pid: int | None) -> dict[str, float] | None:
    """CPU seconds so far per OS thread name (summed over threads of one name) of a live
    process, and under "(ended)" those of its threads that have ended (e.g. the reader of
    a finished stream); None without a pid or without /proc."""
    if pid is None:
        return None
    total = usage(pid)
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    out: dict[str, float] = {}
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as handle:
                text = handle.read()
        except OSError:  # ended meanwhile: counted under "(ended)"
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text.rpartition(")")[2].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    if total is not None:
        out["(ended)"] = max(0.0, total.cpu_seconds - sum(out.values()))
    return out


@dataclass(frozen=True)
class MicroBatches:
    """A server's micro-batches so far, every model together: how many, their
    samples and the engine seconds they took (`hebbian_microbatch_*`)."""

    count: float
    samples: float
    engine_seconds: float


_MICRO_BATCH_SERIES = (
    "hebbian_microbatch_samples_count",
    "hebbian_microbatch_samples_sum",
    "hebbian_microbatch_compute_seconds_sum",
)


def micro_batches(metrics_url: str | None) -> MicroBatches | None:
    """`MicroBatches` scraped from a server's /metrics; None without a URL or an answer."""
    if metrics_url is None:
        return None
    try:
        with urllib.request.urlopen(metrics_url, timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return None
    totals = dict.fromkeys(_MICRO_BATCH_SERIES, 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in totals:
                totals[sample.name] += sample.value
    return MicroBatches(*(totals[name] for name in _MICRO_BATCH_SERIES))


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def hebbian_command() -> list[str]:
    """The installed `hebbian` console script (or `python -m service.cli` without it)."""
    script = shutil.which("hebbian", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "service.cli"]


def health_status(target: str, service: str, timeout: float = 2.0) -> str:
    """grpc.health.v1 Check of `service` at `target` (plaintext) as a status name, or the
    error code's name."""
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as error:
            return error.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def readiness(target: str, timeout: float = 1.0) -> str:
    """The grpc.health.v1 status of "readiness" at `target`, or the error code's name."""
    return health_status(target, "readiness", timeout)


def stop_process(process: subprocess.Popen, timeout: float) -> int:
    """SIGTERM, wait up to `timeout` seconds, SIGKILL if still running; the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def serve_flags() -> str:
    """The help text of `hebbian serve` (to see which flags this build has)."""
    done = subprocess.run(
        [*hebbian_command(), "serve", "--help"], capture_output=True, text=True, check=False
    )
    return done.stdout


# argv: CPU list, then the command: run the command on those CPUs
_PINNED_EXEC = ("import os, shutil, sys; "
                "os.sched_setaffinity(0, {int(c) for c in sys.argv[1].split(',')}); "
                "os.execv(shutil.which(sys.argv[2]) or sys.argv[2], sys.argv[2:])")


def parse_cpus(text: str) -> frozenset[int]:
    """A CPU list as `taskset -c` writes it ("1", "0,2", "2-3") as a set of CPU numbers.

    Raises:
      ValueError: not such a list, or a CPU this process may not use.
    """
    cpus: set[int] = set()
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise ValueError(f"not a CPU list like 1 or 0,2 or 2-3: {text!r}")
        cpus.update(range(int(first), int(last or first) + 1))
    allowed = os.sched_getaffinity(0)
    if not cpus or not cpus <= allowed:
        raise ValueError(f"CPUs {text!r} are not all among this process's CPUs "
                         f"({cpus_text(allowed)})")
    return frozenset(cpus)


def cpus_text(cpus: Iterable[int]) -> str:
    """A set of CPU numbers as the comma-separated list `parse_cpus` reads."""
    return ",".join(map(str, sorted(cpus)))


@contextlib.contextmanager
def running_beside(server_cpus: frozenset[int] | None) -> Iterator[None]:
    """Inside: every thread of this process (and each one it starts) runs on the CPUs it
    may use but `server_cpus`; as before afterwards. Nothing changes for None."""
    if not server_cpus:
        yield
        return
    allowed = frozenset(os.sched_getaffinity(0))
    _pin_this_process(allowed - server_cpus)
    try:
        yield
    finally:
        _pin_this_process(allowed)


def _pin_this_process(cpus: frozenset[int]) -> None:
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(ProcessLookupError, ValueError):  # a thread that ended
            os.sched_setaffinity(int(task.name), cpus)


class _Child:
    """A subprocess with a log file; `stop` sends SIGTERM, then kills after `timeout`.
    `cpus`: the CPUs it (every thread it will have) may run on; None: any."""

    def __init__(self, workdir: Path, name: str, cpus: frozenset[int] | None = None):
        self.workdir = Path(workdir)
        self.log_path = self.workdir / f"{name}.log"
        self.port = free_port()
        self.cpus = cpus
        self.process: subprocess.Popen | None = None

    @property
    def target(self) -> str:
        """host:port of the gRPC server."""
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The process id while it runs."""
        return self.process.pid if self.process and self.process.poll() is None else None

    def _spawn(self, command: list[str], env: dict[str, str] | None = None) -> float:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **(env or {})}
        if self.cpus is not None:  # set before exec: its threads inherit it from the start
            command = [sys.executable, "-c", _PINNED_EXEC, cpus_text(self.cpus), *command]
        with open(self.log_path, "wb") as log:
            started = time.perf_counter()
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.workdir
            )
        return started

    def _check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(
                f"{self.log_path.stem} exited with {self.process.returncode}:\n{self.log_tail()}"
            )

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the process's combined stdout/stderr."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, wait, kill if needed; returns the exit code (None if never started)."""
        if self.process is None:
            return None
        return stop_process(self.process, timeout)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class ServeProcess(_Child):
    """`hebbian serve` with free ports, a data directory and optional config file and flags.

    Args:
      workdir: holds the log, the config file and the data directory.
      name: names the log and data directory (several servers may share `workdir`).
      config_text: TOML for `--config` (e.g. the models), or None for the defaults.
      flags: more `hebbian serve` flags, e.g. ("--fsync", "always").
      env: environment variables for the server on top of this process's.
    """

    def __init__(
        self, workdir: Path, name: str, config_text: str | None = None, flags: tuple = (),
        env: dict[str, str] | None = None, cpus: frozenset[int] | None = None,
    ):
        super().__init__(workdir, name, cpus)
        self.name = name
        self.config_text = config_text
        self.flags = tuple(flags)
        self.env = dict(env or {})
        self.ready_seconds = float("nan")  # start to readiness SERVING
        self.metrics_port = free_port()

    @property
    def metrics_url(self) -> str:
        """The server's Prometheus endpoint."""
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self, timeout: float = 180.0) -> ServeProcess:
        """Start the server and wait until readiness is SERVING (timed)."""
        command = [
            *hebbian_command(), "serve", "--host", "127.0.0.1", "--port", str(self.port),
            "--metrics-port", str(self.metrics_port),
            "--data-dir", str(self.workdir / f"{self.name}-data"),
            "--log-level", "warning", *self.flags,
        ]
        if self.config_text is not None:
            path = self.workdir / f"{self.name}.toml"
            path.write_text(self.config_text)
            command += ["--config", str(path)]
        started = self._spawn(command, self.env)
        deadline = started + timeout
        while time.perf_counter() < deadline:
            self._check_alive()
            if readiness(self.target, timeout=0.5) == "SERVING":
                self.ready_seconds = time.perf_counter() - started
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"hebbian serve not ready after {timeout:.0f} s:\n{self.log_tail()}")


class EchoProcess(_Child):
    """The bare gRPC echo server (`python -m service.bench.echo`) answering like a model
    with `output_dim` outputs."""

    def __init__(self, workdir: Path, output_dim: int, name: str = "echo",
                 cpus: frozenset[int] | None = None, work: str = "echo", input_dim: int = 256):
        super().__init__(workdir, name, cpus)
        self.output_dim = output_dim
        self.work, self.input_dim = work, input_dim

    def start(self, timeout: float = 180.0) -> EchoProcess:
        """Start the echo server and wait until it accepts connections (a floor server
        loads or compiles the engine's kernels first)."""
        self._spawn([
            sys.executable, "-m", "service.bench.echo", "--port", str(self.port),
            "--output-dim", str(self.output_dim), "--input-dim", str(self.input_dim),
            "--work", self.work,
        ])
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            self._check_alive()
            with grpc.insecure_channel(self.target) as channel:
                try:
                    grpc.channel_ready_future(channel).result(timeout=0.5)
                    return self
                except grpc.FutureTimeoutError:
                    pass
        self.stop()
        raise RuntimeError(f"echo server not ready after {timeout:.0f} s:\n{self.log_tail()}")
