"""A demo warehouse: the project's own demo landing zone, every asset materialized for two days, once."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from dagster import DagsterInstance, RunConfig

from replay_assets.automation.backfill import RANGE_END_TAG, RANGE_START_TAG
from replay_assets.definitions import build_definitions
from replay_assets.landing.sample import write_sample_landing_zone
from replay_assets.settings import Settings
from replay_assets.sources.sc2.assets import Sc2FramesConfig

DEMO_DAYS = (dt.date(2025, 10, 14), dt.date(2025, 10, 15))
# One unreadable file per file-by-file source on the last day, so every failures table has rows too.
DAMAGED_FILES = {
    f"metta/arena/{DEMO_DAYS[-1]}/damaged.json.gz": b"\x1f\x8b\x08\x00 truncated gzip",
    f"sc2/{DEMO_DAYS[-1]}/damaged.SC2Replay": b"MPQ\x1b" + bytes(60),
    f"tmrl/player_runs/{DEMO_DAYS[-1]:%Y%m%d}_120000_damaged.pkl": b"\x80\x04\x95 not a pickle",
}


@pytest.fixture(scope="session")
def demo_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What ``replay-assets demo --days 2`` leaves in ``./data/warehouse`` with ``DAMAGED_FILES`` landed
    beside the demo data, built in-process in one run."""
    root = tmp_path_factory.mktemp("demo")
    landing, warehouse = root / "landing", root / "warehouse"
    write_sample_landing_zone(landing, days=len(DEMO_DAYS), end_date=DEMO_DAYS[-1], seed=0)
    for name, content in DAMAGED_FILES.items():
        (landing / name).write_bytes(content)
    defs = build_definitions(Settings(str(landing), str(warehouse), dt.date(2025, 1, 1)))
    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(
        # Frames of invalid replays too: the damaged one becomes an `sc2_replay_failures` row.
        run_config=RunConfig(ops={"sc2_ground_truth_frames_assets": Sc2FramesConfig(only_valid=False)}),
        instance=DagsterInstance.ephemeral(),
        tags={RANGE_START_TAG: DEMO_DAYS[0].isoformat(), RANGE_END_TAG: DEMO_DAYS[-1].isoformat()},
        raise_on_error=True,
    )
    assert result.success
    return warehouse
