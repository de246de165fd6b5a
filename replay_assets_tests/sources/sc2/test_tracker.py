"""Tracker-backend frames: schema and order, semantics, errors, and the cross-check against sc2reader."""

from __future__ import annotations

import warnings
from pathlib import Path

import pyarrow as pa
import pytest

from replay_assets.sources.sc2.replay import Sc2ReplayError
from replay_assets.sources.sc2.schema import SC2_GROUND_TRUTH_FRAMES
from replay_assets.sources.sc2.tracker import decode_tracker_state, state_frames, tracker_frames
from replay_assets.util.process_map import decode_in_processes
from replay_assets_tests.sources.sc2.helpers import MISSING_FILES, SC2READER_READABLE, sc2_path, source_for

ENGINE_ONLY = (
    "unit_type",
    "z",
    "health",
    "health_max",
    "shield",
    "energy",
    "build_progress",
    "is_flying",
    "orders",
)


def frames(path: Path, **kwargs) -> pa.Table:
    data = path.read_bytes()
    batches = list(tracker_frames(data, source_for(data, str(path)), **kwargs))
    assert all(b.schema == SC2_GROUND_TRUTH_FRAMES for b in batches)
    return pa.Table.from_batches(batches, schema=SC2_GROUND_TRUTH_FRAMES)


def test_rows_every_step_for_every_player_sorted(shared_data: Path) -> None:
    table = frames(sc2_path(shared_data, "ladder_4.7.0.70154"), step_mul=16, batch_rows=100)
    loops = table.column("game_loop").to_pylist()
    players = table.column("player_id").to_pylist()
    assert list(zip(loops, players, strict=True)) == sorted(zip(loops, players, strict=True))
    assert sorted(set(loops)) == list(range(0, 4724 + 1, 16))
    assert set(players) == {1, 2}
    assert table.num_rows == 2 * len(range(0, 4724 + 1, 16))
    assert set(table.column("backend").to_pylist()) == {"tracker"}


def test_stats_are_forward_filled_and_engine_fields_null(shared_data: Path) -> None:
    rows = frames(sc2_path(shared_data, "ladder_5.0.0.80949_TvZ")).to_pylist()
    first = rows[0]
    assert first["game_loop"] == 0 and first["stats_loop"] is None and first["minerals"] is None
    for row in rows[2:400]:
        assert row["game_loop"] - 160 < row["stats_loop"] <= row["game_loop"]
        assert row["food_army"] is None and row["upgrade_ids"] is None
    row = rows[2 * 125]  # loop 1000
    assert row["food_cap"] >= row["food_used"] > 0 and row["food_workers"] > 0
    units = [u for r in rows[::500] for u in r["units"]]
    assert units and all(u[f] is None for u in units for f in ENGINE_ONLY)
    assert {u["position_source"] for u in units} == {"born", "tracked"}
    assert all(u["position_loop"] <= r["game_loop"] for r in rows[::500] for u in r["units"])


def test_units_and_deaths_follow_the_events(shared_data: Path) -> None:
    rows = frames(sc2_path(shared_data, "ladder_5.0.0.80949_TvZ")).to_pylist()
    start = {r["player_id"]: r for r in rows[:2]}
    assert sorted(u["unit_name"] for u in start[1]["units"]).count("SCV") == 12
    assert sorted(u["unit_name"] for u in start[2]["units"]).count("Drone") == 12
    assert not any(u["unit_name"].startswith("Beacon") for r in rows[::97] for u in r["units"])
    previous: dict[int, set[int]] = {}
    deaths = 0
    for row in rows:
        tags = {u["tag"] for u in row["units"]}
        assert len(tags) == len(row["units"])
        for tag in row["dead_units"]:
            assert tag not in tags
            deaths += 1
        previous[row["player_id"]] = tags
    assert deaths > 100
    building = [u for r in rows for u in r["units"] if not u["is_complete"]]
    assert building and {u["position_source"] for u in building} <= {"born", "tracked"}


def test_missing_tracker_file_is_an_error_naming_the_file(shared_data: Path) -> None:
    path = sc2_path(shared_data, MISSING_FILES)
    with pytest.raises(
        Sc2ReplayError, match=r"missing_files\.SC2Replay: missing archive member replay\.tracker"
    ):
        frames(path)


@pytest.mark.parametrize("cut", [3, 2])
def test_truncated_bytes_are_an_error(shared_data: Path, cut: int) -> None:
    data = sc2_path(shared_data, "ladder_4.7.0.70154").read_bytes()
    data = data[: len(data) // cut]
    with pytest.raises(Sc2ReplayError, match=r"^s3://b/t\.SC2Replay: "):
        list(tracker_frames(data, source_for(data, "s3://b/t.SC2Replay")))


def _decode_file(path: str):
    return decode_tracker_state(Path(path).read_bytes(), path)


def test_state_from_a_worker_expands_to_the_inline_frames(shared_data: Path) -> None:
    """What the asset does at parallel > 1: a worker sends the small state, frames are expanded here."""
    paths = [str(sc2_path(shared_data, n)) for n in ("ladder_4.7.0.70154", "short_4.3.0.64469")]
    paths.append(str(sc2_path(shared_data, "anonymized_4.1.2.60604_missing_files")))
    results = dict(decode_in_processes(_decode_file, paths, parallel=2))
    assert isinstance(results[paths[2]], Sc2ReplayError)
    for path in paths[:2]:
        data = Path(path).read_bytes()
        source = source_for(data, path)
        from_worker = pa.Table.from_batches(state_frames(results[path], source, 16, 300))
        assert from_worker.num_rows > 0
        assert from_worker.equals(pa.Table.from_batches(tracker_frames(data, source, 16, 300)))


def test_no_exact_decoder_still_gives_frames(shared_data: Path) -> None:
    table = frames(sc2_path(shared_data, "4v4_3.0.3.38749_no_exact_decoder"), step_mul=80)
    assert set(table.column("player_id").to_pylist()) == set(range(1, 9))


def _sc2reader(path: Path):
    sc2reader = pytest.importorskip("sc2reader")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sc2reader.load_replay(str(path), load_level=3)


@pytest.mark.parametrize("name", SC2READER_READABLE)
def test_cross_check_with_sc2reader(shared_data: Path, name: str) -> None:
    """At every player-stats event: minerals, vespene and supply, and the count of units alive."""
    path = sc2_path(shared_data, name)
    theirs = _sc2reader(path)
    step = 8
    table = frames(path, step_mul=step).select(
        ["game_loop", "player_id", "stats_loop", "minerals", "vespene", "food_used", "food_cap", "units"]
    )
    rows = {(r["game_loop"], r["player_id"]): r for r in table.to_pylist()}
    last = max(loop for loop, _ in rows)
    units = [
        u
        for u in theirs.objects.values()
        if getattr(u, "started_at", None) is not None and not (u.name or "").startswith("Beacon")
    ]
    assert units, "sc2reader loaded no units"
    checked = 0
    for event in theirs.tracker_events:
        if type(event).__name__ != "PlayerStatsEvent":
            continue
        loop = -(-event.frame // step) * step  # the first frame at or after the event
        if loop > last:
            continue
        row = rows[(loop, event.pid)]
        if row["stats_loop"] != event.frame:
            continue  # a newer stats event arrived before the frame (end-of-game events)
        assert (row["minerals"], row["vespene"], row["food_used"], row["food_cap"]) == (
            event.minerals_current,
            event.vespene_current,
            event.food_used,
            event.food_made,
        ), (name, loop, event.pid)
        alive = sum(
            1
            for u in units
            if u.owner is not None
            and u.owner.pid == event.pid
            and u.started_at <= loop
            and (u.died_at is None or u.died_at > loop)
        )
        assert len(row["units"]) == alive, (name, loop, event.pid)
        checked += 1
    assert checked >= 4
