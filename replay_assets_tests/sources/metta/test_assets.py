"""metta_action_samples through materialize, on a local and an S3 warehouse, with bad replays mixed in."""

from __future__ import annotations

import datetime as dt
import json
import random
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from dagster import DagsterInstance, materialize

from replay_assets.definitions import build_resources
from replay_assets.landing.assets import raw_replay_listings
from replay_assets.settings import Settings
from replay_assets.sources.contract import Lineage
from replay_assets.sources.metta.assets import metta_action_samples
from replay_assets.sources.metta.read import read_metta_samples
from replay_assets.sources.metta.sample import metta_replay_bytes
from replay_assets.warehouse.layout import partition_file, warehouse_root
from replay_assets.warehouse.parquet import read_parquet
from replay_assets.warehouse.sql import connect
from replay_assets_tests.conftest import METTA_DAY, landing_and_warehouse

DAY = METTA_DAY.isoformat()
REAL_REPLAYS = 9


def _settings(landing: str, warehouse: str) -> Settings:
    return Settings(landing_uri=landing, warehouse_uri=warehouse, partitions_start=dt.date(2025, 1, 1))


def _run(landing: str, warehouse: str, config: dict | None = None, **kwargs):
    resources = build_resources(_settings(landing, warehouse))
    instance = DagsterInstance.ephemeral()
    assert materialize(
        [raw_replay_listings], partition_key=DAY, resources=resources, instance=instance
    ).success
    run_config = {"ops": {"metta_action_samples_assets": {"config": config}}} if config else None
    return materialize(
        [metta_action_samples, raw_replay_listings.to_source_asset()],
        partition_key=DAY,
        resources=resources,
        instance=instance,
        run_config=run_config,
        **kwargs,
    )


def _add_bad_replays(landing: Path) -> dict[str, str]:
    folder = landing / "metta" / DAY
    good = (folder / "dinky7.json.z").read_bytes()
    bad = {
        "truncated.json.z": good[: len(good) // 2],
        "unknown_version.json.z": zlib.compress(json.dumps({"version": 7, "objects": []}).encode()),
        "not_json.json": b"{ this is not json",
    }
    for name, data in bad.items():
        (folder / name).write_bytes(data)
    return bad


def _checks(result) -> dict[str, tuple[bool, str]]:
    return {c.check_name: (c.passed, c.severity.value) for c in result.get_asset_check_evaluations()}


@pytest.mark.parametrize("storage", ["local", "s3"])
def test_samples_and_failures_from_real_replays(
    storage: str, shared_landing: Path, tmp_path: Path, request
) -> None:
    bad = _add_bad_replays(shared_landing)
    landing, warehouse = landing_and_warehouse(storage, shared_landing, tmp_path, request)
    result = _run(landing, warehouse)
    assert result.success

    conn = connect(warehouse=warehouse)
    per_file = dict(conn.sql("SELECT source_uri, count(*) FROM metta_action_samples GROUP BY 1").fetchall())
    assert len(per_file) == REAL_REPLAYS and all(n > 0 for n in per_file.values())
    failures = conn.sql("SELECT source_uri, error_class, reason FROM metta_replay_failures").fetchall()
    assert sorted(Path(uri).name for uri, _, _ in failures) == sorted(bad)
    for uri, error_class, reason in failures:
        assert uri in reason and error_class == "ReplayFormatError"
    table = read_parquet(partition_file(warehouse_root(warehouse), "metta_action_samples", DAY))
    keys = list(
        zip(*(table.column(c).to_pylist() for c in ("episode_id", "agent_id", "timestep")), strict=True)
    )
    assert keys == sorted(keys)  # the file itself is in (episode_id, agent_id, timestep) order
    assert _checks(result) == {
        "no_duplicate_samples": (True, "ERROR"),
        "timesteps_contiguous": (True, "ERROR"),
        "actions_within_action_names": (True, "ERROR"),
        "replays_decoded": (False, "WARN"),
    }
    metadata = result.asset_materializations_for_node("metta_action_samples_assets")
    samples_meta = next(
        m for m in metadata if m.asset_key.to_user_string() == "metta_action_samples"
    ).metadata
    assert samples_meta["files"].value == REAL_REPLAYS + len(bad)
    assert samples_meta["files_used"].value == REAL_REPLAYS
    assert samples_meta["files_failed"].value == len(bad)
    assert samples_meta["rows"].value == sum(per_file.values()) == samples_meta["dagster/row_count"].value


def test_rematerializing_is_byte_identical(shared_landing: Path, tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse"
    part = warehouse / "metta_action_samples" / f"date={DAY}" / "part-0.parquet"
    assert _run(str(shared_landing), str(warehouse)).success
    first = part.read_bytes()
    assert _run(str(shared_landing), str(warehouse)).success
    assert part.read_bytes() == first


def test_min_reward_and_environment_filters(shared_landing: Path, tmp_path: Path) -> None:
    warehouse = str(tmp_path / "warehouse")
    assert _run(str(shared_landing), warehouse).success
    conn = connect(warehouse=warehouse)
    finals = conn.sql(
        "SELECT episode_id, agent_id, arg_max(total_reward, timestep) AS final "
        "FROM metta_action_samples GROUP BY ALL"
    ).fetchall()
    threshold = sorted(f for _, _, f in finals)[len(finals) // 2]
    keep = {(e, a) for e, a, f in finals if f >= threshold}
    assert _run(str(shared_landing), warehouse, {"min_reward": float(threshold)}).success
    conn = connect(warehouse=warehouse)
    kept = set(conn.sql("SELECT DISTINCT episode_id, agent_id FROM metta_action_samples").fetchall())
    assert kept == keep and 0 < len(kept) < len(finals)

    environments = {
        e for (e,) in conn.sql("SELECT DISTINCT environment FROM metta_action_samples").fetchall()
    }
    wanted = sorted(e for e in environments if e is not None)[0]
    assert _run(str(shared_landing), warehouse, {"environment": wanted}).success
    conn = connect(warehouse=warehouse)
    assert {e for (e,) in conn.sql("SELECT DISTINCT environment FROM metta_action_samples").fetchall()} == {
        wanted
    }


def test_a_day_where_every_replay_fails_fails_its_check(tmp_path: Path) -> None:
    folder = tmp_path / "landing" / "metta" / "arena" / DAY
    folder.mkdir(parents=True)
    (folder / "broken.json.z").write_bytes(b"\x78\x9c broken")
    result = _run(str(tmp_path / "landing"), str(tmp_path / "warehouse"))
    assert result.success
    assert _checks(result)["replays_decoded"] == (False, "ERROR")
    conn = connect(warehouse=str(tmp_path / "warehouse"))
    assert conn.sql("SELECT count(*) FROM metta_replay_failures").fetchone()[0] == 1


def test_a_bomb_among_good_replays_is_one_failure_and_the_day_is_written(tmp_path: Path) -> None:
    """A replay inflating past ``max_decompressed_bytes`` (run config) is refused while inflating: one
    failure row naming the file and the limit; every other replay of the day is written."""
    folder = tmp_path / "landing" / "metta" / "arena" / DAY
    folder.mkdir(parents=True)
    good = [metta_replay_bytes(version=2, compression="zlib", seed=seed) for seed in (1, 2)]
    for seed, data in zip((1, 2), good, strict=True):
        (folder / f"good_{seed}.json.z").write_bytes(data)
    (folder / "bomb.json.z").write_bytes(zlib.compress(b" " * (256 << 20), 9))  # 0.25 MB -> 256 MiB
    limit = 32 << 20
    result = _run(str(tmp_path / "landing"), str(tmp_path / "warehouse"), {"max_decompressed_bytes": limit})
    assert result.success
    conn = connect(warehouse=str(tmp_path / "warehouse"))
    ((uri, error_class, reason),) = conn.sql(
        "SELECT source_uri, error_class, reason FROM metta_replay_failures"
    ).fetchall()
    assert uri.endswith("bomb.json.z") and error_class == "ReplayFormatError"
    assert "bomb.json.z" in reason and f"max_decompressed_bytes={limit}" in reason
    (files,) = conn.sql("SELECT count(DISTINCT source_uri) FROM metta_action_samples").fetchone()
    assert files == len(good)


@pytest.mark.parametrize("storage", ["local", "s3"])
def test_loaders_read_what_the_asset_wrote(
    storage: str, shared_landing: Path, tmp_path: Path, request
) -> None:
    import torch
    from torch.utils.data import DataLoader

    from replay_assets.datasets import MettaSampleStream, ReplayDataset

    landing, warehouse = landing_and_warehouse(storage, shared_landing, tmp_path, request)
    assert _run(landing, warehouse).success
    expected = (
        connect(warehouse=warehouse)
        .sql("SELECT count(*) FROM metta_action_samples WHERE agent_id = 1")
        .fetchone()[0]
    )

    dataset = ReplayDataset(dates=[DAY], base_path=warehouse, filters={"agent_id": "= 1"})
    assert len(dataset) == expected > 0
    batch = next(iter(DataLoader(dataset, batch_size=256, shuffle=True)))
    assert batch["observation"]["location"].shape == (256, 2)
    assert torch.all(batch["agent_id"] == 1)

    stream = MettaSampleStream(
        dates=[DAY], warehouse=warehouse, filters={"agent_id": "= 1"}, batch_size=512, seed=0
    )
    assert sum(b["action"].shape[0] for b in stream) == expected


@pytest.mark.parametrize("selected", ["metta_action_samples", "metta_replay_failures"])
def test_each_output_can_be_materialized_alone(selected: str, shared_landing: Path, tmp_path: Path) -> None:
    _add_bad_replays(shared_landing)
    warehouse = tmp_path / "warehouse"
    resources = build_resources(_settings(str(shared_landing), str(warehouse)))
    instance = DagsterInstance.ephemeral()
    assert materialize(
        [raw_replay_listings], partition_key=DAY, resources=resources, instance=instance
    ).success
    result = materialize(
        [metta_action_samples, raw_replay_listings.to_source_asset()],
        partition_key=DAY,
        resources=resources,
        instance=instance,
        selection=[selected],
    )
    assert result.success
    written = sorted(p.name for p in warehouse.iterdir())
    assert written == sorted(["raw_replay_listings", selected])
    rows = connect(warehouse=str(warehouse)).sql(f"SELECT count(*) FROM {selected}").fetchone()[0]
    assert rows == 3 if selected == "metta_replay_failures" else rows > 1000


@pytest.mark.slow
def test_a_day_of_ten_thousand_files_with_one_percent_damaged(tmp_path: Path) -> None:
    """10,000 replays in one day, 100 of them damaged five ways: the day completes, the failures table
    holds exactly those 100 (each reason naming its file) and every good file's samples are written."""
    import uuid

    folder = tmp_path / "landing" / "metta" / "arena" / DAY
    folder.mkdir(parents=True)
    templates = [
        metta_replay_bytes(version=2, compression="zlib", seed=s, num_agents=1, max_steps=20)
        for s in range(8)
    ]
    bomb = zlib.compress(b" " * (8 << 20), 9)
    damage = [
        lambda data: data[: len(data) // 2],  # truncated
        lambda data: data[:2] + bytes(range(256)) * 4,  # garbage after the zlib header
        lambda data: zlib.compress(b'{"version": 2, "objects": ['),  # JSON cut short
        lambda data: zlib.compress(json.dumps({"version": 9, "objects": []}).encode()),  # unknown version
        lambda data: bomb,  # inflates past the run's max_decompressed_bytes
    ]
    damaged: set[str] = set()
    rng = random.Random(0)
    for i in range(10_000):
        name = f"{uuid.UUID(int=rng.getrandbits(128))}.json.z"
        data = templates[i % len(templates)]
        if i % 100 == 37:
            data = damage[(i // 100) % len(damage)](data)
            damaged.add(name)
        (folder / name).write_bytes(data)
    result = _run(str(tmp_path / "landing"), str(tmp_path / "warehouse"), {"max_decompressed_bytes": 1 << 20})
    assert result.success
    conn = connect(warehouse=str(tmp_path / "warehouse"))
    failures = conn.sql("SELECT source_uri, reason FROM metta_replay_failures").fetchall()
    assert {Path(uri).name for uri, _ in failures} == damaged and len(failures) == 100
    assert all(Path(uri).name in reason for uri, reason in failures)
    (files,) = conn.sql("SELECT count(DISTINCT source_uri) FROM metta_action_samples").fetchone()
    assert files == 10_000 - 100


def test_column_ranges_make_files_with_values_outside_failures(shared_landing: Path, tmp_path: Path) -> None:
    """A run's ``column_ranges`` narrows a column: exactly the replays with more agents fail, named."""
    landing, warehouse = str(shared_landing), str(tmp_path / "warehouse")
    agents = {}
    for path in sorted((shared_landing / "metta" / DAY).iterdir()):
        table = pa.Table.from_batches(
            read_metta_samples(path.read_bytes(), Lineage.of_bytes(b"", METTA_DAY, "x"))
        )
        agents[path.name] = pc.max(table["agent_id"]).as_py()
    limit = sorted(agents.values())[len(agents) // 2]
    assert _run(landing, warehouse, {"column_ranges": {"agent_id": [0, limit]}}).success

    conn = connect(warehouse=warehouse)
    kept = {
        Path(u).name for (u,) in conn.sql("SELECT DISTINCT source_uri FROM metta_action_samples").fetchall()
    }
    failures = conn.sql("SELECT source_uri, reason FROM metta_replay_failures").fetchall()
    assert kept == {name for name, top in agents.items() if top <= limit}
    assert sorted(Path(uri).name for uri, _ in failures) == sorted(
        n for n, top in agents.items() if top > limit
    )
    for uri, reason in failures:
        value = int(reason.removeprefix(f"{uri}: agent_id = ").split()[0])
        assert limit < value <= agents[Path(uri).name]
        assert reason == f"{uri}: agent_id = {value} is outside column_ranges [0, {limit}]"


def test_column_ranges_naming_no_integer_column_fail_the_run_clearly(
    shared_landing: Path, tmp_path: Path
) -> None:
    result = _run(
        str(shared_landing),
        str(tmp_path / "wh"),
        {"column_ranges": {"action_name": [0, 1]}},
        raise_on_error=False,
    )
    assert not result.success
    assert "column_ranges: 'action_name' holds string, not integers" in str(result.all_events)
