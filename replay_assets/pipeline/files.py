"""What every source asset does with the day's files: pick them from the listing, read them whole,
verify them against the listing, and turn any per-file error into a failure row."""

import datetime as dt
import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from dagster import AssetExecutionContext, AssetOut, Output

from replay_assets.errors import ReplayAssetsError
from replay_assets.landing.backends import LandingBackend
from replay_assets.landing.listing import OK
from replay_assets.pipeline.schema import REPLAY_FAILURES
from replay_assets.warehouse.parquet import PartitionStream

MAX_REPORTED_FAILURES = 20


class ReplayFileChanged(ReplayAssetsError):
    """The file's bytes no longer match the sha256 recorded by raw_replay_listings."""


def listed_files(listings: pa.Table, source: str) -> list[dict[str, Any]]:
    """The readable files of one source in a day's listing, in path order."""
    rows = [r for r in listings.to_pylist() if r["source"] == source and r["status"] == OK]
    return sorted(rows, key=lambda r: r["relative_path"])


def read_listed_file(backend: LandingBackend, row: dict[str, Any]) -> bytes:
    """The file's bytes, checked against the listing so a sample always traces to the listed file."""
    with backend.open(row["relative_path"]) as handle:
        data = handle.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != row["sha256"]:
        raise ReplayFileChanged(
            f"{row['uri']}: changed since it was listed (sha256 {digest[:12]}..., listed "
            f"{row['sha256'][:12]}...); re-materialize raw_replay_listings first"
        )
    return data


@dataclass
class FailureLog:
    """Failures of one partition, in the order they happened."""

    day: dt.date
    source: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, row: dict[str, Any], exc: BaseException) -> None:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        if row["uri"] not in reason:
            reason = f"{row['uri']}: {reason}"
        self.rows.append(
            {
                "date": self.day,
                "source": self.source,
                "source_uri": row["uri"],
                "source_sha256": row.get("sha256"),
                "error_class": type(exc).__name__,
                "reason": reason,
            }
        )

    def table(self) -> pa.Table:
        return pa.Table.from_pylist(self.rows, schema=REPLAY_FAILURES)

    def summary(self) -> list[str]:
        return [r["reason"] for r in self.rows[:MAX_REPORTED_FAILURES]]


def files_stream(
    backend: LandingBackend,
    files: list[dict[str, Any]],
    schema: pa.Schema,
    decode: Callable[[bytes, dict[str, Any]], Iterable[pa.RecordBatch]],
    failures: FailureLog,
) -> PartitionStream:
    """Each listed file's batches, in the given order; a file that fails adds a failure, not a gap.

    A file's batches are buffered until it has decoded completely, so a file that breaks half-way
    leaves no partial rows behind; memory stays bounded by the largest single file.
    """
    counts = {"files": len(files), "files_used": 0, "rows": 0}

    def batches() -> Iterator[pa.RecordBatch]:
        for row in files:
            try:
                decoded = list(decode(read_listed_file(backend, row), row))
            except (ReplayAssetsError, OSError) as exc:
                failures.add(row, exc)
                continue
            counts["files_used"] += 1
            counts["rows"] += sum(b.num_rows for b in decoded)
            yield from decoded

    def report() -> dict[str, Any]:
        # Plain JSON values: a range run merges the days' reports.
        return {**counts, "files_failed": len(failures.rows), "failures": failures.summary()}

    return PartitionStream(pa.RecordBatchReader.from_batches(schema, batches()), report)


def source_outputs(
    context: AssetExecutionContext,
    streams: dict[str, PartitionStream],
    failures: dict[str, FailureLog],
    rows_output: str,
    failures_output: str,
) -> Iterator[Output]:
    """The outputs of a source multi-asset (its rows and its failures table), for whichever of the two
    the run selected. A range run yields one mapping from partition key to data per output."""

    def value(per_key: dict[str, Any]) -> Any:
        return per_key if len(per_key) > 1 else next(iter(per_key.values()))

    selected = context.op_execution_context.selected_output_names
    if rows_output in selected:
        yield Output(value(streams), output_name=rows_output)
    else:  # only the failures were asked for: decode to find them, keep nothing
        for stream in streams.values():
            stream.batches.read_all()
    if failures_output in selected:
        tables = {key: log.table() for key, log in failures.items()}
        count = sum(t.num_rows for t in tables.values())
        yield Output(value(tables), output_name=failures_output, metadata={"failed_files": count})


def source_outs(
    rows_output: str,
    failures_output: str,
    group: str,
    failures_description: str,
    rows_metadata: dict[str, Any] | None = None,
) -> dict[str, AssetOut]:
    """The two outputs of a source multi-asset: its rows and its failures table, each optional so either
    can be materialized alone. ``rows_metadata``: definition metadata of the rows (e.g. row group size)."""

    def out(description: str | None = None, metadata: dict[str, Any] | None = None) -> AssetOut:
        return AssetOut(
            io_manager_key="warehouse_io_manager",
            kinds={"parquet"},
            group_name=group,
            is_required=False,
            description=description,
            metadata=metadata,
        )

    return {rows_output: out(metadata=rows_metadata), failures_output: out(failures_description)}
