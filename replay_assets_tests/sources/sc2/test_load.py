"""Sc2FramesDataset over frames partitions the test writes itself (both backends' shapes of a unit)."""

import datetime as dt
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch
from torch.utils.data import DataLoader

from replay_assets.datasets import MissingPartitionsError, connect
from replay_assets.sources.sc2.load import (
    STAT_FEATURES,
    UNIT_FEATURES,
    RowGroupShuffleSampler,
    Sc2FramesDataset,
)
from replay_assets.sources.sc2.schema import SC2_GROUND_TRUTH_FRAMES
from replay_assets.warehouse.layout import partition_file, warehouse_root
from replay_assets.warehouse.parquet import write_parquet

DAY = dt.date(2025, 10, 14)


def _tracker_unit(tag: int, x: float, position_loop: int) -> dict[str, Any]:
    return {
        "tag": tag, "unit_type": None, "unit_name": "SCV", "x": x, "y": x + 1, "z": None,
        "position_loop": position_loop, "position_source": "born", "is_complete": True, "health": None,
        "health_max": None, "shield": None, "energy": None, "build_progress": None, "is_flying": None,
        "orders": None,
    }  # fmt: skip


def _engine_unit(tag: int, health: float) -> dict[str, Any]:
    return {
        "tag": tag, "unit_type": 45, "unit_name": "SCV", "x": 10.5, "y": 20.5, "z": 8.0,
        "position_loop": 16, "position_source": "engine", "is_complete": True, "health": health,
        "health_max": 45.0, "shield": 0.0, "energy": 0.0, "build_progress": 1.0, "is_flying": False,
        "orders": [{"ability_id": 295, "target_unit_tag": None, "target_x": 1.0, "target_y": 2.0,
                    "progress": 0.5}],
    }  # fmt: skip


def _frame(replay: str, loop: int, player: int, backend: str, units: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "date": DAY, "replay_id": replay, "source_uri": f"/landing/sc2/{replay}.SC2Replay",
        "backend": backend, "game_loop": loop, "player_id": player,
        "stats_loop": 0 if backend == "tracker" else None, "minerals": 50 + loop, "vespene": loop,
        "food_used": 12.0, "food_cap": 15.0, "food_army": None if backend == "tracker" else 0.0,
        "food_workers": 12.0, "upgrades": [], "upgrade_ids": None, "dead_units": [], "units": units,
    }  # fmt: skip


def _frames() -> list[dict[str, Any]]:
    rows = []
    for loop in (0, 8, 16):
        for player in (1, 2):
            count = player + loop // 8
            units = [_tracker_unit(player * 1000 + k, float(k), position_loop=0) for k in range(count)]
            rows.append(_frame("a" * 64, loop, player, "tracker", units))
    rows.append(_frame("b" * 64, 16, 1, "engine", [_engine_unit(7, 40.0), _engine_unit(8, 45.0)]))
    return rows


@pytest.fixture
def warehouse(tmp_path) -> str:
    uri = str(tmp_path / "warehouse")
    table = pa.Table.from_pylist(_frames(), schema=SC2_GROUND_TRUTH_FRAMES)
    write_parquet(partition_file(warehouse_root(uri), "sc2_ground_truth_frames", DAY.isoformat()), table, 3)
    return uri


def test_items_pad_units_and_mark_what_the_backend_knew(warehouse: str) -> None:
    ds = Sc2FramesDataset(DAY, DAY, warehouse=warehouse, max_units=4, null_value=-1.0)
    assert len(ds) == 7 and [len(span) for span in ds.row_group_spans] == [3, 3, 1]
    item = ds[5]  # tracker, loop 16, player 2: 4 units
    assert (item["replay_id"], item["backend"], int(item["game_loop"]), int(item["player_id"])) == (
        "a" * 64, "tracker", 16, 2,
    )  # fmt: skip
    assert item["units"].shape == (4, len(UNIT_FEATURES)) and item["unit_mask"].tolist() == [True] * 4
    x, health, age = (UNIT_FEATURES.index(n) for n in ("x", "health", "position_age"))
    assert item["units"][:, x].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert item["units"][:, age].tolist() == [16.0] * 4  # positions observed at loop 0, frame at loop 16
    assert not item["units_known"][:, health].any() and item["units"][:, health].tolist() == [-1.0] * 4
    stats = dict(zip(STAT_FEATURES, item["stats"].tolist(), strict=True))
    assert stats["minerals"] == 66 and stats["food_army"] == -1.0
    assert not item["stats_known"][STAT_FEATURES.index("food_army")]

    engine = ds[6]
    assert engine["backend"] == "engine" and engine["unit_mask"].tolist() == [True, True, False, False]
    assert engine["units"][:2, health].tolist() == [40.0, 45.0] and engine["units_known"][:2].all()
    assert not engine["units_known"][2:].any() and (engine["units"][2:] == -1.0).all()
    assert int(engine["unit_count"]) == 2


def test_max_units_truncates_visibly(warehouse: str) -> None:
    ds = Sc2FramesDataset(warehouse=warehouse, max_units=2)
    item = ds[5]
    assert int(item["unit_count"]) == 4 and item["unit_mask"].all() and item["units"].shape[0] == 2


def test_filters_keep_matching_frames_only(warehouse: str) -> None:
    assert len(Sc2FramesDataset(warehouse=warehouse, backend="engine")) == 1
    player_two = Sc2FramesDataset(warehouse=warehouse, player_id=2)
    assert len(player_two) == 3 and {int(player_two[i]["player_id"]) for i in range(3)} == {2}
    assert len(Sc2FramesDataset(warehouse=warehouse, replay_ids=["b" * 64, "c" * 64])) == 1
    with pytest.raises(ValueError, match="backend"):
        Sc2FramesDataset(warehouse=warehouse, backend="pysc2")


def test_dataloader_with_workers_and_row_group_sampler(warehouse: str) -> None:
    ds = Sc2FramesDataset(warehouse=warehouse, max_units=8)
    sampler = RowGroupShuffleSampler(ds, seed=3)
    order = list(sampler)
    assert sorted(order) == list(range(7))
    groups = [next(g for g, span in enumerate(ds.row_group_spans) if i in span) for i in order]
    assert groups == sorted(groups, key=groups.index)  # each group's items come together
    loader = DataLoader(ds, batch_size=4, sampler=sampler, num_workers=2)
    batches = list(loader)
    assert sum(len(b["replay_id"]) for b in batches) == 7
    assert batches[0]["units"].shape == (4, 8, len(UNIT_FEATURES))
    assert batches[0]["units"].dtype == torch.float32
    loops = torch.cat([b["game_loop"] for b in batches]).numpy()
    assert np.array_equal(np.sort(loops), np.sort(np.array([0, 0, 8, 8, 16, 16, 16])))


def test_missing_days_are_reported(warehouse: str) -> None:
    with pytest.raises(MissingPartitionsError, match="2025-10-15"):
        Sc2FramesDataset("2025-10-14", "2025-10-15", warehouse=warehouse)
    with pytest.warns(UserWarning, match="2025-10-15"):
        assert len(Sc2FramesDataset("2025-10-14", "2025-10-15", warehouse=warehouse, missing="skip")) == 7


def test_connect_exposes_the_frames_to_sql(warehouse: str) -> None:
    conn = connect(warehouse=warehouse)
    rows = conn.execute(
        "select backend, count(*), max(len(units)) from sc2_ground_truth_frames group by 1 order by 1"
    ).fetchall()
    assert rows == [("engine", 1, 2), ("tracker", 6, 4)]
