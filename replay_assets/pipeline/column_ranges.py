"""Integer ranges per column: a run-config setting of every file-by-file source asset.

A reader already refuses integers that do not fit their column's type (an ``OverflowError`` never reaches
Arrow). ``column_ranges`` narrows that per run: ``{"inventory": [0, 10000]}`` makes a file whose rows hold
a value outside the range that file's failure, naming the column, the value and the range, before any of
its rows are staged. Lists and maps are checked on their integer elements (a map on its values).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from replay_assets.errors import FileFormatError, ReplayAssetsError

__all__ = [
    "ColumnRangeError",
    "InvalidColumnRanges",
    "check_column_ranges",
    "column_ranges_field",
    "validated_column_ranges",
]

ColumnRanges = Mapping[str, tuple[int, int]]


class ColumnRangeError(FileFormatError):
    """A file holds a value outside a column's configured range."""


class InvalidColumnRanges(ReplayAssetsError, ValueError):
    """The ``column_ranges`` setting names no integer column of the table, or a range that is empty."""


def column_ranges_field() -> tuple[type, Any]:
    """The ``column_ranges`` run-config field every source asset carries."""
    description = (
        "Integer range per column, e.g. {'agent_id': [0, 1023]}: a file with a value outside it (list and "
        "map columns: any element or value) is that file's failure. Default: each column's type range."
    )
    return (dict[str, list[int]], Field(default_factory=dict, description=description))


def _leaf_type(type_: pa.DataType) -> pa.DataType:
    """The element type range checks apply to: through lists and to a map's values."""
    while True:
        if pa.types.is_map(type_):
            type_ = type_.item_type
        elif pa.types.is_list(type_) or pa.types.is_large_list(type_) or pa.types.is_fixed_size_list(type_):
            type_ = type_.value_type
        else:
            return type_


def _type_range(type_: pa.DataType) -> tuple[int, int]:
    info = type_.bit_width
    if pa.types.is_signed_integer(type_):
        return -(1 << (info - 1)), (1 << (info - 1)) - 1
    return 0, (1 << info) - 1


def validated_column_ranges(
    schema: pa.Schema, setting: Mapping[str, Sequence[int]]
) -> dict[str, tuple[int, int]]:
    """The setting as ``{column: (low, high)}``, refused (naming the column) unless each entry is an
    integer column of ``schema`` with ``low <= high`` inside the column type's own range."""
    ranges: dict[str, tuple[int, int]] = {}
    for column, bounds in setting.items():
        if column not in schema.names:
            raise InvalidColumnRanges(f"column_ranges: {column!r} is not a column (columns: {schema.names})")
        leaf = _leaf_type(schema.field(column).type)
        if not pa.types.is_integer(leaf):
            raise InvalidColumnRanges(f"column_ranges: {column!r} holds {leaf}, not integers")
        if len(bounds) != 2 or not bounds[0] <= bounds[1]:
            raise InvalidColumnRanges(
                f"column_ranges: {column!r} needs [low, high] with low <= high, not {bounds}"
            )
        low, high = _type_range(leaf)
        if bounds[0] < low or bounds[1] > high:
            raise InvalidColumnRanges(f"column_ranges: {column!r} is {leaf}: its range is [{low}, {high}]")
        ranges[column] = (int(bounds[0]), int(bounds[1]))
    return ranges


def _leaf_values(array: pa.Array) -> pa.Array:
    while True:
        if isinstance(array, pa.MapArray):
            array = array.items
        elif isinstance(array, pa.ListArray | pa.LargeListArray | pa.FixedSizeListArray):
            array = array.flatten()
        else:
            return array


def check_column_ranges(name: str, batches: Iterable[pa.RecordBatch], ranges: ColumnRanges) -> None:
    """Raise ``ColumnRangeError`` naming the file (``name``) for the first value outside its range."""
    if not ranges:
        return
    for batch in batches:
        for column, (low, high) in ranges.items():
            extremes = pc.min_max(_leaf_values(batch.column(column)))
            smallest, largest = extremes["min"].as_py(), extremes["max"].as_py()
            if smallest is None:  # no values (or only nulls) in this batch
                continue
            if smallest < low or largest > high:
                value = smallest if smallest < low else largest
                raise ColumnRangeError(name, f"{column} = {value} is outside column_ranges [{low}, {high}]")
