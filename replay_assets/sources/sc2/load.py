"""PyTorch loader for ``sc2_ground_truth_frames``: one item per (replay, game loop, player) frame.

A frame's units become a fixed-size tensor ``units[max_units, len(UNIT_FEATURES)]`` with ``unit_mask``
marking real units (the rest is padding) and ``units_known`` marking which values the backend actually
knew: the tracker backend knows positions but not vitals, so a model can tell an unknown health from a
zero one. Unknown and padded values hold ``null_value``.

Frames are read one Parquet row group at a time and the last few converted groups are cached per
process, so sequential or row-group-grouped access (``RowGroupShuffleSampler``) reads every group once;
memory is bounded by the cache, never by the selected days.
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.utils.data import Dataset, Sampler

from replay_assets.sources.sc2.schema import SC2_GROUND_TRUTH_FRAMES
from replay_assets.warehouse.filters import filters_expression, parse_filters
from replay_assets.warehouse.selection import (
    BasePath,
    DateLike,
    Missing,
    RowGroup,
    Selection,
    read_row_group,
    select_partitions,
)

__all__ = ["ASSET_KEY", "STAT_FEATURES", "UNIT_FEATURES", "RowGroupShuffleSampler", "Sc2FramesDataset"]

ASSET_KEY = "sc2_ground_truth_frames"
# The fixed feature order of `units[..., k]`; booleans become 0/1. `position_age` is the frame's
# game_loop minus the unit's position_loop: how stale (x, y) is (0 from the engine).
UNIT_FEATURES = (
    "unit_type", "x", "y", "z", "health", "health_max", "shield", "energy", "build_progress",
    "is_flying", "is_complete", "position_age",
)  # fmt: skip
# The fixed order of `stats[k]`.
STAT_FEATURES = ("minerals", "vespene", "food_used", "food_cap", "food_army", "food_workers")
_FRAME_COLUMNS = ("replay_id", "game_loop", "player_id", "backend", *STAT_FEATURES, "units")
_CACHED_GROUPS = 4
_EMPTY_FRAMES = SC2_GROUND_TRUTH_FRAMES.empty_table().select(list(_FRAME_COLUMNS))


@dataclass(frozen=True)
class _Group:
    """One row group converted to NumPy: per-frame scalars, and units flattened with row offsets."""

    replay_id: list[str]
    backend: list[str]
    game_loop: np.ndarray
    player_id: np.ndarray
    stats: np.ndarray  # [rows, len(STAT_FEATURES)] float32, nulls as null_value
    stats_known: np.ndarray  # [rows, len(STAT_FEATURES)] bool
    offsets: np.ndarray  # [rows + 1] into the flat unit arrays
    units: np.ndarray  # [all units, len(UNIT_FEATURES)] float32
    units_known: np.ndarray  # [all units, len(UNIT_FEATURES)] bool


def _values(array: pa.Array, null_value: float) -> tuple[np.ndarray, np.ndarray]:
    """A column as float32 with nulls replaced, and its validity."""
    known = np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    if pa.types.is_boolean(array.type):
        array = pc.cast(array, pa.int8())
    filled = pc.fill_null(pc.cast(array, pa.float32()), null_value)
    return np.asarray(filled.to_numpy(zero_copy_only=False), dtype=np.float32), known


def _unit_arrays(units: pa.ListArray, game_loop: np.ndarray, null_value: float) -> tuple[np.ndarray, ...]:
    offsets = np.asarray(units.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
    flat = units.flatten()  # only the listed units, whatever the array's own offset
    base = offsets - offsets[0]
    count = len(flat)
    values = np.empty((count, len(UNIT_FEATURES)), dtype=np.float32)
    known = np.empty((count, len(UNIT_FEATURES)), dtype=bool)
    frame_of_unit = np.repeat(np.arange(len(game_loop)), np.diff(base))
    for k, name in enumerate(UNIT_FEATURES):
        if name == "position_age":
            loops, loop_known = _values(flat.field("position_loop"), 0.0)
            age = game_loop[frame_of_unit].astype(np.float32) - loops
            values[:, k] = np.where(loop_known, age, null_value)
            known[:, k] = loop_known
        else:
            values[:, k], known[:, k] = _values(flat.field(name), null_value)
    return base, values, known


def _convert(table: pa.Table, null_value: float) -> _Group:
    table = table.combine_chunks()
    game_loop = np.asarray(table["game_loop"].to_numpy(), dtype=np.int64)
    stats = [_values(table[name].chunk(0), null_value) for name in STAT_FEATURES] if table.num_rows else []
    units = table["units"].chunk(0) if table.num_rows else pa.array([], type=table.schema.field("units").type)
    offsets, unit_values, unit_known = _unit_arrays(units, game_loop, null_value)
    width = len(STAT_FEATURES)
    return _Group(
        replay_id=table["replay_id"].to_pylist(),
        backend=table["backend"].to_pylist(),
        game_loop=game_loop,
        player_id=np.asarray(table["player_id"].to_numpy(), dtype=np.int64),
        stats=np.stack([v for v, _ in stats], axis=1) if stats else np.zeros((0, width), np.float32),
        stats_known=np.stack([k for _, k in stats], axis=1) if stats else np.zeros((0, width), bool),
        offsets=offsets,
        units=unit_values,
        units_known=unit_known,
    )


class Sc2FramesDataset(Dataset[dict[str, Any]]):
    """Map-style dataset of ``sc2_ground_truth_frames`` rows for the chosen days, in warehouse order
    (date, then replay_id, game_loop, player_id).

    An item is a dict: ``replay_id`` (str), ``backend`` (``tracker`` | ``engine``), ``game_loop`` and
    ``player_id`` (int64 scalars), ``stats`` [6] and ``stats_known`` [6] in ``STAT_FEATURES`` order,
    ``units`` [max_units, 12] float32 in ``UNIT_FEATURES`` order, ``units_known`` (same shape, bool),
    ``unit_mask`` [max_units] bool, and ``unit_count``: the frame's real number of units (more than
    ``max_units`` means the tensor kept only the first ``max_units``, in stored order).

    Days: ``start_date``..``end_date`` (inclusive) or ``dates=[...]``; ``warehouse=`` (keyword-only, as in
    every loader; default ``REPLAY_WAREHOUSE_URI``, local or ``s3://``). ``filters=`` (the loaders'
    ``{"column": "condition"}`` grammar over ``sc2_ground_truth_frames`` columns) and ``backend`` /
    ``player_id`` / ``replay_ids`` keep only matching frames (Parquet statistics skip row groups that
    cannot match). Missing days raise ``MissingPartitionsError`` unless ``missing="skip"``.
    """

    def __init__(
        self,
        start_date: DateLike | None = None,
        end_date: DateLike | None = None,
        *,
        dates: DateLike | Sequence[DateLike] | None = None,
        warehouse: BasePath | None = None,
        filters: Mapping[str, str] | None = None,
        max_units: int = 512,
        null_value: float = 0.0,
        backend: str | None = None,
        player_id: int | None = None,
        replay_ids: Sequence[str] | None = None,
        missing: Missing = "error",
    ) -> None:
        if max_units < 1:
            raise ValueError(f"max_units must be at least 1, got {max_units}")
        where = filters_expression(parse_filters(filters, SC2_GROUND_TRUTH_FRAMES))  # before any IO
        self.max_units = max_units
        self.null_value = float(null_value)
        self.selection: Selection = select_partitions(
            ASSET_KEY,
            base_path=warehouse,
            dates=dates,
            start_date=start_date,
            end_date=end_date,
            missing=missing,
            stacklevel=2,
        )
        self._filter = _frame_filter(backend, player_id, replay_ids, where)
        self._units: list[RowGroup] = self.selection.row_groups(self._filter)
        if self._filter is None:
            self._starts = list(np.cumsum([0] + [u.num_rows for u in self._units]))
        else:  # a filter keeps an unknown share of each group: count what it keeps (one small column)
            filesystem = self.selection.filesystem()
            kept = [self._kept_rows(unit, filesystem) for unit in self._units]
            self._starts = list(np.cumsum([0, *kept]))
        self._cache: OrderedDict[int, _Group] = OrderedDict()
        self._lock = threading.Lock()

    def _kept_rows(self, unit: RowGroup, filesystem: Any) -> int:
        batches = read_row_group(unit, filesystem, ["game_loop"], self._filter, 1 << 20, use_threads=False)
        return sum(batch.num_rows for batch in batches)

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def row_group_spans(self) -> list[range]:
        """The item indices each row group holds, for samplers that keep reads sequential."""
        return [range(int(a), int(b)) for a, b in zip(self._starts, self._starts[1:], strict=False)]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_cache"] = OrderedDict()  # each DataLoader worker reads its own groups
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _read(self, group: int) -> _Group:
        unit = self._units[group]
        columns = list(_FRAME_COLUMNS)
        filesystem = self.selection.filesystem()
        batches = list(read_row_group(unit, filesystem, columns, self._filter, 1 << 20, use_threads=False))
        schema = batches[0].schema if batches else None
        table = pa.Table.from_batches(batches, schema) if batches else _EMPTY_FRAMES
        return _convert(table, self.null_value)

    def _group(self, group: int) -> _Group:
        with self._lock:
            cached = self._cache.get(group)
            if cached is not None:
                self._cache.move_to_end(group)
                return cached
        converted = self._read(group)
        with self._lock:
            self._cache[group] = converted
            while len(self._cache) > _CACHED_GROUPS:
                self._cache.popitem(last=False)
        return converted

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"frame {index} out of range for {len(self)} frames")
        group_index = bisect.bisect_right(self._starts, index) - 1
        group = self._group(group_index)
        row = index - int(self._starts[group_index])
        start, stop = int(group.offsets[row]), int(group.offsets[row + 1])
        count = stop - start
        kept = min(count, self.max_units)
        width = len(UNIT_FEATURES)
        units = np.full((self.max_units, width), self.null_value, dtype=np.float32)
        known = np.zeros((self.max_units, width), dtype=bool)
        units[:kept] = group.units[start : start + kept]
        known[:kept] = group.units_known[start : start + kept]
        mask = np.zeros(self.max_units, dtype=bool)
        mask[:kept] = True
        return {
            "replay_id": group.replay_id[row],
            "backend": group.backend[row],
            "game_loop": torch.tensor(group.game_loop[row]),
            "player_id": torch.tensor(group.player_id[row]),
            "stats": torch.from_numpy(group.stats[row].copy()),
            "stats_known": torch.from_numpy(group.stats_known[row].copy()),
            "units": torch.from_numpy(units),
            "units_known": torch.from_numpy(known),
            "unit_mask": torch.from_numpy(mask),
            "unit_count": torch.tensor(count),
        }


class RowGroupShuffleSampler(Sampler[int]):
    """Shuffles row groups, then frames within each group: random order for training without
    re-reading a Parquet row group for every item (which a plain ``shuffle=True`` would)."""

    def __init__(self, dataset: Sc2FramesDataset, seed: int = 0) -> None:
        self.spans = dataset.row_group_spans
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return sum(len(span) for span in self.spans)

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        for g in rng.permutation(len(self.spans)):
            span = self.spans[g]
            yield from (span.start + int(i) for i in rng.permutation(len(span)))


def _frame_filter(
    backend: str | None,
    player_id: int | None,
    replay_ids: Sequence[str] | None,
    where: pc.Expression | None = None,
) -> pc.Expression | None:
    """Filters as Arrow expressions (values are bound, never pasted into a query string)."""
    parts = [] if where is None else [where]
    if backend is not None:
        if backend not in ("tracker", "engine"):
            raise ValueError(f"backend must be 'tracker' or 'engine', got {backend!r}")
        parts.append(pc.field("backend") == backend)
    if player_id is not None:
        parts.append(pc.field("player_id") == int(player_id))
    if replay_ids is not None:
        parts.append(pc.field("replay_id").isin(pa.array(list(replay_ids), pa.string())))
    if not parts:
        return None
    expression = parts[0]
    for part in parts[1:]:
        expression = expression & part
    return expression
