"""How fast and how lean is the warehouse IO manager next to plain pyarrow, and what does a backfill cost?

    .venv/bin/python bench/io_manager.py [--rows 10000000] [--repeats 3] [--days 30] [--quick]

1. Throughput: one table of narrow rows written and read back through ``PartitionedParquetIOManager``
   (``dagster.materialize``, ephemeral instance, temporary local warehouse), through the bare
   ``write_parquet``/``read_parquet`` it calls, and with plain ``pq.write_table``/``pq.read_table``.
2. Peak memory of each writer in a fresh child process, at three sizes, to show that a streamed
   ``RecordBatchReader`` keeps the IO manager's peak flat while a materialized table grows it.
3. The real ``dagster asset materialize`` CLI on a demo landing zone: one ``--partition-range`` run of
   ``--days`` days against a one-day run, to separate the fixed per-run cost from the per-partition cost.

Every timing is repeated (cases interleaved, so a noisy neighbour hits them alike) and reported as
median [min..max]; ratios are against a baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from harness import MIB, Case, Peak, Timing, maxrss_mib, time_interleaved, vmhwm_mib, warn_if_rss_disagrees

BATCH_ROWS = 64 * 1024  # rows per generated batch: what a streaming asset would yield
SOURCES = pa.array(["metta", "sc2", "townlet", "tmrl", "other"])
BENCH_PARTITION = "2025-06-30"
BENCH_DAY = (dt.date.fromisoformat(BENCH_PARTITION) - dt.date(1970, 1, 1)).days  # as date32 stores it
CLI_END_DATE = dt.date(2025, 6, 30)
PARTITIONS_START = "2025-01-01"  # the project default; set explicitly so every CLI day is a valid partition
REPO_ROOT = Path(__file__).resolve().parent.parent
TARGET_RATIO = 1.5
MEMORY_FRACTIONS = (0.25, 0.5, 1.0)
QUICK_ROWS = 1_000_000
QUICK_DAYS = 7
MB = 1e6
FIXED_COST = "Dagster run of a 1-row table"
FIXED_COST_LOAD = "Dagster run loading a 1-row partition"
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
MEMORY_VARIANTS = {  # child variant -> column label
    "plain": "write_table(full table)",
    "iom_table": "IO mgr, full pa.Table",
    "iom_stream": "IO mgr, streamed reader",
    "raw_stream": "write_parquet, streamed",
}
MEMORY_CELL = 24


# ---------------------------------------------------------------------------------------------------------
# Data: the same deterministic rows whether generated batch by batch or materialized as one table.


def make_batch(start: int, rows: int) -> pa.RecordBatch:
    """Rows ``start..start+rows``; seeded by ``start`` so streaming and materialized data are identical."""
    ids = np.arange(start, start + rows, dtype=np.int64)
    rng = np.random.default_rng(start)
    return pa.record_batch(
        {
            "id": ids,
            "agent": (ids % 64).astype(np.int32),
            "reward": rng.standard_normal(rows, dtype=np.float32),
            "date": pa.array(np.full(rows, BENCH_DAY, np.int32)).cast(pa.date32()),  # the partition's day
            "source": SOURCES.take(pa.array(ids % len(SOURCES))),
        }
    )


def generate_batches(rows: int) -> Iterator[pa.RecordBatch]:
    for start in range(0, rows, BATCH_ROWS):
        yield make_batch(start, min(BATCH_ROWS, rows - start))


def generated_reader(rows: int) -> pa.RecordBatchReader:
    """A reader that makes each batch on demand: the whole table never exists in memory."""
    return pa.RecordBatchReader.from_batches(make_batch(0, 1).schema, generate_batches(rows))


def materialized_table(rows: int) -> pa.Table:
    return pa.Table.from_batches(list(generate_batches(rows)))


# ---------------------------------------------------------------------------------------------------------
# Dagster: a tiny partitioned asset on the real IO manager, and a downstream asset that loads it.


def bench_assets(data: Callable[[], Any]) -> tuple[Any, Any]:
    """``bench_rows`` returns ``data()``; ``bench_rows_loaded`` loads it through ``load_input``."""
    from dagster import DailyPartitionsDefinition, asset

    days = DailyPartitionsDefinition(start_date="2025-06-01", end_date="2025-07-01")

    @asset(partitions_def=days, io_manager_key="warehouse_io_manager")
    def bench_rows() -> Any:
        return data()

    @asset(partitions_def=days, io_manager_key="warehouse_io_manager")
    def bench_rows_loaded(bench_rows: pa.Table) -> pa.Table:
        return pa.table({"rows": [bench_rows.num_rows]})

    return bench_rows, bench_rows_loaded


def _materialize(assets: list[Any], warehouse: str) -> None:
    from dagster import DagsterInstance, materialize

    from replay_assets.warehouse.io_manager import PartitionedParquetIOManager

    materialize(
        assets,
        partition_key=BENCH_PARTITION,
        resources={"warehouse_io_manager": PartitionedParquetIOManager(warehouse_uri=warehouse)},
        instance=DagsterInstance.ephemeral(),
        run_config=QUIET_LOGS,  # the run's events are still recorded; only console DEBUG lines are dropped
    )


def dagster_write(warehouse: str, data: Callable[[], Any]) -> None:
    """One run of ``bench_rows``: Dagster hands ``data()`` to ``handle_output``."""
    rows_asset, _ = bench_assets(data)
    _materialize([rows_asset], warehouse)


def dagster_load(warehouse: str) -> None:
    """One run of ``bench_rows_loaded``; its 1-row output write is negligible next to the load."""
    rows_asset, loaded = bench_assets(lambda: None)
    _materialize([rows_asset.to_source_asset(), loaded], warehouse)


def partition_path(warehouse: str, asset_key: str) -> Path:
    return Path(warehouse) / asset_key / f"date={BENCH_PARTITION}" / "part-0.parquet"


def fsynced_write_table(table: pa.Table, path: Path) -> None:
    """Plain ``write_table`` plus the fsync our atomic writer does, to price the fsync on its own."""
    pq.write_table(table, path)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------------------
# Timing: harness.time_interleaved (interleaved repeats, median and spread) over these cases.


def as_cases(work: dict[str, Callable[[], object]], samples: int, *, warmup: bool = True) -> dict[str, Case]:
    """harness ``Case``s for work that returns nothing: each run counts ``samples`` (rows, or 1 run). The
    warm-up is the work itself, so first-use costs (lazy imports, thread pools, allocator growth) do not
    land on whichever case runs first; ``warmup=False`` when the caller has paid them already."""

    def case(fn: Callable[[], object]) -> Case:
        def run() -> int:
            fn()
            return samples

        return Case(run=run, warmup=fn if warmup else lambda: None)

    return {name: case(fn) for name, fn in work.items()}


def throughput_row(label: str, timing: Timing, nbytes: int, baseline: Timing) -> str:
    rate = (
        "  fixed cost"
        if label in (FIXED_COST, FIXED_COST_LOAD)
        else f"{nbytes / MB / timing.median:7.0f} MB/s"
    )
    return (
        f"   {label:<44} {timing.median:6.2f}s {timing.spread():<13} "
        f"{rate:>12}  {timing.median / baseline.median:5.2f}x"
    )


# ---------------------------------------------------------------------------------------------------------
# 1. Throughput


def write_cases(table: pa.Table, root: Path) -> dict[str, Callable[[], object]]:
    from upath import UPath

    from replay_assets.warehouse.parquet import write_parquet

    tiny = table.slice(0, 1)
    return {
        "plain pq.write_table(path)  [baseline]": lambda: pq.write_table(table, root / "plain.parquet"),
        "plain pq.write_table + fsync": lambda: fsynced_write_table(table, root / "plain_fsync.parquet"),
        "write_parquet(UPath, table), no Dagster": lambda: write_parquet(UPath(root / "raw.parquet"), table),
        "IO manager: materialize() -> handle_output": lambda: dagster_write(str(root / "wh"), lambda: table),
        FIXED_COST: lambda: dagster_write(str(root / "wh_tiny"), lambda: tiny),
    }


def read_cases(root: Path) -> dict[str, Callable[[], object]]:
    from upath import UPath

    from replay_assets.warehouse.parquet import read_parquet

    io_file = UPath(partition_path(str(root / "wh"), "bench_rows"))
    return {
        "plain pq.read_table(path)  [baseline]": lambda: pq.read_table(root / "plain.parquet"),
        "read_parquet(UPath) on the partition file": lambda: read_parquet(io_file),
        "IO manager: downstream asset -> load_input": lambda: dagster_load(str(root / "wh")),
        FIXED_COST_LOAD: lambda: dagster_load(str(root / "wh_tiny")),
    }


def check_round_trip(table: pa.Table, root: Path) -> str:
    """Untimed: what the IO manager wrote and loaded is the table we gave it."""
    written = pq.read_table(partition_path(str(root / "wh"), "bench_rows"))  # `date` is in the folder name
    table = table.drop_columns(["date"])
    loaded = pq.read_table(partition_path(str(root / "wh"), "bench_rows_loaded")).column("rows")[0].as_py()
    if not written.equals(table) or loaded != table.num_rows:
        raise AssertionError(f"round trip mismatch: wrote {written.num_rows} rows, loaded {loaded}")
    return f"round trip checked: IO manager file equals the input table; load_input saw {loaded:,} rows"


def bench_throughput(rows: int, repeats: int) -> None:
    table = materialized_table(rows)
    nbytes = table.nbytes
    print(
        f"\n1. Throughput, {rows:,} rows of ({', '.join(f'{f.name} {f.type}' for f in table.schema)})"
        f"\n   MB/s = Arrow in-memory size ({nbytes / MB:.0f} MB, table.nbytes) / median seconds; "
        f"ratio = median time / baseline median time"
    )
    with tempfile.TemporaryDirectory(prefix="replay-bench-") as tmp:
        root = Path(tmp)
        writes = time_interleaved(as_cases(write_cases(table, root), rows), repeats)
        reads = time_interleaved(as_cases(read_cases(root), rows), repeats)
        file_mb = (root / "plain.parquet").stat().st_size / MB
        ours_mb = partition_path(str(root / "wh"), "bench_rows").stat().st_size / MB
        print(f"   Parquet file: plain {file_mb:.1f} MB, IO manager {ours_mb:.1f} MB (snappy both)")
        print("   IO manager load path: a downstream asset's input: load_input -> read_parquet(UPath)")
        print(f"   {check_round_trip(table, root)}")
    print_throughput("write", writes, nbytes)
    print_throughput("read", reads, nbytes)
    print_verdict(writes, reads)


def print_throughput(kind: str, timings: dict[str, Timing], nbytes: int) -> None:
    baseline = next(iter(timings.values()))
    print(f"   {kind:<44}   median [min..max]     throughput  vs baseline")
    for label, timing in timings.items():
        print(throughput_row(label, timing, nbytes, baseline))


def print_verdict(writes: dict[str, Timing], reads: dict[str, Timing]) -> None:
    """Ratios against the target, with and without Dagster, and what a Dagster run adds on its own.

    Unpacks by position: the cases are in the order ``write_cases`` and ``read_cases`` define them.
    """
    (w_plain, _, w_raw, w_iom, w_run), (r_plain, r_raw, r_iom, r_run) = writes.values(), reads.values()
    rows = (("write", w_iom, w_raw, w_plain, w_run), ("read", r_iom, r_raw, r_plain, r_run))
    for kind, ours, bare, plain, tiny in rows:
        ratio = ours.median / plain.median
        verdict = "OK" if ratio <= TARGET_RATIO else "OVER TARGET"
        print(
            f"   {kind:<5}: IO manager / plain = {ratio:.2f}x (target <= {TARGET_RATIO}x): {verdict:<11} "
            f"without Dagster {bare.median / plain.median:.2f}x; Dagster adds "
            f"{ours.median - bare.median:+.2f}s (a 1-row run: {tiny.median:.2f}s)"
        )


# ---------------------------------------------------------------------------------------------------------
# 2. Peak memory, each measurement in a fresh child process


def _memory_variant(variant: str, rows: int, out_dir: str) -> Callable[[], object]:
    """Import what ``variant`` needs and return the work, so the baseline includes the imports."""
    out = Path(out_dir)
    if variant == "plain":
        return lambda: pq.write_table(materialized_table(rows), out / "plain.parquet")
    from upath import UPath

    from replay_assets.warehouse.parquet import write_parquet

    if variant == "raw_stream":
        return lambda: write_parquet(UPath(out / "raw.parquet"), generated_reader(rows))
    bench_assets(lambda: None)  # build the definitions once so their cost is in the baseline
    if variant == "iom_table":
        return lambda: dagster_write(str(out / "wh"), lambda: materialized_table(rows))
    return lambda: dagster_write(str(out / "wh"), lambda: generated_reader(rows))


def memory_child(variant: str, rows: int, out_dir: str) -> tuple[float, float, float]:
    """Runs in the child: (baseline after imports, peak, VmHWM), all MiB."""
    work = _memory_variant(variant, rows, out_dir)
    baseline = maxrss_mib()
    work()
    return baseline, maxrss_mib(), vmhwm_mib()


def measure_in_child(variant: str, rows: int) -> tuple[float, float, float]:
    """A fresh process per measurement, forked from a small forkserver rather than spawned from us.

    On Linux ``ru_maxrss`` survives ``exec``: a spawned child starts at the parent's peak (which here
    holds a 10M-row table), so spawn would report the parent, not the child.
    """
    context = multiprocessing.get_context("forkserver")
    with (
        tempfile.TemporaryDirectory(prefix="replay-bench-mem-") as tmp,
        ProcessPoolExecutor(max_workers=1, mp_context=context) as pool,
    ):
        return pool.submit(memory_child, variant, rows, tmp).result()


def bench_memory(rows: int) -> None:
    sizes = [max(BATCH_ROWS, int(rows * fraction)) for fraction in MEMORY_FRACTIONS]
    print(
        f"\n2. Peak RSS in MiB, one fresh child process per cell (forkserver; ru_maxrss, checked with VmHWM)."
        f"\n   Cell = peak (+growth over that child's baseline, taken after its imports); one measurement per"
        f"\n   cell. Arrow = in-memory size of the full table; 'streamed' = a RecordBatchReader generating"
        f"\n   {BATCH_ROWS:,}-row batches on demand (the whole table never exists)."
    )
    results = {(v, n): measure_in_child(v, n) for n in sizes for v in MEMORY_VARIANTS}
    baselines = {v: statistics.median(results[v, n][0] for n in sizes) for v in MEMORY_VARIANTS}
    print(
        f"   {'rows':>11} {'Arrow':>6}"
        + "".join(f" | {label:<{MEMORY_CELL}}" for label in MEMORY_VARIANTS.values())
    )
    print(
        f"   {'baseline':>11} {'':>6}"
        + "".join(f" | {baselines[v]:>6.0f}{'':<{MEMORY_CELL - 6}}" for v in MEMORY_VARIANTS)
    )
    for n in sizes:
        cells = "".join(f" | {_memory_cell(*results[v, n]):<{MEMORY_CELL}}" for v in MEMORY_VARIANTS)
        print(f"   {n:>11,} {materialized_table_nbytes(n) / MIB:>6.0f}{cells}")
    warn_if_rss_disagrees([Peak(*results[v, n], rows=n) for n in sizes for v in MEMORY_VARIANTS])


def _memory_cell(baseline: float, peak: float, _hwm: float) -> str:
    return f"{peak:6.0f} (+{peak - baseline:.0f})"


def materialized_table_nbytes(rows: int) -> int:
    """The Arrow size the materialized variants hold, from one batch (every batch has the same layout)."""
    full, rest = divmod(rows, BATCH_ROWS)
    return full * make_batch(0, BATCH_ROWS).nbytes + (make_batch(0, rest).nbytes if rest else 0)


# ---------------------------------------------------------------------------------------------------------
# 3. The real CLI: one range run against a one-day run


def cli_env(home: Path, landing: Path, warehouse: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DAGSTER_HOME=str(home),
        REPLAY_LANDING_URI=str(landing),
        REPLAY_WAREHOUSE_URI=str(warehouse),
        REPLAY_PARTITIONS_START=PARTITIONS_START,
    )
    return env


def run_cli(partition_args: list[str], root: Path) -> None:
    """One ``dagster asset materialize`` into a fresh warehouse, so every run writes from scratch."""
    warehouse = Path(tempfile.mkdtemp(prefix="warehouse-", dir=root))
    dagster = Path(sys.executable).parent / "dagster"
    select = ["-m", "replay_assets.definitions", "--select", "raw_replay_listings"]
    command = [str(dagster), "asset", "materialize", *select, *partition_args]
    env = cli_env(root / "home", root / "landing", warehouse)
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")


def prepare_cli_root(root: Path, days: int) -> str:
    """Demo landing zone for ``days`` days and a DAGSTER_HOME using the project's dagster.yaml."""
    from replay_assets.landing.sample import write_sample_landing_zone

    counts = write_sample_landing_zone(root / "landing", days=days, end_date=CLI_END_DATE, seed=0)
    (root / "home").mkdir()
    (root / "home" / "dagster.yaml").symlink_to(REPO_ROOT / "dagster.yaml")
    return f"{sum(counts.values())} files {counts}"


def bench_cli(days: int, repeats: int) -> None:
    first = CLI_END_DATE - dt.timedelta(days=days - 1)
    with tempfile.TemporaryDirectory(prefix="replay-bench-cli-") as tmp:
        root = Path(tmp)
        files = prepare_cli_root(root, days)
        one = ["--partition", CLI_END_DATE.isoformat()]
        many = ["--partition-range", f"{first}...{CLI_END_DATE}"]
        run_cli(one, root)  # untimed warm-up: page cache for the venv, the instance's SQLite files
        cases = {"one": lambda: run_cli(one, root), "many": lambda: run_cli(many, root)}
        timings = time_interleaved(as_cases(cases, 1, warmup=False), repeats)  # warmed up above: ~5 s a run
    print_cli(days, first, files, timings["one"], timings["many"])


def print_cli(days: int, first: dt.date, files: str, one: Timing, many: Timing) -> None:
    per_partition = (many.median - one.median) / (days - 1)
    print(
        f"\n3. dagster asset materialize -m replay_assets.definitions --select raw_replay_listings "
        f"(subprocess, project dagster.yaml)\n   landing zone {first}..{CLI_END_DATE}: {files}; "
        f"the 1-day run lists the same {days}-day landing zone"
    )
    lines = (
        (f"t1:  --partition {CLI_END_DATE} (1 day, 1 run)", f"{one.median:7.2f}s {one.spread()}"),
        (f"t{days}: --partition-range {first}...{CLI_END_DATE}", f"{many.median:7.2f}s {many.spread()}"),
        ("fixed CLI/process/run overhead = t1", f"{one.median:7.2f}s"),
        (f"per partition = (t{days} - t1) / {days - 1}", f"{per_partition:7.3f}s"),
        (
            f"{days} separate 1-day runs, ESTIMATED as {days} x t1",
            f"{days * one.median:7.2f}s = {days * one.median / many.median:.1f}x the one range run",
        ),
    )
    for label, value in lines:
        print(f"   {label:<50} {value}")


# ---------------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows for sections 1 and 2")
    parser.add_argument("--repeats", type=int, default=3, help="repeats per timing (median reported)")
    parser.add_argument("--days", type=int, default=30, help="days in the CLI range run (>= 2)")
    quick = f"smoke run: {QUICK_ROWS:,} rows, {QUICK_DAYS} days"
    parser.add_argument("--quick", action="store_true", help=quick)
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.days = QUICK_ROWS, QUICK_DAYS
    if args.days < 2 or args.rows < 1 or args.repeats < 1:
        parser.error("need --days >= 2, --rows >= 1, --repeats >= 1")
    return args


def print_header(args: argparse.Namespace) -> None:
    import dagster

    print(
        f"replay_assets IO manager benchmark: rows={args.rows:,} repeats={args.repeats} days={args.days}"
        f"{' (quick)' if args.quick else ''}\n"
        f"python {sys.version.split()[0]}, pyarrow {pa.__version__}, dagster {dagster.__version__}, "
        f"{os.cpu_count()} CPUs, temp dir {tempfile.gettempdir()}; times are median [min..max] of "
        f"{args.repeats}, cases interleaved, after an untimed warm-up"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    print_header(args)
    bench_throughput(args.rows, args.repeats)
    bench_memory(args.rows)
    bench_cli(args.days, args.repeats)
    print(f"\ntotal benchmark time {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
