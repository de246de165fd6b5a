"""``raw_replay_listings``: one row per raw replay file of a day, the input of every other asset."""

import datetime as dt
from collections import Counter
from collections.abc import Iterator

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    Failure,
    MetadataValue,
    Output,
)

from replay_assets.landing.backends import LandingReadError, LandingUnavailableError, LandingZoneError
from replay_assets.landing.days import SOURCES
from replay_assets.landing.listing import OK, ListingPlan, listing_reader, plan_listing
from replay_assets.pipeline.daily import daily_asset
from replay_assets.pipeline.resources import ReplayStore, WarehouseDuckDB

ASSET = "raw_replay_listings"
ALL_FILES_READABLE = "all_files_readable"
INDEX_AND_FILES_AGREE = "townlet_index_and_files_agree"
MAX_LISTED_PATHS = 20


def _listing_metadata(plan: ListingPlan, days: list[dt.date]) -> dict[str, object]:
    per_source = Counter(e.source for day in days for e in plan.by_day.get(day, []))
    metadata: dict[str, object] = {f"rows_{source}": per_source.get(source, 0) for source in SOURCES}
    metadata["rows_per_source"] = MetadataValue.json(dict(sorted(per_source.items())))
    if plan.ignored:
        metadata["ignored_files_outside_sources"] = MetadataValue.json(plan.ignored[:MAX_LISTED_PATHS])
    return metadata


def _status_counts(warehouse_sql: WarehouseDuckDB, first: str, last: str) -> dict[str, int]:
    with warehouse_sql.get_connection() as conn:
        rows = conn.execute(
            f"SELECT status, count(*) FROM {ASSET} WHERE date BETWEEN ?::DATE AND ?::DATE GROUP BY status",
            [first, last],
        ).fetchall()
    return {status: count for status, count in rows}


@daily_asset(
    name=ASSET,
    group_name="landing",
    check_specs=[
        AssetCheckSpec(ALL_FILES_READABLE, asset=ASSET, description="Every listed file could be read."),
        AssetCheckSpec(
            INDEX_AND_FILES_AGREE,
            asset=ASSET,
            description="Every Townlet index row has its file and every recording file has its row.",
        ),
    ],
)
def raw_replay_listings(
    context: AssetExecutionContext, replay_store: ReplayStore, warehouse_sql: WarehouseDuckDB
) -> Iterator[object]:
    """Every raw replay of the day: source, URI, size, time, sha256 and container format.

    A file's day is the producer's timestamp where cheap (Townlet index, TMRL run id), else a
    ``YYYY-MM-DD`` folder in its path, else its modification time (UTC). Files that cannot be read and
    Townlet index/file mismatches are kept as rows with a ``status`` and a ``detail``, never dropped.
    """
    keys = list(context.partition_keys)
    backend = replay_store.backend()
    try:
        plan = plan_listing(backend)
    except (LandingZoneError, LandingReadError, LandingUnavailableError) as exc:
        raise Failure(description=str(exc)) from None
    days = [dt.date.fromisoformat(key) for key in keys]
    readers = {key: listing_reader(backend, plan.entries(day)) for key, day in zip(keys, days, strict=True)}
    yield Output(readers if len(keys) > 1 else readers[keys[0]], metadata=_listing_metadata(plan, days))

    statuses = _status_counts(warehouse_sql, keys[0], keys[-1])
    unreadable = statuses.get("unreadable", 0) + statuses.get("unrecognized", 0)
    yield AssetCheckResult(
        check_name=ALL_FILES_READABLE,
        passed=unreadable == 0,
        severity=AssetCheckSeverity.ERROR,
        metadata={"unreadable_or_unrecognized": unreadable, "status_counts": MetadataValue.json(statuses)},
    )
    mismatched = statuses.get("missing_file", 0) + statuses.get("unindexed", 0)
    yield AssetCheckResult(
        check_name=INDEX_AND_FILES_AGREE,
        passed=mismatched == 0,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "missing_files": statuses.get("missing_file", 0),
            "unindexed_files": statuses.get("unindexed", 0),
        },
    )
    if set(statuses) - {OK}:
        context.log.warning(f"{ASSET} {keys[0]}..{keys[-1]}: rows by status {statuses}")
