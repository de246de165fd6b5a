"""Townlet recordings from the warehouse: list them like the replay viewer, load one to play it back, train.

- ``TownletRecordings(warehouse=...)``: ``list(...)`` the recordings with the replay server's filters and
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
the episode out (see ``townlet_files.StepsFile``).

The warehouse is read as it was when first touched: call ``refresh()`` after materializing again.
Importing this module imports neither torch (only ``tensors()`` and the dataset's items need it) nor
Dagster. Like ``TownletRecordings``, the dataset pickles into DataLoader workers.
"""

from __future__ import annotations

import builtins
import datetime as dt
import operator
import threading
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from upath import UPath

from replay_assets.errors import ReplayAssetsError
from replay_assets.sources.townlet.load_files import (
    INDEX_KEY,
    OPTIONAL_FIELDS,
    STEP_COLUMNS,
    STEPS_KEY,
    AmbiguousEpisodeError,
    EpisodeNotFoundError,
    Index,
    StepsFile,
    TownletRecordingRow,
    item_arrays,
    step_arrays,
)
from replay_assets.sources.townlet.replay import TownletReplay, TownletStep
from replay_assets.sources.townlet.schema import TOWNLET_EPISODE_STEPS, TOWNLET_RECORDINGS_INDEX
from replay_assets.warehouse.filters import filters_expression, parse_filters
from replay_assets.warehouse.selection import (
    UNSET,
    BasePath,
    DateLike,
    MissingPartitionsError,
    MissingPartitionsWarning,
    Selection,
    parse_day,
    resolve_warehouse,
    select_partitions,
    warehouse_argument,
)

if TYPE_CHECKING:
    import torch

__all__ = [
    "INDEX_KEY",
    "OPTIONAL_FIELDS",
    "STEPS_KEY",
    "STEP_COLUMNS",
    "AmbiguousEpisodeError",
    "EpisodeNotFoundError",
    "TownletRecordingRow",
    "TownletRecordings",
    "TownletReplay",
    "TownletStep",
    "TownletStepDataset",
]

_MISSING_STEPS_HINT = "materialize townlet_episode_steps for that day, or call refresh() if you just did"


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
    """The Townlet recordings of a warehouse: ``warehouse=`` (keyword-only, as in every loader; default
    ``REPLAY_WAREHOUSE_URI``; a local folder or ``s3://...``, with the AWS variables as everywhere else).
    Passing it positionally still works for one release, with a ``DeprecationWarning``.

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

    def __init__(self, _warehouse: BasePath | None = UNSET, /, *, warehouse: BasePath | None = None) -> None:
        location = warehouse_argument(
            warehouse, _warehouse, legacy_spelling="the first positional argument", owner="TownletRecordings"
        )
        self._root: UPath = resolve_warehouse(location, INDEX_KEY)
        self._state_lock = threading.Lock()
        self._index_cache: Index | None = None
        self._steps: Selection | None = None
        self._files: dict[dt.date, StepsFile] = {}

    @property
    def warehouse_uri(self) -> str:
        return str(self._root)

    def __repr__(self) -> str:
        return f"TownletRecordings({self.warehouse_uri!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {"_root": self._root}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(warehouse=state["_root"])  # type: ignore[misc]

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

    def _index(self) -> Index:
        index = self._index_cache
        if index is None:
            selection = select_partitions(INDEX_KEY, base_path=self._root, missing="error", stacklevel=3)
            index = self._index_cache = Index(selection.read_table(TOWNLET_RECORDINGS_INDEX.names))
        return index

    def _steps_file(self, day: dt.date) -> StepsFile:
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
                    file = self._files.get(day) or StepsFile(partition, self._steps)
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
        return TownletReplay(info, *step_arrays(table))

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
        filters: Mapping[str, str] | None = None,
    ) -> builtins.list[int]:
        """Index positions of valid recordings: the given episodes, or every one matching the filters."""
        _check_filters(stage, reason, min_reward, max_reward, checkpoint, None)
        where = filters_expression(parse_filters(filters, TOWNLET_RECORDINGS_INDEX))  # fails before any IO
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
            if where is not None:
                found = found[index.satisfying(where)[found]]
            return found.tolist()
        if any(f is not None for f in (stage, reason, min_reward, max_reward)) or filters:
            raise ValueError(
                "pass either episodes=[...] or filters (stage, reason, min/max_reward, filters), not both"
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


def _day_predicate(
    start_date: DateLike | None, end_date: DateLike | None, dates: DateLike | Sequence[DateLike] | None
) -> Callable[[dt.date], bool] | None:
    """Which index days to keep: the inclusive range or the listed days (as ``select_partitions``)."""
    if dates is not None:
        if start_date is not None or end_date is not None:
            raise ValueError("pass either dates=[...] or start_date/end_date, not both")
        listed = {parse_day(d) for d in ([dates] if isinstance(dates, str | dt.date) else dates)}
        return listed.__contains__
    if start_date is None and end_date is None:
        return None
    low = parse_day(start_date) if start_date is not None else dt.date.min
    high = parse_day(end_date) if end_date is not None else dt.date.max
    if low > high:
        raise ValueError(f"start_date {low} is after end_date {high}")
    return lambda day: low <= day <= high


class TownletStepDataset:
    """Map-style dataset of recorded steps for ``DataLoader(ds, batch_size=64, shuffle=True)``.

    ``warehouse=`` (keyword-only, as in every loader): a warehouse location (default
    ``REPLAY_WAREHOUSE_URI``, local or ``s3://``) or an open ``TownletRecordings`` to share its index.
    The first positional argument (``source``) is its deprecated spelling: it still works for one release,
    with a ``DeprecationWarning``.
    Episodes: ``episodes=[...]`` (episode ids, ``(checkpoint, episode_id)`` pairs or rows from
    ``list()``), else every *valid* recording matching ``checkpoint``/``stage``/``reason``/
    ``min_reward``/``max_reward`` (the ``list()`` filters, no limit) and ``filters=`` (the loaders'
    ``{"column": "condition"}`` grammar, over ``townlet_recordings_index`` columns, e.g.
    ``{"survival_steps": ">= 100"}``), on the days ``start_date``..``end_date`` (inclusive) or ``dates``
    of their index rows. ``ds.episodes`` lists them as ``(checkpoint, episode_id)``, ordered by checkpoint
    then id.

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
        source: TownletRecordings | BasePath | None = UNSET,  # deprecated: warehouse=
        episodes: Iterable[Any] | None = None,
        *,
        warehouse: TownletRecordings | BasePath | None = None,
        start_date: DateLike | None = None,
        end_date: DateLike | None = None,
        dates: DateLike | Sequence[DateLike] | None = None,
        filters: Mapping[str, str] | None = None,
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
        location = warehouse_argument(warehouse, source, legacy_spelling="source", owner="TownletStepDataset")
        recordings = (
            location if isinstance(location, TownletRecordings) else TownletRecordings(warehouse=location)
        )
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
            filters=filters,
        )
        index = recordings._index()
        wanted_day = _day_predicate(start_date, end_date, dates)
        if wanted_day is not None:
            if episodes is not None:
                raise ValueError("pass either episodes=[...] or days (start_date/end_date/dates), not both")
            positions = [p for p in positions if wanted_day(index.dates[p])]
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
        arrays, present, _ = step_arrays(table)
        self.position_dim = arrays["position"].shape[1]
        self.meter_count = arrays["meters"].shape[1]
        self.num_actions = max(arrays["q_values"].shape[1], arrays["action_masks"].shape[1])
        columns = {
            "episode_index": codes.astype(np.int64),
            "episode_id": table.column("episode_id").to_numpy().astype(np.int64),
            **item_arrays(arrays, present),
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

    def _check_counts(self, index: Index, positions: list[int], codes: np.ndarray, episodes: int) -> None:
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
