"""MettaScope replays (v1, v2, v3) to ``METTA_ACTION_SAMPLES`` record batches: bytes in, Arrow out.

Pure on purpose (no Dagster, boto3 or torch): the asset hands it one file's bytes, users can call it
directly. Decoding is field-aware and vectorised: every field becomes a change series (steps +
values, see ``_Series``) that is forward-filled with ``np.searchsorted``, never a Python dict per row.

Step semantics, checked on the real files in ``shared/data/metta`` (see the tests):

* v2/v3 (dinky7, early_cvc, pens) log step ``t`` *after* the environment step: ``location[t]`` and
  ``inventory[t]`` already show the effect of ``action_id[t]`` (dinky7 agent 1: ``move_south`` at
  t=1, location ``[101,104] -> [101,105]`` at t=1), and ``action_success[t]``, ``current_reward[t]``,
  ``total_reward[t]`` belong to action ``t``. Row ``t`` = state logged at ``t - 1`` + action and
  outcome logged at ``t``.
* v1 logs the state *before* the action of the same step: in every v1 file a ``rotate``/``move`` at
  ``t`` shows at ``t + 1``. Outcome timing differs between v1 writers: the_4_maze, the_280_agents and
  sequence log ``action_success``/``reward`` of action ``t`` at ``t`` (a reward arrives with the
  ``get_output`` that earns it, the heart one step later), heart_collector logs them at ``t + 1``
  (``action_success[0]`` is false for every agent; a rotation that happened has a false success
  at ``t`` 81 times but never at ``t + 1``; a reward arrives together with its heart). The
  project's sample writer logs success at ``t`` and reward at ``t + 1``. So each v1 file's two
  outcome lags are measured (``_v1_timing``) and row ``t`` = state logged at ``t`` + action at
  ``t`` + success at ``t + success_lag`` + reward/total at ``t + reward_lag``.
* One convention for every version: rows start at timestep 1 (v2/v3 have no state before step 0;
  v1's step-0 row is dropped to match) and end at the last action whose outcome is recorded.
  Rows per agent = ``max_steps - 1 - max(success_lag, reward_lag)``: ``max_steps - 1`` for v2/v3 and
  most v1 files, ``max_steps - 2`` for heart_collector (and sample-writer v1 files).

Other facts the decoding relies on: v1 names items by ``agent:inv:<item>`` or ``inv:<item>`` keys
(heart_collector has no ``inventory_items``), its reward key is ``reward``, position is ``r``/``c``
(x = c, y = r) and freezing is ``agent:frozen`` (a countdown); v2 freezing is ``is_frozen`` and
``freeze_remaining``; ``total_reward`` is present in every real file and equals the running sum of
the step rewards (computed when absent). The environment name comes from the landing folder, else
``mg_config["label"]`` (the only name-like field; generic ``"mettagrid"`` in the real files).

Errors and memory: every problem (container, JSON, version, required key, malformed series) is a
``ReplayFormatError`` whose one-line message starts with the file's ``source_uri``. The whole file is
validated before the first batch, so a caller never streams half a bad replay; then the JSON tree is
dropped and consecutive agents are packed into batches of ``batch_rows`` rows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from replay_assets.errors import FileFormatError
from replay_assets.landing import detect
from replay_assets.sources.contract import Lineage, SourceReader
from replay_assets.sources.metta.schema import METTA_ACTION_SAMPLES
from replay_assets.util.capped_inflate import BrokenStreamError, InflateLimitError, inflate
from replay_assets.util.gc_pause import gc_paused

__all__ = [
    "READER",
    "MettaLimits",
    "MettaReadConfig",
    "ReplayFormatError",
    "environment_from_path",
    "episode_id_for",
    "read_metta_samples",
]

SUPPORTED_VERSIONS = (1, 2, 3)
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
_DATE_FOLDER = re.compile(r"\d{4}-\d{2}-\d{2}")
_V1_INVENTORY_PREFIXES = ("agent:inv:", "inv:")
_NUMERIC_KINDS = "biuf"
# v2/v3 write is_frozen and freeze_remaining; v1 writes agent:frozen, a countdown.
_FROZEN_KEYS = ("is_frozen", "freeze_remaining", "agent:frozen", "frozen")


class ReplayFormatError(FileFormatError):
    """A replay file this reader cannot decode; the one-line message names the file and the reason."""


def episode_id_for(relative_path: str, sha256: str) -> str:
    """The file's UUID stem (lowercased) when its name is ``<uuid>.<ext>``, else ``sha256:<first 32 hex>``.

    Unique across days by construction, unlike a position in a day's listing.
    """
    stem = PurePosixPath(relative_path).name.split(".", 1)[0]
    if _UUID.fullmatch(stem):
        return stem.lower()
    return "sha256:" + sha256[:32].lower()


def environment_from_path(relative_path: str) -> str | None:
    """The first folder under ``metta/`` that is not a ``YYYY-MM-DD`` date, else None."""
    folders = PurePosixPath(relative_path).parts[:-1]
    if "metta" not in folders:
        return None
    for folder in folders[folders.index("metta") + 1 :]:
        if not _DATE_FOLDER.fullmatch(folder):
            return folder
    return None


# ------------------------------------------------------------------------------------------ series


@dataclass(frozen=True)
class _Series:
    """A field as change steps (strictly increasing) and the value from each step on.

    ``values`` is 1-D for scalars and 2-D (one row per step) for inventories; before the first
    step the field holds ``default`` (a MettaScope series may start after step 0; the default applies
    before it).
    """

    steps: np.ndarray
    values: np.ndarray
    default: Any = 0

    def at(self, query: np.ndarray) -> np.ndarray:
        """Forward-filled values at the (sorted) query steps."""
        if len(self.steps) == 0:
            return np.full((len(query), *self.values.shape[1:]), self.default, dtype=self.values.dtype)
        if len(query) and self.steps[0] <= query[0]:  # no query before the first entry: the common case
            if len(self.steps) == 1:  # a constant
                return np.repeat(self.values, len(query), axis=0)
            return self.values[np.searchsorted(self.steps, query, side="right") - 1]
        index = np.searchsorted(self.steps, query, side="right") - 1
        out = self.values[np.maximum(index, 0)]
        before = index < 0
        if before.any():
            out[before] = self.default
        return out


class _Malformed(Exception):
    """Raised inside field parsing; turned into a ReplayFormatError naming the file and the field."""


def _constant(value: Any, default: Any = 0) -> _Series:
    return _Series(np.zeros(1, np.int64), np.asarray([value]), default)


def _empty(default: Any = 0, dtype: Any = np.int64) -> _Series:
    return _Series(np.zeros(0, np.int64), np.zeros(0, dtype), default)


def _checked_steps(raw: np.ndarray, num_steps: int) -> np.ndarray:
    """Steps as int64, rejecting non-integers, negatives, disorder and steps past max_steps."""
    integral = raw.dtype.kind in "iu" or (raw.dtype.kind == "f" and np.array_equal(raw, np.round(raw)))
    if not integral:
        raise _Malformed("series steps are not integers")
    steps = raw.astype(np.int64)
    if len(steps) and (steps[0] < 0 or steps[-1] >= num_steps):
        raise _Malformed(f"series step outside 0..{num_steps - 1} (max_steps {num_steps})")
    if np.any(np.diff(steps) <= 0):
        raise _Malformed("series steps are not strictly increasing")
    return steps


def _scalar_series(value: Any, num_steps: int, default: Any = 0) -> _Series:
    """A scalar field: any list is a ``[[step, value], ...]`` series, anything else a constant."""
    if value is None:
        return _constant(default, default)
    if isinstance(value, bool | int | float):
        return _constant(value, default)
    if not isinstance(value, list):
        raise _Malformed(f"expected a number or a [step, value] series, got {type(value).__name__}")
    if not value:
        return _empty(default)
    try:
        steps, values = (np.asarray(column) for column in zip(*value, strict=True))
    except (ValueError, TypeError) as exc:
        raise _Malformed("series entries are not [step, number] pairs") from exc
    if values.ndim != 1 or values.dtype.kind not in _NUMERIC_KINDS:
        raise _Malformed("series entries are not [step, number] pairs")
    return _Series(_checked_steps(steps, num_steps), values, default)


def _vector_series(value: Any, num_steps: int, width: int) -> _Series:
    """A small int vector (location ``[x, y(, layer)]``, v1 action ``[id, param]``), first ``width`` kept.

    Field-aware on purpose: a series is a list whose element 0 is ``[step, [..]]``, so a constant
    ``[x, y, layer]`` and a 3-change series can never be confused.
    """
    if value is None or value == []:
        return _Series(np.zeros(0, np.int64), np.zeros((0, width), np.int64))
    if not isinstance(value, list):
        raise _Malformed(f"expected a list, got {type(value).__name__}")
    try:
        if isinstance(value[0], list):
            steps, raw = zip(*value, strict=True)
            steps = np.asarray(steps)
        else:
            steps, raw = np.zeros(1, np.int64), [value]
        vectors = _int_rows(raw, width)
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise _Malformed("entries are not [step, [int, ...]] pairs") from exc
    return _Series(_checked_steps(steps, num_steps), vectors)


def _int_rows(rows: Sequence[Any], width: int) -> np.ndarray:
    """The first ``width`` ints of each row as a (k x width) array; rows may differ in length."""
    try:
        array = np.asarray(rows)
    except ValueError:  # ragged, e.g. [x, y] and [x, y, layer] mixed
        array = np.asarray([row[:width] for row in rows])
    if array.ndim != 2 or array.shape[1] < width or array.dtype.kind not in "iu":
        raise _Malformed(f"values are not lists of at least {width} integers")
    return array[:, :width]


def _inventory_series(value: Any, num_steps: int, num_items: int) -> _Series:
    """v2/v3 ``inventory``: constant ``[[item_id, count], ...]`` or series ``[[step, [[id, n], ...]], ...]``.

    Values become a (steps x items) count matrix so forward fill and the map column stay vectorised.
    """
    if value is None or value == []:
        return _Series(np.zeros(0, np.int64), np.zeros((0, num_items), np.int32))
    if not isinstance(value, list):
        raise _Malformed(f"expected a list, got {type(value).__name__}")
    try:
        if isinstance(value[0], list) and len(value[0]) == 2 and isinstance(value[0][1], list):
            steps = np.asarray([entry[0] for entry in value])
            contents = [entry[1] for entry in value]
        else:
            steps, contents = np.zeros(1, np.int64), [value]
        lengths = np.fromiter((len(content) for content in contents), np.int64, len(contents))
        flat = [pair for content in contents for pair in content]
        pairs = np.asarray(flat, dtype=np.int64) if flat else np.zeros((0, 2), np.int64)
    except (ValueError, TypeError, IndexError) as exc:
        raise _Malformed("entries are not [item_id, count] pairs") from exc
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise _Malformed("entries are not [item_id, count] pairs")
    item_ids = pairs[:, 0]
    if len(item_ids) and (item_ids.min() < 0 or item_ids.max() >= num_items):
        raise _Malformed(f"item id outside item_names (0..{num_items - 1})")
    matrix = np.zeros((len(contents), num_items), np.int32)
    matrix[np.repeat(np.arange(len(contents)), lengths), item_ids] = pairs[:, 1]
    return _Series(_checked_steps(steps, num_steps), matrix)


def _v1_inventory_series(obj: dict[str, Any], items: Sequence[str], num_steps: int) -> _Series:
    """v1 per-item ``agent:inv:<item>`` / ``inv:<item>`` series merged into one count-matrix series."""
    keys = [_first_present(obj, f"agent:inv:{item}", f"inv:{item}") for item in items]
    per_item = [_field(obj, key, _scalar_series, num_steps) for key in keys]
    steps = np.unique(np.concatenate([np.zeros(1, np.int64), *(s.steps for s in per_item)]))
    matrix = np.zeros((len(steps), len(items)), np.int32)
    for column, series in enumerate(per_item):
        matrix[:, column] = series.at(steps)
    return _Series(steps, matrix)


# ------------------------------------------------------------------------------------------ header


@dataclass(frozen=True)
class _Header:
    """What every agent's decoding needs from the top level of a replay."""

    version: int
    num_steps: int
    action_names: list[str]
    item_names: list[str]
    label: str | None


def _require(doc: dict[str, Any], key: str, name: str) -> Any:
    if key not in doc:
        raise ReplayFormatError(name, f"missing required key {key!r}")
    return doc[key]


def _string_list(value: Any, key: str, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ReplayFormatError(name, f"{key!r} is not a list of strings")
    return value


def _read_header(doc: dict[str, Any], name: str, limits: MettaLimits) -> tuple[_Header, list[dict[str, Any]]]:
    """Validate the top level: version, the keys this version requires, the limits (before any series is
    expanded: each agent gets a row per step, each row a count per item); return it and the agents."""
    version = _require(doc, "version", name)
    if type(version) is not int or version not in SUPPORTED_VERSIONS:
        raise ReplayFormatError(name, f"unknown replay version {version!r} (supported: 1, 2, 3)")
    objects_key = "grid_objects" if version == 1 else "objects"
    objects = _require(doc, objects_key, name)
    if not isinstance(objects, list):
        raise ReplayFormatError(name, f"{objects_key!r} is not a list")
    num_steps = _require(doc, "max_steps", name)
    if type(num_steps) is not int or num_steps < 1:
        raise ReplayFormatError(name, f"max_steps is not a positive integer: {num_steps!r}")
    _check_limit(name, "max_steps", num_steps, limits.max_steps, "max_steps")
    action_names = _string_list(_require(doc, "action_names", name), "action_names", name)
    agents = _agent_objects(objects, doc.get("num_agents"), name)
    _check_limit(name, "agents", len(agents), limits.max_agents, "max_agents")
    _check_limit(name, "rows (agents x max_steps)", len(agents) * num_steps, limits.max_rows, "max_rows")
    if version == 1:
        items = _v1_item_names(doc.get("inventory_items") or [], agents, name)
    else:
        items = _string_list(_require(doc, "item_names", name), "item_names", name)
    _check_limit(name, "items", len(items), limits.max_items, "max_items")
    mg_config = doc.get("mg_config")
    label = mg_config.get("label") if isinstance(mg_config, dict) else None
    label = label if isinstance(label, str) and label else None
    return _Header(version, num_steps, action_names, items, label), agents


def _check_limit(name: str, what: str, value: int, limit: int, setting: str) -> None:
    if value > limit:
        raise ReplayFormatError(name, f"{what} {value} is more than the limit {setting}={limit}")


def _agent_objects(objects: list[Any], num_agents: Any, name: str) -> list[dict[str, Any]]:
    """The agent objects (``is_agent`` or ``agent_id``), sorted by a unique integer agent_id."""
    agents = [o for o in objects if isinstance(o, dict) and (o.get("is_agent") or "agent_id" in o)]
    ids = [a.get("agent_id") for a in agents]
    if not all(type(i) is int for i in ids):
        raise ReplayFormatError(name, "an agent object has no integer 'agent_id'")
    if len(set(ids)) != len(ids):
        raise ReplayFormatError(name, "duplicate agent_id among agent objects")
    if type(num_agents) is int and num_agents != len(agents):
        raise ReplayFormatError(name, f"num_agents is {num_agents} but {len(agents)} agent objects found")
    return sorted(agents, key=lambda a: a["agent_id"])


def _v1_item_names(declared: Any, agents: list[dict[str, Any]], name: str) -> list[str]:
    """``inventory_items`` when given, plus any item only seen as an ``agent:inv:``/``inv:`` key."""
    items = list(_string_list(declared, "inventory_items", name))
    seen = set(items)
    for agent in agents:
        for key in agent:
            for prefix in _V1_INVENTORY_PREFIXES:
                if key.startswith(prefix) and (item := key[len(prefix) :]) not in seen:
                    seen.add(item)
                    items.append(item)
    return items


# ------------------------------------------------------------------------------------------ agents


@dataclass(frozen=True)
class _Agent:
    """One agent's fields as change series: everything a row needs, validated before any row exists."""

    agent_id: int
    action: _Series
    action_param: _Series
    action_success: _Series
    reward: _Series
    total_reward: _Series
    x: _Series
    y: _Series
    orientation: _Series
    inventory: _Series
    frozen: _Series


def _first_present(obj: dict[str, Any], *keys: str) -> str | None:
    return next((k for k in keys if k in obj), None)


def _parse_agent(obj: dict[str, Any], header: _Header, name: str) -> _Agent:
    """Decode one agent object; a bad field raises ReplayFormatError naming the agent and the field."""
    steps = header.num_steps
    try:
        x, y = _location(obj, steps)
        action, param = _actions(obj, steps)
        if "inventory" in obj:
            inventory = _field(obj, "inventory", _inventory_series, steps, len(header.item_names))
        else:
            inventory = _v1_inventory_series(obj, header.item_names, steps)
        success = _field(obj, "action_success", _scalar_series, steps, False)
        reward = _field(obj, _first_present(obj, "current_reward", "reward"), _scalar_series, steps, 0.0)
        total = _field(obj, "total_reward", _total_reward, reward, steps)
        orientation = _field(
            obj, _first_present(obj, "orientation", "agent:orientation"), _scalar_series, steps
        )
        frozen = _field(obj, _first_present(obj, *_FROZEN_KEYS), _frozen, steps)
    except _Malformed as exc:
        raise ReplayFormatError(name, f"agent {obj['agent_id']}: {exc}") from None
    return _Agent(
        obj["agent_id"], action, param, success, reward, total, x, y, orientation, inventory, frozen
    )


def _field(obj: dict[str, Any], key: str | None, parse: Callable[..., _Series], *args: Any) -> _Series:
    """``parse(obj[key], *args)``, None when absent (the parser's default applies); names the key on error."""
    try:
        return parse(obj.get(key) if key else None, *args)
    except _Malformed as exc:
        raise _Malformed(f"field {key!r}: {exc}") from None


def _location(obj: dict[str, Any], num_steps: int) -> tuple[_Series, _Series]:
    """(x, y): v2/v3 ``location`` ``[x, y(, layer)]``, v1 ``c``/``r`` scalars."""
    if "location" in obj:
        xy = _field(obj, "location", _vector_series, num_steps, 2)
        return _Series(xy.steps, xy.values[:, 0]), _Series(xy.steps, xy.values[:, 1])
    return _field(obj, "c", _scalar_series, num_steps), _field(obj, "r", _scalar_series, num_steps)


def _actions(obj: dict[str, Any], num_steps: int) -> tuple[_Series, _Series]:
    """(action id, param): v1 ``action`` ``[id, param]`` pairs, else ``action_id`` + ``action_param``."""
    if "action_id" not in obj and "action" in obj:
        pairs = _field(obj, "action", _vector_series, num_steps, 2)
        return _Series(pairs.steps, pairs.values[:, 0]), _Series(pairs.steps, pairs.values[:, 1])
    param_key = _first_present(obj, "action_param", "action_parameter")
    action = _field(obj, "action_id", _scalar_series, num_steps)
    return action, _field(obj, param_key, _scalar_series, num_steps)


def _total_reward(value: Any, reward: _Series, num_steps: int) -> _Series:
    """The logged running total, or the running sum of the step rewards when a file lacks it."""
    if value is not None:
        return _scalar_series(value, num_steps, 0.0)
    steps = np.arange(num_steps)
    return _Series(steps, np.cumsum(reward.at(steps), dtype=np.float64), 0.0)


def _frozen(value: Any, num_steps: int) -> _Series:
    """Frozen when the first present of ``_FROZEN_KEYS`` is true / a positive countdown."""
    series = _scalar_series(value, num_steps, False)
    return _Series(series.steps, series.values > 0, False)


# ------------------------------------------------------------------------------------------ timing


@dataclass(frozen=True)
class _Timing:
    """Where a row's fields sit relative to its timestep ``t`` (see the module docstring)."""

    state_shift: int  # state before action t is logged at t - state_shift
    success_lag: int  # action t's success is logged at t + success_lag
    reward_lag: int  # action t's reward and total are logged at t + reward_lag

    def last_timestep(self, num_steps: int) -> int:
        return num_steps - 1 - max(self.success_lag, self.reward_lag)


_V2_TIMING = _Timing(state_shift=1, success_lag=0, reward_lag=0)


def _v1_timing(agents: Sequence[_Agent], action_names: Sequence[str], num_steps: int) -> _Timing:
    """Measure a v1 file's two outcome lags from its own data; no evidence means same-step (most files)."""
    steps = np.arange(num_steps)
    rotate = action_names.index("rotate") if "rotate" in action_names else None
    success_votes = sum(_success_lag_votes(agent, rotate, steps) for agent in agents)
    reward_votes = sum(_reward_lag_votes(agent, steps) for agent in agents)
    return _Timing(state_shift=0, success_lag=int(success_votes > 0), reward_lag=int(reward_votes > 0))


def _success_lag_votes(agent: _Agent, rotate: int | None, steps: np.ndarray) -> int:
    """A ``rotate`` at t that visibly turned the agent (facing == param at t + 1) did succeed:
    a false success logged at t votes for a one-step lag, a false one at t + 1 against."""
    if rotate is None:
        return 0
    action, param = agent.action.at(steps)[:-1], agent.action_param.at(steps)[:-1]
    facing, success = agent.orientation.at(steps), agent.action_success.at(steps).astype(bool)
    turned = (action == rotate) & (facing[:-1] != param) & (facing[1:] == param)
    return int(np.count_nonzero(turned & ~success[:-1]) - np.count_nonzero(turned & ~success[1:]))


def _reward_lag_votes(agent: _Agent, steps: np.ndarray) -> int:
    """A reward logged in the same step as an inventory change (its heart) votes for a lag; one logged
    the step before the change (with the action that earns it) votes against."""
    counts = agent.inventory.at(steps)
    changed = np.concatenate([[False], np.any(counts[1:] != counts[:-1], axis=1), [False]])
    events = np.flatnonzero(agent.reward.at(steps)[1:] != 0) + 1
    return int(np.count_nonzero(changed[events]) - np.count_nonzero(changed[events + 1]))


# ------------------------------------------------------------------------------------------ columns


@dataclass(frozen=True)
class _Context:
    """Per-file constants shared by every agent's batch."""

    source: Lineage
    episode_id: str
    version: int
    environment: str | None
    timing: _Timing
    num_steps: int
    action_names: pa.Array
    item_names: pa.Array


def _repeat(value: Any, type_: pa.DataType, n: int) -> pa.Array:
    return pa.repeat(pa.scalar(value, type_), n)


def _action_name_column(actions: np.ndarray, names: pa.Array) -> pa.Array:
    """Names by index; an id outside action_names becomes null (the asset's check reports it)."""
    known = (actions >= 0) & (actions < len(names))
    return names.take(pa.array(np.where(known, actions, 0), mask=~known))


def _inventory_column(counts: np.ndarray, item_names: pa.Array) -> pa.Array:
    """A map column from a (rows x items) count matrix, zero counts left out, items in file order."""
    held = counts != 0
    offsets = np.zeros(len(counts) + 1, np.int32)
    np.cumsum(held.sum(axis=1), out=offsets[1:])
    rows, items = np.nonzero(held)
    return pa.MapArray.from_arrays(
        pa.array(offsets),
        item_names.take(pa.array(items.astype(np.int32))),
        pa.array(counts[rows, items].astype(np.int32)),
        type=METTA_ACTION_SAMPLES.field("inventory").type,
    )


def _agent_columns(agent: _Agent, ctx: _Context) -> dict[str, np.ndarray]:
    """One agent's rows as numpy columns (inventory as a rows x items count matrix)."""
    timing = ctx.timing
    ts = np.arange(1, timing.last_timestep(ctx.num_steps) + 1, dtype=np.int64)
    before = ts - timing.state_shift
    rewarded = ts + timing.reward_lag
    return {
        "agent_id": np.full(len(ts), agent.agent_id, np.int32),
        "timestep": ts.astype(np.int32),
        "action": agent.action.at(ts).astype(np.int32),
        "action_param": agent.action_param.at(ts).astype(np.int32),
        "action_success": agent.action_success.at(ts + timing.success_lag).astype(bool),
        "reward": agent.reward.at(rewarded).astype(np.float32),
        "total_reward": agent.total_reward.at(rewarded).astype(np.float32),
        "location_x": agent.x.at(before).astype(np.int32),
        "location_y": agent.y.at(before).astype(np.int32),
        "orientation": agent.orientation.at(before).astype(np.int32),
        "inventory": agent.inventory.at(before).astype(np.int32),
        "is_frozen": agent.frozen.at(before).astype(bool),
    }


def _record_batch(columns: dict[str, np.ndarray], ctx: _Context) -> pa.RecordBatch:
    """Numpy columns plus the per-file constants, as one batch of the exact output schema."""
    n = len(columns["timestep"])
    arrays = {
        "date": _repeat(ctx.source.day, pa.date32(), n),
        "episode_id": _repeat(ctx.episode_id, pa.string(), n),
        "source_uri": _repeat(ctx.source.uri, pa.string(), n),
        "source_sha256": _repeat(ctx.source.sha256, pa.string(), n),
        "replay_version": _repeat(ctx.version, pa.int8(), n),
        "environment": _repeat(ctx.environment, pa.string(), n),
        "action_name": _action_name_column(columns["action"], ctx.action_names),
        "inventory": _inventory_column(columns["inventory"], ctx.item_names),
    }
    return pa.RecordBatch.from_arrays(
        [arrays[f.name] if f.name in arrays else pa.array(columns[f.name]) for f in METTA_ACTION_SAMPLES],
        schema=METTA_ACTION_SAMPLES,
    )


def _batches(agents: Iterable[_Agent], ctx: _Context, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Agents in order, packed into batches of ``batch_rows`` rows (the last one shorter).

    Packing several agents per batch keeps the_280_agents from becoming 240 tiny Parquet row groups
    and pays Arrow's per-array cost once per batch; memory stays at one batch of numpy columns.
    """
    pending: list[dict[str, np.ndarray]] = []
    pending_rows = 0
    for agent in agents:
        columns = _agent_columns(agent, ctx)
        pending.append(columns)
        pending_rows += len(columns["timestep"])
        while pending_rows >= batch_rows:
            joined = {key: np.concatenate([c[key] for c in pending]) for key in pending[0]}
            yield _record_batch({key: col[:batch_rows] for key, col in joined.items()}, ctx)
            pending = [{key: col[batch_rows:] for key, col in joined.items()}]
            pending_rows -= batch_rows
    if pending_rows:
        yield _record_batch({key: np.concatenate([c[key] for c in pending]) for key in pending[0]}, ctx)


# ------------------------------------------------------------------------------------------ reader


@dataclass(frozen=True)
class MettaLimits:
    """What one replay may declare, checked before memory is reserved for it; defaults well above any real
    file (the largest seen: 240 agents, 1,000 steps, 10 items, 6.5 MB of JSON nested 6 deep)."""

    max_decompressed_bytes: int = field(
        default=512 << 20,  # parsing costs ~5x the text in Python objects: ~2.5 GiB for one file at most
        metadata={"description": "Refuse a replay whose JSON text inflates to more bytes than this."},
    )
    max_steps: int = field(
        default=1 << 20,
        metadata={"description": "Refuse a replay declaring more steps (max_steps) than this."},
    )
    max_agents: int = field(
        default=1 << 14, metadata={"description": "Refuse a replay with more agent objects than this."}
    )
    max_items: int = field(
        default=256,  # one agent's inventory is expanded to max_steps x items counts (1 GiB at the defaults)
        metadata={"description": "Refuse a replay with more inventory item kinds than this."},
    )
    max_rows: int = field(
        default=1 << 23,  # a file's rows are held until it is known to be good: ~1 GB at this limit
        metadata={"description": "Refuse a replay whose agents x max_steps (its rows) exceeds this."},
    )
    max_json_depth: int = field(
        default=64,
        metadata={"description": "Refuse a replay whose JSON nests deeper than this (orjson stops at 1024)."},
    )


DEFAULT_LIMITS = MettaLimits()
_CODECS = {detect.ZLIB_JSON: "zlib", detect.GZIP_JSON: "gzip"}


def _decompress(data: bytes, name: str, max_decompressed_bytes: int) -> bytes:
    """The JSON text, by magic bytes: zlib, gzip (inflated at most ``max_decompressed_bytes``) or plain."""
    container = detect.detect_format(data[: detect.MAGIC_BYTES_NEEDED])
    if container in _CODECS:
        try:
            return inflate(data, _CODECS[container], max_decompressed_bytes)
        except (BrokenStreamError, InflateLimitError) as exc:
            raise ReplayFormatError(name, str(exc)) from None
    if container == detect.JSON:
        if len(data) > max_decompressed_bytes:
            raise ReplayFormatError(
                name,
                f"JSON text of {len(data)} bytes, more than max_decompressed_bytes={max_decompressed_bytes}",
            )
        return data
    raise ReplayFormatError(name, f"not a MettaScope replay: container is {container}, not zlib/gzip/JSON")


# JSON nesting is measured on the brackets outside strings: escaped backslashes and quotes are dropped
# first, then everything but brackets and quotes (C-speed bytes methods), so numpy sees ~1/5 of the text.
_NOT_STRUCTURAL = bytes(c for c in range(256) if c not in b'[]{}"')
_NESTING_STEP = np.zeros(256, np.int8)
_NESTING_STEP[list(b"[{")] = 1
_NESTING_STEP[list(b"]}")] = -1


def json_depth(text: bytes) -> int:
    """How deep arrays and objects nest in JSON ``text`` (brackets inside strings do not count)."""
    structural = text.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_STRUCTURAL)
    codes = np.frombuffer(structural, np.uint8)
    quote = codes == ord('"')
    outside = (np.cumsum(quote, dtype=np.int32) & 1) == 0
    depth = np.cumsum(_NESTING_STEP[codes[outside & ~quote]], dtype=np.int32)
    return int(depth.max(initial=0))


def _parse_json(text: bytes, name: str, max_depth: int) -> dict[str, Any]:
    """orjson for speed; the stdlib as a fallback for what orjson refuses (NaN, huge ints). The nesting
    is measured first, so neither parser recurses past ``max_depth``."""
    _check_limit(name, "JSON nesting depth", json_depth(text), max_depth, "max_json_depth")
    try:
        doc = orjson.loads(text)
    except (ValueError, RecursionError):
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ReplayFormatError(name, f"invalid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ReplayFormatError(name, "top level of the JSON is not an object")
    return doc


def read_metta_samples(
    data: bytes,
    source: Lineage,
    *,
    environment: str | None = None,
    min_reward: float | None = None,
    batch_rows: int = 65536,
    limits: MettaLimits = DEFAULT_LIMITS,
) -> Iterator[pa.RecordBatch]:
    """Decode one replay file's bytes into ``METTA_ACTION_SAMPLES`` batches, sorted by agent_id, timestep.

    ``environment``: yield nothing unless the replay's environment (landing folder, else mg_config
    label) equals it; a file whose folder already rules it out is not even decompressed.
    ``min_reward``: keep an agent only if its final total_reward is at least this.
    ``limits``: a file over one is refused naming the limit, the text while inflating, the counts
    before any series is expanded.
    Every field of every agent is validated before the first batch, so a bad file raises
    ReplayFormatError without having yielded anything.
    """
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, not {batch_rows}")
    name = source.uri or source.relative_path
    path_environment = environment_from_path(source.relative_path)
    if environment is not None and path_environment is not None and path_environment != environment:
        return
    text = _decompress(data, name, limits.max_decompressed_bytes)
    # Parsing creates millions of small lists: on the_280_agents 250 ms instead of 50 ms with the GC on.
    with gc_paused():
        doc = _parse_json(text, name, limits.max_json_depth)
        del text
        header, objects = _read_header(doc, name, limits)
        agents = [_parse_agent(obj, header, name) for obj in objects]
        del doc, objects  # only the compact series are needed from here on
    replay_environment = path_environment or header.label
    if environment is not None and replay_environment != environment:
        return
    timing = _v1_timing(agents, header.action_names, header.num_steps) if header.version == 1 else _V2_TIMING
    if min_reward is not None:
        last = np.array([header.num_steps - 1])
        agents = [a for a in agents if a.total_reward.at(last)[0] >= min_reward]
    ctx = _Context(
        source=source,
        episode_id=episode_id_for(source.relative_path, source.sha256),
        version=header.version,
        environment=replay_environment,
        timing=timing,
        num_steps=header.num_steps,
        action_names=pa.array(header.action_names, pa.string()),
        item_names=pa.array(header.item_names, pa.string()),
    )
    if timing.last_timestep(header.num_steps) < 1:
        return
    yield from _batches(agents, ctx, batch_rows)


@dataclass(frozen=True)
class MettaReadConfig(MettaLimits):
    """The run config of ``metta_action_samples``: the limits, and which replays and agents to keep."""

    environment: str | None = field(
        default=None,
        metadata={"description": "Keep only replays of this environment (landing sub-folder or mg_config)."},
    )
    min_reward: float | None = field(
        default=None,
        metadata={"description": "Keep an agent's episode only if its final total_reward is at least this."},
    )


def read(data: bytes, lineage: Lineage, config: MettaReadConfig) -> Iterator[pa.RecordBatch]:
    """The reader contract's ``read``: one replay file's samples."""
    return read_metta_samples(
        data,
        lineage,
        environment=config.environment,
        min_reward=config.min_reward,
        limits=config,
    )


def _episode_key(lineage: Lineage) -> str:
    return f"episode id {episode_id_for(lineage.relative_path, lineage.sha256)}"


def _episode_order(lineage: Lineage) -> str:
    return episode_id_for(lineage.relative_path, lineage.sha256)


# A day's replays in episode order; a second file with an episode id already seen that day is refused.
READER = SourceReader(
    source="metta",
    schema=METTA_ACTION_SAMPLES,
    read=read,
    config=MettaReadConfig,
    order=_episode_order,
    content_key=_episode_key,
)
