"""Streaming, atomic Parquet writes and reads on any fsspec location (a local folder or S3).

No Dagster here: the IO manager, the CLI and the benchmarks all write through these functions.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from replay_assets.errors import ReplayAssetsError
from replay_assets.layout import is_local

TableLike = pa.Table | pa.RecordBatchReader | Iterable[pa.RecordBatch]


@dataclass(frozen=True)
class PartitionStream:
    """Batches plus a report that is only complete once every batch has been written.

    A source asset learns which replays failed while its batches stream into the file; the IO
    manager calls ``report()`` after the write and attaches the result to the materialization.
    """

    batches: pa.RecordBatchReader
    report: Callable[[], dict[str, Any]]


# A row group is flushed when the buffered batches reach either limit: memory stays bounded by the
# row group, not by the partition, and the chunking depends only on the input, so output is stable.
ROW_GROUP_ROWS = 1024 * 1024
ROW_GROUP_BYTES = 64 * 1024 * 1024

# A schema field may ask for its own Parquet codec in its metadata (every other column: snappy). TMRL's
# image frames take zstd: each sample repeats three of the previous sample's four frames, which zstd finds
# (4x smaller) and snappy does not, so the write is faster for the bytes it no longer fsyncs.
COMPRESSION_METADATA_KEY = b"parquet_compression"
DEFAULT_COMPRESSION = "snappy"


def column_compression(schema: pa.Schema) -> str | dict[str, str]:
    """The ``compression`` argument for ``schema``: one codec, or one per Parquet leaf column."""
    chosen = {
        f.name: f.metadata[COMPRESSION_METADATA_KEY].decode()
        for f in schema
        if f.metadata and COMPRESSION_METADATA_KEY in f.metadata
    }
    if not chosen:
        return DEFAULT_COMPRESSION
    # Codecs are set per leaf ("units.list.element.tag"); pyarrow names them in the Parquet schema.
    leaves = pq.ParquetFile(_empty_parquet(schema)).schema
    return {
        leaves.column(i).path: chosen.get(leaves.column(i).path.split(".", 1)[0], DEFAULT_COMPRESSION)
        for i in range(len(leaves))
    }


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
    with pq.ParquetWriter(sink, schema, compression=column_compression(schema)) as writer:
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


@contextlib.contextmanager
def _atomic_sink(path: UPath) -> Iterator[BinaryIO]:
    """A file that appears at ``path`` complete or not at all.

    Local: a hidden temporary file beside the target, then ``os.replace`` (atomic on POSIX).
    Object stores: a PUT or multipart upload only becomes visible when it completes, so the upload is
    written in place and aborted on error instead of being committed half-way.
    """
    if is_local(path):
        target = path.path
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "wb") as sink:
                yield sink
                sink.flush()
                os.fsync(sink.fileno())
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
        return
    sink = path.fs.open(path.path, "wb")
    try:
        yield sink
    except BaseException:
        sink.discard()  # abort the multipart upload: nothing becomes visible
        sink.closed = True  # and keep fsspec's finalizer from trying to commit the discarded buffer
        raise
    sink.close()


def write_parquet(path: UPath, data: TableLike, row_group_rows: int | None = None) -> WriteResult:
    """Stream ``data`` into one Parquet file at ``path``, replacing any old file atomically.

    ``row_group_rows`` (default ``ROW_GROUP_ROWS``): smaller groups let a reader fetch one episode
    without decoding a million rows; larger ones compress and scan better.
    """
    try:
        schema, batches = _as_batches(data)
        with _atomic_sink(path) as sink:
            rows = _write_stream(sink, schema, batches, row_group_rows or ROW_GROUP_ROWS)
    except Exception as exc:
        raise WarehouseWriteError(
            f"writing {path} failed ({type(exc).__name__}: {exc}); "
            "the previous version of this partition, if any, is unchanged"
        ) from exc
    return WriteResult(uri=str(path), row_count=rows, schema=schema, size_bytes=path.stat().st_size)


def read_parquet(path: UPath, columns: list[str] | None = None) -> pa.Table:
    with path.open("rb") as source:
        return pq.read_table(source, columns=columns)
