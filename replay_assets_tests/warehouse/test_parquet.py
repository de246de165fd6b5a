"""The warehouse writer and IO manager on a local folder and on a local S3 server."""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import (
    AssetIn,
    BackfillPolicy,
    BetaWarning,
    DagsterInstance,
    DailyPartitionsDefinition,
    asset,
    materialize,
)
from upath import UPath

from replay_assets.warehouse import parquet as parquet_files
from replay_assets.warehouse.io_manager import PartitionedParquetIOManager
from replay_assets.warehouse.layout import partition_file, warehouse_root
from replay_assets.warehouse.parquet import WarehouseWriteError, read_parquet, write_parquet
from replay_assets_tests.conftest import new_bucket, use_s3_endpoint

DAYS = DailyPartitionsDefinition(start_date="2025-10-01", end_date="2025-10-10")
RANGE_TAGS = {
    "dagster/asset_partition_range_start": "2025-10-02",
    "dagster/asset_partition_range_end": "2025-10-04",
}


def _table(n: int, offset: int = 0) -> pa.Table:
    return pa.table(
        {"i": pa.array(range(offset, offset + n), pa.int64()), "s": [f"v{k % 7}" for k in range(n)]}
    )


@pytest.fixture(params=["local", "s3"])
def warehouse(request: pytest.FixtureRequest, tmp_path, monkeypatch) -> str:
    if request.param == "local":
        return str(tmp_path / "warehouse")
    endpoint = request.getfixturevalue("moto_server")
    use_s3_endpoint(monkeypatch, endpoint)
    return f"s3://{new_bucket(endpoint)}/warehouse"


def test_table_reader_and_iterator_round_trip(warehouse: str) -> None:
    root = warehouse_root(warehouse)
    table = _table(5000)
    reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=700))
    for i, data in enumerate([table, reader, iter(table.to_batches(max_chunksize=999))]):
        path = partition_file(root, "t", f"2025-10-0{i + 1}")
        result = write_parquet(path, data)
        assert result.row_count == 5000
        assert read_parquet(path).equals(table)


def test_empty_reader_writes_schema_only_file(warehouse: str) -> None:
    path = partition_file(warehouse_root(warehouse), "t", "2025-10-01")
    schema = pa.schema([("i", pa.int64())])
    write_parquet(path, pa.RecordBatchReader.from_batches(schema, iter([])))
    assert read_parquet(path).schema == schema
    assert read_parquet(path).num_rows == 0
    with pytest.raises(WarehouseWriteError, match="no record batches"):
        write_parquet(path, iter([]))


def test_rewrite_is_byte_identical(warehouse: str) -> None:
    path = partition_file(warehouse_root(warehouse), "t", "2025-10-01")
    write_parquet(path, _table(20_000))
    first = path.read_bytes()
    write_parquet(path, iter(_table(20_000).to_batches(max_chunksize=3000)))
    assert path.read_bytes() == first


def test_row_groups_bounded_when_streaming(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(parquet_files, "ROW_GROUP_ROWS", 10_000)
    path = UPath(tmp_path) / "t.parquet"
    write_parquet(path, iter(_table(55_000).to_batches(max_chunksize=2500)))
    meta = pq.ParquetFile(path.path).metadata
    assert meta.num_rows == 55_000
    assert max(meta.row_group(i).num_rows for i in range(meta.num_row_groups)) <= 10_000


def _failing_stream(table: pa.Table, fail_after: int) -> Iterator[pa.RecordBatch]:
    for i, batch in enumerate(table.to_batches(max_chunksize=1000)):
        if i == fail_after:
            raise RuntimeError("the source broke mid-stream")
        yield batch


def test_failed_write_keeps_previous_partition(warehouse: str) -> None:
    path = partition_file(warehouse_root(warehouse), "t", "2025-10-01")
    old = _table(3000)
    write_parquet(path, old)
    with pytest.raises(WarehouseWriteError, match="previous version of this partition, if any, is unchanged"):
        write_parquet(path, _failing_stream(_table(9000, offset=100), fail_after=4))
    assert read_parquet(path).equals(old)
    assert [p.name for p in path.parent.iterdir()] == ["part-0.parquet"]  # no temporary left behind


def test_reader_sees_old_or_new_partition_never_half(tmp_path) -> None:
    path = partition_file(warehouse_root(str(tmp_path)), "t", "2025-10-01")
    old, new = _table(10_000), _table(40_000, offset=7)
    write_parquet(path, old)
    release = threading.Event()

    def slow_stream() -> Iterator[pa.RecordBatch]:
        for i, batch in enumerate(new.to_batches(max_chunksize=5000)):
            if i == 2:
                release.wait(10)
            yield batch

    writer = threading.Thread(target=write_parquet, args=(path, slow_stream()))
    writer.start()
    time.sleep(0.2)
    assert read_parquet(path).equals(old)  # mid-write: the old partition, whole
    release.set()
    writer.join()
    assert read_parquet(path).equals(new)


def test_concurrent_writers_leave_one_whole_partition(warehouse: str) -> None:
    path = partition_file(warehouse_root(warehouse), "t", "2025-10-01")
    tables = [_table(30_000, offset=k * 1000) for k in range(4)]
    threads = [threading.Thread(target=write_parquet, args=(path, t)) for t in tables]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result = read_parquet(path)
    assert any(result.equals(t) for t in tables)


def _assets():
    with warnings.catch_warnings():  # backfill_policy is Beta in Dagster 1.13: used on purpose (pipeline/)
        warnings.filterwarnings("ignore", message=r"Parameter `backfill_policy`", category=BetaWarning)
        return _define_assets()


def _define_assets():
    @asset(
        partitions_def=DAYS,
        io_manager_key="warehouse_io_manager",
        backfill_policy=BackfillPolicy.single_run(),
    )
    def numbers(context):
        out = {key: _table(100 * (i + 1), offset=i) for i, key in enumerate(context.partition_keys)}
        return out if len(out) > 1 else next(iter(out.values()))

    @asset(
        partitions_def=DAYS,
        io_manager_key="warehouse_io_manager",
        backfill_policy=BackfillPolicy.single_run(),
        ins={"numbers": AssetIn()},
    )
    def totals(context, numbers: dict[str, pa.Table]):
        out = {k: pa.table({"n": [numbers[k].num_rows]}) for k in context.partition_keys}
        return out if len(out) > 1 else next(iter(out.values()))

    @asset(
        partitions_def=DAYS,
        io_manager_key="warehouse_io_manager",
        backfill_policy=BackfillPolicy.single_run(),  # as its upstream: no mixed policies in one job
        ins={"numbers": AssetIn()},
    )
    def concatenated(numbers: pa.Table) -> pa.Table:
        return pa.table({"n": [numbers.num_rows]})

    return numbers, totals, concatenated


def test_io_manager_range_run_writes_each_partition(warehouse: str) -> None:
    numbers, totals, _ = _assets()
    io_manager = PartitionedParquetIOManager(warehouse_uri=warehouse)
    result = materialize(
        [numbers, totals],
        resources={"warehouse_io_manager": io_manager},
        tags=RANGE_TAGS,
        instance=DagsterInstance.ephemeral(),
    )
    assert result.success
    root = warehouse_root(warehouse)
    for i, day in enumerate(["2025-10-02", "2025-10-03", "2025-10-04"]):
        assert read_parquet(partition_file(root, "numbers", day)).num_rows == 100 * (i + 1)
        assert read_parquet(partition_file(root, "totals", day)).column("n").to_pylist() == [100 * (i + 1)]
    mats = result.asset_materializations_for_node("numbers")
    assert sorted(m.partition for m in mats) == ["2025-10-02", "2025-10-03", "2025-10-04"]
    metadata = mats[0].metadata
    assert metadata["dagster/row_count"].value == 600
    columns = [c.name for c in metadata["dagster/column_schema"].schema.columns]
    assert columns == ["date", "i", "s"]  # the logical schema: `date` from the folder name, first
    assert metadata["partition_row_counts"].value == {"2025-10-02": 100, "2025-10-03": 200, "2025-10-04": 300}


def test_io_manager_single_partition_and_missing_upstream(tmp_path) -> None:
    numbers, _, concatenated = _assets()
    resources = {"warehouse_io_manager": PartitionedParquetIOManager(warehouse_uri=str(tmp_path))}
    instance = DagsterInstance.ephemeral()
    assert materialize([numbers], partition_key="2025-10-05", resources=resources, instance=instance).success
    mat = materialize(
        [numbers, concatenated], partition_key="2025-10-05", resources=resources, instance=instance
    )
    assert (
        mat.asset_materializations_for_node("numbers")[0]
        .metadata["uri"]
        .value.endswith("numbers/date=2025-10-05/part-0.parquet")
    )
    result = materialize(
        [concatenated, numbers.to_source_asset()],
        partition_key="2025-10-06",
        resources=resources,
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "numbers has no materialized partition for 2025-10-06" in str(failure.event_specific_data.error)


def test_s3_going_away_mid_write_fails_clearly_and_keeps_old_partition(tmp_path, monkeypatch) -> None:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    use_s3_endpoint(monkeypatch, endpoint)
    monkeypatch.setattr(parquet_files, "ROW_GROUP_ROWS", 20_000)  # several row groups: the upload is underway
    warehouse = f"s3://{new_bucket(endpoint)}/wh"
    resources = {"warehouse_io_manager": PartitionedParquetIOManager(warehouse_uri=warehouse)}
    old = _table(1000)

    @asset(partitions_def=DAYS, io_manager_key="warehouse_io_manager", name="numbers")
    def numbers_v1() -> pa.Table:
        return old

    @asset(partitions_def=DAYS, io_manager_key="warehouse_io_manager", name="numbers")
    def numbers_v2() -> pa.RecordBatchReader:
        new = _table(200_000)

        def stream() -> Iterator[pa.RecordBatch]:
            for i, batch in enumerate(new.to_batches(max_chunksize=10_000)):
                if i == 5:
                    server.stop()
                yield batch

        return pa.RecordBatchReader.from_batches(new.schema, stream())

    instance = DagsterInstance.ephemeral()
    assert materialize(
        [numbers_v1], partition_key="2025-10-03", resources=resources, instance=instance
    ).success
    started = time.monotonic()
    result = materialize(
        [numbers_v2], partition_key="2025-10-03", resources=resources, instance=instance, raise_on_error=False
    )
    assert not result.success
    assert time.monotonic() - started < 120
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = str(failure.event_specific_data.error)
    assert "numbers/date=2025-10-03/part-0.parquet failed" in message
    assert "previous version of this partition, if any, is unchanged" in message

    restarted = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    restarted.start()
    try:
        assert read_parquet(partition_file(warehouse_root(warehouse), "numbers", "2025-10-03")).equals(old)
    finally:
        restarted.stop()


def test_asset_metadata_sets_row_group_size(tmp_path) -> None:
    @asset(
        partitions_def=DAYS, io_manager_key="warehouse_io_manager", metadata={"parquet_row_group_rows": 1000}
    )
    def small_groups() -> pa.Table:
        return _table(4500)

    resources = {"warehouse_io_manager": PartitionedParquetIOManager(warehouse_uri=str(tmp_path))}
    assert materialize(
        [small_groups], partition_key="2025-10-02", resources=resources, instance=DagsterInstance.ephemeral()
    ).success
    meta = pq.ParquetFile(
        partition_file(warehouse_root(str(tmp_path)), "small_groups", "2025-10-02").path
    ).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [1000, 1000, 1000, 1000, 500]


def test_streamed_batches_fill_whole_row_groups(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(parquet_files, "ROW_GROUP_ROWS", 1000)
    path = UPath(tmp_path) / "t.parquet"
    write_parquet(path, iter(_table(4700).to_batches(max_chunksize=300)))  # batches do not divide 1000
    meta = pq.ParquetFile(path.path).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [1000, 1000, 1000, 1000, 700]
    assert read_parquet(path).equals(_table(4700))


def test_field_metadata_chooses_a_column_codec(tmp_path) -> None:
    """A field may ask for its own codec (TMRL frames: zstd); every other leaf stays snappy, nested too."""
    schema = pa.schema(
        [
            pa.field("frames", pa.binary(), metadata={b"parquet_compression": b"zstd"}),
            pa.field("tags", pa.list_(pa.int64())),
            pa.field("unit", pa.struct([pa.field("x", pa.float32())])),
        ]
    )
    table = pa.table(
        {"frames": [b"\x01" * 4096] * 50, "tags": [[1, 2]] * 50, "unit": [{"x": 1.0}] * 50}, schema=schema
    )
    path = UPath(tmp_path / "codec.parquet")
    write_parquet(path, table)
    meta = pq.ParquetFile(path.path).metadata.row_group(0)
    codecs = {meta.column(i).path_in_schema: meta.column(i).compression for i in range(meta.num_columns)}
    assert codecs == {"frames": "ZSTD", "tags.list.element": "SNAPPY", "unit.x": "SNAPPY"}
    assert read_parquet(path).equals(table)


def test_nested_field_metadata_reaches_its_leaves_and_list_leaves_get_no_statistics(tmp_path) -> None:
    """Codec and dictionary settings are inherited by nested fields; maps (stored as key/value lists)
    and lists are walked too."""
    unit = pa.struct(
        [pa.field("tag", pa.int64()), pa.field("x", pa.float32(), metadata={b"parquet_dictionary": b"false"})]
    )
    schema = pa.schema(
        [
            pa.field("loop", pa.int32()),
            pa.field("inventory", pa.map_(pa.string(), pa.int32())),
            pa.field("units", pa.list_(unit), metadata={b"parquet_compression": b"zstd"}),
        ]
    )
    rows = {"loop": [1, 2], "inventory": [[("ore", 1)], []], "units": [[{"tag": 7, "x": 1.5}], []]}
    table = pa.table(rows, schema=schema)
    path = UPath(tmp_path / "nested.parquet")
    write_parquet(path, table)
    meta = pq.ParquetFile(path.path).metadata.row_group(0)
    columns = {meta.column(i).path_in_schema: meta.column(i) for i in range(meta.num_columns)}
    assert {p: c.compression for p, c in columns.items()} == {
        "loop": "SNAPPY",
        "inventory.list.element.key": "SNAPPY",
        "inventory.list.element.value": "SNAPPY",
        "units.list.element.tag": "ZSTD",
        "units.list.element.x": "ZSTD",
    }
    dictionary = {p for p, c in columns.items() if c.has_dictionary_page}
    assert "units.list.element.tag" in dictionary and "units.list.element.x" not in dictionary
    assert [p for p, c in columns.items() if c.is_stats_set] == ["loop"]
    assert read_parquet(path).equals(table)


def test_prefetch_keeps_order_and_reraises_the_producers_error() -> None:
    def batches(fail_at: int | None) -> Iterator[pa.RecordBatch]:
        for i in range(10):
            if i == fail_at:
                raise ValueError(f"replay {i} is broken")
            yield pa.record_batch({"i": [i]})

    assert [b["i"][0].as_py() for b in parquet_files._prefetched(batches(None), 2)] == list(range(10))
    seen = []
    with pytest.raises(ValueError, match="replay 6 is broken"):
        for batch in parquet_files._prefetched(batches(6), 2):
            seen.append(batch["i"][0].as_py())
    assert seen == list(range(6))


def test_prefetch_stops_the_producer_when_the_writer_gives_up() -> None:
    produced = []

    def batches() -> Iterator[pa.RecordBatch]:
        for i in range(1000):
            produced.append(i)
            yield pa.record_batch({"i": [i]})

    stream = parquet_files._prefetched(batches(), 2)
    next(stream)
    stream.close()  # joins the producer
    assert len(produced) < 10
