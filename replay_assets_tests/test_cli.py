"""The real command lines: ``dagster asset materialize``, webserver + daemon backfills, ``replay-assets``."""

from __future__ import annotations

import datetime as dt
import os
import pickle
import re
import subprocess
import time
from pathlib import Path

import duckdb
import pytest
from dagster._core.execution.backfill import BulkActionStatus

from replay_assets_tests.conftest import SC2_DAY
from replay_assets_tests.processes import (
    BIN,
    clean_env,
    dagster_home,
    free_port,
    instance_at,
    process,
    wait_for,
)


@pytest.fixture
def dagster_env(shared_landing: Path, tmp_path: Path) -> dict[str, str]:
    return clean_env(
        DAGSTER_HOME=str(dagster_home(tmp_path)),
        REPLAY_LANDING_URI=str(shared_landing),
        REPLAY_WAREHOUSE_URI=str(tmp_path / "warehouse"),
    )


def _run(args: list[str], env: dict[str, str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _listing_rows(warehouse: str) -> list[tuple]:
    conn = duckdb.connect()
    glob = f"{warehouse}/raw_replay_listings/date=*/*.parquet"
    return conn.execute(
        f"SELECT date, source, count(*) FROM read_parquet('{glob}', hive_partitioning=true) "
        "GROUP BY ALL ORDER BY ALL"
    ).fetchall()


@pytest.mark.slow
def test_dagster_asset_materialize_partition_range(dagster_env: dict[str, str], tmp_path: Path) -> None:
    result = _run(
        [
            str(BIN / "dagster"),
            "asset",
            "materialize",
            "-m",
            "replay_assets.definitions",
            "--select",
            "raw_replay_listings",
            "--partition-range",
            "2025-10-14...2025-10-15",
        ],
        dagster_env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert _listing_rows(dagster_env["REPLAY_WAREHOUSE_URI"]) == [
        (dt.date(2025, 10, 14), "metta", 9),
        (dt.date(2025, 10, 14), "tmrl", 2),
        (dt.date(2025, 10, 14), "townlet", 10),
        (SC2_DAY, "sc2", 11),
        (SC2_DAY, "tmrl", 2),
        (SC2_DAY, "townlet", 10),
    ]


@pytest.mark.slow
def test_backfill_through_webserver_runs_on_the_daemon(dagster_env: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    web_log, daemon_log = tmp_path / "webserver.log", tmp_path / "daemon.log"
    webserver = [str(BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)]
    daemon = [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"]
    with process(webserver, dagster_env, web_log) as web, process(daemon, dagster_env, daemon_log):
        wait_for(f"{url}/server_info", web, web_log)
        launched = _run(
            [
                str(BIN / "replay-assets"),
                "backfill",
                "--start-date",
                "2025-10-14",
                "--end-date",
                "2025-10-15",
                "--webserver",
                url,
            ],
            dagster_env,
            cwd=tmp_path,
        )
        assert launched.returncode == 0, launched.stderr
        backfill_id = launched.stdout.split("launched backfill ")[1].split()[0]
        with instance_at(dagster_env["DAGSTER_HOME"]) as instance:
            deadline = time.monotonic() + 240
            while (backfill := instance.get_backfill(backfill_id)).status == BulkActionStatus.REQUESTED:
                assert time.monotonic() < deadline, daemon_log.read_text()[-3000:]
                time.sleep(2)
            assert backfill.status == BulkActionStatus.COMPLETED_SUCCESS, daemon_log.read_text()[-3000:]
            (run,) = instance.get_runs()  # single-run backfill policy: one run for the whole range
            assert run.tags["dagster/backfill"] == backfill_id
    days = {row[0] for row in _listing_rows(dagster_env["REPLAY_WAREHOUSE_URI"])}
    assert days == {dt.date(2025, 10, 14), SC2_DAY}


@pytest.mark.slow
def test_backfill_all_finds_the_range_and_records_one_run(
    dagster_env: dict[str, str], tmp_path: Path
) -> None:
    result = _run(
        [str(BIN / "replay-assets"), "backfill", "--all", "--end-date", "2025-10-16"], dagster_env, tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2025-10-14..2025-10-16" in result.stdout  # earliest landed day found from the landing zone
    with instance_at(dagster_env["DAGSTER_HOME"]) as instance:
        (run,) = instance.get_runs()
        assert run.tags["dagster/asset_partition_range_start"] == "2025-10-14"
        assert run.tags["dagster/asset_partition_range_end"] == "2025-10-16"
    query = _run(
        [
            str(BIN / "replay-assets"),
            "query",
            "--csv",
            "SELECT date, count(*) AS n FROM raw_replay_listings GROUP BY date ORDER BY date",
        ],
        dagster_env,
        tmp_path,
    )
    assert query.returncode == 0, query.stderr
    assert query.stdout.splitlines() == ["date,n", "2025-10-14,21", "2025-10-15,23", "2025-10-16,12"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["query", "SELECT * FROM no_such_table"], "no_such_table"),
        (
            ["backfill", "--start-date", "2025-10-14", "--end-date", "2099-01-01"],
            "after the last complete day",
        ),
        (["backfill"], "give --all or --start-date"),
        (["backfill", "--start-date", "2025-10-14", "--select", "nope"], "unknown assets ['nope']"),
    ],
)
def test_cli_errors_are_one_line(
    dagster_env: dict[str, str], tmp_path: Path, args: list[str], message: str
) -> None:
    result = _run([str(BIN / "replay-assets"), *args], dagster_env, tmp_path)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_backfill_all_on_missing_landing_zone(dagster_env: dict[str, str], tmp_path: Path) -> None:
    env = {**dagster_env, "REPLAY_LANDING_URI": str(tmp_path / "nowhere")}
    result = _run([str(BIN / "replay-assets"), "backfill", "--all"], env, tmp_path)
    assert result.returncode == 1
    assert f"landing zone {tmp_path / 'nowhere'} does not exist" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_demo_command_writes_sample_data_and_materializes_it(tmp_path: Path) -> None:
    """The README's main job, on the embedded defaults (./data under the current folder)."""
    env = clean_env(DAGSTER_HOME=str(dagster_home(tmp_path)))
    result = _run([str(BIN / "replay-assets"), "demo", "--days", "2"], env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    assert f"{yesterday - dt.timedelta(days=1)}..{yesterday}" in result.stdout
    rows = (
        duckdb.connect()
        .execute(
            "SELECT source, count(*) FROM read_parquet(?, hive_partitioning=true) GROUP BY 1 ORDER BY 1",
            [str(tmp_path / "data" / "warehouse" / "raw_replay_listings" / "date=*" / "*.parquet")],
        )
        .fetchall()
    )
    assert dict(rows).keys() == {"metta", "sc2", "townlet", "tmrl"}
    assert "raw_replay_listings" in result.stdout and "2 partitions" in result.stdout
    # Three StarCraft II replays a day, one too short to be valid: frames for the other two.
    assert re.search(r"sc2_replay_metadata\s+2 partitions\s+6 rows", result.stdout), result.stdout
    frames = re.search(r"sc2_ground_truth_frames\s+2 partitions\s+(\d+) rows", result.stdout)
    assert frames and int(frames[1]) > 1000, result.stdout


def test_sample_data_command_is_deterministic(tmp_path: Path) -> None:
    for name in ("a", "b"):
        args = [
            str(BIN / "replay-assets"),
            "sample-data",
            str(tmp_path / name),
            "--days",
            "2",
            "--end-date",
            "2025-03-02",
        ]
        result = _run(args, dict(os.environ), tmp_path)
        assert result.returncode == 0, result.stderr
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) > 10
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files_a)


@pytest.mark.slow
def test_export_tmrl_writes_a_data_pkl_tmrl_can_load(dagster_env: dict[str, str], tmp_path: Path) -> None:
    materialized = _run(
        [str(BIN / "dagster"), "asset", "materialize", "-m", "replay_assets.definitions",
         "--select", "raw_replay_listings,tmrl_demo_buffers,tmrl_run_failures",
         "--partition-range", "2025-10-14...2025-10-15"],
        dagster_env,
        tmp_path,
    )  # fmt: skip
    assert materialized.returncode == 0, materialized.stderr[-3000:]
    out = tmp_path / "data.pkl"
    export = [str(BIN / "replay-assets"), "export-tmrl", "--memory", "lidar", "--out", str(out)]
    dry = _run([*export, "--dry-run"], dagster_env, tmp_path)
    assert dry.returncode == 0 and "dry run" in dry.stdout and not out.exists()
    assert _run(export, dagster_env, tmp_path).returncode == 0
    columns = pickle.loads(out.read_bytes())  # our own output: what tmrl's trainer does with it
    assert len(columns) == 9 and len({len(c) for c in columns}) == 1 and len(columns[0]) > 0
    again = _run(export, dagster_env, tmp_path)
    assert again.returncode == 1 and "Traceback" not in again.stderr  # no silent overwrite
