"""The per-file guard: a day's files picked from the listing, read back checked against it, decoded by
the source's reader, and whatever goes wrong with one file recorded as that file's outcome.

Anything a reader raises for one file (any ``Exception``: the project's ``FileFormatError``, an
``OverflowError`` from an out-of-range integer, a ``KeyError`` from a missing field, ``MemoryError``)
becomes that file's failure, with the exception type and message, and the day goes on. Only errors of
the infrastructure (the landing zone unreachable, the warehouse unwritable) propagate and fail the day.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from replay_assets.errors import ReplayAssetsError
from replay_assets.landing.backends import LandingBackend, LandingUnavailableError
from replay_assets.landing.listing import OK
from replay_assets.pipeline.column_ranges import ColumnRanges, check_column_ranges
from replay_assets.sources.contract import Lineage, SourceReader
from replay_assets.util.process_map import decode_in_processes

__all__ = [
    "FileOutcome",
    "ReplayFileChanged",
    "day_lineages",
    "failure_reason",
    "read_files",
    "read_listed_file",
]


class ReplayFileChanged(ReplayAssetsError):
    """The file's bytes no longer match the sha256 recorded by raw_replay_listings."""


def day_lineages(listing: pa.Table, reader: SourceReader[Any]) -> list[Lineage]:
    """The readable files of the reader's source in a day's listing that it accepts, in its order."""
    columns = ["date", "source", "status", "uri", "sha256", "relative_path"]
    lineages = [
        Lineage(r["date"], r["uri"], r["sha256"], r["relative_path"])
        for r in listing.select(columns).to_pylist()
        if r["source"] == reader.source and r["status"] == OK
    ]
    return sorted(
        (lin for lin in lineages if reader.accepts(lin)), key=lambda lin: (reader.order(lin), lin.uri)
    )


def read_listed_file(backend: LandingBackend, lineage: Lineage) -> bytes:
    """The file's bytes, checked against the listing so a row always traces to the listed file."""
    with backend.open(lineage.relative_path) as handle:
        data = handle.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != lineage.sha256:
        raise ReplayFileChanged(
            f"{lineage.uri}: changed since it was listed (sha256 {digest[:12]}..., listed "
            f"{lineage.sha256[:12]}...); re-materialize raw_replay_listings first"
        )
    return data


def failure_reason(lineage: Lineage, exc: BaseException) -> str:
    """One line that names the file and says what went wrong (the exception type when it is not ours)."""
    message = " ".join(str(exc).split())
    if not message or not isinstance(exc, ReplayAssetsError):
        message = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return message if lineage.uri in message else f"{lineage.uri}: {message}"


@dataclass(frozen=True)
class FileOutcome:
    """What one file gave: its batches, or the exception that stopped it (never both)."""

    lineage: Lineage
    batches: list[pa.RecordBatch] | None = None
    error: BaseException | None = None
    label: str | None = None  # how it was produced, when a source has several ways (SC2: the backend)

    @property
    def failed(self) -> bool:
        return self.error is not None


# One file for a worker: its bytes (or the exception reading them raised), its lineage, the reader config.
_Job = tuple[bytes | BaseException, Lineage, Any]


def _decode(
    read: Callable[[bytes, Lineage, Any], Iterable[pa.RecordBatch]], ranges: ColumnRanges, job: _Job
) -> list[pa.RecordBatch]:
    """All of one file's batches, checked against ``column_ranges``: a file that breaks half-way leaves no
    partial rows behind. A file that could not even be read arrives as its exception, so its outcome
    keeps its place in the order."""
    data, lineage, config = job
    if isinstance(data, BaseException):
        raise data
    batches = list(read(data, lineage, config))
    check_column_ranges(lineage.uri, batches, ranges)
    return batches


def read_files(
    backend: LandingBackend,
    reader: SourceReader[Any],
    lineages: Iterable[Lineage],
    config: Any,
    parallel: int = 1,
    column_ranges: ColumnRanges | None = None,
) -> Iterator[FileOutcome]:
    """Each file's outcome, in the given order. ``parallel`` > 1 decodes in worker processes (the reader
    must then be a top-level function of a module without Dagster); reading stays in this process.
    ``column_ranges`` (validated against the reader's schema): a file with a value outside is a failure.
    Memory is bounded by the files in flight, never by the day."""
    owner_of_key: dict[str, Lineage] = {}  # content key -> the file that holds it (in flight or read)

    def jobs() -> Iterator[_Job]:
        for lineage in lineages:
            key = reader.content_key(lineage) if reader.content_key is not None else None
            if key is not None and key in owner_of_key:
                yield _duplicate(lineage, key, owner_of_key[key]), lineage, config
                continue
            try:
                data: bytes | BaseException = read_listed_file(backend, lineage)
            except LandingUnavailableError:
                raise
            except Exception as exc:
                data = exc
            if key is not None and not isinstance(data, BaseException):
                owner_of_key[key] = lineage
            yield data, lineage, config

    decode = functools.partial(_decode, reader.read, dict(column_ranges or {}))
    for (_, lineage, _), result in decode_in_processes(decode, jobs(), parallel):
        if isinstance(result, BaseException):
            key = reader.content_key(lineage) if reader.content_key is not None else None
            if key is not None and owner_of_key.get(key) == lineage:  # a failed file holds no key
                del owner_of_key[key]
            yield FileOutcome(lineage, error=result)
        else:
            yield FileOutcome(lineage, batches=result)


def _duplicate(lineage: Lineage, key: str, owner: Lineage) -> ReplayAssetsError:
    return ReplayAssetsError(f"{lineage.uri}: {key} already used by {owner.uri}")
