"""TMRL player runs (pickles, see formats.md section 4) to ``TMRL_DEMO_BUFFERS`` record batches.

Pure on purpose (no Dagster, boto3 or torch): bytes in, Arrow out. Two entry points share one decoder:
``load_run`` gives the validated run as Python objects (``PlayerRun``), ``run_batches`` one row per
sample as Arrow. ``run_day_from_name`` reads the ``YYYYMMDD_`` day the recorder puts in file names.

Safety: a run file is a pickle that anybody able to write the landing folder controls, and the
original tmrl injector unpickled it as is (arbitrary code execution). Here nothing from the file
runs. ``_RestrictedUnpickler`` is the C ``pickle.Unpickler`` with only ``find_class`` and
``persistent_load`` overridden: plain values (dict, list, tuple, set, frozenset, str, bytes,
bytearray, int, float, bool, None) are built by opcodes that call no Python code, and every global
the file names must be one of ``ALLOWED_GLOBALS``, else ``UnsafePickleError`` names the file and the
``module.name`` before anything was called. The allowlist is exactly what numpy's own pickles use
(1.x and 2.x spellings), and ``find_class`` never hands out numpy's functions themselves but
checked stand-ins that a ``BUILD`` opcode cannot change for the next file (``_Allowed`` singletons
have no ``__dict__`` and no ``__setstate__``; ``_RawArray`` is a class whose inherited
``__setstate__`` needs an instance):

* ``numpy.dtype`` returns a ``_DtypeSpec`` placeholder, never a real dtype. numpy's
  ``dtype.__setstate__`` trusts the pickle: it copies a flags word (which can mark a float dtype as
  holding object pointers) and field offsets unchecked, i.e. a forged state means memory
  corruption, not just an exception. The placeholder records the type code (``"f4"``, ``"u1"``,
  ``"O8"``, ``"U5"``...) and the state, and ``resolve()`` builds a fresh dtype from the type code
  alone (plus the byte order): flags, fields, sub-arrays and metadata in the state are never used
  (structured, sub-array, void and datetime dtypes are refused as unsupported).
* ``numpy._core.numeric._frombuffer`` (numpy 2; ``numpy.core.numeric`` for numpy 1, protocol 5)
  only packs its arguments into a ``_RawArray`` record: no array is made while unpickling. The
  reader later checks the record (bytes or bytearray buffer, a resolved non-object dtype, a shape of
  non-negative ints whose size matches the buffer, order C/F or K with a permutation) and builds
  the array with ``np.frombuffer``; the columns of a run are joined straight from the records'
  buffers, which is also why this reader is faster than plain ``pickle.loads``.
* ``numpy._core.multiarray._reconstruct`` (and ``numpy.core.multiarray``; protocols 2-4, object and
  non-contiguous arrays) accepts only numpy's own call ``_reconstruct(numpy.ndarray, (0,), b"b")``
  and returns an empty ``_UnpickledArray`` whose ``__setstate__`` checks numpy's
  ``(version, shape, dtype, is_fortran, data)`` state (a placeholder dtype, data whose length
  matches the shape, a list for object arrays) before handing numpy a freshly resolved dtype.
* ``numpy.ndarray`` is a token that ``_reconstruct`` accepts and that refuses to be called, so a
  pickle cannot allocate an array of a shape it chooses (``ndarray((10**6, 10**6))``).
* ``numpy._core.multiarray.scalar`` (and ``numpy.core``) takes a placeholder dtype and exactly
  ``itemsize`` bytes (any object for object scalars, which numpy returns unchanged).

Nothing else: no ``builtins``, ``copyreg``, ``_codecs`` (protocol 0-2 byte strings), ``datetime``
(the real files write ``recorded_at`` as a string) or numpy subclasses; ``persistent_load`` refuses
every persistent id; out-of-band buffers are refused by the unpickler itself.

Resource limits: a file larger than ``max_bytes`` (``DEFAULT_MAX_BYTES``, 512 MiB) is refused before
unpickling; apart from the memo (below) the unpickled objects are at most a few times the file.
``info`` dicts are what may be expanded: shared references (``BINGET``) let a small pickle describe
an exponentially large tree, so the expanded size of every non-empty ``info`` is counted (linear
time, cycles refused) against ``16 x file size + 1 Mi`` units before any JSON is written. Residual
risk, in CPython itself (gh-115952, not fixed in the Python 3.11 this project runs): the C unpickler
grows (and zeroes) its memo table to twice a ``LONG_BINPUT``/``PUT`` index and pre-allocates a
declared ``BINBYTES8`` length, so a file of a few bytes can make it ask for gigabytes. That ends as
``MemoryError`` (reported as ``RunFormatError``) or a transient allocation, never as code execution;
finding it first would take a Python-level opcode scan costing 3x the whole decoding. Run the asset
with a memory limit.

Validation (formats.md): the top level is a ``tmrl_player_run_v1`` dict (``format``, ``run_id``,
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

import contextlib
import datetime as dt
import gc
import io
import json
import math
import operator
import pickle
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from types import MappingProxyType
from typing import Any, NoReturn

import numpy as np
import orjson
import pyarrow as pa

from replay_assets.errors import FileFormatError
from replay_assets.formats.schemas import ACT_SIZE, IMAGES_SHAPE, LIDAR_SHAPE, OBS_RAW_TYPE, TMRL_DEMO_BUFFERS

__all__ = [
    "ALLOWED_GLOBALS",
    "DEFAULT_MAX_BYTES",
    "FULL_LAYOUT",
    "LIDAR_LAYOUT",
    "TMRL_DEMO_BUFFERS",
    "TMRL_RUN_FORMAT",
    "PlayerRun",
    "RunFormatError",
    "RunSource",
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


# ------------------------------------------------------------------------------------------ schema


# ------------------------------------------------------------------------------------------ errors


class TmrlRunError(FileFormatError):
    """A player run this reader will not use; the one-line message names the file and the reason."""


class RunFormatError(TmrlRunError):
    """Not a valid player run: a broken or truncated pickle, or a schema violation.

    ``sample_index`` is the first offending sample, when the problem is in a sample.
    """

    def __init__(self, name: str, detail: str, sample_index: int | None = None) -> None:
        self.detail = " ".join(detail.split())
        self.sample_index = sample_index
        prefix = "" if sample_index is None else f"sample {sample_index}: "
        super().__init__(name, prefix + self.detail)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.name, self.detail, self.sample_index))


class UnsafePickleError(TmrlRunError):
    """The pickle names a global outside ``ALLOWED_GLOBALS``, misuses an allowed one, or holds a
    persistent id. Raised before anything it names was called."""

    def __init__(self, name: str, global_name: str | None, why: str) -> None:
        self.global_name = global_name
        self.why = " ".join(why.split())
        subject = f"{global_name}: " if global_name else ""
        super().__init__(name, f"unsafe pickle refused, nothing from it was run: {subject}{self.why}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.name, self.global_name, self.why))


class _Refused(Exception):
    """Raised while unpickling or checking; becomes an UnsafePickleError naming the file."""

    def __init__(self, global_name: str | None, why: str) -> None:
        super().__init__(global_name, why)
        self.global_name = global_name
        self.why = why


class _Malformed(Exception):
    """Raised while unpickling or checking; becomes a RunFormatError naming the file (and sample)."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ------------------------------------------------------------------------------------------ unpickler

_DTYPE_CODE = re.compile(r"b1|[iu][1248]|f[248]|c(?:8|16)|O[48]|[SU][0-9]{1,9}")
_ENDIANS = frozenset("<>|=")


class _DtypeSpec:
    """What the pickle's ``numpy.dtype(code, align, copy)`` + ``BUILD state`` becomes: inert data.

    ``resolve()`` builds a fresh dtype from the type code and byte order only (see the module
    docstring: numpy's own ``__setstate__`` would trust a forged flags word and field offsets).
    """

    __slots__ = ("_code", "_dtype", "_state")

    def __init__(self, code: str) -> None:
        self._code = code
        self._state: Any = None
        self._dtype: np.dtype | None = None

    def __setstate__(self, state: Any) -> None:
        self._state = state
        self._dtype = None

    def __repr__(self) -> str:
        return f"numpy.dtype({self._code!r})"

    def resolve(self) -> np.dtype:
        if self._dtype is None:
            self._dtype = _resolve_dtype(self._code, self._state)
        return self._dtype


def _resolve_dtype(code: str, state: Any) -> np.dtype:
    if not _DTYPE_CODE.fullmatch(code):
        raise _Malformed(
            f"unsupported numpy dtype {_short(repr(code))} (bool, int, uint, float, complex, bytes, "
            "str and object arrays only)"
        )
    dtype = np.dtype(code)
    if state is None:
        return dtype
    if type(state) is not tuple or len(state) not in (8, 9) or type(state[0]) is not int:
        raise _Malformed("malformed numpy dtype state")
    _, endian, subarray, names, fields, elsize = state[:6]
    if subarray is not None or names is not None or fields is not None:
        raise _Malformed("structured and sub-array numpy dtypes are not supported")
    if type(endian) is not str or endian not in _ENDIANS:
        raise _Malformed("malformed numpy dtype byte order")
    if type(elsize) is not int or elsize not in (-1, dtype.itemsize):
        raise _Malformed(f"numpy dtype {code!r} with an inconsistent item size {_short(repr(elsize))}")
    if endian in "<>" and dtype.byteorder != "|":
        dtype = dtype.newbyteorder(endian)
    return dtype


_FROMBUFFER_NAME = "numpy._core.numeric._frombuffer"


class _RawArray(Exception):  # a record, never raised
    """What the pickle's ``_frombuffer(buffer, dtype, shape, order[, axis_order])`` call becomes: its
    arguments, unchecked, in ``.args`` (checked when the array is built: ``_raw_to_array``).

    An Exception subclass only because BaseException's constructor is the cheapest built-in that keeps
    any number of arguments: no Python frame per array, which makes unpickling a lidar run 35 % faster
    than a Python function returning a tuple. It is never raised; a BUILD aimed at the class fails
    (``BaseException.__setstate__`` needs an instance), one aimed at a record can only change that
    record's attributes, and only ``.args`` is ever read.
    """

    def __repr__(self) -> str:  # messages must not print a megabyte of buffer
        return "<numpy array record>"

    __str__ = __repr__


class _UnpickledArray(np.ndarray):
    """What ``_reconstruct`` returns; BUILD goes through the checked ``__setstate__`` below."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        where = _Reconstruct.global_name
        if type(state) is not tuple or len(state) not in (4, 5):
            raise _Refused(where, "array state is not numpy's (version, shape, dtype, is_fortran, data)")
        if len(state) == 5 and (type(state[0]) is not int or state[0] != 1):
            raise _Malformed("unsupported numpy array pickle version")
        shape, spec, is_fortran, data = state[-4:]
        if type(spec) is not _DtypeSpec:
            raise _Refused(where, f"array state holds a {_kind(spec)} where numpy writes a dtype")
        dtype = spec.resolve()
        if not _is_shape(shape) or type(is_fortran) is not bool:
            raise _Malformed("malformed numpy array state")
        count = math.prod(shape)
        if dtype.hasobject:
            if type(data) is not list or len(data) != count:
                raise _Malformed(f"object array of shape {shape} without {count} items")
        elif type(data) is not bytes or len(data) != count * dtype.itemsize:
            raise _Malformed(f"numpy array data does not match shape {shape} and dtype {dtype}")
        np.ndarray.__setstate__(self, (1, shape, dtype, is_fortran, data))


class _Allowed:
    """Base of what ``find_class`` hands out: stateless singletons, immune to BUILD."""

    __slots__ = ()
    global_name = ""

    def __repr__(self) -> str:
        return self.global_name


class _Reconstruct(_Allowed):
    __slots__ = ()
    global_name = "numpy._core.multiarray._reconstruct"

    def __call__(self, *args: Any) -> _UnpickledArray:
        if len(args) != 3 or args[0] is not _NDARRAY:
            raise _Refused(self.global_name, "only numpy's own call _reconstruct(numpy.ndarray, (0,), b'b')")
        _, shape, typecode = args
        if type(shape) is not tuple or shape != (0,) or typecode not in (b"b", "b"):
            raise _Refused(self.global_name, "only numpy's own call _reconstruct(numpy.ndarray, (0,), b'b')")
        return _UnpickledArray((0,), np.int8)


class _Scalar(_Allowed):
    __slots__ = ()
    global_name = "numpy._core.multiarray.scalar"

    def __call__(self, *args: Any) -> Any:
        if len(args) != 2 or type(args[0]) is not _DtypeSpec:
            raise _Refused(self.global_name, "only numpy's own call scalar(dtype, data)")
        dtype, data = args[0].resolve(), args[1]
        if dtype.hasobject:
            return data  # numpy returns the object itself; it was unpickled by this unpickler
        if type(data) is not bytes or len(data) != dtype.itemsize:
            raise _Malformed(f"numpy {dtype} scalar without {dtype.itemsize} bytes of data")
        return np.frombuffer(data, dtype)[0]


class _Dtype(_Allowed):
    __slots__ = ()
    global_name = "numpy.dtype"

    def __call__(self, *args: Any) -> _DtypeSpec:
        if not 1 <= len(args) <= 3 or type(args[0]) is not str or any(type(a) is not bool for a in args[1:]):
            raise _Refused(self.global_name, "only numpy's own call dtype(type_code: str, align, copy)")
        return _DtypeSpec(args[0])


class _NdarrayToken(_Allowed):
    __slots__ = ()
    global_name = "numpy.ndarray"

    def __call__(self, *args: Any) -> NoReturn:
        raise _Refused(self.global_name, "may only be passed to _reconstruct, never called")


_NDARRAY = _NdarrayToken()
_RECONSTRUCT = _Reconstruct()
_SCALAR = _Scalar()

_ALLOWED: MappingProxyType[tuple[str, str], Any] = MappingProxyType(
    {
        ("numpy._core.numeric", "_frombuffer"): _RawArray,  # numpy 2, protocol 5 arrays
        ("numpy.core.numeric", "_frombuffer"): _RawArray,  # numpy 1
        ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,  # protocols 2-4, object arrays
        ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
        ("numpy._core.multiarray", "scalar"): _SCALAR,  # numpy scalars (np.float32(...))
        ("numpy.core.multiarray", "scalar"): _SCALAR,
        ("numpy", "dtype"): _Dtype(),
        ("numpy", "ndarray"): _NDARRAY,
    }
)
ALLOWED_GLOBALS = frozenset(f"{module}.{name}" for module, name in _ALLOWED)


class _RestrictedUnpickler(pickle.Unpickler):
    """The C unpickler; only the lookup of globals and persistent ids is replaced."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except (KeyError, TypeError):
            pass
        raise _Refused(
            _short(f"{module}.{name}", 120),
            "not an allowed global (a player run holds only plain containers and numpy arrays, dtypes "
            "and scalars)",
        )

    def persistent_load(self, pid: Any) -> NoReturn:
        raise _Refused(None, f"persistent id {_short(repr(pid))}: external references are never resolved")


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic GC while decoding (never across a ``yield``): the thousands of fresh tuples of a run
    would trigger collections that find nothing (~15 % of the decoding time)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _unpickle(data: bytes, name: str, max_bytes: int) -> Any:
    size = memoryview(data).nbytes
    if size > max_bytes:
        raise RunFormatError(name, f"file is {size} bytes, more than max_bytes={max_bytes}; not unpickled")
    stream = io.BytesIO(data)
    try:
        tree = _RestrictedUnpickler(stream).load()
    except _Refused as exc:
        raise UnsafePickleError(name, exc.global_name, exc.why) from None
    except _Malformed as exc:
        raise RunFormatError(name, exc.why) from None
    except MemoryError:
        raise RunFormatError(
            name, "pickle asks for more memory than available (see formats/tmrl.py)"
        ) from None
    except Exception as exc:  # only the C unpickler and the checks above ran: any error is a bad file
        message = _short(f"{type(exc).__name__}: {exc}", 200)
        if isinstance(exc, EOFError) or "truncated" in str(exc) or "exhausted" in str(exc):
            raise RunFormatError(name, f"truncated pickle ({message})") from None
        raise RunFormatError(name, f"not a valid pickle ({message})") from None
    if stream.tell() != size:
        raise RunFormatError(name, f"{size - stream.tell()} bytes after the end of the pickle")
    return tree


# ------------------------------------------------------------------------------------------ arrays


def _is_shape(shape: Any) -> bool:
    return type(shape) is tuple and len(shape) <= 32 and all(type(d) is int and d >= 0 for d in shape)


def _kind(value: Any) -> str:
    """A type name for messages, with the internal stand-ins named as what they stand for."""
    if type(value) in (_RawArray, _UnpickledArray):
        return "numpy.ndarray"
    if type(value) is _DtypeSpec:
        return "numpy.dtype"
    if isinstance(value, _Allowed):
        return value.global_name
    return type(value).__name__


def _native(array: np.ndarray) -> np.ndarray:
    return array if array.dtype.isnative else array.astype(array.dtype.newbyteorder("="))


def _raw_to_array(record: _RawArray) -> np.ndarray:
    """Build the array of one ``_frombuffer`` record, after checking every argument."""
    where = _FROMBUFFER_NAME
    args = record.args
    if len(args) not in (4, 5):
        raise _Refused(where, f"called with {len(args)} arguments (numpy passes 4 or 5)")
    buffer, spec, shape, order = args[:4]
    axis_order = args[4] if len(args) == 5 else None
    if type(buffer) not in (bytes, bytearray):
        raise _Refused(where, f"buffer is a {_kind(buffer)}, numpy writes bytes")
    if type(spec) is not _DtypeSpec:
        raise _Refused(where, f"dtype is a {_kind(spec)}, numpy writes a numpy.dtype")
    dtype = spec.resolve()
    if dtype.hasobject:
        raise _Refused(where, "an object array cannot come from a raw buffer")
    if not _is_shape(shape) or order not in ("C", "F", "K"):
        raise _Malformed("malformed numpy array (shape or order)")
    if len(buffer) != math.prod(shape) * dtype.itemsize:
        raise _Malformed(f"numpy array buffer of {len(buffer)} bytes does not fit shape {shape} of {dtype}")
    array = np.frombuffer(buffer, dtype)
    if order != "K":
        return array.reshape(shape, order=order)
    if (
        type(axis_order) is not tuple
        or not all(type(axis) is int for axis in axis_order)
        or sorted(axis_order) != list(range(len(shape)))
    ):
        raise _Malformed("malformed numpy array (axis order)")
    return array.reshape(shape).transpose(axis_order)


def _as_array(value: Any, what: str) -> np.ndarray:
    """A sample's array as a plain, native-order numpy array; non-arrays and object arrays refused."""
    if type(value) is _RawArray:
        array = _raw_to_array(value)
    elif type(value) is _UnpickledArray:
        array = value.view(np.ndarray)
    else:
        raise _Malformed(f"{what} is a {_kind(value)}, not a numpy array")
    if array.dtype.hasobject:
        raise _Malformed(f"{what} is an object array, not a numeric one")
    return _native(array)


_RAW_ARGS = operator.attrgetter("args")
_RAW_KEY = operator.itemgetter(1, 2, 3)  # dtype spec, shape, order
_RAW_BUFFER = operator.itemgetter(0)


def _stack_raw(records: Sequence[Any]) -> np.ndarray | None:
    """Fast path: one column of ``_frombuffer`` records sharing dtype, shape and order, joined in one go.

    None when anything is unusual; the per-sample path then decides (and names the bad sample).
    """
    if set(map(type, records)) != {_RawArray}:
        return None
    calls = list(map(_RAW_ARGS, records))
    if set(map(len, calls)) != {4}:
        return None
    try:
        keys = {(spec.resolve(), shape, order) for spec, shape, order in set(map(_RAW_KEY, calls))}
    except (TypeError, AttributeError, _Malformed):
        return None
    if len(keys) != 1:
        return None
    dtype, shape, order = keys.pop()
    if dtype.hasobject or not _is_shape(shape) or order not in ("C", "F"):
        return None
    buffers = list(map(_RAW_BUFFER, calls))
    if not set(map(type, buffers)) <= {bytes, bytearray}:
        return None
    if set(map(len, buffers)) != {math.prod(shape) * dtype.itemsize}:
        return None
    flat = np.frombuffer(bytearray().join(buffers), dtype)  # a bytearray: writable arrays for load_run
    if order == "C" or len(shape) < 2:
        return _native(flat.reshape((len(records), *shape)))
    fortran = flat.reshape((len(records), *shape[::-1])).transpose(0, *range(len(shape), 0, -1))
    return _native(np.ascontiguousarray(fortran))


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


@dataclass(frozen=True)
class RunSource:
    """Where one run file came from: copied into every row as lineage."""

    date: dt.date
    source_uri: str
    sha256: str
    file_name: str  # e.g. "20251014_101500_a1b2c3d4.pkl"; a legacy list's run id is its stem


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
        raise RunFormatError(name, f"{key!r} is a {_kind(value)}, not a {type_.__name__}")
    return value


def _parse_recorded_at(text: str, name: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise RunFormatError(name, f"recorded_at {_short(repr(text))} is not an ISO-8601 timestamp") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise RunFormatError(name, f"recorded_at {text!r} has no UTC offset")
    return moment.astimezone(dt.UTC)


def _read_header(tree: Any, name: str, file_name: str) -> tuple[_Header, list[Any]]:
    """The run's header fields and its (not yet checked) samples list."""
    if type(tree) is list:
        return _Header(_file_stem(file_name), None, {}, None, True), tree
    if type(tree) is not dict:
        raise RunFormatError(
            name, f"top level is a {_kind(tree)}, not a {TMRL_RUN_FORMAT} dict or a legacy list of samples"
        )
    fmt = tree.get("format", _MISSING)
    if fmt is _MISSING:
        raise RunFormatError(name, "missing required key 'format'")
    if type(fmt) is not str or fmt != TMRL_RUN_FORMAT:
        raise RunFormatError(name, f"unknown format {_short(repr(fmt))} (supported: {TMRL_RUN_FORMAT!r})")
    run_id = _required(tree, "run_id", str, name)
    if not run_id:
        raise RunFormatError(name, "run_id is empty")
    recorded_at = _parse_recorded_at(_required(tree, "recorded_at", str, name), name)
    metadata = _required(tree, "metadata", dict, name)
    samples = _required(tree, "samples", list, name)
    version = tree.get("obs_scale_version")
    if version is not None and (type(version) is not int or not -(2**31) <= version < 2**31):
        raise RunFormatError(name, f"obs_scale_version {_short(repr(version))} is not an int32")
    return _Header(run_id, recorded_at, metadata, version, False), samples


def _metadata_is_demo(metadata: dict[Any, Any], name: str) -> bool:
    value = metadata.get("is_demo", _MISSING)
    if value is _MISSING:
        return True
    if type(value) not in (bool, np.bool_):
        raise RunFormatError(name, f"metadata 'is_demo' is a {_kind(value)}, not a bool")
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
    act = _stack_raw(acts)
    if act is None or (act.dtype, act.shape[1:]) != _ACT:
        return None
    if set(map(type, observations)) != {tuple}:
        return None
    widths = set(map(len, observations))
    if len(widths) != 1 or widths == {0}:
        return None
    components = []
    for column in zip(*observations, strict=True):
        stacked = _stack_raw(column)
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
        raise _Malformed(f"reward is a {_kind(value)}, not a number")
    try:
        return float(value)
    except OverflowError:
        raise _Malformed("reward does not fit a float64") from None


def _check_sample(sample: Any) -> tuple[np.ndarray, list[np.ndarray], float]:
    """One sample's checks in field order (the slow path, which names the first bad sample)."""
    if type(sample) is not tuple or len(sample) != 6:
        length = f" of length {len(sample)}" if type(sample) in (tuple, list) else ""
        raise _Malformed(
            f"a {_kind(sample)}{length}, not a 6-tuple (act, obs, rew, terminated, truncated, info)"
        )
    act_value, obs, rew, terminated, truncated, info = sample
    act = _as_array(act_value, "act")
    if (act.dtype, act.shape) != _ACT:
        raise _Malformed(f"act is a {act.dtype} array of shape {act.shape}, not float32 of shape (3,)")
    if type(obs) is not tuple or not obs:
        empty = " (empty)" if type(obs) is tuple else ""
        raise _Malformed(f"obs is a {_kind(obs)}{empty}, not a tuple of numpy arrays")
    arrays = [_as_array(value, f"obs[{j}]") for j, value in enumerate(obs)]
    reward = _reward(rew)
    for flag, value in (("terminated", terminated), ("truncated", truncated)):
        if type(value) not in _FLAGS:
            raise _Malformed(f"{flag} is a {_kind(value)}, not a bool")
    if type(info) is not dict:
        raise _Malformed(f"info is a {_kind(info)}, not a dict")
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
        except _Malformed as exc:
            check_infos_before(index)
            raise RunFormatError(name, exc.why, index) from None
        except _Refused as exc:
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
        raise _Malformed("contains a reference cycle")
    active.add(key)
    if kind is dict:
        size = 1 + sum(
            _expanded_size(k, memo, active) + _expanded_size(v, memo, active) for k, v in value.items()
        )
    elif kind in (list, tuple, set, frozenset):
        size = 1 + sum(_expanded_size(item, memo, active) for item in value)
    elif kind is _RawArray:
        size = 1 + _raw_to_array(value).size  # checks the record, as load_run and run_batches will
    elif kind is _UnpickledArray and value.dtype.hasobject:
        size = 1 + sum(_expanded_size(item, memo, active) for item in value.flat)
    elif kind is _UnpickledArray:
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
            raise RunFormatError(name, f"info 'is_demo' is a {_kind(value)}, not a bool", index)
        if not info:
            texts.append("{}")
            continue
        try:
            total += _expanded_size(info, memo, set())
            if total > budget:
                raise _Malformed(f"infos expand to more than {budget} items (a pickle bomb?)")
            texts.append(_info_to_json(info))
        except RecursionError:
            raise RunFormatError(name, "info is nested too deeply", index) from None
        except _Malformed as exc:
            raise RunFormatError(name, f"info: {exc.why}", index) from None
        except _Refused as exc:
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
    with _gc_paused():
        return _decode_unpaused(data, name, file_name, max_bytes)


def _decode_unpaused(data: bytes, name: str, file_name: str, max_bytes: int) -> _Decoded:
    header, samples = _read_header(_unpickle(data, name, max_bytes), name, file_name)
    metadata_is_demo = _metadata_is_demo(header.metadata, name)
    budget = _INFO_BUDGET_FACTOR * memoryview(data).nbytes + _INFO_BUDGET_MIN
    try:
        if not _is_flat(header.metadata) and _expanded_size(header.metadata, {}, set()) > budget:
            raise RunFormatError(name, f"metadata expands to more than {budget} items (a pickle bomb?)")
    except RecursionError:
        raise RunFormatError(name, "metadata is nested too deeply") from None
    except _Malformed as exc:
        raise RunFormatError(name, f"metadata: {exc.why}") from None
    except _Refused as exc:
        raise UnsafePickleError(name, exc.global_name, f"metadata: {exc.why}") from None
    columns, is_demo, info_json = _columns(samples, metadata_is_demo, budget, name)
    # Only the columns survive: the pickled tree is freed here, while the GC is still paused, so the
    # collector never scans its thousands of tuples.
    return _Decoded(header, columns, is_demo, info_json, _layout_name(columns.signature))


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
    elif kind is _RawArray:
        result = _raw_to_array(value)
    elif kind is _UnpickledArray and value.dtype.hasobject:
        items = np.empty(value.size, object)
        for position, item in enumerate(value.flat):
            items[position] = _materialize(item, memo)  # stored as is, even lists and arrays
        result = items.reshape(value.shape)
    elif kind is _UnpickledArray:
        result = value.view(np.ndarray)
    elif kind is _DtypeSpec:
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
    except _Refused as exc:
        raise UnsafePickleError(name, exc.global_name, exc.why) from None
    except _Malformed as exc:  # not reached: _decode checked every array of metadata and infos
        raise RunFormatError(name, f"metadata or info: {exc.why}") from None
    except TypeError as exc:  # e.g. a metadata key that is an array once rebuilt
        raise RunFormatError(name, f"metadata or info cannot be rebuilt ({_short(str(exc))})") from None
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
    if kind is _RawArray:
        return _raw_to_array(value)
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
    if kind is _DtypeSpec:
        return str(value.resolve())
    return repr(value)


_ORJSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def _info_to_json(info: dict[Any, Any]) -> str:
    try:
        return orjson.dumps(info, default=_json_default, option=_ORJSON_OPTIONS).decode()
    except orjson.JSONEncodeError as exc:
        if isinstance(exc.__cause__, _Refused | _Malformed):
            raise exc.__cause__ from None
        # Past orjson's limits (ints beyond 64 bits, tuple keys, deep nesting): the stdlib decides.
    try:
        return json.dumps(info, default=_json_default, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise _Malformed(f"info cannot be written as JSON ({_short(str(exc))})") from None


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
    source: RunSource
    episode_start: np.ndarray
    episode_end: np.ndarray


_COLUMN_TYPES = {f.name: f.type for f in TMRL_DEMO_BUFFERS}  # Schema.field() is slow in a hot path


def _record_batch(rows: _RunRows, start: int, stop: int) -> pa.RecordBatch:
    decoded, source, texts = rows.decoded, rows.source, rows.decoded.info_json
    header, columns = decoded.header, decoded.columns
    n = stop - start
    types = _COLUMN_TYPES
    arrays: dict[str, pa.Array] = {
        "date": _repeat(source.date, types["date"], n),
        "run_id": _repeat(header.run_id, types["run_id"], n),
        "source_uri": _repeat(source.source_uri, types["source_uri"], n),
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
    data: bytes, source: RunSource, *, batch_rows: int = 4096, max_bytes: int = DEFAULT_MAX_BYTES
) -> Iterator[pa.RecordBatch]:
    """One run file's bytes as ``TMRL_DEMO_BUFFERS`` batches of at most ``batch_rows`` rows, in file order.

    The whole file is unpickled (safely, see ``load_run``) and validated before the first batch, so a
    bad file raises ``UnsafePickleError`` / ``RunFormatError`` without having yielded anything.
    """
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, not {batch_rows}")
    name = source.source_uri or source.file_name
    decoded = _decode(data, name, source.file_name or name, max_bytes)
    columns = decoded.columns
    rows = _RunRows(decoded, source, *_episode_bounds(columns.terminated, columns.truncated))
    total = len(columns.reward)
    if decoded.layout != LIDAR_LAYOUT:  # keep a batch's binary column (images, obs_raw) below 2 GiB
        row_bytes = sum(component[0].nbytes for component in columns.components)
        batch_rows = max(1, min(batch_rows, (2**31 - 1) // max(row_bytes, 1)))
    for start in range(0, total, batch_rows):
        yield _record_batch(rows, start, min(start + batch_rows, total))
