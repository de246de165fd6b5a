"""The fast tracker decoder yields exactly what Blizzard's s2protocol yields, on every real replay."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from s2protocol import versions
from s2protocol.decoders import CorruptedError

from replay_assets.sources.sc2 import fast_tracker as sc2_fast_tracker
from replay_assets.sources.sc2.fast_tracker import TrackerDecodeError, decode_tracker_events
from replay_assets.sources.sc2.replay import open_replay
from replay_assets_tests.sources.sc2.helpers import all_replays


def test_identical_to_s2protocol_on_every_real_replay(shared_data: Path) -> None:
    checked = 0
    for path in all_replays(shared_data):
        replay = open_replay(path.read_bytes(), str(path))
        if not replay.has_member("replay.tracker.events"):
            continue  # anonymized_*_missing_files: nothing to compare
        contents = replay.member("replay.tracker.events")
        expected = list(replay.protocol.decode_replay_tracker_events(contents))
        assert list(decode_tracker_events(contents, replay.protocol)) == expected, path.name
        checked += 1
    assert checked >= 9


def test_truncated_stream_is_an_error_not_a_short_list(shared_data: Path) -> None:
    path = shared_data / "sc2" / "short_4.3.0.64469.SC2Replay"
    replay = open_replay(path.read_bytes(), str(path))
    contents = replay.member("replay.tracker.events")
    with pytest.raises(TrackerDecodeError):
        list(decode_tracker_events(contents[: len(contents) // 2 + 3], replay.protocol))


def test_garbage_is_an_error(shared_data: Path) -> None:
    path = shared_data / "sc2" / "short_4.3.0.64469.SC2Replay"
    replay = open_replay(path.read_bytes(), str(path))
    with pytest.raises(TrackerDecodeError):
        list(decode_tracker_events(b"\x05\x07" + bytes(range(200)), replay.protocol))


# Hand-made streams in Blizzard's versioned encoding: each is decoded by s2protocol too, so the layouts
# the compiled decoders do not expect (fields reordered, missing or unknown, long tags and blobs) are
# checked against the reference, and the generic walk is seen to take over.

PROTOCOL = versions.build(80949)
STATS, BORN, DONE, POSITIONS = (
    "NNet.Replay.Tracker.SPlayerStatsEvent",
    "NNet.Replay.Tracker.SUnitBornEvent",
    "NNet.Replay.Tracker.SUnitDoneEvent",
    "NNet.Replay.Tracker.SUnitPositionsEvent",
)


def _varint(value: int) -> bytes:
    """Sign in bit 0, then 6 bits, then 7 bits per byte; bit 7 says another byte follows."""
    magnitude = abs(value)
    byte = (magnitude & 0x3F) << 1 | (value < 0)
    magnitude >>= 6
    out = bytearray()
    while magnitude:
        out.append(byte | 0x80)
        byte, magnitude = magnitude & 0x7F, magnitude >> 7
    out.append(byte)
    return bytes(out)


def _int(value: int) -> bytes:
    return b"\x09" + _varint(value)


def _blob(data: bytes) -> bytes:
    return b"\x02" + _varint(len(data)) + data


def _optional(value: bytes | None) -> bytes:
    return b"\x04\x00" if value is None else b"\x04\x01" + value


def _array(items: list[bytes]) -> bytes:
    return b"\x00" + _varint(len(items)) + b"".join(items)


def _struct(fields: list[tuple[int, bytes]]) -> bytes:
    return b"\x05" + _varint(len(fields)) + b"".join(_varint(tag) + value for tag, value in fields)


def _event(name: str, fields: list[tuple[str | int, bytes]], loop_delta: int = 1) -> bytes:
    """One event of ``PROTOCOL``: fields named (their tag looked up) or given by a raw tag."""
    eventid, typeid = next((i, t) for i, (t, n) in PROTOCOL.tracker_event_types.items() if n == name)
    return b"\x03" + _varint(0) + _int(loop_delta) + _int(eventid) + _struct(_tagged(typeid, fields))


def _tagged(typeid: int, fields: list[tuple[str | int, bytes]]) -> list[tuple[int, bytes]]:
    tags = {name: tag for name, _, tag in PROTOCOL.typeinfos[typeid][1][0]}
    return [(tags[key] if isinstance(key, str) else key, value) for key, value in fields]


def _stats(values: list[bytes], order: list[int] | None = None) -> bytes:
    """An ``m_stats`` struct of the given encoded values (tags 0..), in tag order or ``order``."""
    stats_typeid = PROTOCOL.typeinfos[PROTOCOL.tracker_event_types[0][0]][1][0][1][1]
    order = order if order is not None else list(range(len(values)))
    return _struct(_tagged(stats_typeid, [(tag, values[tag]) for tag in order]))


def _born(**overrides: bytes | None) -> list[tuple[str | int, bytes]]:
    fields: dict[str, bytes | None] = {
        "m_unitTagIndex": _int(300),
        "m_unitTagRecycle": _int(1),
        "m_unitTypeName": _blob(b"Probe"),
        "m_controlPlayerId": _int(1),
        "m_upkeepPlayerId": _int(1),
        "m_x": _int(130),
        "m_y": _int(-7),
        "m_creatorUnitTagIndex": _optional(_int(70_000)),
        "m_creatorUnitTagRecycle": _optional(None),
        "m_creatorAbilityName": _optional(_blob(b"NexusTrain")),
    }
    fields.update(overrides)
    return [(name, value) for name, value in fields.items() if value is not None]


STATS_VALUES = [_int((-1) ** i * (i * 977) ** (1 + i % 3)) for i in range(39)]  # 1 to 5 bytes, both signs

COMPILED_LAYOUTS = {
    "unit done": _event(DONE, [("m_unitTagIndex", _int(5)), ("m_unitTagRecycle", _int(1))]),
    "unit born, long and negative ints": _event(BORN, _born()),
    "player stats, long and negative ints": _event(
        STATS, [("m_playerId", _int(1)), ("m_stats", _stats(STATS_VALUES))]
    ),
    "unit positions": _event(
        POSITIONS,
        [("m_firstUnitIndex", _int(9)), ("m_items", _array([_int(v) for v in (3, -4, 200, 1 << 20)]))],
    ),
    "several events, loop deltas": _event(
        DONE, [("m_unitTagIndex", _int(5)), ("m_unitTagRecycle", _int(1))], 0
    )
    + _event(BORN, _born(), 5000),
}

FALLBACK_LAYOUTS = {
    "fields reversed": _event(DONE, [("m_unitTagRecycle", _int(1)), ("m_unitTagIndex", _int(5))]),
    "field missing": _event(BORN, _born(m_creatorAbilityName=None)),
    "unknown field appended": _event(
        DONE, [("m_unitTagIndex", _int(5)), ("m_unitTagRecycle", _int(1)), (7, _int(3))]
    ),
    "unknown field in the middle": _event(
        DONE, [("m_unitTagIndex", _int(5)), (6, _blob(b"x")), ("m_unitTagRecycle", _int(1))]
    ),
    "multi-byte tag": _event(
        DONE, [("m_unitTagIndex", _int(5)), ("m_unitTagRecycle", _int(1)), (100, _int(3))]
    ),
    "blob of two-byte length": _event(BORN, _born(m_unitTypeName=_blob(b"Zergling" * 20))),
    "stats fields swapped": _event(
        STATS, [("m_playerId", _int(2)), ("m_stats", _stats(STATS_VALUES, [1, 0, *range(2, 39)]))]
    ),
    "stats field missing": _event(
        STATS, [("m_playerId", _int(2)), ("m_stats", _stats(STATS_VALUES, list(range(38))))]
    ),
}

# Layouts s2protocol rejects (a value of the wrong kind): an error here too, whichever path sees it.
CORRUPT_LAYOUTS = {
    "blob among an array's ints": _event(
        POSITIONS, [("m_firstUnitIndex", _int(9)), ("m_items", _array([_int(1), _blob(b"")]))]
    ),
    "blob for an int field": _event(DONE, [("m_unitTagIndex", _blob(b"5")), ("m_unitTagRecycle", _int(1))]),
    "blob for a stats int": _event(
        STATS, [("m_playerId", _int(2)), ("m_stats", _stats([*STATS_VALUES[:38], _blob(b"")]))]
    ),
}


@pytest.fixture
def generic_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """How many values the generic walk decoded (the compiled decoders are rebuilt to call the spy)."""
    calls: list[int] = []
    generic = sc2_fast_tracker._value

    def spy(buf: bytes, pos: int, typeid: int, kinds: list[tuple[int, str, Any]]) -> tuple[Any, int]:
        calls.append(typeid)
        return generic(buf, pos, typeid, kinds)

    monkeypatch.setattr(sc2_fast_tracker, "_value", spy)
    sc2_fast_tracker._schema.cache_clear()
    yield calls
    sc2_fast_tracker._schema.cache_clear()


@pytest.mark.parametrize("stream", COMPILED_LAYOUTS.values(), ids=COMPILED_LAYOUTS.keys())
def test_expected_layouts_decode_without_the_generic_walk(stream: bytes, generic_calls: list[int]) -> None:
    expected = list(PROTOCOL.decode_replay_tracker_events(stream))
    assert list(decode_tracker_events(stream, PROTOCOL)) == expected
    assert generic_calls == []


@pytest.mark.parametrize("stream", FALLBACK_LAYOUTS.values(), ids=FALLBACK_LAYOUTS.keys())
def test_unexpected_layouts_fall_back_to_the_generic_walk(stream: bytes, generic_calls: list[int]) -> None:
    expected = list(PROTOCOL.decode_replay_tracker_events(stream))
    assert list(decode_tracker_events(stream, PROTOCOL)) == expected
    assert generic_calls  # the compiled decoder gave up and the generic walk matched s2protocol


@pytest.mark.parametrize("stream", CORRUPT_LAYOUTS.values(), ids=CORRUPT_LAYOUTS.keys())
def test_values_of_the_wrong_kind_are_errors_as_in_s2protocol(stream: bytes) -> None:
    with pytest.raises(CorruptedError):
        list(PROTOCOL.decode_replay_tracker_events(stream))
    with pytest.raises(TrackerDecodeError):
        list(decode_tracker_events(stream, PROTOCOL))


def test_every_truncation_is_an_error_or_a_whole_event_prefix() -> None:
    stream = b"".join([*COMPILED_LAYOUTS.values(), *FALLBACK_LAYOUTS.values()])
    events = list(PROTOCOL.decode_replay_tracker_events(stream))
    ends = list(itertools.accumulate(event["_bits"] // 8 for event in events))
    for cut in range(1, len(stream)):
        if cut in ends:
            assert list(decode_tracker_events(stream[:cut], PROTOCOL)) == events[: ends.index(cut) + 1]
        else:
            with pytest.raises(TrackerDecodeError):
                list(decode_tracker_events(stream[:cut], PROTOCOL))
