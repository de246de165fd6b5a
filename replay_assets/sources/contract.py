"""The one contract between a source's reader and the pipeline that runs readers over a day.

A source declares, once, a ``SourceReader``: its landing folder, its Arrow schema, its typed run config
(a frozen dataclass whose fields become the asset's Dagster run config) and ``read``, a plain function of
one file's bytes, its ``Lineage`` and that config, returning record batches of the schema. A bad file
raises ``FileFormatError`` naming the file and the reason; the pipeline records anything a reader raises
as that file's failure and goes on with the day.

No Dagster here (spawned workers import readers), and nothing in a ``Lineage`` or a config is a local path
or an open handle: per-file work can run in any process on any machine.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Generic, TypeVar

import pyarrow as pa

__all__ = ["Lineage", "NoConfig", "SourceReader"]

C = TypeVar("C")


@dataclass(frozen=True)
class Lineage:
    """Where one raw file came from, the same for every source: copied into its rows as lineage."""

    day: dt.date  # the partition the file belongs to (from the landing listing)
    uri: str  # as the landing zone names it: a local path or s3://bucket/key
    sha256: str  # of the bytes the reader got (checked against the listing)
    relative_path: str  # below the landing root, e.g. "metta/arena/2025-01-02/<uuid>.json.z"

    @property
    def file_name(self) -> str:
        return PurePosixPath(self.relative_path).name

    @classmethod
    def of_bytes(cls, data: bytes, day: dt.date, uri: str, relative_path: str | None = None) -> Lineage:
        """The lineage of bytes read outside a listing (tests, benchmarks, users calling a reader)."""
        path = relative_path if relative_path is not None else PurePosixPath(uri.split("://")[-1]).name
        return cls(day, uri, hashlib.sha256(data).hexdigest(), path)


@dataclass(frozen=True)
class NoConfig:
    """The run config of a reader that has no settings."""


def by_relative_path(lineage: Lineage) -> Any:
    return lineage.relative_path


def every_file(lineage: Lineage) -> bool:
    return True


@dataclass(frozen=True)
class SourceReader(Generic[C]):
    """A source's declaration: which listed files are its own, in which order, and how one is read.

    ``read`` must be a top-level function of a Dagster-free module (it may run in a spawned worker).
    ``order`` sorts the day's files, so a partition's rows come out in a stable order.
    ``content_key``: files of one day that share it are one content; the second is refused, naming the
    first (Metta: two files with the same episode id).
    ``failure_row``: for a table with a row for every file (SC2 metadata: ``valid=false`` with the
    reasons), the row a failed file gets instead of a line in a ``*_failures`` table.
    """

    source: str
    schema: pa.Schema
    read: Callable[[bytes, Lineage, C], Iterable[pa.RecordBatch]]
    config: type[C] = NoConfig  # type: ignore[assignment]
    accepts: Callable[[Lineage], bool] = every_file
    order: Callable[[Lineage], Any] = by_relative_path
    content_key: Callable[[Lineage], str] | None = None
    failure_row: Callable[[Lineage, str], dict[str, Any]] | None = None
