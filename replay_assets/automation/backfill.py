"""``replay-assets backfill``: find the days to rebuild and launch one real Dagster backfill.

Replaces the original ``--backfill-all`` loop. The range is found from the landing zone (earliest
landed day up to yesterday) or given; the backfill goes through a running webserver when one is given
(so the daemon runs it and the UI shows it as a backfill), else runs in-process as one
``--partition-range`` run recorded in the ``DAGSTER_HOME`` instance, so it still shows in the UI's history.
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

from dagster import AssetKey, DagsterError, DagsterInstance, Definitions

from replay_assets.errors import ReplayAssetsError
from replay_assets.landing.backends import LandingBackend
from replay_assets.landing.listing import plan_listing
from replay_assets.settings import dagster_home

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"

_LAUNCH_BACKFILL = """
mutation LaunchBackfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
  }
}
"""


class BackfillError(ReplayAssetsError):
    """The backfill could not be planned or launched; the message says why."""


@dataclass(frozen=True)
class DayRange:
    start: dt.date
    end: dt.date

    @property
    def partition_keys(self) -> list[str]:
        days = (self.end - self.start).days + 1
        return [(self.start + dt.timedelta(days=i)).isoformat() for i in range(days)]


def yesterday_utc(now: dt.datetime | None = None) -> dt.date:
    return ((now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC) - dt.timedelta(days=1)).date()


def earliest_landed_day(backend: LandingBackend) -> dt.date:
    days = plan_listing(backend).days
    if not days:
        raise BackfillError(f"nothing has landed in {backend.uri}: no day to backfill")
    return days[0]


def plan_range(
    *,
    first_partition: dt.date,
    start: dt.date | None,
    end: dt.date | None,
    backend: LandingBackend | None = None,
    last_partition: dt.date | None = None,
) -> DayRange:
    """``start`` (or the earliest landed day) to ``end`` (or yesterday), clipped to the partitions."""
    last_partition = last_partition or yesterday_utc()
    if start is None:
        if backend is None:
            raise BackfillError("give --start-date or --all")
        start = earliest_landed_day(backend)
    end = end or last_partition
    start = max(start, first_partition)
    if end > last_partition:
        raise BackfillError(f"--end-date {end} is after the last complete day {last_partition}")
    if start > end:
        raise BackfillError(f"empty range: {start} is after {end}")
    return DayRange(start, end)


def asset_keys(defs: Definitions, select: Sequence[str] | None) -> list[AssetKey]:
    known = {key.to_user_string(): key for key in defs.resolve_all_asset_keys()}
    if not select:
        return sorted(known.values(), key=lambda k: k.to_user_string())
    unknown = [name for name in select if name not in known]
    if unknown:
        raise BackfillError(f"unknown assets {unknown}; known: {sorted(known)}")
    return [known[name] for name in select]


def launch_through_webserver(url: str, keys: Sequence[AssetKey], days: DayRange) -> str:
    """Launch an asset backfill with the webserver's GraphQL API; the daemon runs it."""
    params = {
        "partitionNames": days.partition_keys,
        "assetSelection": [{"path": list(key.path)} for key in keys],
        "fromFailure": False,
        "title": f"replay-assets backfill {days.start}..{days.end}",
    }
    body = json.dumps({"query": _LAUNCH_BACKFILL, "variables": {"params": params}}).encode()
    request = urllib.request.Request(
        f"{url.rstrip('/')}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.load(response)
    except (urllib.error.URLError, TimeoutError) as exc:
        raise BackfillError(f"cannot reach the Dagster webserver at {url}: {exc}") from exc
    if answer.get("errors"):
        raise BackfillError(f"webserver refused the backfill: {answer['errors'][0].get('message')}")
    result = answer["data"]["launchPartitionBackfill"]
    if result["__typename"] != "LaunchBackfillSuccess":
        raise BackfillError(
            f"webserver refused the backfill ({result['__typename']}): {result.get('message')}"
        )
    return result["backfillId"]


def run_in_process(defs: Definitions, keys: Sequence[AssetKey], days: DayRange) -> str:
    """One run over the whole range (the assets' single-run backfill policy), recorded in DAGSTER_HOME."""
    try:
        instance = DagsterInstance.get()
    except DagsterError:  # DAGSTER_HOME unset or not a folder
        raise BackfillError(
            f"DAGSTER_HOME is {dagster_home()!r}: set it to a folder holding dagster.yaml "
            "(the Makefile uses .dagster_home) so the run is kept in the UI history"
        ) from None
    job = defs.resolve_implicit_global_asset_job_def()
    tags = {
        RANGE_START_TAG: days.start.isoformat(),
        RANGE_END_TAG: days.end.isoformat(),
        "replay_assets/launched_by": "replay-assets backfill",
    }
    result = job.execute_in_process(
        instance=instance, tags=tags, asset_selection=list(keys), raise_on_error=False
    )
    if not result.success:
        failures = [event.message for event in result.all_events if event.is_failure]
        raise BackfillError(
            f"run {result.run_id} failed: {failures[-1] if failures else 'see the Dagster UI'}"
        )
    return result.run_id
