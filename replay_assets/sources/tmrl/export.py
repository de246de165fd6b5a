"""The warehouse's TMRL demos as tmrl's own replay memory file, ``data.pkl``, for an unchanged trainer.

tmrl's trainer loads ``<DATASET_PATH>/data.pkl`` into its memory's ``data``: a pickled list of columns,
each a Python list with one element per sample, in the order its ``append_buffer`` builds them
(tmrl ``custom_memories.py``). ``export_tmrl_memory`` writes exactly that, for

- ``MemoryTMLidar``, 9 columns: index, action, speed, lidar, end-of-episode flag, reward, info,
  terminated, truncated;
- ``MemoryTMFull``, 11 columns: index, action, speed, image, end-of-episode flag, reward, info, gear,
  rpm, terminated, truncated.

Element types (what tmrl's worker puts in a memory through its sample compressors
``get_local_buffer_sample_lidar`` / ``get_local_buffer_sample_tm20_imgs``):

- index: ``int``, 0, 1, 2... in sample order (tmrl appends after ``data[0][-1] + 1``);
- action: ``numpy.ndarray`` float32 (3,), the sample's ``act`` (gas, brake, steer);
- speed, gear, rpm: ``numpy.ndarray`` float32 (1,) each, as recorded;
- lidar: ``numpy.ndarray`` float32 (19,), the *newest* scan only (tmrl's compressor keeps the last 19
  values of the flattened history; the memory rebuilds the 4-scan history from consecutive samples);
- image: ``numpy.ndarray`` uint8 (64, 64), the newest frame only (``MemoryTMFull`` keeps only the latest
  of a sample's four frames);
- end-of-episode flag: ``bool``, ``terminated or truncated`` as in tmrl, and also true on the last sample
  of every run (the ``episode_end`` column), so the memory never builds a transition or an observation
  history across two runs laid end to end;
- reward: ``numpy.float32`` for the lidar memory (its compressor casts), ``float`` for the full one
  (its compressor keeps the value); the memories cast to float32 when sampling either way;
- info: ``dict``, the sample's info with ``is_demo``, ``demo_source="player_runs"`` and ``demo_run_id``
  added when absent, as tmrl's own player-run importer does;
- terminated, truncated: ``bool``.

Assumptions, stated because tmrl cannot be asked: observation values are exported as the run files hold
them (no observation-preprocessor scaling applied or undone: tmrl's ``--import-player-runs`` appends run
samples to the memory unchanged too), each sample keeps its own ``act`` and ``rew`` (no shift: run
samples are tmrl buffer samples), and histories in the warehouse are newest first (checked on the real
runs: scan ``k`` of sample ``t`` is scan ``k-1`` of sample ``t+1``).

Samples: every row of the chosen layout in the day range, ``is_demo`` or not (like tmrl's importer),
ordered by day, run (``run_id``, file) and position in the run; ``max_samples`` keeps the newest ones
(tmrl's ``--player-runs-max-samples``). tmrl's memory needs at least 6 samples to sample anything.

Portability: the pickle (protocol 4) names only ``numpy.ndarray``, ``numpy.float32`` and
``builtins.bytearray``. numpy 2's own array pickles name ``numpy._core``, which numpy 1.x cannot import
(numpy/numpy#28340), and tmrl trainers often run numpy 1.x; arrays are therefore pickled as
``numpy.ndarray(shape, dtype, buffer=bytearray)`` calls, which both load as ordinary writable arrays.
The file is written atomically (a temporary file beside it, fsync, then rename); ``overwrite=False``
never replaces an existing file, even one created meanwhile.
"""

from __future__ import annotations

import copyreg
import datetime as dt
import json
import os
import pickle
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa

from replay_assets.errors import ReplayAssetsError
from replay_assets.sources.tmrl.load import (
    ASSET_KEY,
    LAYOUTS,
    OBS_FIELDS,
    _days,
    _filters,
    _layout_counts,
    _read_rows,
    _root,
    _row_filter,
    _select,
    field_array,
)
from replay_assets.util.atomic_file import atomic_write
from replay_assets.warehouse.selection import BasePath, DateLike

__all__ = [
    "COLUMNS",
    "MEMORY_CLASSES",
    "ExportSummary",
    "ExportTargetExistsError",
    "NoDemoSamplesError",
    "TmrlExportError",
    "export_tmrl_memory",
]

Memory = Literal["lidar", "full"]
MEMORY_CLASSES = {"lidar": "MemoryTMLidar", "full": "MemoryTMFull"}
# Column names of tmrl's memory data, by position (tmrl itself only numbers them).
COLUMNS: dict[str, tuple[str, ...]] = {
    "lidar": ("index", "action", "speed", "lidar", "eoe", "reward", "info", "terminated", "truncated"),
    "full": ("index", "action", "speed", "image", "eoe", "reward", "info", "gear", "rpm", "terminated",
             "truncated"),
}  # fmt: skip
PICKLE_PROTOCOL = 4
_ROW_COLUMNS = ("date", "run_id", "sha256", "sample_index", "episode_end", "reward", "terminated",
                "truncated", "info", "is_demo", "act")  # fmt: skip


class TmrlExportError(ReplayAssetsError):
    """An export that cannot be done as asked; the message says why and what to change."""


class ExportArgumentError(TmrlExportError, ValueError):
    """An invalid argument (memory kind, sample limit, dates, output path)."""


class ExportTargetExistsError(TmrlExportError, FileExistsError):
    """The output file exists and ``overwrite`` was not given."""


class NoDemoSamplesError(TmrlExportError, LookupError):
    """The warehouse has no sample of the requested layout in the requested days."""


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote (or, for a dry run, would write)."""

    out: Path
    memory: str  # "lidar" | "full"
    samples: int
    runs: int
    episodes: int  # end-of-episode flags set
    first_day: dt.date
    last_day: dt.date
    trimmed: int  # older samples left out by max_samples
    other_layouts: dict[str, int]  # samples of other layouts in the range, not exported
    dry_run: bool
    bytes_written: int | None  # None for a dry run

    @property
    def memory_class(self) -> str:
        return MEMORY_CLASSES[self.memory]

    @property
    def num_columns(self) -> int:
        return len(COLUMNS[self.memory])

    def __str__(self) -> str:
        days = (
            str(self.first_day) if self.first_day == self.last_day else f"{self.first_day}..{self.last_day}"
        )
        what = f"{self.samples} {self.memory} sample(s) from {self.runs} run(s), {days}"
        what += f", {self.episodes} episode end(s)"
        extra = f"; {self.trimmed} older sample(s) left out by max_samples" if self.trimmed else ""
        memory = f"{self.memory_class}, {self.num_columns} columns"
        if self.dry_run:
            return f"dry run: would write {what} to {self.out} ({memory}){extra}"
        return f"wrote {what} to {self.out} ({memory}, {self.bytes_written} bytes){extra}"


def export_tmrl_memory(
    out: Path | str | os.PathLike[str],
    memory: Memory,
    *,
    warehouse: BasePath | None = None,
    start_date: DateLike | None = None,
    end_date: DateLike | None = None,
    dates: DateLike | Sequence[DateLike] | None = None,
    filters: Mapping[str, str] | None = None,
    max_samples: int | None = None,
    overwrite: bool = False,
    dry_run: bool = False,
) -> ExportSummary:
    """Write the ``memory`` ("lidar" or "full") samples of ``tmrl_demo_buffers`` in the inclusive day
    range as tmrl's ``data.pkl`` at ``out`` (module docstring: columns, element types, order).

    ``warehouse``: root (default ``REPLAY_WAREHOUSE_URI``) or the asset folder, local or ``s3://``.
    Days: ``start_date``..``end_date`` (inclusive) or ``dates=[...]``, as in every loader; ``filters``: the
    loaders' ``{"column": "condition"}`` grammar over ``tmrl_demo_buffers`` columns.
    ``max_samples``: keep only the newest N samples. ``overwrite=False`` refuses an existing ``out``
    (``ExportTargetExistsError``, also in a dry run, which otherwise reads and checks everything but
    writes nothing). Raises ``NoDemoSamplesError`` when the range has no sample of that layout.
    """
    if memory not in LAYOUTS:
        raise ExportArgumentError(f"memory must be 'lidar' or 'full', got {memory!r}")
    if max_samples is not None and (
        isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1
    ):
        raise ExportArgumentError(f"max_samples must be a positive integer, got {max_samples!r}")
    target = Path(out)
    _check_target(target, overwrite)
    try:
        start, end, days_listed = _days(start_date, end_date, dates)
        where = _filters(filters)
    except ValueError as exc:
        raise ExportArgumentError(str(exc)) from None

    table, trimmed, other_layouts = _read_samples(
        warehouse, memory, start, end, max_samples, days_listed, where
    )
    columns = _memory_columns(table, memory)
    eoe = columns[COLUMNS[memory].index("eoe")]
    days = table.column("date").to_pylist()
    written = None
    if not dry_run:
        written = _write_atomically(target, columns, overwrite)
    return ExportSummary(
        out=target,
        memory=memory,
        samples=table.num_rows,
        runs=len(
            set(zip(table.column("run_id").to_pylist(), table.column("sha256").to_pylist(), strict=True))
        ),
        episodes=sum(eoe),
        first_day=days[0],
        last_day=days[-1],
        trimmed=trimmed,
        other_layouts=other_layouts,
        dry_run=dry_run,
        bytes_written=written,
    )


def _check_target(target: Path, overwrite: bool) -> None:
    if target.is_dir():
        raise ExportArgumentError(
            f"{target} is a directory: pass the file to write, e.g. {target / 'data.pkl'}"
        )
    if target.exists() and not overwrite:
        raise ExportTargetExistsError(
            f"{target} already exists: pass overwrite=True (--overwrite) to replace it"
        )


# ---------------------------------------------------------------------------------------------------------
# Reading


def _read_samples(
    warehouse: BasePath | None,
    memory: str,
    start: dt.date | None,
    end: dt.date | None,
    max_samples: int | None,
    dates: tuple[dt.date, ...] | None = None,
    row_filter: Any = None,
) -> tuple[pa.Table, int, dict[str, int]]:
    """The rows to export in order, how many older rows ``max_samples`` left out, and the rows of other
    layouts in the range. Days are read newest first and reading stops once ``max_samples`` are in.
    ``row_filter``: the ``filters=`` expression, applied to every row read."""
    uri, storage_options = _root(warehouse)
    selection = _select(uri, storage_options, start, end, dates)
    if dates is not None:
        span = f" on {', '.join(d.isoformat() for d in dates)}"
    elif start is None and end is None:
        span = ""
    else:
        span = f" from {start or 'the first day'} to {end or 'the last day'}"
    where = f"{uri.rstrip('/')}/{ASSET_KEY}"
    if not selection.files:
        raise NoDemoSamplesError(f"no {ASSET_KEY} partitions under {where}{span}")
    filesystem = selection.filesystem()
    columns = [*_ROW_COLUMNS, *OBS_FIELDS[memory]]
    tables: list[pa.Table] = []
    total = 0
    other: Counter[str] = Counter()
    for file in reversed(selection.files):
        if max_samples is not None and total >= max_samples:
            break
        table = _read_rows(filesystem, file.path, file.day, ["obs_layout", *columns], row_filter)
        if table is None:  # removed since the listing
            continue
        counts = _layout_counts(table)
        other.update({layout: n for layout, n in counts.items() if layout != memory})
        if counts.get(memory):
            table = table.filter(_row_filter(memory, None, False))
            tables.append(table.select(columns))
            total += table.num_rows
    if not total:
        found = f" (found {_describe(other)}: pass --memory/memory= of that layout)" if other else ""
        raise NoDemoSamplesError(f"no {memory!r} samples in {where}{span}{found}")
    combined = pa.concat_tables(reversed(tables))
    trimmed = 0
    if max_samples is not None and combined.num_rows > max_samples:
        trimmed = combined.num_rows - max_samples
        combined = combined.slice(trimmed)
    # Count what max_samples made us skip reading too, so the summary is the same however far we read.
    return (
        combined,
        trimmed + _unread(selection, filesystem, tables, memory, max_samples, row_filter),
        dict(other),
    )


def _unread(
    selection: Any,
    filesystem: Any,
    tables: list[pa.Table],
    memory: str,
    max_samples: int | None,
    row_filter: Any = None,
) -> int:
    """Samples of ``memory`` on the older days that were not read (``max_samples`` was reached first)."""
    if max_samples is None or len(tables) == 0:
        return 0
    read_days = {table.column("date")[0].as_py() for table in tables if table.num_rows}
    oldest = min(read_days)
    count = 0
    for file in selection.files:
        if file.day >= oldest:
            break
        table = _read_rows(
            filesystem, file.path, file.day, ["obs_layout"], _row_filter(memory, None, False, row_filter)
        )
        count += 0 if table is None else table.num_rows
    return count


def _describe(counts: Counter[str]) -> str:
    return ", ".join(f"{n} {layout!r} sample(s)" for layout, n in sorted(counts.items()))


# ---------------------------------------------------------------------------------------------------------
# tmrl's columns


def _memory_columns(table: pa.Table, memory: str) -> list[list[Any]]:
    """tmrl's ``data`` for ``table``'s rows: one Python list per column (module docstring)."""
    n = table.num_rows
    act = field_array(table, "act")
    speed = field_array(table, "speed")
    flags = {
        name: table.column(name).to_numpy().astype(bool).tolist() for name in ("terminated", "truncated")
    }
    eoe = table.column("episode_end").to_numpy().astype(bool)
    eoe |= np.asarray(flags["terminated"], bool) | np.asarray(flags["truncated"], bool)
    rewards = table.column("reward").to_numpy().astype(np.float64)
    reward: list[Any] = [np.float32(r) for r in rewards] if memory == "lidar" else rewards.tolist()
    infos = _infos(table)
    common = {
        "index": list(range(n)),
        "action": list(act),
        "speed": list(speed),
        "eoe": eoe.tolist(),
        "reward": reward,
        "info": infos,
        **flags,
    }
    if memory == "lidar":
        common["lidar"] = list(field_array(table, "lidar")[:, 0])  # newest scan first in the warehouse
    else:
        common["image"] = list(field_array(table, "images")[:, 0])  # newest frame first in the warehouse
        common["gear"] = list(field_array(table, "gear"))
        common["rpm"] = list(field_array(table, "rpm"))
    return [common[name] for name in COLUMNS[memory]]


def _infos(table: pa.Table) -> list[dict[str, Any]]:
    infos = []
    for text, is_demo, run_id in zip(
        table.column("info").to_pylist(),
        table.column("is_demo").to_pylist(),
        table.column("run_id").to_pylist(),
        strict=True,
    ):
        info = json.loads(text)
        if not isinstance(info, dict):  # the asset always writes an object; keep tmrl's shape anyway
            info = {"raw_info": info}
        info.setdefault("is_demo", bool(is_demo))
        info.setdefault("demo_source", "player_runs")
        info.setdefault("demo_run_id", run_id)
        infos.append(info)
    return infos


# ---------------------------------------------------------------------------------------------------------
# Writing


def _reduce_array(array: np.ndarray) -> tuple[Any, ...]:
    """``numpy.ndarray(shape, dtype, buffer=bytearray)``: loads as a writable array in numpy 1.x and 2.x."""
    if array.dtype.hasobject:
        raise TypeError("object arrays are not exported")
    data = bytearray(np.ascontiguousarray(array).tobytes())
    return (np.ndarray, (tuple(int(d) for d in array.shape), array.dtype.str, data))


def _reduce_float32(value: np.float32) -> tuple[Any, ...]:
    return (np.float32, (float(value),))  # exact: every float32 is a float64


class _PortablePickler(pickle.Pickler):
    dispatch_table: ClassVar[dict[type, Any]] = {
        **copyreg.dispatch_table,
        np.ndarray: _reduce_array,
        np.float32: _reduce_float32,
    }


def _write_atomically(target: Path, columns: list[list[Any]], overwrite: bool) -> int:
    """Write beside ``target`` then rename over it (``overwrite``) or hard-link it into place, which fails
    if ``target`` appeared meanwhile: a reader sees the old file or the whole new one, never a part."""
    try:
        with atomic_write(str(target), overwrite=overwrite) as sink:
            _PortablePickler(sink, protocol=PICKLE_PROTOCOL).dump(columns)
    except FileExistsError:
        raise ExportTargetExistsError(
            f"{target} already exists: pass overwrite=True (--overwrite) to replace it"
        ) from None
    return target.stat().st_size
