"""Map columns stored as key/value lists: the round trip through a Parquet file gives back the same maps,
nulls, empty maps, slices and chunks included, and leaves data without maps untouched."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from replay_assets.warehouse.layout import LOGICAL_TYPE_KEY, decode_maps, decoded_schema, encode_maps
from replay_assets.warehouse.parquet import read_parquet, write_parquet

SCHEMA = pa.schema(
    [
        pa.field("step", pa.int64(), nullable=False),
        pa.field("inventory", pa.map_(pa.string(), pa.int32()), nullable=False, metadata={b"unit": b"items"}),
        pa.field("layout", pa.map_(pa.string(), pa.list_(pa.int32()))),
    ]
)


def _table() -> pa.Table:
    inventory = [[("ore", 3), ("heart", 1)], [], [("ore", None)], [("battery", 7)]]
    layout = [[("bed", [1, 2])], None, [], [("job", [])]]
    return pa.table(
        {"step": range(4), "inventory": pa.array(inventory, SCHEMA.field(1).type), "layout": layout},
        schema=SCHEMA,
    )


def test_round_trip_through_a_file(tmp_path: Path) -> None:
    table = _table()
    path = UPath(tmp_path / "part-0.parquet")
    write_parquet(path, pa.concat_tables([table.slice(0, 1), table.slice(1)]))  # two chunks
    stored = pq.read_schema(path)
    assert [pa.types.is_list(f.type) for f in stored] == [False, True, True]
    assert stored.field("inventory").metadata == {b"unit": b"items", LOGICAL_TYPE_KEY: b"map"}
    back = read_parquet(path)
    assert back.to_pylist() == table.to_pylist()
    assert [f.type.id for f in back.schema] == [f.type.id for f in SCHEMA]
    assert back.schema.field("inventory").metadata == {b"unit": b"items"}
    assert back.schema.field("inventory").nullable is False
    assert decoded_schema(stored).field("layout").type.key_type == pa.string()


def test_slices_and_batches_decode_alone() -> None:
    table = _table()
    schema, batches = encode_maps(table.schema, table.to_batches(max_chunksize=3))
    encoded = list(batches)
    assert [b.num_rows for b in encoded] == [3, 1]
    for start in range(4):
        piece = encoded[0].slice(start) if start < 3 else encoded[1]
        decoded = decode_maps(piece)
        assert decoded.schema.field("inventory").type == SCHEMA.field("inventory").type
        assert decoded.to_pylist() == table.slice(start, decoded.num_rows).to_pylist()
    assert schema.field("step") == SCHEMA.field("step")


def test_data_without_maps_passes_through() -> None:
    table = pa.table({"a": [1, 2]})
    schema, batches = encode_maps(table.schema, table.to_batches())
    assert schema.equals(table.schema) and decode_maps(table) is table
    assert next(batches).equals(table.to_batches()[0])
