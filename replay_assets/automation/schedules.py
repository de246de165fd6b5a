"""Every asset, every day: yesterday's partition at 01:00 UTC."""

from __future__ import annotations

from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    build_schedule_from_partitioned_job,
    define_asset_job,
)

from replay_assets.partitions import DAILY

daily_replay_job = define_asset_job(
    "daily_replay_assets",
    selection=AssetSelection.all(),
    partitions_def=DAILY,
    description="Materialize one day of every replay asset.",
)

daily_replay_schedule = build_schedule_from_partitioned_job(
    daily_replay_job, hour_of_day=1, minute_of_hour=0, default_status=DefaultScheduleStatus.RUNNING
)
