"""Every asset, every day: yesterday's partition at 01:00 UTC."""

import datetime as dt

from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    RunRequest,
    ScheduleEvaluationContext,
    define_asset_job,
    schedule,
)

# Partitioned by day like every asset it selects: Dagster infers the job's partitions from them
# (passing partitions_def= is deprecated in 1.13 for that reason).
daily_replay_job = define_asset_job(
    "daily_replay_assets",
    selection=AssetSelection.all(),
    description="Materialize one day of every replay asset.",
)


@schedule(
    name="daily_replay_assets_schedule",
    job=daily_replay_job,
    cron_schedule="0 1 * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
)
def daily_replay_schedule(context: ScheduleEvaluationContext) -> RunRequest:
    """Yesterday's partition, named explicitly: right whether or not today is a partition too."""
    day = (context.scheduled_execution_time.astimezone(dt.UTC) - dt.timedelta(days=1)).date().isoformat()
    return RunRequest(run_key=day, partition_key=day)
