"""Streaming, atomic Parquet writes and reads on any fsspec location (a local folder or S3).

No Dagster here: the IO manager, the CLI and the benchmarks all write through these functions.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from replay_assets.errors import ReplayAssetsError
from replay_assets.util.atomic_file import publish, written_beside
from replay_assets.warehouse.layout import decode_maps, drop_partition_column, encode_maps, is_local

TableLike = pa.Table | pa.RecordBatchReader | Iterable[pa.RecordBatch]


# A row group is flushed when the buffered batches reach either limit: memory stays bounded by the
# row group, not by the partition, and the chunking depends only on the input, so output is stable.
ROW_GROUP_ROWS = 1024 * 1024
ROW_GROUP_BYTES = 64 * 1024 * 1024

# A schema field may tune how its Parquet leaves are written, in its metadata (inherited by the fields
# nested in it): ``parquet_compression`` picks the codec (default snappy), ``parquet_dictionary: false``
# turns dictionary encoding off. TMRL's image frames take zstd: each sample repeats three of the previous
# sample's four frames, which zstd finds (4x smaller) and snappy does not. SC2 frames repeat every unit
# frame after frame: zstd finds that too, and positions compress better plain than as dictionary codes.
COMPRESSION_METADATA_KEY = b"parquet_compression"
DICTIONARY_METADATA_KEY = b"parquet_dictionary"
DEFAULT_COMPRESSION = "snappy"


def writer_options(schema: pa.Schema) -> dict[str, Any]:
    """``ParquetWriter`` keyword arguments for ``schema``: codec and dictionary per leaf, from field
    metadata, and statistics only for leaves outside lists (min/max of list elements prune nothing, and
    computing them was ~10% of writing SC2 frames)."""
    leaves = pq.ParquetFile(_empty_parquet(schema)).schema
    settings = list(_leaf_metadata(schema))  # the same depth-first order as the Parquet leaves
    paths = [leaves.column(i).path for i in range(len(leaves))]
    compression = {
        path: meta.get(COMPRESSION_METADATA_KEY, DEFAULT_COMPRESSION.encode()).decode()
        for path, meta in zip(paths, settings, strict=True)
    }
    return {
        "compression": compression if len(set(compression.values())) > 1 else DEFAULT_COMPRESSION,
        "use_dictionary": [
            path
            for path, meta in zip(paths, settings, strict=True)
            if meta.get(DICTIONARY_METADATA_KEY, b"true") != b"false"
        ],
        "write_statistics": [
            path for i, path in enumerate(paths) if leaves.column(i).max_repetition_level == 0
        ],
    }


def _leaf_metadata(
    fields: Iterable[pa.Field], inherited: dict[bytes, bytes] | None = None
) -> Iterator[dict[bytes, bytes]]:
    """Each leaf's metadata, merged down from its ancestors, depth first."""
    for field in fields:
        meta = {**(inherited or {}), **(field.metadata or {})}
        type_ = field.type
        if pa.types.is_struct(type_):
            yield from _leaf_metadata(list(type_), meta)
        elif pa.types.is_map(type_):
            yield from _leaf_metadata([type_.key_field, type_.item_field], meta)
        elif pa.types.is_list(type_) or pa.types.is_large_list(type_) or pa.types.is_fixed_size_list(type_):
            yield from _leaf_metadata([type_.value_field], meta)
        else:
            yield meta


def _empty_parquet(schema: pa.Schema) -> pa.BufferReader:
    sink = pa.BufferOutputStream()
    pq.write_table(schema.empty_table(), sink)
    return pa.BufferReader(sink.getvalue())


@dataclass(frozen=True)
class WriteResult:
    uri: str
    row_count: int
    schema: pa.Schema
    size_bytes: int


class WarehouseWriteError(ReplayAssetsError):
    """Writing a partition failed; the previous version of that partition is untouched."""


class EmptyStreamError(ValueError):
    """An iterator of batches produced nothing, so there is no schema to write."""


def _as_batches(data: TableLike) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    if isinstance(data, pa.Table):
        return data.schema, iter(data.to_batches())
    if isinstance(data, pa.RecordBatchReader):
        return data.schema, iter(data)
    batches = iter(data)
    first = next(batches, None)
    if first is None:
        raise EmptyStreamError("no record batches and no schema: yield a pyarrow.RecordBatchReader instead")
    return first.schema, _chain(first, batches)


def _chain(first: pa.RecordBatch, rest: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    yield first
    yield from rest


# Batches decoded ahead of the writer, in a background thread: decoding (mostly Python) overlaps the
# Parquet encoding and compression (C++, without the GIL). Bounded, so memory stays bounded too.
PREFETCH_BATCHES = 4
_DONE = object()


def _prefetched(batches: Iterator[pa.RecordBatch], depth: int) -> Iterator[pa.RecordBatch]:
    """``batches`` in order, produced by a helper thread at most ``depth`` ahead; its errors re-raise here.

    Closing the iterator early (the writer failed) stops the producer at its next batch."""
    slots: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for batch in batches:
                if stop.is_set():
                    return
                slots.put(batch)
            slots.put(_DONE)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            slots.put(exc)

    worker = threading.Thread(target=produce, name="parquet-prefetch", daemon=True)
    worker.start()
    try:
        while (item := slots.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue, then let it finish
            with contextlib.suppress(queue.Empty):
                slots.get(timeout=0.05)
        worker.join()


def _write_stream(
    sink: BinaryIO, schema: pa.Schema, batches: Iterator[pa.RecordBatch], group_rows: int
) -> int:
    """Write batches as row groups of exactly ``group_rows`` rows (the last may be shorter); return the
    row count. Rows beyond a full group carry over to the next, so batch sizes never leave tiny groups;
    a group is cut early only when its buffered bytes reach ``ROW_GROUP_BYTES``. Batches are only
    joined when a group is full, so many small batches cost no per-batch copying."""
    rows = 0
    pending: list[pa.RecordBatch] = []
    pending_rows = pending_bytes = 0
    with pq.ParquetWriter(sink, schema, **writer_options(schema)) as writer:
        for batch in _prefetched(batches, PREFETCH_BATCHES):
            if batch.schema != schema:
                batch = pa.Table.from_batches([batch]).cast(schema).to_batches()[0]
            rows += batch.num_rows
            pending.append(batch)
            pending_rows += batch.num_rows
            pending_bytes += batch.nbytes
            if pending_rows < group_rows and pending_bytes < ROW_GROUP_BYTES:
                continue
            table = pa.Table.from_batches(pending, schema)
            full = (
                table.num_rows if pending_rows < group_rows else table.num_rows - table.num_rows % group_rows
            )
            writer.write_table(table.slice(0, full), row_group_size=group_rows)
            pending = table.slice(full).to_batches()
            pending_rows = table.num_rows - full
            pending_bytes = sum(b.nbytes for b in pending)
        if pending_rows:
            writer.write_table(pa.Table.from_batches(pending, schema), row_group_size=group_rows)
    return rows


@dataclass(frozen=True)
class StagedPartition:
    """A partition file written completely under a hidden name beside its target, not yet visible.

    Plain data (URIs and counts, no open handle), so the step that wrote it can hand it on: the IO
    manager commits it, and only then does the new version replace the old one for every reader.
    """

    target_uri: str
    staged_uri: str
    row_count: int
    schema: pa.Schema
    size_bytes: int


def _hidden_beside(path: UPath) -> UPath:
    return path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"


@contextlib.contextmanager
def _object_sink(path: UPath) -> Iterator[BinaryIO]:
    """An object-store upload that becomes visible only when it completes, aborted on error."""
    sink = path.fs.open(path.path, "wb")
    try:
        yield sink
    except BaseException:
        sink.discard()  # abort the multipart upload: nothing becomes visible
        sink.closed = True  # and keep fsspec's finalizer from trying to commit the discarded buffer
        raise
    sink.close()


def _streamed(
    path: UPath, data: TableLike, row_group_rows: int | None, partition_key: str | None, staged: bool
) -> tuple[UPath, WriteResult]:
    """Write ``data`` as ``path``'s Parquet: under a hidden name beside it when ``staged``, and locally
    always (a local file is written beside its target, fsynced, then renamed); return where it went.
    With a ``partition_key``, the partition column stays out of the file (it lives in the folder name);
    map columns are stored as key/value lists (``layout.encode_maps``)."""
    schema, batches = _as_batches(data)
    if partition_key is not None:
        schema, batches = drop_partition_column(schema, batches, partition_key)
    schema, batches = encode_maps(schema, batches)
    group_rows = row_group_rows or ROW_GROUP_ROWS
    if is_local(path):
        with written_beside(path.path) as (sink, tmp):
            rows = _write_stream(sink, schema, batches, group_rows)
        written = UPath(tmp)
    else:
        written = _hidden_beside(path) if staged else path
        with _object_sink(written) as sink:
            rows = _write_stream(sink, schema, batches, group_rows)
    return written, WriteResult(str(path), rows, schema, written.stat().st_size)


def _write_error(path: UPath, exc: Exception) -> WarehouseWriteError:
    return WarehouseWriteError(
        f"writing {path} failed ({type(exc).__name__}: {exc}); "
        "the previous version of this partition, if any, is unchanged"
    )


def _staged_path(staged: StagedPartition, path: UPath) -> UPath:
    return path.parent / staged.staged_uri.rsplit("/", 1)[-1]


def stage_parquet(
    path: UPath, data: TableLike, row_group_rows: int | None = None, partition_key: str | None = None
) -> StagedPartition:
    """Stream ``data`` into a hidden file beside ``path``; ``commit_staged`` makes it ``path``."""
    try:
        written, result = _streamed(path, data, row_group_rows, partition_key, staged=True)
    except Exception as exc:
        raise _write_error(path, exc) from exc
    return StagedPartition(str(path), str(written), result.row_count, result.schema, result.size_bytes)


def commit_staged(staged: StagedPartition, path: UPath) -> WriteResult:
    """Make a staged file the partition at ``path`` (its ``target_uri``): an atomic rename locally, a
    server-side copy then delete on S3. Until then every reader sees the previous version."""
    if str(path) != staged.target_uri:
        raise ValueError(f"{staged.staged_uri} was staged for {staged.target_uri}, not {path}")
    source = _staged_path(staged, path)
    try:
        if is_local(path):
            publish(source.path, path.path)
        else:
            path.fs.mv(source.path, path.path)
    except Exception as exc:
        raise _write_error(path, exc) from exc
    return WriteResult(str(path), staged.row_count, staged.schema, staged.size_bytes)


def discard_staged(staged: StagedPartition, path: UPath) -> None:
    """Remove a staged file that will not be committed (best effort: a leftover is hidden anyway)."""
    with contextlib.suppress(OSError):
        _staged_path(staged, path).unlink()


def write_parquet(
    path: UPath, data: TableLike, row_group_rows: int | None = None, partition_key: str | None = None
) -> WriteResult:
    """Stream ``data`` into one Parquet file at ``path``, replacing any old file atomically.

    Local: a hidden temporary file beside the target, then ``os.replace`` (atomic on POSIX). Object
    stores: a PUT or multipart upload only becomes visible when it completes, so it is written in place
    and aborted on error instead of being committed half-way.
    ``row_group_rows`` (default ``ROW_GROUP_ROWS``): smaller groups let a reader fetch one episode
    without decoding a million rows; larger ones compress and scan better. ``partition_key``: the file is
    the ``date=<partition_key>`` partition, so its ``date`` column is left out (it lives in the folder
    name; see ``layout.drop_partition_column``) and ``WriteResult.schema`` is the file's schema.
    """
    try:
        written, result = _streamed(path, data, row_group_rows, partition_key, staged=False)
        if is_local(path):
            publish(written.path, path.path)
    except Exception as exc:
        raise _write_error(path, exc) from exc
    return result


def read_parquet(path: UPath, columns: list[str] | None = None) -> pa.Table:
    """One file as written: map columns as maps again (``date`` stays in the folder name)."""
    with path.open("rb") as source:
        return decode_maps(pq.read_table(source, columns=columns))
