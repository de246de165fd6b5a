"""``tmrl_demo_buffers``: every TMRL player run of the day, one row per sample, unpickled safely.

Thin by design: ``sources/tmrl/read.py`` refuses any pickle that names a global outside numpy's own and
validates the run; this module picks the day's run files from the listing and streams them in.
Files the online-injection sensor already consumed (``.pkl.imported``) keep their day, so
re-materializing a day never loses a run; files it quarantined (``.pkl.rejected`` and their
``.reason``) are counted, not decoded again.
"""

import datetime as dt
from typing import Any

import pyarrow as pa
from dagster import AssetExecutionContext, AssetIn, AssetKey

from replay_assets.pipeline.daily import daily_multi_asset
from replay_assets.pipeline.files import (
    FailureLog,
    files_stream,
    listed_files,
    source_outputs,
    source_outs,
)
from replay_assets.pipeline.resources import ReplayStore
from replay_assets.sources.tmrl.read import TMRL_DEMO_BUFFERS, RunSource, run_batches

BUFFERS = "tmrl_demo_buffers"
FAILURES = "tmrl_run_failures"
QUARANTINED_SUFFIXES = (".rejected", ".reason")


def _day_stream(backend: Any, day: dt.date, listing: pa.Table, failures: FailureLog):
    files = [
        r for r in listed_files(listing, "tmrl") if not r["relative_path"].endswith(QUARANTINED_SUFFIXES)
    ]

    def decode(data: bytes, row: dict[str, Any]):
        file_name = row["relative_path"].rsplit("/", 1)[-1]
        return run_batches(data, RunSource(day, row["uri"], row["sha256"], file_name))

    return files_stream(backend, files, TMRL_DEMO_BUFFERS, decode, failures)


@daily_multi_asset(
    outs=source_outs(
        BUFFERS,
        FAILURES,
        "tmrl",
        "Player runs of the day that were refused (unsafe pickle, bad schema) and why.",
    ),
    ins={"raw_replay_listings": AssetIn(key=AssetKey("raw_replay_listings"))},
    name="tmrl_demo_buffers_assets",
)
def tmrl_demo_buffers(
    context: AssetExecutionContext, raw_replay_listings: dict[str, pa.Table], replay_store: ReplayStore
):
    """One row per sample of every TMRL player run of the day (lidar and full layouts, legacy bare lists):
    action, observation components as typed columns, reward, flags, info, episode boundaries, lineage."""
    keys = list(context.partition_keys)
    backend = replay_store.backend()
    failures = {key: FailureLog(dt.date.fromisoformat(key), "tmrl") for key in keys}
    streams = {
        key: _day_stream(backend, failures[key].day, raw_replay_listings[key], failures[key]) for key in keys
    }
    yield from source_outputs(context, streams, failures, BUFFERS, FAILURES)
    for log in failures.values():
        for reason in log.summary():
            context.log.warning(f"{BUFFERS}: refused {reason}")
