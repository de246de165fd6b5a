"""The fast tracker decoder yields exactly what Blizzard's s2protocol yields, on every real replay."""

from __future__ import annotations

from pathlib import Path

import pytest

from replay_assets.formats.sc2_fast_tracker import TrackerDecodeError, decode_tracker_events
from replay_assets.formats.sc2_replay import open_replay
from replay_assets_tests.sc2_helpers import all_replays


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
