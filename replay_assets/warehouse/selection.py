"""Which partition files a loader reads, and how it reads them: shared by every asset's loaders.

Paths come from ``replay_assets.warehouse.layout`` only, so loaders and the IO manager never disagree
about where a day lives. A ``Selection`` is plain data (URI strings, no open filesystem), so it pickles into
DataLoader workers and each process opens its own filesystem: an s3fs instance must not cross a fork.

A partition file holds every column but ``date``, which is in its folder name (``layout``): the datasets
and fragments built here carry each file's day as its partition expression, so ``date`` reads as a
non-null date32 first column (also from files written before, whose own ``date`` the folder overrides)
and a filter on it prunes whole days.
"""

from __future__ import annotations

import datetime as dt
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from upath import UPath

from replay_assets.errors import ReplayAssetsError
from replay_assets.settings import Settings, resolve_uri
from replay_assets.warehouse.layout import (
    asset_root,
    decode_maps,
    is_local,
    partition_expression,
    partition_file,
    partition_key_of,
    scan_schema,
    warehouse_root,
)

__all__ = [
    "MissingPartitionsError",
    "MissingPartitionsWarning",
    "PartitionFile",
    "RowGroup",
    "Selection",
    "parse_day",
    "row_group_bounds",
    "select_partitions",
    "warehouse_argument",
]

Missing = Literal["error", "skip"]
DateLike = str | dt.date
BasePath = str | os.PathLike[str] | UPath


class MissingPartitionsError(ReplayAssetsError, FileNotFoundError):
    """Requested days have no partition in the warehouse (the original loader silently loaded nothing)."""


class MissingPartitionsWarning(UserWarning):
    """``missing="skip"``: requested days without a partition were left out."""


@dataclass(frozen=True)
class PartitionFile:
    day: dt.date
    path: str  # as the selection's filesystem names it: no protocol, bucket first on S3


@dataclass(frozen=True)
class RowGroup:
    """The unit of work a stream deals out to workers: one row group of one partition file."""

    path: str
    index: int
    num_rows: int
    day: dt.date | None = None  # the partition's day: ``date`` of its rows (None: read no ``date``)


@dataclass(frozen=True)
class Selection:
    """The partition files of one asset chosen for a loader, in date order."""

    warehouse_uri: str
    asset_key: str
    files: tuple[PartitionFile, ...]
    storage_options: dict[str, Any] = field(default_factory=dict)

    @property
    def days(self) -> list[dt.date]:
        return [f.day for f in self.files]

    def filesystem(self) -> pafs.FileSystem:
        """A filesystem for this process: pyarrow's own locally, a fresh fsspec one for S3 after a fork."""
        root = UPath(self.warehouse_uri, **self.storage_options)
        if is_local(root):
            return pafs.LocalFileSystem()
        return pafs.PyFileSystem(pafs.FSSpecHandler(root.fs))

    def dataset(self, filesystem: pafs.FileSystem | None = None) -> pads.Dataset:
        """The selected files as one dataset whose schema has ``date`` first, filled from each folder, and
        the columns as stored (maps as key/value lists: the readers below decode what they read)."""
        filesystem = filesystem or self.filesystem()
        file_format = parquet_format()
        physical = file_format.inspect(self.files[0].path, filesystem) if self.files else pa.schema([])
        return pads.FileSystemDataset.from_paths(
            [f.path for f in self.files],
            schema=scan_schema(physical),
            format=file_format,
            filesystem=filesystem,
            partitions=[partition_expression(f.day) for f in self.files],
        )

    def read_table(self, columns: Sequence[str], filter: pc.Expression | None = None) -> pa.Table:
        """The selected days as one table, filtered with row-group pruning, in date then file order."""
        if not self.files:
            return pa.table({})
        return decode_maps(self.dataset().to_table(columns=list(columns), filter=filter))

    def scan(
        self, columns: Sequence[str], filter: pc.Expression | None = None, batch_rows: int = 65536
    ) -> Iterator[pa.RecordBatch]:
        """Record batches of the selected days, memory bounded by a batch: for one-pass statistics."""
        if self.files:
            batches = self.dataset().to_batches(
                columns=list(columns), filter=filter, batch_size=batch_rows, **_READAHEAD
            )
            yield from map(decode_maps, batches)

    def row_groups(self, filter: pc.Expression | None = None) -> list[RowGroup]:
        """Row groups that may hold matching rows (Parquet statistics prune the others)."""
        if not self.files:
            return []
        units = []
        for file, fragment in zip(self.files, self.dataset().get_fragments(), strict=True):
            for piece in fragment.split_by_row_group(filter):
                (group,) = piece.row_groups
                units.append(RowGroup(fragment.path, group.id, group.num_rows, file.day))
        return units


# pyarrow reads ahead 4 files x 16 batches by default; a loader promising bounded memory keeps it small.
_READAHEAD = {"fragment_readahead": 2, "batch_readahead": 4}


def parquet_format() -> pads.ParquetFileFormat:
    """Episode ids read as dictionaries: a handful of distinct strings repeated on every row."""
    return pads.ParquetFileFormat(read_options=pads.ParquetReadOptions(dictionary_columns=["episode_id"]))


def read_row_group(
    unit: RowGroup,
    filesystem: pafs.FileSystem,
    columns: Sequence[str],
    filter: pc.Expression | None,
    batch_rows: int,
    use_threads: bool,
) -> Iterator[pa.RecordBatch]:
    """One row group's batches; with the unit's day, ``date`` can be read and filtered on like any column."""
    file_format = parquet_format()
    if unit.day is None:
        fragment = file_format.make_fragment(unit.path, filesystem=filesystem, row_groups=[unit.index])
        schema = None
    else:
        where = partition_expression(unit.day)
        fragment = file_format.make_fragment(
            unit.path, filesystem=filesystem, row_groups=[unit.index], partition_expression=where
        )
        schema = scan_schema(fragment.physical_schema)
    batches = fragment.to_batches(
        schema=schema,
        columns=list(columns),
        filter=filter,
        batch_size=batch_rows,
        use_threads=use_threads,
        **_READAHEAD,
    )
    yield from map(decode_maps, batches)


def row_group_bounds(metadata: pq.FileMetaData, column: str) -> list[tuple[Any, Any] | None]:
    """Per row group, the ``(min, max)`` Parquet statistics of a top-level column, or None where the
    writer left none: with a file sorted on ``column``, where a value can be without reading any data."""
    leaf = next((i for i in range(metadata.num_columns) if metadata.schema.column(i).path == column), None)
    if leaf is None:
        raise KeyError(f"no top-level column {column!r} in the Parquet file")
    bounds: list[tuple[Any, Any] | None] = []
    for group in range(metadata.num_row_groups):
        stats = metadata.row_group(group).column(leaf).statistics
        bounds.append((stats.min, stats.max) if stats is not None and stats.has_min_max else None)
    return bounds


# ---------------------------------------------------------------------------------------------------------
# Choosing days


def parse_day(value: DateLike) -> dt.date:
    """A UTC day from ``'YYYY-MM-DD'`` or a ``date``; a ``datetime`` is refused (which day is ambiguous)."""
    if isinstance(value, dt.datetime):
        raise ValueError(f"pass a date or 'YYYY-MM-DD', not a datetime: {value!r}")
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"not a YYYY-MM-DD date: {value!r}") from None
    raise ValueError(f"not a date: {value!r}")


class _Unset:
    """The default of a deprecated argument: tells "not passed" from an explicit None."""

    def __repr__(self) -> str:
        return "<unset>"


UNSET: Any = _Unset()


def warehouse_argument(
    warehouse: Any,
    legacy: Any,
    *,
    legacy_spelling: str,
    owner: str,
    deprecated: bool = True,
    stacklevel: int = 2,
) -> Any:
    """The warehouse location a loader was given: ``warehouse=`` (the one spelling every loader shares), or
    its old spelling ``legacy`` (``UNSET`` when not passed), which still works for one release with a
    ``DeprecationWarning`` naming ``warehouse=`` (``deprecated=False``: an old spelling kept for good, as
    ``ReplayDataset``'s ``base_path``). Both at once is a ``TypeError``. ``stacklevel`` as in ``warn``,
    counted from the caller of this function."""
    if legacy is UNSET:
        return warehouse
    if warehouse is not None:
        raise TypeError(f"{owner}: pass the warehouse once, as warehouse=..., not also as {legacy_spelling}")
    if deprecated:
        warnings.warn(
            f"{owner}: passing the warehouse as {legacy_spelling} is deprecated and stops working in the "
            "next release; pass warehouse=... (keyword-only, as in every loader)",
            DeprecationWarning,
            stacklevel=stacklevel + 1,
        )
    return legacy


def resolve_warehouse(base_path: BasePath | None, asset_key: str) -> UPath:
    """The warehouse root, accepting the asset's own folder (``<warehouse>/<asset_key>``) too."""
    if base_path is None:
        root = warehouse_root(Settings.from_env().warehouse_uri)
    elif isinstance(base_path, UPath):
        root = base_path
    else:
        root = warehouse_root(resolve_uri(os.fspath(base_path)))
    return root.parent if root.name == asset_key else root


def available_partitions(warehouse: UPath, asset_key: str) -> dict[dt.date, UPath]:
    """Every day with a complete partition file: one listing of the asset folder, local or S3."""
    root = asset_root(warehouse, asset_key)
    root.fs.invalidate_cache(root.path)  # a long-lived process must see days written since
    if not root.exists():
        return {}
    present = set(root.fs.find(root.path))
    found = {}
    for child in root.iterdir():
        key = partition_key_of(child.name)
        if key is None:
            continue
        path = partition_file(warehouse, asset_key, key)
        if path.path in present:
            found[dt.date.fromisoformat(key)] = path
    return dict(sorted(found.items()))


def _requested_days(
    available: Sequence[dt.date],
    dates: DateLike | Sequence[DateLike] | None,
    start_date: DateLike | None,
    end_date: DateLike | None,
) -> list[dt.date] | None:
    """The days asked for, or None for every day present; an open range ends where the present days do."""
    if dates is not None:
        if start_date is not None or end_date is not None:
            raise ValueError("pass either dates=[...] or start_date/end_date, not both")
        listed = [dates] if isinstance(dates, str | dt.date) else list(dates)
        return sorted({parse_day(d) for d in listed})
    if start_date is None and end_date is None:
        return None
    start = parse_day(start_date) if start_date is not None else None
    end = parse_day(end_date) if end_date is not None else None
    if start is not None and end is not None and start > end:
        raise ValueError(f"start_date {start} is after end_date {end}")
    low = start or (available[0] if available else None)
    high = end or (available[-1] if available else None)
    if low is None or high is None or low > high:  # an open range with no day present in it
        return []
    return [low + dt.timedelta(days=i) for i in range((high - low).days + 1)]


def select_partitions(
    asset_key: str,
    *,
    base_path: BasePath | None = None,
    dates: DateLike | Sequence[DateLike] | None = None,
    start_date: DateLike | None = None,
    end_date: DateLike | None = None,
    missing: Missing = "error",
    stacklevel: int = 1,
) -> Selection:
    """The partition files for the requested days (inclusive range, a list, or every day present).

    A requested day without a partition raises ``MissingPartitionsError`` listing every such day, or
    with ``missing="skip"`` warns (``MissingPartitionsWarning``) and goes on without it. A selection
    with no day at all is reported the same way. ``stacklevel`` counts from the caller, as in ``warn``.
    """
    if missing not in ("error", "skip"):
        raise ValueError(f"missing must be 'error' or 'skip', got {missing!r}")
    warehouse = resolve_warehouse(base_path, asset_key)
    available = available_partitions(warehouse, asset_key)
    requested = _requested_days(list(available), dates, start_date, end_date)
    where = asset_root(warehouse, asset_key)
    chosen = list(available) if requested is None else [day for day in requested if day in available]
    absent = [] if requested is None else [day for day in requested if day not in available]
    if absent:
        listed = ", ".join(day.isoformat() for day in absent)
        _report(
            missing,
            stacklevel,
            f"{len(absent)} requested day(s) of {asset_key} missing under {where}: {listed}",
        )
    elif not chosen:
        span = f" from {start_date or 'the first day'} to {end_date or 'the last day'}"
        _report(
            missing,
            stacklevel,
            f"no partitions of {asset_key} under {where}{span if requested is not None else ''}",
        )
    return Selection(
        warehouse_uri=str(warehouse),
        asset_key=asset_key,
        files=tuple(PartitionFile(day, available[day].path) for day in chosen),
        storage_options=dict(warehouse.storage_options),
    )


def _report(missing: Missing, stacklevel: int, message: str) -> None:
    if missing == "error":
        raise MissingPartitionsError(message + ' (pass missing="skip" to load the days present)')
    warnings.warn(message, MissingPartitionsWarning, stacklevel=stacklevel + 2)
