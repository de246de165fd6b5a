"""The warehouse side of the Townlet loader: the two assets' files, read as ``datasets.townlet`` needs them.

Split out of ``sources/townlet/load.py`` so the loader reads as its public API: this module holds what
``townlet_recordings_index`` and ``townlet_episode_steps`` are to the loader (their keys, the step
columns, ``TownletRecordingRow`` and the lookup errors), the readers (``Index``: the whole index in
memory; ``StepsFile``: one day's steps file kept open, decoding only the row groups an episode is in)
and the Arrow -> NumPy conversion of steps (``step_arrays``, ``item_arrays``) shared by
``TownletReplay`` and ``TownletStepDataset``. Users import from ``datasets.townlet``, not from here.

Importing this module imports neither torch nor Dagster.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from replay_assets.errors import ReplayAssetsError
from replay_assets.sources.townlet.schema import TOWNLET_EPISODE_STEPS
from replay_assets.warehouse.selection import PartitionFile, Selection, row_group_bounds

INDEX_KEY = "townlet_recordings_index"
STEPS_KEY = "townlet_episode_steps"
# The step columns a loaded episode is built from (the context columns are the index row's).
STEP_COLUMNS = (
    "step", "x", "y", "z", "meters", "action", "reward", "intrinsic_reward", "done", "q_values", "epsilon",
    "action_masks", "time_of_day", "interaction_progress",
)  # fmt: skip
# Nullable step fields: each has a presence mask (``TownletReplay.present``, ``has_<name>`` in tensors).
OPTIONAL_FIELDS = ("position", "q_values", "epsilon", "action_masks", "time_of_day", "interaction_progress")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class EpisodeNotFoundError(ReplayAssetsError, LookupError):
    """No steps to load: the episode is not in the index, its recording is invalid, or its day lacks steps."""


class AmbiguousEpisodeError(ReplayAssetsError, LookupError):
    """An episode id names valid recordings in several checkpoints (or days): choose with ``checkpoint``."""


# ---------------------------------------------------------------------------------------------------------
# Index rows


@dataclass(frozen=True)
class TownletRecordingRow:
    """One ``townlet_recordings_index`` row: the ``episode_recordings`` columns, lineage, what the file
    holds and whether it is ``valid`` (only valid recordings have steps). Fields follow the schema
    (``formats/schemas.py``) in order; ``affordance_layout`` is a dict ``{name: [x, y]}``."""

    date: dt.date
    checkpoint: str
    episode_id: int | None
    file_path: str | None
    timestamp: float | None
    recorded_at: dt.datetime | None
    survival_steps: int | None
    total_reward: float | None
    extrinsic_reward: float | None
    intrinsic_reward: float | None
    curriculum_stage: int | None
    epsilon: float | None
    intrinsic_weight: float | None
    recording_reason: str | None
    file_size_bytes: int | None
    compressed_size_bytes: int | None
    source_uri: str
    index_uri: str | None
    file_exists: bool
    sha256: str | None
    actual_compressed_size: int | None
    actual_uncompressed_size: int | None
    compression: str | None
    version: int | None
    steps_recorded: int | None
    frames_dropped: int | None
    meter_count: int | None
    has_q_values: bool | None
    has_action_masks: bool | None
    has_temporal: bool | None
    affordance_layout: dict[str, list[int]] | None
    affordance_visits: str | None
    valid: bool
    invalid_reason: str | None

    @property
    def key(self) -> tuple[str, int | None]:
        """``(checkpoint, episode_id)``: what names an episode across checkpoints."""
        return self.checkpoint, self.episode_id

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_arrow(cls, row: dict[str, Any]) -> TownletRecordingRow:
        layout = row.get("affordance_layout")
        if layout is not None and not isinstance(layout, dict):
            row = {**row, "affordance_layout": dict(layout)}  # Arrow maps come out as (key, value) pairs
        return cls(**row)


class Index:
    """The whole ``townlet_recordings_index`` in memory, newest episode first, with lookups by episode."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table.sort_by(
            [("episode_id", "descending"), ("checkpoint", "ascending"), ("date", "ascending")]
        )
        # Rows with an episode_recordings row (file_path is NOT NULL there): what the viewer can list.
        self.listed = self.table.column("file_path").is_valid().to_numpy(zero_copy_only=False)
        self.valid = self.table.column("valid").to_numpy(zero_copy_only=False)
        self._columns = [(name, self.table.column(name).combine_chunks()) for name in self.table.column_names]
        self.dates: list[dt.date] = self.table.column("date").to_pylist()
        self.checkpoints: list[str] = self.table.column("checkpoint").to_pylist()
        self.episode_ids: list[int | None] = self.table.column("episode_id").to_pylist()
        self.by_id: dict[int, list[int]] = defaultdict(list)
        for position, episode_id in enumerate(self.episode_ids):
            if episode_id is not None:
                self.by_id[episode_id].append(position)

    def rows(self, positions: Iterable[int]) -> list[TownletRecordingRow]:
        taken = self.table.take(pa.array(np.asarray(positions, dtype=np.int64), pa.int64()))
        return [TownletRecordingRow.from_arrow(row) for row in taken.to_pylist()]

    def row(self, position: int) -> TownletRecordingRow:
        return TownletRecordingRow.from_arrow(
            {name: column[position].as_py() for name, column in self._columns}
        )

    def matching(
        self,
        *,
        stage: int | None,
        reason: str | None,
        min_reward: float | None,
        max_reward: float | None,
        checkpoint: str | None,
        valid: bool | None,
    ) -> np.ndarray:
        """Positions of listed rows matching every filter (SQL semantics: a null never matches)."""
        table = self.table
        mask = self.listed.copy()
        conditions = []
        if stage is not None:
            conditions.append(pc.equal(table.column("curriculum_stage"), stage))
        if reason is not None:
            conditions.append(pc.equal(table.column("recording_reason"), reason))
        if min_reward is not None:
            conditions.append(pc.greater_equal(table.column("total_reward"), float(min_reward)))
        if max_reward is not None:
            conditions.append(pc.less_equal(table.column("total_reward"), float(max_reward)))
        if checkpoint is not None:
            conditions.append(pc.equal(table.column("checkpoint"), checkpoint))
        for condition in conditions:
            mask &= pc.fill_null(condition, False).to_numpy(zero_copy_only=False)
        if valid is not None:
            mask &= self.valid == valid
        return np.flatnonzero(mask)

    def satisfying(self, where: pc.Expression) -> np.ndarray:
        """Per row, whether it satisfies ``where`` (a parsed ``filters=`` expression; null never does)."""
        positions = pa.array(np.arange(self.table.num_rows, dtype=np.int64))
        kept = self.table.append_column("__position", positions).filter(where).column("__position")
        mask = np.zeros(self.table.num_rows, dtype=bool)
        mask[kept.to_numpy()] = True
        return mask

    def locate(self, episode_id: int, checkpoint: str | None, where: str) -> int:
        """The position of the one valid row of ``episode_id`` (in ``checkpoint``), or a clear error."""
        found = [
            p
            for p in self.by_id.get(episode_id, ())
            if checkpoint is None or self.checkpoints[p] == checkpoint
        ]
        named = f"episode {episode_id}" + (f" of checkpoint {checkpoint!r}" if checkpoint is not None else "")
        if not found:
            elsewhere = sorted({self.checkpoints[p] for p in self.by_id.get(episode_id, ())})
            hint = f" (it is in {', '.join(map(repr, elsewhere))})" if elsewhere else ""
            raise EpisodeNotFoundError(f"{named} is not in {INDEX_KEY} under {where}{hint}")
        usable = [p for p in found if self.valid[p]]
        if not usable:
            reasons = "; ".join(str(self.table.column("invalid_reason")[p].as_py()) for p in found)
            raise EpisodeNotFoundError(f"{named} has no steps: its recording is invalid ({reasons})")
        if len(usable) > 1:
            places = ", ".join(f"{self.checkpoints[p]!r} on {self.dates[p]}" for p in usable)
            raise AmbiguousEpisodeError(
                f"{named} has {len(usable)} valid recordings ({places}): pass checkpoint= to choose"
                if checkpoint is None
                else f"{named} has {len(usable)} valid recordings ({places})"
            )
        return usable[0]


# ---------------------------------------------------------------------------------------------------------
# Steps files


class StepsFile:
    """One day's ``townlet_episode_steps`` file, kept open, and where each episode is in it.

    The footer's min/max statistics of ``checkpoint`` and ``episode_id`` say which row groups may hold an
    episode. The first time a row group is looked into, its ``episode_id`` (and, if it spans several
    checkpoints, ``checkpoint``) column is read once and kept as runs: each episode's first and last row
    in the group, a few dozen numbers per group. Loading an episode then decodes its row group(s) only up
    to the episode's last row (rows after it are never decoded) and slices the episode out.
    Reads are serialized by a lock, so one loader can serve several threads.
    """

    def __init__(self, partition: PartitionFile, selection: Selection) -> None:
        filesystem = selection.filesystem()
        source = filesystem.open_input_file(partition.path)
        # Remote: one coalesced ranged read per row group instead of one request per column chunk.
        remote = not isinstance(filesystem, pafs.LocalFileSystem)
        self._parquet = pq.ParquetFile(source, pre_buffer=remote)
        metadata = self._parquet.metadata
        self.path = partition.path
        self._checkpoints = row_group_bounds(metadata, "checkpoint")
        self._episodes = row_group_bounds(metadata, "episode_id")
        self._by_checkpoint: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._runs: dict[int, tuple[list[str] | None, np.ndarray, np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()

    def _single_checkpoint(self, group: int) -> str | None:
        names = self._checkpoints[group]
        return names[0] if names is not None and names[0] == names[1] else None

    def _candidates(self, checkpoint: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Row groups that may hold ``checkpoint`` and, for each, the episode ids it may hold: a row of
        the group lies within each column's min/max, so both bound where a (checkpoint, id) can be."""
        if checkpoint not in self._by_checkpoint:
            groups, low, high = [], [], []
            for group, (names, ids) in enumerate(zip(self._checkpoints, self._episodes, strict=True)):
                if names is not None and not names[0] <= checkpoint <= names[1]:
                    continue
                groups.append(group)
                low.append(ids[0] if ids is not None else _INT64_MIN)
                high.append(ids[1] if ids is not None else _INT64_MAX)
            self._by_checkpoint[checkpoint] = (
                np.array(groups, np.int64),
                np.array(low, np.int64),
                np.array(high, np.int64),
            )
        return self._by_checkpoint[checkpoint]

    def _group_runs(self, group: int) -> tuple[list[str] | None, np.ndarray, np.ndarray, np.ndarray]:
        """``(checkpoint per run or None if the group has one, episode id, first row, end row)`` per run
        of equal keys in the group; called with the lock held."""
        runs = self._runs.get(group)
        if runs is None:
            single = self._single_checkpoint(group)
            columns = ["episode_id"] if single is not None else ["episode_id", "checkpoint"]
            keys = self._parquet.read_row_group(group, columns=columns)
            ids = keys.column("episode_id").to_numpy()
            change = ids[1:] != ids[:-1]
            if single is None:
                names = _array(keys.column("checkpoint")).cast(pa.string())
                change |= pc.not_equal(names[1:], names[:-1]).to_numpy(zero_copy_only=False)
            starts = np.concatenate([[0], np.flatnonzero(change) + 1]).astype(np.int64)
            ends = np.append(starts[1:], len(ids)).astype(np.int64)
            run_names = None if single is not None else names.take(pa.array(starts)).to_pylist()
            runs = self._runs[group] = (run_names, ids[starts], starts, ends)
        return runs

    def read_episode(self, checkpoint: str, episode_id: int, columns: tuple[str, ...]) -> pa.Table:
        """The episode's rows (``columns`` only), in file order; an empty table if the file lacks it."""
        pieces = []
        with self._lock:
            groups, low, high = self._candidates(checkpoint)
            for group in groups[(low <= episode_id) & (episode_id <= high)].tolist():
                names, ids, starts, ends = self._group_runs(group)
                hits = np.flatnonzero(ids == episode_id)
                if names is not None:
                    hits = hits[[names[h] == checkpoint for h in hits.tolist()]]
                if len(hits) > 1:
                    raise ReplayAssetsError(
                        f"{self.path}: the rows of episode {episode_id} ({checkpoint}) are not contiguous: "
                        f"{STEPS_KEY} must be sorted by (checkpoint, episode_id, step)"
                    )
                if len(hits):
                    start, end = int(starts[hits[0]]), int(ends[hits[0]])
                    # Decode the group only up to the episode's last row: one batch of `end` rows.
                    batches = self._parquet.iter_batches(batch_size=end, row_groups=[group], columns=columns)
                    try:
                        pieces.append(next(batches).slice(start, end - start))
                    finally:
                        batches.close()
        if not pieces:
            return TOWNLET_EPISODE_STEPS.empty_table().select(list(columns))
        return pa.Table.from_batches(pieces)

    def close(self) -> None:
        with self._lock:
            self._parquet.close()


# ---------------------------------------------------------------------------------------------------------
# Arrow steps -> NumPy arrays


def _array(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    return column


def _values(column: pa.ChunkedArray | pa.Array, fill: Any) -> tuple[np.ndarray, np.ndarray]:
    """A primitive column as NumPy, nulls replaced by ``fill``, and its presence mask."""
    array = _array(column)
    n, nulls = len(array), array.null_count
    if not nulls:
        return array.to_numpy(zero_copy_only=False), np.ones(n, dtype=bool)
    if nulls == n:
        return np.full(n, fill, dtype=array.type.to_pandas_dtype()), np.zeros(n, dtype=bool)
    filled = pc.fill_null(array, fill).to_numpy(zero_copy_only=False)
    return filled, array.is_valid().to_numpy(zero_copy_only=False)


def _fixed_lists(
    column: pa.ChunkedArray, dtype: np.dtype, fill: Any, name: str
) -> tuple[np.ndarray, np.ndarray]:
    """A list column whose non-null lists all have one length L as ``(rows, L)`` values (``fill`` where the
    list is null) and the per-row presence mask; lists of different lengths are an error."""
    array = _array(column)
    n, nulls = len(array), array.null_count
    if not nulls:
        present = np.ones(n, dtype=bool)
    else:
        present = np.zeros(n, dtype=bool) if nulls == n else array.is_valid().to_numpy(zero_copy_only=False)
    offsets = array.offsets.to_numpy()  # of this (possibly sliced) array: n + 1 absolute positions
    lengths = np.diff(offsets)[present] if nulls else np.diff(offsets)
    if lengths.size and (lengths != lengths[0]).any():
        raise ReplayAssetsError(
            f"{name} has lists of different lengths {sorted(set(lengths.tolist()))}: "
            "use episodes of one configuration (one checkpoint) together"
        )
    width = int(lengths[0]) if lengths.size else 0
    if not width:
        return np.full((n, 0), fill, dtype=dtype), present
    # Without nulls the values are one contiguous run of the child; flatten() skips null lists' values.
    child = array.values.slice(offsets[0], offsets[-1] - offsets[0]) if not nulls else array.flatten()
    flat = _values(child, fill)[0].astype(dtype, copy=False).reshape(-1, width)
    if not nulls:
        return flat, present
    out = np.full((n, width), fill, dtype=dtype)
    out[present] = flat
    return out, present


def step_arrays(table: pa.Table) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
    """Step columns as NumPy arrays, nulls filled (NaN for floats, -1 for ints, False for bools), the
    presence mask of every optional field, and each step's number of coordinates (0, 2 or 3).
    Arrays are read-only."""
    n = table.num_rows
    (x, has_x), (y, _), (z, has_z) = (_values(table.column(axis), -1) for axis in "xyz")
    dims = np.where(has_x, np.where(has_z, 3, 2), 0).astype(np.int8)
    dim = int(dims.max()) if n else 0
    position = np.stack([x, y, z][:dim], axis=1) if dim else np.full((n, 0), -1, dtype=np.int32)
    meters, _ = _fixed_lists(table.column("meters"), np.dtype(np.float32), np.nan, "meters")
    q_values, has_q = _fixed_lists(table.column("q_values"), np.dtype(np.float32), np.nan, "q_values")
    masks, has_masks = _fixed_lists(table.column("action_masks"), np.dtype(np.bool_), False, "action_masks")
    epsilon, has_epsilon = _values(table.column("epsilon"), math.nan)
    time_of_day, has_time = _values(table.column("time_of_day"), -1)
    progress, has_progress = _values(table.column("interaction_progress"), math.nan)
    arrays = {
        "step": _values(table.column("step"), -1)[0],
        "position": position,
        "meters": meters,
        "action": _values(table.column("action"), -1)[0],
        "reward": _values(table.column("reward"), math.nan)[0],
        "intrinsic_reward": _values(table.column("intrinsic_reward"), math.nan)[0],
        "done": _values(table.column("done"), False)[0],
        "q_values": q_values,
        "epsilon": epsilon,
        "action_masks": masks,
        "time_of_day": time_of_day,
        "interaction_progress": progress,
    }
    present = {
        "position": has_x,
        "q_values": has_q,
        "epsilon": has_epsilon,
        "action_masks": has_masks,
        "time_of_day": has_time,
        "interaction_progress": has_progress,
    }
    for values in (*arrays.values(), *present.values(), dims):
        values.flags.writeable = False
    return arrays, present, dims


def item_arrays(arrays: Mapping[str, np.ndarray], present: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The tensor layout shared by ``TownletReplay.tensors()`` and ``TownletStepDataset`` items: integers
    as int64, floats as stored (meters and q-values float32, the rest float64), each optional field
    followed by its ``has_<name>`` mask."""
    out: dict[str, np.ndarray] = {}
    for name, values in arrays.items():
        out[name] = values.astype(np.int64) if values.dtype.kind in "iu" else values
        if name in present:
            out[f"has_{name}"] = present[name]
    return out
