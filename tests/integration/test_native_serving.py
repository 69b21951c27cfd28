"""A server whose models use the native engine never loads TensorFlow; XLA stays per model.

The real `hebbian serve` process is inspected through /proc: the shared libraries it has
mapped (TensorFlow is a set of large .so files) and its resident memory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from service.client import HebbianClient
from tests.server_process import ServerProcess

pytestmark = pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc")


def mapped_libraries(pid: int) -> set[str]:
    """File names of the shared objects process `pid` has mapped."""
    lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return {Path(line.split()[-1]).name for line in lines if ".so" in line.split()[-1]}


def loads_tensorflow(pid: int) -> bool:
    return any("tensorflow" in name for name in mapped_libraries(pid))


def test_a_server_that_creates_learns_snapshots_and_restores_never_loads_tensorflow(tmp_path):
    with ServerProcess(tmp_path) as server:
        client = HebbianClient(server.target, timeout=60)
        client.create_model("wide", {"input_dim": 64, "layers": [
            {"units": 16, "rule": "sanger", "lateral": "anti_hebbian"},
            {"units": 4, "rule": "bcm", "activation": "relu"},
        ]})
        x = np.random.default_rng(0).normal(size=(300, 64)).astype(np.float32)
        client.process(x, model="wide")
        client.process(x[:10], model="wide", learn=False)
        taken = client.snapshot("wide")
        client.process(x[:50], model="wide")
        client.restore(taken.snapshot.snapshot_id, "wide")
        client.reset("wide", seed=3)
        client.process(np.ones((4, 16), np.float32))  # the default model
        assert client.get_model("wide").step == 0
        assert not loads_tensorflow(server.process.pid), sorted(mapped_libraries(
            server.process.pid))
    assert server.returncode == 0


def test_a_model_may_ask_for_the_xla_engine_and_is_served_the_same(tmp_path):
    with ServerProcess(tmp_path) as server:
        client = HebbianClient(server.target, timeout=120)
        layers = [{"units": 3, "rule": "oja", "seed": 4, "learning_rate": 0.01}]
        client.create_model("native", {"input_dim": 8, "layers": layers})
        client.create_model("accelerated", {"input_dim": 8, "layers": layers, "engine": "xla"})
        assert client.get_model("accelerated").config.engine == "xla"
        assert client.get_model("native").config.engine == "native"
        x = np.random.default_rng(1).normal(size=(200, 8)).astype(np.float32)
        native = client.process(x, model="native")
        accelerated = client.process(x, model="accelerated")
        np.testing.assert_allclose(native, accelerated, atol=1e-5)
        assert loads_tensorflow(server.process.pid)


def test_the_engine_cache_directory_is_a_setting_and_a_prebuilt_cache_is_copied_in(tmp_path):
    prebuilt = tmp_path / "prebuilt"
    # built the way an image builds it, but starting from a copy of the cache this run's
    # servers filled (`configure_cache`'s own prebuilt copy): the kernels then load
    # rather than compile a second time (~40 s on two cores)
    warm = subprocess.run(
        [sys.executable, "-c", "from service.model.native_engine import configure_cache, "
         f"default_cache_dir, warm_cache; configure_cache({str(prebuilt)!r}, "
         "default_cache_dir()); warm_cache()"],
        capture_output=True, text=True, timeout=600, env={**os.environ},
    )
    assert warm.returncode == 0, warm.stderr
    compiled = sorted(p.name for p in prebuilt.rglob("*.nbi"))
    assert compiled, "warming wrote no compiled kernels"
    cache = tmp_path / "cache"
    with ServerProcess(tmp_path, "--engine-cache-dir", str(cache),
                       "--engine-prebuilt-cache", str(prebuilt)) as server:
        HebbianClient(server.target, timeout=60).process(np.ones((2, 16), np.float32))
    assert sorted(p.name for p in cache.rglob("*.nbi")) == compiled


def test_an_unwritable_engine_cache_directory_stops_the_start_with_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "serve", "--port", "0", "--metrics-port", "0",
         "--data-dir", str(tmp_path / "data"), "--engine-cache-dir", str(blocker / "cache")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1
    assert "cannot use engine cache directory" in result.stderr.strip().splitlines()[-1]


def test_a_serving_process_keeps_blas_on_one_thread(hebbian_server):
    """OpenBLAS's idle workers busy-wait between calls: with the quality measures calling
    BLAS every 50 ms they would keep a core busy for nothing, so the server limits BLAS
    to one thread (the engine's kernels are numba code and do not use it)."""
    from threadpoolctl import threadpool_info

    blas = [pool for pool in threadpool_info()
            if pool["user_api"] == "blas" and "numpy" in pool["filepath"]]
    assert blas, threadpool_info()
    assert all(pool["num_threads"] == 1 for pool in blas), blas
