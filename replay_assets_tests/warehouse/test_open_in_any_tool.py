"""The layout contract: every asset folder of a demo warehouse opens in pandas, pyarrow, polars, DuckDB and
Hugging Face ``datasets`` with the same rows, each tool giving ``date`` one type; project readers give
back ``date`` as before, also from partitions written before the column moved into the folder name."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from dagster import AssetIn, DagsterInstance, DailyPartitionsDefinition, asset, materialize

from replay_assets.definitions import ASSETS
from replay_assets.warehouse.io_manager import PartitionedParquetIOManager
from replay_assets.warehouse.layout import (
    LOGICAL_TYPE_KEY,
    PARTITION_COLUMN,
    PARTITION_FIELD,
    PartitionColumnMismatchError,
    decode_maps,
    decoded_schema,
    partition_file,
    warehouse_root,
    with_partition_column,
)
from replay_assets.warehouse.parquet import WarehouseWriteError, read_parquet, write_parquet
from replay_assets.warehouse.selection import select_partitions
from replay_assets.warehouse.sql import connect
from replay_assets_tests.conftest import new_bucket, use_s3_endpoint
from replay_assets_tests.warehouse.conftest import DAMAGED_FILES, DEMO_DAYS

ASSET_KEYS = sorted({key.to_user_string() for a in ASSETS for key in a.keys})
DAY_NAMES = {f"date={d.isoformat()}" for d in DEMO_DAYS}


def _folders(warehouse: Path) -> list[Path]:
    return sorted(p for p in warehouse.iterdir() if p.is_dir())


def _files(folder: Path) -> list[Path]:
    return sorted(folder.glob("date=*/part-0.parquet"))


def _rows(folder: Path) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in _files(folder))


def test_demo_warehouse_has_every_asset_and_no_date_in_its_files(demo_warehouse: Path) -> None:
    assert [p.name for p in _folders(demo_warehouse)] == ASSET_KEYS
    for folder in _folders(demo_warehouse):
        assert {p.parent.name for p in _files(folder)} == DAY_NAMES, folder.name
        for path in _files(folder):
            assert PARTITION_COLUMN not in pq.read_schema(path).names, path
        assert not [p for p in folder.rglob("*") if p.name.startswith((".", "_"))]  # no temporary left


def test_each_damaged_file_is_one_failure_row_naming_it(demo_warehouse: Path) -> None:
    failures = pd.concat(
        [pd.read_parquet(demo_warehouse / name) for name in ASSET_KEYS if name.endswith("_failures")]
    )
    assert sorted(Path(uri).name for uri in failures["source_uri"]) == sorted(
        Path(name).name for name in DAMAGED_FILES
    )
    for uri, reason in zip(failures["source_uri"], failures["reason"], strict=True):
        assert Path(uri).name in reason and "\n" not in reason, reason


def test_pandas_reads_every_asset_folder(demo_warehouse: Path) -> None:
    for folder in _folders(demo_warehouse):
        frame = pd.read_parquet(folder)
        assert len(frame) == _rows(folder), folder.name
        assert isinstance(frame[PARTITION_COLUMN].dtype, pd.CategoricalDtype), folder.name
        assert set(frame[PARTITION_COLUMN].cat.categories) <= {d.isoformat() for d in DEMO_DAYS}


def test_pyarrow_hive_reads_every_asset_folder(demo_warehouse: Path) -> None:
    for folder in _folders(demo_warehouse):
        table = pads.dataset(folder, partitioning="hive").to_table()
        assert table.num_rows == _rows(folder), folder.name
        assert table.schema.field(PARTITION_COLUMN).type == pa.string(), folder.name


def test_polars_reads_every_asset_folder(demo_warehouse: Path) -> None:
    for folder in _folders(demo_warehouse):
        frame = pl.scan_parquet(f"{folder}/**/*.parquet", hive_partitioning=True).collect()
        assert frame.height == _rows(folder), folder.name
        assert frame.schema[PARTITION_COLUMN] == pl.Date, folder.name


def test_duckdb_reads_every_asset_folder(demo_warehouse: Path) -> None:
    conn = duckdb.connect()
    for folder in _folders(demo_warehouse):
        source = f"read_parquet('{folder}/**/*.parquet', hive_partitioning = true)"
        (rows,) = conn.sql(f"SELECT count(*) FROM {source}").fetchone()
        assert rows == _rows(folder), folder.name
        types = conn.sql(f"SELECT DISTINCT typeof({PARTITION_COLUMN}) FROM {source}").fetchall()
        assert types in ([("DATE",)], []), folder.name  # [] only for a folder of empty files
        (kind,) = conn.sql(
            f"SELECT column_type FROM (DESCRIBE SELECT * FROM {source}) WHERE column_name = 'date'"
        ).fetchone()
        assert kind == "DATE", folder.name


def test_hugging_face_datasets_reads_every_asset_folder(
    demo_warehouse: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import datasets

    for folder in _folders(demo_warehouse):
        assert _rows(folder), f"{folder.name}: datasets builds no split of 0 rows, whatever the layout"
        cache = str(tmp_path / "cache" / folder.name)
        split = datasets.load_dataset("parquet", data_dir=str(folder), cache_dir=cache)["train"]
        assert split.num_rows == _rows(folder), folder.name
        # No hive support: every column of the files, and no `date` (it is only in the folder names).
        assert split.column_names == pq.read_schema(_files(folder)[0]).names, folder.name


def test_map_columns_are_stored_as_key_value_lists(demo_warehouse: Path) -> None:
    """Maps (which ``datasets`` cannot type) are stored as lists of key/value structs, marked as maps;
    the project's readers and the DuckDB views give maps back."""
    stored = {
        folder.name: [f.name for f in pq.read_schema(_files(folder)[0]) if _is_marked_map(f)]
        for folder in _folders(demo_warehouse)
    }
    assert {k: v for k, v in stored.items() if v} == {
        "metta_action_samples": ["inventory"],
        "townlet_recordings_index": ["affordance_layout"],
    }
    conn = connect(warehouse=str(demo_warehouse))
    for name, column in [
        ("metta_action_samples", "inventory"),
        ("townlet_recordings_index", "affordance_layout"),
    ]:
        assert pa.types.is_map(
            decoded_schema(pq.read_schema(_files(demo_warehouse / name)[0])).field(column).type
        )
        table = select_partitions(name, base_path=str(demo_warehouse)).read_table(["date", column])
        assert pa.types.is_map(table.schema.field(column).type), name
        (kind,) = conn.sql(
            f"SELECT column_type FROM (DESCRIBE {name}) WHERE column_name = '{column}'"
        ).fetchone()
        assert kind.startswith("MAP("), (name, kind)
        as_sql = conn.sql(f"SELECT {column} FROM {name}").fetchall()
        assert [dict(v) if v is not None else None for (v,) in as_sql] == [
            dict(v) if v is not None else None for v in table.column(column).to_pylist()
        ]


def _is_marked_map(field: pa.Field) -> bool:
    return (field.metadata or {}).get(LOGICAL_TYPE_KEY) == b"map" and pa.types.is_list(field.type)


def test_connect_views_give_date_first_as_date(demo_warehouse: Path) -> None:
    conn = connect(warehouse=str(demo_warehouse))
    for name in ASSET_KEYS:
        described = conn.sql(f'DESCRIBE "{name}"').fetchall()
        assert described[0][:2] == ("date", "DATE"), name
        (rows,) = conn.sql(f'SELECT count(*) FROM "{name}"').fetchone()
        assert rows == _rows(demo_warehouse / name), name


def test_selection_reads_the_logical_schema(demo_warehouse: Path) -> None:
    from replay_assets.landing.schema import RAW_REPLAY_LISTINGS

    selection = select_partitions("raw_replay_listings", base_path=str(demo_warehouse))
    table = selection.read_table(RAW_REPLAY_LISTINGS.names)
    assert table.schema.field(0) == PARTITION_FIELD
    assert sorted(set(table.column("date").to_pylist())) == list(DEMO_DAYS)
    one = selection.read_table(["source", "date"], pads.field("date") == pa.scalar(DEMO_DAYS[1], pa.date32()))
    assert set(one.column("date").to_pylist()) == {DEMO_DAYS[1]}
    assert one.num_rows == pq.ParquetFile(_files(demo_warehouse / "raw_replay_listings")[1]).metadata.num_rows


# ---------------------------------------------------------------------------------------------------------
# Partitions written before: `date` inside the file too


def _old_style(warehouse: Path, target: Path) -> Path:
    """A copy of ``warehouse`` as the writer left it before: every file also holds ``date``, first, and
    map columns are Parquet maps."""
    shutil.copytree(warehouse, target)
    for path in target.glob("*/date=*/part-0.parquet"):
        day = path.parent.name.removeprefix("date=")
        pq.write_table(with_partition_column(decode_maps(pq.read_table(path)), day), path)
    return target


def _summary(warehouse: Path) -> dict[str, object]:
    from replay_assets.datasets import (
        DemoBuffer,
        MettaSampleStream,
        ReplayDataset,
        Sc2FramesDataset,
        TownletRecordings,
        TownletStepDataset,
        export_tmrl_memory,
    )

    uri = str(warehouse)
    replay = ReplayDataset(warehouse=uri, columns=["date", "reward"])
    stream = MettaSampleStream(warehouse=uri, shuffle_buffer=0, batch_size=10_000)
    recordings = TownletRecordings(warehouse=uri)
    listed = recordings.list(limit=None)
    steps = TownletStepDataset(warehouse=recordings)
    demos = DemoBuffer(warehouse=uri, layout="lidar")
    exported = export_tmrl_memory(warehouse / "data.pkl", "lidar", warehouse=uri, dry_run=True)
    frames = Sc2FramesDataset(warehouse=uri, max_units=8)
    conn = connect(warehouse=uri)
    views = {
        name: conn.sql(f'SELECT date, count(*) FROM "{name}" GROUP BY ALL ORDER BY ALL').fetchall()
        for name in ASSET_KEYS
    }
    return {
        "replay": (len(replay), replay[0]["date"], replay[len(replay) - 1]["date"]),
        "stream": sum(len(b["action"]) for b in stream),
        "recordings": [(r.date, r.checkpoint, r.episode_id, r.valid) for r in listed],
        "steps": len(steps),
        "demos": (len(demos), demos.source(0), demos.source(len(demos) - 1)),
        "export": (exported.samples, exported.first_day, exported.last_day),
        "frames": (len(frames), frames[0]["game_loop"].item()),
        "views": views,
    }


def test_old_style_partitions_read_as_new_ones(demo_warehouse: Path, tmp_path: Path) -> None:
    old = _old_style(demo_warehouse, tmp_path / "old")
    assert all(PARTITION_COLUMN in pq.read_schema(p).names for p in old.glob("*/date=*/*.parquet"))
    assert pa.types.is_map(pq.read_schema(_files(old / "metta_action_samples")[0]).field("inventory").type)
    new_summary, old_summary = _summary(demo_warehouse), _summary(old)
    assert old_summary == new_summary
    assert new_summary["replay"][1] == DEMO_DAYS[0].isoformat()
    for name in ASSET_KEYS:
        new = select_partitions(name, base_path=str(demo_warehouse)).dataset().to_table()
        before = select_partitions(name, base_path=str(old)).dataset().to_table()
        assert before.equals(new), name
        assert new.schema.field(0) == PARTITION_FIELD, name


def test_old_style_mixed_with_new_in_one_asset(demo_warehouse: Path, tmp_path: Path) -> None:
    """Old files next to new ones: the folder's day wins over an in-file value, and types agree."""
    mixed = tmp_path / "mixed"
    shutil.copytree(demo_warehouse / "raw_replay_listings", mixed / "raw_replay_listings")
    first = _files(mixed / "raw_replay_listings")[0]
    table = pq.read_table(first)
    wrong = pa.array([dt.date(1999, 1, 1)] * table.num_rows, pa.date32())
    pq.write_table(table.add_column(0, PARTITION_FIELD, wrong), first)  # an old file with a stale date
    selection = select_partitions("raw_replay_listings", base_path=str(mixed))
    days = selection.read_table(["date"]).column("date").to_pylist()
    assert sorted(set(days)) == list(DEMO_DAYS)
    view = connect(warehouse=str(mixed)).sql("SELECT DISTINCT date FROM raw_replay_listings ORDER BY 1")
    assert [d for (d,) in view.fetchall()] == list(DEMO_DAYS)


def test_old_map_files_mixed_with_new_in_one_asset(demo_warehouse: Path, tmp_path: Path) -> None:
    """An old file (inventory a Parquet map) first, a new one (a key/value list) after: one selection."""
    mixed = tmp_path / "mixed"
    shutil.copytree(demo_warehouse / "metta_action_samples", mixed / "metta_action_samples")
    first = _files(mixed / "metta_action_samples")[0]
    pq.write_table(decode_maps(pq.read_table(first)), first)
    selection = select_partitions("metta_action_samples", base_path=str(mixed))
    table = selection.read_table(["date", "inventory"])
    expected = select_partitions("metta_action_samples", base_path=str(demo_warehouse))
    assert table.equals(expected.read_table(["date", "inventory"]))
    assert pa.types.is_map(table.schema.field("inventory").type)


# ---------------------------------------------------------------------------------------------------------
# The writer and the IO manager


DAYS = DailyPartitionsDefinition(start_date="2025-10-01", end_date="2025-10-10")


@pytest.fixture(params=["local", "s3"])
def warehouse(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "local":
        return str(tmp_path / "warehouse")
    endpoint = request.getfixturevalue("moto_server")
    use_s3_endpoint(monkeypatch, endpoint)
    return f"s3://{new_bucket(endpoint)}/warehouse"


def _dated(day: str, n: int) -> pa.Table:
    return pa.table(
        {
            "date": pa.array([dt.date.fromisoformat(day)] * n, pa.date32()),
            "i": pa.array(range(n), pa.int64()),
        },
        schema=pa.schema([PARTITION_FIELD, pa.field("i", pa.int64())]),
    )


def test_partitioned_write_drops_date_deterministically(warehouse: str) -> None:
    root = warehouse_root(warehouse)
    path, again = partition_file(root, "t", "2025-10-02"), partition_file(root, "u", "2025-10-02")
    table = _dated("2025-10-02", 5000)
    result = write_parquet(path, table.to_batches(max_chunksize=700), partition_key="2025-10-02")
    write_parquet(again, table, partition_key="2025-10-02")
    assert result.schema.names == ["i"] and read_parquet(path).schema.names == ["i"]
    assert path.read_bytes() == again.read_bytes()  # same rows, same bytes, however they were batched
    unpartitioned = partition_file(root, "t", None)
    write_parquet(unpartitioned, table)
    assert read_parquet(unpartitioned).equals(table)  # no folder key: nothing dropped
    with pytest.raises(WarehouseWriteError, match="2025-10-03") as raised:
        write_parquet(partition_file(root, "t", "2025-10-03"), table, partition_key="2025-10-03")
    assert isinstance(raised.value.__cause__, PartitionColumnMismatchError)
    assert read_parquet(path).num_rows == 5000  # the failed write touched no other partition


def test_io_manager_round_trip_with_old_and_new_files(warehouse: str) -> None:
    seen: dict[str, pa.Table] = {}

    @asset(partitions_def=DAYS, io_manager_key="warehouse_io_manager")
    def dated(context) -> pa.Table:
        return _dated(context.partition_key, 10)

    @asset(partitions_def=DAYS, io_manager_key="warehouse_io_manager", ins={"dated": AssetIn()})
    def downstream(context, dated: pa.Table) -> pa.Table:
        seen[context.partition_key] = dated
        return pa.table({"n": [dated.num_rows]})

    resources = {"warehouse_io_manager": PartitionedParquetIOManager(warehouse_uri=warehouse)}
    instance = DagsterInstance.ephemeral()
    result = materialize(
        [dated, downstream], partition_key="2025-10-05", resources=resources, instance=instance
    )
    assert result.success
    schema = result.asset_materializations_for_node("dated")[0].metadata["dagster/column_schema"].schema
    assert [(c.name, c.type) for c in schema.columns] == [("date", "date32[day]"), ("i", "int64")]
    assert seen["2025-10-05"].equals(_dated("2025-10-05", 10), check_metadata=False)
    assert seen["2025-10-05"].schema.field(0) == PARTITION_FIELD
    # A partition the old writer left (`date` in the file): downstream sees the same table.
    old_path = partition_file(warehouse_root(warehouse), "dated", "2025-10-06")
    write_parquet(old_path, _dated("2025-10-06", 10))  # no partition_key: `date` stays in the file
    assert read_parquet(old_path).schema.names == ["date", "i"]
    again = materialize(
        [downstream, dated.to_source_asset()],
        partition_key="2025-10-06",
        resources=resources,
        instance=instance,
    )
    assert again.success
    assert seen["2025-10-06"].equals(_dated("2025-10-06", 10), check_metadata=False)
