"""The slot arithmetic of moves: reassigning a range, and scaling 3 -> 4 shards."""

from __future__ import annotations

import pytest

from service.sharding.moves import parse_slots, quarter_for_new_shard, reassign
from service.sharding.slot_table import SlotTable, SlotTableError
from service.sharding.slots import SLOT_COUNT


def test_reassign_gives_the_range_to_the_shard_and_merges_neighbours():
    table = reassign(SlotTable.even(3), 0, 169, 2)
    assert [(r.first, r.last, r.shard) for r in table.ranges] == [
        (0, 169, 2), (170, 340, 0), (341, 681, 1), (682, 1023, 2)]
    assert reassign(table, 0, 169, 0) == SlotTable.even(3)


def test_scaling_three_to_four_shards_moves_a_quarter_of_the_slots():
    table = SlotTable.even(3)
    plan = quarter_for_new_shard(table, 3)
    for first, last, _source in plan:
        table = reassign(table, first, last, 3)
    moved = table.slot_count(3)
    assert abs(moved - SLOT_COUNT / 4) <= 3  # a quarter, up to rounding per range
    counts = [table.slot_count(shard) for shard in range(4)]
    assert max(counts) - min(counts) <= 3  # and the four shards end up even


def test_parse_slots():
    assert parse_slots("0-169") == (0, 169)
    assert parse_slots("7") == (7, 7)
    for bad in ("9-3", "x", "0-1024"):
        with pytest.raises(SlotTableError):
            parse_slots(bad)
