"""The engine backend's reader: perspective merge on hand-made observations, and the whole driving loop
through pysc2's real run config, process launcher and controller against the stand-in SC2 binary."""

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from s2clientprotocol import raw_pb2
from s2clientprotocol import sc2api_pb2 as sc_pb

from replay_assets.sources.contract import Lineage
from replay_assets.sources.sc2.engine import (
    FrameMerger,
    Sc2EngineError,
    engine_frame_batches,
    merged_rows,
    observed_players,
    upgrade_names,
)
from replay_assets.sources.sc2.schema import SC2_GROUND_TRUTH_FRAMES
from replay_assets_tests.sources.sc2.standin import install_standin, replay_bytes, scenario

LINEAGE = Lineage(
    dt.date(2025, 10, 15),
    "landing/sc2/2025-10-15/standin.SC2Replay",
    "ab" * 32,
    "sc2/2025-10-15/standin.SC2Replay",
)


def _obs(
    loop: int,
    player: int,
    units: list[dict[str, Any]],
    dead: tuple[int, ...] = (),
    upgrades: tuple[int, ...] = (),
    minerals: int = 50,
) -> sc_pb.ResponseObservation:
    obs = sc_pb.ResponseObservation()
    obs.observation.game_loop = loop
    obs.observation.player_common.player_id = player
    obs.observation.player_common.minerals = minerals
    obs.observation.raw_data.player.upgrade_ids.extend(upgrades)
    obs.observation.raw_data.event.dead_units.extend(dead)
    for spec in units:
        unit = obs.observation.raw_data.units.add(display_type=raw_pb2.Visible, **spec)
        unit.pos.x, unit.pos.y = 1.0, 2.0
    return obs


def _by_player(rows: list[dict]) -> dict[int, dict]:
    return {row["player_id"]: row for row in rows}


def test_owner_perspective_wins_and_other_perspectives_fill_in() -> None:
    ordered = {"tag": 5, "owner": 1, "unit_type": 45, "orders": [{"ability_id": 295}]}
    unordered = {"tag": 5, "owner": 1, "unit_type": 45, "health": 45.0}
    only_seen_by_2 = {"tag": 9, "owner": 1, "unit_type": 48}
    rows = FrameMerger([1, 2]).merge(
        8,
        {
            2: _obs(8, 2, [unordered, only_seen_by_2, {"tag": 7, "owner": 16, "unit_type": 341}]),
            1: _obs(8, 1, [ordered]),
        },
    )
    p1, p2 = _by_player(rows)[1], _by_player(rows)[2]
    assert [u["tag"] for u in p1["units"]] == [5, 9]
    assert p1["units"][0]["orders"][0]["ability_id"] == 295  # from player 1's own perspective
    assert p1["units"][0]["health"] is None  # the winner is taken whole: nothing invented or mixed in
    assert p1["units"][1]["unit_name"] == "Marine"
    assert p2["units"] == []  # the neutral mineral field belongs to nobody's row
    assert p1["units"][0]["position_loop"] == 8 and p1["units"][0]["position_source"] == "engine"


def test_stats_and_upgrades_only_from_the_players_own_perspective() -> None:
    rows = FrameMerger([1, 2]).merge(0, {1: _obs(0, 1, [], upgrades=(1,), minerals=75)})
    p1, p2 = _by_player(rows)[1], _by_player(rows)[2]
    assert (p1["minerals"], p1["upgrade_ids"], p1["upgrades"]) == (75, [1], upgrade_names([1]))
    assert p1["vespene"] is None  # not sent by this observation: null, not 0
    assert (p2["minerals"], p2["upgrade_ids"], p2["upgrades"]) == (None, None, None)
    assert p1["stats_loop"] is None


def test_deaths_go_to_the_owner_last_seen_and_unknown_tags_are_dropped() -> None:
    merger = FrameMerger([1, 2])
    merger.merge(0, {1: _obs(0, 1, [{"tag": 5, "owner": 2, "unit_type": 104}])})
    rows = merger.merge(8, {1: _obs(8, 1, [], dead=(5, 77)), 2: _obs(8, 2, [], dead=(5,))})
    assert _by_player(rows)[2]["dead_units"] == [5]
    assert _by_player(rows)[1]["dead_units"] == []


def test_aligned_frames_group_perspectives_by_game_loop() -> None:
    streams = {1: [_obs(0, 1, []), _obs(8, 1, [])], 2: [_obs(0, 2, []), _obs(8, 2, []), _obs(12, 2, [])]}
    rows = list(merged_rows([1, 2], streams))
    keys = [(r["game_loop"], r["player_id"]) for r in rows]
    assert keys == [(0, 1), (0, 2), (8, 1), (8, 2), (12, 1), (12, 2)]
    assert rows[4]["minerals"] is None and rows[5]["minerals"] == 50


def test_a_perspective_repeating_a_loop_does_not_break_the_merge() -> None:
    repeated = [_obs(0, 1, []), _obs(8, 1, [], minerals=1), _obs(8, 1, [], minerals=2)]
    streams = {1: repeated, 2: [_obs(8, 2, [])]}
    rows = list(merged_rows([1, 2], streams))
    assert [(r["game_loop"], r["player_id"], r["minerals"]) for r in rows] == [
        (0, 1, 50),
        (0, 2, None),
        (8, 1, 2),
        (8, 2, 50),
    ]


def test_validation_names_both_builds_and_skips_observers() -> None:
    info = sc_pb.ResponseReplayInfo(base_build=75800, game_version="4.10.1.75800")
    with pytest.raises(Sc2EngineError, match=r"x\.SC2Replay: replay base build 75800 .* engine is Base75689"):
        observed_players("x.SC2Replay", info, 75689)
    info.base_build = 75689
    for player_id, kind in ((1, sc_pb.Participant), (2, sc_pb.Computer), (3, sc_pb.Observer)):
        info.player_info.add().player_info.MergeFrom(sc_pb.PlayerInfo(player_id=player_id, type=kind))
    assert observed_players("x.SC2Replay", info, 75689) == [1, 2]


# --- the driving loop through pysc2 and the stand-in binary ---------------------------------------------


@pytest.fixture
def controller(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """pysc2's own run config and launcher, pointed at a temporary SC2PATH holding the stand-in."""
    from absl import flags
    from pysc2 import run_configs

    install_standin(tmp_path / "StarCraftII")
    monkeypatch.setenv("SC2PATH", str(tmp_path / "StarCraftII"))
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    with run_configs.get(version="4.10.0").start(want_rgb=False) as sc2:
        yield sc2


def test_engine_replay_both_perspectives_merged(controller: Any) -> None:
    game = replay_bytes(scenario(game_loops=36))
    batches = list(engine_frame_batches(controller, game, LINEAGE, step_mul=8))
    table = pa.Table.from_batches(batches)
    assert table.schema == SC2_GROUND_TRUTH_FRAMES
    rows = table.to_pylist()
    assert [(r["game_loop"], r["player_id"]) for r in rows] == [
        (loop, player) for loop in (0, 8, 16, 24, 32, 36) for player in (1, 2)
    ]
    assert {(r["date"], r["replay_id"], r["source_uri"], r["backend"]) for r in rows} == {
        (LINEAGE.day, LINEAGE.sha256, LINEAGE.uri, "engine")
    }
    frame = {(r["game_loop"], r["player_id"]): r for r in rows}
    p1, p2 = frame[(8, 1)], frame[(8, 2)]
    assert (p1["minerals"], p2["minerals"], p1["vespene"], p1["food_cap"]) == (50 + 2 * 8, 75 + 8, 4, 15.0)
    scv, cc = p1["units"]
    assert (scv["tag"], scv["unit_name"], scv["x"], scv["y"], scv["z"]) == (1001, "SCV", 32.0, 40.0, 10.0)
    assert scv["orders"] == [
        {"ability_id": 295, "target_unit_tag": 16001, "target_x": None, "target_y": None, "progress": 0.5}
    ]  # seen only from player 1's perspective
    assert (cc["unit_name"], cc["build_progress"], cc["is_complete"], cc["energy"]) == (
        "CommandCenter",
        0.25,
        False,
        50.0,
    )
    assert scv["shield"] is None  # the engine did not send one: null, never invented
    drone = p2["units"][1]
    assert (drone["tag"], drone["unit_name"]) == (2002, "Drone")  # hidden from player 1: the merge has it
    assert drone["orders"][0]["target_x"] == 100.0  # player 2's own orders
    assert frame[(16, 2)]["dead_units"] == [] and frame[(24, 2)]["dead_units"] == [2002]
    assert [u["tag"] for u in frame[(24, 2)]["units"]] == [2001]
    assert frame[(8, 1)]["upgrade_ids"] == [] and frame[(16, 1)]["upgrade_ids"] == [1]
    assert frame[(16, 1)]["upgrades"] == upgrade_names([1]) and frame[(16, 2)]["upgrade_ids"] == []


def test_stub_end_observation_is_not_a_second_frame(controller: Any) -> None:
    """pysc2 turns SC2's end-of-replay stub into a copy of the previous observation: one frame per loop."""
    game = replay_bytes(scenario(game_loops=36, stub_end=True))
    table = pa.Table.from_batches(list(engine_frame_batches(controller, game, LINEAGE, step_mul=8)))
    keys = [(r["game_loop"], r["player_id"]) for r in table.select(["game_loop", "player_id"]).to_pylist()]
    assert keys == [(loop, player) for loop in (0, 8, 16, 24, 32) for player in (1, 2)]


def test_engine_refuses_another_build_and_unreadable_replays(controller: Any, shared_data: Path) -> None:
    other = replay_bytes(scenario(base_build=75800))
    with pytest.raises(Sc2EngineError, match=r"replay base build 75800 .*this engine is Base75689"):
        list(engine_frame_batches(controller, other, LINEAGE))
    real = (shared_data / "sc2" / "replay_06.SC2Replay").read_bytes()  # 4.10.1: not the engine's build
    with pytest.raises(Sc2EngineError, match=r"replay base build 75800 .*this engine is Base75689"):
        list(engine_frame_batches(controller, real, LINEAGE))
    with pytest.raises(Sc2EngineError, match=r"cannot read the replay \(ParsingError"):
        list(engine_frame_batches(controller, b"MPQ is what a replay starts with; not this", LINEAGE))
    refused = replay_bytes(scenario(start_error="InvalidMapData"))
    with pytest.raises(Sc2EngineError, match=r"SC2 refused to start the replay: .*InvalidMapData"):
        list(engine_frame_batches(controller, refused, LINEAGE))
    ok = list(engine_frame_batches(controller, replay_bytes(scenario(game_loops=8)), LINEAGE))
    assert sum(b.num_rows for b in ok) == 4  # the same instance still plays the next replay


def test_dagster_and_fast_protobuf_live_together() -> None:
    """pys2clientprotocol's regenerated code runs on protobuf's upb backend in the same process as Dagster."""
    import dagster
    from google.protobuf.internal import api_implementation

    assert dagster.__version__
    assert api_implementation.Type() == "upb"  # not "python": ~250x slower on a 400-unit observation
    obs = sc_pb.ResponseObservation()
    obs.observation.raw_data.units.add(tag=1).pos.x = 3.0
    parsed = sc_pb.ResponseObservation.FromString(obs.SerializeToString())
    assert parsed.observation.raw_data.units[0].pos.x == 3.0
