"""What the fuzz suite feeds and runs: each source's seed files and the per-file work the pipeline does
on one file of that source (reader plus conversion to Arrow), exactly as a day would run it.

A target's ``run`` returns ``"ok"`` or ``"invalid"`` (a row that says the file is not usable, with a
reason) or raises; the runner classifies what it raises. ``codec`` opens the file's container so that
structure edits can be made inside the compressed payload and packed again.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import random
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import lz4.frame
import msgpack
import orjson

from replay_assets.sources.contract import Lineage
from replay_assets_tests.conftest import SHARED_DATA

DAY = dt.date(2025, 10, 14)


@dataclass(frozen=True)
class Seed:
    """One valid file to mutate, and where it came from."""

    name: str  # the file name a case is read under (errors must name it)
    data: bytes
    origin: str  # "shared" (../shared/data) or "sample" (the project's writers)


@dataclass(frozen=True)
class Codec:
    """A container opened to its document and packed again: ``unpack(data) -> object``, ``pack``."""

    unpack: Callable[[bytes], Any]
    pack: Callable[[Any, bytes], bytes]  # (document, the original bytes: which container to use)


@dataclass(frozen=True)
class Target:
    source: str
    name: str
    seeds: Callable[[], list[Seed]]
    run: Callable[[bytes, Lineage], str]
    codec: Codec | None = None
    bombs: Callable[[], Iterator[tuple[str, bytes]]] | None = None


def lineage(source: str, name: str, data: bytes) -> Lineage:
    relative = f"{source}/{DAY.isoformat()}/{name}"
    return Lineage.of_bytes(data, DAY, f"/landing/{relative}", relative)


def _shared(pattern: str) -> list[Seed]:
    return [Seed(p.name, p.read_bytes(), "shared") for p in sorted(SHARED_DATA.glob(pattern))]


def _drain(batches: Any) -> int:
    return sum(batch.num_rows for batch in batches)


# ---------------------------------------------------------------------------------------------------------
# Metta


def _metta_seeds() -> list[Seed]:
    from replay_assets.sources.metta.sample import metta_replay_bytes

    samples = [
        Seed(
            f"sample_v{v}.json.{c[0]}",
            metta_replay_bytes(version=v, compression=c, seed=v, max_steps=60),
            "sample",
        )
        for v, c in [(1, "zlib"), (2, "gzip"), (3, "none")]
    ]
    return _shared("metta/*") + samples


def _metta_run(data: bytes, source: Lineage) -> str:
    from replay_assets.sources.metta.read import READER, MettaReadConfig

    _drain(READER.read(data, source, MettaReadConfig()))
    return "ok"


def _metta_unpack(data: bytes) -> Any:
    if data[:1] == b"\x1f":
        return orjson.loads(gzip.decompress(data))
    if data[:1] == b"\x78":
        return orjson.loads(zlib.decompress(data))
    return orjson.loads(data)


def _metta_pack(doc: Any, original: bytes) -> bytes:
    text = _json_text(doc)
    if original[:1] == b"\x1f":
        return gzip.compress(text, mtime=0)
    return zlib.compress(text) if original[:1] == b"\x78" else text


def _json_text(doc: Any) -> bytes:
    try:
        return orjson.dumps(doc)
    except (TypeError, orjson.JSONEncodeError):  # ints past 64 bits, nesting past orjson's depth
        import json

        return json.dumps(doc).encode()


def _metta_bombs() -> Iterator[tuple[str, bytes]]:
    inflater = zlib.compressobj(9)
    chunk = b" " * (64 << 20)
    body = b"".join(inflater.compress(chunk) for _ in range(10)) + inflater.flush()  # 640 MiB of spaces
    yield "bomb_zlib_640MiB.json.z", body
    yield "bomb_gzip_640MiB.json.gz", gzip.compress(b" " * (640 << 20), compresslevel=1, mtime=0)
    yield "deep_nesting.json", b"[" * 200_000 + b"]" * 200_000
    yield (
        "max_steps_1e9.json.z",
        zlib.compress(
            orjson.dumps(
                {
                    "version": 2,
                    "max_steps": 10**9,
                    "num_agents": 1,
                    "objects": [],
                    "item_names": [],
                    "action_names": [],
                    "map_size": [10, 10],
                    "type_names": ["agent"],
                }
            )
        ),
    )


# ---------------------------------------------------------------------------------------------------------
# StarCraft II: metadata (the READER) and tracker frames


def _sc2_seeds() -> list[Seed]:
    from replay_assets.sources.sc2.sample import sc2_replay_bytes

    played = dt.datetime(2025, 10, 14, 12, tzinfo=dt.UTC)
    sample = Seed("sample.SC2Replay", sc2_replay_bytes(random.Random(7), played_at=played), "sample")
    return [*_shared("sc2/*.SC2Replay"), sample]


def _sc2_metadata_run(data: bytes, source: Lineage) -> str:
    from replay_assets.sources.sc2.replay import READER, ValidityRules

    (batch,) = READER.read(data, source, ValidityRules(min_game_loops=None, min_apm=None, min_mmr=None))
    reasons = batch.column("invalid_reasons")[0].as_py()
    if not batch.column("valid")[0].as_py():
        if not reasons:
            raise AssertionError("an invalid metadata row without a reason")
        return "invalid"
    return "ok"


def _sc2_frames_run(data: bytes, source: Lineage) -> str:
    from replay_assets.sources.sc2.tracker import decode_tracker_state, state_frames

    state = decode_tracker_state(data, source.uri)
    _drain(state_frames(state, source))
    return "ok"


def _sc2_members(data: bytes) -> dict[str, Any]:
    import mpyq

    archive = mpyq.MPQArchive(io.BytesIO(data))
    names = [n.decode() for n in archive.files or [] if n != b"(listfile)"]
    members = {name: archive.read_file(name) for name in names}
    return {"user_data": archive.header["user_data_header"]["content"], "members": members}


def _sc2_pack(doc: Any, original: bytes) -> bytes:
    from replay_assets.sources.sc2.sample_encoding import mpq_archive

    members = doc.get("members")
    if not isinstance(members, dict) or not isinstance(doc.get("user_data"), bytes):
        raise ValueError("only members' bytes are edited")  # the case is skipped
    if not all(isinstance(v, bytes) for v in members.values()):
        raise ValueError("a member must stay bytes")
    return mpq_archive(doc["user_data"], members)


def _sc2_bombs() -> Iterator[tuple[str, bytes]]:
    import bz2

    from replay_assets.sources.sc2.sample import sc2_replay_bytes
    from replay_assets.sources.sc2.sample_encoding import mpq_archive

    played = dt.datetime(2025, 10, 14, 12, tzinfo=dt.UTC)
    doc = _sc2_members(sc2_replay_bytes(random.Random(7), played_at=played))
    members = doc["members"]
    bomb = b"\x10" + bz2.compress(bytes(8 << 20)) * 384  # 3 GiB of zeros in 15 kB
    for member in ("replay.tracker.events", "replay.game.events", "replay.details"):
        rest = {k: v for k, v in members.items() if k != member}
        yield f"bomb_bz2_{member}.SC2Replay", mpq_archive(doc["user_data"], rest, {member: (bomb, 3 << 30)})
        yield f"liar_{member}.SC2Replay", mpq_archive(doc["user_data"], rest, {member: (bomb, 1 << 20)})
    for loops in (2**31 - 1, 2**32 - 1):
        yield f"game_loops_{loops}.SC2Replay", mpq_archive(header_claiming(doc["user_data"], loops), members)


def header_claiming(user_data: bytes, game_loops: int) -> bytes:
    """A replay header re-encoded with another ``m_elapsedGameLoops`` (its other values kept)."""
    from s2protocol import versions

    from replay_assets.sources.sc2.sample_encoding import VersionedEncoder

    protocol = versions.latest()
    header = protocol.decode_replay_header(user_data)
    header["m_elapsedGameLoops"] = game_loops
    encoder = VersionedEncoder(protocol.typeinfos)
    encoder.instance(protocol.replay_header_typeid, header)
    return encoder.getvalue()


# ---------------------------------------------------------------------------------------------------------
# Townlet: the steps READER and the index's verification (both decode the whole recording)


def _townlet_seeds() -> list[Seed]:
    from replay_assets.sources.townlet.sample import townlet_recording_bytes

    samples = [
        Seed(
            f"episode_{i:06d}.msgpack.lz4",
            townlet_recording_bytes(
                episode_id=i,
                seed=i,
                num_steps=40,
                compression=c,
                layout_shape=s,
                timestamp=1.76e9,
                drop_steps=d,
            ),
            "sample",
        )
        for i, (c, s, d) in enumerate([("lz4", "runner", 0), ("lz4", "flat", 3), ("none", "runner", 0)], 900)
    ]
    return _shared("townlet/*/recordings/*") + samples


def _townlet_steps_run(data: bytes, source: Lineage) -> str:
    from replay_assets.sources.townlet.read import READER, TownletReadConfig

    _drain(READER.read(data, source, TownletReadConfig()))
    return "ok"


def _townlet_index_run(data: bytes, source: Lineage) -> str:
    from replay_assets.sources.townlet.read import recordings_index_batch, recordings_index_row

    row = recordings_index_row(None, data, source.uri, date=DAY, checkpoint="fuzz", index_uri=None)
    recordings_index_batch([row])
    reasons = [r for r in (row["invalid_reason"] or "").split("; ") if not r.startswith("unindexed")]
    return "invalid" if reasons else "ok"


def _townlet_unpack(data: bytes) -> Any:
    raw = lz4.frame.decompress(data) if data[:4] == b"\x04\x22\x4d\x18" else data
    return msgpack.unpackb(raw, raw=False, strict_map_key=False)


def _townlet_pack(doc: Any, original: bytes) -> bytes:
    raw = msgpack.packb(doc, use_bin_type=True)
    return lz4.frame.compress(raw) if original[:4] == b"\x04\x22\x4d\x18" else raw


def _townlet_bombs() -> Iterator[tuple[str, bytes]]:
    yield "bomb_lz4_1GiB.msgpack.lz4", lz4.frame.compress(bytes(1 << 30))
    yield "claims_2e40.msgpack.lz4", lz4_claiming(2**40)


def lz4_claiming(size: int) -> bytes:
    """A 1-byte lz4 frame whose header claims ``size`` bytes of content (the header checksum redone)."""
    import xxhash  # lz4's own header checksum: the second byte of xxh32 of the descriptor

    descriptor = bytes([0b01101000, 0b01000000]) + size.to_bytes(8, "little")
    check = (xxhash.xxh32(descriptor).intdigest() >> 8) & 0xFF
    block = (1 | 0x80000000).to_bytes(4, "little") + b"\x80"  # one stored (uncompressed) byte
    return b"\x04\x22\x4d\x18" + descriptor + bytes([check]) + block + bytes(4)


# ---------------------------------------------------------------------------------------------------------
# TMRL player runs


def _tmrl_seeds() -> list[Seed]:
    from replay_assets.sources.tmrl.sample import tmrl_player_run_bytes

    at = dt.datetime(2025, 10, 14, 10, 15, tzinfo=dt.UTC)
    samples = [
        Seed(
            f"20251014_10150{i}_sample{i}.pkl",
            tmrl_player_run_bytes(
                run_id=f"20251014_10150{i}_sample{i}",
                recorded_at=at,
                layout=layout,
                num_samples=30,
                seed=i,
                legacy=legacy,
            ),
            "sample",
        )
        for i, (layout, legacy) in enumerate([("lidar", False), ("full", False), ("lidar", True)])
    ]
    return [s for s in _shared("tmrl/player_runs/*.pkl") if len(s.data) < 1 << 20] + samples


def _tmrl_run(data: bytes, source: Lineage) -> str:
    from replay_assets.sources.tmrl.read import READER

    _drain(READER.read(data, source, READER.config()))
    return "ok"


def _tmrl_unpack(data: bytes) -> Any:
    """The run as plain Python and numpy, read with the project's restricted unpickler (never pickle)."""
    import numpy as np

    from replay_assets.sources.tmrl.unpickle import unpickle

    def plain(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return np.array(value)  # a plain ndarray copy of the reader's array subclass
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(plain(v) for v in value)
        return value

    return plain(unpickle(data, "seed.pkl", 1 << 30))


def _tmrl_pack(doc: Any, original: bytes) -> bytes:
    import pickle

    return pickle.dumps(doc, protocol=4)


def _tmrl_bombs() -> Iterator[tuple[str, bytes]]:
    import pickle

    from replay_assets.sources.tmrl.sample import tmrl_player_run_object

    at = dt.datetime(2025, 10, 14, 10, 15, tzinfo=dt.UTC)
    run = tmrl_player_run_object(
        run_id="20251014_101500_shared", recorded_at=at, layout="full", num_samples=2, seed=0
    )
    # One sample referenced a million times: 2 bytes a reference in the pickle (its memo), 16 kB of
    # images a sample once expanded.
    assert isinstance(run, dict)
    run["samples"] = [run["samples"][0]] * 1_000_000
    yield "20251014_101500_shared.pkl", pickle.dumps(run, protocol=4)


TARGETS: dict[str, Target] = {
    t.name: t
    for t in [
        Target("metta", "metta", _metta_seeds, _metta_run, Codec(_metta_unpack, _metta_pack), _metta_bombs),
        Target(
            "sc2", "sc2_metadata", _sc2_seeds, _sc2_metadata_run, Codec(_sc2_members, _sc2_pack), _sc2_bombs
        ),
        Target("sc2", "sc2_frames", _sc2_seeds, _sc2_frames_run, Codec(_sc2_members, _sc2_pack), _sc2_bombs),
        Target(
            "townlet",
            "townlet_steps",
            _townlet_seeds,
            _townlet_steps_run,
            Codec(_townlet_unpack, _townlet_pack),
            _townlet_bombs,
        ),
        Target(
            "townlet",
            "townlet_index",
            _townlet_seeds,
            _townlet_index_run,
            Codec(_townlet_unpack, _townlet_pack),
            _townlet_bombs,
        ),
        Target("tmrl", "tmrl", _tmrl_seeds, _tmrl_run, Codec(_tmrl_unpack, _tmrl_pack), _tmrl_bombs),
    ]
}

__all__ = ["TARGETS", "Seed", "Target", "lineage"]
