"""tmrl_demo_buffers through materialize, on local and S3 warehouses, with hostile and broken runs."""

from __future__ import annotations

import datetime as dt
import os
import pickle
import shutil
from pathlib import Path

import pytest
from dagster import DagsterInstance, materialize

from replay_assets.definitions import build_resources
from replay_assets.landing.assets import raw_replay_listings
from replay_assets.settings import Settings
from replay_assets.sources.tmrl.assets import tmrl_demo_buffers
from replay_assets.warehouse.sql import connect
from replay_assets_tests.conftest import landing_and_warehouse

RANGE_TAGS = {
    "dagster/asset_partition_range_start": "2025-10-14",
    "dagster/asset_partition_range_end": "2025-10-15",
}


class _Gadget:
    """Would create a marker file when unpickled by plain pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _samples(path: Path) -> int:
    with open(path, "rb") as handle:  # the shared runs are trusted test data
        run = pickle.load(handle)
    return len(run["samples"] if isinstance(run, dict) else run)


def _prepare(landing: Path, tmp_path: Path) -> tuple[Path, dict[str, int]]:
    runs = landing / "tmrl" / "player_runs"
    expected = {p.name: _samples(p) for p in runs.iterdir()}
    marker = tmp_path / "pwned"
    (runs / "20251014_120000_evil0001.pkl").write_bytes(
        pickle.dumps({"format": "tmrl_player_run_v1", "samples": [_Gadget(marker)]})
    )
    good = (runs / "20251014_101500_a1b2c3d4.pkl").read_bytes()
    (runs / "20251015_120000_trunc001.pkl").write_bytes(good[: len(good) // 3])
    # Consumed by the sensor: keeps its day. Quarantined: counted, not decoded again.
    shutil.move(runs / "20251015_090000_c3d4e5f6.pkl", runs / "20251015_090000_c3d4e5f6.pkl.imported")
    expected["20251015_090000_c3d4e5f6.pkl.imported"] = expected.pop("20251015_090000_c3d4e5f6.pkl")
    (runs / "20251015_130000_bad00001.pkl.rejected").write_bytes(b"not even a pickle")
    (runs / "20251015_130000_bad00001.pkl.reason").write_text("refused earlier")
    return marker, expected


@pytest.mark.parametrize("storage", ["local", "s3"])
def test_runs_are_read_safely_and_bad_ones_refused(
    storage: str, shared_landing: Path, tmp_path: Path, request
):
    marker, expected = _prepare(shared_landing, tmp_path)
    landing, warehouse = landing_and_warehouse(storage, shared_landing, tmp_path, request)
    settings = Settings(landing, warehouse, dt.date(2025, 1, 1))
    result = materialize(
        [raw_replay_listings, tmrl_demo_buffers],
        resources=build_resources(settings),
        instance=DagsterInstance.ephemeral(),
        tags=RANGE_TAGS,
    )
    assert result.success
    assert not marker.exists()  # nothing from the hostile pickle ran
    conn = connect(warehouse=warehouse)
    per_file = dict(
        conn.sql(
            "SELECT regexp_extract(source_uri, '[^/]+$'), count(*) FROM tmrl_demo_buffers GROUP BY 1"
        ).fetchall()
    )
    if storage == "s3":  # uploaded now: the legacy run's day is today, outside the range
        expected.pop("legacy_run_0001.pkl")
    assert per_file == expected
    layouts = dict(
        conn.sql("SELECT run_id, any_value(obs_layout) FROM tmrl_demo_buffers GROUP BY 1").fetchall()
    )
    assert layouts["20251014_101500_a1b2c3d4"] == "lidar" and layouts["20251015_090000_c3d4e5f6"] == "full"
    failures = {
        Path(uri).name: (cls, reason)
        for uri, cls, reason in conn.sql(
            "SELECT source_uri, error_class, reason FROM tmrl_run_failures"
        ).fetchall()
    }
    assert set(failures) == {"20251014_120000_evil0001.pkl", "20251015_120000_trunc001.pkl"}
    assert failures["20251014_120000_evil0001.pkl"][0] == "UnsafePickleError"
    assert "system" in failures["20251014_120000_evil0001.pkl"][1]
    assert failures["20251015_120000_trunc001.pkl"][0] == "RunFormatError"
    ends = conn.sql(
        "SELECT count(*) FROM tmrl_demo_buffers WHERE run_id = '20251014_101500_a1b2c3d4' AND episode_end"
    ).fetchone()[0]
    assert ends >= 1
