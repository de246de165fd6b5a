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

Map columns are stored as lists of ``{key, value}`` structs, Parquet's own layout for a map seen as a
list, marked with ``replay_assets:logical_type=map`` in the field's metadata: Hugging Face ``datasets`` has
no feature type for an Arrow map and refuses a folder holding one, while every tool reads the list. The
project's readers turn the lists back into maps (``decode_maps``), so assets and loaders see maps as before.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator
from typing import TypeVar

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


def scan_schema(physical: pa.Schema) -> pa.Schema:
    """The schema to scan partition files with: ``date`` (non-null date32, from the folder) first, the
    stored columns after it, maps as key/value lists (``decode_maps`` turns the rows read back).

    Files written before these rules are scanned with it too: an in-file ``date`` is replaced, not
    repeated, and a column stored as a Parquet map is cast to the list it is stored as now."""
    if PARTITION_COLUMN in physical.names:
        physical = physical.remove(physical.get_field_index(PARTITION_COLUMN))
    for i, field in enumerate(physical):
        if pa.types.is_map(field.type):
            physical = physical.set(i, _entries_field(field))
    return physical.insert(0, PARTITION_FIELD)


def logical_schema(physical: pa.Schema) -> pa.Schema:
    """A partition file's schema as the project's readers return it: ``date`` first, maps as maps."""
    return decoded_schema(scan_schema(physical))


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


# ---------------------------------------------------------------------------------------------------------
# Map columns: stored as lists of key/value structs


LOGICAL_TYPE_KEY = b"replay_assets:logical_type"
_MAP = b"map"
_Data = TypeVar("_Data", pa.Table, pa.RecordBatch)


def _entries_field(field: pa.Field) -> pa.Field:
    """A top-level map field as its stored list of ``{key, value}`` structs, marked as a map."""
    kind: pa.MapType = field.type
    entry = pa.struct([kind.key_field.with_name("key"), kind.item_field.with_name("value")])
    return pa.field(
        field.name, pa.list_(entry), field.nullable, {**(field.metadata or {}), LOGICAL_TYPE_KEY: _MAP}
    )


def _is_encoded_map(field: pa.Field) -> bool:
    return (field.metadata or {}).get(LOGICAL_TYPE_KEY) == _MAP and pa.types.is_list(field.type)


def _map_field(field: pa.Field) -> pa.Field:
    entry = field.type.value_type
    metadata = {k: v for k, v in (field.metadata or {}).items() if k != LOGICAL_TYPE_KEY}
    kind = pa.map_(entry.field("key"), entry.field("value"))
    return pa.field(field.name, kind, field.nullable, metadata or None)


def encode_maps(
    schema: pa.Schema, batches: Iterable[pa.RecordBatch]
) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """The schema and batches to store: each top-level map column as its list of key/value structs
    (a cast that reuses the key and value buffers). Data without a map passes through unchanged."""
    maps = [i for i, f in enumerate(schema) if pa.types.is_map(f.type)]
    if not maps:
        return schema, iter(batches)
    stored = schema
    for i in maps:
        stored = stored.set(i, _entries_field(schema.field(i)))
    return stored, _encoded(batches, stored, maps)


def _encoded(
    batches: Iterable[pa.RecordBatch], stored: pa.Schema, maps: list[int]
) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        columns = list(batch.columns)
        for i in maps:
            columns[i] = columns[i].cast(stored.field(i).type)
        yield pa.RecordBatch.from_arrays(columns, schema=stored)


def decoded_schema(stored: pa.Schema) -> pa.Schema:
    """A stored schema with its encoded map columns as the maps they stand for."""
    for i, field in enumerate(stored):
        if _is_encoded_map(field):
            stored = stored.set(i, _map_field(field))
    return stored


def _as_map(column: pa.Array | pa.ChunkedArray, kind: pa.MapType) -> pa.Array | pa.ChunkedArray:
    if isinstance(column, pa.ChunkedArray):
        return pa.chunked_array([_as_map(chunk, kind) for chunk in column.chunks], kind)
    entries, offsets = column.values, column.offsets
    mask = column.is_null() if column.null_count else None
    if mask is not None and offsets.offset:  # a slice's offsets: Arrow takes a null mask only with fresh ones
        offsets = pa.concat_arrays([offsets])
    return pa.MapArray.from_arrays(offsets, entries.field(0), entries.field(1), type=kind, mask=mask)


def decode_maps(data: _Data) -> _Data:
    """Rows read from a partition file with their encoded map columns as maps again; zero-copy."""
    schema = decoded_schema(data.schema)
    if schema.equals(data.schema, check_metadata=True):
        return data
    columns = [
        _as_map(column, schema.field(i).type) if _is_encoded_map(data.schema.field(i)) else column
        for i, column in enumerate(data.columns)
    ]
    return type(data).from_arrays(columns, schema=schema)
