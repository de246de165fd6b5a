"""MettaScope replays to training samples: this project against the original tool's approach.

    .venv/bin/python bench/metta.py [--repeats 3] [--target-samples 300000] [--quick]

The replays are the real v2 files ``dinky7``, ``early_cvc`` and ``pens`` (the only version the original
tool read), read once and held compressed in memory, the set repeated to reach the wanted sample count
and dealt round-robin over three days (three partitions); ``the_280_agents`` (v1) for this project alone.

1. Mining throughput. The original tool's approach (``original_mine_day`` below: per-row Python dicts,
   ``json.dumps`` observation, pandas ``DataFrame``, ``to_parquet``) against ours (``read_metta_samples``
   per replay streamed into one ``write_parquet`` per day: the asset minus Dagster), and the real asset
   through ``dagster.materialize`` on a local landing zone holding the same replays. The baseline is
   slow (~4k samples/s), so it mines ``--baseline-samples`` samples; ours is timed at that size too.
2. Peak RSS of each miner, one day per fresh child process; the baseline's peak at the target size is
   extrapolated from two measured sizes (and labelled so) unless it was measured there.
3. Decoding ``dinky7`` alone: zlib, JSON parsing (stdlib and orjson), and the rest of ``read_metta_samples``.
4. Loading with ``DataLoader(batch_size=256)``: the original way (DuckDB ``.df()``, then ``iloc`` and
   ``json.loads`` per sample, over the baseline's own table) against ``ReplayDataset`` and the
   ``MettaSampleStream`` fast path over ours.

Every timing is repeated (cases interleaved, so a noisy neighbour hits them alike) after an untimed
warm-up and reported as median [min..max]; ratios are against the baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import hashlib
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from harness import (
    Case,
    Peak,
    Timing,
    maxrss_mib,
    quiesce,
    time_interleaved,
    timing_header,
    timing_row,
    verdict,
    vmhwm_mib,
    warn_if_rss_disagrees,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
METTA_DIR = REPO_ROOT.parent / "shared" / "data" / "metta"
V2_NAMES = ("dinky7", "early_cvc", "pens")
V1_NAME = "the_280_agents"
DAYS = (dt.date(2025, 6, 1), dt.date(2025, 6, 2), dt.date(2025, 6, 3))
ENVIRONMENT = "bench"  # landing sub-folder: metta/<environment>/<day>/<uuid>.json.z
ASSET_KEY = "metta_action_samples"
BATCH_SIZE = 256
SHUFFLE_BUFFER = 100_000
DECODE_ROUNDS = 9
MINING_TARGET = 50.0  # x samples/s of the baseline
MEMORY_TARGET = 5.0  # x less peak RSS than the baseline
LOADING_TARGET = 200.0  # x samples/s of the original loader, for the fast path
QUICK = {"target_samples": 30_000, "baseline_samples": 10_000, "original_load_samples": 2_048}
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


# ---------------------------------------------------------------------------------------------------------
# Replays: read once, held compressed, copies with distinct names spread over the days


@dataclass(frozen=True)
class Replay:
    """One landed file: its bytes and where it would sit in the landing zone."""

    name: str
    data: bytes
    sha256: str
    day: dt.date
    relative_path: str  # metta/<environment>/<day>/<uuid>.json.z: a distinct episode id per copy


def read_files(names: Sequence[str]) -> dict[str, bytes]:
    return {name: (METTA_DIR / f"{name}.json.z").read_bytes() for name in names}


def replay_copies(files: dict[str, bytes], copies: int, days: Sequence[dt.date] = DAYS) -> list[Replay]:
    """``copies`` of the whole set, replay ``k`` on day ``k % len(days)``, each named by a fresh UUID."""
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    replays = []
    for k in range(copies * len(files)):
        name = list(files)[k % len(files)]
        day = days[k % len(days)]
        path = f"metta/{ENVIRONMENT}/{day.isoformat()}/{uuid.UUID(int=k + 1)}.json.z"
        replays.append(Replay(name, files[name], digests[name], day, path))
    return replays


def by_day(replays: Sequence[Replay]) -> dict[dt.date, list[Replay]]:
    days: dict[dt.date, list[Replay]] = {}
    for replay in replays:
        days.setdefault(replay.day, []).append(replay)
    return days


def copies_for(samples: int, per_set: int) -> int:
    """Whole sets of the replays: every case sees the same mix of files."""
    return max(1, -(-samples // per_set))


def partition_path(warehouse: Path, day: dt.date) -> Path:
    """The file the IO manager would write for ``day``: the layout every reader expects."""
    from replay_assets.warehouse.layout import partition_file, warehouse_root

    return Path(partition_file(warehouse_root(str(warehouse)), ASSET_KEY, day.isoformat()).path)


# ---------------------------------------------------------------------------------------------------------
# THE ORIGINAL TOOL'S APPROACH (the baseline). Reproduces its cost, not its correctness bugs: the step
# pairing, episode ids and location misreads are cost-neutral and left as they were, the one defect that
# costs (the agent's whole raw inventory series copied into every row's JSON observation) is kept.


def original_forward_fill(value: Any, steps: int) -> list[Any]:
    """Per-step values of a v2 field the naive way: a Python list walked once, one entry per step."""
    if not (
        isinstance(value, list) and value and isinstance(value[0], list) and isinstance(value[0][0], int)
    ):
        return [value] * steps  # a constant
    out, current, k = [], 0, 0
    for t in range(steps):
        while k < len(value) and value[k][0] <= t:
            current = value[k][1]
            k += 1
        out.append(current)
    return out


def original_replay_rows(data: bytes, index: int) -> list[dict[str, Any]]:
    """One replay as per-row dicts: zlib only, stdlib JSON, v2 only, observation a JSON string."""
    replay = json.loads(zlib.decompress(data))
    if replay.get("version") != 2:
        return []
    steps = replay["max_steps"]
    rows = []
    for obj in replay["objects"]:
        if "agent_id" not in obj:
            continue
        actions = original_forward_fill(obj.get("action_id", 0), steps)
        locations = original_forward_fill(obj.get("location", [0, 0, 0]), steps)
        orientations = original_forward_fill(obj.get("orientation", 0), steps)
        inventory = obj.get("inventory", [])  # the whole raw series, ~30 KB on dinky7, in every row
        for t in range(steps):
            observation = {"location": locations[t], "orientation": orientations[t], "inventory": inventory}
            rows.append(
                {
                    "episode_id": f"episode_{index}",  # position in the day's list, as the original
                    "agent_id": obj["agent_id"],
                    "timestep": t,
                    "action": actions[t],
                    "observation": json.dumps(observation),
                }
            )
    return rows


def original_mine_day(replays: Sequence[bytes], path: Path) -> int:
    """THE ORIGINAL TOOL'S APPROACH for one day: every row of the day in a list, one DataFrame, one file."""
    import pandas as pd

    rows: list[dict[str, Any]] = []
    for index, data in enumerate(replays):
        rows.extend(original_replay_rows(data, index))
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path, engine="pyarrow")
    return len(rows)


# ---------------------------------------------------------------------------------------------------------
# Ours: what the asset does for a day, minus Dagster


def ours_day_reader(replays: Sequence[Replay]) -> pa.RecordBatchReader:
    """The day's batches, one replay buffered at a time as the asset does (no half episode on error)."""
    from replay_assets.sources.contract import Lineage
    from replay_assets.sources.metta.read import read_metta_samples
    from replay_assets.sources.metta.schema import METTA_ACTION_SAMPLES

    def batches() -> Iterator[pa.RecordBatch]:
        for r in replays:
            source = Lineage(r.day, f"file:///landing/{r.relative_path}", r.sha256, r.relative_path)
            yield from list(read_metta_samples(r.data, source))

    return pa.RecordBatchReader.from_batches(METTA_ACTION_SAMPLES, batches())


def ours_mine_day(replays: Sequence[Replay], path: Path) -> int:
    from upath import UPath

    from replay_assets.warehouse.parquet import write_parquet

    return write_parquet(UPath(path), ours_day_reader(replays)).row_count


def mine_original(replays: Sequence[Replay], warehouse: Path) -> int:
    return sum(
        original_mine_day([r.data for r in day], partition_path(warehouse, d))
        for d, day in by_day(replays).items()
    )


def mine_ours(replays: Sequence[Replay], warehouse: Path) -> int:
    return sum(ours_mine_day(day, partition_path(warehouse, d)) for d, day in by_day(replays).items())


# ---------------------------------------------------------------------------------------------------------
# The real asset through Dagster, on a local landing zone holding the same replays


def write_landing(replays: Sequence[Replay], landing: Path) -> None:
    for r in replays:
        target = landing / r.relative_path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(r.data)


class DagsterRun:
    """The listing materialized once (untimed); ``__call__`` materializes ``metta_action_samples``."""

    def __init__(self, replays: Sequence[Replay], root: Path) -> None:
        from dagster import DagsterInstance, materialize

        from replay_assets.definitions import build_resources
        from replay_assets.landing.assets import raw_replay_listings
        from replay_assets.settings import Settings

        write_landing(replays, root / "landing")
        self.warehouse = root / "wh_dagster"
        days = sorted({r.day for r in replays})
        self.tags = {
            "dagster/asset_partition_range_start": days[0].isoformat(),
            "dagster/asset_partition_range_end": days[-1].isoformat(),
        }
        settings = Settings(str(root / "landing"), str(self.warehouse), DAYS[0])
        self.resources = build_resources(settings)
        self.instance = DagsterInstance.ephemeral()
        listing = materialize(
            [raw_replay_listings],
            resources=self.resources,
            instance=self.instance,
            tags=self.tags,
            run_config=QUIET_LOGS,
        )
        if not listing.success:
            raise RuntimeError("raw_replay_listings failed")

    def __call__(self) -> int:
        from dagster import materialize

        from replay_assets.landing.assets import raw_replay_listings
        from replay_assets.sources.metta.assets import metta_action_samples

        result = materialize(
            [metta_action_samples, raw_replay_listings.to_source_asset()],
            resources=self.resources,
            instance=self.instance,
            tags=self.tags,
            run_config=QUIET_LOGS,
        )
        if not result.success:
            raise RuntimeError("metta_action_samples failed")
        return warehouse_rows(self.warehouse)


def warehouse_rows(warehouse: Path) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in (warehouse / ASSET_KEY).glob("date=*/*.parquet"))


# ---------------------------------------------------------------------------------------------------------
# Timing: interleaved repeats after a small warm-up, median and spread


# ---------------------------------------------------------------------------------------------------------
# 1. Mining


@dataclass(frozen=True)
class Setup:
    """The replay sets and sizes every section shares."""

    v2: dict[str, bytes]
    v1: dict[str, bytes]
    ours_per_set: int  # samples our reader makes from one set of the v2 files
    original_per_set: int  # rows the original makes from one set (it keeps step 0)
    copies: int  # sets for the target size
    baseline_copies: int  # sets for the baseline's size
    dinky7_observation: float  # mean bytes of the original's JSON observation on dinky7


def count_ours(files: dict[str, bytes]) -> int:
    from replay_assets.sources.contract import Lineage
    from replay_assets.sources.metta.read import read_metta_samples

    source = Lineage(DAYS[0], "file:///count", "0" * 64, "count.json.z")
    return sum(b.num_rows for data in files.values() for b in read_metta_samples(data, source))


def count_original(files: dict[str, bytes]) -> int:
    return sum(len(original_replay_rows(data, 0)) for data in files.values())


def mean_observation_bytes(data: bytes) -> float:
    rows = original_replay_rows(data, 0)
    return statistics.fmean(len(row["observation"]) for row in rows)


def prepare(target_samples: int, baseline_samples: int) -> Setup:
    v2 = read_files(V2_NAMES)
    ours_per_set = count_ours(v2)
    copies = copies_for(target_samples, ours_per_set)
    baseline_copies = min(copies, copies_for(baseline_samples, ours_per_set))
    observation = mean_observation_bytes(v2["dinky7"])
    v1 = read_files([V1_NAME])
    return Setup(v2, v1, ours_per_set, count_original(v2), copies, baseline_copies, observation)


ORIGINAL = "original approach  [baseline]"
OURS_SAME = "ours: read_metta_samples -> write_parquet"
OURS_FULL = "ours, target size"
OURS_ASSET = "ours, real asset: dagster materialize (3-day range)"
OURS_V1 = f"ours, {V1_NAME} (v1) x1"


def mining_cases(setup: Setup, root: Path) -> dict[str, Case]:
    small = replay_copies(setup.v2, setup.baseline_copies)
    full = replay_copies(setup.v2, setup.copies)
    one_set = replay_copies(setup.v2, 1)
    v1 = replay_copies(setup.v1, 1, DAYS[:1])
    dagster = DagsterRun(full, root)
    warm = root / "warm"
    return {
        ORIGINAL: Case(
            lambda: mine_original(small, root / "wh_original"), lambda: mine_original(one_set, warm / "o")
        ),
        OURS_SAME: Case(
            lambda: mine_ours(small, root / "wh_ours_small"), lambda: mine_ours(one_set, warm / "s")
        ),
        OURS_FULL: Case(lambda: mine_ours(full, root / "wh_ours"), lambda: mine_ours(full, warm / "f")),
        OURS_ASSET: Case(dagster, dagster),
        OURS_V1: Case(lambda: mine_ours(v1, root / "wh_v1"), lambda: mine_ours(v1, warm / "v")),
    }


def check_mining(timings: dict[str, Timing], setup: Setup, root: Path) -> None:
    """Untimed: each miner wrote what it claimed, and the asset wrote what the bare reader wrote."""
    expected = (
        (ORIGINAL, setup.baseline_copies * setup.original_per_set, "wh_original"),
        (OURS_SAME, setup.baseline_copies * setup.ours_per_set, "wh_ours_small"),
        (OURS_FULL, setup.copies * setup.ours_per_set, "wh_ours"),
        (OURS_ASSET, setup.copies * setup.ours_per_set, "wh_dagster"),
    )
    for label, wanted, warehouse in expected:
        claimed, on_disk = timings[label].samples, warehouse_rows(root / warehouse)
        if not claimed == wanted == on_disk:
            raise AssertionError(
                f"row count mismatch: returned {claimed}, expected {wanted}, files {on_disk}"
            )


def bench_mining(setup: Setup, root: Path, repeats: int) -> dict[str, Timing]:
    print(
        f"\n1. Mining: {'/'.join(V2_NAMES)} (v2) x {setup.copies} sets = {setup.copies * 3} replays over "
        f"{len(DAYS)} days (ours: {setup.ours_per_set:,} samples a set);\n"
        f"   the baseline mines {setup.baseline_copies} sets ({setup.baseline_copies * 3} replays; "
        f"--baseline-samples): it runs at a few thousand samples/s.\n"
        f"   The original keeps step 0 ({setup.original_per_set:,} rows a set): each rate uses its own rows."
    )
    timings = time_interleaved(mining_cases(setup, root), repeats)
    check_mining(timings, setup, root)
    print(timing_header("miner"))
    for label, timing in timings.items():
        print(timing_row(label, timing, timings[ORIGINAL]))
    print(
        f"   Row counts checked on disk. Parquet: baseline "
        f"{parquet_size(root / 'wh_original', timings[ORIGINAL].samples)}, ours "
        f"{parquet_size(root / 'wh_ours', timings[OURS_FULL].samples)}\n"
        f"   (copies of the same replays flatter both sizes). The baseline's observation JSON averages "
        f"{setup.dinky7_observation / 1e3:.1f} KB a row on dinky7."
    )
    return timings


def parquet_size(warehouse: Path, rows: int) -> str:
    size = sum(p.stat().st_size for p in warehouse.rglob("*.parquet"))
    return f"{size / 1e6:.1f} MB for {rows:,} rows ({size / rows:,.1f} B/row)"


def mining_verdict(timings: dict[str, Timing]) -> list[str]:
    baseline, same, full, asset = (timings[k] for k in (ORIGINAL, OURS_SAME, OURS_FULL, OURS_ASSET))
    return [
        f"mining: ours / baseline = {same.rate / baseline.rate:.0f}x at the same size, "
        f"{full.rate / baseline.rate:.0f}x at target size (target >= {MINING_TARGET:.0f}x): "
        f"{verdict(full.rate / baseline.rate >= MINING_TARGET)}; the Dagster asset "
        f"{asset.rate / baseline.rate:.0f}x (adds {asset.median - full.median:+.2f}s a run)"
    ]


# ---------------------------------------------------------------------------------------------------------
# 2. Peak memory, each measurement in a fresh child process


def _memory_work(variant: str, copies: int, out: Path) -> Callable[[], int]:
    """Read the files and import what ``variant`` needs, so its baseline includes both."""
    if variant == "original":
        import pandas.io.parquet  # noqa: F401  (to_parquet's own module, else imported during the work)

        replays = replay_copies(read_files(V2_NAMES), copies, DAYS[:1])
        return lambda: original_mine_day([r.data for r in replays], out / "original.parquet")
    import upath  # noqa: F401

    import replay_assets.sources.metta.read
    import replay_assets.warehouse.parquet  # noqa: F401

    replays = replay_copies(read_files([V1_NAME] if variant == "ours_v1" else V2_NAMES), copies, DAYS[:1])
    return lambda: ours_mine_day(replays, out / "ours.parquet")


def memory_child(variant: str, copies: int) -> tuple[float, float, float, int]:
    """Runs in the child: (baseline after imports, peak, VmHWM) in MiB, and the rows written."""
    with tempfile.TemporaryDirectory(prefix="replay-bench-mem-") as tmp:
        work = _memory_work(variant, copies, Path(tmp))
        gc.collect()
        baseline = maxrss_mib()
        rows = work()
        return baseline, maxrss_mib(), vmhwm_mib(), rows


def measure_in_child(variant: str, copies: int) -> tuple[float, float, float, int]:
    """A fresh process per measurement, forked from a small forkserver rather than spawned from us.

    On Linux ``ru_maxrss`` survives ``exec``: a spawned child would start at this process's peak.
    """
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(memory_child, variant, copies).result()


@dataclass(frozen=True)
class MemoryResult:
    same_ratio: float  # original / ours peak RSS at the largest size both were measured at
    same_samples: int
    full_ratio: float  # at the target size
    estimated: bool  # the original's peak at the target size is extrapolated


def bench_memory(setup: Setup) -> MemoryResult:
    # Two sizes for the baseline, so its peak at the target size can be extrapolated when not measured.
    sizes = sorted({1, min(setup.copies, max(2, setup.baseline_copies))})
    print(
        "\n2. Peak RSS of mining, every replay of a size on one day (the unit the original held in memory),\n"
        "   one fresh child per cell (forkserver; ru_maxrss, checked with VmHWM). Cell = peak (+growth over\n"
        "   that child's baseline, taken after its imports and reading the files)."
    )
    original = {n: Peak(*measure_in_child("original", n)) for n in sizes}
    ours = {n: Peak(*measure_in_child("ours", n)) for n in sorted({*sizes, setup.copies})}
    v1 = Peak(*measure_in_child("ours_v1", 1))
    print(
        f"   {'sets':>5} {'samples (ours)':>15} | {'original approach':<22} | {'ours':<22} | original / ours"
    )
    for n in sorted(ours):
        left = original[n].cell() if n in original else f"{estimated_peak(original, n):7.0f} MiB ESTIMATED"
        right = ours[n]
        ratio = (original[n].peak if n in original else estimated_peak(original, n)) / right.peak
        print(f"   {n:>5} {right.rows:>15,} | {left:<22} | {right.cell():<22} | {ratio:.1f}x less")
    print(f"   ours, {V1_NAME} (v1) x1, {v1.rows:,} samples: {v1.cell()}")
    warn_if_rss_disagrees([*original.values(), *ours.values(), v1])
    largest, full = sizes[-1], setup.copies
    full_original = original[full].peak if full in original else estimated_peak(original, full)
    return MemoryResult(
        same_ratio=original[largest].peak / ours[largest].peak,
        same_samples=ours[largest].rows,
        full_ratio=full_original / ours[full].peak,
        estimated=full not in original,
    )


def estimated_peak(measured: dict[int, Peak], copies: int) -> float:
    """Linear in samples through the two measured sizes: rows, dicts and strings all scale with rows."""
    (n1, p1), (n2, p2) = sorted(measured.items())[:1] + sorted(measured.items())[-1:]
    if n1 == n2:
        return float("nan")
    slope = (p2.growth - p1.growth) / (n2 - n1)
    return p2.baseline + p2.growth + slope * (copies - n2)


# ---------------------------------------------------------------------------------------------------------
# 3. Decoding dinky7 alone


def paused(work: Callable[[], int]) -> int:
    """``work()`` with the cyclic GC off, as ``read_metta_samples`` runs its parser."""
    gc.disable()
    try:
        return work()
    finally:
        gc.enable()


def bench_decode() -> None:
    import orjson

    from replay_assets.sources.contract import Lineage
    from replay_assets.sources.metta.read import read_metta_samples

    data = read_files(["dinky7"])["dinky7"]
    text = zlib.decompress(data)
    source = Lineage(DAYS[0], "file:///dinky7.json.z", "0" * 64, "dinky7.json.z")
    cases = {
        "zlib.decompress": Case(lambda: len(zlib.decompress(data)), lambda: None),
        "json.loads (stdlib: the original's parser)": Case(lambda: len(json.loads(text)), lambda: None),
        "orjson.loads (ours)": Case(lambda: len(orjson.loads(text)), lambda: None),
        "orjson.loads, GC paused (as ours parses)": Case(
            lambda: paused(lambda: len(orjson.loads(text))), lambda: None
        ),
        "read_metta_samples, every batch": Case(
            lambda: len(list(read_metta_samples(data, source))), lambda: None
        ),
    }
    timings = time_interleaved(cases, DECODE_ROUNDS)
    zlib_t, json_t, orjson_t, paused_t, ours_t = (t.median * 1e3 for t in timings.values())
    print(
        f"\n3. Decoding dinky7 ({len(data) / 1e3:.0f} KB zlib, {len(text) / 1e6:.1f} MB JSON), "
        f"medians of {DECODE_ROUNDS} rounds:\n"
        f"   zlib {zlib_t:.1f} ms | json.loads {json_t:.1f} ms | orjson.loads {orjson_t:.1f} ms "
        f"({paused_t:.1f} ms with GC paused, as ours parses)\n"
        f"   read_metta_samples {ours_t:.1f} ms = zlib + orjson (GC paused) + "
        f"{ours_t - zlib_t - paused_t:.1f} ms rest (validate, series -> Arrow batches; by difference)"
    )


# ---------------------------------------------------------------------------------------------------------
# 4. Loading


class OriginalReplayDataset:
    """THE ORIGINAL TOOL'S LOADER: a pandas row and a ``json.loads`` of its observation per sample."""

    def __init__(self, frame: Any) -> None:
        self.df = frame

    def __len__(self) -> int:
        return len(self.df)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = self.df.iloc[i]
        return {
            "observation": json.loads(row.observation),
            "action": int(row.action),
            "agent_id": int(row.agent_id),
            "episode_id": row.episode_id,
            "timestep": int(row.timestep),
        }


def keep_samples(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The original's samples cannot go through default collate (the raw inventory series is ragged)."""
    return batch


def original_loader(warehouse: Path) -> Any:
    """DuckDB ``connect()``, ``SELECT *`` to pandas, the map-style dataset, a shuffling DataLoader."""
    from torch.utils.data import DataLoader

    from replay_assets.warehouse.sql import connect

    frame = connect(warehouse=str(warehouse)).sql(f"SELECT * FROM {ASSET_KEY}").df()
    return DataLoader(
        OriginalReplayDataset(frame), batch_size=BATCH_SIZE, shuffle=True, collate_fn=keep_samples
    )


def dataset_loader(warehouse: Path) -> Any:
    from torch.utils.data import DataLoader

    from replay_assets.sources.metta.load import ReplayDataset

    return DataLoader(ReplayDataset(base_path=str(warehouse)), batch_size=BATCH_SIZE, shuffle=True)


def stream_loader(warehouse: Path) -> Any:
    from torch.utils.data import DataLoader

    from replay_assets.sources.metta.load import MettaSampleStream

    stream = MettaSampleStream(
        warehouse=str(warehouse), batch_size=BATCH_SIZE, shuffle_buffer=SHUFFLE_BUFFER, seed=0
    )
    return DataLoader(stream, batch_size=None)


def batch_rows(batch: Any) -> int:
    return len(batch) if isinstance(batch, list) else int(batch["action"].shape[0])


def drain(loader: Any, limit: int | None) -> int:
    """Samples served until the epoch ends or ``limit`` is reached."""
    served = 0
    for batch in loader:
        served += batch_rows(batch)
        if limit is not None and served >= limit:
            break
    return served


@dataclass(frozen=True)
class LoadTiming:
    setup: Timing  # building the loader: the DuckDB/pandas load or the dataset's construction
    epoch: Timing  # iterating it


def time_loaders(
    builders: dict[str, tuple[Callable[[], Any], int | None]], repeats: int
) -> dict[str, LoadTiming]:
    """Build and drain each loader once per round, rounds interleaved, after a short warm-up each."""
    for build, _ in builders.values():
        drain(build(), 2 * BATCH_SIZE)
    setup: dict[str, list[float]] = {name: [] for name in builders}
    epoch: dict[str, list[float]] = {name: [] for name in builders}
    served: dict[str, int] = {}
    for _ in range(repeats):
        for name, (build, limit) in builders.items():
            quiesce()
            started = time.perf_counter()
            loader = build()
            built = time.perf_counter()
            served[name] = drain(loader, limit)
            epoch[name].append(time.perf_counter() - built)
            setup[name].append(built - started)
            del loader
    return {
        name: LoadTiming(Timing(tuple(setup[name]), served[name]), Timing(tuple(epoch[name]), served[name]))
        for name in builders
    }


def bench_loading(root: Path, repeats: int, original_samples: int) -> dict[str, LoadTiming]:
    original_rows = warehouse_rows(root / "wh_original")
    ours_rows = warehouse_rows(root / "wh_ours")
    print(
        f"\n4. Loading, DataLoader(batch_size={BATCH_SIZE}, shuffle), num_workers=0, over the mined "
        f"warehouses ({len(DAYS)} partitions each).\n"
        f"   (a) the original way over the baseline's own table ({original_rows:,} rows, JSON observation): "
        f"connect() + SELECT * .df(),\n"
        f"       then df.iloc[i] + json.loads per sample, collate_fn returning the list; first "
        f"{original_samples:,} samples timed.\n"
        f"   (b) ReplayDataset and (c) MettaSampleStream(shuffle_buffer={SHUFFLE_BUFFER:,}, seed=0), "
        f"batch_size=None, over ours ({ours_rows:,} rows): a whole epoch.\n"
        f"   samples/s = samples served / iteration time; setup (building the loader) shown apart."
    )
    builders: dict[str, tuple[Callable[[], Any], int | None]] = {
        "(a) original: .df() + iloc + json.loads  [baseline]": (
            lambda: original_loader(root / "wh_original"),
            original_samples,
        ),
        "(b) DataLoader(ReplayDataset, shuffle=True)": (lambda: dataset_loader(root / "wh_ours"), None),
        "(c) DataLoader(MettaSampleStream), fast path": (lambda: stream_loader(root / "wh_ours"), None),
    }
    timings = time_loaders(builders, repeats)
    if timings["(c) DataLoader(MettaSampleStream), fast path"].epoch.samples != ours_rows:
        raise AssertionError("the stream did not serve every row exactly once")
    if timings["(b) DataLoader(ReplayDataset, shuffle=True)"].epoch.samples != ours_rows:
        raise AssertionError("the dataset did not serve every row")
    baseline = next(iter(timings.values())).epoch
    print(timing_header("loader (iteration)") + "   setup median")
    for label, timing in timings.items():
        print(f"{timing_row(label, timing.epoch, baseline)}   {timing.setup.median:6.2f}s")
    return timings


def loading_verdict(timings: dict[str, LoadTiming]) -> list[str]:
    original, dataset, stream = (t.epoch for t in timings.values())
    ratio = stream.rate / original.rate
    return [
        f"loading: fast path / original = {ratio:,.0f}x (target >= {LOADING_TARGET:.0f}x): "
        f"{verdict(ratio >= LOADING_TARGET)}; ReplayDataset {dataset.rate / original.rate:,.0f}x"
    ]


# ---------------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--repeats", type=int, default=3, help="repeats per timing (median reported)")
    parser.add_argument("--target-samples", type=int, default=300_000, help="samples ours mines and loads")
    parser.add_argument(
        "--baseline-samples", type=int, default=60_000, help="samples the original approach mines (slow)"
    )
    parser.add_argument(
        "--original-load-samples", type=int, default=10_240, help="samples the original loader serves per run"
    )
    parser.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK}")
    args = parser.parse_args(argv)
    if args.quick:
        vars(args).update(QUICK)
    if min(args.repeats, args.target_samples, args.baseline_samples, args.original_load_samples) < 1:
        parser.error("every count must be >= 1")
    return args


def print_header(args: argparse.Namespace) -> None:
    import dagster
    import duckdb
    import pandas
    import torch

    print(
        f"replay_assets Metta benchmark: target_samples={args.target_samples:,} "
        f"baseline_samples={args.baseline_samples:,} repeats={args.repeats}"
        f"{' (quick)' if args.quick else ''}\n"
        f"python {sys.version.split()[0]}, pandas {pandas.__version__}, pyarrow {pa.__version__}, "
        f"duckdb {duckdb.__version__}, torch {torch.__version__}, dagster {dagster.__version__}, "
        f"{os.cpu_count()} CPUs\ntimes are median [min..max] of {args.repeats}, cases interleaved, after "
        f"an untimed warm-up"
    )


def print_summary(mining: dict[str, Timing], memory: MemoryResult, loading: dict[str, LoadTiming]) -> None:
    estimated = " (original's peak ESTIMATED, see 2.)" if memory.estimated else ""
    lines = [
        *mining_verdict(mining),
        f"memory: original / ours peak RSS = {memory.same_ratio:.1f}x at {memory.same_samples:,} samples "
        f"(both measured), {memory.full_ratio:.1f}x at target size{estimated} (target >= "
        f"{MEMORY_TARGET:.0f}x): {verdict(min(memory.same_ratio, memory.full_ratio) >= MEMORY_TARGET)}",
        *loading_verdict(loading),
    ]
    print("\nSummary")
    for line in lines:
        print(f"   {line}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    print_header(args)
    setup = prepare(args.target_samples, args.baseline_samples)
    with tempfile.TemporaryDirectory(prefix="replay-bench-metta-") as tmp:
        root = Path(tmp)
        mining = bench_mining(setup, root, args.repeats)
        memory = bench_memory(setup)
        bench_decode()
        loading = bench_loading(root, args.repeats, args.original_load_samples)
    print_summary(mining, memory, loading)
    print(f"\ntotal benchmark time {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
