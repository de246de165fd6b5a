"""PyTorch loaders for ``metta_action_samples``: replacements for the original tool's ``ReplayDataset``.

- ``ReplayDataset``: map-style, the original sample shape, for ``DataLoader(ds, batch_size=256,
  shuffle=True)``. Holds the selected rows as NumPy columns (not pandas rows, not JSON strings).
- ``MettaSampleStream``: the fast path. An ``IterableDataset`` that yields ready batches of tensors,
  shards row groups over DataLoader workers and shuffles within a bounded buffer.

Both choose days and filters the same way (``warehouse.select_partitions``, ``filters.parse_filters``)
and describe the inventory over one item vocabulary: the sorted item names found in the rows they
serve, or the ``items`` you pass (use the same ``items`` for train and validation so the columns agree).
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from replay_assets.sources.metta.schema import METTA_ACTION_SAMPLES
from replay_assets.warehouse.filters import Condition, filters_expression, parse_filters
from replay_assets.warehouse.selection import (
    UNSET,
    BasePath,
    DateLike,
    Missing,
    RowGroup,
    Selection,
    read_row_group,
    select_partitions,
    warehouse_argument,
)

__all__ = ["ASSET_KEY", "MettaSampleStream", "ReplayDataset"]

ASSET_KEY = "metta_action_samples"
# What a sample is built from; always loaded, whatever `columns` says.
CORE_COLUMNS = (
    "episode_id", "agent_id", "timestep", "action", "location_x", "location_y", "orientation", "inventory",
)  # fmt: skip
_INT_KEYS = ("orientation", "action", "agent_id", "timestep")

Block = dict[str, np.ndarray]  # equal-length NumPy columns: the stream's unit between stages


# ---------------------------------------------------------------------------------------------------------
# Arrow columns -> NumPy


def _chunks(column: pa.Array | pa.ChunkedArray) -> list[pa.Array]:
    return column.chunks if isinstance(column, pa.ChunkedArray) else [column]


def _numpy(column: pa.Array | pa.ChunkedArray, dtype: np.dtype | type | None = None) -> np.ndarray:
    values = column.to_numpy(zero_copy_only=False) if isinstance(column, pa.Array) else column.to_numpy()
    return values if dtype is None else values.astype(dtype, copy=False)


def _map_entries(chunk: pa.MapArray) -> tuple[np.ndarray, pa.Array, pa.Array]:
    """Entries per row, keys and values of a (possibly sliced) map array."""
    offsets = chunk.offsets.to_numpy()
    start, stop = int(offsets[0]), int(offsets[-1])  # a slice keeps absolute offsets into whole children
    return np.diff(offsets), chunk.keys.slice(start, stop - start), chunk.items.slice(start, stop - start)


def inventory_matrix(column: pa.Array | pa.ChunkedArray, items: pa.Array) -> np.ndarray:
    """Dense ``(rows, len(items))`` int32 counts: 0 where a row lacks an item; unlisted items dropped."""
    out = np.zeros((len(column), len(items)), dtype=np.int32)
    row0 = 0
    for chunk in _chunks(column):
        counts, keys, values = _map_entries(chunk)
        slots = pc.fill_null(pc.index_in(keys, value_set=items), -1).to_numpy()
        rows = np.repeat(np.arange(row0, row0 + len(chunk)), counts)
        known = slots >= 0
        out[rows[known], slots[known]] = pc.fill_null(values, 0).to_numpy()[known]
        row0 += len(chunk)
    return out


def episode_codes(column: pa.Array | pa.ChunkedArray, episodes: pa.Array) -> np.ndarray:
    """int64 positions of each row's episode id in ``episodes`` (-1 if absent)."""
    parts = []
    for chunk in _chunks(column):
        if pa.types.is_dictionary(chunk.type):  # look each distinct id up once, then gather
            lookup = pc.fill_null(pc.index_in(chunk.dictionary, value_set=episodes), -1).to_numpy()
            parts.append(lookup.astype(np.int64)[chunk.indices.to_numpy()])
        else:
            parts.append(pc.fill_null(pc.index_in(chunk, value_set=episodes), -1).to_numpy().astype(np.int64))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _distinct(batches: Iterable[pa.RecordBatch], with_items: bool) -> tuple[list[str], list[str], int]:
    """Sorted episode ids and item names of ``batches``, and their row count, in one bounded pass."""
    episodes: set[str] = set()
    items: set[str] = set()
    rows = 0
    for batch in batches:
        rows += batch.num_rows
        ids = batch.column("episode_id")
        if pa.types.is_dictionary(ids.type):
            ids = ids.dictionary.take(pc.unique(ids.indices))
        episodes.update(pc.unique(ids).to_pylist())
        if with_items:
            items.update(pc.unique(_map_entries(batch.column("inventory"))[1]).to_pylist())
    return sorted(episodes), sorted(items), rows


# ---------------------------------------------------------------------------------------------------------
# Arguments shared by both loaders


def _extra_columns(columns: Sequence[str] | None) -> list[str]:
    """Columns wanted beyond ``CORE_COLUMNS`` (those are always loaded); unknown names are an error."""
    if columns is None:
        return []
    if isinstance(columns, str):
        raise ValueError(f"columns must be a list of names, got the string {columns!r}")
    unknown = [c for c in columns if c not in METTA_ACTION_SAMPLES.names]
    if unknown:
        raise ValueError(f"unknown column(s) {unknown}; known: {', '.join(METTA_ACTION_SAMPLES.names)}")
    return list(dict.fromkeys(c for c in columns if c not in CORE_COLUMNS))


def _item_list(items: Sequence[str] | None) -> list[str] | None:
    if items is None:
        return None
    names = list(items)
    if isinstance(items, str) or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise ValueError("items must be a sequence of distinct item names")
    return names


def _select(
    base_path: BasePath | None,
    dates: DateLike | Sequence[DateLike] | None,
    start_date: DateLike | None,
    end_date: DateLike | None,
    filters: Mapping[str, str] | None,
    missing: Missing,
) -> tuple[Selection, list[Condition]]:
    conditions = parse_filters(filters, METTA_ACTION_SAMPLES)  # before any IO: a bad filter fails fast
    selection = select_partitions(
        ASSET_KEY,
        base_path=base_path,
        dates=dates,
        start_date=start_date,
        end_date=end_date,
        missing=missing,
        stacklevel=3,  # the user's ReplayDataset(...) / MettaSampleStream(...) line
    )
    return selection, conditions


# ---------------------------------------------------------------------------------------------------------
# Map-style


class ReplayDataset(Dataset[dict[str, Any]]):
    """One (state before, action) sample per row of ``metta_action_samples``, in the original shape::

        {"observation": {"location": tensor([x, y], int32), "orientation": int,
                         "inventory": {item: count for item in ds.items}},
         "action": int, "agent_id": int, "episode_id": str, "timestep": int}

    The inventory lists every item of ``ds.items`` (0 when the agent holds none), so all samples have
    the same keys and ``DataLoader``'s default collate turns a batch into ``{item: (B,) tensor}``; a
    sparse dict would break collation as soon as two agents held different items. ``ds.items`` is the
    sorted item names of the loaded rows unless ``items`` fixes it (unlisted items are then dropped).

    Days: ``dates`` (list) or the inclusive ``start_date``..``end_date`` range, ``'YYYY-MM-DD'`` or
    ``date``; neither means every day present. ``missing="error"`` raises ``MissingPartitionsError``
    naming the absent days, ``"skip"`` warns and loads the rest. ``warehouse=`` (keyword-only, as in
    every loader) is the warehouse root (default ``REPLAY_WAREHOUSE_URI``) or the asset's own folder,
    local or ``s3://``; ``base_path`` (4th positional, the original signature) is the same, kept as it
    was: pass one of the two.

    ``filters``: ``{"agent_id": "IN (1, 2)", "action": "> 0"}`` (see ``filters.py``), pushed down to
    Parquet. ``columns``: extra columns to add to each sample under their own name (NumPy scalars, so
    collate keeps their dtype; strings as ``str``, dates as ISO strings, nulls as None); the core
    columns are always loaded and nothing else is.

    The rows live in memory, so ``num_workers=0`` is usually fastest: a worker only adds the cost of
    shipping each collated batch back. For throughput, use ``MettaSampleStream``.
    """

    def __init__(
        self,
        start_date: DateLike | None = None,
        end_date: DateLike | None = None,
        dates: DateLike | Sequence[DateLike] | None = None,
        base_path: BasePath | None = None,
        filters: Mapping[str, str] | None = None,
        columns: Sequence[str] | None = None,
        missing: Missing = "error",
        *,
        items: Sequence[str] | None = None,
        warehouse: BasePath | None = None,
    ) -> None:
        extras = _extra_columns(columns)
        fixed_items = _item_list(items)
        location = warehouse_argument(
            warehouse,
            UNSET if base_path is None else base_path,
            legacy_spelling="base_path",
            owner="ReplayDataset",
            deprecated=False,  # the original Metta signature: kept for good
        )
        self.selection, self.conditions = _select(location, dates, start_date, end_date, filters, missing)
        wanted = [*CORE_COLUMNS, *extras]
        if self.selection.files:
            table = self.selection.read_table(wanted, filters_expression(self.conditions))
        else:
            table = METTA_ACTION_SAMPLES.empty_table().select(wanted)
        episodes, found_items, _ = _distinct(table.to_batches(), with_items=fixed_items is None)
        self.episodes: list[str] = episodes  # episode_id vocabulary, sorted
        self.items: list[str] = fixed_items if fixed_items is not None else found_items
        self._episode = episode_codes(table.column("episode_id"), pa.array(episodes, pa.string()))
        self._ints = {key: _numpy(table.column(key)) for key in _INT_KEYS}
        location = np.stack([_numpy(table.column("location_x")), _numpy(table.column("location_y"))], axis=1)
        self._location = torch.from_numpy(location.astype(np.int32, copy=False))
        self._inventory = inventory_matrix(table.column("inventory"), pa.array(self.items, pa.string()))
        self._extras = {name: _extra_values(table.column(name)) for name in extras}

    def __len__(self) -> int:
        return len(self._episode)

    def _sample(self, i: int, location: torch.Tensor, inventory: list[int]) -> dict[str, Any]:
        ints = self._ints
        sample: dict[str, Any] = {
            "observation": {
                "location": location,
                "orientation": int(ints["orientation"][i]),
                "inventory": dict(zip(self.items, inventory, strict=True)),
            },
            "action": int(ints["action"][i]),
            "agent_id": int(ints["agent_id"][i]),
            "episode_id": self.episodes[self._episode[i]],
            "timestep": int(ints["timestep"][i]),
        }
        for name, values in self._extras.items():
            sample[name] = values[i]
        return sample

    def _position(self, index: int) -> int:
        i = operator.index(index)
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} samples")
        return i % n if n else i

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = self._position(index)
        return self._sample(i, self._location[i].clone(), self._inventory[i].tolist())

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """A batch of samples, gathered column-wise: what ``DataLoader`` calls when it batches."""
        positions = [self._position(i) for i in indices]
        locations = self._location[torch.as_tensor(positions, dtype=torch.long)]
        inventories = self._inventory[positions].tolist()
        return [
            self._sample(i, location, inventory)
            for i, location, inventory in zip(positions, locations, inventories, strict=True)
        ]


def _extra_values(column: pa.ChunkedArray) -> Sequence[Any]:
    """Per-row values of an extra column: NumPy for numbers (collate keeps the dtype), lists otherwise."""
    kind = column.type
    if (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)) and (
        column.null_count == 0
    ):
        return _numpy(column)
    if pa.types.is_date(kind):
        return [None if d is None else d.isoformat() for d in column.to_pylist()]
    return column.to_pylist()


# ---------------------------------------------------------------------------------------------------------
# Iterable fast path


class MettaSampleStream(IterableDataset[dict[str, Any]]):
    """Ready batches of tensors, for ``DataLoader(stream, batch_size=None, num_workers=k)``.

    Each item is a batch shaped like a collated ``ReplayDataset`` batch, except for two fields::

        {"observation": {"location": (B, 2) int32, "orientation": (B,) int64,
                         "inventory": (B, len(stream.items)) int32},   # dense, columns = stream.items
         "action": (B,) int64, "agent_id": (B,) int64, "timestep": (B,) int64,
         "episode_id": (B,) int64}                                     # codes into stream.episodes

    plus one (B,) tensor per numeric ``columns`` extra (``reward``, ``action_success``...).
    ``stream.items`` is the sorted item names of the selected rows (or ``items``), ``stream.episodes``
    the sorted episode ids; both are computed once, in one pass over the selection, at construction.

    Sharding: the unit of work is a Parquet row group; each epoch the units are dealt to DataLoader
    workers (least-loaded first, in a seeded order), so every row is served exactly once per epoch
    and parallelism is bounded by the number of row groups. Shuffling: the unit order, then a
    random-replacement buffer of ``shuffle_buffer`` rows (the ``tf.data`` shuffle, vectorized): memory
    stays bounded by the buffer plus a few read batches of ``read_rows``, never by the dataset.
    ``shuffle_buffer=0`` reads in date/file order. With a ``seed`` the order depends only on (seed,
    epoch, number of workers): call ``set_epoch(e)`` before each epoch for a new order; without one
    each DataLoader iteration draws a fresh order.

    Days, filters and ``warehouse=`` (keyword-only) as in ``ReplayDataset``; ``base_path`` (4th positional
    or by name) is its deprecated spelling, accepted with a ``DeprecationWarning`` for one release.

    Speed: one process already streams millions of samples/s, reading with pyarrow's threads. Each
    worker batch crosses to the main process through shared memory (packed into one buffer), which
    costs more than producing it: add workers for remote (S3) data or heavy transforms, not by habit.
    """

    def __init__(
        self,
        start_date: DateLike | None = None,
        end_date: DateLike | None = None,
        dates: DateLike | Sequence[DateLike] | None = None,
        base_path: BasePath | None = UNSET,  # deprecated: warehouse=
        filters: Mapping[str, str] | None = None,
        columns: Sequence[str] | None = None,
        missing: Missing = "error",
        *,
        warehouse: BasePath | None = None,
        batch_size: int = 256,
        shuffle_buffer: int = 100_000,
        seed: int | None = None,
        drop_last: bool = False,
        items: Sequence[str] | None = None,
        read_rows: int = 65_536,
    ) -> None:
        super().__init__()
        for name, value, low in (("batch_size", batch_size, 1), ("shuffle_buffer", shuffle_buffer, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if isinstance(read_rows, bool) or not isinstance(read_rows, int) or read_rows < 1:
            raise ValueError(f"read_rows must be a positive integer, got {read_rows!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
        self.extras = _extra_columns(columns)
        bad = [c for c in self.extras if not _is_numeric(METTA_ACTION_SAMPLES.field(c).type)]
        if bad:
            raise ValueError(f"a stream yields tensors: columns must be numeric or bool, not {bad}")
        fixed_items = _item_list(items)
        self.batch_size, self.shuffle_buffer, self.read_rows = batch_size, shuffle_buffer, read_rows
        self.seed, self.drop_last = seed, drop_last
        location = warehouse_argument(
            warehouse, base_path, legacy_spelling="base_path (4th positional)", owner="MettaSampleStream"
        )
        self.selection, self.conditions = _select(location, dates, start_date, end_date, filters, missing)
        where = filters_expression(self.conditions)
        self.row_groups: list[RowGroup] = self.selection.row_groups(where)
        scanned = ["episode_id"] if fixed_items is not None else ["episode_id", "inventory"]
        episodes, found_items, rows = _distinct(self.selection.scan(scanned, where), fixed_items is None)
        self.episodes: list[str] = episodes
        self.items: list[str] = fixed_items if fixed_items is not None else found_items
        self.num_rows = rows  # rows served per epoch, after filters
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order a seeded stream yields (like ``DistributedSampler.set_epoch``)."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        entropy = self._entropy(info)
        units = self._share(entropy, worker, workers)
        blocks = self._blocks(units, use_threads=info is None)
        if self.shuffle_buffer:
            piece = min(self.read_rows, self.shuffle_buffer)
            rng = np.random.default_rng([*entropy, worker])
            blocks = _shuffled(_rebatch(blocks, piece, drop_last=False), self.shuffle_buffer, rng)
        for block in _rebatch(blocks, self.batch_size, self.drop_last):
            yield self._tensors(block, pack=info is not None)

    def _entropy(self, info: Any) -> list[int]:
        """The epoch's seed material, the same in every worker (they must agree on who reads what)."""
        if self.seed is not None:
            return [self.seed, self.epoch]
        if info is not None:
            return [info.seed - info.id]  # DataLoader's per-iteration base seed: worker seed = base + id
        return [int(np.random.SeedSequence().entropy)]

    def _share(self, entropy: list[int], worker: int, workers: int) -> list[RowGroup]:
        """This worker's row groups: each dealt, in a seeded order, to the least-loaded worker."""
        order = range(len(self.row_groups))
        if self.shuffle_buffer:
            order = np.random.default_rng(entropy).permutation(len(self.row_groups)).tolist()
        loads = [0] * workers
        mine = []
        for k in order:
            target = min(range(workers), key=lambda w: (loads[w], w))
            loads[target] += self.row_groups[k].num_rows
            if target == worker:
                mine.append(self.row_groups[k])
        return mine

    def _blocks(self, units: list[RowGroup], use_threads: bool) -> Iterator[Block]:
        if not units:
            return
        filesystem = self.selection.filesystem()  # opened in this process: never a forked s3fs
        where = filters_expression(self.conditions)
        items = pa.array(self.items, pa.string())
        episodes = pa.array(self.episodes, pa.string())
        columns = [*CORE_COLUMNS, *self.extras]
        for unit in units:
            for batch in read_row_group(unit, filesystem, columns, where, self.read_rows, use_threads):
                if batch.num_rows:
                    yield self._block(batch, items, episodes)

    def _block(self, batch: pa.RecordBatch, items: pa.Array, episodes: pa.Array) -> Block:
        location = np.empty((batch.num_rows, 2), dtype=np.int32)
        location[:, 0] = _numpy(batch.column("location_x"))
        location[:, 1] = _numpy(batch.column("location_y"))
        # Every array fresh and writable: batches may be zero-copy views of it.
        block = {key: np.array(_numpy(batch.column(key)), dtype=np.int64) for key in _INT_KEYS}
        block["location"] = location
        block["inventory"] = inventory_matrix(batch.column("inventory"), items)
        block["episode_id"] = episode_codes(batch.column("episode_id"), episodes)
        for name in self.extras:
            block[name] = np.array(_numpy(batch.column(name)))
        return block

    def _tensors(self, block: Block, pack: bool) -> dict[str, Any]:
        """The batch dict; in a worker packed into one buffer, in the main process zero-copy views."""
        t = _packed(block) if pack else {key: torch.from_numpy(values) for key, values in block.items()}
        batch: dict[str, Any] = {
            "observation": {
                "location": t.pop("location"),
                "orientation": t.pop("orientation"),
                "inventory": t.pop("inventory"),
            },
            "action": t.pop("action"),
            "agent_id": t.pop("agent_id"),
            "episode_id": t.pop("episode_id"),
            "timestep": t.pop("timestep"),
        }
        batch.update(t)
        return batch


def _packed(block: Block) -> dict[str, torch.Tensor]:
    """Copy a block into tensors that are views of one fresh buffer.

    A DataLoader worker hands each tensor storage to the main process through its own shared-memory
    segment and file descriptor, which costs far more than copying a 256-row batch: one storage per
    batch instead of eight makes worker transfer about three times faster. Copying also keeps a batch
    from pinning the much larger block it was sliced from.
    """
    offsets, total = {}, 0
    for key, values in block.items():
        offsets[key] = total
        total += -(-values.nbytes // 8) * 8  # 8-byte aligned, so every dtype view is legal
    buffer = torch.empty(total, dtype=torch.uint8)
    tensors = {}
    for key, values in block.items():
        start = offsets[key]
        view = buffer[start : start + values.nbytes].view(_TORCH_DTYPES[values.dtype]).view(values.shape)
        view.numpy()[...] = values
        tensors[key] = view
    return tensors


_TORCH_DTYPES = {
    np.dtype(np.bool_): torch.bool,
    np.dtype(np.int8): torch.int8,
    np.dtype(np.int16): torch.int16,
    np.dtype(np.int32): torch.int32,
    np.dtype(np.int64): torch.int64,
    np.dtype(np.uint8): torch.uint8,
    np.dtype(np.float16): torch.float16,
    np.dtype(np.float32): torch.float32,
    np.dtype(np.float64): torch.float64,
}


def _is_numeric(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)


# ---------------------------------------------------------------------------------------------------------
# Block plumbing: whole-column NumPy operations, never per-row Python


def _rows(block: Block) -> int:
    return len(next(iter(block.values())))


def _slice(block: Block, start: int, stop: int) -> Block:
    return {key: values[start:stop] for key, values in block.items()}


def _take(block: Block, positions: np.ndarray) -> Block:
    return {key: values[positions] for key, values in block.items()}


def _concat(blocks: list[Block]) -> Block:
    return {key: np.concatenate([b[key] for b in blocks]) for key in blocks[0]}


def _rebatch(blocks: Iterable[Block], size: int, drop_last: bool) -> Iterator[Block]:
    """Blocks of exactly ``size`` rows (the last may be short unless ``drop_last``), slicing when possible."""
    pending: list[Block] = []
    pending_rows = 0
    for block in blocks:
        n, start = _rows(block), 0
        if pending:
            need = size - pending_rows
            if n < need:
                pending.append(block)
                pending_rows += n
                continue
            pending.append(_slice(block, 0, need))
            yield _concat(pending)
            pending, pending_rows, start = [], 0, need
        while n - start >= size:
            yield _slice(block, start, start + size)
            start += size
        if start < n:
            pending, pending_rows = [_slice(block, start, n)], n - start
    if pending and not drop_last:
        yield _concat(pending)


def _shuffled(pieces: Iterable[Block], capacity: int, rng: np.random.Generator) -> Iterator[Block]:
    """A random-replacement shuffle buffer of ``capacity`` rows; each piece must be <= ``capacity`` rows.

    Once full, each incoming piece of m rows evicts m random rows of the pool (emitted) and takes their
    slots: per row, the same law as ``tf.data``'s shuffle, at NumPy speed. The rest drains at the end.
    """
    pool: Block | None = None
    for piece in pieces:
        if pool is None or _rows(pool) < capacity:
            pool = _concat([pool, piece]) if pool is not None else {k: v.copy() for k, v in piece.items()}
            if _rows(pool) <= capacity:
                continue
            piece = _slice(pool, capacity, _rows(pool))
            pool = _slice(pool, 0, capacity)
        slots = rng.choice(capacity, size=_rows(piece), replace=False)
        out = _take(pool, slots)
        for key, values in pool.items():
            values[slots] = piece[key]
        yield out
    if pool is not None:
        yield _take(pool, rng.permutation(_rows(pool)))
