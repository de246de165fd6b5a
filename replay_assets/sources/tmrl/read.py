"""TMRL player runs (protocol-5 pickles of a ``tmrl_player_run_v1`` dict) to ``TMRL_DEMO_BUFFERS`` batches.

Pure on purpose (no Dagster, boto3 or torch): bytes in, Arrow out. Two entry points share one decoder:
``load_run`` gives the validated run as Python objects (``PlayerRun``), ``run_batches`` one row per
sample as Arrow. ``run_day_from_name`` reads the ``YYYYMMDD_`` day the recorder puts in file names.

Safety: a run file is an untrusted pickle. ``sources/tmrl/unpickle.py`` decodes it with a restricted
unpickler that runs nothing from the file (only numpy's own globals, as checked stand-ins, else
``UnsafePickleError``); this module validates what it gives back and builds the columns.

Resource limits: a file larger than ``max_bytes`` (``DEFAULT_MAX_BYTES``, 512 MiB) is refused before
unpickling; apart from the unpickler's memo (a CPython issue, see ``sources/tmrl/unpickle.py``) the
unpickled objects are at most a few times the file. ``info`` dicts are what may be expanded: shared
references (``BINGET``) let a small pickle describe an exponentially large tree, so the expanded size of
every non-empty ``info`` is counted (linear time, cycles refused) against ``16 x file size + 1 Mi`` units
before any JSON is written; likewise the columns (samples x sample 0's array bytes) may be at most
``16 x file size + 64 MiB`` before any is stacked (one sample referenced a million times is refused).

Validation: the top level is a ``tmrl_player_run_v1`` dict (``format``, ``run_id``,
``recorded_at`` ISO-8601 with an offset, converted to UTC, ``metadata`` dict, ``samples`` list,
optional ``obs_scale_version`` int; other keys are ignored) or a bare sample list (legacy: run id =
file stem, ``recorded_at`` unknown). Every sample is a 6-tuple ``(act, obs, rew, terminated,
truncated, info)``: ``act`` a float32 array of shape (3,), ``obs`` a non-empty tuple of numeric
arrays, ``rew`` an int or float (Python or numpy, not bool), the flags bools (Python or numpy),
``info`` a dict, and every sample of a file has the observation layout (dtypes and shapes) of
sample 0. Any violation raises ``RunFormatError`` naming the file and the index of the first bad
sample; the whole file is validated before the first batch is yielded.

Columns: the known layouts become typed columns (``lidar``: speed, lidar (4, 19), prev_act_1,
prev_act_2; ``full``: speed, gear, rpm, images (4, 64, 64) uint8, prev_act_1, prev_act_2), other
layouts go to ``obs_raw`` unchanged. ``is_demo`` is ``info["is_demo"]`` when the sample says, else
``metadata["is_demo"]``, else true: files in the player-runs folder are human demonstrations, that is
what tmrl's online injection reads them as. ``info`` is stored as JSON (numpy values as numbers or
lists, bytes as hex, sets sorted, NaN as null).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import operator
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from replay_assets.sources.contract import Lineage, SourceReader
from replay_assets.sources.tmrl.schema import (
    ACT_SIZE,
    IMAGES_SHAPE,
    LIDAR_SHAPE,
    OBS_RAW_TYPE,
    TMRL_DEMO_BUFFERS,
)
from replay_assets.sources.tmrl.unpickle import (
    ALLOWED_GLOBALS,
    DtypeSpec,
    Malformed,
    RawArray,
    Refused,
    RunFormatError,
    TmrlRunError,
    UnpickledArray,
    UnsafePickleError,
    as_array,
    raw_to_array,
    short,
    stack_raw,
    type_name,
    unpickle,
)
from replay_assets.util.gc_pause import gc_paused

__all__ = [
    "ALLOWED_GLOBALS",
    "DEFAULT_MAX_BYTES",
    "FULL_LAYOUT",
    "LIDAR_LAYOUT",
    "READER",
    "TMRL_DEMO_BUFFERS",
    "TMRL_RUN_FORMAT",
    "PlayerRun",
    "RunFormatError",
    "TmrlRunError",
    "UnsafePickleError",
    "load_run",
    "run_batches",
    "run_day_from_name",
]

TMRL_RUN_FORMAT = "tmrl_player_run_v1"
DEFAULT_MAX_BYTES = 512 * 1024 * 1024
LIDAR_LAYOUT = "lidar"
FULL_LAYOUT = "full"
_INFO_BUDGET_FACTOR = 16  # expanded info size allowed per byte of file (see the module docstring)
_INFO_BUDGET_MIN = 1 << 20
# The columns a run may expand to: a genuine file stores every sample's arrays, so its columns are about
# its size; one sample referenced a million times (2 bytes a reference) would be gigabytes.
_ARRAY_BUDGET_MIN = 64 << 20


# ------------------------------------------------------------------------------------------ layouts

_F4 = np.dtype(np.float32)
_U1 = np.dtype(np.uint8)
_ACT = (_F4, (ACT_SIZE,))
_LAYOUTS = {
    ((_F4, (1,)), (_F4, LIDAR_SHAPE), _ACT, _ACT): LIDAR_LAYOUT,
    ((_F4, (1,)), (_F4, (1,)), (_F4, (1,)), (_U1, IMAGES_SHAPE), _ACT, _ACT): FULL_LAYOUT,
}


def _describe(signature: Sequence[tuple[np.dtype, tuple[int, ...]]]) -> str:
    """``float32[1],float32[4x19],...``: the dtypes and shapes of an observation."""
    return ",".join(f"{dtype.name}[{'x'.join(map(str, shape))}]" for dtype, shape in signature)


def _layout_name(signature: tuple[tuple[np.dtype, tuple[int, ...]], ...]) -> str:
    return _LAYOUTS.get(signature) or "unknown:" + _describe(signature)


# ------------------------------------------------------------------------------------------ header


@dataclass(frozen=True, eq=False)
class PlayerRun:
    """A validated run: ``samples`` as in the file, with real numpy arrays (writable, native order)."""

    run_id: str
    recorded_at: dt.datetime | None  # UTC; None for legacy lists
    metadata: dict[str, Any]
    samples: list[tuple[Any, ...]]
    layout: str  # "lidar" | "full" | "unknown:<dtype[shape],...>"
    obs_scale_version: int | None
    legacy: bool  # a bare sample list rather than a tmrl_player_run_v1 dict

    @property
    def num_samples(self) -> int:
        return len(self.samples)


_DAY_PREFIX = re.compile(r"(\d{4})(\d{2})(\d{2})_")
_MISSING = object()


def run_day_from_name(file_name: str) -> dt.date | None:
    """The ``YYYYMMDD`` of a ``YYYYMMDD_...`` file name (any folder part ignored); None otherwise."""
    match = _DAY_PREFIX.match(PurePosixPath(file_name).name)
    if match is None:
        return None
    try:
        return dt.date(*(int(part) for part in match.groups()))
    except ValueError:
        return None


def _file_stem(file_name: str) -> str:
    """``legacy_run_0001`` for ``.../legacy_run_0001.pkl`` (and ``.pkl.imported``, tmrl's consumed name)."""
    base = PurePosixPath(file_name).name
    stem = base.removesuffix(".imported")
    for suffix in (".pkl", ".pickle"):
        stem = stem.removesuffix(suffix)
    return stem or base


@dataclass(frozen=True)
class _Header:
    run_id: str
    recorded_at: dt.datetime | None
    metadata: dict[Any, Any]
    obs_scale_version: int | None
    legacy: bool


def _required(doc: dict[Any, Any], key: str, type_: type, name: str) -> Any:
    value = doc.get(key, _MISSING)
    if value is _MISSING:
        raise RunFormatError(name, f"missing required key {key!r}")
    if type(value) is not type_:
        raise RunFormatError(name, f"{key!r} is a {type_name(value)}, not a {type_.__name__}")
    return value


def _parse_recorded_at(text: str, name: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise RunFormatError(name, f"recorded_at {short(repr(text))} is not an ISO-8601 timestamp") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise RunFormatError(name, f"recorded_at {text!r} has no UTC offset")
    return moment.astimezone(dt.UTC)


def _read_header(tree: Any, name: str, file_name: str) -> tuple[_Header, list[Any]]:
    """The run's header fields and its (not yet checked) samples list."""
    if type(tree) is list:
        return _Header(_file_stem(file_name), None, {}, None, True), tree
    if type(tree) is not dict:
        raise RunFormatError(
            name,
            f"top level is a {type_name(tree)}, not a {TMRL_RUN_FORMAT} dict or a legacy list of samples",
        )
    fmt = tree.get("format", _MISSING)
    if fmt is _MISSING:
        raise RunFormatError(name, "missing required key 'format'")
    if type(fmt) is not str or fmt != TMRL_RUN_FORMAT:
        raise RunFormatError(name, f"unknown format {short(repr(fmt))} (supported: {TMRL_RUN_FORMAT!r})")
    run_id = _required(tree, "run_id", str, name)
    if not run_id:
        raise RunFormatError(name, "run_id is empty")
    recorded_at = _parse_recorded_at(_required(tree, "recorded_at", str, name), name)
    metadata = _required(tree, "metadata", dict, name)
    samples = _required(tree, "samples", list, name)
    version = tree.get("obs_scale_version")
    if version is not None and (type(version) is not int or not -(2**31) <= version < 2**31):
        raise RunFormatError(name, f"obs_scale_version {short(repr(version))} is not an int32")
    return _Header(run_id, recorded_at, metadata, version, False), samples


def _metadata_is_demo(metadata: dict[Any, Any], name: str) -> bool:
    value = metadata.get("is_demo", _MISSING)
    if value is _MISSING:
        return True
    if type(value) not in (bool, np.bool_):
        raise RunFormatError(name, f"metadata 'is_demo' is a {type_name(value)}, not a bool")
    return bool(value)


# ------------------------------------------------------------------------------------------ samples

_FLAGS = (bool, np.bool_)
_FAST_REWARDS = frozenset((float, int))
_ATOMS = frozenset((str, bytes, bytearray, int, float, bool, type(None), complex))
_SIZED_ATOMS = frozenset((str, bytes, bytearray))
_GET_IS_DEMO = operator.methodcaller("get", "is_demo", _MISSING)


@dataclass
class _Columns:
    """A validated run as columns; ``rewards``/``terminated``/``truncated``/``infos`` keep the originals."""

    act: np.ndarray  # (n, 3) float32
    components: list[np.ndarray]  # per obs component: (n, *shape), native order, C-contiguous
    signature: tuple[tuple[np.dtype, tuple[int, ...]], ...]
    reward: np.ndarray  # float64
    terminated: np.ndarray  # bool
    truncated: np.ndarray
    rewards: Sequence[Any]
    terminated_raw: Sequence[Any]
    truncated_raw: Sequence[Any]
    infos: Sequence[dict[Any, Any]]


def _fast_columns(samples: list[Any]) -> _Columns | None:
    """Every check as a C-level pass over a column; None when anything is unusual (or wrong)."""
    if set(map(type, samples)) != {tuple} or set(map(len, samples)) != {6}:
        return None
    acts, observations, rewards, terminated, truncated, infos = zip(*samples, strict=True)
    act = stack_raw(acts)
    if act is None or (act.dtype, act.shape[1:]) != _ACT:
        return None
    if set(map(type, observations)) != {tuple}:
        return None
    widths = set(map(len, observations))
    if len(widths) != 1 or widths == {0}:
        return None
    components = []
    for column in zip(*observations, strict=True):
        stacked = stack_raw(column)
        if stacked is None:
            return None
        components.append(stacked)
    if not set(map(type, rewards)) <= _FAST_REWARDS:
        return None
    if not set(map(type, terminated)) | set(map(type, truncated)) <= {bool}:
        return None
    if set(map(type, infos)) != {dict}:
        return None
    try:
        reward = np.array(rewards, np.float64)
    except OverflowError:
        return None
    signature = tuple((c.dtype, c.shape[1:]) for c in components)
    return _Columns(
        act=act,
        components=components,
        signature=signature,
        reward=reward,
        terminated=np.array(terminated, bool),
        truncated=np.array(truncated, bool),
        rewards=rewards,
        terminated_raw=terminated,
        truncated_raw=truncated,
        infos=infos,
    )


def _reward(value: Any) -> float:
    if type(value) not in _FAST_REWARDS and not isinstance(value, np.floating | np.integer):
        raise Malformed(f"reward is a {type_name(value)}, not a number")
    try:
        return float(value)
    except OverflowError:
        raise Malformed("reward does not fit a float64") from None


def _check_sample(sample: Any) -> tuple[np.ndarray, list[np.ndarray], float]:
    """One sample's checks in field order (the slow path, which names the first bad sample)."""
    if type(sample) is not tuple or len(sample) != 6:
        length = f" of length {len(sample)}" if type(sample) in (tuple, list) else ""
        raise Malformed(
            f"a {type_name(sample)}{length}, not a 6-tuple (act, obs, rew, terminated, truncated, info)"
        )
    act_value, obs, rew, terminated, truncated, info = sample
    act = as_array(act_value, "act")
    if (act.dtype, act.shape) != _ACT:
        raise Malformed(f"act is a {act.dtype} array of shape {act.shape}, not float32 of shape (3,)")
    if type(obs) is not tuple or not obs:
        empty = " (empty)" if type(obs) is tuple else ""
        raise Malformed(f"obs is a {type_name(obs)}{empty}, not a tuple of numpy arrays")
    arrays = [as_array(value, f"obs[{j}]") for j, value in enumerate(obs)]
    reward = _reward(rew)
    for flag, value in (("terminated", terminated), ("truncated", truncated)):
        if type(value) not in _FLAGS:
            raise Malformed(f"{flag} is a {type_name(value)}, not a bool")
    if type(info) is not dict:
        raise Malformed(f"info is a {type_name(info)}, not a dict")
    return act, arrays, reward


def _slow_columns(samples: list[Any], name: str, check_infos_before: Callable[[int], object]) -> _Columns:
    """Per-sample validation and stacking: reports the first bad sample, accepts every valid mixture.

    ``check_infos_before(k)`` runs the info checks of samples ``0..k-1`` before sample ``k``'s problem
    is raised, so that an earlier bad ``info`` is the one reported.
    """
    acts: list[np.ndarray] = []
    per_sample_obs: list[list[np.ndarray]] = []
    rewards: list[float] = []
    reference: tuple[tuple[np.dtype, tuple[int, ...]], ...] | None = None
    for index, sample in enumerate(samples):
        try:
            act, arrays, reward = _check_sample(sample)
        except Malformed as exc:
            check_infos_before(index)
            raise RunFormatError(name, exc.why, index) from None
        except Refused as exc:
            check_infos_before(index)
            raise UnsafePickleError(name, exc.global_name, f"sample {index}: {exc.why}") from None
        signature = tuple((a.dtype, a.shape) for a in arrays)
        if reference is None:
            reference = signature
        elif signature != reference:
            check_infos_before(index)
            raise RunFormatError(
                name,
                f"observation layout {_describe(signature)} differs from sample 0's {_describe(reference)} "
                "(all samples of a run must share one layout)",
                index,
            )
        acts.append(act)
        per_sample_obs.append(arrays)
        rewards.append(reward)
    assert reference is not None  # samples is not empty
    _, _, raw_rewards, terminated, truncated, infos = zip(*samples, strict=True)
    return _Columns(
        act=np.stack(acts),
        components=[np.stack(column) for column in zip(*per_sample_obs, strict=True)],
        signature=reference,
        reward=np.array(rewards, np.float64),
        terminated=np.array([bool(v) for v in terminated], bool),
        truncated=np.array([bool(v) for v in truncated], bool),
        rewards=raw_rewards,
        terminated_raw=terminated,
        truncated_raw=truncated,
        infos=infos,
    )


def _expanded_size(value: Any, memo: dict[int, int], active: set[int]) -> int:
    """How big ``value`` is written out in full (a shared reference counts at each place); no cycles."""
    kind = type(value)
    if kind in _ATOMS:
        return 1 + len(value) if kind in _SIZED_ATOMS else 1
    key = id(value)
    if key in memo:
        return memo[key]
    if key in active:
        raise Malformed("contains a reference cycle")
    active.add(key)
    if kind is dict:
        size = 1 + sum(
            _expanded_size(k, memo, active) + _expanded_size(v, memo, active) for k, v in value.items()
        )
    elif kind in (list, tuple, set, frozenset):
        size = 1 + sum(_expanded_size(item, memo, active) for item in value)
    elif kind is RawArray:
        size = 1 + raw_to_array(value).size  # checks the record, as load_run and run_batches will
    elif kind is UnpickledArray and value.dtype.hasobject:
        size = 1 + sum(_expanded_size(item, memo, active) for item in value.flat)
    elif kind is UnpickledArray:
        size = 1 + value.size
    else:  # numpy scalars, dtype specs, the ndarray token
        size = 1
    active.discard(key)
    memo[key] = size
    return size


def _is_flat(mapping: dict[Any, Any]) -> bool:
    """Only atoms as keys and values: nothing to walk for cycles or stand-ins."""
    return _ATOMS.issuperset(map(type, mapping.values())) and _ATOMS.issuperset(map(type, mapping))


def _info_columns(
    infos: Sequence[dict[Any, Any]], metadata_is_demo: bool, budget: int, name: str
) -> tuple[np.ndarray, list[str] | None]:
    """``is_demo`` and ``info`` as JSON for every sample (JSON None when every info is empty).

    Checks, in sample order: ``info['is_demo']`` is a bool, the expanded size of the infos so far stays
    within ``budget`` (before any JSON is written), and the info can be written as JSON.
    """
    if not any(infos):
        return np.full(len(infos), metadata_is_demo), None
    values = list(map(_GET_IS_DEMO, infos))
    texts = []
    memo: dict[int, int] = {}
    total = 0
    for index, info in enumerate(infos):
        value = values[index]
        if value is _MISSING:
            values[index] = metadata_is_demo
        elif type(value) not in _FLAGS:
            raise RunFormatError(name, f"info 'is_demo' is a {type_name(value)}, not a bool", index)
        if not info:
            texts.append("{}")
            continue
        try:
            total += _expanded_size(info, memo, set())
            if total > budget:
                raise Malformed(f"infos expand to more than {budget} items (a pickle bomb?)")
            texts.append(_info_to_json(info))
        except RecursionError:
            raise RunFormatError(name, "info is nested too deeply", index) from None
        except Malformed as exc:
            raise RunFormatError(name, f"info: {exc.why}", index) from None
        except Refused as exc:
            raise UnsafePickleError(name, exc.global_name, f"sample {index}: {exc.why}") from None
    return np.array(values, bool), texts


def _columns(
    samples: list[Any], metadata_is_demo: bool, budget: int, name: str
) -> tuple[_Columns, np.ndarray, list[str] | None]:
    """The validated columns, ``is_demo`` and the info JSON; the first bad sample, whatever its problem,
    is the one reported."""
    if not samples:
        raise RunFormatError(name, "the run has no samples")
    columns = _fast_columns(samples)
    if columns is None:
        columns = _slow_columns(
            samples,
            name,
            lambda k: _info_columns([s[5] for s in samples[:k]], metadata_is_demo, budget, name),
        )
    return (columns, *_info_columns(columns.infos, metadata_is_demo, budget, name))


@dataclass(frozen=True)
class _Decoded:
    header: _Header
    columns: _Columns
    is_demo: np.ndarray
    info_json: list[str] | None  # None: every info is empty, i.e. "{}"
    layout: str


def _decode(data: bytes, name: str, file_name: str, max_bytes: int) -> _Decoded:
    # The thousands of fresh tuples of a run would trigger collections that find nothing (~15 % of
    # the decoding time).
    with gc_paused():
        return _decode_unpaused(data, name, file_name, max_bytes)


def _decode_unpaused(data: bytes, name: str, file_name: str, max_bytes: int) -> _Decoded:
    header, samples = _read_header(unpickle(data, name, max_bytes), name, file_name)
    metadata_is_demo = _metadata_is_demo(header.metadata, name)
    budget = _INFO_BUDGET_FACTOR * memoryview(data).nbytes + _INFO_BUDGET_MIN
    try:
        if not _is_flat(header.metadata) and _expanded_size(header.metadata, {}, set()) > budget:
            raise RunFormatError(name, f"metadata expands to more than {budget} items (a pickle bomb?)")
    except RecursionError:
        raise RunFormatError(name, "metadata is nested too deeply") from None
    except Malformed as exc:
        raise RunFormatError(name, f"metadata: {exc.why}") from None
    except Refused as exc:
        raise UnsafePickleError(name, exc.global_name, f"metadata: {exc.why}") from None
    expanded = len(samples) * _sample_bytes(samples[0]) if samples else 0
    if expanded > (limit := _INFO_BUDGET_FACTOR * memoryview(data).nbytes + _ARRAY_BUDGET_MIN):
        raise RunFormatError(
            name,
            f"{len(samples)} samples expand to about {expanded} bytes of arrays, more than {limit} "
            f"({_INFO_BUDGET_FACTOR}x the file + {_ARRAY_BUDGET_MIN >> 20} MiB): shared references "
            "(a pickle bomb?)",
        )
    columns, is_demo, info_json = _columns(samples, metadata_is_demo, budget, name)
    # Only the columns survive: the pickled tree is freed here, while the GC is still paused, so the
    # collector never scans its thousands of tuples.
    return _Decoded(header, columns, is_demo, info_json, _layout_name(columns.signature))


def _sample_bytes(sample: Any) -> int:
    """The bytes sample 0's action and observation arrays take once built (0 if it is malformed: the
    validation reports it)."""
    if type(sample) is not tuple or len(sample) != 6 or type(sample[1]) is not tuple:
        return 0
    return sum(_array_bytes(value) for value in (sample[0], *sample[1]))


def _array_bytes(value: Any) -> int:
    if isinstance(value, np.ndarray):
        return value.nbytes
    if type(value) is RawArray and value.args and isinstance(value.args[0], bytes | bytearray):
        return len(value.args[0])
    return 8


# ------------------------------------------------------------------------------------------ load_run


def _materialize(value: Any, memo: dict[int, Any]) -> Any:
    """Replace the unpickler's stand-ins (raw arrays, dtype specs) by numpy objects; shares kept."""
    kind = type(value)
    if kind in _ATOMS:
        return value
    key = id(value)
    if key in memo:
        return memo[key]
    if kind is dict:
        result: Any = {_materialize(k, memo): _materialize(v, memo) for k, v in value.items()}
    elif kind in (list, tuple, set, frozenset):
        result = kind(_materialize(item, memo) for item in value)
    elif kind is RawArray:
        result = raw_to_array(value)
    elif kind is UnpickledArray and value.dtype.hasobject:
        items = np.empty(value.size, object)
        for position, item in enumerate(value.flat):
            items[position] = _materialize(item, memo)  # stored as is, even lists and arrays
        result = items.reshape(value.shape)
    elif kind is UnpickledArray:
        result = value.view(np.ndarray)
    elif kind is DtypeSpec:
        result = value.resolve()
    else:
        result = value
    memo[key] = result
    return result


def load_run(data: bytes, name: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> PlayerRun:
    """Safely unpickle and validate one run file; ``name`` (file name or URI) is used in messages and,
    for a legacy list, gives the run id (its stem).

    Raises ``UnsafePickleError`` (a global outside ``ALLOWED_GLOBALS``: nothing was run) or
    ``RunFormatError`` (broken, truncated, too large or not a valid run; the first bad sample named).
    """
    decoded = _decode(data, name, name, max_bytes)
    columns, header = decoded.columns, decoded.header
    memo: dict[int, Any] = {}
    try:
        metadata = _materialize(header.metadata, memo)
        infos = [_materialize(info, memo) if info else info for info in columns.infos]
    except Refused as exc:
        raise UnsafePickleError(name, exc.global_name, exc.why) from None
    except Malformed as exc:  # not reached: _decode checked every array of metadata and infos
        raise RunFormatError(name, f"metadata or info: {exc.why}") from None
    except TypeError as exc:  # e.g. a metadata key that is an array once rebuilt
        raise RunFormatError(name, f"metadata or info cannot be rebuilt ({short(str(exc))})") from None
    observations = zip(*columns.components, strict=True)
    samples = list(
        zip(
            columns.act,
            observations,
            columns.rewards,
            columns.terminated_raw,
            columns.truncated_raw,
            infos,
            strict=True,
        )
    )
    return PlayerRun(
        run_id=header.run_id,
        recorded_at=header.recorded_at,
        metadata=metadata,
        samples=samples,
        layout=decoded.layout,
        obs_scale_version=header.obs_scale_version,
        legacy=header.legacy,
    )


# ------------------------------------------------------------------------------------------ batches


def _json_default(value: Any) -> Any:
    """What orjson cannot write itself: the unpickler's stand-ins, non-contiguous arrays, bytes, sets."""
    kind = type(value)
    if kind is RawArray:
        return raw_to_array(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if kind in (bytes, bytearray):
        return value.hex()
    if kind in (set, frozenset):
        return sorted(value, key=lambda item: (type(item).__name__, repr(item)))  # deterministic
    if kind is complex:
        return [value.real, value.imag]
    if kind is DtypeSpec:
        return str(value.resolve())
    return repr(value)


_ORJSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def _info_to_json(info: dict[Any, Any]) -> str:
    try:
        return orjson.dumps(info, default=_json_default, option=_ORJSON_OPTIONS).decode()
    except orjson.JSONEncodeError as exc:
        if isinstance(exc.__cause__, Refused | Malformed):
            raise exc.__cause__ from None
        # Past orjson's limits (ints beyond 64 bits, tuple keys, deep nesting): the stdlib decides.
    try:
        return json.dumps(info, default=_json_default, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise Malformed(f"info cannot be written as JSON ({short(str(exc))})") from None


def _repeat(value: Any, type_: pa.DataType, n: int) -> pa.Array:
    return pa.nulls(n, type_) if value is None else pa.repeat(pa.scalar(value, type_), n)


def _fixed_list(rows: np.ndarray) -> pa.Array:
    """(n, *shape) -> fixed_size_list of prod(shape); zero-copy for a C-contiguous block."""
    width = math.prod(rows.shape[1:])
    return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(rows).reshape(-1)), width)


def _binary_rows(rows: np.ndarray) -> pa.Array:
    """(n, *shape) -> binary, one row's C-order bytes per value; zero-copy (run_batches keeps < 2 GiB)."""
    block = np.ascontiguousarray(rows)
    row_bytes = block[0].nbytes if len(block) else 0
    offsets = pa.py_buffer(np.arange(len(block) + 1, dtype=np.int32) * np.int32(row_bytes))
    return pa.Array.from_buffers(pa.binary(), len(block), [None, offsets, pa.py_buffer(block)])


def _obs_raw(components: Sequence[np.ndarray]) -> pa.Array:
    """Every component of every row as ``{shape, dtype, data}``, each row's components in order."""
    n, k = len(components[0]), len(components)
    struct_type = OBS_RAW_TYPE.value_type
    parts = []
    for component in components:
        shape = pa.array([list(component.shape[1:])] * n, pa.list_(pa.int32()))
        dtype = _repeat(component.dtype.str, pa.string(), n)
        parts.append(
            pa.StructArray.from_arrays([shape, dtype, _binary_rows(component)], fields=list(struct_type))
        )
    row_major = (np.arange(k) * n + np.arange(n)[:, None]).reshape(-1)  # row 0's k components, row 1's...
    values = pa.concat_arrays(parts).take(pa.array(row_major))
    return pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * k), values, type=OBS_RAW_TYPE)


def _observation_arrays(layout: str, components: Sequence[np.ndarray], n: int) -> dict[str, pa.Array]:
    f32 = pa.float32()
    if layout == LIDAR_LAYOUT:
        speed, lidar, prev_1, prev_2 = components
        return {
            "speed": pa.array(speed[:, 0]),
            "gear": pa.nulls(n, f32),
            "rpm": pa.nulls(n, f32),
            "lidar": _fixed_list(lidar),
            "prev_act_1": _fixed_list(prev_1),
            "prev_act_2": _fixed_list(prev_2),
        }
    if layout == FULL_LAYOUT:
        speed, gear, rpm, images, prev_1, prev_2 = components
        return {
            "speed": pa.array(speed[:, 0]),
            "gear": pa.array(gear[:, 0]),
            "rpm": pa.array(rpm[:, 0]),
            "images": _binary_rows(images),
            "prev_act_1": _fixed_list(prev_1),
            "prev_act_2": _fixed_list(prev_2),
        }
    return {"obs_raw": _obs_raw(components)}


def _episode_bounds(terminated: np.ndarray, truncated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A sample starts an episode if it is the first or follows a terminated/truncated one; it ends one
    if it is terminated or truncated itself, or the last sample of the run."""
    done = terminated | truncated
    starts = np.empty_like(done)
    starts[0] = True
    starts[1:] = done[:-1]
    ends = done.copy()
    ends[-1] = True
    return starts, ends


@dataclass(frozen=True)
class _RunRows:
    """Everything a batch of rows is cut from."""

    decoded: _Decoded
    source: Lineage
    episode_start: np.ndarray
    episode_end: np.ndarray


_COLUMN_TYPES = {f.name: f.type for f in TMRL_DEMO_BUFFERS}  # Schema.field() is slow in a hot path


def _record_batch(rows: _RunRows, start: int, stop: int) -> pa.RecordBatch:
    decoded, source, texts = rows.decoded, rows.source, rows.decoded.info_json
    header, columns = decoded.header, decoded.columns
    n = stop - start
    types = _COLUMN_TYPES
    arrays: dict[str, pa.Array] = {
        "date": _repeat(source.day, types["date"], n),
        "run_id": _repeat(header.run_id, types["run_id"], n),
        "source_uri": _repeat(source.uri, types["source_uri"], n),
        "sha256": _repeat(source.sha256, types["sha256"], n),
        "sample_index": pa.array(np.arange(start, stop, dtype=np.int32)),
        "episode_start": pa.array(rows.episode_start[start:stop]),
        "episode_end": pa.array(rows.episode_end[start:stop]),
        "act": _fixed_list(columns.act[start:stop]),
        "obs_layout": _repeat(decoded.layout, types["obs_layout"], n),
        "reward": pa.array(columns.reward[start:stop]),
        "terminated": pa.array(columns.terminated[start:stop]),
        "truncated": pa.array(columns.truncated[start:stop]),
        "info": _repeat("{}", types["info"], n)
        if texts is None
        else pa.array(texts[start:stop], types["info"]),
        "is_demo": pa.array(decoded.is_demo[start:stop]),
        "recorded_at": _repeat(header.recorded_at, types["recorded_at"], n),
        "obs_scale_version": _repeat(header.obs_scale_version, types["obs_scale_version"], n),
    }
    arrays.update(_observation_arrays(decoded.layout, [c[start:stop] for c in columns.components], n))
    return pa.RecordBatch.from_arrays(
        [arrays[name] if name in arrays else pa.nulls(n, type_) for name, type_ in types.items()],
        schema=TMRL_DEMO_BUFFERS,
    )


def run_batches(
    data: bytes, source: Lineage, *, batch_rows: int = 4096, max_bytes: int = DEFAULT_MAX_BYTES
) -> Iterator[pa.RecordBatch]:
    """One run file's bytes as ``TMRL_DEMO_BUFFERS`` batches of at most ``batch_rows`` rows, in file order.

    The whole file is unpickled (safely, see ``load_run``) and validated before the first batch, so a
    bad file raises ``UnsafePickleError`` / ``RunFormatError`` without having yielded anything.
    """
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, not {batch_rows}")
    name = source.uri or source.file_name
    decoded = _decode(data, name, source.file_name or name, max_bytes)
    columns = decoded.columns
    rows = _RunRows(decoded, source, *_episode_bounds(columns.terminated, columns.truncated))
    total = len(columns.reward)
    if decoded.layout != LIDAR_LAYOUT:  # keep a batch's binary column (images, obs_raw) below 2 GiB
        row_bytes = sum(component[0].nbytes for component in columns.components)
        batch_rows = max(1, min(batch_rows, (2**31 - 1) // max(row_bytes, 1)))
    for start in range(0, total, batch_rows):
        yield _record_batch(rows, start, min(start + batch_rows, total))


# Files the online-injection sensor quarantined (``.pkl.rejected`` and their ``.reason``) are counted by the
# listing, not decoded again; consumed ones (``.pkl.imported``) keep their day, so re-materializing a day
# never loses a run.
QUARANTINED_SUFFIXES = (".rejected", ".reason")


@dataclass(frozen=True)
class TmrlReadConfig:
    """The run config of ``tmrl_demo_buffers``."""

    max_bytes: int = field(
        default=DEFAULT_MAX_BYTES,
        metadata={"description": "Refuse a player run file larger than this, before unpickling it."},
    )


def read(data: bytes, lineage: Lineage, config: TmrlReadConfig) -> Iterator[pa.RecordBatch]:
    """The reader contract's ``read``: one player run's samples."""
    return run_batches(data, lineage, max_bytes=config.max_bytes)


def _not_quarantined(lineage: Lineage) -> bool:
    return not lineage.relative_path.endswith(QUARANTINED_SUFFIXES)


READER = SourceReader(
    source="tmrl", schema=TMRL_DEMO_BUFFERS, read=read, config=TmrlReadConfig, accepts=_not_quarantined
)
