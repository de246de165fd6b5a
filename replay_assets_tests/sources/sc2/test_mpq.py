"""Archive members read within limits: every member of every real replay as ``mpyq`` reads it, and a
member that lies about its size or inflates past its limit refused before the memory is spent."""

from __future__ import annotations

import bz2
import datetime as dt
import io
import random
import tracemalloc
import zlib
from pathlib import Path

import mpyq
import pytest

from replay_assets.sources.contract import Lineage
from replay_assets.sources.sc2.mpq import MemberError, read_member
from replay_assets.sources.sc2.replay import Sc2ReplayError, ValidityRules, open_replay, replay_metadata
from replay_assets.sources.sc2.sample import sc2_replay_bytes
from replay_assets.sources.sc2.sample_encoding import mpq_archive
from replay_assets.sources.sc2.tracker import decode_tracker_state

BZ2 = b"\x10"  # the MPQ compression mask of a bz2 unit
ZLIB = b"\x02"


def test_every_member_of_every_real_replay_reads_as_mpyq_reads_it(shared_data: Path) -> None:
    compared = 0
    for path in sorted((shared_data / "sc2").glob("*.SC2Replay")):
        archive = mpyq.MPQArchive(io.BytesIO(path.read_bytes()))
        for name in [n.decode() for n in archive.files or []]:
            assert read_member(archive, name) == archive.read_file(name), (path.name, name)
            compared += 1
    assert compared > 100


def _replay_with(stored: dict[str, tuple[bytes, int]]) -> bytes:
    """A sample replay whose members in ``stored`` are replaced by the given units and declared sizes."""
    data = sc2_replay_bytes(random.Random(1), played_at=dt.datetime(2025, 10, 14, tzinfo=dt.UTC))
    archive = mpyq.MPQArchive(io.BytesIO(data))
    names = [n.decode() for n in archive.files or [] if n.decode() not in stored]
    files = {n: archive.read_file(n) for n in names if n != "(listfile)"}
    return mpq_archive(archive.header["user_data_header"]["content"], files, stored)


def _archive(data: bytes) -> mpyq.MPQArchive:
    return mpyq.MPQArchive(io.BytesIO(data))


# 64 bz2 streams of 8 MiB of zeros: 2.6 kB that bz2.decompress (and mpyq) would inflate to 512 MiB.
BZ2_BOMB = bz2.compress(bytes(8 << 20)) * 64


def test_a_bz2_bomb_is_refused_at_its_declared_size_without_the_memory() -> None:
    data = _replay_with({"replay.game.events": (BZ2 + BZ2_BOMB, 100_000)})
    tracemalloc.start()
    try:
        with pytest.raises(MemberError, match="bz2 unit inflates to more than the 100000 bytes it may hold"):
            read_member(_archive(data), "replay.game.events")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"{peak} bytes traced refusing a 512 MiB bomb"


def test_a_declared_size_over_the_limit_is_refused_before_reading() -> None:
    data = _replay_with({"replay.tracker.events": (ZLIB + zlib.compress(b"x" * 1000), 2**31)})
    with pytest.raises(MemberError, match=r"declares 2147483648 bytes, more than max_member_bytes=268435456"):
        read_member(_archive(data), "replay.tracker.events")
    with pytest.raises(MemberError, match="more than max_member_bytes=999"):
        read_member(_archive(_replay_with({})), "replay.tracker.events", max_bytes=999)


def test_a_unit_inflating_past_what_it_declares_is_refused() -> None:
    data = _replay_with({"replay.details": (ZLIB + zlib.compress(b"x" * 5000), 4000)})
    with pytest.raises(MemberError, match="zlib unit inflates to more than the 4000 bytes"):
        read_member(_archive(data), "replay.details")
    with pytest.raises(MemberError, match="unsupported compression mask 07"):
        read_member(_archive(_replay_with({"replay.details": (b"\x07abc", 4000)})), "replay.details")


def test_bombed_members_make_an_invalid_metadata_row_and_a_clean_frames_error() -> None:
    bomb = (BZ2 + BZ2_BOMB, 1 << 30)
    data = _replay_with({"replay.tracker.events": bomb, "replay.game.events": bomb})
    source = Lineage(dt.date(2025, 10, 14), "landing/sc2/bomb.SC2Replay", "0" * 64, "sc2/bomb.SC2Replay")
    rules = ValidityRules(max_member_bytes=16 << 20)
    assert open_replay(data, source.uri, rules.limits).game_loops > 0  # the header still reads
    with pytest.raises(
        Sc2ReplayError, match=r"bomb\.SC2Replay: corrupted archive member replay\.tracker\.events"
    ):
        decode_tracker_state(data, source.uri, rules.limits)
    row = replay_metadata(data, source, rules)
    assert row["valid"] is False
    assert any("max_member_bytes=16777216" in reason for reason in row["invalid_reasons"]), row


@pytest.mark.parametrize("loops", [2**20 + 1, 2**31 - 1, 2**32 - 1])
def test_aheader_claiming_too_many_game_loops_is_refused_before_frames_are_allocated(loops: int) -> None:
    from replay_assets_tests.fuzz.targets import header_claiming

    members = _replay_with({})
    archive = _archive(members)
    files = {n.decode(): archive.read_file(n.decode()) for n in archive.files or [] if n != b"(listfile)"}
    data = mpq_archive(header_claiming(archive.header["user_data_header"]["content"], loops), files)
    source = Lineage(dt.date(2025, 10, 14), "landing/sc2/long.SC2Replay", "0" * 64, "sc2/long.SC2Replay")
    message = f"claims {loops} game loops, outside 0..max_game_loops={2**20}"
    with pytest.raises(Sc2ReplayError, match=message):
        decode_tracker_state(data, source.uri)
    row = replay_metadata(data, source)
    assert row["valid"] is False and any(message in r for r in row["invalid_reasons"])
