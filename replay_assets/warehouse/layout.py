"""Where a partition lives in the warehouse: the one definition the writer and every reader share.

``<warehouse>/<asset_key>/date=YYYY-MM-DD/part-0.parquet``: hive style, so DuckDB and pyarrow
prune by ``date``. One file per partition, so replacing that file replaces the partition at once.

The partition column lives in the folder name only, never inside the file: a file that also holds
``date`` makes pandas and pyarrow's hive discovery fail (the folder's key is inferred as a string or a
dictionary, the file's column is a date32: "Unable to merge: Field date has incompatible types"), so with
it only in the folder every tool opens the folder. The writer drops the column
(``drop_partition_column``); the project's readers put it back from the folder
(``with_partition_column``, ``logical_schema``), as a non-null date32 first column, so assets and loaders
see the rows and schema they always did. Files written before this rule still hold a ``date`` column:
the readers drop it and take the folder's day, so old and new partitions read the same.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
from upath import UPath

from replay_assets.settings import s3_storage_options

PARTITION_COLUMN = "date"
PART_FILE_NAME = "part-0.parquet"
UNPARTITIONED_DIR = "all"
_PARTITION_DIR = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
# The partition column as the project's readers give it back: what every asset schema declares first.
PARTITION_FIELD = pa.field(PARTITION_COLUMN, pa.date32(), nullable=False)


def warehouse_root(uri: str) -> UPath:
    """The warehouse root for a local path or an ``s3://bucket/prefix`` URI."""
    uri = uri.rstrip("/")
    return UPath(uri, **s3_storage_options()) if uri.startswith("s3://") else UPath(uri)


def asset_root(warehouse: UPath, asset_key: str) -> UPath:
    return warehouse / asset_key


def partition_dir(warehouse: UPath, asset_key: str, partition_key: str | None) -> UPath:
    name = f"{PARTITION_COLUMN}={partition_key}" if partition_key else UNPARTITIONED_DIR
    return asset_root(warehouse, asset_key) / name


def partition_file(warehouse: UPath, asset_key: str, partition_key: str | None) -> UPath:
    return partition_dir(warehouse, asset_key, partition_key) / PART_FILE_NAME


def partition_key_of(dir_name: str) -> str | None:
    """The date of a ``date=YYYY-MM-DD`` folder name, or None for anything else."""
    match = _PARTITION_DIR.match(dir_name)
    return match.group(1) if match else None


def asset_glob(warehouse_uri: str, asset_key: str) -> str:
    """A glob over every partition file of an asset, for DuckDB's ``read_parquet``."""
    return f"{warehouse_uri.rstrip('/')}/{asset_key}/{PARTITION_COLUMN}=*/*.parquet"


def is_local(path: UPath) -> bool:
    return path.protocol in ("", "file", "local")


# ---------------------------------------------------------------------------------------------------------
# The partition column: in the folder name, not in the file


class PartitionColumnMismatchError(ValueError):
    """Rows handed to a partition's writer carry another ``date`` than the partition's own day."""


def drop_partition_column(
    schema: pa.Schema, batches: Iterable[pa.RecordBatch], partition_key: str
) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """The schema and batches to write into the ``date=<partition_key>`` folder: without ``date``.

    Zero-copy (the other columns' buffers are passed on untouched), so the file is as deterministic as
    before. The folder name becomes the only record of the day, so every row's ``date`` is checked
    against it (lazily, batch by batch, as the writer pulls): a mismatch raises instead of being lost.
    Data without a ``date`` column passes through unchanged.
    """
    if PARTITION_COLUMN not in schema.names:
        return schema, iter(batches)
    day = pa.scalar(dt.date.fromisoformat(partition_key), pa.date32())
    kept = schema.remove(schema.get_field_index(PARTITION_COLUMN))
    return kept, _dropped(batches, day, partition_key)


def _dropped(
    batches: Iterable[pa.RecordBatch], day: pa.Scalar, partition_key: str
) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        if PARTITION_COLUMN not in batch.schema.names:
            yield batch
            continue
        column = batch.column(PARTITION_COLUMN)
        if batch.num_rows and not pc.all(pc.equal(column.cast(pa.date32()), day)).as_py():
            bad = pc.unique(column).to_pylist()
            raise PartitionColumnMismatchError(
                f"rows of {PARTITION_COLUMN} {sorted(map(str, bad))} handed to partition {partition_key}: "
                f"a partition's rows must all have its day ({PARTITION_COLUMN} is stored in the folder name)"
            )
        yield batch.drop_columns([PARTITION_COLUMN])


def logical_schema(physical: pa.Schema) -> pa.Schema:
    """A partition file's schema as the project's readers return it: ``date`` (non-null date32) first.

    A file written before the column moved to the folder still holds ``date``: it is replaced, not
    repeated."""
    if PARTITION_COLUMN in physical.names:
        physical = physical.remove(physical.get_field_index(PARTITION_COLUMN))
    return physical.insert(0, PARTITION_FIELD)


def with_partition_column(table: pa.Table, partition_key: str | dt.date) -> pa.Table:
    """A table read from a partition file with its ``date`` put back: the folder's day on every row,
    first column, non-null date32 (an in-file ``date`` of an old file is dropped: the folder wins)."""
    day = partition_key if isinstance(partition_key, dt.date) else dt.date.fromisoformat(partition_key)
    if PARTITION_COLUMN in table.column_names:
        table = table.drop_columns([PARTITION_COLUMN])
    column = pa.repeat(pa.scalar(day, pa.date32()), table.num_rows)
    return table.add_column(0, PARTITION_FIELD, pa.chunked_array([column], pa.date32()))


def partition_expression(day: dt.date) -> pc.Expression:
    """What every row of the ``date=<day>`` folder satisfies: pyarrow fills the column from it (and prunes
    the folder with it) when a dataset fragment is given it."""
    return pc.field(PARTITION_COLUMN) == pa.scalar(day, pa.date32())
