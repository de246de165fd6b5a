"""Synthetic Townlet checkpoints: ``recordings/episode_{id:06d}.msgpack.lz4`` plus the SQLite index.

Mirrors what Townlet's ``EpisodeRecorder``/``DemoDatabase`` write (checked field for field against
``shared/data/townlet/checkpoints_level2_5``): one msgpack map per episode packed with msgpack's
defaults (every float a float64, meters/q-values float32-rounded like the torch tensors they come
from), ``lz4.frame`` with default settings, or raw msgpack under the same name for
``compression: none``; dropped steps keep ``survival_steps`` and the totals of the full episode.
Generation is vectorised with numpy so a 10,000-episode benchmark checkpoint takes seconds.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import lz4.frame
import msgpack
import numpy as np

__all__ = [
    "AFFORDANCE_NAMES",
    "OPTIONAL_STEP_FIELDS",
    "TownletEpisode",
    "TownletRecording",
    "recording_file_path",
    "townlet_recording",
    "townlet_recording_bytes",
    "write_townlet_checkpoint",
]

Compression = Literal["lz4", "none"]
LayoutShape = Literal["flat", "runner"]

AFFORDANCE_NAMES = (
    "Bed", "LuxuryBed", "Shower", "HomeMeal", "FastFood", "Doctor", "Hospital", "Therapist",
    "Recreation", "Park", "Bar", "Job", "Labor", "Gym",
)  # fmt: skip
OPTIONAL_STEP_FIELDS = ("q_values", "epsilon", "action_masks", "time_of_day", "interaction_progress")
# Combinations of non-nil optional step fields seen in the real recordings (per episode, never mixed).
_FIELD_PATTERNS: tuple[tuple[str, ...], ...] = (
    (),
    ("q_values", "epsilon", "action_masks"),
    ("q_values", "action_masks"),
    ("epsilon", "action_masks"),
    ("q_values",),
    ("action_masks",),
    ("q_values", "time_of_day", "interaction_progress"),
    ("time_of_day", "interaction_progress"),
)
GRID_SIZE = 8
NUM_ACTIONS = 6  # 0 up, 1 down, 2 left, 3 right, 4 interact, 5 wait (checked on the real positions)
_INTERACT = 4
_MOVES = np.array([[0, -1], [0, 1], [-1, 0], [1, 0], [0, 0], [0, 0]], dtype=np.int64)
_METER_START = np.array([1.0, 1.0, 0.85, 0.75, 1.0, 0.55, 0.95, 0.64])

# Verbatim from demo_level2_5.db (sqlite_master), in the producer's creation order.
SCHEMA_STATEMENTS = (
    """CREATE TABLE episodes (
                episode_id INTEGER PRIMARY KEY,
                timestamp REAL NOT NULL,
                survival_time INTEGER NOT NULL,
                total_reward REAL NOT NULL,
                extrinsic_reward REAL NOT NULL,
                intrinsic_reward REAL NOT NULL,
                intrinsic_weight REAL NOT NULL,
                curriculum_stage INTEGER NOT NULL,
                epsilon REAL NOT NULL
            )""",
    "CREATE INDEX idx_episodes_timestamp ON episodes(timestamp)",
    """CREATE TABLE affordance_visits (
                episode_id INTEGER NOT NULL,
                from_affordance TEXT NOT NULL,
                to_affordance TEXT NOT NULL,
                visit_count INTEGER NOT NULL,
                FOREIGN KEY (episode_id) REFERENCES episodes(episode_id)
            )""",
    "CREATE INDEX idx_visits_episode ON affordance_visits(episode_id)",
    """CREATE TABLE position_heatmap (
                episode_id INTEGER NOT NULL,
                x INTEGER NOT NULL,
                y INTEGER NOT NULL,
                visit_count INTEGER NOT NULL,
                novelty_value REAL,
                FOREIGN KEY (episode_id) REFERENCES episodes(episode_id)
            )""",
    "CREATE INDEX idx_heatmap_episode ON position_heatmap(episode_id)",
    """CREATE TABLE system_state (
                key TEXT PRIMARY KEY,
                value TEXT NOT NULL
            )""",
    """CREATE TABLE episode_recordings (
                episode_id INTEGER PRIMARY KEY,
                file_path TEXT NOT NULL,
                timestamp REAL NOT NULL,
                survival_steps INTEGER NOT NULL,
                total_reward REAL NOT NULL,
                extrinsic_reward REAL NOT NULL,
                intrinsic_reward REAL NOT NULL,
                curriculum_stage INTEGER NOT NULL,
                epsilon REAL NOT NULL,
                intrinsic_weight REAL NOT NULL,
                recording_reason TEXT NOT NULL,
                file_size_bytes INTEGER,
                compressed_size_bytes INTEGER
            )""",
    "CREATE INDEX idx_recordings_stage ON episode_recordings(curriculum_stage)",
    "CREATE INDEX idx_recordings_reason ON episode_recordings(recording_reason)",
    "CREATE INDEX idx_recordings_reward ON episode_recordings(total_reward)",
)


@dataclass(frozen=True)
class TownletEpisode:
    """What to generate for one episode; ``optional_fields=None`` picks a real pattern from the seed."""

    episode_id: int
    seed: int
    num_steps: int
    timestamp: float
    compression: Compression = "lz4"
    layout_shape: LayoutShape = "runner"
    drop_steps: int = 0
    curriculum_stage: int = 1
    epsilon: float = 1.0
    intrinsic_weight: float = 0.1
    recording_reason: str = "periodic"
    optional_fields: tuple[str, ...] | None = None


@dataclass(frozen=True)
class TownletRecording:
    """File bytes plus what the index row needs (sizes are the producer's two size columns)."""

    data: bytes
    raw_size: int
    metadata: dict[str, Any] = field(repr=False)


def recording_file_path(episode_id: int) -> str:
    """Index ``file_path`` (relative to the checkpoint directory), as the producer names it."""
    return f"recordings/episode_{episode_id:06d}.msgpack.lz4"


def townlet_recording_bytes(
    *,
    episode_id: int,
    seed: int,
    num_steps: int,
    compression: Compression,
    layout_shape: LayoutShape,
    timestamp: float,
    drop_steps: int = 0,
    curriculum_stage: int = 1,
    epsilon: float = 1.0,
    intrinsic_weight: float = 0.1,
    optional_fields: Sequence[str] | None = None,
) -> bytes:
    """Bytes of one recording file (lz4 frame, or raw msgpack for ``compression="none"``)."""
    spec = TownletEpisode(
        episode_id=episode_id,
        seed=seed,
        num_steps=num_steps,
        timestamp=timestamp,
        compression=compression,
        layout_shape=layout_shape,
        drop_steps=drop_steps,
        curriculum_stage=curriculum_stage,
        epsilon=epsilon,
        intrinsic_weight=intrinsic_weight,
        optional_fields=None if optional_fields is None else tuple(optional_fields),
    )
    return townlet_recording(spec).data


def townlet_recording(spec: TownletEpisode) -> TownletRecording:
    """Simulate one episode on the 8x8 grid and encode it exactly as the producer does.

    ``position[t]`` already shows the effect of ``action[t]`` (like the real files); the last
    recorded step has ``done: true``; ``drop_steps`` removes a contiguous block from the middle of
    ``steps`` while ``survival_steps`` and the reward totals still describe the whole episode.
    """
    n = spec.num_steps
    if n < 2:
        raise ValueError("num_steps must be >= 2")
    if not 0 <= spec.drop_steps <= n - 2:
        raise ValueError("drop_steps must leave the first and last step")
    if spec.compression not in ("lz4", "none"):
        raise ValueError(f"unknown compression {spec.compression!r}")
    if spec.layout_shape not in ("flat", "runner"):
        raise ValueError(f"unknown layout_shape {spec.layout_shape!r}")
    rng = np.random.default_rng(spec.seed)
    if spec.optional_fields is None:
        present = set(_FIELD_PATTERNS[int(rng.integers(len(_FIELD_PATTERNS)))])
    else:
        present = set(spec.optional_fields)
        unknown = present - set(OPTIONAL_STEP_FIELDS)
        if unknown:
            raise ValueError(f"unknown optional step fields {sorted(unknown)}")

    names = [AFFORDANCE_NAMES[i] for i in rng.choice(len(AFFORDANCE_NAMES), size=6, replace=False)]
    cells = rng.choice(GRID_SIZE * GRID_SIZE, size=len(names), replace=False).tolist()
    positions = {name: [c % GRID_SIZE, c // GRID_SIZE] for name, c in zip(names, cells, strict=True)}

    actions = rng.integers(0, NUM_ACTIONS, size=n)
    xy = _walk(rng, actions)
    decay = rng.uniform(0.0005, 0.004, size=8) + rng.uniform(0.0, 0.002, size=(n, 8))
    meters = np.clip(_METER_START - rng.uniform(0.0, 0.05, size=8) - np.cumsum(decay, axis=0), 0.0, 1.0)
    meters32 = meters.astype(np.float32).astype(np.float64)
    rewards = (0.5 * (meters32[:, 0] + meters32[:, 6]) * (1.0 - 0.1 * rng.random(n))).tolist()
    intrinsic = (0.1 * rng.random(n)).tolist()

    visits: dict[str, int] = {}
    at = {tuple(pos): name for name, pos in positions.items()}
    for t in np.flatnonzero(actions == _INTERACT).tolist():
        name = at.get((xy[t][0], xy[t][1]))
        if name is not None:
            visits[name] = visits.get(name, 0) + 1

    none = [None] * n
    q_values = (
        rng.standard_normal((n, NUM_ACTIONS), dtype=np.float32).astype(np.float64).tolist()
        if "q_values" in present
        else none
    )
    step_epsilon = [spec.epsilon] * n if "epsilon" in present else none
    if "action_masks" in present:
        before = np.array([xy[0], *xy[:-1]])  # where each action was chosen
        masks = np.ones((n, NUM_ACTIONS), dtype=bool)
        masks[:, 0] = before[:, 1] > 0
        masks[:, 1] = before[:, 1] < GRID_SIZE - 1
        masks[:, 2] = before[:, 0] > 0
        masks[:, 3] = before[:, 0] < GRID_SIZE - 1
        action_masks: list[Any] = masks.tolist()
    else:
        action_masks = none
    time_of_day: list[Any] = [t % 24 for t in range(n)] if "time_of_day" in present else none
    progress: list[Any] = [(t % 5) / 5 for t in range(n)] if "interaction_progress" in present else none
    done = [False] * n
    done[-1] = True

    steps = [
        {
            "step": t,
            "position": pos,
            "meters": m,
            "action": a,
            "reward": r,
            "intrinsic_reward": ir,
            "done": d,
            "q_values": q,
            "epsilon": e,
            "action_masks": am,
            "time_of_day": tod,
            "interaction_progress": ip,
        }
        for t, pos, m, a, r, ir, d, q, e, am, tod, ip in zip(
            range(n), xy, meters32.tolist(), actions.tolist(), rewards, intrinsic, done,
            q_values, step_epsilon, action_masks, time_of_day, progress, strict=True,
        )
    ]  # fmt: skip
    if spec.drop_steps:
        start = int(rng.integers(1, n - spec.drop_steps))
        del steps[start : start + spec.drop_steps]

    extrinsic_total = sum(rewards)
    intrinsic_total = sum(intrinsic)
    if spec.layout_shape == "flat":
        layout: dict[str, Any] = positions
    else:
        layout = {"positions": positions, "ordering": names, "position_dim": 2}
    metadata = {
        "episode_id": spec.episode_id,
        "survival_steps": n,
        "total_reward": extrinsic_total + spec.intrinsic_weight * intrinsic_total,
        "extrinsic_reward": extrinsic_total,
        "intrinsic_reward": intrinsic_total,
        "curriculum_stage": spec.curriculum_stage,
        "epsilon": float(spec.epsilon),
        "intrinsic_weight": float(spec.intrinsic_weight),
        "timestamp": float(spec.timestamp),
        "affordance_layout": layout,
        "affordance_visits": visits,
        "custom_action_uses": {},
    }
    raw = msgpack.packb({"version": 1, "metadata": metadata, "steps": steps, "affordances": layout})
    data = lz4.frame.compress(raw) if spec.compression == "lz4" else raw
    return TownletRecording(data=data, raw_size=len(raw), metadata=metadata)


def _walk(rng: np.random.Generator, actions: np.ndarray) -> list[list[int]]:
    """Positions after each action, clipped to the grid (blocked moves leave the agent in place)."""
    x, y = (int(v) for v in rng.integers(0, GRID_SIZE, size=2))
    top = GRID_SIZE - 1
    out = []
    for dx, dy in _MOVES[actions].tolist():
        x = 0 if x + dx < 0 else top if x + dx > top else x + dx
        y = 0 if y + dy < 0 else top if y + dy > top else y + dy
        out.append([x, y])
    return out


def write_townlet_checkpoint(
    directory: Path, episodes: Iterable[TownletEpisode], db_name: str = "demo.db"
) -> Path:
    """Write every episode's file and one SQLite index (WAL mode) like ``DemoDatabase``; return its path.

    Index rows: ``file_size_bytes`` = uncompressed msgpack size, ``compressed_size_bytes`` = the
    file's size (equal for ``compression: none``). Each recording's mtime is set to its
    ``timestamp``. Rows go in with one ``executemany`` and one commit, so 10,000 episodes are
    bounded by encoding, not SQLite. Refuses to overwrite an existing index.
    """
    directory = Path(directory)
    db_path = directory / db_name
    if db_path.exists():
        raise FileExistsError(db_path)
    (directory / "recordings").mkdir(parents=True, exist_ok=True)
    rows = []
    for spec in episodes:
        recording = townlet_recording(spec)
        relative = recording_file_path(spec.episode_id)
        path = directory / relative
        path.write_bytes(recording.data)
        os.utime(path, (spec.timestamp, spec.timestamp))
        md = recording.metadata
        rows.append(
            (
                spec.episode_id, relative, md["timestamp"], md["survival_steps"], md["total_reward"],
                md["extrinsic_reward"], md["intrinsic_reward"], md["curriculum_stage"], md["epsilon"],
                md["intrinsic_weight"], spec.recording_reason, recording.raw_size, len(recording.data),
            )
        )  # fmt: skip
    connection = sqlite3.connect(db_path)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        with connection:
            for statement in SCHEMA_STATEMENTS:
                connection.execute(statement)
            connection.executemany(
                "INSERT INTO episode_recordings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
            )
    finally:
        connection.close()
    return db_path
