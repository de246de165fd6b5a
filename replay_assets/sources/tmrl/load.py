"""TMRL human demonstrations from the warehouse, for training: ``DemoBuffer`` and ``MixedSampler``.

- ``DemoBuffer``: a map-style dataset (``DataLoader``-ready, like tmrl's replay memories) of the demo
  samples of ``tmrl_demo_buffers``, one observation layout at a time. ``refresh()`` picks up the days
  materialized since the last call, so a running trainer sees new demos without restarting.
- ``MixedSampler``: batches mixing fresh (agent) samples with demos in a given share, honouring tmrl's
  ``PLAYER_RUNS`` settings ``DEMO_INJECTION_REPEAT`` and ``DEMO_SAMPLING_WEIGHT``.

Items (one per demo sample, every value a tensor; shapes as in the run files)::

    act (3,) float32                      gas, brake, steer in [-1, 1]
    speed (1,) float32                    both layouts
    lidar (4, 19) float32                 "lidar" layout: 4 scans of 19 beams, newest first
    gear (1,), rpm (1,) float32           "full" layout
    images (4, 64, 64) uint8              "full" layout: 4 grayscale frames, newest first
    prev_act_1 (3,), prev_act_2 (3,)      float32, the two previous actions as recorded
    reward () float32                     stored as float64; float32 like tmrl's memories
    terminated (), truncated () bool

Observation layouts: a buffer serves exactly one layout, because the two have different fields and a
batch of mixed items cannot be collated (nor fed to one model). ``layout="lidar"``/``"full"`` keeps the
rows of that layout and leaves out every other row (including ``unknown:...`` layouts), silently: that
is what the filter asks for. ``layout=None`` takes the one layout the selected rows have and *refuses*
(``MixedLayoutsError``, naming the layouts and their counts) rows of several layouts, at construction or
at a ``refresh()`` that would bring a second one: guessing which to drop would silently change the data a
model trains on. A long-running trainer should pass ``layout=`` explicitly.

Freshness: ``refresh()`` lists the asset's partitions (``warehouse.select_partitions``) and compares each
partition file's listing entry with the one recorded when it was read: size, modification time and inode
locally (the writer replaces a partition with ``os.replace``, so a rewrite is a new inode even within
the same second and at the same size), size, ETag and LastModified on S3 (from the same ``LIST``
response: no data is read, no per-file request). Only new or changed days are read; unchanged days are
kept as they are, removed days are dropped. Indices are stable between refreshes only: a re-read day is
replaced in place (days stay in date order, rows in ``run_id``, file, ``sample_index`` order), so
``generation`` counts the refreshes that changed anything and ``MixedSampler`` restarts its pass then.

Only rows with ``is_demo`` are served (``demos_only=False`` serves every row). The selected days live in
memory as NumPy arrays (about 0.4 KiB a lidar sample, 16.5 KiB a full one). Importing this module imports
neither torch (items and batches do) nor Dagster; a ``DemoBuffer`` pickles into ``DataLoader`` workers,
but a worker holds the copy it was given: call ``refresh()`` where the sampling happens.
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
import itertools
import math
import numbers
import operator
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
from upath import UPath

from replay_assets.errors import ReplayAssetsError
from replay_assets.sources.tmrl.schema import TMRL_DEMO_BUFFERS
from replay_assets.warehouse.filters import filters_expression, parse_filters
from replay_assets.warehouse.layout import asset_root, partition_expression, scan_schema
from replay_assets.warehouse.selection import (
    UNSET,
    BasePath,
    DateLike,
    MissingPartitionsWarning,
    Selection,
    parse_day,
    resolve_warehouse,
    select_partitions,
    warehouse_argument,
)

if TYPE_CHECKING:
    import torch

__all__ = [
    "ASSET_KEY",
    "DemoBuffer",
    "DemoSampleRef",
    "EmptyDemoBufferWarning",
    "MixedDataset",
    "MixedIndex",
    "MixedLayoutsError",
    "MixedSampler",
    "MixedSamplerWarning",
    "RefreshReport",
]

ASSET_KEY = "tmrl_demo_buffers"
Layout = Literal["lidar", "full"]
LAYOUTS: tuple[str, ...] = ("lidar", "full")
# Per-sample shapes and dtypes, as in the run files and in TMRL_DEMO_BUFFERS' column metadata.
ACT_SHAPE = (3,)
LIDAR_SHAPE = (4, 19)
IMAGES_SHAPE = (4, 64, 64)
_FIELD_SPECS: dict[str, tuple[tuple[int, ...], np.dtype]] = {
    "act": (ACT_SHAPE, np.dtype(np.float32)),
    "speed": ((1,), np.dtype(np.float32)),
    "gear": ((1,), np.dtype(np.float32)),
    "rpm": ((1,), np.dtype(np.float32)),
    "lidar": (LIDAR_SHAPE, np.dtype(np.float32)),
    "images": (IMAGES_SHAPE, np.dtype(np.uint8)),
    "prev_act_1": (ACT_SHAPE, np.dtype(np.float32)),
    "prev_act_2": (ACT_SHAPE, np.dtype(np.float32)),
}
OBS_FIELDS: dict[str, tuple[str, ...]] = {
    "lidar": ("speed", "lidar", "prev_act_1", "prev_act_2"),
    "full": ("speed", "gear", "rpm", "images", "prev_act_1", "prev_act_2"),
}
_ALL_OBS_FIELDS = tuple(dict.fromkeys(OBS_FIELDS["lidar"] + OBS_FIELDS["full"]))
_FLAGS = ("terminated", "truncated")
# Rows of a day in this order: one run's samples contiguous and in file order, runs in a fixed order.
_ROW_ORDER = [("run_id", "ascending"), ("sha256", "ascending"), ("sample_index", "ascending")]


class MixedLayoutsError(ReplayAssetsError, ValueError):
    """The selected demo rows have several observation layouts (or one this loader cannot serve)."""


class MixedSamplerWarning(UserWarning):
    """A ``MixedSampler`` could not give the requested mix (one of its datasets is empty)."""


class EmptyDemoBufferWarning(MixedSamplerWarning):
    """Demos were asked for but the demo dataset is empty: the batches are all fresh samples."""


# ---------------------------------------------------------------------------------------------------------
# Warehouse plumbing shared with tmrl_export


def _root(warehouse: BasePath | None) -> tuple[str, dict[str, Any]]:
    """The warehouse URI and fsspec options, resolved once (``REPLAY_WAREHOUSE_URI`` when None)."""
    root = resolve_warehouse(warehouse, ASSET_KEY)
    return str(root), dict(root.storage_options)


def _select(
    uri: str,
    storage_options: Mapping[str, Any],
    start: dt.date | None,
    end: dt.date | None,
    dates: tuple[dt.date, ...] | None = None,
) -> Selection:
    """The partition files of the range (or of ``dates``) present now. Days without a partition are normal
    here (demos are not recorded every day), so they are left out without a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingPartitionsWarning)
        return select_partitions(
            ASSET_KEY,
            base_path=UPath(uri, **storage_options),
            dates=dates,
            start_date=start,
            end_date=end,
            missing="skip",
        )


def _days(
    start_date: DateLike | None, end_date: DateLike | None, dates: DateLike | Iterable[DateLike] | None
) -> tuple[dt.date | None, dt.date | None, tuple[dt.date, ...] | None]:
    """The day arguments checked: an inclusive range, or a list of days (as ``select_partitions`` takes)."""
    start, end = _day_or_none(start_date), _day_or_none(end_date)
    if dates is not None and (start is not None or end is not None):
        raise ValueError("pass either dates=[...] or start_date/end_date, not both")
    if start and end and start > end:
        raise ValueError(f"start_date {start} is after end_date {end}")
    if dates is None:
        return start, end, None
    listed = [dates] if isinstance(dates, str | dt.date) else list(dates)
    return None, None, tuple(sorted({parse_day(d) for d in listed}))


def _filters(filters: Mapping[str, str] | None) -> pc.Expression | None:
    """``filters=`` in the loaders' grammar, over ``tmrl_demo_buffers`` columns (parsed before any IO)."""
    return filters_expression(parse_filters(filters, TMRL_DEMO_BUFFERS))


_SIGNATURE_KEYS = ("size", "ETag", "etag", "LastModified", "last_modified", "mtime", "ino", "VersionId")


def _signature(info: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """What identifies one version of a file in a listing entry (local: size, mtime, inode; S3: size,
    ETag, LastModified): equal signatures mean the file was not replaced since it was read."""
    return tuple((key, str(info[key])) for key in _SIGNATURE_KEYS if info.get(key) is not None)


def _signatures(selection: Selection) -> dict[str, tuple[tuple[str, str], ...]]:
    """The signature of every selected partition file, from one listing of the asset folder."""
    if not selection.files:
        return {}
    root = UPath(selection.warehouse_uri, **selection.storage_options)
    fs = root.fs
    where = asset_root(root, ASSET_KEY).path
    fs.invalidate_cache(where)
    listed = fs.find(where, detail=True)
    found = {}
    for file in selection.files:
        info = listed.get(file.path)
        if info is None:  # listed under another spelling, or replaced in between: ask for this one
            try:
                info = fs.info(file.path)
            except FileNotFoundError:
                continue  # removed since the selection: absent this time
        found[file.path] = _signature(info)
    return found


def _row_filter(
    layout: str | None,
    run_ids: frozenset[str] | None,
    demos_only: bool,
    where: pc.Expression | None = None,
) -> pc.Expression | None:
    conditions = [] if where is None else [where]
    if layout is not None:
        conditions.append(pc.field("obs_layout") == layout)
    if run_ids is not None:
        conditions.append(pc.field("run_id").isin(sorted(run_ids)))
    if demos_only:
        conditions.append(pc.field("is_demo"))
    return functools.reduce(operator.and_, conditions) if conditions else None


def _read_rows(
    filesystem: pafs.FileSystem,
    path: str,
    day: dt.date,
    columns: Sequence[str],
    where: pc.Expression | None,
) -> pa.Table | None:
    """One partition's matching rows in ``_ROW_ORDER``; None if the file vanished since the listing.
    ``date`` reads from the partition's folder (``day``), like every project reader."""
    file_format = pads.ParquetFileFormat()
    try:
        schema = scan_schema(file_format.inspect(path, filesystem))
    except FileNotFoundError:
        return None
    dataset = pads.FileSystemDataset.from_paths(
        [path],
        schema=schema,
        format=file_format,
        filesystem=filesystem,
        partitions=[partition_expression(day)],
    )
    missing = [c for c in (*columns, *(key for key, _ in _ROW_ORDER)) if c not in dataset.schema.names]
    if missing:
        raise ReplayAssetsError(f"{path}: not a {ASSET_KEY} partition (no column(s) {', '.join(missing)})")
    wanted = list(dict.fromkeys([*columns, *(key for key, _ in _ROW_ORDER)]))
    try:
        table = dataset.to_table(columns=wanted, filter=where)
    except FileNotFoundError:
        return None
    return table.sort_by(_ROW_ORDER)


def _no_nulls(column: pa.ChunkedArray, name: str) -> None:
    if column.null_count:
        raise ReplayAssetsError(f"{ASSET_KEY}: {column.null_count} null value(s) in {name} for its layout")


def field_array(table: pa.Table, name: str) -> np.ndarray:
    """A fixed-shape column as one fresh ``(rows, *shape)`` array of its dtype (see ``_FIELD_SPECS``)."""
    shape, dtype = _FIELD_SPECS[name]
    column = table.column(name)
    _no_nulls(column, name)
    rows = len(column)
    if name == "images":
        return _binary_rows(column, math.prod(shape)).reshape(rows, *shape)
    if pa.types.is_fixed_size_list(column.type):
        parts = [chunk.flatten().to_numpy(zero_copy_only=False) for chunk in column.chunks]
    else:
        parts = [chunk.to_numpy(zero_copy_only=False) for chunk in column.chunks]
    values = np.concatenate(parts) if parts else np.empty(0, dtype)
    return values.astype(dtype, copy=False).reshape(rows, *shape)


def _binary_rows(column: pa.ChunkedArray, width: int) -> np.ndarray:
    """A binary column of ``width``-byte values as ``(rows, width)`` uint8, straight from its buffers."""
    out = np.empty((len(column), width), np.uint8)
    row = 0
    for chunk in column.chunks:
        count = len(chunk)
        if not count:
            continue
        offset_type = np.int64 if pa.types.is_large_binary(chunk.type) else np.int32
        offsets = np.frombuffer(chunk.buffers()[1], offset_type)[chunk.offset : chunk.offset + count + 1]
        if not (np.diff(offsets) == width).all():
            raise ReplayAssetsError(f"{ASSET_KEY}: an images value is not {width} bytes")
        data = np.frombuffer(chunk.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
        out[row : row + count] = data.reshape(count, width)
        row += count
    return out


def _layout_counts(table: pa.Table) -> Counter[str]:
    counts = pc.value_counts(table.column("obs_layout")).to_pylist() if table.num_rows else []
    return Counter({entry["values"]: entry["counts"] for entry in counts})


def _describe_counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{count} {layout!r}" for layout, count in sorted(counts.items()))


def _check_layout(layout: Any) -> str | None:
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(f"layout must be 'lidar', 'full' or None, got {layout!r}")
    return layout


def _check_run_ids(run_ids: Iterable[str] | None) -> frozenset[str] | None:
    if run_ids is None:
        return None
    ids = None if isinstance(run_ids, str) else list(run_ids)
    if ids is None or not all(isinstance(r, str) for r in ids):
        raise ValueError(f"run_ids must be a list of run id strings, got {run_ids!r}")
    return frozenset(ids)


def _day_or_none(value: DateLike | None) -> dt.date | None:
    return None if value is None else parse_day(value)


# ---------------------------------------------------------------------------------------------------------
# DemoBuffer


@dataclass(frozen=True)
class RefreshReport:
    """What one ``refresh()`` did. ``loaded_samples`` (its return value) counts the samples of the added
    and re-materialized days, ``dropped_samples`` the samples those days and the removed ones replaced."""

    added_days: tuple[dt.date, ...]
    changed_days: tuple[dt.date, ...]
    removed_days: tuple[dt.date, ...]
    unchanged_days: tuple[dt.date, ...]
    loaded_samples: int
    dropped_samples: int

    @property
    def changed(self) -> bool:
        return bool(self.added_days or self.changed_days or self.removed_days)


class DemoSampleRef(NamedTuple):
    """Where a buffer item comes from: the partition day, the run and the sample's index in its file."""

    date: dt.date
    run_id: str
    sample_index: int


@dataclass(eq=False)
class _Day:
    """One partition's selected rows as NumPy arrays (``fields``: the item's arrays)."""

    date: dt.date
    path: str
    signature: tuple[tuple[str, str], ...]
    layouts: Counter[str]
    fields: dict[str, np.ndarray]
    run_id: np.ndarray  # object array of str
    sample_index: np.ndarray

    @property
    def size(self) -> int:
        return len(self.sample_index)


class DemoBuffer:
    """Map-style dataset of the demo samples of ``tmrl_demo_buffers``: ``DataLoader(buffer, batch_size=256,
    shuffle=True)`` or ``MixedSampler(fresh, buffer)``. Items are dicts of tensors (module docstring).

    ``warehouse=`` (keyword-only, as in every loader): the warehouse root (default
    ``REPLAY_WAREHOUSE_URI``) or the asset's own folder, local or ``s3://``; passing it as the first
    positional argument is deprecated (a ``DeprecationWarning``, for one release), so pass the days and
    the rest by name too. Days: the inclusive ``start_date``..``end_date`` range (``'YYYY-MM-DD'`` or
    ``date``; open ends take whatever is present, now and at later refreshes) or ``dates=[...]``; days
    without a partition are simply absent, and an empty buffer is fine (a trainer may start before the
    first demo). ``layout``: "lidar", "full" or None (the one layout present; several are refused, see the
    module docstring). ``run_ids``: keep only these runs. ``filters``: the loaders' ``{"column":
    "condition"}`` grammar over ``tmrl_demo_buffers`` columns. ``demos_only``: only rows whose
    ``is_demo`` is true (the default).

    ``refresh()`` reads the days materialized since the last call and returns how many samples it loaded
    (``last_refresh`` has the details); the constructor is the first refresh.
    """

    def __init__(
        self,
        _warehouse: BasePath | None = UNSET,  # deprecated: warehouse=
        /,
        start_date: DateLike | None = None,
        end_date: DateLike | None = None,
        layout: Layout | None = None,
        run_ids: Iterable[str] | None = None,
        *,
        warehouse: BasePath | None = None,
        dates: DateLike | Sequence[DateLike] | None = None,
        filters: Mapping[str, str] | None = None,
        demos_only: bool = True,
    ) -> None:
        location = warehouse_argument(
            warehouse, _warehouse, legacy_spelling="the first positional argument", owner="DemoBuffer"
        )
        self.requested_layout = _check_layout(layout)
        self.run_ids = _check_run_ids(run_ids)
        self.start_date, self.end_date, self.dates = _days(start_date, end_date, dates)
        self.filters = dict(filters) if filters else None
        self._where = _filters(self.filters)
        self.demos_only = bool(demos_only)
        self.warehouse_uri, self.storage_options = _root(location)
        self.generation = 0  # refreshes that changed the samples (indices may have moved)
        self._days: dict[dt.date, _Day] = {}
        self._sequence: list[_Day] = []  # the days in date order
        self._ends: list[int] = []  # their cumulative sizes
        self._layout: str | None = None
        self._filesystem: pafs.FileSystem | None = None
        self.last_refresh: RefreshReport | None = None
        self.refresh()

    # -- state

    @property
    def layout(self) -> str | None:
        """The layout served: the requested one, else the one found (None while the buffer is empty)."""
        return self.requested_layout or self._layout

    @property
    def days(self) -> list[dt.date]:
        """The partition days read (including days with no matching row), in date order."""
        return list(self._days)

    def samples_per_day(self) -> dict[dt.date, int]:
        return {day: entry.size for day, entry in self._days.items()}

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    def __repr__(self) -> str:
        span = f"{self.days[0]}..{self.days[-1]}" if self._days else "no days"
        return f"DemoBuffer({len(self)} samples, layout={self.layout!r}, {span}, {self.warehouse_uri})"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_filesystem"] = None  # opened again in the process that needs it (never across a fork)
        return state

    def _fs(self, selection: Selection) -> pafs.FileSystem:
        if self._filesystem is None:
            self._filesystem = selection.filesystem()
        return self._filesystem

    # -- refresh

    def refresh(self) -> int:
        """Read the partitions added or re-materialized since the last call; drop removed ones.

        Unchanged partitions (same listing signature) are not read again. Returns the number of samples
        loaded (those of added and re-materialized days). Raises ``MixedLayoutsError`` without changing
        anything if, with ``layout=None``, the result would hold several layouts.
        """
        selection = _select(
            self.warehouse_uri, self.storage_options, self.start_date, self.end_date, self.dates
        )
        signatures = _signatures(selection)
        kept: dict[dt.date, _Day] = {}
        loaded: dict[dt.date, _Day] = {}
        for file in selection.files:
            signature = signatures.get(file.path)
            if signature is None:
                continue
            old = self._days.get(file.day)
            if old is not None and old.path == file.path and old.signature == signature:
                kept[file.day] = old
                continue
            day = self._read_day(self._fs(selection), file.day, file.path, signature)
            if day is not None:
                loaded[file.day] = day
        days = dict(sorted({**kept, **loaded}.items()))
        found = self._found_layout(days)  # raises before anything changes
        added = tuple(d for d in loaded if d not in self._days)
        changed = tuple(d for d in loaded if d in self._days)
        removed = tuple(d for d in self._days if d not in days)
        report = RefreshReport(
            added_days=added,
            changed_days=changed,
            removed_days=removed,
            unchanged_days=tuple(kept),
            loaded_samples=sum(day.size for day in loaded.values()),
            dropped_samples=sum(self._days[d].size for d in (*changed, *removed)),
        )
        self._days = days
        self._sequence = list(days.values())
        self._ends = list(itertools.accumulate(day.size for day in days.values()))
        self._layout = found
        if report.changed:
            self.generation += 1
        self.last_refresh = report
        return report.loaded_samples

    def _read_day(
        self, filesystem: pafs.FileSystem, date: dt.date, path: str, signature: tuple[tuple[str, str], ...]
    ) -> _Day | None:
        layout = self.requested_layout
        fields = OBS_FIELDS[layout] if layout else _ALL_OBS_FIELDS
        columns = ["obs_layout", "act", *fields, "reward", *_FLAGS]
        where = _row_filter(layout, self.run_ids, self.demos_only, self._where)
        table = _read_rows(filesystem, path, date, columns, where)
        if table is None:
            return None
        counts = _layout_counts(table)
        served = layout or (next(iter(counts)) if len(counts) == 1 else None)
        if served not in LAYOUTS:  # several layouts, or one this loader cannot serve: refused below
            return _Day(date, path, signature, counts, {}, np.empty(0, object), np.empty(0, np.int32))
        arrays = {name: field_array(table, name) for name in ("act", *OBS_FIELDS[served])}
        arrays["reward"] = table.column("reward").to_numpy().astype(np.float64)
        for flag in _FLAGS:
            arrays[flag] = table.column(flag).to_numpy().astype(bool)
        return _Day(
            date=date,
            path=path,
            signature=signature,
            layouts=counts,
            fields=arrays,
            run_id=table.column("run_id").to_numpy(),
            sample_index=table.column("sample_index").to_numpy().astype(np.int32),
        )

    def _found_layout(self, days: Mapping[dt.date, _Day]) -> str | None:
        if self.requested_layout is not None:
            return self.requested_layout
        totals: Counter[str] = Counter()
        for day in days.values():
            totals.update(day.layouts)
        if len(totals) > 1 or (totals and next(iter(totals)) not in LAYOUTS):
            where = f"{self.warehouse_uri}/{ASSET_KEY}"
            raise MixedLayoutsError(
                f"the selected demos of {where} have observation layout(s) {_describe_counts(totals)}: "
                "a buffer serves one layout, pass layout='lidar' or layout='full' (other rows are left out)"
            )
        return next(iter(totals), None)

    # -- items

    def _position(self, index: int) -> tuple[_Day, int]:
        i = operator.index(index)
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} demo samples")
        i %= n
        k = bisect.bisect_right(self._ends, i)
        start = self._ends[k - 1] if k else 0
        return self._sequence[k], i - start

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        import torch

        day, row = self._position(index)
        item = {name: torch.from_numpy(np.array(values[row])) for name, values in day.fields.items()}
        item["reward"] = item["reward"].to(torch.float32)
        return item

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, torch.Tensor]]:
        """Items gathered column-wise per day: what ``DataLoader`` calls for a batch of indices."""
        import torch

        located = [self._position(i) for i in indices]
        items: list[dict[str, torch.Tensor]] = [{} for _ in located]
        by_day: dict[int, tuple[_Day, list[int], list[int]]] = {}
        for slot, (day, row) in enumerate(located):
            entry = by_day.setdefault(id(day), (day, [], []))
            entry[1].append(slot)
            entry[2].append(row)
        for day, slots, rows in by_day.values():
            for name, values in day.fields.items():
                block = torch.from_numpy(values[rows])  # fancy indexing: a fresh array
                if name == "reward":
                    block = block.to(torch.float32)
                for slot, value in zip(slots, block.unbind(0), strict=True):
                    items[slot][name] = value
        return items

    def source(self, index: int) -> DemoSampleRef:
        """The day, run and in-file sample index of item ``index`` (lineage back to the run file)."""
        day, row = self._position(index)
        return DemoSampleRef(day.date, str(day.run_id[row]), int(day.sample_index[row]))


# ---------------------------------------------------------------------------------------------------------
# MixedSampler


class MixedIndex(NamedTuple):
    """One slot of a mixed batch: ``source`` is "fresh" or "demo", ``index`` an index into that dataset."""

    source: Literal["fresh", "demo"]
    index: int


class MixedDataset:
    """``fresh`` and ``demo`` behind one map-style dataset keyed by ``MixedIndex``: the ``dataset`` of a
    ``DataLoader(mixed, batch_sampler=sampler)`` whose sampler is a ``MixedSampler``."""

    def __init__(self, fresh: Any, demo: Any) -> None:
        self.fresh, self.demo = fresh, demo

    def __getitem__(self, key: tuple[str, int]) -> Any:
        source, index = key
        return self._dataset(source)[index]

    def __getitems__(self, keys: Sequence[tuple[str, int]]) -> list[Any]:
        items: list[Any] = [None] * len(keys)
        for source in ("fresh", "demo"):
            slots = [slot for slot, (name, _) in enumerate(keys) if name == source]
            if slots:
                fetched = _fetch(self._dataset(source), [keys[slot][1] for slot in slots])
                for slot, item in zip(slots, fetched, strict=True):
                    items[slot] = item
        return items

    def _dataset(self, source: str) -> Any:
        if source == "fresh":
            return self.fresh
        if source == "demo":
            return self.demo
        raise KeyError(f"source must be 'fresh' or 'demo', got {source!r}")


def _fetch(dataset: Any, indices: list[int]) -> list[Any]:
    getitems = getattr(dataset, "__getitems__", None)
    return list(getitems(indices)) if getitems is not None else [dataset[i] for i in indices]


def _setting(settings: Any, name: str) -> Any:
    """``name`` from tmrl's PLAYER_RUNS settings: a mapping (config.json's ``PLAYER_RUNS``) or an object,
    spelt ``DEMO_INJECTION_REPEAT``, ``demo_injection_repeat`` or ``PLAYER_RUNS_DEMO_INJECTION_REPEAT``."""
    if settings is None:
        return None
    for key in (name, name.lower(), f"PLAYER_RUNS_{name}"):
        if isinstance(settings, Mapping):
            if key in settings:
                return settings[key]
        elif hasattr(settings, key):
            return getattr(settings, key)
    return None


class MixedSampler:
    """Batches of fresh (agent) samples mixed with demos from ``demo`` (a ``DemoBuffer`` or any map-style
    dataset), the way tmrl's trainer mixes injected player runs into its replay memory.

    Iterating yields one batch at a time as a list of ``batch_size`` ``MixedIndex(source, index)``, in a
    shuffled order: a PyTorch *batch sampler*, so ``DataLoader(sampler.dataset, batch_sampler=sampler)``
    works. ``batches()`` yields the same batches fetched and collated in this process (the usual
    tmrl-style ``memory.sample()`` result): a dict of stacked tensors plus ``from_demo`` (B,) bool.
    ``num_batches`` bounds each iteration (None: endless, as a replay memory is sampled). The datasets'
    lengths are read at every batch, so a growing fresh memory and ``demo.refresh()`` take effect at once.

    Share of demos in a batch:

    - ``demo_fraction=p`` (default 0.1; tmrl suggests 5-30 %): each batch holds ``p * batch_size`` demos,
      rounded down or up at random so the share is exactly ``p`` on average (25 or 26 of 256 for 0.1).
      ``demo_sampling_weight`` must then stay 1.0 (the share is already fixed).
    - ``demo_fraction=None``: tmrl's own semantics, where demos are appended ``DEMO_INJECTION_REPEAT``
      times into the replay memory and compete with agent samples, each demo copy weighted by
      ``DEMO_SAMPLING_WEIGHT`` (fresh samples weigh 1): the share is
      ``w * r * len(demo) / (w * r * len(demo) + len(fresh))``, recomputed at every batch.

    ``demo_injection_repeat=r``: the demo pool holds every demo ``r`` times (tmrl's repeated injection)
    and demos are drawn from it *without replacement*, in passes: over one pass each demo is drawn exactly
    ``r`` times, and never more than ``r`` times (a pass is ``r * len(demo)`` demo draws, reshuffled when
    used up or when the demo set changes, e.g. after a ``refresh()`` that brought new demos, so they are
    drawn from the next batch on). Fresh samples are drawn uniformly with replacement, like tmrl's memory.

    Edge cases: an empty demo set gives all-fresh batches with an ``EmptyDemoBufferWarning`` (once per
    empty spell); an empty fresh set gives all-demo batches with a ``MixedSamplerWarning``; both empty (or
    no fresh sample and no demo wanted) raises ``RuntimeError``. ``seed`` makes the whole sequence of
    batches reproducible (iterations continue one random stream).
    """

    def __init__(
        self,
        fresh: Any,
        demo: Any,
        demo_fraction: float | None = 0.1,
        batch_size: int = 256,
        demo_injection_repeat: int = 1,
        demo_sampling_weight: float = 1.0,
        seed: int | None = None,
        num_batches: int | None = None,
        *,
        collate_fn: Callable[[list[Any]], Any] | None = None,
    ) -> None:
        self.fresh, self.demo = fresh, demo
        self.batch_size = _positive_int("batch_size", batch_size)
        self.demo_injection_repeat = _positive_int("demo_injection_repeat", demo_injection_repeat)
        self.num_batches = None if num_batches is None else _positive_int("num_batches", num_batches, low=0)
        if isinstance(demo_sampling_weight, bool) or not isinstance(demo_sampling_weight, numbers.Real):
            raise ValueError(f"demo_sampling_weight must be a number >= 0, got {demo_sampling_weight!r}")
        if not (math.isfinite(demo_sampling_weight) and demo_sampling_weight >= 0):
            raise ValueError(
                f"demo_sampling_weight must be a finite number >= 0, got {demo_sampling_weight!r}"
            )
        self.demo_sampling_weight = float(demo_sampling_weight)
        if demo_fraction is not None:
            if isinstance(demo_fraction, bool) or not isinstance(demo_fraction, numbers.Real):
                raise ValueError(f"demo_fraction must be a number in [0, 1] or None, got {demo_fraction!r}")
            if not 0.0 <= demo_fraction <= 1.0:
                raise ValueError(
                    f"demo_fraction must be in [0, 1] (tmrl suggests 0.05-0.3), got {demo_fraction}"
                )
            if self.demo_sampling_weight != 1.0:
                raise ValueError(
                    "demo_sampling_weight applies only with demo_fraction=None (the share then follows the "
                    "weight, as in tmrl); with a fixed demo_fraction leave it at 1.0"
                )
            demo_fraction = float(demo_fraction)
        self.demo_fraction = demo_fraction
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
        self.seed = seed
        self.collate_fn = collate_fn
        self._rng = np.random.default_rng(seed)
        self._pool: np.ndarray = np.empty(0, np.int64)  # the current pass over the demo pool
        self._pool_next = 0
        self._pool_key: tuple[int, Any] | None = None
        self._warned: set[str] = set()

    @classmethod
    def from_player_runs(
        cls,
        fresh: Any,
        demo: Any,
        settings: Mapping[str, Any] | Any = None,
        *,
        demo_fraction: float | None = None,
        batch_size: int = 256,
        seed: int | None = None,
        num_batches: int | None = None,
        collate_fn: Callable[[list[Any]], Any] | None = None,
    ) -> MixedSampler:
        """A sampler configured like tmrl's trainer from its ``PLAYER_RUNS`` settings: config.json's
        ``"PLAYER_RUNS"`` dict, a settings object, or ``tmrl.config``-style constants
        (``PLAYER_RUNS_DEMO_INJECTION_REPEAT``). Missing values take tmrl's defaults (1 and 1.0).

        With ``demo_fraction=None`` (the default) the share follows the repeat and the weight as in tmrl.
        A fixed ``demo_fraction`` overrides the weight, which is then ignored with a warning if not 1.0.
        """
        repeat = _setting(settings, "DEMO_INJECTION_REPEAT")
        weight = _setting(settings, "DEMO_SAMPLING_WEIGHT")
        repeat = 1 if repeat is None else repeat
        weight = 1.0 if weight is None else weight
        if demo_fraction is not None and weight != 1.0:
            warnings.warn(
                f"DEMO_SAMPLING_WEIGHT={weight} ignored: demo_fraction={demo_fraction} fixes the demo share",
                MixedSamplerWarning,
                stacklevel=2,
            )
            weight = 1.0
        return cls(
            fresh,
            demo,
            demo_fraction=demo_fraction,
            batch_size=batch_size,
            demo_injection_repeat=repeat,
            demo_sampling_weight=weight,
            seed=seed,
            num_batches=num_batches,
            collate_fn=collate_fn,
        )

    # -- the mix

    @property
    def dataset(self) -> MixedDataset:
        """The map-style dataset the ``MixedIndex`` keys refer to (for ``DataLoader(batch_sampler=...)``)."""
        return MixedDataset(self.fresh, self.demo)

    def demo_share(self) -> float:
        """The expected share of demos in the next batch, given the datasets' current sizes."""
        return self._share(len(self.fresh), len(self.demo))

    def _wants_demo(self) -> bool:
        return self.demo_fraction > 0 if self.demo_fraction is not None else self.demo_sampling_weight > 0

    def _share(self, n_fresh: int, n_demo: int) -> float:
        if n_demo == 0 or not self._wants_demo():
            return 0.0
        if n_fresh == 0:
            return 1.0
        if self.demo_fraction is not None:
            return self.demo_fraction
        weighted = self.demo_sampling_weight * self.demo_injection_repeat * n_demo
        return weighted / (weighted + n_fresh)

    def __len__(self) -> int:
        if self.num_batches is None:
            raise TypeError("an endless MixedSampler (num_batches=None) has no len()")
        return self.num_batches

    def __iter__(self) -> Iterator[list[MixedIndex]]:
        for from_demo, indices in self._draws():
            yield _keys(from_demo, indices)

    def batches(self) -> Iterator[dict[str, Any]]:
        """The batches fetched and collated here: ``collate_fn`` (default torch's ``default_collate``) of
        the items in batch order, a dict, plus ``from_demo``: (B,) bool, True where the item is a demo."""
        import torch
        from torch.utils.data import default_collate

        collate = self.collate_fn or default_collate
        mixed = self.dataset
        for from_demo, indices in self._draws():
            batch = collate(mixed.__getitems__(_keys(from_demo, indices)))
            if not isinstance(batch, dict):
                raise TypeError(
                    f"batches() needs items that collate to a dict, got {type(batch).__name__}: iterate the "
                    "sampler for (source, index) batches instead"
                )
            batch["from_demo"] = torch.from_numpy(from_demo)
            yield batch

    def _draws(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        count = itertools.count() if self.num_batches is None else range(self.num_batches)
        for _ in count:
            yield self._draw()

    def _draw(self) -> tuple[np.ndarray, np.ndarray]:
        """One batch: ``from_demo`` (B,) bool and the index into its dataset of each slot."""
        size = self.batch_size
        n_fresh, n_demo = len(self.fresh), len(self.demo)
        self._check_sizes(n_fresh, n_demo)
        exact = self._share(n_fresh, n_demo) * size
        k = math.floor(exact)
        if exact > k and self._rng.random() < exact - k:
            k += 1
        from_demo = np.zeros(size, bool)
        from_demo[:k] = True
        indices = np.empty(size, np.int64)
        indices[:k] = self._demo_indices(k, n_demo)
        indices[k:] = self._rng.integers(0, n_fresh, size - k) if k < size else []
        order = self._rng.permutation(size)
        return from_demo[order], indices[order]

    def _check_sizes(self, n_fresh: int, n_demo: int) -> None:
        if n_fresh == 0 and (n_demo == 0 or not self._wants_demo()):
            raise RuntimeError(
                f"nothing to sample: the fresh dataset is empty and the demo dataset has {n_demo} sample(s)"
                + ("" if self._wants_demo() else " but no demo is wanted (demo share 0)")
            )
        if n_demo == 0 and self._wants_demo():
            message = "the demo dataset is empty: batches are all fresh samples until it has demos"
            self._warn_once("demo", EmptyDemoBufferWarning(message + " (DemoBuffer.refresh() adds new days)"))
        else:
            self._warned.discard("demo")
        if n_fresh == 0:
            self._warn_once("fresh", MixedSamplerWarning("the fresh dataset is empty: batches are all demos"))
        else:
            self._warned.discard("fresh")

    def _warn_once(self, key: str, warning: Warning) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(warning, stacklevel=6)  # past _check_sizes, _draw, _draws and __iter__: the loop

    def _demo_indices(self, k: int, n_demo: int) -> np.ndarray:
        """``k`` draws from the current pass over the demo pool (every demo ``repeat`` times, shuffled)."""
        key = (n_demo, getattr(self.demo, "generation", None))
        if key != self._pool_key:  # the demo set changed: a new pass over the new pool
            self._pool_key = key
            self._pool, self._pool_next = np.empty(0, np.int64), 0
        parts = []
        while k > 0:
            if self._pool_next == len(self._pool):
                self._pool = self._rng.permutation(np.repeat(np.arange(n_demo), self.demo_injection_repeat))
                self._pool_next = 0
            take = min(k, len(self._pool) - self._pool_next)
            parts.append(self._pool[self._pool_next : self._pool_next + take])
            self._pool_next += take
            k -= take
        return np.concatenate(parts) if parts else np.empty(0, np.int64)


def _keys(from_demo: np.ndarray, indices: np.ndarray) -> list[MixedIndex]:
    return [
        MixedIndex("demo" if demo else "fresh", index)
        for demo, index in zip(from_demo.tolist(), indices.tolist(), strict=True)
    ]


def _positive_int(name: str, value: Any, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)
