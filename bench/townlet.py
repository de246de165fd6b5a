"""Townlet recordings to Parquet: this project against the producer's own way of reading them.

    .venv/bin/python bench/townlet.py [--recordings 10000] [--days 5] [--repeats 3] [--loads 200] [--quick]

Setup: ``--recordings`` episodes of 500 steps written with the project's own writer
(``write_townlet_checkpoint``) into a temporary landing zone ``<landing>/townlet/checkpoints_bench/``,
timestamps spread evenly over ``--days`` UTC days (one partition a day). Like the real checkpoint: most
episodes record q-values, epsilon and masks, the rest one of the real optional-field patterns; 1% are
``compression: none``, 2% lost 5..50 steps, 10% have the flat layout.

1. Materialization, ``dagster.materialize`` on an ephemeral instance with the range tags of every day:
   (a) ``townlet_recordings_index`` + ``townlet_episode_steps`` with ``raw_replay_listings`` as a source
   asset (listed once beforehand, that run timed apart), and (b) all three assets in one run. Against
   THE PRODUCER'S WAY, a one-off script: the SQLite ``episode_recordings`` table into pandas plus a
   sha256 and size per file (our index hashes and verifies every file too), then per day every file
   ``lz4.frame.decompress`` (raw when not an lz4 frame) + ``msgpack.unpackb`` into Python dicts, one dict
   row per step with the steps table's columns, ``pd.DataFrame(rows).to_parquet()``.
   Ours also verifies every file in the index (decompressed, every step's keys, types and list lengths
   checked, the step columns built only by the steps asset), writes fsynced files atomically and runs the
   asset checks; the baseline verifies nothing. steps/s = steps written / median seconds.
2. Peak RSS of one day in fresh children: all three assets for one partition against the baseline.
3. ``TownletRecordings(warehouse=...).load(episode_id)`` of ``--loads`` random episodes, one at a time after a
   one-load warm-up in a fresh child process (and, to compare, in this one), against the producer's own
   figure for the same episodes (read the file, lz4, ``msgpack.unpackb`` into dicts), and where the time
   of a load goes.

Timings are medians [min..max] of ``--repeats`` interleaved rounds after an untimed warm-up (Dagster on a
20-recording zone, the baseline on 20 files); when one baseline run takes over 60 s it runs only in the
first and the last round (two samples, labelled so): every round of it would double the benchmark's time.
Helpers (``Case``, ``Timing``, ``Peak``, ``quiesce``, ``time_interleaved``, RSS readers) come from
``bench/harness.py``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import hashlib
import multiprocessing
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from harness import (  # bench/harness.py
    Case,
    Peak,
    Timing,
    maxrss_mib,
    quiesce,
    time_interleaved,
    verdict,
    vmhwm_mib,
)

from replay_assets.sources.townlet.sample import TownletEpisode, write_townlet_checkpoint

REPO_ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT = "checkpoints_bench"
DB_NAME = "demo.db"
FIRST_DAY = dt.date(2025, 6, 1)
PARTITIONS_START = dt.date(2025, 1, 1)
STEPS = 500
FULL_FIELDS = ("q_values", "epsilon", "action_masks")
WARM_RECORDINGS = 20
RATE_TARGET = 5.0  # x the baseline's steps/s
LOAD_TARGET_MS = 2.0  # median load()
PRODUCER_FIGURE_MS = 10.0  # the seed tool's stated figure: decompressing one episode takes < 10 ms
BASELINE_REPEAT_LIMIT = 60.0  # seconds: a slower baseline runs in the first and last rounds only
QUICK = {"recordings": 1_000, "repeats": 2, "loads": 100}
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
LZ4_MAGIC = b"\x04\x22\x4d\x18"
INDEX_KEY, STEPS_KEY = "townlet_recordings_index", "townlet_episode_steps"
BASELINE = "producer's way: unpackb -> dict rows -> pandas  [baseline]"
OURS_SPLIT = "ours: index + steps (listings as source asset)"
OURS_WHOLE = "ours: listings + index + steps, one run"


# ---------------------------------------------------------------------------------------------------------
# The landing zone, written by the project's own writer


@dataclass(frozen=True)
class Landing:
    root: Path
    days: tuple[dt.date, ...]
    specs: tuple[TownletEpisode, ...]

    @property
    def checkpoint_dir(self) -> Path:
        return self.root / "townlet" / CHECKPOINT

    @property
    def steps(self) -> int:
        """Steps recorded in every file: what each side must write."""
        return sum(s.num_steps - s.drop_steps for s in self.specs)

    def files_bytes(self) -> int:
        return sum(p.stat().st_size for p in (self.checkpoint_dir / "recordings").iterdir())


def episode_specs(recordings: int, days: int, steps: int = STEPS, seed: int = 0) -> list[TownletEpisode]:
    """Ids increasing with time, evenly over ``days``; the optional fields and oddities of the real data."""
    rng = random.Random(seed)
    start = dt.datetime.combine(FIRST_DAY, dt.time(), tzinfo=dt.UTC).timestamp()
    span = days * 86_400
    specs = []
    for i in range(recordings):
        specs.append(
            TownletEpisode(
                episode_id=i + 1,
                seed=seed * 1_000_003 + i,
                num_steps=steps,
                timestamp=start + (i + 0.5) * span / recordings,
                compression="none" if i % 100 == 37 else "lz4",
                layout_shape="flat" if rng.random() < 0.1 else "runner",
                drop_steps=rng.randint(5, 50) if rng.random() < 0.02 else 0,
                curriculum_stage=1 + 5 * i // recordings,
                epsilon=max(0.05, 1.0 - i / recordings),
                optional_fields=FULL_FIELDS if rng.random() < 0.8 else None,  # None: a real pattern
            )
        )
    return specs


def write_landing(root: Path, specs: Sequence[TownletEpisode], days: int) -> Landing:
    checkpoint = root / "townlet" / CHECKPOINT
    db = write_townlet_checkpoint(checkpoint, specs, db_name=DB_NAME)
    last = max(s.timestamp for s in specs)
    os.utime(db, (last, last))
    day_list = tuple(FIRST_DAY + dt.timedelta(days=d) for d in range(days))
    return Landing(root, day_list, tuple(specs))


# ---------------------------------------------------------------------------------------------------------
# Ours: the real assets through dagster.materialize


def range_tags(days: Sequence[dt.date]) -> dict[str, str]:
    return {
        "dagster/asset_partition_range_start": days[0].isoformat(),
        "dagster/asset_partition_range_end": days[-1].isoformat(),
    }


def materialize_assets(
    names: Sequence[str], landing: Path, warehouse: Path, tags: dict[str, str], partition: str | None = None
) -> None:
    """One run of the named assets (``listings_source``: the listing as a source asset), fresh instance."""
    from dagster import DagsterInstance, materialize

    from replay_assets.definitions import build_resources
    from replay_assets.landing.assets import raw_replay_listings
    from replay_assets.settings import Settings
    from replay_assets.sources.townlet.assets import townlet_episode_steps, townlet_recordings_index

    assets = {
        "listings": raw_replay_listings,
        "listings_source": raw_replay_listings.to_source_asset(),
        "index": townlet_recordings_index,
        "steps": townlet_episode_steps,
    }
    result = materialize(
        [assets[name] for name in names],
        resources=build_resources(Settings(str(landing), str(warehouse), PARTITIONS_START)),
        instance=DagsterInstance.ephemeral(),
        tags=tags if partition is None else {},
        partition_key=partition,
        run_config=QUIET_LOGS,  # events are still recorded; only console DEBUG lines are dropped
    )
    if not result.success:
        raise RuntimeError(f"materialize {names} failed")


def warehouse_rows(warehouse: Path, key: str) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in (warehouse / key).glob("date=*/*.parquet"))


def parquet_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*.parquet"))


# ---------------------------------------------------------------------------------------------------------
# THE PRODUCER'S WAY (the baseline): a one-off script over the same landing zone


def producer_decode(data: bytes) -> dict[str, Any]:
    """How the producer's replay server reads a file: lz4 frame (raw when not one), msgpack to dicts."""
    import lz4.frame
    import msgpack

    return msgpack.unpackb(lz4.frame.decompress(data) if data[:4] == LZ4_MAGIC else data)


def producer_step_rows(doc: dict[str, Any], day: dt.date, uri: str) -> list[dict[str, Any]]:
    """One dict per step with the columns of ``townlet_episode_steps`` (position flattened to x, y, z)."""
    episode_id = doc["metadata"]["episode_id"]
    rows = []
    for s in doc["steps"]:
        position = s["position"]
        rows.append(
            {
                "date": day,
                "checkpoint": CHECKPOINT,
                "episode_id": episode_id,
                "step": s["step"],
                "x": position[0] if len(position) > 0 else None,
                "y": position[1] if len(position) > 1 else None,
                "z": position[2] if len(position) > 2 else None,
                "meters": s["meters"],
                "action": s["action"],
                "reward": s["reward"],
                "intrinsic_reward": s["intrinsic_reward"],
                "done": s["done"],
                "q_values": s.get("q_values"),
                "epsilon": s.get("epsilon"),
                "action_masks": s.get("action_masks"),
                "time_of_day": s.get("time_of_day"),
                "interaction_progress": s.get("interaction_progress"),
                "source_uri": uri,
            }
        )
    return rows


def producer_index(checkpoint_dir: Path, day: dt.date | None) -> Any:
    """``episode_recordings`` into pandas, its UTC day, and each file's sha256 and size (one day or all)."""
    import pandas as pd

    with sqlite3.connect(checkpoint_dir / DB_NAME) as connection:
        frame = pd.read_sql_query("SELECT * FROM episode_recordings ORDER BY episode_id", connection)
    frame["date"] = pd.to_datetime(frame["timestamp"], unit="s", utc=True).dt.date
    if day is not None:
        frame = frame[frame["date"] == day].copy()
    digests, sizes = [], []
    for relative in frame["file_path"]:
        data = (checkpoint_dir / relative).read_bytes()
        digests.append(hashlib.sha256(data).hexdigest())
        sizes.append(len(data))
    frame["sha256"] = digests
    frame["actual_compressed_size"] = sizes
    return frame


def producer_run(
    checkpoint_dir: Path, out: Path, day: dt.date | None = None, limit: int | None = None
) -> int:
    """The whole baseline (``limit`` files only, for the warm-up); returns the step rows written."""
    import pandas as pd

    index = producer_index(checkpoint_dir, day)
    if limit is not None:
        index = index.head(limit)
    written = 0
    for date, files in index.groupby("date"):
        folder = f"date={date.isoformat()}"
        (out / INDEX_KEY / folder).mkdir(parents=True, exist_ok=True)
        files.to_parquet(out / INDEX_KEY / folder / "part-0.parquet", engine="pyarrow")
        rows: list[dict[str, Any]] = []
        for relative in files["file_path"]:
            path = checkpoint_dir / relative
            rows.extend(producer_step_rows(producer_decode(path.read_bytes()), date, path.as_uri()))
        (out / STEPS_KEY / folder).mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_parquet(out / STEPS_KEY / folder / "part-0.parquet", engine="pyarrow")
        written += len(rows)
    return written


# ---------------------------------------------------------------------------------------------------------


def timing_header(first: str) -> str:
    return f"   {first:<58} {'steps':>10} {'median':>8} {'[min..max]':<16} {'steps/s':>11}  vs baseline"


def timing_row(label: str, timing: Timing, baseline: Timing) -> str:
    runs = f"[{min(timing.seconds):.1f}..{max(timing.seconds):.1f}]" if len(timing.seconds) > 1 else "(1 run)"
    return (
        f"   {label:<58} {timing.samples:>10,} {timing.median:7.1f}s {runs:<16} "
        f"{timing.rate:>11,.0f}  {timing.rate / baseline.rate:6.1f}x"
    )


# ---------------------------------------------------------------------------------------------------------
# 1. Materialization


def warm_zone(root: Path) -> Landing:
    """A tiny zone for the warm-up: pays imports, Dagster's first run and the allocator, not the work."""
    return write_landing(root / "warm_landing", episode_specs(WARM_RECORDINGS, 1, seed=9), 1)


def materialization_cases(landing: Landing, root: Path) -> dict[str, Case]:
    tags = range_tags(landing.days)
    warm = warm_zone(root)
    warm_tags = range_tags(warm.days)

    def warm_ours() -> None:
        materialize_assets(["listings", "index", "steps"], warm.root, root / "wh_warm", warm_tags)

    def split() -> int:
        materialize_assets(["listings_source", "index", "steps"], landing.root, root / "wh_split", tags)
        return warehouse_rows(root / "wh_split", STEPS_KEY)

    def whole() -> int:
        materialize_assets(["listings", "index", "steps"], landing.root, root / "wh_whole", tags)
        return warehouse_rows(root / "wh_whole", STEPS_KEY)

    def warm_baseline() -> None:
        producer_run(landing.checkpoint_dir, root / "wh_warm_baseline", limit=WARM_RECORDINGS)

    return {
        BASELINE: Case(lambda: producer_run(landing.checkpoint_dir, root / "wh_baseline"), warm_baseline),
        OURS_SPLIT: Case(split, warm_ours),
        OURS_WHOLE: Case(whole, lambda: None),
    }


def time_listing(landing: Landing, root: Path) -> float:
    """The listing run the split case reads from (hashes every file): one run, timed apart."""
    started = time.perf_counter()
    materialize_assets(["listings"], landing.root, root / "wh_split", range_tags(landing.days))
    return time.perf_counter() - started


def check_materialization(timings: dict[str, Timing], landing: Landing, root: Path) -> None:
    """Untimed: every side wrote every recorded step, and our index says every recording is valid."""
    import duckdb

    for label, timing in timings.items():
        if timing.samples != landing.steps:
            raise AssertionError(f"{label}: wrote {timing.samples:,} steps, the files hold {landing.steps:,}")
    index = root / "wh_split" / INDEX_KEY / "*" / "*.parquet"
    valid, total = duckdb.sql(f"SELECT count(*) FILTER (valid), count(*) FROM '{index}'").fetchone()
    if not valid == total == len(landing.specs):
        raise AssertionError(f"index: {valid} valid of {total} rows, {len(landing.specs)} recordings")


def bench_materialization(landing: Landing, root: Path, repeats: int) -> tuple[dict[str, Timing], float]:
    print(
        f"\n1. Materialization of {len(landing.specs):,} recordings ({landing.steps:,} steps) over "
        f"{len(landing.days)} days, one range run each.\n"
        "   baseline: SQLite index -> pandas + sha256/size per file; per day lz4 + msgpack.unpackb to\n"
        "   dicts, a dict row per step, pd.DataFrame(rows).to_parquet(). Ours also verifies every file\n"
        "   (every step checked, sizes, metadata vs index), writes fsynced files atomically and runs the\n"
        "   asset checks."
    )
    cases = materialization_cases(landing, root)
    listing = time_listing(landing, root)
    timings = time_interleaved(cases, repeats, slow_case=(BASELINE, BASELINE_REPEAT_LIMIT))
    check_materialization(timings, landing, root)
    baseline = timings[BASELINE]
    print(timing_header("run"))
    for label, timing in timings.items():
        print(timing_row(label, timing, baseline))
    fewer = len(baseline.seconds) < repeats
    note = f" (first and last rounds only: one run takes over {BASELINE_REPEAT_LIMIT:.0f}s)" if fewer else ""
    print(
        f"   raw_replay_listings alone (reads and hashes every file), one run before the split case: "
        f"{listing:.1f}s\n"
        f"   baseline timed {len(baseline.seconds)}x{note}; ours {repeats}x. Step counts checked; all "
        f"{len(landing.specs):,} index rows valid.\n"
        f"   steps Parquet: ours {parquet_bytes(root / 'wh_split' / STEPS_KEY) / 1e6:.0f} MB, baseline "
        f"{parquet_bytes(root / 'wh_baseline' / STEPS_KEY) / 1e6:.0f} MB (pandas: list<double>, object "
        "columns)"
    )
    return timings, listing


# ---------------------------------------------------------------------------------------------------------
# 2. Peak memory of one day, each in a fresh child process


def _memory_work(variant: str, landing_root: str, day: dt.date, out: Path) -> Callable[[], int]:
    """Import what ``variant`` needs first, so the child's baseline includes its imports."""
    landing = Path(landing_root)
    if variant == "baseline":
        import lz4.frame  # noqa: F401
        import msgpack  # noqa: F401
        import pandas.io.parquet  # noqa: F401

        return lambda: producer_run(landing / "townlet" / CHECKPOINT, out, day)
    import dagster  # noqa: F401

    import replay_assets.definitions  # noqa: F401

    def ours() -> int:
        materialize_assets(["listings", "index", "steps"], landing, out, {}, partition=day.isoformat())
        return warehouse_rows(out, STEPS_KEY)

    return ours


def memory_child(variant: str, landing_root: str, day: dt.date) -> tuple[float, float, float, int]:
    """Runs in the child: (baseline after imports, peak, VmHWM) in MiB, and the steps written."""
    with tempfile.TemporaryDirectory(prefix="replay-bench-townlet-mem-") as tmp:
        work = _memory_work(variant, landing_root, day, Path(tmp))
        gc.collect()
        baseline = maxrss_mib()
        steps = work()
        return baseline, maxrss_mib(), vmhwm_mib(), steps


def measure_in_child(variant: str, landing: Landing, day: dt.date) -> Peak:
    """Forkserver, not spawn: ``ru_maxrss`` survives ``exec``, a spawned child would start at our peak."""
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return Peak(*pool.submit(memory_child, variant, str(landing.root), day).result())


def bench_memory(landing: Landing) -> float:
    day = landing.days[-1]
    print(
        f"\n2. Peak RSS of one day ({day}), one fresh child each (forkserver; ru_maxrss, VmHWM check).\n"
        "   Cell = peak (+growth over the child's baseline, taken after its imports). Ours = all three "
        "assets for that partition."
    )
    baseline, ours = measure_in_child("baseline", landing, day), measure_in_child("ours", landing, day)
    for label, peak in (("producer's way  [baseline]", baseline), ("ours: listings + index + steps", ours)):
        print(f"   {label:<34} {peak.rows:>9,} steps  {peak.cell()}  (VmHWM {peak.hwm:.0f} MiB)")
    ratio = baseline.peak / ours.peak
    growth = baseline.growth / max(ours.growth, 1.0)
    print(f"   baseline / ours: {ratio:.1f}x the peak, {growth:.1f}x the growth")
    return ratio


# ---------------------------------------------------------------------------------------------------------
# 3. load() one episode


def percentiles(values_ms: Sequence[float]) -> str:
    ordered = sorted(values_ms)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"median {statistics.median(ordered):6.2f} ms  p90 {p90:6.2f} ms  max {ordered[-1]:6.2f} ms"


def timed_ms(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return (time.perf_counter() - started) * 1e3


def load_breakdown(warehouse: Path, ids: Sequence[int], warm_id: int) -> dict[str, list[float]]:
    """Where a load's time goes, phase by phase, on a fresh loader warmed like the timed one.

    Calls ``load``'s own steps (private: ``_index``, ``_steps_file``; internal: ``StepsFile.read_episode``,
    ``step_arrays`` in ``sources/townlet/load_files.py``), so a changed ``sources/townlet/load.py`` or
    ``townlet_files.py`` may need this updated; nothing else uses them.
    """
    from replay_assets.sources.townlet import load as townlet
    from replay_assets.sources.townlet.load_files import step_arrays

    recordings = townlet.TownletRecordings(str(warehouse))
    recordings.load(warm_id)
    phases: dict[str, list[float]] = {
        "locate in index": [],
        "read_episode (row groups first seen)": [],
        "read_episode (again, runs cached)": [],
        "index row -> TownletRecordingRow": [],
        "Arrow -> NumPy (step_arrays)": [],
    }
    index = recordings._index()
    quiesce()
    for episode_id in ids:
        position = index.locate(episode_id, None, recordings.warehouse_uri)
        phases["locate in index"].append(timed_ms(lambda e=episode_id: index.locate(e, None, "")))
        file = recordings._steps_file(index.dates[position])
        name = index.checkpoints[position]
        started = time.perf_counter()
        table = file.read_episode(name, episode_id, townlet.STEP_COLUMNS)
        phases["read_episode (row groups first seen)"].append((time.perf_counter() - started) * 1e3)
        again = (file, name, episode_id, townlet.STEP_COLUMNS)
        phases["read_episode (again, runs cached)"].append(
            timed_ms(lambda a=again: a[0].read_episode(*a[1:]))
        )
        phases["index row -> TownletRecordingRow"].append(timed_ms(lambda p=position: index.row(p)))
        phases["Arrow -> NumPy (step_arrays)"].append(timed_ms(lambda t=table: step_arrays(t)))
    recordings.close()
    return phases


def check_loads(recordings: Any, landing: Landing, ids: Sequence[int]) -> str:
    """Untimed: each loaded episode has the file's steps; the first one step for step, as dicts."""
    checkpoint = landing.checkpoint_dir
    for k, episode_id in enumerate(ids):
        doc = producer_decode((checkpoint / f"recordings/episode_{episode_id:06d}.msgpack.lz4").read_bytes())
        replay = recordings.load(episode_id)
        if len(replay) != len(doc["steps"]):
            return f"MISMATCH: episode {episode_id} loaded {len(replay)} steps, file has {len(doc['steps'])}"
        if k == 0 and [s.as_dict() for s in replay] != doc["steps"]:
            return f"MISMATCH: episode {episode_id}'s steps differ from the file's"
    return f"checked: every loaded episode has its file's steps; episode {ids[0]} equal step for step"


@dataclass(frozen=True)
class RowGroups:
    """What ``read_episode`` has to decode, from the steps files alone (independent of the loader)."""

    groups: int
    group_rows: int  # the first group's rows: the asset's row-group size
    decoded: tuple[int, ...]  # per load: rows from its group's start to the episode's last row
    first_500_ms: float  # pyarrow alone: the first 500 rows of one group (a load's fixed floor)
    whole_group_ms: float  # pyarrow alone: one whole group


def row_groups(warehouse: Path, ids: Sequence[int]) -> RowGroups:
    import numpy as np

    from replay_assets.sources.townlet.load import STEP_COLUMNS

    ends: dict[int, int] = {}
    files = sorted((warehouse / STEPS_KEY).glob("date=*/*.parquet"))
    for path in files:
        metadata = pq.ParquetFile(path).metadata
        sizes = [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)]
        starts = np.cumsum([0, *sizes])
        episodes = pq.read_table(path, columns=["episode_id"]).column("episode_id").to_numpy()
        last = len(episodes) - 1 - np.unique(episodes[::-1], return_index=True)[1]
        group = np.searchsorted(starts, last, side="right") - 1
        ends.update(zip(np.unique(episodes).tolist(), (last - starts[group] + 1).tolist(), strict=True))
    first = pq.ParquetFile(files[0])
    columns = list(STEP_COLUMNS)

    def first_500() -> None:
        batches = first.iter_batches(batch_size=500, row_groups=[0], columns=columns)
        next(batches)
        batches.close()

    return RowGroups(
        groups=sum(pq.ParquetFile(p).metadata.num_row_groups for p in files),
        group_rows=first.metadata.row_group(0).num_rows,
        decoded=tuple(ends[e] for e in ids),
        first_500_ms=statistics.median(timed_ms(first_500) for _ in range(21)),
        whole_group_ms=statistics.median(
            timed_ms(lambda: first.read_row_group(0, columns=columns)) for _ in range(21)
        ),
    )


@dataclass(frozen=True)
class LoadResult:
    """Milliseconds per episode, in the order of the episodes; made in a child, printed by the parent."""

    first: list[float]  # each episode's first load
    again: list[float]  # the same episodes, same loader
    producer: list[float]  # read + lz4 + msgpack.unpackb to dicts
    decode_only: list[float]  # lz4 + msgpack.unpackb of bytes already in memory
    check: str
    phases: dict[str, list[float]] | str  # or why the breakdown is unavailable
    groups: RowGroups


def load_ids(landing: Landing, loads: int) -> tuple[int, list[int]]:
    """The warm-up episode and ``loads`` others, the same every run."""
    ids = random.Random(1).sample([s.episode_id for s in landing.specs], loads + 1)
    return ids[0], ids[1:]


def in_process_loads(landing: Landing, warehouse: Path, loads: int) -> list[float]:
    """The same first loads in this process, after the materialization section (for comparison only)."""
    from replay_assets.sources.townlet.load import TownletRecordings

    warm_id, ids = load_ids(landing, loads)
    with TownletRecordings(warehouse=str(warehouse)) as recordings:
        recordings.load(warm_id)
        quiesce()
        return [timed_ms(lambda e=e: recordings.load(e)) for e in ids]


def load_child(landing: Landing, warehouse: str, loads: int) -> LoadResult:
    """Section 3 in a fresh process, as a viewer or trainer would load, rather than in one that has just
    built and freed the baseline's millions of dicts; ``in_process_loads`` gives the latter to compare."""
    from replay_assets.sources.townlet.load import TownletRecordings

    warm_id, ids = load_ids(landing, loads)
    recordings = TownletRecordings(warehouse=warehouse)
    recordings.load(warm_id)
    quiesce()
    first = [timed_ms(lambda e=e: recordings.load(e)) for e in ids]
    again = [timed_ms(lambda e=e: recordings.load(e)) for e in ids]
    paths = [landing.checkpoint_dir / f"recordings/episode_{e:06d}.msgpack.lz4" for e in ids]
    producer = [timed_ms(lambda p=p: producer_decode(p.read_bytes())) for p in paths]
    contents = [p.read_bytes() for p in paths]
    decode_only = [timed_ms(lambda d=d: producer_decode(d)) for d in contents]
    check = check_loads(recordings, landing, ids)
    recordings.close()
    try:
        phases: dict[str, list[float]] | str = load_breakdown(Path(warehouse), ids, warm_id)
    except (AttributeError, TypeError) as exc:  # private API moved: report, do not fail the benchmark
        phases = repr(exc)
    groups = row_groups(Path(warehouse), ids)
    return LoadResult(first, again, producer, decode_only, check, phases, groups)


def bench_load(landing: Landing, warehouse: Path, loads: int) -> float:
    here = in_process_loads(landing, warehouse, loads)
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        result = pool.submit(load_child, landing, str(warehouse), loads).result()
    print(
        f"\n3. load(episode_id) of {loads} random episodes ({STEPS} steps, a few fewer where dropped), one "
        f"at a time after one warm-up load,\n   in a fresh child process; files and Parquet in the page "
        f"cache. {result.check}"
    )
    rows = (
        ("TownletRecordings.load, each episode once", result.first),
        ("TownletRecordings.load, the same episodes again", result.again),
        ("producer: read + lz4 + msgpack.unpackb to dicts", result.producer),
        ("producer: lz4 + msgpack.unpackb (bytes in memory)", result.decode_only),
    )
    for label, values in rows:
        print(f"   {label:<52} {percentiles(values)}")
    print(f"   {'TownletRecordings.load, once, in the bench process':<52} {percentiles(here)}")
    print("   where a load's time goes (fresh loader, warmed the same way; medians, max):")
    if isinstance(result.phases, str):
        print(f"   breakdown unavailable: {result.phases}")
    else:
        for phase, values in result.phases.items():
            print(f"     {phase:<40} {statistics.median(values):6.3f} ms  (max {max(values):6.2f})")
    groups = result.groups
    print(
        f"   steps files: {groups.groups} row groups of {groups.group_rows:,} rows; a load decodes its group "
        f"from the start to the episode's last row:\n   median {statistics.median(groups.decoded):,.0f} rows "
        f"(max {max(groups.decoded):,}) for ~{STEPS} wanted. pyarrow alone on one group: first 500 rows "
        f"{groups.first_500_ms:.2f} ms, whole group {groups.whole_group_ms:.2f} ms"
    )
    return statistics.median(result.first)


# ---------------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--recordings", type=int, default=10_000, help="episodes of 500 steps to generate")
    parser.add_argument("--days", type=int, default=5, help="UTC days (partitions) they are spread over")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the materialization comparison")
    parser.add_argument("--loads", type=int, default=200, help="random episodes to load() one by one")
    parser.add_argument("--quick", action="store_true", help=f"smoke run, defaults {QUICK}")
    if parser.parse_args(argv).quick:
        parser.set_defaults(**QUICK)  # flags given explicitly still win
    args = parser.parse_args(argv)
    if min(args.recordings, args.days, args.repeats, args.loads) < 1 or args.loads >= args.recordings:
        parser.error("every count must be >= 1, and --loads below --recordings")
    return args


def code_version() -> str:
    """The commit measured, and whether the working tree differed from it (figures follow the code)."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()

    dirty = git("status", "--porcelain", "--untracked-files=no", "replay_assets")
    return f"commit {git('rev-parse', '--short', 'HEAD') or '?'}{' + uncommitted changes' if dirty else ''}"


def load_average() -> str:
    """Other work on the box shows up here: it slows the cases of a round alike, not the ratios."""
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def print_header(args: argparse.Namespace) -> None:
    import dagster
    import lz4
    import msgpack
    import pandas
    import pyarrow

    print(
        f"replay_assets Townlet benchmark: recordings={args.recordings:,} x {STEPS} steps, days={args.days}, "
        f"repeats={args.repeats}, loads={args.loads}{' (quick)' if args.quick else ''}\n"
        f"python {sys.version.split()[0]}, pandas {pandas.__version__}, pyarrow {pyarrow.__version__}, "
        f"msgpack {'.'.join(map(str, msgpack.version))}, lz4 {lz4.__version__}, "
        f"dagster {dagster.__version__}, {os.cpu_count()} CPUs, {code_version()}\n"
        f"times are median [min..max] of the rounds, cases interleaved, after an untimed warm-up; "
        f"{load_average()} at start"
    )


def prepare(root: Path, recordings: int, days: int) -> Landing:
    started = time.perf_counter()
    specs = episode_specs(recordings, days)
    landing = write_landing(root / "landing", specs, days)
    none = sum(s.compression == "none" for s in specs)
    dropped = [s for s in specs if s.drop_steps]
    full = sum(s.optional_fields == FULL_FIELDS for s in specs)
    print(
        f"\n0. Landing zone: {recordings:,} recordings written by write_townlet_checkpoint in "
        f"{time.perf_counter() - started:.1f}s, {landing.files_bytes() / 1e6:.0f} MB "
        f"({landing.files_bytes() / recordings / 1e3:.1f} KB a file), {landing.steps:,} steps;\n"
        f"   {full:,} with q_values+epsilon+masks, the rest a real pattern; {none} compression none; "
        f"{len(dropped)} with {sum(s.drop_steps for s in dropped):,} steps dropped; "
        f"{landing.days[0]}..{landing.days[-1]}"
    )
    return landing


def print_summary(timings: dict[str, Timing], memory: float, load_ms: float) -> None:
    baseline, split, whole = (timings[k] for k in (BASELINE, OURS_SPLIT, OURS_WHOLE))
    ratio = split.rate / baseline.rate
    print(
        "\nSummary\n"
        f"   materialization: index + steps {split.rate:,.0f} steps/s = {ratio:.1f}x the baseline's "
        f"{baseline.rate:,.0f} (target >= {RATE_TARGET:.0f}x): {verdict(ratio >= RATE_TARGET)}; with the "
        f"listing in the run {whole.rate / baseline.rate:.1f}x\n"
        f"   memory: baseline / ours peak RSS for one day = {memory:.1f}x\n"
        f"   load(): median {load_ms:.2f} ms (target < {LOAD_TARGET_MS:.0f} ms; producer's figure < "
        f"{PRODUCER_FIGURE_MS:.0f} ms): {verdict(load_ms < LOAD_TARGET_MS)}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    print_header(args)
    with tempfile.TemporaryDirectory(prefix="replay-bench-townlet-") as tmp:
        root = Path(tmp)
        landing = prepare(root, args.recordings, args.days)
        timings, _ = bench_materialization(landing, root, args.repeats)
        memory = bench_memory(landing)
        load_ms = bench_load(landing, root / "wh_split", args.loads)
    print_summary(timings, memory, load_ms)
    print(f"\ntotal benchmark time {time.perf_counter() - started:.0f}s; {load_average()} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
