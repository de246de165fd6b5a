"""raw_replay_listings on landing zones built from ../shared/data, local and on a local S3 server."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import re
import sqlite3
from pathlib import Path

from dagster import DagsterInstance, materialize

from replay_assets.definitions import build_resources
from replay_assets.landing.assets import raw_replay_listings
from replay_assets.landing.backends import LocalLanding
from replay_assets.landing.listing import listing_batches, plan_listing
from replay_assets.settings import Settings
from replay_assets.warehouse.sql import connect
from replay_assets_tests.conftest import LEGACY_TMRL_MTIME, METTA_DAY, SC2_DAY, upload_tree

FIRST, LAST = "2025-10-13", "2025-10-16"
RANGE_TAGS = {"dagster/asset_partition_range_start": FIRST, "dagster/asset_partition_range_end": LAST}
CHECKPOINT = "townlet/checkpoints_level2_5"


def _expected_day(landing: Path, rel: str, townlet_days: dict[str, dt.date], s3: bool) -> dt.date:
    if rel.startswith("metta/"):
        return METTA_DAY
    if rel.startswith("sc2/"):
        return SC2_DAY
    if rel.startswith("townlet/"):
        return townlet_days[rel]
    if match := re.match(r"tmrl/player_runs/(\d{8})_", rel):
        return dt.datetime.strptime(match.group(1), "%Y%m%d").date()
    # Without a date in its name or path, a file's day is its modification time (S3: upload time).
    return dt.datetime.now(dt.UTC).date() if s3 else LEGACY_TMRL_MTIME.date()


def _townlet_days(landing: Path) -> dict[str, dt.date]:
    db = sqlite3.connect(f"file:{landing / CHECKPOINT / 'demo_level2_5.db'}?mode=ro&immutable=1", uri=True)
    rows = db.execute("SELECT file_path, timestamp FROM episode_recordings").fetchall()
    return {f"{CHECKPOINT}/{p}": dt.datetime.fromtimestamp(t, dt.UTC).date() for p, t in rows}


def _expected_rows(landing: Path, s3: bool) -> dict[str, tuple[dt.date, int, str]]:
    townlet_days = _townlet_days(landing)
    expected = {}
    for path in landing.rglob("*"):
        rel = path.relative_to(landing).as_posix()
        if path.is_file() and not rel.endswith((".db", ".db-wal", ".db-shm")):
            day = _expected_day(landing, rel, townlet_days, s3)
            if FIRST <= day.isoformat() <= LAST:
                expected[rel] = (day, path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest())
    return expected


def _materialize(landing_uri: str, warehouse_uri: str, **kwargs):
    settings = Settings(
        landing_uri=landing_uri, warehouse_uri=warehouse_uri, partitions_start=dt.date(2025, 1, 1)
    )
    return materialize(
        [raw_replay_listings],
        resources=build_resources(settings),
        instance=DagsterInstance.ephemeral(),
        **kwargs,
    )


def _rows(warehouse_uri: str) -> list[dict]:
    conn = connect(warehouse=warehouse_uri)
    table = conn.sql("SELECT * FROM raw_replay_listings ORDER BY date, source, relative_path").arrow()
    return table.read_all().to_pylist() if hasattr(table, "read_all") else table.to_pylist()


def _check_against_files(rows: list[dict], landing: Path, s3: bool) -> None:
    expected = _expected_rows(landing, s3)
    assert {r["relative_path"]: (r["date"], r["size_bytes"], r["sha256"]) for r in rows} == expected
    assert len(rows) == len(expected)
    assert {r["status"] for r in rows} == {"ok"}
    formats = {r["relative_path"].split("/")[-1]: r["format"] for r in rows}
    assert formats["dinky7.json.gz"] == "gzip_json"
    assert formats["early_cvc.json"] == "json"
    assert formats["pens.json.z"] == "zlib_json"
    assert formats["replay_01.SC2Replay"] == "mpq"
    assert formats["episode_000100.msgpack.lz4"] == "lz4_frame"
    assert formats["episode_000140.msgpack.lz4"] == "msgpack"  # written with compression: none
    assert formats["20251014_101500_a1b2c3d4.pkl"] == "pickle"
    by_rule = {
        r["source"]: r["day_rule"]
        for r in rows
        if not r["relative_path"].startswith("tmrl/player_runs/legacy")
    }
    assert by_rule == {
        "metta": "path_date",
        "sc2": "path_date",
        "townlet": "producer_timestamp",
        "tmrl": "file_name_date",
    }
    townlet = [r for r in rows if r["source"] == "townlet"]
    assert len(townlet) == 32 and all(r["episode_id"] is not None and r["index_uri"] for r in townlet)


def test_listing_range_on_local_warehouse(shared_landing: Path, tmp_path: Path) -> None:
    warehouse = str(tmp_path / "warehouse")
    result = _materialize(str(shared_landing), warehouse, tags=RANGE_TAGS)
    assert result.success
    rows = _rows(warehouse)
    _check_against_files(rows, shared_landing, s3=False)
    assert any(
        r["relative_path"] == "tmrl/player_runs/legacy_run_0001.pkl" and r["day_rule"] == "modified_time"
        for r in rows
    )
    mats = result.asset_materializations_for_node("raw_replay_listings")
    assert sorted(m.partition for m in mats) == ["2025-10-13", "2025-10-14", "2025-10-15", "2025-10-16"]
    metadata = mats[0].metadata
    assert metadata["dagster/row_count"].value == len(rows)
    assert metadata["rows_metta"].value == 9 and metadata["rows_sc2"].value == 11
    assert metadata["rows_townlet"].value == 32 and metadata["rows_tmrl"].value == 4
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {"all_files_readable": True, "townlet_index_and_files_agree": True}


def test_listing_on_s3_landing_and_warehouse(shared_landing: Path, s3_bucket: str) -> None:
    upload_tree(shared_landing, s3_bucket, "landing")
    warehouse = f"s3://{s3_bucket}/warehouse"
    assert _materialize(f"s3://{s3_bucket}/landing", warehouse, tags=RANGE_TAGS).success
    rows = _rows(warehouse)
    _check_against_files(rows, shared_landing, s3=True)
    assert all(r["uri"].startswith(f"s3://{s3_bucket}/landing/") for r in rows)


def test_rematerializing_a_day_is_byte_identical(shared_landing: Path, tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse"
    part = warehouse / "raw_replay_listings" / "date=2025-10-14" / "part-0.parquet"
    assert _materialize(str(shared_landing), str(warehouse), partition_key="2025-10-14").success
    first = part.read_bytes()
    assert _materialize(str(shared_landing), str(warehouse), partition_key="2025-10-14").success
    assert part.read_bytes() == first


def test_mismatches_and_unreadable_files_are_rows_not_gaps(shared_landing: Path, tmp_path: Path) -> None:
    recordings = shared_landing / CHECKPOINT / "recordings"
    (recordings / "episode_000100.msgpack.lz4").unlink()  # the index still names it
    orphan = recordings / "episode_999999.msgpack.lz4"
    orphan.write_bytes((recordings / "episode_000005.msgpack.lz4").read_bytes())
    os.utime(orphan, (dt.datetime(2025, 10, 15, 8, tzinfo=dt.UTC).timestamp(),) * 2)
    os.symlink(tmp_path / "gone.json.z", shared_landing / "metta" / METTA_DAY.isoformat() / "broken.json.z")
    (shared_landing / "notes.txt").write_text("not a replay")

    warehouse = str(tmp_path / "warehouse")
    result = _materialize(str(shared_landing), warehouse, tags=RANGE_TAGS, raise_on_error=False)
    assert result.success  # the day is written; the checks carry the bad news
    rows = {r["relative_path"]: r for r in _rows(warehouse)}
    missing = rows[f"{CHECKPOINT}/recordings/episode_000100.msgpack.lz4"]
    assert missing["status"] == "missing_file" and missing["sha256"] is None and missing["episode_id"] == 100
    assert "demo_level2_5.db" in missing["detail"]
    unindexed = rows[f"{CHECKPOINT}/recordings/episode_999999.msgpack.lz4"]
    assert (unindexed["status"], unindexed["date"], unindexed["day_rule"]) == (
        "unindexed",
        SC2_DAY,
        "modified_time",
    )
    broken = rows[f"metta/{METTA_DAY}/broken.json.z"]
    assert broken["status"] == "unreadable" and "broken.json.z" in broken["detail"]
    assert sum(r["status"] == "ok" for r in rows.values()) == 9 + 11 + 31 + 4  # nothing else lost
    checks = {c.check_name: (c.passed, c.severity.value) for c in result.get_asset_check_evaluations()}
    assert checks == {
        "all_files_readable": (False, "ERROR"),
        "townlet_index_and_files_agree": (False, "WARN"),
    }
    ignored = result.asset_materializations_for_node("raw_replay_listings")[0].metadata
    assert ignored["ignored_files_outside_sources"].value == ["notes.txt"]


def test_missing_landing_zone_fails_naming_it(tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse"
    result = _materialize(
        str(tmp_path / "nowhere"), str(warehouse), partition_key="2025-10-14", raise_on_error=False
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert f"landing zone {tmp_path / 'nowhere'} does not exist" in str(failure.event_specific_data.error)
    assert not warehouse.exists()


class CountingLanding(LocalLanding):
    def __init__(self, root: Path):
        super().__init__(root)
        self.opened: list[str] = []

    @contextlib.contextmanager
    def open(self, relative_path: str):
        self.opened.append(relative_path)
        with super().open(relative_path) as handle:
            yield handle


def test_listing_one_day_reads_only_that_days_files(shared_landing: Path) -> None:
    backend = CountingLanding(shared_landing)
    plan = plan_listing(backend)
    assert backend.opened == []  # planning reads names, sizes, times and the Townlet index only
    rows = [row for batch in listing_batches(backend, plan.entries(SC2_DAY)) for row in batch.to_pylist()]
    assert sorted(backend.opened) == sorted(r["relative_path"] for r in rows)
    assert {r["date"] for r in rows} == {SC2_DAY}
    assert not any(p.startswith("metta/") for p in backend.opened)
