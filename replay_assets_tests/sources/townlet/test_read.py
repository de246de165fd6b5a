"""sources/townlet/read.py on the real Townlet recordings and index, and on fixtures built here."""

from __future__ import annotations

import datetime as dt
import hashlib
import pickle
import random
from pathlib import Path
from typing import Any

import lz4.frame
import msgpack
import numpy as np
import pyarrow as pa
import pytest

from replay_assets.errors import ReplayAssetsError
from replay_assets.landing.detect import LZ4_FRAME_MAGIC
from replay_assets.sources.townlet import fast_msgpack as townlet_msgpack
from replay_assets.sources.townlet import read as townlet
from replay_assets.sources.townlet.index import read_recordings_index
from replay_assets.sources.townlet.read import (
    STEP_COLUMNS,
    VERIFICATION_COLUMNS,
    RecordingFormatError,
    decode_recording,
    episode_steps_batch,
    normalize_affordance_layout,
    read_episode_steps,
    recordings_index_batch,
    recordings_index_row,
    verify_recording,
)
from replay_assets.sources.townlet.sample import (
    TownletEpisode as EpisodeSpec,
)
from replay_assets.sources.townlet.sample import (
    recording_file_path,
    townlet_recording_bytes,
    write_townlet_checkpoint,
)
from replay_assets.sources.townlet.schema import TOWNLET_EPISODE_STEPS, TOWNLET_RECORDINGS_INDEX
from replay_assets_tests.conftest import SHARED_DATA

CHECKPOINT = SHARED_DATA / "townlet" / "checkpoints_level2_5"
DAY = dt.date(2025, 10, 14)
UNCOMPRESSED_EPISODES = {140, 141}  # written with the producer's compression: none
STEP_FIELDS = ("step", "position", "meters", "action", "reward", "intrinsic_reward", "done", "q_values",
               "epsilon", "action_masks", "time_of_day", "interaction_progress")  # fmt: skip


@pytest.fixture(scope="module")
def real() -> tuple[Path, list[dict[str, Any]]]:
    """The real checkpoint's directory and its index rows (read through the immutable snapshot)."""
    db = CHECKPOINT / "demo_level2_5.db"
    if not db.is_file():
        pytest.skip(f"real Townlet checkpoint not found at {CHECKPOINT} (../shared beside the checkout)")
    return CHECKPOINT, read_recordings_index(db)


def _bytes(**overrides: Any) -> bytes:
    spec: dict[str, Any] = {
        "episode_id": 7,
        "seed": 3,
        "num_steps": 60,
        "compression": "lz4",
        "layout_shape": "runner",
        "timestamp": 1.76e9,
        "optional_fields": ("q_values", "epsilon", "action_masks"),
    }
    spec.update(overrides)
    return townlet_recording_bytes(**spec)


def _direct(data: bytes) -> dict[str, Any]:
    """The producer's own way: lz4 by magic, then msgpack into Python objects."""
    raw = lz4.frame.decompress(data) if data[:4] == b"\x04\x22\x4d\x18" else data
    return msgpack.unpackb(raw)


def _both_paths(raw: bytes, name: str = "fixture") -> tuple[Any, pa.RecordBatch]:
    """Decode with the fast path and with the generic one; they must agree exactly (or fail alike). The
    verification mode (``steps=False``: checks without building the step columns when it can) must give
    the same episode, or the same error."""
    outcomes = []
    for fast, steps in ((True, True), (False, True), (True, False)):
        try:
            outcomes.append(
                townlet._decode_document(
                    raw, name, compression="none", compressed_size=len(raw), fast=fast, steps=steps
                )
            )
        except RecordingFormatError as exc:
            outcomes.append(exc)
    fast_result, generic_result, verified = outcomes
    if isinstance(generic_result, RecordingFormatError):
        assert str(fast_result) == str(generic_result)
        assert str(verified) == str(generic_result)
        raise generic_result
    assert fast_result[0] == generic_result[0]
    assert fast_result[1].equals(generic_result[1])
    assert fast_result[1].schema.equals(STEP_COLUMNS, check_metadata=True)
    assert verified[0] == generic_result[0] and verified[1] is None
    return generic_result


def _step_rows(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Producer steps as the rows decode_recording should give (float32 rounding where the schema says)."""
    f32 = lambda values: None if values is None else [float(np.float32(v)) for v in values]  # noqa: E731
    rows = []
    for s in steps:
        position = s["position"] + [None] * (3 - len(s["position"]))
        rows.append(
            {
                "step": s["step"], "x": position[0], "y": position[1], "z": position[2],
                "meters": f32(s["meters"]), "action": s["action"], "reward": s["reward"],
                "intrinsic_reward": s["intrinsic_reward"], "done": s["done"], "q_values": f32(s["q_values"]),
                "epsilon": s["epsilon"], "action_masks": s["action_masks"], "time_of_day": s["time_of_day"],
                "interaction_progress": s["interaction_progress"],
            }
        )  # fmt: skip
    return rows


# ------------------------------------------------------------------------------------------ schemas


def test_schemas_are_declared_once_and_agree() -> None:
    context = {"date", "checkpoint", "episode_id", "source_uri"}
    assert STEP_COLUMNS.names == [n for n in TOWNLET_EPISODE_STEPS.names if n not in context]
    for field in STEP_COLUMNS:
        assert TOWNLET_EPISODE_STEPS.field(field.name).equals(field)
    assert TOWNLET_EPISODE_STEPS.field("meters").type == pa.list_(pa.float32())
    assert TOWNLET_EPISODE_STEPS.field("reward").type == pa.float64()
    assert TOWNLET_RECORDINGS_INDEX.names[-len(VERIFICATION_COLUMNS) :] == list(VERIFICATION_COLUMNS)
    assert TOWNLET_RECORDINGS_INDEX.field("recorded_at").type == pa.timestamp("us", tz="UTC")
    assert TOWNLET_RECORDINGS_INDEX.field("affordance_layout").type == pa.map_(
        pa.string(), pa.list_(pa.int32())
    )


# ------------------------------------------------------------------------------------------ real files


def test_every_real_recording_decodes_and_agrees_with_its_index_row(real) -> None:
    directory, rows = real
    assert len(rows) == 32
    for row in rows:
        data = (directory / row["file_path"]).read_bytes()
        episode, steps = decode_recording(data, row["file_path"])
        assert steps.schema.equals(STEP_COLUMNS, check_metadata=True)
        assert episode.episode_id == row["episode_id"]
        assert episode.version == 1
        assert episode.survival_steps == row["survival_steps"] == episode.metadata["survival_steps"]
        assert episode.steps_recorded == steps.num_rows == row["survival_steps"]  # nothing dropped here
        assert episode.frames_dropped == 0
        assert episode.metadata["total_reward"] == row["total_reward"]
        assert episode.metadata["timestamp"] == row["timestamp"]
        assert episode.metadata["curriculum_stage"] == row["curriculum_stage"]
        assert episode.compressed_size == len(data) == row["compressed_size_bytes"]
        assert episode.uncompressed_size == row["file_size_bytes"]
        assert episode.compression == ("none" if row["episode_id"] in UNCOMPRESSED_EPISODES else "lz4")
        assert episode.meter_count == 8 and episode.position_dim == 2
        assert steps.column("step").to_pylist() == list(range(steps.num_rows))
        assert steps.column("done").to_pylist()[-1] is True
        assert set(episode.affordance_layout) == set(episode.affordance_order)


def test_real_steps_equal_a_direct_lz4_msgpack_decode(real) -> None:
    directory, rows = real
    for row in rows:
        data = (directory / row["file_path"]).read_bytes()
        doc = _direct(data)
        _, steps = decode_recording(data, row["file_path"])
        expected = _step_rows(doc["steps"])
        got = steps.to_pylist()
        assert got[0] == expected[0] and got[-1] == expected[-1], row["file_path"]
        assert got == expected, row["file_path"]
        # meters and q-values are float32 tensors in the producer: storing them as float32 loses nothing
        assert [s["meters"] for s in doc["steps"]] == [r["meters"] for r in got]
        # and the fast path reads every real file (the generic path would be 5x slower)
        raw = lz4.frame.decompress(data) if row["episode_id"] not in UNCOMPRESSED_EPISODES else data
        assert townlet_msgpack.fast_document(raw) is not None, row["file_path"]
        _both_paths(raw, row["file_path"])


def test_real_facts_per_episode(real) -> None:
    directory, rows = real
    facts = {}
    for row in rows:
        episode, _ = decode_recording((directory / row["file_path"]).read_bytes(), row["file_path"])
        facts[row["episode_id"]] = episode
    # episode 5: q-values, epsilon and masks; 100..136: the temporal fields; 141: no q-values
    assert (facts[5].has_q_values, facts[5].has_action_masks, facts[5].has_temporal) == (True, True, False)
    assert (facts[100].has_q_values, facts[100].has_action_masks, facts[100].has_temporal) == (
        True,
        False,
        True,
    )
    assert (facts[141].has_q_values, facts[141].has_action_masks, facts[141].has_temporal) == (
        False,
        True,
        False,
    )
    assert facts[5].affordance_visits == {"HomeMeal": 2, "Park": 1}


def test_both_real_layout_shapes_normalize(real) -> None:
    directory, _ = real
    runner, _ = decode_recording((directory / recording_file_path(5)).read_bytes(), "5")
    flat, _ = decode_recording((directory / recording_file_path(100)).read_bytes(), "100")
    assert "positions" in runner.metadata["affordance_layout"]
    assert "positions" not in flat.metadata["affordance_layout"]
    assert runner.affordance_order == runner.metadata["affordance_layout"]["ordering"]
    assert runner.affordance_layout == runner.metadata["affordance_layout"]["positions"]
    assert flat.affordance_layout == flat.metadata["affordance_layout"]
    assert flat.affordance_order == list(flat.metadata["affordance_layout"])
    # the runner shape of the same affordances normalizes to the same thing as the flat shape
    as_runner = {"positions": flat.affordance_layout, "ordering": flat.affordance_order, "position_dim": 2}
    assert normalize_affordance_layout(as_runner) == (flat.affordance_layout, flat.affordance_order)


def test_uncompressed_real_episodes(real) -> None:
    directory, rows = real
    by_id = {row["episode_id"]: row for row in rows}
    for episode_id in sorted(UNCOMPRESSED_EPISODES):
        data = (directory / recording_file_path(episode_id)).read_bytes()
        assert data[:4] != LZ4_FRAME_MAGIC and data[0] in (0x84, 0xDE, 0xDF)
        episode, _ = decode_recording(data, recording_file_path(episode_id))
        assert episode.compression == "none"
        assert episode.compressed_size == episode.uncompressed_size == len(data)
        assert by_id[episode_id]["file_size_bytes"] == by_id[episode_id]["compressed_size_bytes"] == len(data)


def test_real_index_rows_are_all_valid_and_reading_leaves_no_files(real) -> None:
    directory, rows = real
    before = sorted(p.name for p in directory.iterdir())
    index_uri = (directory / "demo_level2_5.db").as_uri()
    out = []
    for row in read_recordings_index(directory / "demo_level2_5.db"):
        path = directory / row["file_path"]
        out.append(
            recordings_index_row(
                row,
                path.read_bytes(),
                path.as_uri(),
                date=DAY,
                checkpoint=directory.name,
                index_uri=index_uri,
            )
        )
    batch = recordings_index_batch(out)
    assert sorted(p.name for p in directory.iterdir()) == before  # no -wal / -shm beside the shared index
    assert batch.schema.equals(TOWNLET_RECORDINGS_INDEX, check_metadata=True)
    assert batch.num_rows == len(rows)
    table = batch.to_pylist()
    assert all(r["valid"] and r["invalid_reason"] is None for r in table)
    first = table[0]
    assert first["episode_id"] == 0 and first["recorded_at"] == dt.datetime(2025, 10, 14, tzinfo=dt.UTC)
    assert first["sha256"] == hashlib.sha256((directory / first["file_path"]).read_bytes()).hexdigest()
    assert [r["compression"] for r in table if r["episode_id"] in UNCOMPRESSED_EPISODES] == ["none", "none"]
    assert {r["frames_dropped"] for r in table} == {0}
    assert dict(table[1]["affordance_layout"])["Hospital"] == [5, 7]
    assert table[1]["affordance_visits"] == '{"HomeMeal":2,"Park":1}'


def test_steps_with_context(real) -> None:
    directory, _ = real
    data = (directory / recording_file_path(5)).read_bytes()
    episode, batch = read_episode_steps(data, "s3://b/episode_000005.msgpack.lz4", date=DAY, checkpoint="cp")
    assert batch.schema.equals(TOWNLET_EPISODE_STEPS, check_metadata=True)
    assert batch.num_rows == episode.steps_recorded == 302
    assert set(batch.column("date").to_pylist()) == {DAY}
    assert set(batch.column("checkpoint").to_pylist()) == {"cp"}
    assert set(batch.column("episode_id").to_pylist()) == {5}
    assert set(batch.column("source_uri").to_pylist()) == {"s3://b/episode_000005.msgpack.lz4"}
    _, steps = decode_recording(data, "x")
    again = episode_steps_batch(episode, steps, date=DAY, checkpoint="cp", source_uri="u")
    assert again.select(STEP_COLUMNS.names).equals(steps)


# ------------------------------------------------------------------------------------------ fixtures


def test_dropped_steps_are_recorded_not_fatal() -> None:
    data = _bytes(num_steps=300, drop_steps=40)
    doc = _direct(data)
    episode, steps = decode_recording(data, "dropped")
    assert episode.survival_steps == 300 and episode.steps_recorded == 260 and episode.frames_dropped == 40
    numbers = steps.column("step").to_pylist()
    assert numbers == [s["step"] for s in doc["steps"]] and numbers[-1] == 299
    assert np.diff(numbers).max() == 41  # one gap where the producer's queue was full
    assert steps.to_pylist() == _step_rows(doc["steps"])
    _both_paths(lz4.frame.decompress(data))
    row = verify_recording(None, data, "episode_000007.msgpack.lz4")
    assert row["frames_dropped"] == 40 and row["steps_recorded"] == 260


@pytest.mark.parametrize("compression", ["lz4", "none"])
@pytest.mark.parametrize("layout_shape", ["runner", "flat"])
def test_writer_recordings_take_the_fast_path(compression: str, layout_shape: str) -> None:
    for fields in [(), ("q_values", "time_of_day", "interaction_progress"), ("epsilon", "action_masks")]:
        data = _bytes(
            num_steps=500, compression=compression, layout_shape=layout_shape, optional_fields=fields
        )
        raw = lz4.frame.decompress(data) if compression == "lz4" else data
        assert townlet_msgpack.fast_document(raw) is not None
        episode, steps = _both_paths(raw)
        assert steps.to_pylist() == _step_rows(_direct(data)["steps"])
        assert episode.has_temporal == ("time_of_day" in fields)
        assert episode.has_q_values == ("q_values" in fields)


def test_layout_shapes_normalize_identically() -> None:
    positions = {"Bed": [2, 3], "Gym": [0, 7], "Job": [5, 5]}
    flat = normalize_affordance_layout(dict(positions))
    runner = normalize_affordance_layout(
        {"positions": positions, "ordering": ["Bed", "Gym", "Job"], "position_dim": 2}
    )
    assert flat == runner == (positions, ["Bed", "Gym", "Job"])
    # the runner's ordering wins; names it leaves out follow in file order, unknown names are ignored
    reordered = {"positions": positions, "ordering": ["Job", "Nope", "Bed"], "position_dim": 2}
    assert normalize_affordance_layout(reordered)[1] == ["Job", "Bed", "Gym"]
    flat_episode, _ = decode_recording(_bytes(layout_shape="flat"), "flat")
    runner_episode, _ = decode_recording(_bytes(layout_shape="runner"), "runner")
    assert flat_episode.affordance_layout == runner_episode.affordance_layout
    assert flat_episode.affordance_order == runner_episode.affordance_order
    with pytest.raises(RecordingFormatError, match="not a list of integers"):
        normalize_affordance_layout({"Bed": "here"})


def _document(steps: list[dict[str, Any]], **top: Any) -> bytes:
    doc = {
        "version": 1,
        "metadata": {"episode_id": 3, "survival_steps": len(steps), "affordance_layout": {"Bed": [1, 2]}},
        "steps": steps,
        "affordances": {"Bed": [1, 2]},
    }
    doc.update(top)
    return msgpack.packb(doc)


def _steps(n: int, seed: int = 0, **fields: Any) -> list[dict[str, Any]]:
    """Producer-like steps; ``fields`` maps a key to a function of (rng, i) overriding it."""
    rng = random.Random(seed)
    steps = []
    for i in range(n):
        step = {
            "step": i, "position": [rng.randrange(8), rng.randrange(8)],
            "meters": [float(np.float32(rng.random())) for _ in range(8)], "action": rng.randrange(6),
            "reward": rng.random(), "intrinsic_reward": rng.random() / 10, "done": i == n - 1,
            "q_values": [float(np.float32(rng.gauss(0, 1))) for _ in range(6)], "epsilon": 0.25,
            "action_masks": [rng.random() < 0.8 for _ in range(6)], "time_of_day": None,
            "interaction_progress": None,
        }  # fmt: skip
        for key, make in fields.items():
            step[key] = make(rng, i)
        steps.append(step)
    return steps


# Layouts the fast path must read exactly like the generic path (or hand over to it).
VARIANTS = {
    "3-d positions": {"position": lambda r, i: [r.randrange(8), r.randrange(8), r.randrange(3)]},
    "some empty positions": {"position": lambda r, i: [] if i % 3 == 0 else [r.randrange(8), 1]},
    "negative coordinates": {"position": lambda r, i: [r.randrange(-4, 4), -1]},
    "large coordinates": {"position": lambda r, i: [r.randrange(300), 70000]},
    "nil q-values in some steps": {"q_values": lambda r, i: None if i % 2 else [0.5] * 6},
    "temporal fields": {"time_of_day": lambda r, i: i % 24, "interaction_progress": lambda r, i: i / 7},
    "wide actions": {"action": lambda r, i: r.choice([3, 200, 70000, -7, -200])},
    "integer rewards": {"reward": lambda r, i: r.choice([0, 1.5])},
    "numbers from 65530": {"step": lambda r, i: 65530 + i},
    "unsorted steps": {"step": lambda r, i: (i * 7) % 40},
    "sixteen meters": {"meters": lambda r, i: [0.25] * 16},
    "no meters": {"meters": lambda r, i: []},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_fast_and_generic_paths_agree(variant: str) -> None:
    steps = _steps(40, **VARIANTS[variant])
    _, batch = _both_paths(_document(steps))
    expected = sorted(_step_rows(steps), key=lambda r: r["step"])
    assert batch.to_pylist() == expected
    assert batch.column("step").to_pylist() == sorted(s["step"] for s in steps)


def test_positions_give_x_y_z_and_dimension() -> None:
    episode, batch = _both_paths(_document(_steps(5, position=lambda r, i: [i, i + 1, 2])))
    assert episode.position_dim == 3
    assert batch.column("z").to_pylist() == [2] * 5
    episode, batch = _both_paths(_document(_steps(5, position=lambda r, i: [])))
    assert batch.column("x").null_count == 5 and batch.column("y").null_count == 5
    assert episode.position_dim == 2  # no position recorded: from the layout
    with pytest.raises(RecordingFormatError, match="mix 2 and 3 coordinates"):
        _both_paths(_document(_steps(5, position=lambda r, i: [1, 2, 3] if i == 2 else [1, 2])))


def test_steps_with_keys_in_another_order_or_missing_optional_keys() -> None:
    steps = _steps(30)
    shuffled = [dict(reversed(list(s.items()))) for s in steps]
    _, batch = _both_paths(_document(shuffled))
    assert batch.to_pylist() == _step_rows(steps)
    older = [{k: v for k, v in s.items() if k not in ("time_of_day", "interaction_progress")} for s in steps]
    _, batch = _both_paths(_document(older))
    assert batch.column("time_of_day").null_count == 30


def test_empty_steps() -> None:
    episode, batch = _both_paths(_document([]))
    assert batch.num_rows == 0 and episode.steps_recorded == 0 and episode.meter_count == 0
    assert not episode.has_q_values and episode.position_dim == 2


# ------------------------------------------------------------------------------------------ errors


def _raises(
    data: bytes, match: str, name: str = "recordings/episode_000007.msgpack.lz4"
) -> RecordingFormatError:
    with pytest.raises(RecordingFormatError, match=match) as info:
        decode_recording(data, name)
    error = info.value
    assert isinstance(error, ReplayAssetsError) and isinstance(error, ValueError)
    assert str(error).startswith(f"{name}: ") and "\n" not in str(error)
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is RecordingFormatError and str(again) == str(error)
    return error


def test_container_errors() -> None:
    data = _bytes()
    _raises(data[: len(data) // 2], "broken lz4 frame")  # truncated file
    _raises(data[:4] + b"\xff" * 3 + data[7:], "broken lz4 frame")  # corrupted frame header
    _raises(b"", "empty file")
    _raises(b"PK\x03\x04 not a recording", "neither an lz4 frame nor a msgpack map")
    raw = lz4.frame.decompress(data)
    _raises(raw[:-100], "truncated msgpack")  # a truncated compression: none file
    _raises(lz4.frame.compress(raw[: len(raw) // 2]), "truncated msgpack")  # truncated msgpack, whole frame
    _raises(raw + b"\xc0", "trailing bytes")
    _raises(lz4.frame.compress(msgpack.packb([1, 2])), "not a msgpack map but list")


def test_a_recording_over_the_decompressed_limit_is_refused_naming_the_limit() -> None:
    for compression in ("lz4", "none"):
        data = _bytes(compression=compression)
        size = len(lz4.frame.decompress(data)) if compression == "lz4" else len(data)
        decode_recording(data, "r.msgpack.lz4", max_decompressed_bytes=size)  # exactly at the limit
        with pytest.raises(RecordingFormatError, match=f"max_decompressed_bytes={size - 1}"):
            decode_recording(data, "r.msgpack.lz4", max_decompressed_bytes=size - 1)
    bomb = lz4.frame.compress(bytes(64 << 20))  # 64 MiB of zeros in a 0.3 MB frame
    row = verify_recording(None, bomb, "bomb.msgpack.lz4", max_decompressed_bytes=1 << 20)
    assert not row["valid"] and f"max_decompressed_bytes={1 << 20}" in row["invalid_reason"]


def test_corrupted_lz4_payload() -> None:
    data = bytearray(lz4.frame.compress(lz4.frame.decompress(_bytes()), content_checksum=True))
    data[len(data) // 2] ^= 0xFF
    _raises(bytes(data), "broken lz4 frame|msgpack|steps")


def test_document_errors() -> None:
    steps = _steps(20)
    _raises(_document(steps, version=2), r"unsupported recording version 2 \(supported: 1\)")
    _raises(msgpack.packb({"metadata": {}, "steps": []}), "missing top-level key 'version'")
    _raises(msgpack.packb({"version": 1, "steps": []}), "missing top-level key 'metadata'")
    _raises(msgpack.packb({"version": 1, "metadata": {"episode_id": 1, "survival_steps": 0}}), "'steps'")
    _raises(_document(steps, metadata={"survival_steps": 20}), "metadata has no 'episode_id'")
    _raises(_document(steps, metadata={"episode_id": "x", "survival_steps": 20}), "episode_id is not")
    _raises(_document({"not": "a list"}), "'steps' is not a list")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda s: s[5].pop("meters"), r"steps\[5\] has no 'meters'"),
        (lambda s: s[7].pop("step"), r"steps\[7\] has no 'step'"),
        (lambda s: s[3].update(reward=None), r"steps\[3\]\.reward is nil"),
        (lambda s: s[3].update(step=3.5), "step holds double values"),
        (lambda s: s[3].update(action="left"), "action"),
        (lambda s: s[3].update(done=1), "done"),
        (lambda s: s[3].update(position=[1]), "has 1 coordinates"),
        (lambda s: s[3].update(meters=[0.5] * 7), r"steps\[3\] has 7 meters, steps\[0\] has 8"),
        (lambda s: s[3].update(q_values=[0.5, None]), "nil element"),
        (lambda s: s[3].update(step=2), "step number 2 occurs twice"),
        (lambda s: s.__setitem__(4, [1, 2]), r"steps\[4\] is not a map"),
    ],
)
def test_step_errors(change, match: str) -> None:
    steps = _steps(20)
    change(steps)
    with pytest.raises(RecordingFormatError, match=match):
        _both_paths(_document(steps))
    _raises(lz4.frame.compress(_document(steps)), match)


# ------------------------------------------------------------------------------------------ verification


def _index_row(data: bytes, **overrides: Any) -> dict[str, Any]:
    md = _direct(data)["metadata"]
    raw = lz4.frame.decompress(data) if data[:4] == LZ4_FRAME_MAGIC else data
    row = {key: md[key] for key in ("episode_id", "timestamp", "survival_steps", "total_reward",
                                    "extrinsic_reward", "intrinsic_reward", "curriculum_stage", "epsilon",
                                    "intrinsic_weight")}  # fmt: skip
    row.update(
        file_path=recording_file_path(md["episode_id"]),
        recording_reason="periodic",
        file_size_bytes=len(raw),
        compressed_size_bytes=len(data),
    )
    row.update(overrides)
    return row


NAME = "recordings/episode_000007.msgpack.lz4"


def test_verify_valid_recording() -> None:
    data = _bytes()
    result = verify_recording(_index_row(data), data, NAME)
    assert list(result) == list(VERIFICATION_COLUMNS)
    assert result["valid"] is True and result["invalid_reason"] is None
    assert result["sha256"] == hashlib.sha256(data).hexdigest()
    assert result["actual_compressed_size"] == len(data)
    assert (result["compression"], result["version"], result["steps_recorded"], result["frames_dropped"]) == (
        "lz4", 1, 60, 0
    )  # fmt: skip
    assert result["meter_count"] == 8 and result["has_q_values"] and not result["has_temporal"]


@pytest.mark.parametrize(
    ("index", "data", "name", "reason"),
    [
        ("row", None, NAME, "missing file"),
        (None, "good", NAME, "unindexed"),
        ("row", "garbage", NAME, "undecodable: neither an lz4 frame"),
        ("row", "truncated", NAME, "undecodable: broken lz4 frame"),
        ({"compressed_size_bytes": 5}, "good", NAME, "index compressed_size_bytes 5 != file size"),
        ({"file_size_bytes": 5}, "good", NAME, "index file_size_bytes 5 != uncompressed size"),
        ({"episode_id": 8}, "good", NAME, "index episode_id 8 != metadata episode_id 7"),
        ({"total_reward": 1.5}, "good", NAME, "index total_reward 1.5 != metadata total_reward"),
        ({"survival_steps": 61}, "good", NAME, "index survival_steps 61 != metadata survival_steps 60"),
        ({"timestamp": 5.0}, "good", NAME, "index timestamp 5.0 != metadata timestamp"),
        ("row", "good", "recordings/episode_000009.msgpack.lz4", "file name says episode 9"),
        ({"survival_steps": "sixty"}, "good", NAME, "index survival_steps has a wrong type"),
    ],
)
def test_verify_invalid_recordings(index: Any, data: Any, name: str, reason: str) -> None:
    good = _bytes()
    row = _index_row(good, **index) if isinstance(index, dict) else (_index_row(good) if index else None)
    payload = {"good": good, "garbage": b"garbage!", "truncated": good[:100], None: None}[data]
    result = verify_recording(row, payload, name)
    assert result["valid"] is False
    assert reason in result["invalid_reason"], result["invalid_reason"]
    assert result["file_exists"] is (payload is not None)
    if data == "good" and index is None:  # an orphan file is still described fully
        assert result["steps_recorded"] == 60 and result["sha256"] is not None


def test_verify_more_steps_than_survival_steps() -> None:
    raw = _document(_steps(10), metadata={"episode_id": 7, "survival_steps": 8})
    result = verify_recording(None, raw, "x")
    assert result["frames_dropped"] == -2
    assert "10 steps recorded but survival_steps is 8" in result["invalid_reason"]


def test_index_batch_from_a_written_checkpoint(tmp_path: Path) -> None:
    specs = [
        EpisodeSpec(episode_id=1, seed=1, num_steps=40, timestamp=1.76e9),
        EpisodeSpec(episode_id=2, seed=2, num_steps=80, timestamp=1.76e9 + 60, compression="none"),
        EpisodeSpec(episode_id=3, seed=3, num_steps=90, timestamp=1.76e9 + 120, drop_steps=9),
        EpisodeSpec(episode_id=4, seed=4, num_steps=30, timestamp=1.76e9 + 180, layout_shape="flat"),
    ]
    db = write_townlet_checkpoint(tmp_path, specs)
    (tmp_path / recording_file_path(4)).unlink()  # the index names it, the file is gone
    (tmp_path / recording_file_path(5)).write_bytes(_bytes(episode_id=5))  # a file the index does not name
    index = {row["file_path"]: row for row in read_recordings_index(db)}
    files = {p.relative_to(tmp_path).as_posix() for p in (tmp_path / "recordings").iterdir()}
    rows = []
    for relative in sorted(set(index) | files):
        path = tmp_path / relative
        data = path.read_bytes() if path.exists() else None
        rows.append(
            recordings_index_row(
                index.get(relative), data, path.as_uri(), date=DAY, checkpoint="cp", index_uri=db.as_uri()
            )
        )
    batch = recordings_index_batch(reversed(rows))
    assert batch.schema.equals(TOWNLET_RECORDINGS_INDEX, check_metadata=True)
    table = {r["episode_id"]: r for r in batch.to_pylist()}
    assert batch.column("episode_id").to_pylist() == [1, 2, 3, 4, 5]
    assert table[1]["valid"] and table[2]["valid"] and table[3]["valid"]
    assert table[2]["compression"] == "none"
    assert table[3]["frames_dropped"] == 9 and table[3]["steps_recorded"] == 81
    assert not table[4]["valid"] and table[4]["invalid_reason"].startswith("missing file")
    assert table[4]["file_path"] == recording_file_path(4) and table[4]["sha256"] is None
    orphan = table[5]
    assert not orphan["valid"] and orphan["invalid_reason"].startswith("unindexed")
    assert orphan["file_path"] is None and orphan["timestamp"] is None and orphan["recorded_at"] is None
    assert orphan["steps_recorded"] == 60
    assert table[1]["recorded_at"] == dt.datetime.fromtimestamp(1.76e9, tz=dt.UTC)
    assert table[1]["sha256"] == hashlib.sha256((tmp_path / recording_file_path(1)).read_bytes()).hexdigest()
    # A caller that has already checked the file's digest (the asset, against the listing) passes it in.
    data = (tmp_path / recording_file_path(1)).read_bytes()
    known = recordings_index_row(
        index[recording_file_path(1)], data, "e1", date=DAY, checkpoint="cp", index_uri=None, sha256="ab" * 32
    )
    assert known["sha256"] == "ab" * 32 and known["valid"]
