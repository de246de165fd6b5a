"""The demo-data writers produce files shaped like the real ones in ../shared/data, deterministically."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import itertools
import json
import os
import pickle
import re
import sqlite3
import uuid
import zlib
from pathlib import Path
from typing import Any

import lz4.frame
import msgpack
import numpy as np
import pytest

from replay_assets.landing.sample import SAMPLE_MARKER, write_sample_landing_zone
from replay_assets.sources.contract import Lineage
from replay_assets.sources.metta.sample import metta_replay_bytes
from replay_assets.sources.sc2.replay import ValidityRules, replay_metadata
from replay_assets.sources.tmrl.sample import tmrl_player_run_bytes
from replay_assets.sources.townlet.sample import (
    TownletEpisode,
    townlet_recording_bytes,
    write_townlet_checkpoint,
)
from replay_assets_tests.conftest import SHARED_DATA

SHARED = SHARED_DATA
REAL_TOWNLET_DB = SHARED / "townlet" / "checkpoints_level2_5" / "demo_level2_5.db"
LZ4_MAGIC = b"\x04\x22\x4d\x18"
V2_MOVES = {1: (0, -1), 2: (0, 1), 3: (-1, 0), 4: (1, 0)}
RECORDING_COLUMNS = [
    "episode_id", "file_path", "timestamp", "survival_steps", "total_reward", "extrinsic_reward",
    "intrinsic_reward", "curriculum_stage", "epsilon", "intrinsic_weight", "recording_reason",
    "file_size_bytes", "compressed_size_bytes",
]  # fmt: skip
METADATA_KEYS = [
    "episode_id", "survival_steps", "total_reward", "extrinsic_reward", "intrinsic_reward",
    "curriculum_stage", "epsilon", "intrinsic_weight", "timestamp", "affordance_layout",
    "affordance_visits", "custom_action_uses",
]  # fmt: skip
STEP_KEYS = [
    "step", "position", "meters", "action", "reward", "intrinsic_reward", "done", "q_values", "epsilon",
    "action_masks", "time_of_day", "interaction_progress",
]  # fmt: skip
REASON = re.compile(
    r"periodic(_\d+)?|stage_\d+_pre_transition|(before|after)_transition_\d+|(top|bottom)_\d+pct"
    r"|stage_\d+_first_\d+"
)


def need_shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real sample {path} not available (../shared/data beside the checkout)")
    return path


def decode_json(data: bytes) -> dict[str, Any]:
    if data[:1] == b"\x78":
        data = zlib.decompress(data)
    elif data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return json.loads(data)


def forward_fill(value: Any, max_steps: int, *, default: Any, is_series: bool) -> list[Any]:
    if not is_series:
        return [value] * max_steps
    out, current, index = [], default, 0
    for step in range(max_steps):
        while index < len(value) and value[index][0] == step:
            current = value[index][1]
            index += 1
        out.append(current)
    return out


def scalar_series(value: Any) -> bool:
    return isinstance(value, list)


def location_series(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and isinstance(value[0], list)
        and isinstance(value[0][1], list)
    )


def inventory_series(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and isinstance(value[0][1], list)


def agents_of(replay: dict[str, Any]) -> list[dict[str, Any]]:
    return [o for o in replay["objects"] if o.get("is_agent")]


# --------------------------------------------------------------------------------------------- metta


@pytest.mark.parametrize("version", [1, 2, 3])
@pytest.mark.parametrize(("compression", "magic"), [("zlib", b"\x78"), ("gzip", b"\x1f\x8b"), ("none", b"{")])
def test_metta_container_and_version_keys(version: int, compression: str, magic: bytes) -> None:
    data = metta_replay_bytes(version=version, compression=compression, seed=11, environment="navigation")
    assert data.startswith(magic)
    assert data == metta_replay_bytes(
        version=version, compression=compression, seed=11, environment="navigation"
    )
    assert data != metta_replay_bytes(
        version=version, compression=compression, seed=12, environment="navigation"
    )
    if compression == "gzip":
        assert data[4:8] == b"\0\0\0\0"  # mtime 0: reproducible
    replay = decode_json(data)
    assert replay["version"] == version
    common = {"action_names", "map_size", "num_agents", "max_steps"}
    if version == 1:
        assert common | {"grid_objects", "object_types", "inventory_items"} <= replay.keys()
        assert "objects" not in replay
    else:
        assert common | {"objects", "type_names", "item_names", "mg_config"} <= replay.keys()
        assert replay["mg_config"]["label"] == "navigation"
        assert len(agents_of(replay)) == replay["num_agents"] == 4


@pytest.mark.parametrize("version", [2, 3])
def test_metta_v2_series_shapes_and_traps(version: int) -> None:
    replay = decode_json(metta_replay_bytes(version=version, compression="gzip", seed=5, max_steps=200))
    width, height = replay["map_size"]
    agents = agents_of(replay)
    trap = agents[0]["location"]
    assert location_series(trap) and len(trap) == 3, "early_cvc-style 3-change location series"
    assert all(len(entry) == 2 and len(entry[1]) == 2 for entry in trap)
    constant_locations = [a for a in agents if not location_series(a["location"])]
    assert len(constant_locations) >= 2
    assert all(
        len(a["location"]) == 2 and all(isinstance(v, int) for v in a["location"]) for a in constant_locations
    )

    constant_inventories = [a["inventory"] for a in agents if not inventory_series(a["inventory"])]
    assert constant_inventories and all(
        isinstance(item, int) and isinstance(count, int)
        for inv in constant_inventories
        for item, count in inv
    )
    series_inventories = [a["inventory"] for a in agents if inventory_series(a["inventory"])]
    assert series_inventories
    for series in series_inventories:
        for step, items in series:
            assert isinstance(step, int) and all(len(pair) == 2 for pair in items)

    late_starts = 0
    for obj in replay["objects"]:
        for key, value in obj.items():
            if key in ("location", "inventory"):
                is_series = (location_series if key == "location" else inventory_series)(value)
            else:
                is_series = key != "protocols" and scalar_series(value)
            if not is_series:
                continue
            steps = [entry[0] for entry in value]
            assert steps == sorted(set(steps)) and steps[-1] < replay["max_steps"], (obj["id"], key)
            assert all(a[1] != b[1] for a, b in itertools.pairwise(value)), "change-only"
            late_starts += steps[0] > 0
        if not obj.get("is_agent"):
            xy = obj["location"]
            assert 0 <= xy[0] < width and 0 <= xy[1] < height
    assert late_starts >= 3  # vibe, freeze and chest inventory series start after step 0
    type_key = "type_name"
    assert {o[type_key] for o in replay["objects"]} >= {"wall", "agent", "chest"}


def test_metta_v2_movement_follows_actions_and_rewards_add_up() -> None:
    replay = decode_json(
        metta_replay_bytes(version=2, compression="none", seed=3, num_agents=5, max_steps=300)
    )
    steps = replay["max_steps"]
    moves_seen = rewarded = 0
    for agent in agents_of(replay):
        loc = forward_fill(
            agent["location"], steps, default=None, is_series=location_series(agent["location"])
        )
        act = forward_fill(agent["action_id"], steps, default=0, is_series=scalar_series(agent["action_id"]))
        cur = forward_fill(
            agent["current_reward"], steps, default=0.0, is_series=scalar_series(agent["current_reward"])
        )
        tot = forward_fill(
            agent["total_reward"], steps, default=0.0, is_series=scalar_series(agent["total_reward"])
        )
        for t in range(1, steps):
            if loc[t] != loc[t - 1]:
                moves_seen += 1
                delta = (loc[t][0] - loc[t - 1][0], loc[t][1] - loc[t - 1][1])
                assert V2_MOVES.get(act[t]) == delta, (agent["agent_id"], t)  # same-step semantics
        running = 0.0
        for t in range(steps):
            running += cur[t]
            assert tot[t] == running
        rewarded += running > 0
    assert moves_seen > 20 and rewarded >= 1


def test_metta_type_id_variant() -> None:
    replay = decode_json(metta_replay_bytes(version=2, compression="zlib", seed=1, type_field="type_id"))
    assert all(isinstance(o["type_id"], int) and "type_name" not in o for o in replay["objects"])
    assert replay["type_names"][agents_of(replay)[0]["type_id"]] == "agent"


def test_metta_v1_fields_and_lagged_effects() -> None:
    replay = decode_json(metta_replay_bytes(version=1, compression="zlib", seed=9, max_steps=150))
    steps = replay["max_steps"]
    agents = [o for o in replay["grid_objects"] if replay["object_types"][o["type"]] == "agent"]
    assert len(agents) == replay["num_agents"]
    width, height = replay["map_size"]  # [columns, rows], as in heart_collector
    for obj in replay["grid_objects"]:
        rows = [v for _, v in obj["r"]] if isinstance(obj["r"], list) else [obj["r"]]
        cols = [v for _, v in obj["c"]] if isinstance(obj["c"], list) else [obj["c"]]
        assert max(rows) < height and max(cols) < width
    dirs = {0: (-1, 0), 1: (1, 0), 2: (0, -1), 3: (0, 1)}
    hearts = 0
    for agent in agents:
        assert {f"agent:inv:{item}" for item in replay["inventory_items"]} <= agent.keys()
        assert {
            "agent:orientation",
            "agent:group",
            "agent:frozen",
            "agent_id",
            "reward",
            "total_reward",
        } <= agent.keys()
        assert all(len(e) == 2 and len(e[1]) == 2 for e in agent["action"])
        r = forward_fill(agent["r"], steps, default=None, is_series=scalar_series(agent["r"]))
        c = forward_fill(agent["c"], steps, default=None, is_series=scalar_series(agent["c"]))
        o = forward_fill(agent["agent:orientation"], steps, default=0, is_series=True)
        act = forward_fill(agent["action"], steps, default=None, is_series=True)
        for t in range(steps - 1):
            if (r[t + 1], c[t + 1]) != (r[t], c[t]):  # v1: the effect of action t shows at t + 1
                assert act[t] == [3, 0] and (r[t + 1] - r[t], c[t + 1] - c[t]) == dirs[o[t]]
        heart = agent["agent:inv:heart"]
        hearts += heart[-1][1] if isinstance(heart, list) else heart
    assert hearts > 0


def test_metta_field_names_match_real_files() -> None:
    maze = decode_json(need_shared(SHARED / "metta" / "the_4_maze.json.z").read_bytes())
    cvc = decode_json(need_shared(SHARED / "metta" / "early_cvc.json").read_bytes())
    ours_v1 = decode_json(metta_replay_bytes(version=1, compression="none", seed=0))
    ours_v2 = decode_json(metta_replay_bytes(version=2, compression="none", seed=0))
    assert set(ours_v1) == set(maze)
    real_agent_v1 = next(o for o in maze["grid_objects"] if o["type"] == 0)
    ours_agent_v1 = next(o for o in ours_v1["grid_objects"] if o["type"] == 0)
    assert list(ours_agent_v1) == list(real_agent_v1)
    assert set(ours_v2) == set(cvc)
    assert list(agents_of(ours_v2)[0]) == list(agents_of(cvc)[0])


# ------------------------------------------------------------------------------------------- townlet


def decode_recording(data: bytes) -> dict[str, Any]:
    raw = lz4.frame.decompress(data) if data[:4] == LZ4_MAGIC else data
    return msgpack.unpackb(raw)


@pytest.mark.parametrize("layout_shape", ["flat", "runner"])
def test_townlet_recording_fields_and_types(layout_shape: str) -> None:
    kwargs: dict[str, Any] = dict(
        episode_id=7, seed=4, num_steps=120, layout_shape=layout_shape, timestamp=1760400000.0, epsilon=0.5
    )
    data = townlet_recording_bytes(compression="lz4", **kwargs)
    assert data[:4] == LZ4_MAGIC
    assert data == townlet_recording_bytes(compression="lz4", **kwargs)
    raw = townlet_recording_bytes(compression="none", **kwargs)
    assert raw[:4] != LZ4_MAGIC and lz4.frame.decompress(data) == raw
    recording = msgpack.unpackb(raw)
    assert list(recording) == ["version", "metadata", "steps", "affordances"] and recording["version"] == 1
    md = recording["metadata"]
    assert list(md) == METADATA_KEYS
    assert isinstance(md["survival_steps"], int) and isinstance(md["timestamp"], float)
    assert isinstance(md["epsilon"], float) and isinstance(md["curriculum_stage"], int)
    layout = md["affordance_layout"]
    assert recording["affordances"] == layout
    if layout_shape == "runner":
        assert list(layout) == ["positions", "ordering", "position_dim"] and layout["position_dim"] == 2
        assert list(layout["positions"]) == layout["ordering"]
    else:
        assert all(isinstance(pos, list) and len(pos) == 2 for pos in layout.values())
    steps = recording["steps"]
    assert len(steps) == md["survival_steps"] == 120
    assert [s["step"] for s in steps] == list(range(120)) and steps[-1]["done"] and not steps[0]["done"]
    for s in steps:
        assert list(s) == STEP_KEYS
        assert all(isinstance(v, int) for v in s["position"]) and len(s["position"]) == 2
        assert len(s["meters"]) == 8 and all(isinstance(v, float) for v in s["meters"])
        assert isinstance(s["reward"], float) and isinstance(s["intrinsic_reward"], float)
        assert s["q_values"] is None or (len(s["q_values"]) == 6 and isinstance(s["q_values"][0], float))
        assert s["action_masks"] is None or all(isinstance(v, bool) for v in s["action_masks"])
        assert s["epsilon"] in (None, 0.5)
    assert md["extrinsic_reward"] == sum(s["reward"] for s in steps)
    assert md["intrinsic_reward"] == sum(s["intrinsic_reward"] for s in steps)
    assert md["total_reward"] == md["extrinsic_reward"] + md["intrinsic_weight"] * md["intrinsic_reward"]


def test_townlet_positions_follow_actions_and_optional_fields_are_selectable() -> None:
    data = townlet_recording_bytes(
        episode_id=1, seed=2, num_steps=200, compression="lz4", layout_shape="runner", timestamp=0.0,
        optional_fields=("time_of_day", "interaction_progress"),
    )  # fmt: skip
    steps = decode_recording(data)["steps"]
    moves = {0: (0, -1), 1: (0, 1), 2: (-1, 0), 3: (1, 0)}
    for before, after in itertools.pairwise(steps):
        delta = (after["position"][0] - before["position"][0], after["position"][1] - before["position"][1])
        assert delta == (0, 0) or moves.get(after["action"]) == delta
    assert all(s["q_values"] is None and s["epsilon"] is None and s["action_masks"] is None for s in steps)
    assert [s["time_of_day"] for s in steps[:26]] == [*range(24), 0, 1]


def test_townlet_dropped_steps_keep_survival_steps() -> None:
    data = townlet_recording_bytes(
        episode_id=2,
        seed=8,
        num_steps=100,
        compression="lz4",
        layout_shape="flat",
        timestamp=0.0,
        drop_steps=15,
    )
    recording = decode_recording(data)
    steps = recording["steps"]
    assert recording["metadata"]["survival_steps"] == 100 and len(steps) == 85
    numbers = [s["step"] for s in steps]
    assert numbers[0] == 0 and numbers[-1] == 99 and steps[-1]["done"]
    assert len(set(range(100)) - set(numbers)) == 15


def test_townlet_checkpoint_index(tmp_path: Path) -> None:
    episodes = [
        TownletEpisode(episode_id=0, seed=1, num_steps=60, timestamp=1760400000.0),
        TownletEpisode(episode_id=5, seed=2, num_steps=80, timestamp=1760409000.5, layout_shape="flat",
                       recording_reason="top_10pct", drop_steps=4),
        TownletEpisode(episode_id=140, seed=3, num_steps=40, timestamp=1760652000.0, compression="none",
                       recording_reason="stage_2_first_5"),
    ]  # fmt: skip
    db_path = write_townlet_checkpoint(tmp_path, episodes)
    assert db_path == tmp_path / "demo.db"
    with pytest.raises(FileExistsError):
        write_townlet_checkpoint(tmp_path, episodes)
    connection = sqlite3.connect(db_path)
    try:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        columns = [row[1] for row in connection.execute("PRAGMA table_info(episode_recordings)")]
        rows = connection.execute(
            "SELECT episode_id, file_path, timestamp, survival_steps, recording_reason, file_size_bytes, "
            "compressed_size_bytes FROM episode_recordings ORDER BY episode_id"
        ).fetchall()
    finally:
        connection.close()
    assert columns == RECORDING_COLUMNS
    assert [r[0] for r in rows] == [0, 5, 140]
    for (episode_id, file_path, timestamp, survival, reason, raw_size, size), spec in zip(
        rows, episodes, strict=True
    ):
        path = tmp_path / file_path
        assert file_path == f"recordings/episode_{episode_id:06d}.msgpack.lz4"
        data = path.read_bytes()
        assert size == len(data) == path.stat().st_size
        raw = lz4.frame.decompress(data) if data[:4] == LZ4_MAGIC else data
        assert raw_size == len(raw)
        assert (raw_size == size) == (spec.compression == "none")
        assert timestamp == spec.timestamp and survival == spec.num_steps and REASON.fullmatch(reason)
        assert path.stat().st_mtime == pytest.approx(spec.timestamp)


def test_townlet_schema_matches_real_index(tmp_path: Path) -> None:
    real = need_shared(REAL_TOWNLET_DB)
    ours = write_townlet_checkpoint(
        tmp_path, [TownletEpisode(episode_id=1, seed=1, num_steps=10, timestamp=1.0)]
    )
    query = "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY rowid"
    real_connection = sqlite3.connect(f"file:{real}?mode=ro&immutable=1", uri=True)
    ours_connection = sqlite3.connect(ours)
    try:
        assert ours_connection.execute(query).fetchall() == real_connection.execute(query).fetchall()
        real_columns = real_connection.execute("PRAGMA table_info(episode_recordings)").fetchall()
        assert ours_connection.execute("PRAGMA table_info(episode_recordings)").fetchall() == real_columns
        assert [c[1] for c in real_columns] == RECORDING_COLUMNS
    finally:
        real_connection.close()
        ours_connection.close()


def test_townlet_keys_match_a_real_recording() -> None:
    real = decode_recording(
        need_shared(
            SHARED / "townlet" / "checkpoints_level2_5" / "recordings" / "episode_000100.msgpack.lz4"
        ).read_bytes()
    )
    ours = decode_recording(
        townlet_recording_bytes(
            episode_id=100, seed=0, num_steps=20, compression="lz4", layout_shape="flat", timestamp=0.0
        )
    )
    assert list(ours) == list(real) and list(ours["metadata"]) == list(real["metadata"])
    assert list(ours["steps"][0]) == list(real["steps"][0])


# ---------------------------------------------------------------------------------------------- tmrl

# Globals a numpy-only pickle may reference: protocol 5 (numpy >= 2 / < 2) and older protocols.
NUMPY_GLOBALS = {
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Refuses every global except numpy's array/dtype reconstruction helpers."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in NUMPY_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        return super().find_class(module, name)


def safe_load(data: bytes) -> Any:
    return NumpyOnlyUnpickler(io.BytesIO(data)).load()


def test_restricted_unpickler_rejects_code() -> None:
    with pytest.raises(pickle.UnpicklingError):
        safe_load(pickle.dumps(os.getcwd, protocol=5))


@pytest.mark.parametrize(
    ("layout", "legacy", "obs_shapes"),
    [
        ("lidar", False, [((1,), np.float32), ((4, 19), np.float32), ((3,), np.float32), ((3,), np.float32)]),
        ("lidar", True, [((1,), np.float32), ((4, 19), np.float32), ((3,), np.float32), ((3,), np.float32)]),
        (
            "full",
            False,
            [((1,), np.float32)] * 3 + [((4, 64, 64), np.uint8)] + [((3,), np.float32)] * 2,
        ),
    ],
)
def test_tmrl_run_shapes_and_dtypes(
    layout: str, legacy: bool, obs_shapes: list[tuple[tuple[int, ...], Any]]
) -> None:
    recorded_at = dt.datetime(2025, 10, 14, 10, 15, tzinfo=dt.UTC)
    kwargs: dict[str, Any] = dict(
        run_id="20251014_101500_a1b2c3d4",
        recorded_at=recorded_at,
        layout=layout,
        num_samples=6,
        seed=2,
        legacy=legacy,
    )
    data = tmrl_player_run_bytes(**kwargs)
    assert data[:2] == b"\x80\x05"
    assert data == tmrl_player_run_bytes(**kwargs)
    loaded = safe_load(data)
    if legacy:
        assert isinstance(loaded, list)
        samples = loaded
    else:
        assert loaded["format"] == "tmrl_player_run_v1" and loaded["run_id"] == kwargs["run_id"]
        assert loaded["recorded_at"] == "2025-10-14T10:15:00+00:00"
        assert ("obs_scale_version" in loaded) == (layout == "full")
        samples = loaded["samples"]
    assert len(samples) == 6
    for t, sample in enumerate(samples):
        act, obs, rew, terminated, truncated, info = sample
        assert act.shape == (3,) and act.dtype == np.float32 and np.all(np.abs(act) <= 1.0)
        assert [(o.shape, o.dtype) for o in obs] == [(shape, np.dtype(dtype)) for shape, dtype in obs_shapes]
        assert type(rew) is float and type(terminated) is bool and type(truncated) is bool
        assert isinstance(info, dict)
        previous = samples[t - 1][0] if t else np.zeros(3, np.float32)
        assert np.array_equal(obs[-2], previous)
    assert samples[-1][3] or samples[-1][4]


def test_tmrl_metadata_matches_real_runs() -> None:
    folder = need_shared(SHARED / "tmrl" / "player_runs")
    recorded_at = dt.datetime(2025, 10, 15, 9, tzinfo=dt.UTC)
    for real_name, layout in [
        ("20251014_101500_a1b2c3d4.pkl", "lidar"),
        ("20251015_090000_c3d4e5f6.pkl", "full"),
    ]:
        real = safe_load((folder / real_name).read_bytes())  # the safe loader handles the real files too
        ours = safe_load(
            tmrl_player_run_bytes(run_id="x", recorded_at=recorded_at, layout=layout, num_samples=2, seed=0)
        )
        assert list(ours) == list(real)
        assert list(ours["metadata"]) == list(real["metadata"])
        assert ours["metadata"]["memory_class"] == real["metadata"]["memory_class"]
        assert ours["samples"][0][5] == real["samples"][0][5]
    assert isinstance(safe_load((folder / "legacy_run_0001.pkl").read_bytes()), list)


# ------------------------------------------------------------------------------------------- landing

END = dt.date(2025, 10, 15)
DAYS = [END - dt.timedelta(days=n) for n in range(6, -1, -1)]
TMRL_NAME = re.compile(r"(\d{8})_(\d{6})_[0-9a-f]{8}\.pkl")


def utc_day(path: Path) -> dt.date:
    return dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).date()


@pytest.fixture(scope="module")
def landing_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, int]]:
    first, second = tmp_path_factory.mktemp("landing_a"), tmp_path_factory.mktemp("landing_b")
    counts = write_sample_landing_zone(first, days=7, end_date=END, seed=1)
    assert write_sample_landing_zone(second, days=7, end_date=END, seed=1) == counts
    return first, second, counts


def files_under(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def test_landing_is_deterministic(landing_pair: tuple[Path, Path, dict[str, int]]) -> None:
    first, second, counts = landing_pair
    names = files_under(first)
    assert names == files_under(second)
    assert len(names) == sum(counts.values()) + 1  # + the SAMPLE_MARKER file
    assert Path(SAMPLE_MARKER) in names
    for name in names:
        if name.suffix != ".db":
            assert (first / name).read_bytes() == (second / name).read_bytes(), name
        assert (first / name).stat().st_mtime == (second / name).stat().st_mtime, name
    # Same rows in the same order: SQLite writes identical pages too (checked, not promised by SQLite).
    db = Path("townlet/checkpoints_demo/demo.db")
    assert (first / db).read_bytes() == (second / db).read_bytes()


def test_landing_metta_layout(landing_pair: tuple[Path, Path, dict[str, int]]) -> None:
    root, _, counts = landing_pair
    seen: dict[dt.date, set[tuple[int, str]]] = {day: set() for day in DAYS}
    environments = set()
    files = sorted((root / "metta").rglob("*.json*"))
    assert len(files) == counts["metta"] == 4 * len(DAYS)
    for path in files:
        environment, day_name, name = path.relative_to(root / "metta").parts
        day = dt.date.fromisoformat(day_name)
        assert day in seen and utc_day(path) == day
        stem, _, extension = name.partition(".")
        assert uuid.UUID(stem).version == 4 and extension in ("json.z", "json.gz", "json")
        data = path.read_bytes()
        compression = {"json.z": "zlib", "json.gz": "gzip", "json": "none"}[extension]
        assert data[:1] == {"zlib": b"\x78", "gzip": b"\x1f", "none": b"{"}[compression]
        replay = decode_json(data)
        if replay["version"] > 1:
            assert replay["mg_config"]["label"] == environment
        environments.add(environment)
        seen[day].add((replay["version"], compression))
    assert environments == {"arena", "navigation"}
    for combos in seen.values():
        assert {v for v, _ in combos} == {1, 2, 3} and {c for _, c in combos} == {"zlib", "gzip", "none"}


def test_landing_townlet_layout(landing_pair: tuple[Path, Path, dict[str, int]]) -> None:
    root, _, counts = landing_pair
    checkpoint = root / "townlet" / "checkpoints_demo"
    connection = sqlite3.connect(checkpoint / "demo.db")
    try:
        rows = connection.execute(
            "SELECT file_path, timestamp, survival_steps, recording_reason, file_size_bytes, "
            "compressed_size_bytes FROM episode_recordings ORDER BY episode_id"
        ).fetchall()
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        connection.close()
    assert len(rows) + 1 == counts["townlet"] == len(files_under(checkpoint))
    days, shapes, raw_files, dropped = set(), set(), 0, 0
    for file_path, timestamp, survival, reason, raw_size, size in rows:
        path = checkpoint / file_path
        day = dt.datetime.fromtimestamp(timestamp, dt.UTC).date()
        assert day in DAYS and utc_day(path) == day and REASON.fullmatch(reason)
        data = path.read_bytes()
        assert size == len(data)
        raw_files += data[:4] != LZ4_MAGIC
        recording = decode_recording(data)
        assert raw_size == len(msgpack.packb(recording))
        dropped += len(recording["steps"]) < survival
        shapes.add("runner" if "positions" in recording["metadata"]["affordance_layout"] else "flat")
        days.add(day)
    assert days == set(DAYS) and shapes == {"runner", "flat"} and raw_files >= 1 and dropped >= 1
    assert utc_day(checkpoint / "demo.db") == DAYS[-1]


def test_landing_tmrl_layout(landing_pair: tuple[Path, Path, dict[str, int]]) -> None:
    root, _, counts = landing_pair
    folder = root / "tmrl" / "player_runs"
    files = sorted(folder.iterdir())
    assert len(files) == counts["tmrl"]
    layouts, days = set(), set()
    for path in files:
        loaded = safe_load(path.read_bytes())
        match = TMRL_NAME.fullmatch(path.name)
        if match is None:
            assert path.name == "legacy_run_0001.pkl" and isinstance(loaded, list)
            noon = dt.datetime.combine(DAYS[0], dt.time(12), tzinfo=dt.UTC)
            assert path.stat().st_mtime == noon.timestamp()
            continue
        named = dt.datetime.strptime(match[1] + match[2], "%Y%m%d%H%M%S").replace(tzinfo=dt.UTC)
        assert loaded["run_id"] == path.stem and dt.datetime.fromisoformat(loaded["recorded_at"]) == named
        assert named.date() in DAYS and utc_day(path) == named.date()
        layouts.add(loaded["metadata"]["memory_class"])
        days.add(named.date())
        if loaded["metadata"]["memory_class"] == "MemoryTMFull":
            assert len(loaded["samples"]) <= 4
    assert layouts == {"MemoryTMLidar", "MemoryTMFull"} and days == set(DAYS)


def test_landing_sc2_layout(landing_pair: tuple[Path, Path, dict[str, int]]) -> None:
    """Three replays a day in date folders, played that day; the default rules reject the short one."""
    root, _, counts = landing_pair
    files = sorted((root / "sc2").rglob("*.SC2Replay"))
    assert len(files) == counts["sc2"] == 3 * len(DAYS)
    by_day: dict[dt.date, list[bool]] = {}
    for path in files:
        day = dt.date.fromisoformat(path.parent.name)
        data = path.read_bytes()
        row = replay_metadata(
            data, Lineage.of_bytes(data, day, str(path)), ValidityRules()
        )
        assert row["played_at"].date() == day == utc_day(path)
        assert [p["race"][0] for p in row["players"]] == [path.name[0], path.name[2]]
        by_day.setdefault(day, []).append(row["valid"])
        if not row["valid"]:
            assert row["invalid_reasons"] == [f"{row['game_loops']} game loops < 1000"]
    assert sorted(by_day) == DAYS and all(sorted(v) == [False, True, True] for v in by_day.values())
