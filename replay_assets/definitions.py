"""The code location: the one place that wires assets, resources, jobs and schedules together."""

from __future__ import annotations

from dagster import Definitions
from dagster_aws.s3 import S3Resource

from replay_assets.automation.schedules import daily_replay_job, daily_replay_schedule
from replay_assets.landing.assets import raw_replay_listings
from replay_assets.pipeline.resources import ReplayStore, WarehouseDuckDB
from replay_assets.settings import AwsSettings, Settings
from replay_assets.sources.metta.assets import metta_action_samples
from replay_assets.sources.sc2.assets import Sc2Engine, sc2_ground_truth_frames, sc2_replay_metadata
from replay_assets.sources.tmrl.assets import tmrl_demo_buffers
from replay_assets.sources.tmrl.sensor import player_runs_sensor
from replay_assets.sources.townlet.assets import townlet_episode_steps, townlet_recordings_index
from replay_assets.warehouse.io_manager import PartitionedParquetIOManager, Warehouse

ASSETS = [
    raw_replay_listings,
    metta_action_samples,
    sc2_replay_metadata,
    sc2_ground_truth_frames,
    townlet_recordings_index,
    townlet_episode_steps,
    tmrl_demo_buffers,
]


def build_resources(settings: Settings, aws: AwsSettings | None = None) -> dict[str, object]:
    """The same resource keys everywhere; only the settings (local folder or S3) differ.

    ``aws`` defaults to the AWS variables as they are now (``AwsSettings.from_env()``).
    """
    # S3 endpoint and credentials come from the standard AWS variables through boto3 and s3fs, so a
    # local S3 server and AWS differ only in the environment.
    aws = AwsSettings.from_env() if aws is None else aws
    s3 = S3Resource(region_name=aws.region)
    return {
        "s3": s3,
        "replay_store": ReplayStore(landing_uri=settings.landing_uri, s3=s3),
        "warehouse_io_manager": PartitionedParquetIOManager(warehouse_uri=settings.warehouse_uri),
        "warehouse_sql": WarehouseDuckDB(warehouse_uri=settings.warehouse_uri),
        "warehouse": Warehouse(warehouse_uri=settings.warehouse_uri),
        "sc2_engine": Sc2Engine(sc2path=settings.sc2path),  # only backend=engine/auto uses it
    }


def build_definitions(settings: Settings) -> Definitions:
    return Definitions(
        assets=ASSETS,
        jobs=[daily_replay_job],
        schedules=[daily_replay_schedule],
        sensors=[player_runs_sensor],
        resources=build_resources(settings),
    )


defs = build_definitions(Settings.from_env())
