"""The fast game-event walk agrees with Blizzard's s2protocol on every real replay, and so do the APMs."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from s2protocol import versions
from s2protocol.decoders import BitPackedBuffer

from replay_assets.sources.sc2.fast_game_events import (
    ACTION_EVENTS,
    LEAVE_EVENT,
    GameEventsDecodeError,
    UserActions,
    _Compiler,
    _read_bits,
    game_event_actions,
    game_event_trace,
)
from replay_assets.sources.sc2.replay import (
    LOOPS_PER_SECOND,
    Sc2Replay,
    Sc2ReplayError,
    open_replay,
    player_apms,
)
from replay_assets_tests.sources.sc2.helpers import NO_EXACT_DECODER, all_replays, sc2_path


def s2protocol_events(replay: Sc2Replay) -> tuple[list[dict[str, Any]], Exception | None]:
    """Every event s2protocol yields before it stops, and its error if it stops early."""
    events: list[dict[str, Any]] = []
    try:
        for event in replay.protocol.decode_replay_game_events(replay.member("replay.game.events")):
            events.append(event)
    except Exception as exc:
        return events, exc
    return events, None


def reference_apms(replay: Sc2Replay) -> dict[int, float | None] | None:
    """``player_apms`` as it was before the fast walk: s2protocol's events, None when they fail."""
    events, error = s2protocol_events(replay)
    if error is not None:
        return None
    players = replay.players()
    by_user = {p.user_id: p.player_id for p in players if p.user_id is not None}
    actions = dict.fromkeys(by_user.values(), 0)
    left = dict.fromkeys(by_user.values(), replay.game_loops)
    for event in events:
        pid = by_user.get(event["_userid"]["m_userId"])
        if pid is None:
            continue
        if event["_event"] == LEAVE_EVENT:
            left[pid] = min(left[pid], event["_gameloop"])
        elif event["_event"] in ACTION_EVENTS:
            actions[pid] += 1
    out: dict[int, float | None] = {p.player_id: None for p in players}
    for pid, count in actions.items():
        minutes = left[pid] / LOOPS_PER_SECOND / 60
        out[pid] = count / minutes if minutes > 0 else 0.0
    return out


def with_game_events(shared: Path) -> list[Sc2Replay]:
    replays = [open_replay(path.read_bytes(), str(path)) for path in all_replays(shared)]
    return [r for r in replays if r.has_member("replay.game.events")]


def test_trace_equals_s2protocol_on_every_real_replay(shared_data: Path) -> None:
    decoded = 0
    for replay in with_game_events(shared_data):
        events, error = s2protocol_events(replay)
        expected = [(e["_gameloop"], e["_userid"]["m_userId"], e["_eventid"], e["_bits"]) for e in events]
        if error is not None:  # both refuse the stream
            with pytest.raises(GameEventsDecodeError):
                game_event_trace(replay.member("replay.game.events"), replay.protocol)
            continue
        trace = game_event_trace(replay.member("replay.game.events"), replay.protocol)
        assert trace == expected, replay.uri
        names = {e: name for e, (_, name) in replay.protocol.game_event_types.items()}
        assert [names[e] for _, _, e, _ in trace] == [e["_event"] for e in events], replay.uri
        decoded += 1
    assert decoded >= 9


def test_actions_equal_counts_over_s2protocol_events(shared_data: Path) -> None:
    for replay in with_game_events(shared_data):
        events, error = s2protocol_events(replay)
        if error is not None:
            continue
        expected: dict[int, UserActions] = {}
        for e in events:
            user = e["_userid"]["m_userId"]
            old = expected.get(user, UserActions(0, None))
            if e["_event"] in ACTION_EVENTS:
                expected[user] = UserActions(old.actions + 1, old.left_at)
            elif e["_event"] == LEAVE_EVENT and old.left_at is None:
                expected[user] = UserActions(old.actions, e["_gameloop"])
        got = game_event_actions(replay.member("replay.game.events"), replay.protocol)
        assert {u: a for u, a in got.items() if a != UserActions(0, None)} == expected, replay.uri
        assert sum(a.actions for a in got.values()) > 0, replay.uri


def test_apms_equal_the_s2protocol_computation(shared_data: Path) -> None:
    compared = 0
    for replay in with_game_events(shared_data):
        try:
            players = replay.players()
        except Sc2ReplayError:
            continue  # no details: replay_metadata never asks for APM
        expected = reference_apms(replay)
        if expected is None:
            with pytest.raises(Sc2ReplayError):
                player_apms(replay, players)
            continue
        assert player_apms(replay, players) == expected, replay.uri
        compared += 1
    assert compared >= 9


def test_undecodable_stream_keeps_s2protocols_reason(shared_data: Path) -> None:
    path = sc2_path(shared_data, NO_EXACT_DECODER)
    replay = open_replay(path.read_bytes(), str(path))
    _, error = s2protocol_events(replay)
    assert error is not None
    with pytest.raises(Sc2ReplayError) as caught:
        player_apms(replay, replay.players())
    assert caught.value.reason.startswith("replay.game.events does not decode: CorruptedError: eventid(")


def test_truncated_stream_is_an_error_with_s2protocols_reason(shared_data: Path, monkeypatch) -> None:
    path = sc2_path(shared_data, "ladder_4.7.0.70154")
    replay = open_replay(path.read_bytes(), str(path))
    contents = replay.member("replay.game.events")[:-1]
    with pytest.raises(GameEventsDecodeError):
        game_event_actions(contents, replay.protocol)
    players = replay.players()
    monkeypatch.setattr(replay, "member", lambda name: contents)
    with pytest.raises(Sc2ReplayError, match=r"replay\.game\.events does not decode: TruncatedError"):
        player_apms(replay, players)


def test_protocol_without_user_ids_is_an_error() -> None:
    protocol = versions.build(15405)  # s2protocol has no replay_userid_typeid for the oldest builds
    assert protocol.replay_userid_typeid is None
    with pytest.raises(GameEventsDecodeError, match="replay_userid_typeid"):
        game_event_actions(b"\x00\x00\x00", protocol)


def test_generated_reads_equal_s2protocols_bit_reader() -> None:
    rng = random.Random(7)
    data = bytes(rng.randrange(256) for _ in range(16))
    compiler = _Compiler(versions.build(80949))
    for n in range(1, 34):
        variants = {}
        for a in (None, *range(8)):
            out: list[str] = []
            compiler.read("v", (0, n), out, "    ", a)
            namespace = {"_read_bits": _read_bits}
            exec("def read(data, p):\n" + "\n".join(out) + "\n    return v, p\n", namespace)
            variants[a] = namespace["read"]
        for start in range(0, 40):
            buffer = BitPackedBuffer(data)
            buffer.read_bits(start)
            expected = (buffer.read_bits(n), start + n)
            assert _read_bits(data, start, n) == expected[0], (start, n)
            assert variants[None](data, start) == expected, (start, n)
            assert variants[start % 8](data, start) == expected, (start, n)
