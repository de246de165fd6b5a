"""townlet_recordings_index and townlet_episode_steps through materialize, on local and S3 warehouses."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sqlite3
from pathlib import Path

import lz4.frame
import msgpack
import pytest
from dagster import DagsterInstance, materialize

from replay_assets.definitions import build_resources
from replay_assets.landing.assets import raw_replay_listings
from replay_assets.settings import Settings
from replay_assets.sources.townlet.assets import townlet_episode_steps, townlet_recordings_index
from replay_assets.warehouse.sql import connect
from replay_assets_tests.conftest import landing_and_warehouse

FIRST, LAST = "2025-10-14", "2025-10-16"
RANGE_TAGS = {"dagster/asset_partition_range_start": FIRST, "dagster/asset_partition_range_end": LAST}
CHECKPOINT = "checkpoints_level2_5"
INDEX_COLUMNS = (
    "episode_id, file_path, timestamp, survival_steps, total_reward, extrinsic_reward, intrinsic_reward, "
    "curriculum_stage, epsilon, intrinsic_weight, recording_reason, file_size_bytes, compressed_size_bytes"
)


def _materialize(landing: str, warehouse: str):
    settings = Settings(landing_uri=landing, warehouse_uri=warehouse, partitions_start=dt.date(2025, 1, 1))
    return materialize(
        [raw_replay_listings, townlet_recordings_index, townlet_episode_steps],
        resources=build_resources(settings),
        instance=DagsterInstance.ephemeral(),
        tags=RANGE_TAGS,
    )


def _index_db(landing: Path) -> Path:
    return landing / "townlet" / CHECKPOINT / "demo_level2_5.db"


def _sqlite_rows(landing: Path) -> list[tuple]:
    db = sqlite3.connect(f"file:{_index_db(landing)}?mode=ro&immutable=1", uri=True)
    return db.execute(f"SELECT {INDEX_COLUMNS} FROM episode_recordings ORDER BY episode_id").fetchall()


@pytest.mark.parametrize("storage", ["local", "s3"])
def test_index_and_steps_match_the_sqlite_index_and_files(
    storage: str, shared_landing: Path, tmp_path: Path, request
) -> None:
    landing, warehouse = landing_and_warehouse(storage, shared_landing, tmp_path, request)
    result = _materialize(landing, warehouse)
    assert result.success
    conn = connect(warehouse=warehouse)
    rows = conn.sql(f"SELECT {INDEX_COLUMNS} FROM townlet_recordings_index ORDER BY episode_id").fetchall()
    assert rows == _sqlite_rows(shared_landing)
    assert conn.sql(
        "SELECT bool_and(valid), bool_and(file_exists) FROM townlet_recordings_index"
    ).fetchone() == (
        True,
        True,
    )
    compression = dict(conn.sql("SELECT episode_id, compression FROM townlet_recordings_index").fetchall())
    assert compression[140] == compression[141] == "none" and compression[100] == "lz4"
    sizes = conn.sql(
        "SELECT count(*) FROM townlet_recordings_index WHERE actual_compressed_size != compressed_size_bytes "
        "OR actual_uncompressed_size != file_size_bytes"
    ).fetchone()[0]
    assert sizes == 0

    per_episode = dict(
        conn.sql("SELECT episode_id, count(*) FROM townlet_episode_steps GROUP BY 1").fetchall()
    )
    recorded = dict(conn.sql("SELECT episode_id, steps_recorded FROM townlet_recordings_index").fetchall())
    assert per_episode == recorded
    first = conn.sql(
        "SELECT step, x, y, action, reward, done FROM townlet_episode_steps "
        "WHERE episode_id = 100 ORDER BY step"
    ).fetchall()
    raw = msgpack.unpackb(
        lz4.frame.decompress(
            (shared_landing / "townlet" / CHECKPOINT / "recordings/episode_000100.msgpack.lz4").read_bytes()
        )
    )
    assert len(first) == len(raw["steps"])
    for got, step in zip(first, raw["steps"], strict=True):
        assert got == (step["step"], *step["position"][:2], step["action"], step["reward"], step["done"])
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks["index_sizes_match_files"] and checks["no_duplicate_episode_ids"]


def test_orphans_missing_and_corrupt_files_are_invalid_rows(shared_landing: Path, tmp_path: Path) -> None:
    recordings = shared_landing / "townlet" / CHECKPOINT / "recordings"
    (recordings / "episode_000100.msgpack.lz4").unlink()
    orphan = recordings / "episode_000999.msgpack.lz4"
    shutil.copyfile(recordings / "episode_000005.msgpack.lz4", orphan)
    noon = dt.datetime(2025, 10, 15, 12, tzinfo=dt.UTC).timestamp()
    os.utime(orphan, (noon, noon))  # no index row: its day is its modification time
    corrupt = recordings / "episode_000010.msgpack.lz4"
    corrupt.write_bytes(corrupt.read_bytes()[:200])
    warehouse = str(tmp_path / "warehouse")
    result = _materialize(str(shared_landing), warehouse)
    assert result.success
    conn = connect(warehouse=warehouse)
    invalid = {
        Path(uri).name: (exists, reason)
        for uri, exists, reason in conn.sql(
            "SELECT source_uri, file_exists, invalid_reason FROM townlet_recordings_index WHERE NOT valid"
        ).fetchall()
    }
    assert set(invalid) == {
        "episode_000100.msgpack.lz4",
        "episode_000010.msgpack.lz4",
        "episode_000999.msgpack.lz4",
    }
    assert invalid["episode_000100.msgpack.lz4"][0] is False
    assert "missing file" in invalid["episode_000100.msgpack.lz4"][1]
    assert invalid["episode_000010.msgpack.lz4"][0] is True
    assert "undecodable" in invalid["episode_000010.msgpack.lz4"][1]
    assert "unindexed" in invalid["episode_000999.msgpack.lz4"][1]
    stepped = {e for (e,) in conn.sql("SELECT DISTINCT episode_id FROM townlet_episode_steps").fetchall()}
    assert 100 not in stepped and 10 not in stepped and len(stepped) == 30  # the orphan is not stepped either
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks["index_sizes_match_files"] is False  # the truncated file is smaller than the index says


def _insert_row(episode_id: int) -> str:
    path = f"recordings/episode_{episode_id:06d}.msgpack.lz4"
    # 1760500000 is 2025-10-15 03:46 UTC.
    return (
        f"INSERT INTO episode_recordings VALUES ({episode_id}, '{path}', 1760500000.0, 1, 1.0, 1.0, 0.0, 1, "
        "0.5, 0.1, 'periodic', 10, 10)"
    )


def test_index_being_written_by_another_connection(shared_landing: Path, tmp_path: Path) -> None:
    """A live producer holds an open write transaction: the asset neither blocks nor sees its rows."""
    db = sqlite3.connect(_index_db(shared_landing), timeout=0.1)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(_insert_row(500))
    db.commit()  # committed into the WAL, not checkpointed: must be seen
    db.execute("BEGIN IMMEDIATE")
    db.execute(_insert_row(501))  # uncommitted: must not be seen
    try:
        warehouse = str(tmp_path / "warehouse")
        settings = Settings(str(shared_landing), warehouse, dt.date(2025, 1, 1))
        result = materialize(
            [raw_replay_listings, townlet_recordings_index],
            resources=build_resources(settings),
            instance=DagsterInstance.ephemeral(),
            partition_key="2025-10-15",
        )
        assert result.success
        ids = {
            e
            for (e,) in connect(warehouse=warehouse)
            .sql("SELECT episode_id FROM townlet_recordings_index")
            .fetchall()
        }
        assert 500 in ids and 501 not in ids
    finally:
        db.rollback()
        db.close()
