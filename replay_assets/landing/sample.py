"""A demo landing zone with all four sources laid out the way the listing code expects.

Layout under ``root`` (each file's day is the UTC day in its path or name, else its mtime)::

    metta/<environment>/<YYYY-MM-DD>/<uuid4>.json.z | .json.gz | .json
    townlet/checkpoints_demo/demo.db                        (index, WAL mode)
    townlet/checkpoints_demo/recordings/episode_NNNNNN.msgpack.lz4
    tmrl/player_runs/YYYYMMDD_HHMMSS_<8 hex>.pkl
    tmrl/player_runs/legacy_run_0001.pkl                    (bare list; mtime = noon of the first day)
    sc2/<YYYY-MM-DD>/<race>v<race>_<HHMMSS>.SC2Replay       (build 75689; one a day too short to be valid)

Every file's mtime is set inside its day. Each day's content is derived from ``(seed, date)`` only,
so widening the window leaves existing days byte-identical (the townlet index and the legacy run's
mtime describe the whole window and do change).
"""

from __future__ import annotations

import datetime as dt
import os
import random
import uuid
from pathlib import Path

from replay_assets.sources.metta.sample import Compression, TypeField, metta_replay_bytes
from replay_assets.sources.sc2.sample import RACES, Sc2PlayerSpec, sc2_replay_bytes
from replay_assets.sources.tmrl.sample import Layout, tmrl_player_run_bytes
from replay_assets.sources.townlet.sample import Compression as TownletCompression
from replay_assets.sources.townlet.sample import LayoutShape, TownletEpisode, write_townlet_checkpoint

__all__ = [
    "METTA_ENVIRONMENTS",
    "TMRL_LEGACY_NAME",
    "TOWNLET_CHECKPOINT",
    "TOWNLET_DB_NAME",
    "write_sample_landing_zone",
]

METTA_ENVIRONMENTS = ("arena", "navigation")
TOWNLET_CHECKPOINT = "checkpoints_demo"
TOWNLET_DB_NAME = "demo.db"
TMRL_LEGACY_NAME = "legacy_run_0001.pkl"
_EXTENSIONS = {"zlib": ".json.z", "gzip": ".json.gz", "none": ".json"}
_COMPRESSIONS: tuple[Compression, ...] = ("zlib", "gzip", "none")
# A 3x3 Latin square: any block of three covers every version *and* every compression.
_METTA_COMBOS: tuple[tuple[int, Compression], ...] = tuple(
    (1 + i % 3, _COMPRESSIONS[(i % 3 + i // 3) % 3]) for i in range(9)
)
_EPOCH = dt.date(2020, 1, 1)  # townlet episode ids are derived from the day number since this date
_REASONS = (
    "periodic", "periodic", "periodic_50", "stage_{s}_pre_transition", "before_transition_{ep}",
    "after_transition_{ep}", "top_10pct", "bottom_10pct", "stage_{s}_first_5",
)  # fmt: skip


# Marks a landing zone as generated, so the demo may replace it without touching real data.
SAMPLE_MARKER = "SAMPLE_DATA.txt"


def write_sample_landing_zone(root: Path, *, days: int, end_date: dt.date, seed: int = 0) -> dict[str, int]:
    """Write ``days`` UTC days ending at ``end_date`` (inclusive); return files written per source.

    Per day: four metta replays (all three versions and compressions, both environments, one v2
    with pens-style ``type_id``), three townlet episodes (runner + lz4, flat + lz4 with dropped
    steps, runner + ``compression: none``), one lidar and one small full-layout tmrl run, three
    StarCraft II replays (one too short to be valid). Counts include the townlet index file.
    """
    if days < 1:
        raise ValueError("days must be >= 1")
    root = Path(root)
    dates = [end_date - dt.timedelta(days=offset) for offset in range(days - 1, -1, -1)]
    root.mkdir(parents=True, exist_ok=True)
    marker = root / SAMPLE_MARKER
    marker.write_text("written by replay-assets sample-data; safe to delete\n")
    _touch(marker, _at(dates[0], 0))
    counts = {"metta": 0, "sc2": 0, "townlet": 0, "tmrl": 0}
    episodes: list[TownletEpisode] = []
    for day in dates:
        counts["metta"] += _write_metta_day(root / "metta", day, seed)
        counts["tmrl"] += _write_tmrl_day(root / "tmrl" / "player_runs", day, seed)
        counts["sc2"] += _write_sc2_day(root / "sc2" / day.isoformat(), day, seed)
        episodes.extend(_townlet_day(day, seed))

    checkpoint = root / "townlet" / TOWNLET_CHECKPOINT
    db_path = write_townlet_checkpoint(checkpoint, episodes, db_name=TOWNLET_DB_NAME)
    last = max(episode.timestamp for episode in episodes)
    os.utime(db_path, (last, last))
    counts["townlet"] = len(episodes) + 1

    legacy = root / "tmrl" / "player_runs" / TMRL_LEGACY_NAME
    legacy.write_bytes(
        tmrl_player_run_bytes(
            run_id=legacy.stem, recorded_at=_at(dates[0], 12 * 3600), layout="lidar", num_samples=40,
            seed=seed, legacy=True,
        )
    )  # fmt: skip
    _touch(legacy, _at(dates[0], 12 * 3600))
    counts["tmrl"] += 1
    return counts


def _rng(seed: int, day: dt.date, source: str) -> random.Random:
    return random.Random(f"{seed}:{day.isoformat()}:{source}")


def _at(day: dt.date, seconds: float) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC) + dt.timedelta(seconds=seconds)


def _touch(path: Path, when: dt.datetime) -> None:
    stamp = when.timestamp()
    os.utime(path, (stamp, stamp))


def _write_metta_day(base: Path, day: dt.date, seed: int) -> int:
    rng = _rng(seed, day, "metta")
    block = 3 * (day.toordinal() % 3)
    plan: list[tuple[int, Compression, TypeField]] = [
        (*_METTA_COMBOS[block + i], "type_name") for i in range(3)
    ]
    plan.append((2, rng.choice(_COMPRESSIONS), "type_id"))
    times = sorted(rng.uniform(600, 86_000) for _ in plan)
    for index, ((version, compression, type_field), seconds) in enumerate(zip(plan, times, strict=True)):
        environment = METTA_ENVIRONMENTS[index % 2]
        stem = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        data = metta_replay_bytes(
            version=version,
            compression=compression,
            seed=rng.getrandbits(32),
            num_agents=rng.choice((3, 4, 5, 6)),
            max_steps=rng.choice((120, 200, 300)),
            environment=environment,
            type_field=type_field,
        )
        folder = base / environment / day.isoformat()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{stem}{_EXTENSIONS[compression]}"
        path.write_bytes(data)
        _touch(path, _at(day, seconds))
    return len(plan)


def _townlet_day(day: dt.date, seed: int) -> list[TownletEpisode]:
    rng = _rng(seed, day, "townlet")
    day_number = (day - _EPOCH).days
    stage = 1 + day_number % 5
    shapes: tuple[tuple[LayoutShape, TownletCompression], ...] = (
        ("runner", "lz4"),
        ("flat", "lz4"),
        ("runner", "none"),
    )
    episodes = []
    for k, (shape, compression) in enumerate(shapes):
        episode_id = day_number * 10 + k
        num_steps = rng.randint(40, 250)
        reason = _REASONS[episode_id % len(_REASONS)].format(s=stage, ep=episode_id)
        episodes.append(
            TownletEpisode(
                episode_id=episode_id,
                seed=rng.getrandbits(32),
                num_steps=num_steps,
                timestamp=_at(day, 3600 * (2 + 8 * k) + rng.randrange(3600)).timestamp(),
                compression=compression,
                layout_shape=shape,
                drop_steps=num_steps // 5 if k == 1 else 0,
                curriculum_stage=stage,
                epsilon=round(max(0.05, 1.0 - 0.025 * (day_number % 40)), 3),
                recording_reason=reason,
            )
        )
    return episodes


def _write_tmrl_day(folder: Path, day: dt.date, seed: int) -> int:
    rng = _rng(seed, day, "tmrl")
    folder.mkdir(parents=True, exist_ok=True)
    runs: tuple[tuple[Layout, int, int], ...] = (
        ("lidar", rng.randint(60, 150), 3600 * 9),
        ("full", rng.randint(3, 4), 3600 * 15),
    )
    for index, (layout, num_samples, base_seconds) in enumerate(runs):
        recorded_at = _at(day, base_seconds + rng.randrange(3 * 3600))
        run_id = f"{recorded_at:%Y%m%d_%H%M%S}_{rng.getrandbits(32):08x}"
        path = folder / f"{run_id}.pkl"
        path.write_bytes(
            tmrl_player_run_bytes(
                run_id=run_id, recorded_at=recorded_at, layout=layout,
                num_samples=num_samples, seed=rng.getrandbits(32), episode_index=index,
            )
        )  # fmt: skip
        _touch(path, recorded_at + dt.timedelta(seconds=num_samples / 20))
    return len(runs)


# Per day: two ladder games (3-6 game minutes) and one left after ~30 s, which the default validity
# rules (>= 1000 game loops) reject, so the demo shows a replay judged invalid and kept out of frames.
_SC2_GAMES: tuple[tuple[int | None, int], ...] = ((None, 3600 * 10), (None, 3600 * 16), (700, 3600 * 20))


def _write_sc2_day(folder: Path, day: dt.date, seed: int) -> int:
    rng = _rng(seed, day, "sc2")
    folder.mkdir(parents=True, exist_ok=True)
    for game_loops, base_seconds in _SC2_GAMES:
        played_at = _at(day, base_seconds + rng.randrange(3 * 3600))
        races = (rng.choice(RACES), rng.choice(RACES))
        players = tuple(
            Sc2PlayerSpec(
                name=f"{race[:4]}Demo{rng.randrange(100, 1000)}", race=race, mmr=rng.randrange(2200, 5200)
            )
            for race in races
        )
        path = folder / f"{races[0][0]}v{races[1][0]}_{played_at:%H%M%S}.SC2Replay"
        path.write_bytes(
            sc2_replay_bytes(
                random.Random(rng.getrandbits(64)),
                played_at=played_at,
                game_loops=game_loops,
                players=players,
            )
        )
        _touch(path, played_at)
    return len(_SC2_GAMES)
