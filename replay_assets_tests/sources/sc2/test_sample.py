"""The synthetic ``.SC2Replay`` writer: our readers, s2protocol and sc2reader all read what it wrote."""

from __future__ import annotations

import datetime as dt
import io
import random
import warnings
from pathlib import Path

import mpyq
import numpy as np
import pyarrow as pa
import pytest
from s2protocol import versions

from replay_assets.sources.contract import Lineage
from replay_assets.sources.sc2.replay import open_replay, replay_metadata
from replay_assets.sources.sc2.sample import (
    BASE_BUILD,
    Sc2PlayerSpec,
    Sc2SampleReplay,
    sc2_replay,
    sc2_replay_bytes,
)
from replay_assets.sources.sc2.sample_encoding import BitPackedEncoder, VersionedEncoder, encode_event_stream
from replay_assets.sources.sc2.sample_game import STATS_EVERY
from replay_assets.sources.sc2.schema import SC2_GROUND_TRUTH_FRAMES
from replay_assets.sources.sc2.tracker import tracker_frames

PLAYED_AT = dt.datetime(2025, 10, 15, 18, 42, 7, tzinfo=dt.UTC)
PLAYERS = (Sc2PlayerSpec("Kestrel", "Terran", 3480), Sc2PlayerSpec("Mirage", "Zerg", 2915))
GAME_LOOPS = 5376  # 4 game minutes
STEP = 16


@pytest.fixture(scope="module")
def replay() -> Sc2SampleReplay:
    return sc2_replay(random.Random(7), played_at=PLAYED_AT, game_loops=GAME_LOOPS, players=PLAYERS)


@pytest.fixture(scope="module")
def replay_path(replay: Sc2SampleReplay, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sc2") / "sample.SC2Replay"
    path.write_bytes(replay.data)
    return path


def source(data: bytes) -> Lineage:
    return Lineage.of_bytes(data, PLAYED_AT.date(), "s3://demo/sc2/sample.SC2Replay")


def frames(data: bytes) -> pa.Table:
    batches = list(tracker_frames(data, source(data), step_mul=STEP))
    return pa.Table.from_batches(batches, schema=SC2_GROUND_TRUTH_FRAMES)


def test_open_replay_reads_the_header(replay: Sc2SampleReplay) -> None:
    opened = open_replay(replay.data, "mem://sample")
    assert (opened.base_build, opened.game_version) == (BASE_BUILD, "4.10.0.75689")
    assert opened.decoder_exact and opened.game_loops == GAME_LOOPS
    names = {n.decode() for n in opened.archive.files}
    assert {"replay.details", "replay.initData", "replay.tracker.events", "replay.game.events"} <= names
    assert {"replay.attributes.events", "replay.message.events"} <= names


def test_metadata_row_is_valid_with_the_given_players(replay: Sc2SampleReplay) -> None:
    row = replay_metadata(replay.data, source(replay.data))
    assert row["valid"] is True, row["invalid_reasons"]
    assert row["decoder_exact"] is True and row["decoder_build"] == BASE_BUILD
    assert row["game_loops"] == GAME_LOOPS and row["played_at"] == PLAYED_AT
    assert row["map_name"] == replay.map_name
    players = row["players"]
    assert [(p["player_id"], p["name"], p["race"], p["mmr"]) for p in players] == [
        (1, "Kestrel", "Terran", 3480),
        (2, "Mirage", "Zerg", 2915),
    ]
    assert {p["result"] for p in players} == {"Win", "Loss"}
    assert next(p for p in players if p["result"] == "Win")["player_id"] == replay.winner
    minutes = GAME_LOOPS / 22.4 / 60
    for p in players:
        assert p["apm"] > 10
        assert p["apm"] == pytest.approx(replay.actions[p["player_id"]] / minutes)


def test_unrecorded_mmr_and_other_races_stay_valid() -> None:
    players = (Sc2PlayerSpec("Basalt", "Protoss", None), Sc2PlayerSpec("Quasar", "Terran", 4100))
    data = sc2_replay_bytes(np.random.default_rng(3), played_at=PLAYED_AT, game_loops=3000, players=players)
    row = replay_metadata(data, source(data))
    assert row["valid"] is True, row["invalid_reasons"]
    assert [(p["race"], p["mmr"]) for p in row["players"]] == [("Protoss", None), ("Terran", 4100)]


def test_tracker_frames_hold_the_generated_stats_and_units(replay: Sc2SampleReplay) -> None:
    rows = frames(replay.data).to_pylist()
    assert {(r["game_loop"], r["player_id"]) for r in rows} == {
        (loop, pid) for loop in range(0, GAME_LOOPS + 1, STEP) for pid in (1, 2)
    }
    by_key = {(r["game_loop"], r["player_id"]): r for r in rows}
    checked = 0
    for stat in replay.stats:
        if stat.loop % STATS_EVERY or stat.loop == GAME_LOOPS:
            continue  # loop 1 and the end are not frame loops (or not the only event there)
        row = by_key[(stat.loop, stat.player_id)]
        assert row["stats_loop"] == stat.loop
        assert (row["minerals"], row["vespene"], row["food_used"], row["food_cap"], row["food_workers"]) == (
            stat.minerals,
            stat.vespene,
            stat.food_used,
            stat.food_made,
            stat.workers,
        )
        checked += 1
    assert checked >= 2 * (GAME_LOOPS // STATS_EVERY) - 2
    start = {r["player_id"]: r for r in rows[:2]}
    assert [u["unit_name"] for u in start[1]["units"]].count("SCV") == 12
    assert [u["unit_name"] for u in start[2]["units"]].count("Drone") == 12
    assert {"CommandCenter", "Hatchery", "Larva", "Overlord"} <= {
        u["unit_name"] for r in start.values() for u in r["units"]
    }
    last = {r["player_id"]: r for r in rows[-2:]}
    names = {u["unit_name"] for r in last.values() for u in r["units"]}
    assert {"Barracks", "SupplyDepot", "SpawningPool"} <= names
    assert sum(len(r["dead_units"]) for r in rows) >= sum(replay.deaths.values()) - 4
    assert {u["position_source"] for r in rows for u in r["units"]} == {"born", "tracked"}
    assert any(r["upgrades"] for r in last.values())


def _sc2reader(path: Path):
    sc2reader = pytest.importorskip("sc2reader")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sc2reader.load_replay(str(path), load_level=4)


def test_sc2reader_reads_the_same_game(replay: Sc2SampleReplay, replay_path: Path) -> None:
    theirs = _sc2reader(replay_path)
    assert theirs.base_build == BASE_BUILD and theirs.frames == GAME_LOOPS
    assert theirs.map_name == replay.map_name and theirs.expansion == "LotV"
    assert theirs.end_time == PLAYED_AT.replace(microsecond=0)
    assert [(p.pid, p.name, p.play_race, p.pick_race) for p in theirs.players] == [
        (1, "Kestrel", "Terran", "Terran"),
        (2, "Mirage", "Zerg", "Zerg"),
    ]
    assert [p.mmr for p in theirs.players] == [3480, 2915]
    assert theirs.winner.players[0].pid == replay.winner
    assert len(theirs.game_events) > 500 and len(theirs.messages) == 3


def test_sc2reader_agrees_with_our_frames(replay: Sc2SampleReplay, replay_path: Path) -> None:
    """At every player-stats event: minerals, vespene and supply, and the count of units alive."""
    theirs = _sc2reader(replay_path)
    table = frames(replay.data)
    rows = {(r["game_loop"], r["player_id"]): r for r in table.to_pylist()}
    units = [
        u
        for u in theirs.objects.values()
        if getattr(u, "started_at", None) is not None and u.owner is not None
    ]
    assert sum(1 for u in units if u.died_at is not None) == sum(replay.deaths.values())
    checked = 0
    for event in theirs.tracker_events:
        if type(event).__name__ != "PlayerStatsEvent":
            continue
        loop = -(-event.frame // STEP) * STEP
        row = rows.get((loop, event.pid))
        if row is None or row["stats_loop"] != event.frame:
            continue
        assert (row["minerals"], row["vespene"], row["food_used"], row["food_cap"]) == (
            event.minerals_current,
            event.vespene_current,
            event.food_used,
            event.food_made,
        ), (loop, event.pid)
        alive = sum(
            1
            for u in units
            if u.owner.pid == event.pid and u.started_at <= loop and (u.died_at is None or u.died_at > loop)
        )
        assert len(row["units"]) == alive, (loop, event.pid)
        checked += 1
    assert checked >= 50


def test_members_are_exactly_what_the_encoders_would_write(replay: Sc2SampleReplay) -> None:
    """Decode each member with s2protocol and re-encode it: byte-identical, so nothing was lost."""
    archive = mpyq.MPQArchive(io.BytesIO(replay.data))
    protocol = versions.build(BASE_BUILD)
    header = archive.header["user_data_header"]["content"]
    encoder = VersionedEncoder(protocol.typeinfos)
    encoder.instance(protocol.replay_header_typeid, protocol.decode_replay_header(header))
    assert encoder.getvalue() == header
    details = archive.read_file("replay.details")
    encoder = VersionedEncoder(protocol.typeinfos)
    encoder.instance(protocol.game_details_typeid, protocol.decode_replay_details(details))
    assert encoder.getvalue() == details
    init = archive.read_file("replay.initData")
    packed = BitPackedEncoder(protocol.typeinfos)
    packed.instance(protocol.replay_initdata_typeid, protocol.decode_replay_initdata(init))
    assert packed.getvalue() == init
    game = archive.read_file("replay.game.events")
    events = [
        (e["_gameloop"], e["_userid"]["m_userId"], e["_eventid"], e)
        for e in protocol.decode_replay_game_events(game)
    ]
    again = encode_event_stream(
        BitPackedEncoder(protocol.typeinfos),
        protocol,
        protocol.game_eventid_typeid,
        protocol.game_event_types,
        events,
    )
    assert again == game
    tracker = archive.read_file("replay.tracker.events")
    events = [
        (e["_gameloop"], None, e["_eventid"], e) for e in protocol.decode_replay_tracker_events(tracker)
    ]
    again = encode_event_stream(
        VersionedEncoder(protocol.typeinfos),
        protocol,
        protocol.tracker_eventid_typeid,
        protocol.tracker_event_types,
        events,
    )
    assert again == tracker


def test_same_seed_same_bytes_other_seed_other_game() -> None:
    def make(seed: int) -> Sc2SampleReplay:
        return sc2_replay(random.Random(seed), played_at=PLAYED_AT)

    first, again, other = make(11), make(11), make(12)
    assert first.data == again.data and first.stats == again.stats
    assert other.data != first.data and other.stats != first.stats
    numpy_a = sc2_replay_bytes(np.random.default_rng(5), played_at=PLAYED_AT)
    assert numpy_a == sc2_replay_bytes(np.random.default_rng(5), played_at=PLAYED_AT)
    for made in (first, other):
        assert 3 * 1344 <= made.game_loops <= 6 * 1344
        assert 8_000 < len(made.data) < 200_000


def test_played_at_must_be_timezone_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        sc2_replay_bytes(random.Random(0), played_at=dt.datetime(2025, 10, 15, 12))
    with pytest.raises(ValueError, match="unknown race"):
        sc2_replay_bytes(
            random.Random(0), played_at=PLAYED_AT, players=(PLAYERS[0], Sc2PlayerSpec("x", "Hybrid"))
        )
