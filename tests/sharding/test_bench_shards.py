"""`hebbian bench shards` with tiny sizes: both setups (1 and 3 shards behind a real
HAProxy) answer and the report has its figures; nothing is timed."""

from __future__ import annotations

import json
import subprocess

from service.bench.shards import main as bench_shards
from service.bench.shards import model_names
from service.sharding.slot_table import SlotTable
from service.sharding.slots import slot_of
from tests.server_process import hebbian_command
from tests.sharding.haproxy_process import haproxy_binary


def test_model_names_spread_evenly_over_three_shards():
    table = SlotTable.even(3)
    names = model_names(12)
    assert len(set(names)) == 12
    assert [table.owner(slot_of(name)) for name in names] == [0, 1, 2] * 4


def test_without_haproxy_it_says_so_and_exits_2(capsys):
    assert bench_shards(["--haproxy", "/nonexistent/haproxy"]) == 2
    assert "HAProxy not found" in capsys.readouterr().err


def test_bench_shards_runs_both_setups_through_the_router():
    haproxy_binary()  # skip (with the reason) without HAProxy
    done = subprocess.run(
        [*hebbian_command(), "bench", "shards", "--duration", "1", "--warmup", "0.2",
         "--repeats", "1", "--streams", "3", "--input-dim", "16", "--units", "4", "--json"],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[1/1] 3 shards via HAProxy" in done.stderr  # progress on stderr
    result = json.loads(done.stdout)
    assert set(result["setups"]) == {"1", "3"}
    for key, held in (("1", [3]), ("3", [1, 1, 1])):
        setup = result["setups"][key]
        assert setup["models_per_shard"] == held  # each model on the shard that owns it
        assert len(setup["runs"]) == 1
        median = setup["median"]
        assert median["samples_per_s"] > 0 and median["messages_per_s"] > 0
        assert 0 < median["p50_ms"] <= median["p99_ms"]
        assert median["servers_cpu_s"] > 0 and median["router_cpu_s"] > 0
    assert result["ratio"] == (result["setups"]["3"]["median"]["samples_per_s"]
                               / result["setups"]["1"]["median"]["samples_per_s"])
    settings = result["settings"]
    assert settings["cpus"] >= 1 and settings["load_before"] is not None
    assert result["notes"]
