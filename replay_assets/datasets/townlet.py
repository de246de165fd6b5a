"""Townlet recordings from the warehouse: list them like the replay viewer, load one to play it back, train.

- ``TownletRecordings(warehouse)``: ``list(...)`` the recordings with the replay server's filters and
  order, ``load(episode_id)`` one episode (its index row and its steps) in about a millisecond.
- ``TownletReplay``: a loaded episode. ``len``, iteration and ``episode[i]`` go over the *recorded*
  steps in order; ``seek(step)`` goes by step number; ``columns`` / ``column(name)`` are NumPy arrays,
  ``tensors()`` the same as torch tensors.
- ``TownletStep``: one recorded step, as plain Python values in the recording's own shape.
- ``TownletStepDataset``: a map-style dataset for ``torch.utils.data.DataLoader``: one item per step,
  or per window of ``k`` consecutive recorded steps of one episode.

Reads ``townlet_recordings_index`` (small: loaded once per loader and kept) and
``townlet_episode_steps`` (sorted by checkpoint, episode and step, in row groups of a few dozen
episodes). ``load`` finds the episode's day from the index, then the row group(s) holding it from the
Parquet footer's min/max statistics of ``checkpoint`` and ``episode_id`` (footers are read once per
day and the file kept open), decodes those row groups only up to the episode's last row and slices
the episode out (see ``_StepsFile``).

The warehouse is read as it was when first touched: call ``refresh()`` after materializing again.
Importing this module imports neither torch (only ``tensors()`` and the dataset's items need it) nor
Dagster. Like ``TownletRecordings``, the dataset pickles into DataLoader workers.
"""

from __future__ import annotations

import builtins
import datetime as dt
import math
import operator
import threading
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from upath import UPath

from replay_assets.datasets.warehouse import (
    BasePath,
    MissingPartitionsError,
    MissingPartitionsWarning,
    PartitionFile,
    Selection,
    resolve_warehouse,
    row_group_bounds,
    select_partitions,
)
from replay_assets.errors import ReplayAssetsError
from replay_assets.formats.schemas import TOWNLET_EPISODE_STEPS, TOWNLET_RECORDINGS_INDEX

if TYPE_CHECKING:
    import torch

__all__ = [
    "INDEX_KEY",
    "STEPS_KEY",
    "AmbiguousEpisodeError",
    "EpisodeNotFoundError",
    "TownletRecordingRow",
    "TownletRecordings",
    "TownletReplay",
    "TownletStep",
    "TownletStepDataset",
]

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
_MISSING_STEPS_HINT = "materialize townlet_episode_steps for that day, or call refresh() if you just did"


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


class _Index:
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


class _StepsFile:
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


def _step_arrays(table: pa.Table) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
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


def _item_arrays(
    arrays: Mapping[str, np.ndarray], present: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The tensor layout shared by ``TownletReplay.tensors()`` and ``TownletStepDataset`` items: integers
    as int64, floats as stored (meters and q-values float32, the rest float64), each optional field
    followed by its ``has_<name>`` mask."""
    out: dict[str, np.ndarray] = {}
    for name, values in arrays.items():
        out[name] = values.astype(np.int64) if values.dtype.kind in "iu" else values
        if name in present:
            out[f"has_{name}"] = present[name]
    return out


# ---------------------------------------------------------------------------------------------------------
# One episode


@dataclass(frozen=True)
class TownletStep:
    """One recorded step, with the recording's own values: ``position`` is ``()``, ``(x, y)`` or
    ``(x, y, z)``; meters and q-values are the float32 values as Python floats; the optional fields are
    None where the producer wrote nil. ``as_dict()`` gives the recording's step map exactly."""

    step: int
    position: tuple[int, ...]
    meters: tuple[float, ...]
    action: int
    reward: float
    intrinsic_reward: float
    done: bool
    q_values: tuple[float, ...] | None
    epsilon: float | None
    action_masks: tuple[bool, ...] | None
    time_of_day: int | None
    interaction_progress: float | None

    def as_dict(self) -> dict[str, Any]:
        """The step as the recording's msgpack map decodes (lists, not tuples)."""
        out = asdict(self)
        for key in ("position", "meters", "q_values", "action_masks"):
            if out[key] is not None:
                out[key] = list(out[key])
        return out


class TownletReplay:
    """One loaded episode: ``info`` (its index row) and its recorded steps.

    * ``len(episode)``, ``for step in episode``, ``episode[i]`` (``i``-th recorded step, negative from the
      end) go over the recorded steps in order, as ``TownletStep`` records. Where the producer dropped
      frames the step numbers jump: ``len`` is ``info.steps_recorded``, not ``survival_steps``.
    * ``seek(step)`` goes by step number: the record of the last recorded step ``<= step``, i.e. what
      the episode looked like at that step (a dropped frame shows the frame before it, as a player
      would). ``exact=True`` raises ``KeyError`` for a dropped step instead. A step before the first
      recorded one raises ``KeyError``; one outside the episode (``< 0`` or past both
      ``survival_steps - 1`` and the last recorded step) raises ``IndexError``. (The producer's own
      ``ReplayManager.seek`` takes a list index: that is ``episode[i]`` here.)
    * ``columns`` (and ``column(name)``): read-only NumPy arrays, one row per recorded step:
      ``step`` int32, ``position`` (n, D) int32 with D = 2 or 3 (0 if no step has one), ``meters``
      (n, M) float32, ``action`` int32, ``reward`` / ``intrinsic_reward`` float64, ``done`` bool,
      ``q_values`` (n, A) float32, ``epsilon`` float64, ``action_masks`` (n, A) bool, ``time_of_day``
      int32, ``interaction_progress`` float64. Where an optional field is null: NaN for floats, -1 for
      ints, False for bools, and ``present(name)`` is False (``OPTIONAL_FIELDS``).
    * ``tensors()``: the same as torch tensors in the dataset's item layout (see ``TownletStepDataset``).
    """

    def __init__(
        self,
        info: TownletRecordingRow,
        arrays: dict[str, np.ndarray],
        present: dict[str, np.ndarray],
        dims: np.ndarray,
    ) -> None:
        self.info = info
        self._arrays = arrays
        self._present = present
        self._dims = dims
        self._records: list[TownletStep] | None = None

    # -- metadata
    @property
    def episode_id(self) -> int:
        assert self.info.episode_id is not None
        return self.info.episode_id

    @property
    def checkpoint(self) -> str:
        return self.info.checkpoint

    @property
    def steps(self) -> np.ndarray:
        """The recorded step numbers, increasing."""
        return self._arrays["step"]

    @property
    def length(self) -> int:
        """Steps the episode lasted: ``survival_steps``, or more if more were recorded."""
        last = int(self.steps[-1]) + 1 if len(self.steps) else 0
        return max(self.info.survival_steps or 0, last)

    @property
    def missing_steps(self) -> np.ndarray:
        """Step numbers in ``range(length)`` the producer dropped."""
        return np.setdiff1d(np.arange(self.length, dtype=np.int64), self.steps.astype(np.int64))

    # -- columns
    @property
    def columns(self) -> dict[str, np.ndarray]:
        return dict(self._arrays)

    def column(self, name: str) -> np.ndarray:
        try:
            return self._arrays[name]
        except KeyError:
            raise KeyError(f"no column {name!r}; columns: {', '.join(self._arrays)}") from None

    def present(self, name: str) -> np.ndarray:
        """Per recorded step, whether the optional field ``name`` was recorded (not nil / not ``[]``)."""
        if name in self._present:
            return self._present[name]
        if name in self._arrays:
            return np.ones(len(self), dtype=bool)
        raise KeyError(f"no column {name!r}; columns: {', '.join(self._arrays)}")

    def tensors(self) -> dict[str, torch.Tensor]:
        import torch

        return {
            k: torch.from_numpy(np.array(v)) for k, v in _item_arrays(self._arrays, self._present).items()
        }

    # -- steps
    def __len__(self) -> int:
        return len(self._arrays["step"])

    def _all_records(self) -> list[TownletStep]:
        if self._records is None:
            a, p = self._arrays, self._present
            positions = [
                tuple(xyz[:dim]) for xyz, dim in zip(a["position"].tolist(), self._dims.tolist(), strict=True)
            ]

            def optional(name: str, as_tuple: bool = False) -> list[Any]:
                values = a[name].tolist()
                return [
                    (tuple(v) if as_tuple else v) if has else None
                    for v, has in zip(values, p[name].tolist(), strict=True)
                ]

            self._records = [
                TownletStep(*fields)
                for fields in zip(
                    a["step"].tolist(), positions, map(tuple, a["meters"].tolist()), a["action"].tolist(),
                    a["reward"].tolist(), a["intrinsic_reward"].tolist(), a["done"].tolist(),
                    optional("q_values", True), optional("epsilon"), optional("action_masks", True),
                    optional("time_of_day"), optional("interaction_progress"), strict=True,
                )
            ]  # fmt: skip
        return self._records

    def __iter__(self) -> Iterator[TownletStep]:
        return iter(self._all_records())

    def __getitem__(self, index: int) -> TownletStep:
        i = operator.index(index)
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} recorded steps")
        return self._all_records()[i]

    def index_of(self, step: int, exact: bool = False) -> int:
        """The position (row) of ``seek(step)``'s record; same rules and errors as ``seek``."""
        s = operator.index(step)
        if not 0 <= s < self.length:
            raise IndexError(f"step {s} is outside episode {self.episode_id} (steps 0..{self.length - 1})")
        i = int(np.searchsorted(self.steps, s, side="right")) - 1
        if i < 0:
            raise KeyError(
                f"step {s} of episode {self.episode_id} precedes its first recorded step {self.steps[0]}"
            )
        if exact and self.steps[i] != s:
            raise KeyError(
                f"step {s} of episode {self.episode_id} was dropped by the producer "
                f"(last recorded before it: {self.steps[i]})"
            )
        return i

    def seek(self, step: int, exact: bool = False) -> TownletStep:
        """The last recorded step ``<= step`` (exactly ``step`` with ``exact=True``): see the class doc."""
        return self[self.index_of(step, exact)]

    def __repr__(self) -> str:
        return (
            f"TownletReplay(checkpoint={self.checkpoint!r}, episode_id={self.info.episode_id}, "
            f"steps_recorded={len(self)}, survival_steps={self.info.survival_steps})"
        )


# ---------------------------------------------------------------------------------------------------------
# The loader


def _check_int(name: str, value: Any, low: int | None = None) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | np.integer)
        or (low is not None and value < low)
    ):
        bound = f" >= {low}" if low is not None else ""
        raise ValueError(f"{name} must be an integer{bound}, got {value!r}")


def _check_filters(
    stage: Any, reason: Any, min_reward: Any, max_reward: Any, checkpoint: Any, valid: Any
) -> None:
    if stage is not None:
        _check_int("stage", stage)
    for name, value in (("reason", reason), ("checkpoint", checkpoint)):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{name} must be a string, got {value!r}")
    for name, value in (("min_reward", min_reward), ("max_reward", max_reward)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float | np.number)):
            raise ValueError(f"{name} must be a number, got {value!r}")
    if valid is not None and not isinstance(valid, bool):
        raise ValueError(f"valid must be True, False or None, got {valid!r}")


class TownletRecordings:
    """The Townlet recordings of a warehouse (default ``REPLAY_WAREHOUSE_URI``; a local folder or
    ``s3://...``, with the AWS variables as everywhere else).

    ``list(stage, reason, min_reward, max_reward, limit=100)`` mirrors the replay server's
    ``list_recordings`` (``DemoDatabase.list_recordings``): ``curriculum_stage = stage``,
    ``recording_reason = reason``, ``min_reward <= total_reward <= max_reward``, ``ORDER BY episode_id
    DESC LIMIT limit``; ``limit=None`` for all. It lists every index row that has an
    ``episode_recordings`` row, valid or not (the viewer lists what its database holds, including
    recordings whose file is missing or broken): each row says ``valid`` and ``invalid_reason``, and
    ``valid=True`` keeps only the loadable ones. Files the database does not name (orphans) are never
    listed: the viewer cannot see them either. Beyond the viewer: ``checkpoint=`` (a warehouse can hold
    several; equal episode ids then sort by checkpoint name).

    ``load(episode_id, checkpoint=None)``: a ``TownletReplay``. ``checkpoint`` is needed only when the
    id has valid recordings in several checkpoints (``AmbiguousEpisodeError`` otherwise); an unknown
    id, an invalid recording or a day without steps raise ``EpisodeNotFoundError`` with the reason.

    State: the index is read on first use and kept; each day's steps file is opened on first use and
    kept open with its footer. ``refresh()`` drops both (call it after materializing again), ``close()``
    closes the files. Loads are thread-safe. Pickling (DataLoader workers) carries only the location.
    """

    def __init__(self, warehouse: BasePath | None = None) -> None:
        self._root: UPath = resolve_warehouse(warehouse, INDEX_KEY)
        self._state_lock = threading.Lock()
        self._index_cache: _Index | None = None
        self._steps: Selection | None = None
        self._files: dict[dt.date, _StepsFile] = {}

    @property
    def warehouse_uri(self) -> str:
        return str(self._root)

    def __repr__(self) -> str:
        return f"TownletRecordings({self.warehouse_uri!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {"_root": self._root}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["_root"])  # type: ignore[misc]

    def __enter__(self) -> TownletRecordings:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- state
    def close(self) -> None:
        """Close the open steps files (they reopen on the next load)."""
        with self._state_lock:
            files, self._files, self._steps = self._files, {}, None
        for file in files.values():
            file.close()

    def refresh(self) -> None:
        """Forget the index and the open files: the next call sees the warehouse as it is now."""
        self.close()
        self._index_cache = None

    def _index(self) -> _Index:
        index = self._index_cache
        if index is None:
            selection = select_partitions(INDEX_KEY, base_path=self._root, missing="error", stacklevel=3)
            index = self._index_cache = _Index(selection.read_table(TOWNLET_RECORDINGS_INDEX.names))
        return index

    def _steps_file(self, day: dt.date) -> _StepsFile:
        file = self._files.get(day)
        if file is not None:
            return file
        with self._state_lock:
            for attempt in range(2):  # a day written or removed since the last listing: list again, once
                if self._steps is None or attempt:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", MissingPartitionsWarning)
                        self._steps = select_partitions(STEPS_KEY, base_path=self._root, missing="skip")
                partition = next((f for f in self._steps.files if f.day == day), None)
                if partition is None:
                    continue
                try:
                    file = self._files.get(day) or _StepsFile(partition, self._steps)
                except FileNotFoundError:
                    continue
                self._files[day] = file
                return file
            where = f"{STEPS_KEY} has no partition for {day} under {self.warehouse_uri}"
            raise MissingPartitionsError(f"{where}: {_MISSING_STEPS_HINT}")

    # -- the viewer's calls
    def list(
        self,
        stage: int | None = None,
        reason: str | None = None,
        min_reward: float | None = None,
        max_reward: float | None = None,
        limit: int | None = 100,
        *,
        checkpoint: str | None = None,
        valid: bool | None = None,
    ) -> builtins.list[TownletRecordingRow]:
        """Recordings newest episode first (``episode_id`` descending), filtered like the viewer: see the
        class doc."""
        _check_filters(stage, reason, min_reward, max_reward, checkpoint, valid)
        if limit is not None:
            _check_int("limit", limit, low=0)
        index = self._index()
        positions = index.matching(
            stage=stage,
            reason=reason,
            min_reward=min_reward,
            max_reward=max_reward,
            checkpoint=checkpoint,
            valid=valid,
        )
        return index.rows(positions if limit is None else positions[:limit])

    def info(self, episode_id: int, checkpoint: str | None = None) -> TownletRecordingRow:
        """The index row ``load`` would use, without reading any step."""
        _check_int("episode_id", episode_id)
        index = self._index()
        return index.row(index.locate(int(episode_id), checkpoint, self.warehouse_uri))

    def load(self, episode_id: int, checkpoint: str | None = None) -> TownletReplay:
        """One episode's index row and recorded steps: see ``TownletReplay``."""
        _check_int("episode_id", episode_id)
        episode_id = int(episode_id)
        index = self._index()
        position = index.locate(episode_id, checkpoint, self.warehouse_uri)
        day, name = index.dates[position], index.checkpoints[position]
        table = self._steps_file(day).read_episode(name, episode_id, STEP_COLUMNS)
        info = index.row(position)
        if not table.num_rows:
            raise EpisodeNotFoundError(
                f"episode {episode_id} of {name!r} is valid in {INDEX_KEY} but has no rows in {STEPS_KEY} "
                f"for {day} (it failed to decode there, or the steps are older than the index): "
                f"{_MISSING_STEPS_HINT}"
            )
        return TownletReplay(info, *_step_arrays(table))

    # -- choosing episodes (for the dataset)
    def _resolve(
        self,
        episodes: Iterable[Any] | None,
        *,
        checkpoint: str | None,
        stage: int | None,
        reason: str | None,
        min_reward: float | None,
        max_reward: float | None,
    ) -> builtins.list[int]:
        """Index positions of valid recordings: the given episodes, or every one matching the filters."""
        _check_filters(stage, reason, min_reward, max_reward, checkpoint, None)
        index = self._index()
        if episodes is None:
            found = index.matching(
                stage=stage,
                reason=reason,
                min_reward=min_reward,
                max_reward=max_reward,
                checkpoint=checkpoint,
                valid=True,
            )
            return found.tolist()
        if any(f is not None for f in (stage, reason, min_reward, max_reward)):
            raise ValueError(
                "pass either episodes=[...] or filters (stage, reason, min/max_reward), not both"
            )
        if isinstance(episodes, str | bytes):
            raise ValueError(f"episodes must be a list, got {episodes!r}")
        positions = []
        for item in episodes:
            if isinstance(item, TownletRecordingRow):
                name, episode_id = item.checkpoint, item.episode_id
            elif isinstance(item, tuple) and len(item) == 2:
                name, episode_id = item
            else:
                name, episode_id = checkpoint, item
            _check_int("episode id", episode_id)
            positions.append(index.locate(int(episode_id), name, self.warehouse_uri))
        return list(dict.fromkeys(positions))


# ---------------------------------------------------------------------------------------------------------
# Training


class TownletStepDataset:
    """Map-style dataset of recorded steps for ``DataLoader(ds, batch_size=64, shuffle=True)``.

    ``source``: a ``TownletRecordings`` or a warehouse location (default ``REPLAY_WAREHOUSE_URI``).
    Episodes: ``episodes=[...]`` (episode ids, ``(checkpoint, episode_id)`` pairs or rows from
    ``list()``), else every *valid* recording matching ``checkpoint``/``stage``/``reason``/
    ``min_reward``/``max_reward`` (the ``list()`` filters, no limit). ``ds.episodes`` lists them as
    ``(checkpoint, episode_id)``, ordered by checkpoint then id.

    ``window=None``: one item per recorded step. ``window=k``: one item per run of ``k`` consecutive
    *recorded* steps of one episode (stride 1; never across an episode boundary; episodes shorter than
    ``k`` give none); every field then has a leading time axis of length ``k``. Such a run may span
    frames the producer dropped (its ``step`` values then jump); ``contiguous_only=True`` keeps only
    windows whose step numbers are consecutive.

    An item (for a window, each value with a leading ``k`` axis)::

        episode_index int64 (into ds.episodes), episode_id int64, step int64,
        position (D,) int64, has_position bool, meters (M,) float32, action int64,
        reward float64, intrinsic_reward float64, done bool,
        q_values (A,) float32, has_q_values bool, epsilon float64, has_epsilon bool,
        action_masks (A,) bool, has_action_masks bool, time_of_day int64, has_time_of_day bool,
        interaction_progress float64, has_interaction_progress bool

    Where an optional field is null its ``has_`` flag is False and the value NaN (floats), -1 (ints) or
    False (bools). D, M and A are fixed over the dataset (``ds.position_dim``, ``ds.meter_count``,
    ``ds.num_actions``): episodes with different meter or action counts cannot be mixed (select one
    checkpoint). The selected steps are held in memory as tensors (about 170 bytes a step; a few times
    that while they are read).
    """

    def __init__(
        self,
        source: TownletRecordings | BasePath | None = None,
        episodes: Iterable[Any] | None = None,
        *,
        checkpoint: str | None = None,
        stage: int | None = None,
        reason: str | None = None,
        min_reward: float | None = None,
        max_reward: float | None = None,
        window: int | None = None,
        contiguous_only: bool = False,
    ) -> None:
        import torch

        if window is not None:
            _check_int("window", window, low=1)
        if contiguous_only and window is None:
            raise ValueError("contiguous_only=True needs a window")
        recordings = source if isinstance(source, TownletRecordings) else TownletRecordings(source)
        self.warehouse_uri = recordings.warehouse_uri
        self.window = window
        self.contiguous_only = contiguous_only
        positions = recordings._resolve(
            episodes,
            checkpoint=checkpoint,
            stage=stage,
            reason=reason,
            min_reward=min_reward,
            max_reward=max_reward,
        )
        index = recordings._index()
        chosen = sorted((index.checkpoints[p], index.episode_ids[p], index.dates[p]) for p in positions)
        self.episodes: list[tuple[str, int]] = [(name, episode_id) for name, episode_id, _ in chosen]
        twice = sorted({e for e, n in Counter(self.episodes).items() if n > 1})
        if twice:
            raise AmbiguousEpisodeError(
                f"{len(twice)} episode(s) have valid recordings on several days, e.g. {twice[0]}: "
                "pass episodes=[...] rows from list() to choose"
            )
        table = self._read(recordings, chosen)
        codes = self._codes(table, chosen)
        steps = table.column("step").to_numpy()
        order = np.lexsort((steps, codes))
        if (np.diff(order) != 1).any():  # the files' order already is (checkpoint, episode, step) per day
            table, codes, steps = table.take(pa.array(order)), codes[order], steps[order]
        if len(codes) > 1 and ((codes[1:] == codes[:-1]) & (steps[1:] <= steps[:-1])).any():
            raise ReplayAssetsError(f"{STEPS_KEY} under {self.warehouse_uri} holds a step twice")
        self._check_counts(index, positions, codes, len(chosen))
        arrays, present, _ = _step_arrays(table)
        self.position_dim = arrays["position"].shape[1]
        self.meter_count = arrays["meters"].shape[1]
        self.num_actions = max(arrays["q_values"].shape[1], arrays["action_masks"].shape[1])
        columns = {
            "episode_index": codes.astype(np.int64),
            "episode_id": table.column("episode_id").to_numpy().astype(np.int64),
            **_item_arrays(arrays, present),
        }
        self._tensors = {name: torch.from_numpy(np.array(values)) for name, values in columns.items()}
        self._starts = self._window_starts(codes, steps)

    @staticmethod
    def _read(recordings: TownletRecordings, chosen: list[tuple[str, int, dt.date]]) -> pa.Table:
        """The chosen episodes' steps: their days only, pruned to their row groups by the filter."""
        wanted = ["checkpoint", "episode_id", *STEP_COLUMNS]
        if not chosen:
            return TOWNLET_EPISODE_STEPS.empty_table().select(wanted)
        groups: dict[tuple[dt.date, str], list[int]] = defaultdict(list)
        for name, episode_id, day in chosen:
            groups[(day, name)].append(episode_id)
        where = None
        for (day, name), ids in groups.items():
            term = (
                (pc.field("date") == pa.scalar(day, pa.date32()))
                & (pc.field("checkpoint") == name)
                & pc.field("episode_id").isin(pa.array(ids, pa.int64()))
            )
            where = term if where is None else where | term
        selection = select_partitions(
            STEPS_KEY, base_path=recordings._root, dates=sorted({day for day, _ in groups}), missing="error"
        )
        return selection.read_table(wanted, where)

    @staticmethod
    def _codes(table: pa.Table, chosen: list[tuple[str, int, dt.date]]) -> np.ndarray:
        """Each row's position in ``chosen`` (sorted by checkpoint then id)."""
        codes = np.full(table.num_rows, -1, dtype=np.int64)
        ids = table.column("episode_id").to_numpy()
        names = table.column("checkpoint")
        by_name: dict[str, list[int]] = defaultdict(list)
        for code, (name, _, _) in enumerate(chosen):
            by_name[name].append(code)
        for name, block in by_name.items():
            rows = np.flatnonzero(pc.equal(names, name).to_numpy(zero_copy_only=False))
            known = np.array([chosen[c][1] for c in block], dtype=np.int64)  # ascending, as chosen is
            at = np.minimum(np.searchsorted(known, ids[rows]), len(known) - 1)
            hit = known[at] == ids[rows]
            codes[rows[hit]] = np.asarray(block, dtype=np.int64)[at[hit]]
        if (codes < 0).any():
            raise ReplayAssetsError("steps of an episode that was not asked for were read")
        return codes

    def _check_counts(self, index: _Index, positions: list[int], codes: np.ndarray, episodes: int) -> None:
        """Every chosen episode has exactly the steps its index row says were recorded."""
        counts = np.bincount(codes, minlength=episodes)
        recorded = index.table.column("steps_recorded").take(pa.array(positions, pa.int64())).to_pylist()
        keys = ((index.checkpoints[p], index.episode_ids[p]) for p in positions)
        expected = dict(zip(keys, recorded, strict=True))
        wrong = [
            f"{name}/{episode_id}: {counts[code]} rows, index says {expected[(name, episode_id)]}"
            for code, (name, episode_id) in enumerate(self.episodes)
            if counts[code] != expected[(name, episode_id)]
        ]
        if wrong:
            raise EpisodeNotFoundError(
                f"{STEPS_KEY} under {self.warehouse_uri} disagrees with {INDEX_KEY} for {len(wrong)} "
                f"episode(s) ({'; '.join(wrong[:5])}): {_MISSING_STEPS_HINT}"
            )

    def _window_starts(self, codes: np.ndarray, steps: np.ndarray) -> np.ndarray:
        n = len(codes)
        if self.window is None:
            return np.arange(n, dtype=np.int64)
        k = self.window
        starts = np.arange(max(n - k + 1, 0), dtype=np.int64)
        keep = codes[starts] == codes[starts + k - 1]  # rows of an episode are contiguous and sorted
        if self.contiguous_only:
            keep &= steps[starts + k - 1].astype(np.int64) - steps[starts] == k - 1
        return starts[keep]

    def __len__(self) -> int:
        return len(self._starts)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        i = operator.index(index)
        n = len(self._starts)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} items")
        row = int(self._starts[i])
        if self.window is None:
            return {name: values[row].clone() for name, values in self._tensors.items()}
        stop = row + self.window
        return {name: values[row:stop].clone() for name, values in self._tensors.items()}

    def __repr__(self) -> str:
        return (
            f"TownletStepDataset({self.warehouse_uri!r}, episodes={len(self.episodes)}, items={len(self)}, "
            f"window={self.window}, contiguous_only={self.contiguous_only})"
        )
