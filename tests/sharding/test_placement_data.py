"""Placement as data: slots, the slot table file, the shard ordinal, the table's reload."""

from __future__ import annotations

import argparse
import time
import zlib

import pytest

from service.server.config import ConfigError, add_arguments, load_config
from service.sharding.ordinal import ordinal_from_pod_name
from service.sharding.slot_table import SlotRange, SlotTable, SlotTableError
from service.sharding.slots import SLOT_COUNT, slot_of
from service.sharding.table_watcher import SlotTableWatcher


def test_slot_is_standard_crc32_of_the_utf8_name_mod_1024():
    assert zlib.crc32(b"123456789") == 0xCBF43926  # the CRC-32 check value
    assert slot_of("sensor-7") == zlib.crc32(b"sensor-7") % 1024
    assert slot_of("") == slot_of("default")
    assert slot_of("", default_model="pca") == slot_of("pca")
    assert all(0 <= slot_of(f"m{i}") < SLOT_COUNT for i in range(2000))


def test_even_table_covers_every_slot_once_and_round_trips():
    table = SlotTable.even(3)
    assert [str(r) for r in table.ranges] == ["0-340", "341-681", "682-1023"]
    assert [table.owner(s) for s in (0, 340, 341, 1023)] == [0, 0, 1, 2]
    assert sum(table.slot_count(shard) for shard in table.shards()) == SLOT_COUNT
    assert SlotTable.parse(table.to_yaml()) == table


def test_json_table_with_a_single_slot_range():
    text = ('{"ranges": [{"slots": "0-16", "shard": 0}, {"slots": 17, "shard": 2},'
            ' {"slots": "18-1023", "shard": 1}]}')
    table = SlotTable.parse(text)
    assert table.owner(17) == 2 and table.owner(18) == 1
    assert table.ranges_of(2) == [SlotRange(17, 17, 2)]
    assert table.shards() == [0, 1, 2]


@pytest.mark.parametrize(("text", "problem"), [
    ("ranges: [{slots: 0-1000, shard: 0}]", "slots 1001-1023 belong to no shard"),
    ("ranges: [{slots: 1-1023, shard: 0}]", "slots 0-0 belong to no shard"),
    ("ranges: [{slots: 0-600, shard: 0}, {slots: 600-1023, shard: 1}]", "slot 600 is in two"),
    ("ranges: [{slots: 0-1024, shard: 0}]", "must satisfy"),
    ("ranges: [{slots: 9-3, shard: 0}]", "must satisfy"),
    ("ranges: [{slots: a-b, shard: 0}]", "FIRST-LAST"),
    ("ranges: [{slots: 0-1023, shard: -1}]", "integer >= 0"),
    ("ranges: [{slots: 0-1023}]", "must be {slots"),
    ("shards: 3", "a list 'ranges'"),
    ("ranges: [", "not valid YAML"),
])
def test_invalid_tables_are_refused_with_the_reason(text, problem):
    with pytest.raises(SlotTableError, match=problem.replace("{", r"\{")):
        SlotTable.parse(text)


@pytest.mark.parametrize(("name", "ordinal"), [
    ("hebbian-0", 0), ("hebbian-2", 2), ("hebbian-shard-17", 17), ("web", None),
    ("hebbian-", None), ("hebbian-02", None), ("", None),
])
def test_ordinal_from_statefulset_pod_name(name, ordinal):
    assert ordinal_from_pod_name(name) == ordinal


def _config(argv, env):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return load_config(parser.parse_args(argv), env)


def test_shard_from_flag_environment_or_pod_name(tmp_path):
    table = tmp_path / "slots.yaml"
    table.write_text(SlotTable.even(3).to_yaml())
    assert _config([f"--slot-table={table}", "--shard=1"], {}).shard == 1
    assert _config([f"--slot-table={table}"], {"HEBBIAN_SHARD": "2"}).shard == 2
    assert _config([f"--slot-table={table}"], {"HOSTNAME": "hebbian-2"}).shard == 2
    assert _config([], {"HOSTNAME": "hebbian-2"}).shard is None  # unsharded
    with pytest.raises(ConfigError, match="shard ordinal"):
        _config([f"--slot-table={table}"], {"HOSTNAME": "laptop"})
    with pytest.raises(ConfigError, match="shard needs slot_table"):
        _config(["--shard=1"], {})


def test_watcher_reloads_on_new_content_and_keeps_the_old_table_when_bad(tmp_path, caplog):
    path = tmp_path / "slots.yaml"
    path.write_text(SlotTable.even(2).to_yaml())
    seen = []
    watcher = SlotTableWatcher(path, on_change=seen.append)
    assert watcher.table == SlotTable.even(2)
    assert not watcher.check()  # same content: nothing happens
    path.write_text("ranges: [{slots: 0-10, shard: 0}]\n")
    assert not watcher.check()
    assert watcher.table == SlotTable.even(2)
    assert "belong to no shard" in caplog.text and "keeping the slot table" in caplog.text
    path.write_text(SlotTable.even(3).to_yaml())
    assert watcher.check()
    assert watcher.table == SlotTable.even(3) and seen == [SlotTable.even(3)]
    path.unlink()
    assert not watcher.check()
    assert watcher.table == SlotTable.even(3)


def test_watcher_follows_a_configmap_symlink_swap(tmp_path):
    # kubelet: <dir>/slots.yaml -> ..data/slots.yaml, ..data -> ..<timestamp> (swapped)
    for version, shards in (("..v1", 2), ("..v2", 4)):
        (tmp_path / version).mkdir()
        (tmp_path / version / "slots.yaml").write_text(SlotTable.even(shards).to_yaml())
    (tmp_path / "..data").symlink_to("..v1")
    (tmp_path / "slots.yaml").symlink_to("..data/slots.yaml")
    watcher = SlotTableWatcher(tmp_path / "slots.yaml")
    assert watcher.table == SlotTable.even(2)
    (tmp_path / "..data_tmp").symlink_to("..v2")
    (tmp_path / "..data_tmp").rename(tmp_path / "..data")
    assert watcher.check() and watcher.table == SlotTable.even(4)


def test_watcher_thread_picks_up_a_change(tmp_path):
    path = tmp_path / "slots.yaml"
    path.write_text(SlotTable.even(2).to_yaml())
    watcher = SlotTableWatcher(path, interval=0.05).start()
    try:
        path.write_text(SlotTable.even(5).to_yaml())
        deadline = time.monotonic() + 30
        while watcher.table != SlotTable.even(5) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert watcher.table == SlotTable.even(5)
    finally:
        watcher.stop()
