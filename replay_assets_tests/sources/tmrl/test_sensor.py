"""player_runs_sensor: ordering, cap after dedup, rejection, rename only after the run stored the file."""

from __future__ import annotations

import datetime as dt
import os
import pickle
import time
from pathlib import Path

import pytest
from dagster import DagsterInstance, SensorResult, SkipReason, build_sensor_context, materialize

from replay_assets.definitions import build_resources
from replay_assets.landing.assets import raw_replay_listings
from replay_assets.landing.backends import LocalLanding
from replay_assets.settings import PlayerRunsSettings, Settings
from replay_assets.sources.tmrl.assets import tmrl_demo_buffers
from replay_assets.sources.tmrl.sample import tmrl_player_run_bytes
from replay_assets.sources.tmrl.sensor import InjectionCursor, evaluate_tick
from replay_assets.warehouse.sql import connect
from replay_assets_tests.conftest import upload_tree
from replay_assets_tests.processes import BIN, clean_env, dagster_home, process

RUNS = "tmrl/player_runs"
SETTINGS = PlayerRunsSettings(ONLINE_INJECTION=True, MAX_FILES_PER_UPDATE=2)


def _write_run(landing: Path, hhmmss: str, seed: int) -> Path:
    run_id = f"20251014_{hhmmss}_{seed:08x}"
    recorded = dt.datetime(2025, 10, 14, int(hhmmss[:2]), int(hhmmss[2:4]), tzinfo=dt.UTC)
    path = landing / RUNS / f"{run_id}.pkl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        tmrl_player_run_bytes(run_id=run_id, recorded_at=recorded, layout="lidar", num_samples=20, seed=seed)
    )
    return path


class _Gadget:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _tick(instance: DagsterInstance, landing: Path, cursor: str | None, settings=SETTINGS):
    context = build_sensor_context(instance=instance, cursor=cursor)
    return evaluate_tick(context, LocalLanding(landing), settings)


def test_cap_applies_after_skipping_seen_files_in_name_order(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    paths = [_write_run(landing, f"10{i:02d}00", i) for i in range(5)]
    instance = DagsterInstance.ephemeral()
    first = _tick(instance, landing, None)
    assert isinstance(first, SensorResult)
    assert [r.tags["replay_assets/player_run"] for r in first.run_requests] == [
        f"{RUNS}/{p.name}" for p in paths[:2]
    ]
    assert {r.partition_key for r in first.run_requests} == {"2025-10-14"}
    second = _tick(instance, landing, first.cursor)  # first two still pending: the next two come
    assert [r.tags["replay_assets/player_run"] for r in second.run_requests] == [
        f"{RUNS}/{p.name}" for p in paths[2:4]
    ]
    third = _tick(instance, landing, second.cursor)
    assert len(third.run_requests) == 1
    assert _tick(instance, landing, third.cursor).run_requests == []  # everything seen: nothing again


def test_hostile_and_broken_files_are_rejected_without_blocking(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    marker = tmp_path / "pwned"
    evil = landing / RUNS / "20251014_090000_evil0001.pkl"
    evil.parent.mkdir(parents=True)
    evil.write_bytes(pickle.dumps({"format": "tmrl_player_run_v1", "samples": [_Gadget(marker)]}))
    good = _write_run(landing, "100000", 1)
    result = _tick(DagsterInstance.ephemeral(), landing, None)
    assert not marker.exists()
    assert [r.tags["replay_assets/player_run"] for r in result.run_requests] == [f"{RUNS}/{good.name}"]
    assert not evil.exists()
    assert evil.with_name(evil.name + ".rejected").exists()
    reason = evil.with_name(evil.name + ".reason").read_text()
    assert "UnsafePickleError" in reason and "system" in reason


def test_file_is_renamed_only_after_its_run_succeeded(tmp_path: Path) -> None:
    landing, warehouse = tmp_path / "landing", tmp_path / "warehouse"
    path = _write_run(landing, "100000", 7)
    instance = DagsterInstance.ephemeral()
    result = _tick(instance, landing, None)
    (request,) = result.run_requests
    assert _tick(instance, landing, result.cursor).run_requests == []  # pending: not requested twice
    assert path.exists()  # not consumed before its samples are stored

    broken = build_resources(Settings(str(landing), "/proc/no-warehouse-here", dt.date(2025, 1, 1)))
    failed = materialize(
        [raw_replay_listings, tmrl_demo_buffers],
        partition_key=request.partition_key,
        resources=broken,
        instance=instance,
        tags={"dagster/run_key": request.run_key},
        raise_on_error=False,
    )
    assert not failed.success
    after_failure = _tick(instance, landing, result.cursor)
    assert path.exists() and after_failure.run_requests == []  # the file stays; no silent retry
    assert InjectionCursor.parse(after_failure.cursor).failed == {f"{RUNS}/{path.name}": 1}

    os.utime(path)  # the operator fixed the cause and touched the file
    retry = _tick(instance, landing, after_failure.cursor)
    (retry_request,) = retry.run_requests
    assert retry_request.run_key == request.run_key + ":retry1"
    good = build_resources(Settings(str(landing), str(warehouse), dt.date(2025, 1, 1)))
    stored = materialize(
        [raw_replay_listings, tmrl_demo_buffers],
        partition_key=retry_request.partition_key,
        resources=good,
        instance=instance,
        tags={"dagster/run_key": retry_request.run_key},
    )
    assert stored.success
    _tick(instance, landing, retry.cursor)
    assert not path.exists() and path.with_name(path.name + ".imported").exists()
    # Consumed files stay part of their day: re-materializing the day keeps the run.
    assert materialize(
        [raw_replay_listings, tmrl_demo_buffers],
        partition_key="2025-10-14",
        resources=good,
        instance=instance,
    ).success
    assert connect(warehouse=str(warehouse)).sql("SELECT count(*) FROM tmrl_demo_buffers").fetchone()[0] == 20


def test_missing_source_path_is_logged_and_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "landing").mkdir()
    result = _tick(DagsterInstance.ephemeral(), tmp_path / "landing", None)
    assert isinstance(result, SkipReason)
    assert "does not exist" in result.skip_message


def test_settings_from_a_tmrl_config_json(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(
        '{"PLAYER_RUNS": {"ONLINE_INJECTION": true, "MAX_FILES_PER_UPDATE": 3, "CONSUME_ON_READ": false}}'
    )
    settings = PlayerRunsSettings.from_env(
        {"REPLAY_TMRL_CONFIG": str(config), "REPLAY_PLAYER_RUNS_MAX_FILES_PER_UPDATE": "5"}
    )
    assert (settings.ONLINE_INJECTION, settings.MAX_FILES_PER_UPDATE, settings.CONSUME_ON_READ) == (
        True,
        5,
        False,
    )
    with pytest.raises(ValueError, match="MAX_FILES_PER_UPDATE"):
        PlayerRunsSettings.from_env({"REPLAY_PLAYER_RUNS_MAX_FILES_PER_UPDATE": "many"})


def test_runs_of_today_wait_without_taking_the_cap(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    (landing / RUNS).mkdir(parents=True)
    now = dt.datetime.now(dt.UTC)
    for i in range(3):  # no date in the name: their day is their mtime, today, not a partition yet
        (landing / RUNS / f"0_live_{i}.pkl").write_bytes(
            tmrl_player_run_bytes(
                run_id=f"live{i}", recorded_at=now, layout="lidar", num_samples=5, seed=i, legacy=True
            )
        )
    older = _write_run(landing, "100000", 9)  # sorts after them, must not be blocked by them
    one_at_a_time = PlayerRunsSettings(ONLINE_INJECTION=True, MAX_FILES_PER_UPDATE=1)
    result = _tick(DagsterInstance.ephemeral(), landing, None, one_at_a_time)
    assert [r.tags["replay_assets/player_run"] for r in result.run_requests] == [f"{RUNS}/{older.name}"]


@pytest.mark.slow
def test_daemon_injects_a_dropped_file_end_to_end(tmp_path: Path) -> None:
    """The real dagster-daemon: the sensor sees a dropped run, the run stores it, the file is consumed."""
    landing, warehouse = tmp_path / "landing", tmp_path / "warehouse"
    (landing / RUNS).mkdir(parents=True)
    env = clean_env(
        DAGSTER_HOME=str(dagster_home(tmp_path)),
        REPLAY_LANDING_URI=str(landing),
        REPLAY_WAREHOUSE_URI=str(warehouse),
        REPLAY_PLAYER_RUNS_ONLINE_INJECTION="true",
    )
    log = tmp_path / "daemon.log"
    daemon = [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"]
    with process(daemon, env, log) as proc:
        dropped = _write_run(landing, "100000", 3)  # dropped while the daemon runs
        imported = dropped.with_name(dropped.name + ".imported")
        deadline = time.monotonic() + 240
        while not imported.exists():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(2)
    assert connect(warehouse=str(warehouse)).sql("SELECT count(*) FROM tmrl_demo_buffers").fetchone()[0] == 20


def test_sensor_on_an_s3_landing_zone(tmp_path: Path, s3_bucket: str) -> None:
    """The same tick on S3: listing, reading, the .rejected rename and the .reason file via boto3."""
    import boto3

    from replay_assets.landing.backends import S3Landing

    landing = tmp_path / "landing"
    good = _write_run(landing, "100000", 5)
    evil = landing / RUNS / "20251014_090000_evil0001.pkl"
    evil.write_bytes(pickle.dumps({"format": "tmrl_player_run_v1", "samples": [_Gadget(tmp_path / "pwned")]}))
    upload_tree(landing, s3_bucket, "landing")
    client = boto3.client("s3")
    backend = S3Landing(client, f"s3://{s3_bucket}/landing")
    result = evaluate_tick(build_sensor_context(instance=DagsterInstance.ephemeral()), backend, SETTINGS)
    assert [r.tags["replay_assets/player_run"] for r in result.run_requests] == [f"{RUNS}/{good.name}"]
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket, Prefix="landing/")["Contents"]}
    assert f"landing/{RUNS}/{evil.name}.rejected" in keys and f"landing/{RUNS}/{evil.name}" not in keys
    reason = client.get_object(Bucket=s3_bucket, Key=f"landing/{RUNS}/{evil.name}.reason")["Body"].read()
    assert b"UnsafePickleError" in reason and not (tmp_path / "pwned").exists()
