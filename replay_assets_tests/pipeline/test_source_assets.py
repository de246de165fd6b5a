"""The pipeline layer on a declared reader: per-file guard, failures as data, staging, run config.

A test source reads files of the ``metta`` landing folder (so the real listing lists them) with readers
that misbehave in the ways real files made them misbehave: integers out of range, missing keys.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import socket
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from dagster import AssetKey, DagsterInstance, RunConfig, materialize

from replay_assets.definitions import build_resources
from replay_assets.landing.assets import raw_replay_listings
from replay_assets.pipeline.source_assets import run_config_class, source_assets
from replay_assets.settings import Settings
from replay_assets.sources.contract import Lineage, SourceReader
from replay_assets.warehouse.layout import partition_file, warehouse_root
from replay_assets.warehouse.parquet import read_parquet, stage_parquet

DAY = dt.date(2025, 10, 14)
ROWS, FAILURES = "test_rows", "test_failures"
SCHEMA = pa.schema(
    [pa.field("date", pa.date32(), nullable=False), pa.field("n", pa.int64()), ("uri", pa.string())]
)


@dataclasses.dataclass(frozen=True)
class TestConfig:
    repeat: int = dataclasses.field(default=1, metadata={"description": "Batches a good file yields."})


def read(data: bytes, lineage: Lineage, config: TestConfig):
    doc = json.loads(data)
    if "big" in doc:
        pa.array([doc["big"]], pa.int64())  # OverflowError, as a 2**70 player stat once did
    value = doc["n"]  # KeyError when absent
    for _ in range(config.repeat):
        yield pa.RecordBatch.from_pylist(
            [{"date": lineage.day, "n": value, "uri": lineage.uri}], schema=SCHEMA
        )


READER = SourceReader(source="metta", schema=SCHEMA, read=read, config=TestConfig)
ASSET = source_assets(
    READER,
    rows=ROWS,
    failures=FAILURES,
    group="test",
    description="rows of the test reader",
    failures_description="files the test reader refused",
)


def _landing(root: Path, files: dict[str, object]) -> Path:
    folder = root / "metta" / DAY.isoformat()
    folder.mkdir(parents=True)
    for name, doc in files.items():
        (folder / name).write_text(json.dumps(doc))
    return root


def _materialize(landing: Path, warehouse: Path, selection=None, config: dict | None = None, **kwargs):
    return materialize(
        [raw_replay_listings, ASSET],
        selection=selection,
        resources=build_resources(Settings(str(landing), str(warehouse), dt.date(2025, 1, 1))),
        instance=DagsterInstance.ephemeral(),
        partition_key=DAY.isoformat(),
        run_config=RunConfig(ops={f"{ROWS}_assets": config or {}}),
        **kwargs,
    )


def test_any_exception_is_that_files_failure_and_the_day_goes_on(tmp_path: Path) -> None:
    landing = _landing(
        tmp_path / "landing", {"a.json": {"n": 1}, "b.json": {"big": 2**70}, "c.json": {}, "d.json": {"n": 4}}
    )
    result = _materialize(landing, tmp_path / "warehouse")
    assert result.success
    warehouse = warehouse_root(str(tmp_path / "warehouse"))
    rows = read_parquet(partition_file(warehouse, ROWS, DAY.isoformat()))
    assert rows.column("n").to_pylist() == [1, 4]
    failures = read_parquet(partition_file(warehouse, FAILURES, DAY.isoformat())).to_pylist()
    assert [(Path(f["source_uri"]).name, f["error_class"]) for f in failures] == [
        ("b.json", "OverflowError"),
        ("c.json", "KeyError"),
    ]
    for failure in failures:  # one line, naming the file and the exception type
        assert failure["reason"].startswith(failure["source_uri"]) and "\n" not in failure["reason"]
        assert failure["error_class"] in failure["reason"]
    metadata = result.asset_materializations_for_node(f"{ROWS}_assets")[0].metadata
    assert (
        metadata["files"].value == 4 and metadata["files_failed"].value == 2 and metadata["rows"].value == 2
    )


def test_run_config_comes_from_the_readers_dataclass(tmp_path: Path) -> None:
    config_class = run_config_class("TestRunConfig", TestConfig)
    field = config_class.model_fields["repeat"]
    assert field.default == 1 and field.description == "Batches a good file yields."
    landing = _landing(tmp_path / "landing", {"a.json": {"n": 1}})
    assert _materialize(landing, tmp_path / "warehouse", config={"config": {"repeat": 3}}).success
    rows = read_parquet(partition_file(warehouse_root(str(tmp_path / "warehouse")), ROWS, DAY.isoformat()))
    assert rows.num_rows == 3


def test_failures_alone_keep_no_samples(tmp_path: Path) -> None:
    """Selecting only the failures decodes the day to find them and holds nothing: Arrow memory never
    exceeds a few of the good files' batches, however many the day has, and no rows are written."""
    landing = _landing(tmp_path / "landing", {f"{i:03}.json": {"n": i} for i in range(40)} | {"x.json": {}})
    warehouse = tmp_path / "warehouse"
    peak: list[int] = []
    sizes: list[int] = []
    big = pc.random(1_000_000)  # a million rows a file, allocated in Arrow's pool

    def heavy_read(data: bytes, lineage: Lineage, config: TestConfig):
        peak.append(pa.total_allocated_bytes())
        doc = json.loads(data)
        n = pa.array([doc["n"]] * len(big))  # KeyError for x.json
        batch = pa.RecordBatch.from_arrays(
            [pa.array([lineage.day] * len(big), pa.date32()), n, pa.array([lineage.uri] * len(big))],
            schema=SCHEMA,
        )
        sizes.append(batch.nbytes)
        yield batch

    heavy = source_assets(
        dataclasses.replace(READER, read=heavy_read),
        rows=ROWS,
        failures=FAILURES,
        group="test",
        description="d",
        failures_description="f",
    )
    result = materialize(
        [raw_replay_listings, heavy],
        selection=[AssetKey("raw_replay_listings"), AssetKey(FAILURES)],
        resources=build_resources(Settings(str(landing), str(warehouse), dt.date(2025, 1, 1))),
        instance=DagsterInstance.ephemeral(),
        partition_key=DAY.isoformat(),
    )
    assert result.success
    assert len(peak) == 41 and sum(sizes) > 20 * max(sizes)  # 40 files' worth of rows
    assert max(peak) - min(peak) <= 2 * max(sizes), f"{(max(peak) - min(peak)) / 1e6:.0f} MB held"
    root = warehouse_root(str(warehouse))
    assert not partition_file(root, ROWS, DAY.isoformat()).exists()
    assert read_parquet(partition_file(root, FAILURES, DAY.isoformat())).num_rows == 1


def test_unreachable_landing_fails_the_day_loudly(tmp_path: Path, moto_server: str, monkeypatch) -> None:
    """A file that cannot be read is that file's failure; storage that cannot be reached at all is not."""

    from replay_assets_tests.conftest import new_bucket, upload_tree, use_s3_endpoint

    use_s3_endpoint(monkeypatch, moto_server)
    bucket = new_bucket(moto_server)
    local = _landing(tmp_path / "landing", {"a.json": {"n": 1}})
    upload_tree(local, bucket, "landing")
    landing = f"s3://{bucket}/landing"
    warehouse = tmp_path / "warehouse"
    resources = build_resources(Settings(landing, str(warehouse), dt.date(2025, 1, 1)))
    assert materialize(
        [raw_replay_listings],
        resources=resources,
        instance=DagsterInstance.ephemeral(),
        partition_key=DAY.isoformat(),
    ).success
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{free.getsockname()[1]}"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", dead)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    result = materialize(
        [raw_replay_listings, ASSET],
        selection=[AssetKey(ROWS), AssetKey(FAILURES)],
        resources=build_resources(Settings(landing, str(warehouse), dt.date(2025, 1, 1))),
        instance=DagsterInstance.ephemeral(),
        partition_key=DAY.isoformat(),
        raise_on_error=False,
    )
    assert not result.success
    errors = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "unreachable" in str(errors[0].event_specific_data.error)
    assert not partition_file(warehouse_root(str(warehouse)), ROWS, DAY.isoformat()).exists()


def test_a_staged_partition_is_invisible_until_committed(tmp_path: Path) -> None:
    from replay_assets.warehouse.parquet import commit_staged, discard_staged

    root = warehouse_root(str(tmp_path))
    path = partition_file(root, ROWS, DAY.isoformat())
    old = pa.table({"n": [0]})
    stage_parquet(path, old)  # staged and never committed: nothing visible
    assert not path.exists()
    staged = stage_parquet(path, pa.table({"n": [1, 2]}))
    commit_staged(staged, path)
    second = stage_parquet(path, pa.table({"n": [3]}))
    folder = pads.dataset(str(tmp_path / ROWS), format="parquet", partitioning="hive").to_table()
    assert sorted(folder.column("n").to_pylist()) == [1, 2]  # hidden staged files are skipped
    discard_staged(second, path)
    assert read_parquet(path).column("n").to_pylist() == [1, 2]
    assert sorted(p.name for p in path.parent.iterdir() if not p.name.startswith(".")) == [path.name]
