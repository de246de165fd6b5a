"""The ``column_ranges`` setting: validated against the table's schema, checked on every integer value."""

from __future__ import annotations

import pyarrow as pa
import pytest

from replay_assets.pipeline.column_ranges import (
    ColumnRangeError,
    InvalidColumnRanges,
    check_column_ranges,
    validated_column_ranges,
)

SCHEMA = pa.schema(
    [
        pa.field("agent_id", pa.int32()),
        pa.field("tag", pa.uint64()),
        pa.field("inventory", pa.map_(pa.string(), pa.int32())),
        pa.field("units", pa.list_(pa.list_(pa.int16()))),
        pa.field("name", pa.string()),
    ]
)


def _batch(agent_ids=(0, 1), inventory=({"ore": 3}, {}), units=([[1, 2]], [])) -> pa.RecordBatch:
    n = len(agent_ids)
    return pa.RecordBatch.from_pydict(
        {
            "agent_id": list(agent_ids),
            "tag": [2**63] * n,
            "inventory": [list(d.items()) for d in inventory],
            "units": list(units),
            "name": ["a"] * n,
        },
        schema=SCHEMA,
    )


def test_validated_ranges_accept_integer_columns_and_nested_integers() -> None:
    setting = {"agent_id": [0, 9], "inventory": [0, 100], "units": [-5, 5], "tag": [0, 2**64 - 1]}
    assert validated_column_ranges(SCHEMA, setting) == {k: tuple(v) for k, v in setting.items()}


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"agents": [0, 1]}, "'agents' is not a column"),
        ({"name": [0, 1]}, "'name' holds string, not integers"),
        ({"agent_id": [3, 1]}, "needs [low, high] with low <= high"),
        ({"agent_id": [0]}, "needs [low, high]"),
        ({"agent_id": [0, 2**31]}, "its range is [-2147483648, 2147483647]"),
        ({"tag": [-1, 3]}, "its range is [0, 18446744073709551615]"),
    ],
)
def test_invalid_settings_are_refused_naming_the_column(setting: dict, message: str) -> None:
    with pytest.raises(InvalidColumnRanges, match="column_ranges: ") as caught:
        validated_column_ranges(SCHEMA, setting)
    assert message in str(caught.value)


def test_values_inside_pass_and_the_first_value_outside_is_named() -> None:
    check_column_ranges("f.json", [_batch()], {"agent_id": (0, 1), "inventory": (0, 3), "units": (1, 2)})
    with pytest.raises(ColumnRangeError, match=r"^f.json: agent_id = 7 is outside column_ranges \[0, 1\]$"):
        check_column_ranges("f.json", [_batch(), _batch(agent_ids=(7, 1))], {"agent_id": (0, 1)})
    with pytest.raises(ColumnRangeError, match="inventory = -4 is outside"):
        check_column_ranges("f", [_batch(inventory=({"ore": -4}, {"gem": 2}))], {"inventory": (0, 3)})
    with pytest.raises(ColumnRangeError, match="units = 9 is outside"):
        check_column_ranges("f", [_batch(units=([[1], [9]], []))], {"units": (0, 3)})


def test_empty_lists_and_maps_have_nothing_to_check() -> None:
    check_column_ranges(
        "f", [_batch(inventory=({}, {}), units=([], []))], {"inventory": (0, 0), "units": (0, 0)}
    )
    check_column_ranges("f", [], {"agent_id": (0, 0)})
