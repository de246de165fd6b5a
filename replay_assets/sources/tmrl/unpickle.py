"""The restricted unpickler of TMRL player runs: an untrusted pickle decoded without running anything.

A module of its own because it is the security boundary: everything a hostile run file can reach while
being unpickled is here (the allowlist, the checked stand-ins for numpy's globals, the checks that turn
them into arrays), apart from the run format that ``sources/tmrl/read.py`` validates on top of it. The run
errors live here too, since ``unpickle`` raises them; ``sources/tmrl/read.py`` re-exports them.

A run file is a pickle that anybody able to write the landing folder controls, and the original tmrl
injector unpickled it as is (arbitrary code execution). Here nothing from the file runs.
``_RestrictedUnpickler`` is the C ``pickle.Unpickler`` with only ``find_class`` and ``persistent_load``
overridden: plain values (dict, list, tuple, set, frozenset, str, bytes, bytearray, int, float, bool,
None) are built by opcodes that call no Python code, and every global the file names must be one of
``ALLOWED_GLOBALS``, else ``UnsafePickleError`` names the file and the ``module.name`` before anything was
called. The allowlist is exactly what numpy's own pickles use (1.x and 2.x spellings), and
``find_class`` never hands out numpy's functions themselves but checked stand-ins that a ``BUILD`` opcode
cannot change for the next file (``_Allowed`` singletons have no ``__dict__`` and no ``__setstate__``;
``RawArray`` is a class whose inherited ``__setstate__`` needs an instance):

* ``numpy.dtype`` returns a ``DtypeSpec`` placeholder, never a real dtype. numpy's
  ``dtype.__setstate__`` trusts the pickle: it copies a flags word (which can mark a float dtype as
  holding object pointers) and field offsets unchecked, i.e. a forged state means memory
  corruption, not just an exception. The placeholder records the type code (``"f4"``, ``"u1"``,
  ``"O8"``, ``"U5"``...) and the state, and ``resolve()`` builds a fresh dtype from the type code
  alone (plus the byte order): flags, fields, sub-arrays and metadata in the state are never used
  (structured, sub-array, void and datetime dtypes are refused as unsupported).
* ``numpy._core.numeric._frombuffer`` (numpy 2; ``numpy.core.numeric`` for numpy 1, protocol 5)
  only packs its arguments into a ``RawArray`` record: no array is made while unpickling. The
  reader later checks the record (bytes or bytearray buffer, a resolved non-object dtype, a shape of
  non-negative ints whose size matches the buffer, order C/F or K with a permutation) and builds
  the array with ``np.frombuffer``; the columns of a run are joined straight from the records'
  buffers, which is also why this reader is faster than plain ``pickle.loads``.
* ``numpy._core.multiarray._reconstruct`` (and ``numpy.core.multiarray``; protocols 2-4, object and
  non-contiguous arrays) accepts only numpy's own call ``_reconstruct(numpy.ndarray, (0,), b"b")``
  and returns an empty ``UnpickledArray`` whose ``__setstate__`` checks numpy's
  ``(version, shape, dtype, is_fortran, data)`` state (a placeholder dtype, data whose length
  matches the shape, a list for object arrays) before handing numpy a freshly resolved dtype.
* ``numpy.ndarray`` is a token that ``_reconstruct`` accepts and that refuses to be called, so a
  pickle cannot allocate an array of a shape it chooses (``ndarray((10**6, 10**6))``).
* ``numpy._core.multiarray.scalar`` (and ``numpy.core``) takes a placeholder dtype and exactly
  ``itemsize`` bytes (any object for object scalars, which numpy returns unchanged).

Nothing else: no ``builtins``, ``copyreg``, ``_codecs`` (protocol 0-2 byte strings), ``datetime``
(the real files write ``recorded_at`` as a string) or numpy subclasses; ``persistent_load`` refuses
every persistent id; out-of-band buffers are refused by the unpickler itself.

Memory: a file larger than ``max_bytes`` is refused before unpickling; apart from the memo the
unpickled objects are at most a few times the file. Residual risk, in CPython itself (gh-115952, not
fixed in the Python 3.11 this project runs): the C unpickler grows (and zeroes) its memo table to twice
a ``LONG_BINPUT``/``PUT`` index and pre-allocates a declared ``BINBYTES8`` length, so a file of a few
bytes can make it ask for gigabytes. That ends as ``MemoryError`` (reported as ``RunFormatError``) or a
transient allocation, never as code execution; finding it first would take a Python-level opcode scan
costing 3x the whole decoding. Run the asset with a memory limit.
"""

from __future__ import annotations

import io
import math
import operator
import pickle
import re
from collections.abc import Sequence
from types import MappingProxyType
from typing import Any, NoReturn

import numpy as np

from replay_assets.errors import FileFormatError

__all__ = [
    "ALLOWED_GLOBALS",
    "DtypeSpec",
    "Malformed",
    "RawArray",
    "Refused",
    "RunFormatError",
    "TmrlRunError",
    "UnpickledArray",
    "UnsafePickleError",
    "as_array",
    "raw_to_array",
    "short",
    "stack_raw",
    "type_name",
    "unpickle",
]


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


class Refused(Exception):
    """Raised while unpickling or checking; becomes an UnsafePickleError naming the file."""

    def __init__(self, global_name: str | None, why: str) -> None:
        super().__init__(global_name, why)
        self.global_name = global_name
        self.why = why


class Malformed(Exception):
    """Raised while unpickling or checking; becomes a RunFormatError naming the file (and sample)."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ------------------------------------------------------------------------------------------ unpickler

_DTYPE_CODE = re.compile(r"b1|[iu][1248]|f[248]|c(?:8|16)|O[48]|[SU][0-9]{1,9}")
_ENDIANS = frozenset("<>|=")


class DtypeSpec:
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
        raise Malformed(
            f"unsupported numpy dtype {short(repr(code))} (bool, int, uint, float, complex, bytes, "
            "str and object arrays only)"
        )
    dtype = np.dtype(code)
    if state is None:
        return dtype
    if type(state) is not tuple or len(state) not in (8, 9) or type(state[0]) is not int:
        raise Malformed("malformed numpy dtype state")
    _, endian, subarray, names, fields, elsize = state[:6]
    if subarray is not None or names is not None or fields is not None:
        raise Malformed("structured and sub-array numpy dtypes are not supported")
    if type(endian) is not str or endian not in _ENDIANS:
        raise Malformed("malformed numpy dtype byte order")
    if type(elsize) is not int or elsize not in (-1, dtype.itemsize):
        raise Malformed(f"numpy dtype {code!r} with an inconsistent item size {short(repr(elsize))}")
    if endian in "<>" and dtype.byteorder != "|":
        dtype = dtype.newbyteorder(endian)
    return dtype


_FROMBUFFER_NAME = "numpy._core.numeric._frombuffer"


class RawArray(Exception):  # a record, never raised
    """What the pickle's ``_frombuffer(buffer, dtype, shape, order[, axis_order])`` call becomes: its
    arguments, unchecked, in ``.args`` (checked when the array is built: ``raw_to_array``).

    An Exception subclass only because BaseException's constructor is the cheapest built-in that keeps
    any number of arguments: no Python frame per array, which makes unpickling a lidar run 35 % faster
    than a Python function returning a tuple. It is never raised; a BUILD aimed at the class fails
    (``BaseException.__setstate__`` needs an instance), one aimed at a record can only change that
    record's attributes, and only ``.args`` is ever read.
    """

    def __repr__(self) -> str:  # messages must not print a megabyte of buffer
        return "<numpy array record>"

    __str__ = __repr__


class UnpickledArray(np.ndarray):
    """What ``_reconstruct`` returns; BUILD goes through the checked ``__setstate__`` below."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        where = _Reconstruct.global_name
        if type(state) is not tuple or len(state) not in (4, 5):
            raise Refused(where, "array state is not numpy's (version, shape, dtype, is_fortran, data)")
        if len(state) == 5 and (type(state[0]) is not int or state[0] != 1):
            raise Malformed("unsupported numpy array pickle version")
        shape, spec, is_fortran, data = state[-4:]
        if type(spec) is not DtypeSpec:
            raise Refused(where, f"array state holds a {type_name(spec)} where numpy writes a dtype")
        dtype = spec.resolve()
        if not _is_shape(shape) or type(is_fortran) is not bool:
            raise Malformed("malformed numpy array state")
        count = math.prod(shape)
        if dtype.hasobject:
            if type(data) is not list or len(data) != count:
                raise Malformed(f"object array of shape {shape} without {count} items")
        elif type(data) is not bytes or len(data) != count * dtype.itemsize:
            raise Malformed(f"numpy array data does not match shape {shape} and dtype {dtype}")
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

    def __call__(self, *args: Any) -> UnpickledArray:
        if len(args) != 3 or args[0] is not _NDARRAY:
            raise Refused(self.global_name, "only numpy's own call _reconstruct(numpy.ndarray, (0,), b'b')")
        _, shape, typecode = args
        if type(shape) is not tuple or shape != (0,) or typecode not in (b"b", "b"):
            raise Refused(self.global_name, "only numpy's own call _reconstruct(numpy.ndarray, (0,), b'b')")
        return UnpickledArray((0,), np.int8)


class _Scalar(_Allowed):
    __slots__ = ()
    global_name = "numpy._core.multiarray.scalar"

    def __call__(self, *args: Any) -> Any:
        if len(args) != 2 or type(args[0]) is not DtypeSpec:
            raise Refused(self.global_name, "only numpy's own call scalar(dtype, data)")
        dtype, data = args[0].resolve(), args[1]
        if dtype.hasobject:
            return data  # numpy returns the object itself; it was unpickled by this unpickler
        if type(data) is not bytes or len(data) != dtype.itemsize:
            raise Malformed(f"numpy {dtype} scalar without {dtype.itemsize} bytes of data")
        return np.frombuffer(data, dtype)[0]


class _Dtype(_Allowed):
    __slots__ = ()
    global_name = "numpy.dtype"

    def __call__(self, *args: Any) -> DtypeSpec:
        if not 1 <= len(args) <= 3 or type(args[0]) is not str or any(type(a) is not bool for a in args[1:]):
            raise Refused(self.global_name, "only numpy's own call dtype(type_code: str, align, copy)")
        return DtypeSpec(args[0])


class _NdarrayToken(_Allowed):
    __slots__ = ()
    global_name = "numpy.ndarray"

    def __call__(self, *args: Any) -> NoReturn:
        raise Refused(self.global_name, "may only be passed to _reconstruct, never called")


_NDARRAY = _NdarrayToken()
_RECONSTRUCT = _Reconstruct()
_SCALAR = _Scalar()

_ALLOWED: MappingProxyType[tuple[str, str], Any] = MappingProxyType(
    {
        ("numpy._core.numeric", "_frombuffer"): RawArray,  # numpy 2, protocol 5 arrays
        ("numpy.core.numeric", "_frombuffer"): RawArray,  # numpy 1
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
        raise Refused(
            short(f"{module}.{name}", 120),
            "not an allowed global (a player run holds only plain containers and numpy arrays, dtypes "
            "and scalars)",
        )

    def persistent_load(self, pid: Any) -> NoReturn:
        raise Refused(None, f"persistent id {short(repr(pid))}: external references are never resolved")


def unpickle(data: bytes, name: str, max_bytes: int) -> Any:
    size = memoryview(data).nbytes
    if size > max_bytes:
        raise RunFormatError(name, f"file is {size} bytes, more than max_bytes={max_bytes}; not unpickled")
    stream = io.BytesIO(data)
    try:
        tree = _RestrictedUnpickler(stream).load()
    except Refused as exc:
        raise UnsafePickleError(name, exc.global_name, exc.why) from None
    except Malformed as exc:
        raise RunFormatError(name, exc.why) from None
    except MemoryError:
        raise RunFormatError(
            name, "pickle asks for more memory than available (see sources/tmrl/read.py)"
        ) from None
    except Exception as exc:  # only the C unpickler and the checks above ran: any error is a bad file
        message = short(f"{type(exc).__name__}: {exc}", 200)
        if isinstance(exc, EOFError) or "truncated" in str(exc) or "exhausted" in str(exc):
            raise RunFormatError(name, f"truncated pickle ({message})") from None
        raise RunFormatError(name, f"not a valid pickle ({message})") from None
    if stream.tell() != size:
        raise RunFormatError(name, f"{size - stream.tell()} bytes after the end of the pickle")
    return tree


# ------------------------------------------------------------------------------------------ arrays


def _is_shape(shape: Any) -> bool:
    return type(shape) is tuple and len(shape) <= 32 and all(type(d) is int and d >= 0 for d in shape)


def type_name(value: Any) -> str:
    """A type name for messages, with the internal stand-ins named as what they stand for."""
    if type(value) in (RawArray, UnpickledArray):
        return "numpy.ndarray"
    if type(value) is DtypeSpec:
        return "numpy.dtype"
    if isinstance(value, _Allowed):
        return value.global_name
    return type(value).__name__


def _native(array: np.ndarray) -> np.ndarray:
    return array if array.dtype.isnative else array.astype(array.dtype.newbyteorder("="))


def raw_to_array(record: RawArray) -> np.ndarray:
    """Build the array of one ``_frombuffer`` record, after checking every argument."""
    where = _FROMBUFFER_NAME
    args = record.args
    if len(args) not in (4, 5):
        raise Refused(where, f"called with {len(args)} arguments (numpy passes 4 or 5)")
    buffer, spec, shape, order = args[:4]
    axis_order = args[4] if len(args) == 5 else None
    if type(buffer) not in (bytes, bytearray):
        raise Refused(where, f"buffer is a {type_name(buffer)}, numpy writes bytes")
    if type(spec) is not DtypeSpec:
        raise Refused(where, f"dtype is a {type_name(spec)}, numpy writes a numpy.dtype")
    dtype = spec.resolve()
    if dtype.hasobject:
        raise Refused(where, "an object array cannot come from a raw buffer")
    if not _is_shape(shape) or order not in ("C", "F", "K"):
        raise Malformed("malformed numpy array (shape or order)")
    if len(buffer) != math.prod(shape) * dtype.itemsize:
        raise Malformed(f"numpy array buffer of {len(buffer)} bytes does not fit shape {shape} of {dtype}")
    array = np.frombuffer(buffer, dtype)
    if order != "K":
        return array.reshape(shape, order=order)
    if (
        type(axis_order) is not tuple
        or not all(type(axis) is int for axis in axis_order)
        or sorted(axis_order) != list(range(len(shape)))
    ):
        raise Malformed("malformed numpy array (axis order)")
    return array.reshape(shape).transpose(axis_order)


def as_array(value: Any, what: str) -> np.ndarray:
    """A sample's array as a plain, native-order numpy array; non-arrays and object arrays refused."""
    if type(value) is RawArray:
        array = raw_to_array(value)
    elif type(value) is UnpickledArray:
        array = value.view(np.ndarray)
    else:
        raise Malformed(f"{what} is a {type_name(value)}, not a numpy array")
    if array.dtype.hasobject:
        raise Malformed(f"{what} is an object array, not a numeric one")
    return _native(array)


_RAW_ARGS = operator.attrgetter("args")
_RAW_KEY = operator.itemgetter(1, 2, 3)  # dtype spec, shape, order
_RAW_BUFFER = operator.itemgetter(0)


def stack_raw(records: Sequence[Any]) -> np.ndarray | None:
    """Fast path: one column of ``_frombuffer`` records sharing dtype, shape and order, joined in one go.

    None when anything is unusual; the per-sample path then decides (and names the bad sample).
    """
    if set(map(type, records)) != {RawArray}:
        return None
    calls = list(map(_RAW_ARGS, records))
    if set(map(len, calls)) != {4}:
        return None
    try:
        keys = {(spec.resolve(), shape, order) for spec, shape, order in set(map(_RAW_KEY, calls))}
    except (TypeError, AttributeError, Malformed):
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
