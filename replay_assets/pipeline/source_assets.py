"""Daily assets built from a source's reader declaration: the scaffolding every source used to repeat.

``source_assets(READER, rows=..., failures=...)`` is a multi-asset partitioned by UTC day whose body, for
each partition key of the run (one day, or a single-run backfill's range), picks the day's files, runs
the per-file guard, stages the rows in the warehouse and yields, as plain data, the rows (committed by
the IO manager), the failures table, the metadata and the source's checks. Selecting only the failures
decodes the day and keeps nothing.

Run config: the reader's config dataclass, field for field (``run_config_class``), under the op name the
asset has always had (``<rows>_assets`` for a table with failures, the asset's own name otherwise).
"""

import dataclasses
import datetime as dt
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    AssetOut,
    Config,
    MetadataValue,
    Output,
)
from pydantic import Field, create_model

from replay_assets.landing.backends import LandingBackend
from replay_assets.pipeline.column_ranges import column_ranges_field, validated_column_ranges
from replay_assets.pipeline.daily import daily_multi_asset
from replay_assets.pipeline.day import DayResult, mine_day
from replay_assets.pipeline.files import day_lineages, read_files
from replay_assets.sources.contract import Lineage, SourceReader
from replay_assets.warehouse.io_manager import ROW_GROUP_ROWS_METADATA, Warehouse

__all__ = [
    "LISTINGS",
    "DayInputs",
    "merge_reports",
    "parallel_field",
    "reader_config",
    "run_config_class",
    "source_assets",
    "source_outputs",
]

LISTINGS = "raw_replay_listings"


def parallel_field(default: int) -> tuple[type, Any]:
    """A ``parallel`` run-config field (``run_config_class(..., parallel=parallel_field(2))``): files are
    then decoded in that many worker processes."""
    return (int, Field(default=default, ge=1, description="Processes decoding files."))


# Resources every source asset reads with: the landing zone and the warehouse it stages into.
SOURCE_RESOURCES = {"replay_store", "warehouse"}


@dataclasses.dataclass(frozen=True)
class DayInputs:
    """One partition's upstream tables (by input name) and the landing zone, for choosing its files."""

    day: dt.date
    tables: Mapping[str, pa.Table]
    backend: LandingBackend


def run_config_class(name: str, config_type: type, **extra: Any) -> type[Config]:
    """A Dagster ``Config`` with the fields of a reader's config dataclass (types, defaults, and the
    ``description`` in each field's metadata), plus ``column_ranges`` and ``extra`` pipeline fields
    (``name=(type, Field)``)."""
    fields: dict[str, Any] = {"column_ranges": column_ranges_field()}
    types = typing.get_type_hints(config_type)  # resolves string annotations (``from __future__``)
    for f in dataclasses.fields(config_type):
        default = f.default if f.default is not dataclasses.MISSING else ...
        fields[f.name] = (types[f.name], Field(default=default, description=f.metadata.get("description")))
    return create_model(name, __base__=Config, **fields, **extra)


def reader_config(config: Config, config_type: type) -> Any:
    """The reader's own config dataclass from the run config (pipeline-only fields left out)."""
    return config_type(**{f.name: getattr(config, f.name) for f in dataclasses.fields(config_type)})


def merge_reports(reports: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """One partition's report as is; for a range, numeric totals plus every partition's report."""
    if len(reports) <= 1:
        return dict(next(iter(reports.values()), {}))
    numeric = {k for r in reports.values() for k, v in r.items() if isinstance(v, int | float)}
    merged: dict[str, Any] = {k: sum(r.get(k, 0) for r in reports.values()) for k in sorted(numeric)}
    merged["partition_reports"] = MetadataValue.json({k: dict(v) for k, v in reports.items()})
    return merged


def _one_or_mapping(per_key: dict[str, Any]) -> Any:
    return per_key if len(per_key) > 1 else next(iter(per_key.values()))


def source_outputs(
    context: AssetExecutionContext,
    results: dict[str, DayResult],
    rows: str,
    failures: str | None,
    extra_metadata: dict[str, Any] | None = None,
) -> Iterator[Output]:
    """The outputs of a mined range, for whichever the run selected: the staged rows (the IO manager
    commits them) with the merged report, and the failures tables."""
    selected = context.op_execution_context.selected_output_names
    if rows in selected:
        report = merge_reports({key: r.report for key, r in results.items()})
        metadata = {**report, **(extra_metadata or {})}
        yield Output(_one_or_mapping({k: r.staged for k, r in results.items()}), rows, metadata=metadata)
    if failures is not None and failures in selected:
        tables = {key: r.failures for key, r in results.items()}
        count = sum(t.num_rows for t in tables.values())
        yield Output(_one_or_mapping(tables), failures, metadata={"failed_files": count})


def mine_range(
    context: AssetExecutionContext,
    rows: str,
    mine: Callable[[str, Callable[[pa.RecordBatchReader], Any] | None], DayResult],
    row_group_rows: int | None = None,
) -> dict[str, DayResult]:
    """``mine(key, stage)`` for every partition key of the run, staging rows only when they were asked
    for; if one day fails (infrastructure), the days already staged are discarded, never committed."""
    warehouse: Warehouse = context.resources.warehouse
    wanted = rows in context.op_execution_context.selected_output_names
    results: dict[str, DayResult] = {}
    try:
        for key in context.partition_keys:

            def stage(batches: pa.RecordBatchReader, key: str = key) -> Any:
                return warehouse.stage(rows, key, batches, row_group_rows)

            results[key] = mine(key, stage if wanted else None)
    except BaseException:
        for result in results.values():
            if result.staged is not None:
                warehouse.discard(result.staged)
        raise
    return results


def source_assets(
    reader: SourceReader[Any],
    *,
    rows: str,
    group: str,
    description: str,
    failures: str | None = None,
    failures_description: str | None = None,
    ins: Mapping[str, AssetIn] | None = None,
    files: Callable[[DayInputs], Sequence[Lineage]] | None = None,
    check_specs: Sequence[AssetCheckSpec] = (),
    checks: Callable[[AssetExecutionContext, dict[str, DayResult]], Iterator[AssetCheckResult]] | None = None,
    report: Callable[[dict[str, DayResult]], dict[str, Any]] | None = None,
    summary_columns: Sequence[str] = (),
    row_group_rows: int | None = None,
    config_class: type[Config] | None = None,
    required_resource_keys: set[str] | frozenset[str] = frozenset(),
) -> Any:
    """The daily multi-asset of one source: ``rows`` (and ``failures``, each selectable alone).

    ``files``: the day's files in order (default: the source's readable files in the listing).
    ``checks(context, results)``: the source's asset checks, run after the rows are committed.
    ``report(results)``: extra materialization metadata from the days' results (e.g. their summaries).
    ``config_class``: the run config (default: ``run_config_class`` of the reader's config); a field
    ``parallel`` in it decodes files in that many worker processes. ``row_group_rows``: the Parquet
    row-group size of the rows (and the batch size the pipeline re-cuts the stream into).
    """
    ins = dict(ins or {LISTINGS: AssetIn()})
    config_class = config_class or run_config_class(f"{_camel(rows)}Config", reader.config)
    rows_metadata = {ROW_GROUP_ROWS_METADATA: row_group_rows} if row_group_rows else None
    outs = {rows: _out(description, rows_metadata, required=failures is None)}
    if failures is not None:
        outs[failures] = _out(failures_description, None, required=False)

    def choose_files(inputs: DayInputs) -> Sequence[Lineage]:
        return files(inputs) if files is not None else day_lineages(inputs.tables[LISTINGS], reader)

    def compute(context: AssetExecutionContext, config: config_class, **upstream: Any):  # type: ignore[valid-type]
        backend = context.resources.replay_store.backend()
        settings = reader_config(config, reader.config)
        workers = getattr(config, "parallel", 1)
        ranges = validated_column_ranges(reader.schema, getattr(config, "column_ranges", {}))

        def mine(key: str, stage: Any) -> DayResult:
            day = dt.date.fromisoformat(key)
            lineages = choose_files(DayInputs(day, {name: t[key] for name, t in upstream.items()}, backend))
            return mine_day(
                read_files(backend, reader, lineages, settings, workers, ranges),
                day=day,
                source=reader.source,
                schema=reader.schema,
                stage=stage,
                failure_row=reader.failure_row,
                summary_columns=summary_columns,
                batch_rows=row_group_rows,
            )

        results = mine_range(context, rows, mine, row_group_rows)
        extra_metadata = report(results) if report is not None else None
        yield from source_outputs(context, results, rows, failures, extra_metadata)
        for result in results.values():
            for reason in result.reasons[:20]:
                context.log.warning(f"{rows}: could not use {reason}")
        if checks is not None and rows in context.op_execution_context.selected_output_names:
            yield from checks(context, results)

    compute.__name__ = rows
    compute.__doc__ = description
    return daily_multi_asset(
        name=f"{rows}_assets" if failures is not None else rows,
        outs=outs,
        # Typed as dict: the IO manager then hands over one table per partition key, not one concatenated.
        ins={name: AssetIn(key=asset_in.key or name, dagster_type=dict) for name, asset_in in ins.items()},
        check_specs=list(check_specs),
        required_resource_keys=SOURCE_RESOURCES | set(required_resource_keys),
        group_name=group,
        can_subset=failures is not None,
    )(compute)


def _out(description: str | None, metadata: dict[str, Any] | None, required: bool) -> AssetOut:
    return AssetOut(
        io_manager_key="warehouse_io_manager",
        kinds={"parquet"},
        is_required=required,
        description=description,
        metadata=metadata,
    )


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))
