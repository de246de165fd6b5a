"""The code location as Dagster sees it: assets, partitions, policies, schedule, instance config."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import yaml
from dagster import (
    DagsterInstance,
    DailyPartitionsDefinition,
    DefaultScheduleStatus,
    Definitions,
    build_schedule_context,
)
from dagster._core.definitions.backfill_policy import BackfillPolicyType

from replay_assets.definitions import defs
from replay_assets.partitions import DAILY
from replay_assets_tests.conftest import REPO_ROOT

EXPECTED_ASSETS = {
    "raw_replay_listings",
    "metta_action_samples",
    "metta_replay_failures",
    "sc2_replay_metadata",
    "sc2_ground_truth_frames",
    "sc2_replay_failures",
    "townlet_recordings_index",
    "townlet_episode_steps",
    "tmrl_demo_buffers",
    "tmrl_run_failures",
}


def test_dagster_definitions_validate_cli() -> None:
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            "definitions",
            "validate",
            "-m",
            "replay_assets.definitions",
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_defs_load_and_every_asset_is_daily_with_single_run_backfills() -> None:
    Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert keys == EXPECTED_ASSETS
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        partitions = node.partitions_def
        assert isinstance(partitions, DailyPartitionsDefinition), key
        assert partitions.start.date() == dt.date(2025, 1, 1)
        assert partitions.timezone == "UTC"
        assert node.backfill_policy is not None
        assert node.backfill_policy.policy_type == BackfillPolicyType.SINGLE_RUN, key
    assert set(defs.resources) >= {"s3", "replay_store", "warehouse_io_manager", "warehouse_sql"}


def test_last_partition_is_yesterday_utc() -> None:
    partitions = defs.resolve_asset_graph().get(next(iter(defs.resolve_all_asset_keys()))).partitions_def
    yesterday = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).date().isoformat()
    assert partitions.get_last_partition_key() == yesterday


def test_daily_schedule_requests_yesterday_for_every_asset() -> None:
    schedule = defs.resolve_schedule_def("daily_replay_assets_schedule")
    assert schedule.cron_schedule == "0 1 * * *"
    assert schedule.default_status == DefaultScheduleStatus.RUNNING
    job = defs.resolve_job_def("daily_replay_assets")
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == EXPECTED_ASSETS
    assert job.partitions_def == DAILY  # inferred from the assets it selects
    with DagsterInstance.ephemeral() as instance:
        context = build_schedule_context(
            instance=instance,
            scheduled_execution_time=dt.datetime(2025, 10, 12, 1, 0, tzinfo=dt.UTC),
            repository_def=defs.get_repository_def(),
        )
        requests = schedule.evaluate_tick(context).run_requests
    assert [r.partition_key for r in requests] == ["2025-10-11"]


def test_today_can_be_a_partition_for_same_day_injection() -> None:
    from replay_assets.partitions import daily_partitions

    today = dt.datetime.now(dt.UTC).date().isoformat()
    assert daily_partitions(dt.date(2025, 1, 1), include_today=True).get_last_partition_key() == today
    assert daily_partitions(dt.date(2025, 1, 1)).get_last_partition_key() < today


def test_instance_config_fits_two_cores(tmp_path: Path) -> None:
    config = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").symlink_to(REPO_ROOT / "dagster.yaml")
    old = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        with DagsterInstance.get() as instance:
            queue = instance.get_concurrency_config().run_queue_config
            assert queue.max_concurrent_runs == 2
            limits = {limit["key"]: limit["limit"] for limit in queue.tag_concurrency_limits}
            assert limits == {"dagster/backfill": 1, "dagster/partition": 1}
            assert instance.get_ref().run_storage_data.class_name == "SqliteRunStorage"
            assert (home / "history" / "runs.db").exists()  # SQLite files under DAGSTER_HOME
    finally:
        if old is None:
            del os.environ["DAGSTER_HOME"]
        else:
            os.environ["DAGSTER_HOME"] = old


def test_workspace_loads_the_module() -> None:
    workspace = yaml.safe_load((REPO_ROOT / "workspace.yaml").read_text())
    module = workspace["load_from"][0]["python_module"]
    assert (module["module_name"], module["attribute"]) == ("replay_assets.definitions", "defs")


def test_player_runs_sensor_targets_the_tmrl_assets() -> None:
    sensor = defs.resolve_sensor_def("player_runs_sensor")
    targets = {k.to_user_string() for k in sensor.asset_selection.resolve(defs.resolve_asset_graph())}
    assert targets == {"raw_replay_listings", "tmrl_demo_buffers", "tmrl_run_failures"}
    assert sensor.default_status.value == "STOPPED"  # ONLINE_INJECTION is off unless configured
