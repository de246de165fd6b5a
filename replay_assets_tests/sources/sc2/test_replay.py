"""SC2 replay opening and metadata rows: real replays, s2protocol directly, sc2reader, broken fixtures."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import pyarrow as pa
import pytest

from replay_assets.errors import FileFormatError
from replay_assets.sources.sc2.replay import (
    Sc2ReplayError,
    ValidityRules,
    choose_protocol,
    filetime_to_utc,
    open_replay,
    replay_metadata,
    split_player_name,
)
from replay_assets.sources.sc2.schema import SC2_REPLAY_METADATA
from replay_assets_tests.sources.sc2.helpers import (
    MISSING_FILES,
    NO_EXACT_DECODER,
    SC2READER_READABLE,
    all_replays,
    sc2_path,
    source_for,
)


def metadata(path: Path, rules: ValidityRules | None = None) -> dict:
    data = path.read_bytes()
    return replay_metadata(data, source_for(data, str(path)), rules or ValidityRules())


def test_every_real_replay_gives_one_row_of_the_schema(shared_data: Path) -> None:
    rows = [metadata(path) for path in all_replays(shared_data)]
    table = pa.Table.from_pylist(rows, schema=SC2_REPLAY_METADATA)
    assert table.num_rows == len(all_replays(shared_data)) >= 11
    for row in rows:
        assert row["valid"] == (row["invalid_reasons"] == [])


def test_values_match_s2protocol_decoded_directly(shared_data: Path) -> None:
    for name in ("ladder_5.0.0.80949_TvZ", "replay_01", "coop_4.11.0.77379_oblivion_express"):
        path = sc2_path(shared_data, name)
        row = metadata(path)
        replay = open_replay(path.read_bytes(), str(path))
        details = replay.protocol.decode_replay_details(replay.member("replay.details"))
        init = replay.protocol.decode_replay_initdata(replay.member("replay.initData"))
        assert row["base_build"] == replay.base_build == row["decoder_build"]
        assert row["decoder_exact"] is True
        assert row["map_name"] == details["m_title"].decode()
        assert row["played_at"] == filetime_to_utc(details["m_timeUTC"])
        assert [p["name"] for p in row["players"]] == [p["m_name"].decode() for p in details["m_playerList"]]
        assert [p["race"] for p in row["players"]] == [p["m_race"].decode() for p in details["m_playerList"]]
        users = init["m_syncLobbyState"]["m_userInitialData"]
        for p in row["players"]:
            rating = users[p["player_id"] - 1].get("m_scaledRating") if p["apm"] is not None else None
            assert p["mmr"] == (rating if rating is not None and rating > 0 else None)


def test_ladder_values(shared_data: Path) -> None:
    row = metadata(sc2_path(shared_data, "ladder_5.0.0.80949_TvZ"))
    assert row["game_version"] == "5.0.0.80949"
    assert row["game_loops"] == 24908
    assert [(p["player_id"], p["race"], p["result"], p["mmr"]) for p in row["players"]] == [
        (1, "Terran", "Loss", 3173),
        (2, "Zerg", "Win", 3141),
    ]
    assert row["played_at"].isoformat().startswith("2020-07-29T03:13:36")
    assert row["valid"]


def test_coop_negative_rating_is_unrecorded_and_ai_players_have_no_apm(shared_data: Path) -> None:
    row = metadata(sc2_path(shared_data, "coop_4.11.0.77379_oblivion_express"))
    assert all(p["mmr"] is None for p in row["players"])
    assert [p["apm"] is None for p in row["players"]] == [False, False] + [True] * 5
    assert "7 players, expected 2" in row["invalid_reasons"]
    assert "161 game loops < 1000" in row["invalid_reasons"]


def test_apm_agrees_with_sc2reader(shared_data: Path) -> None:
    sc2reader = pytest.importorskip("sc2reader")
    from sc2reader.engine import GameEngine
    from sc2reader.engine.plugins import APMTracker, ContextLoader, GameHeartNormalizer

    engine = GameEngine(plugins=[GameHeartNormalizer(), ContextLoader(), APMTracker()])  # not the global one
    for name in ("ladder_5.0.0.80949_TvZ", "ladder_3.16.0.55505_abyssal_reef", "short_4.3.0.64469"):
        path = sc2_path(shared_data, name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = sc2reader.load_replay(str(path), load_level=4, engine=engine)
        ours = {p["player_id"]: p["apm"] for p in metadata(path)["players"]}
        for player in theirs.players:
            if player.is_human:
                assert ours[player.pid] == pytest.approx(player.avg_apm, rel=0.02), (name, player.pid)


@pytest.mark.parametrize(
    ("recorded", "expected"),
    [
        ("&lt;WoS&gt;<sp/>StoicLoofah", ("StoicLoofah", "WoS")),
        ("[JUNGE]<sp/>Lilly", ("Lilly", "JUNGE")),
        ("Rairden", ("Rairden", None)),
        ("Amon&apos;s Forces", ("Amon's Forces", None)),
        ("<sp/>NoClan", ("NoClan", None)),
    ],
)
def test_split_player_name(recorded: str, expected: tuple[str, str | None]) -> None:
    assert split_player_name(recorded) == expected


def test_names_and_clan_tags_agree_with_sc2reader(shared_data: Path) -> None:
    sc2reader = pytest.importorskip("sc2reader")
    clans = 0
    for name in SC2READER_READABLE:
        path = sc2_path(shared_data, name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = sc2reader.load_replay(str(path), load_level=2)
        ours = {p["player_id"]: (p["name"], p["clan_tag"]) for p in metadata(path)["players"]}
        for player in theirs.players:
            clan = getattr(player, "clan_tag", None) or None
            assert ours[player.pid] == (player.name, clan), (name, player.pid)
            clans += clan is not None
    assert clans >= 2  # the ladder and 4v4 replays show clan tags


def test_no_exact_decoder_uses_nearest_older_and_names_what_failed(shared_data: Path) -> None:
    row = metadata(sc2_path(shared_data, NO_EXACT_DECODER))
    assert (row["base_build"], row["decoder_build"], row["decoder_exact"]) == (38749, 32283, False)
    assert row["map_name"] == "Scoria Reactor" and len(row["players"]) == 8
    assert any(
        "replay.initData does not decode with the nearest older protocol 32283" in r
        for r in row["invalid_reasons"]
    )
    assert all(p["apm"] is None for p in row["players"])
    assert not row["valid"]


def test_missing_files_is_a_row_with_the_reason(shared_data: Path) -> None:
    row = metadata(sc2_path(shared_data, MISSING_FILES))
    assert not row["valid"] and row["players"] is None and row["map_name"] is None
    assert "missing archive member replay.details" in row["invalid_reasons"]
    assert "missing archive member replay.tracker.events" in row["invalid_reasons"]
    assert row["base_build"] == 60321


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda b: b[: len(b) // 3], id="truncated"),
        pytest.param(lambda b: b[:2000] + bytes(len(b) - 2000), id="zeroed-after-header"),
        pytest.param(lambda b: b"not an mpq archive at all" * 100, id="not-an-mpq"),
        pytest.param(lambda b: b"", id="empty"),
    ],
)
def test_broken_bytes_give_an_invalid_row_naming_the_problem(shared_data: Path, mangle) -> None:
    data = mangle(sc2_path(shared_data, "ladder_4.7.0.70154").read_bytes())
    row = replay_metadata(data, source_for(data, "s3://bucket/broken.SC2Replay"), ValidityRules())
    assert not row["valid"] and row["invalid_reasons"]
    pa.Table.from_pylist([row], schema=SC2_REPLAY_METADATA)


def test_open_replay_errors_name_the_file() -> None:
    with pytest.raises(Sc2ReplayError) as caught:
        open_replay(b"garbage", "s3://bucket/x.SC2Replay")
    assert isinstance(caught.value, FileFormatError)
    assert str(caught.value).startswith("s3://bucket/x.SC2Replay: not a readable MPQ archive")


def test_corrupted_member_is_named(shared_data: Path) -> None:
    data = bytearray(sc2_path(shared_data, "ladder_4.7.0.70154").read_bytes())
    replay = open_replay(bytes(data), "x.SC2Replay")
    block = replay.archive.get_hash_table_entry("replay.tracker.events")
    entry = replay.archive.block_table[block.block_table_index]
    start = replay.archive.header["offset"] + entry.offset + 20
    data[start : start + 200] = bytes(200)
    with pytest.raises(
        Sc2ReplayError, match=r"x\.SC2Replay: corrupted archive member replay\.tracker\.events"
    ):
        open_replay(bytes(data), "x.SC2Replay").member("replay.tracker.events")


def test_choose_protocol() -> None:
    assert choose_protocol(80949)[1:] == (80949, True)
    assert choose_protocol(38749)[1:] == (32283, False)
    with pytest.raises(LookupError, match="no s2protocol decoder"):
        choose_protocol(10)


def test_every_threshold_is_configurable(shared_data: Path) -> None:
    path = sc2_path(shared_data, "ladder_5.0.0.80949_TvZ")
    assert metadata(path)["valid"]
    strict = {
        "min_game_loops": ValidityRules(min_game_loops=30_000),
        "players": ValidityRules(players=4),
        "min_apm": ValidityRules(min_apm=145.0),
        "min_mmr": ValidityRules(min_mmr=3150),
    }
    expected = {
        "min_game_loops": "24908 game loops < 30000",
        "players": "2 players, expected 4",
        "min_apm": "player 1 APM 139.0 < 145",
        "min_mmr": "player 2 MMR 3141 < 3150",
    }
    for key, rules in strict.items():
        row = metadata(path, rules)
        assert row["invalid_reasons"] == [expected[key]], key
    disabled = ValidityRules(min_game_loops=None, players=None, min_apm=None, min_mmr=None)
    assert metadata(sc2_path(shared_data, "coop_4.11.0.77379_oblivion_express"), disabled)["valid"]
    assert not metadata(sc2_path(shared_data, NO_EXACT_DECODER), dataclasses.replace(disabled))["valid"]


def test_exact_decoder_rule(shared_data: Path) -> None:
    rules = ValidityRules(
        min_game_loops=None, players=None, min_apm=None, min_mmr=None, require_exact_decoder=True
    )
    row = metadata(sc2_path(shared_data, NO_EXACT_DECODER), rules)
    assert "no exact decoder for base build 38749 (used 32283)" in row["invalid_reasons"]


def test_unrecorded_mmr_satisfies_the_rule(shared_data: Path) -> None:
    row = metadata(sc2_path(shared_data, "ladder_3.16.0.55505_abyssal_reef"), ValidityRules(min_mmr=5000))
    assert all(p["mmr"] is None for p in row["players"]) and row["valid"]
