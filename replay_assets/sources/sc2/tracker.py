"""StarCraft II tracker backend: engine-free ``SC2_GROUND_TRUTH_FRAMES`` rebuilt from tracker events.

Why this shape: a replay has a few thousand tracker events but a frame every ``step_mul`` loops for
each player, each listing every unit the player owns (~10^5-10^6 unit entries per replay). So events
are replayed once, in Python, into *segments* (a unit's state constant over ``[start, end)`` loops),
and frames are expanded from segments with numpy and built as Arrow arrays in a few vectorised calls.

Semantics (state at a frame loop ``f`` includes every event at a loop ``<= f``):

* Frames: loops ``0, step_mul, 2*step_mul, ...`` up to the header's game length; one row per frame
  and player, sorted by (game_loop, player_id). Players are the details' non-observer players
  (``player_id`` = 1-based index, as tracker events number them); neutral (0) and hostile (16) ids,
  and observers, get no rows.
* Stats: forward-filled from the player's latest ``SPlayerStatsEvent`` (``stats_loop`` is its loop;
  null before the first one, which arrives at loop 1). ``food_used`` = FoodUsed/4096, ``food_cap`` =
  FoodMade/4096, ``food_workers`` = WorkersActiveCount. ``food_army`` is null: FoodUsed also counts
  units in production, so army supply is not exactly derivable from the stats.
* Units: every unit whose *controlling* player (``m_controlPlayerId`` of born/init/owner-change
  events) is one of the players, from UnitBorn (complete) or UnitInit (``is_complete`` false until
  UnitDone) until UnitDied; UnitTypeChange renames it, UnitOwnerChange moves it (mined-out minerals,
  rocks and other neutral units never appear). The minimap beacons each player owns (``Beacon*``
  types, UI markers) are not units and are left out. ``tag`` = (index << 18) + recycle;
  ``unit_name`` the tracker's type name; (x, y) the born/init cell (``position_source`` "born"),
  updated by ``SUnitPositionsEvent`` ("tracked"), ``position_loop`` the loop it was observed at.
  Engine-only fields (unit_type, z, vitals, build_progress, is_flying, orders) are null.
* ``upgrades``: one name per ``SUpgradeEvent`` of the player so far, in event order; ``upgrade_ids``
  null. ``dead_units``: tags of the player's units that died in ``(previous frame, this frame]``,
  in death order; deaths after the last frame loop are in no row.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from replay_assets.sources.contract import Lineage
from replay_assets.sources.sc2.fast_tracker import TrackerDecodeError, decode_tracker_events
from replay_assets.sources.sc2.replay import (
    DEFAULT_LIMITS,
    Sc2Limits,
    Sc2ReplayError,
    describe,
    open_replay,
    text,
)
from replay_assets.sources.sc2.schema import SC2_GROUND_TRUTH_FRAMES, SC2_UNIT

__all__ = [
    "BACKEND",
    "TrackerState",
    "decode_tracker_state",
    "replay_tracker_state",
    "state_frames",
    "tracker_frames",
]

BACKEND = "tracker"
FOOD_SCALE = 4096.0  # FoodUsed / FoodMade are fixed point
_POSITIONS_X4_BEFORE = 27950  # before this build SUnitPositionsEvent coordinates are in units of 4 cells
_BORN, _TRACKED = 0, 1
_SOURCE_NAMES = ("born", "tracked")  # position_source by _BORN / _TRACKED
_NO_END = np.iinfo(np.int64).max
_UI_MARKERS = ("Beacon",)  # the minimap beacons every player owns: UI markers, not game units


@dataclass
class TrackerState:
    """A replay's tracker events folded into a few small arrays: what a worker process sends back.

    ``segments`` holds one entry per span of loops ``[start, end)`` over which a unit's state is
    constant, sorted by (owner, tag, start); ``name`` indexes ``unit_names``. A few thousand entries
    (tens of kB pickled), where the frames they expand into are ~10^5-10^6 unit rows.
    """

    game_loops: int
    player_ids: list[int]
    segments: dict[str, np.ndarray]
    unit_names: list[str]
    deaths: np.ndarray  # (n, 3) int64: loop, owner, tag, in death order
    stats: dict[int, np.ndarray]  # player_id -> (n, 6) int64: loop, minerals, vespene, used, made, workers
    upgrades: dict[int, list[tuple[int, str]]]  # player_id -> (loop, name) in event order


def replay_tracker_state(
    events: Iterable[dict[str, Any]], player_ids: list[int], game_loops: int, base_build: int
) -> TrackerState:
    """Replay the events once into a ``TrackerState`` (see the module docstring for the rules)."""
    players = set(player_ids)
    seg: list[tuple[Any, ...]] = []  # (owner, tag, start, end, name, complete, x, y, pos_loop, src)
    deaths: list[tuple[int, int, int]] = []
    live: dict[int, list[Any]] = {}  # tag -> [owner, name, complete, x, y, pos_loop, src, start]
    by_index: dict[int, int] = {}
    scale = 4 if base_build < _POSITIONS_X4_BEFORE else 1
    stats: dict[int, list[tuple[int, ...]]] = {p: [] for p in players}
    upgrades: dict[int, list[tuple[int, str]]] = {p: [] for p in players}

    def close(tag: int, unit: list[Any], loop: int) -> None:
        if unit[0] in players and loop > unit[7]:
            seg.append((unit[0], tag, unit[7], loop, *unit[1:7]))
        unit[7] = loop

    for e in events:
        eid = e["_eventid"]
        loop = e["_gameloop"]
        if eid == 0:  # SPlayerStatsEvent
            if e["m_playerId"] in players:
                s = e["m_stats"]
                stats[e["m_playerId"]].append(
                    (
                        loop,
                        s["m_scoreValueMineralsCurrent"],
                        s["m_scoreValueVespeneCurrent"],
                        s["m_scoreValueFoodUsed"],
                        s["m_scoreValueFoodMade"],
                        s["m_scoreValueWorkersActiveCount"],
                    )
                )
        elif eid == 8:  # SUnitPositionsEvent
            index = e["m_firstUnitIndex"]
            items = e["m_items"]
            for i in range(0, len(items), 3):
                index += items[i]
                tag = by_index.get(index)
                if tag is not None:
                    unit = live[tag]
                    close(tag, unit, loop)
                    unit[3], unit[4], unit[5], unit[6] = (
                        items[i + 1] * scale,
                        items[i + 2] * scale,
                        loop,
                        _TRACKED,
                    )
        elif eid == 5:  # SUpgradeEvent
            if e["m_playerId"] in players:
                upgrades[e["m_playerId"]].append((loop, text(e["m_upgradeTypeName"])))
        elif eid in (1, 6):  # SUnitBornEvent / SUnitInitEvent
            name = text(e["m_unitTypeName"])
            if name.startswith(_UI_MARKERS):
                continue
            tag = (e["m_unitTagIndex"] << 18) + e["m_unitTagRecycle"]
            old = live.pop(tag, None)
            if old is not None:
                close(tag, old, loop)
            live[tag] = [
                e["m_controlPlayerId"],
                name,
                eid == 1,
                e["m_x"],
                e["m_y"],
                loop,
                _BORN,
                loop,
            ]
            by_index[e["m_unitTagIndex"]] = tag
        else:
            if eid not in (2, 3, 4, 7):
                continue
            tag = (e["m_unitTagIndex"] << 18) + e["m_unitTagRecycle"]
            unit = live.get(tag)
            if unit is None:
                continue  # a unit the tracker never introduced (e.g. created before tracking began)
            close(tag, unit, loop)
            if eid == 2:  # SUnitDiedEvent
                if unit[0] in players:
                    deaths.append((loop, unit[0], tag))
                del live[tag]
                if by_index.get(e["m_unitTagIndex"]) == tag:
                    del by_index[e["m_unitTagIndex"]]
            elif eid == 3:  # SUnitOwnerChangeEvent
                unit[0] = e["m_controlPlayerId"]
            elif eid == 4:  # SUnitTypeChangeEvent
                unit[1] = text(e["m_unitTypeName"])
            else:  # SUnitDoneEvent
                unit[2] = True
    for tag, unit in live.items():
        close(tag, unit, _NO_END)
    segments, unit_names = _segment_arrays(seg)
    return TrackerState(
        game_loops=game_loops,
        player_ids=sorted(players),
        segments=segments,
        unit_names=unit_names,
        deaths=np.asarray(deaths, dtype=np.int64).reshape(-1, 3),
        stats={p: np.asarray(rows, dtype=np.int64).reshape(-1, 6) for p, rows in stats.items()},
        upgrades=upgrades,
    )


def _segment_arrays(seg: list[tuple[Any, ...]]) -> tuple[dict[str, np.ndarray], list[str]]:
    """Segment tuples as sorted columns: Python sorts the tuples (owner, tag, start first) in one call."""
    seg.sort(key=lambda s: s[:3])
    columns = list(zip(*seg, strict=True)) or [()] * 10
    names, codes = np.unique(np.asarray(columns[4], dtype=object), return_inverse=True)
    arrays = {
        "owner": np.asarray(columns[0], dtype=np.int64),
        "tag": np.asarray(columns[1], dtype=np.int64),
        "start": np.asarray(columns[2], dtype=np.int64),
        "end": np.asarray(columns[3], dtype=np.int64),
        "name": codes.astype(np.int32).reshape(-1),
        "complete": np.asarray(columns[5], dtype=bool),
        "x": np.asarray(columns[6], dtype=np.float32),
        "y": np.asarray(columns[7], dtype=np.float32),
        "position_loop": np.asarray(columns[8], dtype=np.int32),
        "source": np.asarray(columns[9], dtype=np.int8),
    }
    return arrays, [str(n) for n in names]


def _list_array(values: pa.Array, rows: np.ndarray, n_rows: int, list_type: pa.DataType) -> pa.Array:
    """A list column of ``n_rows`` rows from values already sorted by their (sorted) row numbers."""
    offsets = np.zeros(n_rows + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values, type=list_type)


def _stepped_ranges(bases: np.ndarray, counts: np.ndarray, stride: int, dtype: type) -> np.ndarray:
    """Concatenated ``bases[i] + stride * arange(counts[i])``, built by one cumulative sum in place:
    the workhorse of the frame expansion."""
    kept = counts > 0
    bases, counts = bases[kept].astype(dtype), counts[kept]
    out = np.full(int(counts.sum()), stride, dtype=dtype)
    if len(out):
        lasts = bases + (counts - 1) * stride  # each range's last value, which the next range follows
        out[np.cumsum(counts) - counts] = bases - np.concatenate(([0], lasts[:-1])).astype(dtype)
        np.cumsum(out, out=out)
    return out


def _all_null(n: int, types: list[pa.DataType]) -> list[pa.Array]:
    """All-null arrays of ``n`` rows sharing one zeroed buffer (validity, values, offsets alike): the
    tracker backend leaves the engine's fields null, and they cost no memory per replay."""
    zeros = pa.py_buffer(np.zeros(8 * (n + 1), dtype=np.uint8))  # wide enough for any fixed-width type
    arrays = []
    for type_ in types:
        if pa.types.is_list(type_):
            children = [pa.array([], type=type_.value_type)]
            arrays.append(pa.Array.from_buffers(type_, n, [zeros, zeros], null_count=n, children=children))
        else:
            arrays.append(pa.Array.from_buffers(type_, n, [zeros, zeros], null_count=n))
    return arrays


def _units_column(state: TrackerState, frame_count: int, step: int) -> pa.Array:
    seg = state.segments
    n_players = len(state.player_ids)
    n_rows = frame_count * n_players
    n_segments = len(seg["tag"])
    first = (seg["start"] + step - 1) // step
    end = np.minimum(seg["end"], frame_count * step)  # open segments end at _NO_END
    counts = np.maximum((end + step - 1) // step - first, 0)
    # Segments are sorted by (owner, tag, start) and a unit is in a row at most once, so sorting the
    # unique keys (row << bits | segment) orders every row's units by tag. A plain sort of keys that
    # carry their payload is several times faster than an argsort and needs no gathers to reorder;
    # int32 keys (when they fit) halve the memory and the sort.
    bits = max(n_segments, 1).bit_length()
    dtype = np.int32 if n_rows << bits < 2**31 else np.int64
    first_rows = first * n_players + np.searchsorted(state.player_ids, seg["owner"])
    keys = _stepped_ranges((first_rows << bits) | np.arange(n_segments), counts, n_players << bits, dtype)
    keys.sort()
    which = np.bitwise_and(keys, (1 << bits) - 1, out=np.empty(len(keys), dtype=np.intp))
    offsets = np.zeros(n_rows + 1, dtype=np.int32)
    np.cumsum(np.bincount(keys >> bits, minlength=n_rows), out=offsets[1:])
    del keys
    columns = {
        "tag": pa.array(seg["tag"][which]),
        "unit_name": pa.array(state.unit_names, pa.string()).take(pa.array(seg["name"][which])),
        "x": pa.array(seg["x"][which]),
        "y": pa.array(seg["y"][which]),
        "position_loop": pa.array(seg["position_loop"][which]),
        "position_source": pa.array(_SOURCE_NAMES, pa.string()).take(pa.array(seg["source"][which])),
        "is_complete": pa.array(seg["complete"][which]),
    }
    nulls = iter(_all_null(len(which), [f.type for f in SC2_UNIT if f.name not in columns]))
    units = pa.StructArray.from_arrays(
        [columns[f.name] if f.name in columns else next(nulls) for f in SC2_UNIT], fields=list(SC2_UNIT)
    )
    list_type = SC2_GROUND_TRUTH_FRAMES.field("units").type
    return pa.ListArray.from_arrays(pa.array(offsets), units, type=list_type)


def _dead_column(state: TrackerState, frame_count: int, step: int) -> pa.Array:
    n_players = len(state.player_ids)
    loop, owner, tag = state.deaths.T
    frame = -(-loop // step)
    kept = frame < frame_count
    rows = frame[kept] * n_players + np.searchsorted(state.player_ids, owner[kept])
    order = np.argsort(rows, kind="stable")
    return _list_array(pa.array(tag[kept][order]), rows[order], frame_count * n_players, pa.list_(pa.int64()))


def _stats_columns(state: TrackerState, frame_loops: np.ndarray) -> dict[str, pa.Array]:
    """Forward-filled stats, rows ordered (frame, player)."""
    n_players = len(state.player_ids)
    n_rows = len(frame_loops) * n_players
    out = {k: np.zeros(n_rows, dtype=np.int64) for k in ("loop", "min", "gas", "used", "made", "workers")}
    missing = np.ones(n_rows, dtype=bool)
    for i, pid in enumerate(state.player_ids):
        table = state.stats[pid]
        idx = np.searchsorted(table[:, 0], frame_loops, side="right") - 1
        has = idx >= 0
        rows = np.arange(len(frame_loops)) * n_players + i
        missing[rows] = ~has
        for col, key in enumerate(out):
            out[key][rows[has]] = table[idx[has], col]
    return {
        "stats_loop": pa.array(out["loop"].astype(np.int32), mask=missing),
        "minerals": pa.array(out["min"].astype(np.int32), mask=missing),
        "vespene": pa.array(out["gas"].astype(np.int32), mask=missing),
        "food_used": pa.array((out["used"] / FOOD_SCALE).astype(np.float32), mask=missing),
        "food_cap": pa.array((out["made"] / FOOD_SCALE).astype(np.float32), mask=missing),
        "food_army": pa.nulls(n_rows, pa.float32()),
        "food_workers": pa.array(out["workers"].astype(np.float32), mask=missing),
    }


def _upgrades_column(state: TrackerState, frame_loops: np.ndarray) -> pa.Array:
    n_players = len(state.player_ids)
    n_rows = len(frame_loops) * n_players
    names: list[str] = []
    counts = np.zeros(n_rows, dtype=np.int64)
    bases = np.zeros(n_rows, dtype=np.int64)
    for i, pid in enumerate(state.player_ids):
        events = state.upgrades.get(pid, [])
        loops = np.asarray([loop for loop, _ in events], dtype=np.int64)
        rows = np.arange(len(frame_loops)) * n_players + i
        counts[rows] = np.searchsorted(loops, frame_loops, side="right")
        bases[rows] = len(names)
        names.extend(name for _, name in events)
    values = pa.array(names, pa.string()).take(pa.array(_stepped_ranges(bases, counts, 1, np.int64)))
    offsets = np.zeros(n_rows + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values, type=pa.list_(pa.string()))


def frames_batch(state: TrackerState, source: Lineage, step_mul: int) -> pa.RecordBatch:
    """Every frame row of one replay as one ``SC2_GROUND_TRUTH_FRAMES`` record batch."""
    frame_count = state.game_loops // step_mul + 1
    frame_loops = np.arange(frame_count, dtype=np.int64) * step_mul
    n_players = len(state.player_ids)
    n_rows = frame_count * n_players
    zeros = pa.array(np.zeros(n_rows, dtype=np.int32))

    def constant(value: Any, type_: pa.DataType) -> pa.Array:
        return pa.array([value], type_).take(zeros)

    columns: dict[str, pa.Array] = {
        "date": constant(source.day, pa.date32()),
        "replay_id": constant(source.sha256, pa.string()),
        "source_uri": constant(source.uri, pa.string()),
        "backend": constant(BACKEND, pa.string()),
        "game_loop": pa.array(np.repeat(frame_loops, n_players).astype(np.int32)),
        "player_id": pa.array(np.tile(np.asarray(state.player_ids, dtype=np.int32), frame_count)),
        **_stats_columns(state, frame_loops),
        "upgrades": _upgrades_column(state, frame_loops),
        "upgrade_ids": pa.nulls(n_rows, pa.list_(pa.int32())),
        "dead_units": _dead_column(state, frame_count, step_mul),
        "units": _units_column(state, frame_count, step_mul),
    }
    return pa.RecordBatch.from_arrays(
        [columns[f.name] for f in SC2_GROUND_TRUTH_FRAMES], schema=SC2_GROUND_TRUTH_FRAMES
    )


def decode_tracker_state(data: bytes, uri: str, limits: Sc2Limits = DEFAULT_LIMITS) -> TrackerState:
    """A replay's bytes folded into its ``TrackerState``: the Python-heavy half of the tracker backend,
    run in worker processes. Any problem is an ``Sc2ReplayError`` naming the file."""
    replay = open_replay(data, uri, limits)
    contents = replay.member("replay.tracker.events")
    players = replay.players(user_ids=False)
    if not players:
        raise Sc2ReplayError(uri, "replay.details lists no players")
    try:
        events = decode_tracker_events(contents, replay.protocol)
        return replay_tracker_state(
            events, [p.player_id for p in players], replay.game_loops, replay.base_build
        )
    except TrackerDecodeError as exc:
        raise Sc2ReplayError(uri, f"replay.tracker.events does not decode: {exc}") from exc
    except (KeyError, TypeError, IndexError, ValueError, OverflowError) as exc:
        # Damaged events decode into structs without the fields (or types) the walk reads.
        raise Sc2ReplayError(
            uri, f"replay.tracker.events holds an event the frames cannot use: {describe(exc)}"
        ) from exc


def state_frames(
    state: TrackerState, source: Lineage, step_mul: int = 8, batch_rows: int = 2048
) -> Iterator[pa.RecordBatch]:
    """``SC2_GROUND_TRUTH_FRAMES`` batches of ``batch_rows`` rows expanded from a replay's state: the
    vectorised half, run where the frames are written (a state is ~100x smaller than its frames)."""
    if step_mul < 1 or batch_rows < 1:
        raise ValueError(f"step_mul and batch_rows must be >= 1, got {step_mul} and {batch_rows}")
    batch = frames_batch(state, source, step_mul)
    for offset in range(0, batch.num_rows, batch_rows):
        yield batch.slice(offset, batch_rows)


def tracker_frames(
    data: bytes, source: Lineage, step_mul: int = 8, batch_rows: int = 2048
) -> Iterator[pa.RecordBatch]:
    """``SC2_GROUND_TRUTH_FRAMES`` batches (backend "tracker") of one replay's bytes.

    The whole replay is decoded and checked before the first batch, so a caller never streams half a
    bad replay; any problem is an ``Sc2ReplayError`` naming the file. Memory: one replay's frames.
    """
    return state_frames(decode_tracker_state(data, source.uri), source, step_mul, batch_rows)
