"""TMRL player runs to Parquet: this project against tmrl's own import, and the sensor's tick on a big folder.

    .venv/bin/python bench/tmrl.py [--lidar-mb 150] [--image-mb 150] [--repeats 3] [--image-repeats 9]
                                   [--sensor-files 10000] [--tick-repeats 7] [--quick]

Setup: run files written with the project's writer (``tmrl_player_run_bytes``, pickle protocol 5 like the
real recorder) into a temporary folder: lidar runs of 300..3000 samples (~0.5 KB a sample) up to
``--lidar-mb``, full-layout (image) runs of 200..1200 samples (four 64x64 uint8 frames, ~16.6 KB a sample)
up to ``--image-mb``; sample counts drawn from a fixed seed.

1. Import throughput, per layout, every file of that layout into one output:
   THE ORIGINAL APPROACH (``original_import`` below, tmrl's ``--import-player-runs`` way): ``pickle.load``
   each file (plain pickle: these files are ours, so trusted here; the original unpickled anything), one
   Python ``append`` per sample into each column list of ``MemoryTMLidar`` (9 columns) or ``MemoryTMFull``
   (11 columns) in tmrl's own column order, then ``pickle.dump`` of the list of columns to
   ``data.pkl`` (default protocol, no fsync). Against OURS, what ``tmrl_demo_buffers`` does minus Dagster:
   each file read and hashed (sha256: the lineage column; the asset also re-checks the listing's hash),
   ``run_batches`` (restricted unpickler, validation) buffered per file, streamed into one
   ``write_parquet(UPath, RecordBatchReader)`` (snappy, the frames zstd; atomic, fsynced). Ours keeps all
   four frames of an image sample (the memory keeps only the newest), i.e. ~4x the image bytes of
   ``data.pkl`` before compression.
   A diagnostic row times ours without the Parquet write (read, sha256, ``run_batches``).
2. Peak RSS of each side per layout, at half and at all of its runs, one fresh child process per cell
   (forkserver: ``ru_maxrss`` survives ``exec``, so a spawned child would start at this process's peak),
   checked against ``VmHWM``.
3. ``player_runs_sensor``'s tick (``evaluate_tick`` with ``LocalLanding``, ``build_sensor_context`` on a
   ``DagsterInstance.ephemeral()``) over ``landing/tmrl/player_runs`` holding ``--sensor-files`` tiny runs
   (5 lidar samples, ``20251014_HHMMSS_xxxxxxxx.pkl``), all of them already seen, plus 10 new ones. The
   "already seen" cursor is CONSTRUCTED, not reached by looping ticks: an ``InjectionCursor`` whose ``seen``
   holds every file's stamp and whose ``pending`` is empty, i.e. the steady state after every earlier run
   succeeded with ``CONSUME_ON_READ`` off (with it on, injected files are renamed ``.pkl.imported`` and
   leave the listing). Looping would take 1,000 ticks of ``MAX_FILES_PER_UPDATE`` files, each polling the
   instance for every pending run key, which no real run ever clears here. The construction is checked
   against one real tick from an empty cursor (its stamps must equal ours).

Timings are median [min..max] of interleaved rounds (``--repeats`` for lidar, ``--image-repeats`` for the
short, disk-bound image cases, ``--tick-repeats`` for ticks) after an untimed warm-up (one file per import
case), with an untimed ``os.sync()`` before every call so that no case pays for the writeback of the
baseline's unsynced ``data.pkl``; ratios are against the baseline measured in the same run. Helpers
(``Case``, ``Timing``, ``Peak``, ``quiesce``, ``time_interleaved``, RSS readers) come from
``bench/harness.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import hashlib
import io
import multiprocessing
import os
import pickle
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from harness import (  # bench/harness.py
    Case,
    Peak,
    Timing,
    maxrss_mib,
    time_interleaved,
    timing_header,
    timing_row,
    verdict,
    vmhwm_mib,
    warn_if_rss_disagrees,
)

LAYOUTS = ("lidar", "full")
LAYOUT_NAMES = {"lidar": "lidar", "full": "image"}
SAMPLES_PER_RUN = {"lidar": (300, 3000), "full": (200, 1200)}  # inclusive range drawn per run
DAY = dt.date(2025, 10, 14)  # the recorder's file-name day; a past, complete partition
SOURCE_PATH = "tmrl/player_runs"
TINY_SAMPLES = 5
NEW_FILES = 10  # = PlayerRunsSettings.MAX_FILES_PER_UPDATE, so one tick validates them all
SEED = 20251014
TARGETS = {"lidar": 3.0, "full": 1.0}  # x the baseline's samples/s
TICK_TARGET = 2.0  # seconds
QUICK = {"lidar_mb": 15.0, "image_mb": 15.0, "tick_repeats": 5}
MB = 1e6


# ---------------------------------------------------------------------------------------------------------
# Run files, written with the project's writer


@dataclass(frozen=True)
class RunFile:
    path: Path
    samples: int
    size: int


def run_name(k: int) -> str:
    """The recorder's name ``20251014_HHMMSS_xxxxxxxx.pkl`` for file ``k`` of a folder (k < 86,400).

    The suffix is ``k`` times an odd constant mod 2**32, a bijection: unique without a seen-set,
    random-looking like the recorder's, and the same on every run of the benchmark.
    """
    hours, rest = divmod(k, 3600)
    return f"{DAY:%Y%m%d}_{hours:02d}{rest // 60:02d}{rest % 60:02d}_{(k * 2654435761) % 2**32:08x}.pkl"


def write_run(folder: Path, k: int, layout: str, samples: int) -> RunFile:
    """One run file named by its run id, as the recorder names them; seeded by ``k`` (reproducible)."""
    from replay_assets.sources.tmrl.sample import tmrl_player_run_bytes

    name = run_name(k)
    recorded_at = dt.datetime.strptime(name[:15], "%Y%m%d_%H%M%S").replace(tzinfo=dt.UTC)
    data = tmrl_player_run_bytes(
        run_id=name.removesuffix(".pkl"),
        recorded_at=recorded_at,
        layout=layout,  # type: ignore[arg-type]
        num_samples=samples,
        seed=SEED + k,
    )
    path = folder / name
    path.write_bytes(data)
    return RunFile(path, samples, len(data))


def write_runs(folder: Path, layout: str, budget_bytes: float) -> list[RunFile]:
    """Runs of random length until their files reach ``budget_bytes`` (at least one run)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(SEED + len(layout))
    low, high = SAMPLES_PER_RUN[layout]
    files: list[RunFile] = []
    while not files or sum(f.size for f in files) < budget_bytes:
        files.append(write_run(folder, len(files), layout, int(rng.integers(low, high + 1))))
    return files


def describe_runs(layout: str, files: Sequence[RunFile]) -> str:
    samples = sum(f.samples for f in files)
    size = sum(f.size for f in files)
    return (
        f"{LAYOUT_NAMES[layout]:<5} ({layout}): {len(files):>4} runs, {samples:>9,} samples, "
        f"{size / MB:6.1f} MB of pickles ({size / samples:,.0f} B/sample)"
    )


# ---------------------------------------------------------------------------------------------------------
# THE ORIGINAL APPROACH (the baseline): tmrl's player-run import into its replay memory


def demo_info(info: dict[str, Any], run_id: str) -> dict[str, Any]:
    """The sample's info plus the demo markers tmrl's importer adds when absent (see tmrl_export.py)."""
    merged = dict(info)
    merged.setdefault("is_demo", True)
    merged.setdefault("demo_source", "player_runs")
    merged.setdefault("demo_run_id", run_id)
    return merged


def original_append_lidar(columns: list[list[Any]], samples: list[Any], run_id: str) -> None:
    """``MemoryTMLidar``'s 9 columns, one append per sample and column; lidar = the newest scan (19,),
    the reward cast to ``numpy.float32`` as tmrl's lidar sample compressor does."""
    index, action, speed, lidar, eoe, reward, info, terminated, truncated = columns
    first = index[-1] + 1 if index else 0
    for i, (act, obs, rew, term, trunc, sample_info) in enumerate(samples):
        index.append(first + i)
        action.append(act)
        speed.append(obs[0])
        lidar.append(obs[1][0])
        eoe.append(term or trunc)
        reward.append(np.float32(rew))
        info.append(demo_info(sample_info, run_id))
        terminated.append(term)
        truncated.append(trunc)


def original_append_full(columns: list[list[Any]], samples: list[Any], run_id: str) -> None:
    """``MemoryTMFull``'s 11 columns; image = the newest frame (64, 64) uint8, the reward kept as is."""
    index, action, speed, image, eoe, reward, info, gear, rpm, terminated, truncated = columns
    first = index[-1] + 1 if index else 0
    for i, (act, obs, rew, term, trunc, sample_info) in enumerate(samples):
        index.append(first + i)
        action.append(act)
        speed.append(obs[0])
        image.append(obs[3][0])
        eoe.append(term or trunc)
        reward.append(rew)
        info.append(demo_info(sample_info, run_id))
        gear.append(obs[1])
        rpm.append(obs[2])
        terminated.append(term)
        truncated.append(trunc)


ORIGINAL_APPENDS = {"lidar": (original_append_lidar, 9), "full": (original_append_full, 11)}


def original_import(files: Sequence[RunFile], layout: str, out: Path) -> int:
    """THE ORIGINAL APPROACH: every file unpickled, appended sample by sample, the memory pickled once."""
    append, width = ORIGINAL_APPENDS[layout]
    columns: list[list[Any]] = [[] for _ in range(width)]
    for file in files:
        with open(file.path, "rb") as handle:
            run = pickle.load(handle)  # trusted here only because this benchmark wrote the file
        samples, run_id = (run["samples"], run["run_id"]) if isinstance(run, dict) else (run, file.path.stem)
        append(columns, samples, run_id)
    with open(out, "wb") as sink:
        pickle.dump(columns, sink)
    return len(columns[0])


# ---------------------------------------------------------------------------------------------------------
# Ours: what tmrl_demo_buffers does for a day, minus Dagster


def ours_reader(files: Sequence[RunFile]) -> pa.RecordBatchReader:
    """Each file read, hashed and decoded whole before its batches go on (no half run on error)."""
    from replay_assets.sources.contract import Lineage
    from replay_assets.sources.tmrl.read import TMRL_DEMO_BUFFERS, run_batches

    def batches() -> Iterator[pa.RecordBatch]:
        for file in files:
            data = file.path.read_bytes()
            source = Lineage(DAY, str(file.path), hashlib.sha256(data).hexdigest(), file.path.name)
            yield from list(run_batches(data, source))

    return pa.RecordBatchReader.from_batches(TMRL_DEMO_BUFFERS, batches())


def ours_decode_only(files: Sequence[RunFile]) -> int:
    """Diagnostic: ours without the Parquet write, to split its time between decoding and writing."""
    return sum(batch.num_rows for batch in ours_reader(files))


def ours_import(files: Sequence[RunFile], out: Path) -> int:
    from upath import UPath

    from replay_assets.warehouse.parquet import write_parquet

    return write_parquet(UPath(out), ours_reader(files)).row_count


# ---------------------------------------------------------------------------------------------------------
# 1. Import throughput


SIDES = {
    "original": "original: load+append+dump  [baseline]",
    "ours": "ours: run_batches -> write_parquet",
    "decode": "  of which read+sha256+run_batches (no write)",
}


def label(layout: str, side: str) -> str:
    return f"{LAYOUT_NAMES[layout]}: {SIDES[side]}"


def import_cases(layout: str, files: Sequence[RunFile], out: Path) -> dict[str, Case]:
    """Both sides of one layout (and ours' decoding alone), each warmed up on the first file alone."""
    first = files[:1]
    return {
        label(layout, "original"): Case(
            lambda: original_import(files, layout, out / f"{layout}_data.pkl"),
            lambda: original_import(first, layout, out / f"warm_{layout}_data.pkl"),
        ),
        label(layout, "ours"): Case(
            lambda: ours_import(files, out / f"{layout}.parquet"),
            lambda: ours_import(first, out / f"warm_{layout}.parquet"),
        ),
        label(layout, "decode"): Case(lambda: ours_decode_only(files), lambda: None),
    }


def fixed_rows(table: pa.Table, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """A fixed-size-list or per-row binary column as one (n, *shape) array."""
    column = table.column(name).combine_chunks()
    if pa.types.is_fixed_size_list(column.type):
        return column.values.to_numpy(zero_copy_only=False).reshape(len(column), *shape)
    return np.frombuffer(b"".join(column.to_pylist()), np.uint8).reshape(len(column), *shape)


def check_outputs(layout: str, files: Sequence[RunFile], out: Path) -> None:
    """Untimed: both sides hold every sample, and agree on action, reward and the newest lidar/frame."""
    samples = sum(f.samples for f in files)
    with open(out / f"{layout}_data.pkl", "rb") as handle:
        memory = pickle.load(handle)
    frame_column, frame_shape, ours_column, ours_shape = (
        (3, (19,), "lidar", (4, 19)) if layout == "lidar" else (3, (64, 64), "images", (4, 64, 64))
    )
    table = pq.read_table(out / f"{layout}.parquet", columns=["act", "reward", ours_column])
    problems = [
        len(memory) != ORIGINAL_APPENDS[layout][1],
        any(len(column) != samples for column in memory),
        table.num_rows != samples,
        not np.array_equal(np.stack(memory[1]), fixed_rows(table, "act", (3,))),
        not np.allclose(np.asarray(memory[5], np.float64), table.column("reward").to_numpy()),
        not np.array_equal(
            np.stack(memory[frame_column]).reshape(samples, *frame_shape),
            fixed_rows(table, ours_column, ours_shape)[:, 0],
        ),
    ]
    if any(problems):
        raise AssertionError(f"{layout}: the outputs disagree (checks failed: {problems})")


def output_sizes(layout: str, out: Path) -> str:
    pkl = (out / f"{layout}_data.pkl").stat().st_size / MB
    parquet = (out / f"{layout}.parquet").stat().st_size / MB
    return f"{LAYOUT_NAMES[layout]}: data.pkl {pkl:.1f} MB, Parquet {parquet:.1f} MB"


def settled(cases: dict[str, Case], repeats: int) -> dict[str, Timing]:
    """``time_interleaved`` with an untimed ``os.sync()`` before every call: the baseline does not fsync
    its data.pkl (the original did not), and without the sync the next case, whichever it is, would pay
    for writing those dirty pages back. The baseline's own writeback stays untimed, to its advantage."""
    return time_interleaved(cases, repeats, before_each=os.sync)


def bench_import(runs: dict[str, list[RunFile]], root: Path, repeats: dict[str, int]) -> dict[str, Timing]:
    """Each layout's cases interleaved among themselves: ratios are within a layout, and the image cases,
    short and at the mercy of the disk (ours fsyncs ~150 MB), get more rounds than the lidar baseline."""
    rounds = ", ".join(f"{LAYOUT_NAMES[layout]} {n}" for layout, n in repeats.items())
    print(
        "\n1. Import throughput: every run of a layout into one output (baseline: data.pkl, 9 / 11 columns;\n"
        "   ours: one Parquet file, all columns, all four frames); samples/s = samples / median seconds;\n"
        f"   rounds: {rounds}; an untimed os.sync() before every call (the baseline does not fsync)"
    )
    out = root / "out"
    out.mkdir()
    timings: dict[str, Timing] = {}
    for layout, files in runs.items():
        timings.update(settled(import_cases(layout, files, out), repeats[layout]))
        check_outputs(layout, files, out)
    print(f"{timing_header('import')}  pickles in")
    for layout, files in runs.items():
        size = sum(f.size for f in files) / MB
        base = timings[label(layout, "original")]
        for side in SIDES:
            timing = timings[label(layout, side)]
            print(f"{timing_row(label(layout, side), timing, base)}  {size / timing.median:5.0f} MB/s")
    print(
        "   Outputs checked (untimed): every sample on both sides; same actions, rewards and newest "
        "lidar scan / frame.\n   " + "; ".join(output_sizes(layout, out) for layout in runs)
    )
    return timings


# ---------------------------------------------------------------------------------------------------------
# 2. Peak memory, each measurement in a fresh child process


def _memory_work(side: str, layout: str, files: Sequence[RunFile], out: Path) -> Callable[[], int]:
    """Import what ``side`` needs first, so the child's baseline includes its imports."""
    if side == "original":
        return lambda: original_import(files, layout, out / "data.pkl")
    import upath  # noqa: F401

    import replay_assets.sources.tmrl.read
    import replay_assets.warehouse.parquet  # noqa: F401

    return lambda: ours_import(files, out / "ours.parquet")


def memory_child(side: str, layout: str, files: Sequence[RunFile]) -> tuple[float, float, float, int]:
    """Runs in the child: (baseline after imports, peak, VmHWM) in MiB, and the samples written."""
    with tempfile.TemporaryDirectory(prefix="replay-bench-tmrl-mem-") as tmp:
        work = _memory_work(side, layout, files, Path(tmp))
        gc.collect()
        baseline = maxrss_mib()
        rows = work()
        return baseline, maxrss_mib(), vmhwm_mib(), rows


def measure_in_child(side: str, layout: str, files: Sequence[RunFile]) -> Peak:
    """A fresh process forked from a small forkserver: a spawned child would inherit this process's peak."""
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return Peak(*pool.submit(memory_child, side, layout, files).result())


def bench_memory(runs: dict[str, list[RunFile]]) -> dict[str, tuple[Peak, Peak]]:
    """Each layout at half and at all of its runs: the baseline holds every sample until its dump, ours
    holds one run and one row group (``ROW_GROUP_BYTES``), so only the trend says where each is headed."""
    print(
        "\n2. Peak RSS of a whole import, one fresh child per cell (forkserver; ru_maxrss, checked with "
        "VmHWM),\n   at half and at all of a layout's runs. Cell = peak (+growth over that child's "
        "baseline,\n   taken after its imports)."
    )
    print(f"   {'layout':<6} {'pickles':>9} | {'original approach':<22} | {'ours':<22} | original / ours")
    peaks: dict[str, tuple[Peak, Peak]] = {}
    for layout, files in runs.items():
        for part in (files[: max(1, len(files) // 2)], files):
            peaks[layout] = (
                measure_in_child("original", layout, part),
                measure_in_child("ours", layout, part),
            )
            original, ours = peaks[layout]
            size = sum(f.size for f in part) / MB
            print(
                f"   {LAYOUT_NAMES[layout]:<6} {size:>6.0f} MB | {original.cell():<22} | {ours.cell():<22} | "
                f"{original.peak / ours.peak:.2f}x"
            )
    warn_if_rss_disagrees([peak for pair in peaks.values() for peak in pair])
    return peaks


# ---------------------------------------------------------------------------------------------------------
# 3. The sensor's tick over a big folder


def write_tiny_runs(folder: Path, first: int, count: int) -> None:
    """``count`` 5-sample lidar runs (~2.8 KB each), files ``first..first+count-1`` of the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(first, first + count):
        write_run(folder, k, "lidar", TINY_SAMPLES)


@dataclass(frozen=True)
class SensorRig:
    """What every tick shares: the instance (built once, ~1 s), the landing zone and the settings."""

    instance: Any
    backend: Any
    settings: Any

    def tick(self, cursor: str | None) -> Any:
        """One evaluation as the daemon makes it: a fresh context holding the stored cursor."""
        from dagster import build_sensor_context

        from replay_assets.sources.tmrl.sensor import evaluate_tick

        context = build_sensor_context(instance=self.instance, cursor=cursor)
        return evaluate_tick(context, self.backend, self.settings)


def make_rig(landing: Path) -> SensorRig:
    from dagster import DagsterInstance

    from replay_assets.landing.backends import LocalLanding
    from replay_assets.settings import PlayerRunsSettings

    settings = PlayerRunsSettings(CONSUME_ON_READ=False, MAX_FILES_PER_UPDATE=NEW_FILES)
    return SensorRig(DagsterInstance.ephemeral(), LocalLanding(landing), settings)


def seen_cursor(rig: SensorRig) -> str:
    """Every listed run seen, nothing pending: the state after each earlier run stored its file (see the
    module docstring). ``_stamp`` is the sensor's own, so a stamp cannot drift from what a tick compares."""
    from replay_assets.sources.tmrl.sensor import InjectionCursor, _stamp

    files = rig.backend.list_files(SOURCE_PATH)
    return InjectionCursor(seen={f.relative_path: _stamp(f) for f in files}).dump()


def check_cursor(rig: SensorRig, cursor: str) -> float:
    """A real tick from an empty cursor validates ``MAX_FILES_PER_UPDATE`` files and records for them the
    stamps our constructed cursor holds; returns its seconds (the process's first tick: cold)."""
    from replay_assets.sources.tmrl.sensor import InjectionCursor

    # An empty cursor logs the SOURCE_PATH line to a console handler made per context: not ours to show.
    with contextlib.redirect_stderr(io.StringIO()):
        started = time.perf_counter()
        result = rig.tick(None)
        seconds = time.perf_counter() - started
    real, ours = InjectionCursor.parse(result.cursor), InjectionCursor.parse(cursor)
    if len(result.run_requests) != NEW_FILES or any(ours.seen[p] != s for p, s in real.seen.items()):
        raise AssertionError("the constructed cursor disagrees with what a real tick records")
    return seconds


def requests_of(result: Any) -> int:
    """Run requests of a tick's result; a ``SkipReason`` (no landing folder) has none."""
    return len(getattr(result, "run_requests", None) or [])


@dataclass(frozen=True)
class TickTiming:
    label: str
    seconds: tuple[float, ...]
    requests: int

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def row(self, target: float | None) -> str:
        spread = f"[{min(self.seconds) * 1e3:.0f}..{max(self.seconds) * 1e3:.0f}] ms"
        mark = f"{self.median / target:5.0%} of the {target:.0f} s target" if target else ""
        row = f"   {self.label:<44} {self.requests:>6,} {self.median * 1e3:7.0f} ms {spread:<15} {mark}"
        return row.rstrip()


def time_ticks(cases: dict[str, Callable[[], int]], repeats: int) -> dict[str, TickTiming]:
    """``settled`` over the tick cases, each warmed up by one untimed call of itself."""
    timings = settled({name: Case(run, run) for name, run in cases.items()}, repeats)
    return {name: TickTiming(name, t.seconds, t.samples) for name, t in timings.items()}


NEW_TICK = "tick: {new} new files, {old:,} seen"
IDLE_TICK = "tick: nothing new, {old:,} seen"
LISTING = "of which: LocalLanding.list_files alone"


def bench_sensor(root: Path, count: int, repeats: int) -> TickTiming:
    landing = root / "landing"
    folder = landing / SOURCE_PATH
    started = time.perf_counter()
    write_tiny_runs(folder, 0, count)
    written = time.perf_counter() - started
    rig = make_rig(landing)
    old_cursor = seen_cursor(rig)
    cold = check_cursor(rig, old_cursor)
    write_tiny_runs(folder, count, NEW_FILES)
    all_cursor = seen_cursor(rig)
    new_label, idle_label = NEW_TICK.format(new=NEW_FILES, old=count), IDLE_TICK.format(old=count + NEW_FILES)
    cases: dict[str, Callable[[], int]] = {
        new_label: lambda: requests_of(rig.tick(old_cursor)),
        idle_label: lambda: requests_of(rig.tick(all_cursor)),
        LISTING: lambda: sum(1 for _ in rig.backend.list_files(SOURCE_PATH)),
    }
    timings = time_ticks(cases, repeats)
    if timings[new_label].requests != NEW_FILES or timings[idle_label].requests != 0:
        raise AssertionError("a tick requested the wrong number of runs")
    print(
        f"\n3. player_runs_sensor tick: {count:,} run files of {TINY_SAMPLES} lidar samples in "
        f"landing/{SOURCE_PATH} (written in {written:.0f}s);\n"
        f"   cursor constructed: every file seen, nothing pending (checked against a real tick from an "
        f"empty cursor);\n   then {NEW_FILES} new files. A tick = build_sensor_context + evaluate_tick: "
        f"cursor parse, listing, dedup,\n   validation of the new files (restricted unpickler), run "
        f"requests, cursor dump; the daemon's own overhead\n   (storing the cursor, launching runs) is not "
        f"included. median [min..max] of {repeats} interleaved rounds after\n   a warm-up; runs = run "
        f"requests (files listed, for the listing row)."
    )
    print(f"   {'case':<44} {'runs':>6} {'median':>10} [min..max]")
    for name, timing in timings.items():
        print(timing.row(None if name == LISTING else TICK_TARGET))
    first = f"first tick of this process, from an empty cursor (validates {NEW_FILES} files)"
    print(f"   {first}: {cold * 1e3:.0f} ms")
    return timings[new_label]


# ---------------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--lidar-mb", type=float, default=150.0, help="MB of lidar run files")
    parser.add_argument("--image-mb", type=float, default=150.0, help="MB of full-layout (image) run files")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the lidar import timings (median)")
    parser.add_argument("--image-repeats", type=int, default=9, help="rounds of the image import timings")
    parser.add_argument("--sensor-files", type=int, default=10_000, help="run files the sensor has seen")
    parser.add_argument("--tick-repeats", type=int, default=7, help="rounds per tick timing")
    parser.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK}")
    args = parser.parse_args(argv)
    if args.quick:
        vars(args).update(QUICK)
    counts = (args.repeats, args.image_repeats, args.sensor_files, args.tick_repeats)
    if min(args.lidar_mb, args.image_mb, *counts) <= 0:
        parser.error("every size and count must be positive")
    if args.sensor_files + NEW_FILES > 86_400:
        parser.error("--sensor-files: at most one file a second of one day (86,390)")
    return args


def print_header(args: argparse.Namespace) -> None:
    import dagster

    print(
        f"replay_assets TMRL benchmark: lidar {args.lidar_mb:g} MB + image {args.image_mb:g} MB of runs, "
        f"rounds lidar {args.repeats} / image {args.image_repeats}, sensor {args.sensor_files:,} files x "
        f"{args.tick_repeats} ticks"
        f"{' (quick)' if args.quick else ''}\n"
        f"python {sys.version.split()[0]}, numpy {np.__version__}, pyarrow {pa.__version__}, "
        f"dagster {dagster.__version__}, {os.cpu_count()} CPUs, temp dir {tempfile.gettempdir()}"
    )


def write_all_runs(root: Path, args: argparse.Namespace) -> dict[str, list[RunFile]]:
    started = time.perf_counter()
    budgets = {"lidar": args.lidar_mb * MB, "full": args.image_mb * MB}
    runs = {layout: write_runs(root / "runs" / layout, layout, budgets[layout]) for layout in LAYOUTS}
    print(f"runs written in {time.perf_counter() - started:.0f}s (tmrl_player_run_bytes, pickle protocol 5):")
    for layout, files in runs.items():
        print(f"   {describe_runs(layout, files)}")
    return runs


def print_summary(imports: dict[str, Timing], peaks: dict[str, tuple[Peak, Peak]], tick: TickTiming) -> None:
    print("\nSummary")
    for layout in LAYOUTS:
        ours, base = imports[label(layout, "ours")], imports[label(layout, "original")]
        ratio = ours.rate / base.rate
        original_peak, ours_peak = peaks[layout]
        print(
            f"   {LAYOUT_NAMES[layout]} import: ours / original = {ratio:.1f}x samples/s (target >= "
            f"{TARGETS[layout]:g}x): {verdict(ratio >= TARGETS[layout])}; peak RSS {ours_peak.peak:.0f} vs "
            f"{original_peak.peak:.0f} MiB"
        )
    print(
        f"   sensor tick, {NEW_FILES} new among {tick.label.split(', ')[-1]}: {tick.median:.2f}s (target < "
        f"{TICK_TARGET:g}s): {verdict(tick.median < TICK_TARGET)}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    print_header(args)
    with tempfile.TemporaryDirectory(prefix="replay-bench-tmrl-") as tmp:
        root = Path(tmp)
        runs = write_all_runs(root, args)
        imports = bench_import(runs, root, {"lidar": args.repeats, "full": args.image_repeats})
        peaks = bench_memory(runs)
        tick = bench_sensor(root, args.sensor_files, args.tick_repeats)
    print_summary(imports, peaks, tick)
    print(f"\ntotal benchmark time {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
