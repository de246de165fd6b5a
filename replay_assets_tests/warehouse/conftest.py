"""A demo warehouse: the project's own demo landing zone, every asset materialized for two days, once."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from dagster import DagsterInstance

from replay_assets.automation.backfill import RANGE_END_TAG, RANGE_START_TAG
from replay_assets.definitions import build_definitions
from replay_assets.landing.sample import write_sample_landing_zone
from replay_assets.settings import Settings

DEMO_DAYS = (dt.date(2025, 10, 14), dt.date(2025, 10, 15))


@pytest.fixture(scope="session")
def demo_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What ``replay-assets demo --days 2`` leaves in ``./data/warehouse``, built in-process in one run."""
    root = tmp_path_factory.mktemp("demo")
    landing, warehouse = root / "landing", root / "warehouse"
    write_sample_landing_zone(landing, days=len(DEMO_DAYS), end_date=DEMO_DAYS[-1], seed=0)
    defs = build_definitions(Settings(str(landing), str(warehouse), dt.date(2025, 1, 1)))
    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(
        instance=DagsterInstance.ephemeral(),
        tags={RANGE_START_TAG: DEMO_DAYS[0].isoformat(), RANGE_END_TAG: DEMO_DAYS[-1].isoformat()},
        raise_on_error=True,
    )
    assert result.success
    return warehouse
