"""The fast path of the Townlet reader: a producer-shaped msgpack document without a Python object per step.

Used by ``sources/townlet/read.py``, which owns the format's rules and errors: anything this module does not
expect makes it give up (``None``), and the generic path (``msgpack.unpackb`` and validation) decides.

The producer's way spends ~0.8 ms of a 500-step episode creating 20,000 Python objects; this path creates
none per step. msgpack reads only the metadata and the small tail; the step maps are located in the bytes
with numpy (predicted from the first two steps when no step was dropped, else searched for), and when
every step has the first one's layout after its step number (the usual file) all steps are copied into
one (steps x bytes) block: one masked comparison against the first step checks every key, type byte and
list header of every step, and each field is a strided view of the block. Steps of differing layouts
(``[]`` positions, nil in some steps, wide ints) are decoded field by field over all steps instead.
Anything unexpected (another key order, a float32, a list longer than 15, ...) makes the fast path give
up. Both paths give identical results (tested on the real files and on generated variants).

Verification (``fast_step_facts``) needs what the steps are, not their values: for a uniform file the
masked comparison alone proves that every step decodes, and the facts (step count, meters, position
dimension, which optional fields are recorded) are read off the first step's layout, so no Arrow column
is built. Files that are not uniform get their columns built, as when decoding.

Two allocation habits matter as much as the arithmetic: each ``msgpack.Unpacker`` gets a buffer sized to
its input (the default 1 MiB is fresh pages to fault in on every call), and the step block is a
per-thread scratch buffer, checked in place (block-sized temporaries on every call make malloc return
and re-fault their pages).
"""

from __future__ import annotations

import collections
import functools
import itertools
import threading
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np
import pyarrow as pa

from replay_assets.sources.townlet.schema import TOWNLET_EPISODE_STEPS

__all__ = ["StepFacts", "fast_document", "fast_step_facts"]

REQUIRED_STEP_KEYS = ("step", "position", "meters", "action", "reward", "intrinsic_reward", "done")
# Written as nil when not recorded; a step without the key at all is read the same way.
OPTIONAL_STEP_KEYS = ("q_values", "epsilon", "action_masks", "time_of_day", "interaction_progress")
CONTEXT_COLUMNS = ("date", "checkpoint", "episode_id", "source_uri")
# TOWNLET_EPISODE_STEPS without the context columns: what decode_recording returns per step.
STEP_COLUMNS = pa.schema([f for f in TOWNLET_EPISODE_STEPS if f.name not in CONTEXT_COLUMNS])
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
SORTED = "_sorted"  # marker key in a columns dict: the step numbers are known increasing, non-negative


@dataclass(frozen=True)
class StepFacts:
    """What verification needs from the steps of a file whose steps all decode (``fast_step_facts``).

    ``step``: the step numbers in file order; ``known_sorted``: proved increasing and non-negative (else
    the caller checks them for duplicates and negatives, as decoding would). ``position_dim`` is 0 when
    the steps record no position.
    """

    step: pa.Array
    known_sorted: bool
    meter_count: int
    position_dim: int
    has_q_values: bool
    has_action_masks: bool
    has_temporal: bool


# ------------------------------------------------------------------------------------------ fast path
#
# Three steps, each giving up (``_Unusual``, then the generic path decides) at the first byte it does not
# expect: locate the step maps (``_consecutive_steps``, else ``_step_starts``) and decode their step
# numbers; decode the rest of every step from one (steps x bytes) block when all steps share one layout
# (``_uniform_steps``, the usual file), else field by field over all steps (``_columnwise_steps``).

_STEP_HEAD_BYTES = b"\x8c\xa4step"  # fixmap of 12 entries, then the first key: where every step starts
_STEP_HEAD = np.frombuffer(_STEP_HEAD_BYTES, np.uint8)
_STEP_HEAD_AT = np.arange(len(_STEP_HEAD))
_STEP_HEAD_WORD = np.uint64(int.from_bytes(_STEP_HEAD_BYTES, "big") << 16)  # the header atop a 64-bit word
# The other step keys as msgpack fixstr bytes (0xa0 | length, then the text), in the producer's order.
_KEYS = [bytes([0xA0 | len(key)]) + key.encode() for key in (*REQUIRED_STEP_KEYS, *OPTIONAL_STEP_KEYS)][1:]
_KEY_LENGTHS = np.array([len(k) for k in _KEYS], np.int64)[:, None]
_KEY_HEADS = np.array([k[0] for k in _KEYS], np.uint8)[:, None]
_KEY_FIRSTS = np.array([k[1] for k in _KEYS], np.uint8)[:, None]
_KEY_LASTS = np.array([k[-1] for k in _KEYS], np.uint8)[:, None]
_HEAD_BYTES = 16384  # enough for version and metadata, which the producer writes before the steps
_NIL, _FALSE, _TRUE, _UINT8, _UINT16, _FLOAT64 = 0xC0, 0xC2, 0xC3, 0xCC, 0xCD, 0xCB
# Integer encodings read after a marker byte: marker -> (payload bytes, big-endian dtype).
_WIDE_INTS = {
    0xCC: (1, ">u1"),
    0xCD: (2, ">u2"),
    0xCE: (4, ">u4"),
    0xD0: (1, ">i1"),
    0xD1: (2, ">i2"),
    0xD2: (4, ">i4"),
}
_IS_FIXINT = np.zeros(256, bool)
_IS_FIXINT[:0x80] = _IS_FIXINT[0xE0:] = True
_IS_BOOL = np.zeros(256, bool)
_IS_BOOL[[_FALSE, _TRUE]] = True
_LIST_KINDS = ("position", "floats", "bools")
_ZEROS8 = bytes(8)
_SCRATCH = threading.local()  # per-thread reusable step block, see _gather_rows
_TEMPLATES: collections.deque = collections.deque(maxlen=16)  # (size, mask, masked row, layout), newest first
# What each step field after "step" may be encoded as; "nil" only for the optional fields.
_FIELD_KINDS = {
    "position": ("position",),
    "meters": ("floats",),
    "action": ("int",),
    "reward": ("float",),
    "intrinsic_reward": ("float",),
    "done": ("bool",),
    "q_values": ("floats", "nil"),
    "epsilon": ("float", "nil"),
    "action_masks": ("bools", "nil"),
    "time_of_day": ("int", "nil"),
    "interaction_progress": ("float", "nil"),
}
_FIELD_TYPES = {f.name: f.type for f in STEP_COLUMNS}


class _Unusual(Exception):
    """The fast path met something it does not decode; the generic path takes over."""


class _Views:
    """Big-endian views of the document at every byte offset: ``views[">f8"][q]`` is the float64 at ``q``."""

    def __init__(self, buf: np.ndarray) -> None:
        self.buf = buf
        self._views: dict[str, np.ndarray] = {}

    def __getitem__(self, dtype: str) -> np.ndarray:
        view = self._views.get(dtype)
        if view is None:
            count = len(self.buf) - np.dtype(dtype).itemsize + 1
            view = self._views[dtype] = np.ndarray((count,), dtype, self.buf, 0, (1,))
        return view


def fast_document(raw: bytes) -> tuple[dict[str, Any], dict[str, pa.Array]] | None:
    """``(top-level map without "steps", step columns)`` of a producer-shaped document, without a Python
    object per step; None when anything is unusual. The columns are ``STEP_COLUMNS``' plus the position
    as x, y, z, and ``SORTED`` when the step numbers are proved increasing and non-negative."""
    try:
        return _fast_document_unchecked(raw, build=True)
    except Exception:  # any surprise (_Unusual, msgpack or index errors): the generic path decides
        return None


def fast_step_facts(raw: bytes) -> tuple[dict[str, Any], StepFacts | dict[str, pa.Array]] | None:
    """Like ``fast_document``, for verification: when every step has the first one's layout (the usual
    file) the steps are checked but not decoded, and their ``StepFacts`` come back instead of columns."""
    try:
        return _fast_document_unchecked(raw, build=False)
    except Exception:
        return None


def _fast_document_unchecked(raw: bytes, *, build: bool) -> tuple[dict[str, Any], Any]:
    if not 0x80 <= raw[0] <= 0x8F:
        raise _Unusual("top level is not a fixmap")
    head = _unpacker(raw[:_HEAD_BYTES])
    entries = head.read_map_header()
    top: dict[str, Any] = {}
    read = 0  # map entries read, the steps entry included
    while read < entries:
        read += 1
        key = head.unpack()
        if key == "steps":
            break
        top[key] = head.unpack()
    else:
        raise _Unusual("no steps")
    at = head.tell()
    marker = raw[at]
    if 0x91 <= marker <= 0x9F:
        count, first = marker & 0x0F, at + 1
    elif marker == 0xDC:
        count, first = int.from_bytes(raw[at + 1 : at + 3], "big"), at + 3
    elif marker == 0xDD:
        count, first = int.from_bytes(raw[at + 1 : at + 5], "big"), at + 5
    else:
        raise _Unusual("steps is not a non-empty array")
    steps, end = _fast_steps(raw, first, count, build)
    if read < entries:
        tail = _unpacker(raw[end:])
        for _ in range(entries - read):
            key = tail.unpack()
            if key == "steps" or key in top:
                raise _Unusual("duplicate top-level key")
            top[key] = tail.unpack()
        end += tail.tell()
    if end != len(raw):
        raise _Unusual("trailing bytes")
    return top, steps


def _unpacker(chunk: bytes) -> msgpack.Unpacker:
    """An Unpacker fed ``chunk``, its buffer sized to it: by default each Unpacker mallocs a 1 MiB buffer,
    fresh pages to fault in on every call, which alone cost as much as decoding a short episode."""
    size = max(len(chunk), 1)
    unpacker = msgpack.Unpacker(read_size=size, max_buffer_size=size)
    unpacker.feed(chunk)
    return unpacker


def _fast_steps(raw: bytes, first: int, count: int, build: bool) -> tuple[Any, int]:
    """``count`` back-to-back step maps starting at ``first``: ``(columns, end offset)``; without
    ``build``, ``(StepFacts, end offset)`` when the steps are uniform (else columns all the same)."""
    buf = np.frombuffer(raw, np.uint8)
    views = _Views(buf)
    located = _consecutive_steps(raw, buf, views, first, count)
    if located is None:
        starts = _step_starts(buf, first, count)
        step, rest = _ints(buf, views, starts + len(_STEP_HEAD), nullable=False)
    else:
        starts, step, rest = located
    with np.errstate(all="ignore"):  # float64 -> float32 overflows to inf, as in pyarrow's cast
        uniform = _uniform_steps(buf, starts, rest, build) if count > 1 else None
        if uniform is not None and not build:
            fields, end = uniform
            return _facts(fields, step, located is not None), end
        columns, end = uniform if uniform is not None else _columnwise_steps(buf, views, starts, rest)
    columns["step"] = step
    if located is not None:  # consecutive non-negative numbers: nothing for _finish_steps to sort or check
        columns[SORTED] = True
    return columns, end


def _facts(fields: list[tuple[str, str, int, int]], step: pa.Array, known_sorted: bool) -> StepFacts:
    """The ``StepFacts`` of uniform steps, from the first step's layout (see ``_template``)."""
    kinds = {name: (kind, length) for name, kind, _, length in fields}
    return StepFacts(
        step=step,
        known_sorted=known_sorted,
        meter_count=kinds["meters"][1],
        position_dim=kinds["position"][1],
        has_q_values=kinds["q_values"][0] != "nil",
        has_action_masks=kinds["action_masks"][0] != "nil",
        has_temporal=kinds["time_of_day"][0] != "nil" or kinds["interaction_progress"][0] != "nil",
    )


def _consecutive_steps(
    raw: bytes, buf: np.ndarray, views: _Views, first: int, count: int
) -> tuple[np.ndarray, pa.Array, np.ndarray] | None:
    """``(step map offsets, step numbers, offsets after the numbers)`` when no step was dropped.

    Then the numbers run ``v, v + 1, ...`` and, the layout after the number being the same in every
    step, each step's size is known from the first two: the offsets are predicted, and every predicted
    header and every step number's bytes are checked. None when the prediction does not hold.
    """
    head = len(_STEP_HEAD)
    marker = raw[first + head]
    if marker < 0x80:
        v0, w0 = marker, 1
    elif marker == _UINT8:
        v0, w0 = raw[first + head + 1], 2
    elif marker == _UINT16:
        v0, w0 = int.from_bytes(raw[first + head + 1 : first + head + 3], "big"), 3
    else:
        return None
    size = raw.find(_STEP_HEAD_BYTES, first + head + w0) - first - head - w0  # after the number
    if count < 2 or size <= 0 or v0 + count > 0x10000:
        return None
    values = np.arange(v0, v0 + count)
    # msgpack's encoding of the numbers: fixint below 128, then uint8 (2 bytes), then uint16 (3 bytes).
    wide, wider = min(max(0x80 - v0, 0), count), min(max(0x100 - v0, 0), count)
    widths = np.ones(count, np.int64)
    widths[wide:] = 2
    widths[wider:] = 3
    starts = np.empty(count, np.int64)
    starts[0] = first
    np.cumsum(widths[:-1] + (head + size), out=starts[1:])
    starts[1:] += first
    if starts[-1] + head + widths[-1] + size > len(buf) or starts[-1] + 9 > len(buf):
        return None
    # Each step's first 8 bytes as one big-endian word: the 6 header bytes, then the number's encoding
    # (fixint v and a byte of the next key; 0xcc v; 0xcd and v's high byte, its low byte being the 9th).
    words = views[">u8"][starts]
    words[:wide] >>= 8
    expected = values.astype(np.uint64)
    expected[:wide] |= _STEP_HEAD_WORD >> 8
    expected[wide:wider] |= _STEP_HEAD_WORD | (_UINT8 << 8)
    expected[wider:] >>= 8
    expected[wider:] |= _STEP_HEAD_WORD | (_UINT16 << 8)
    if not (words == expected).all() or not (buf[starts[wider:] + 8] == (values[wider:] & 0xFF)).all():
        return None
    p = starts + head
    return starts, pa.array(values.astype(np.int32)), p + widths


def _step_starts(buf: np.ndarray, first: int, count: int) -> np.ndarray:
    """Offsets of the first ``count`` step-map headers (``fixmap(12) "step"``) from ``first`` on.

    A header-like byte run inside a float is possible in principle: then a parsed step does not end
    where the next "header" starts and the caller gives up, so a wrong offset is never used.
    """
    hits = np.flatnonzero(buf[first : len(buf) - len(_STEP_HEAD)] == _STEP_HEAD[0]) + first
    for j in (1, 5, 2):  # 0xa4, "p", "s" narrow the candidates fastest
        hits = hits[buf[hits + j] == _STEP_HEAD[j]]
    if len(hits) < count or hits[0] != first:
        raise _Unusual("step maps not found")
    starts = hits[:count]
    if not (buf[starts[:, None] + _STEP_HEAD_AT] == _STEP_HEAD).all():
        raise _Unusual("step maps not found")
    return starts


def _cached_template(row: np.ndarray, size: int) -> tuple[list[tuple[str, str, int, int]], bytes] | None:
    """``_template`` of the first step, reused when an earlier file's template fits it.

    A template depends only on the masked bits of the row it was made from, so it fits any row whose
    masked bits are the same; files of one producer and run share a few layouts (one per pattern of
    recorded fields), so this usually saves parsing the row in Python.
    """
    stride = len(row)
    for cached_size, mask, masked, layout in tuple(_TEMPLATES):  # a snapshot: other threads may add
        if cached_size == size and len(mask) == stride and (row & mask).tobytes() == masked:
            return layout
    layout = _template(row[:size].tobytes(), stride)
    if layout is not None:
        mask = np.frombuffer(layout[1], np.uint8)
        _TEMPLATES.appendleft((size, mask, (row & mask).tobytes(), layout))
    return layout


def _template(row: bytes, stride: int) -> tuple[list[tuple[str, str, int, int]], bytes] | None:
    """The layout of one step after its step number: ``(fields, mask)``.

    ``fields`` are ``(name, kind, offset of the value, list length)``. The mask (``stride`` bytes) holds
    the bits every other step must repeat: all of keys, type bytes and list headers; the top bit of a
    (non-negative) fixint, so that it stays a fixint; all but the low bit of a bool, so that it stays
    0xc2/0xc3; none of float payloads and padding. None when the row is not in the producer's key
    order or holds an encoding not read here.
    """
    mask = bytearray(b"\xff" * len(row) + bytes(stride - len(row)))
    fields = []
    at = 0
    for key, (name, kinds) in zip(_KEYS, _FIELD_KINDS.items(), strict=True):
        if row[at : at + len(key)] != key:
            return None
        at += len(key)
        b = row[at]
        kind = kinds[0]
        length = 0
        if b == _NIL and "nil" in kinds:
            kind, size = "nil", 1
        elif kind == "float" and b == _FLOAT64:
            size = 9
            mask[at + 1 : at + 9] = _ZEROS8
        elif kind == "int" and b < 0x80:
            size = 1
            mask[at] = 0x80
        elif kind == "bool" and b in (_FALSE, _TRUE):
            size = 1
            mask[at] = 0xFE
        elif kind in _LIST_KINDS and 0x90 <= b <= 0x9F:
            length = b - 0x90
            if kind == "floats":
                size = 1 + 9 * length
                for item in range(at + 1, at + size, 9):
                    if row[item] != _FLOAT64:
                        return None
                    mask[item + 1 : item + 9] = _ZEROS8
            elif kind == "bools":
                size = 1 + length
                for item in range(at + 1, at + size):
                    if row[item] not in (_FALSE, _TRUE):
                        return None
                    mask[item] = 0xFE
            elif length in (0, 2, 3):
                size = 1 + length
                for item in range(at + 1, at + size):
                    if row[item] >= 0x80:
                        return None
                    mask[item] = 0x80
            else:
                return None
        else:
            return None
        fields.append((name, kind, at, length))
        at += size
    if at != len(row):
        return None
    return fields, bytes(mask)


def _uniform_steps(
    buf: np.ndarray, starts: np.ndarray, rest: np.ndarray, build: bool = True
) -> tuple[Any, int] | None:
    """Steps that all share the first one's layout after the step number (same keys, encodings, list
    lengths), read from one (steps x bytes) block: every field is a strided view of it, and one pass
    checks every step against the first (see ``_template``). None when the steps are not uniform.
    ``(columns, end offset)``; without ``build``, ``(the layout's fields, end offset)``: no column built.
    """
    n = len(starts)
    size = int(starts[1] - rest[0])
    end = int(rest[-1]) + size
    if size <= 0 or end > len(buf) or not (starts[1:] - rest[:-1] == size).all():
        return None
    stride = -(-size // 8) * 8  # rows padded to whole 64-bit words, compared 8 bytes at a time
    if int(rest[-1]) + stride > len(buf):
        stride = size
    layout = _cached_template(buf[rest[0] : rest[0] + stride], size)
    if layout is None:
        return None
    fields, mask_bytes = layout
    block = _gather_rows(buf, rest, stride)
    out: dict[str, pa.Array] = {}
    for name, kind, at, length in fields if build else ():
        if kind == "nil":
            out[name] = pa.nulls(n, _FIELD_TYPES[name])
        elif kind == "float":
            out[name] = pa.array(np.ndarray((n,), ">f8", block, at + 1, (stride,)).astype(np.float64))
        elif kind == "int":
            out[name] = pa.array(block[:, at].astype(np.int32))
        elif kind == "bool":
            out[name] = pa.array(block[:, at] == _TRUE)
        elif kind == "floats":
            items = np.ndarray((n, length), ">f8", block, at + 2, (stride, 9)).astype(np.float32)
            out[name] = _fixed_lists(items.reshape(-1), n, length, _FIELD_TYPES[name])
        elif kind == "bools":
            flags = block[:, at + 1 : at + 1 + length] == _TRUE
            out[name] = _fixed_lists(flags.reshape(-1), n, length, _FIELD_TYPES[name])
        else:  # position
            coordinates = block[:, at + 1 : at + 1 + length].astype(np.int32).T
            for axis, column in enumerate("xyz"):
                out[column] = pa.array(coordinates[axis]) if axis < length else pa.nulls(n, pa.int32())
    # Last, as it overwrites the block (in place: block-sized temporaries on every call make malloc give
    # the pages back and fault them in again, doubling the time): every step's masked bits equal step 0's.
    word = np.uint64 if stride % 8 == 0 else np.uint8
    words = block.view(word)
    np.bitwise_xor(words, words[0].copy(), out=words)
    np.bitwise_and(words, np.frombuffer(mask_bytes, word), out=words)
    if words.max():
        return None
    return (out if build else fields), end


def _gather_rows(buf: np.ndarray, rest: np.ndarray, stride: int) -> np.ndarray:
    """``buf[rest[i] : rest[i] + stride]`` for every ``i``, as rows of this thread's scratch block.

    Reused, not allocated: a fresh block-sized array per call would make malloc give its pages back
    and fault them in again each time, which costs as much as the whole decode. The rows are copied
    run by run (steps of one number width are evenly spaced), as strided views of ``buf``.
    """
    n = len(rest)
    scratch = getattr(_SCRATCH, "block", None)
    if scratch is None or len(scratch) < n * stride:
        scratch = _SCRATCH.block = np.empty(max(n * stride, 1 << 16), np.uint8)
    block = scratch[: n * stride].reshape(n, stride)
    spacing = np.diff(rest)
    edges = (np.flatnonzero(spacing[1:] != spacing[:-1]) + 1).tolist()
    if len(edges) > 8:  # not evenly spaced runs (unsorted steps): one gather, with its temporary
        block[...] = np.ndarray((len(buf) - stride + 1, stride), np.uint8, buf, 0, (1, 1))[rest]
        return block
    bounds = [0, *edges, n]
    for a, b in itertools.pairwise(bounds):
        step = int(spacing[a]) if a < n - 1 else stride
        block[a:b] = np.ndarray((b - a, stride), np.uint8, buf, int(rest[a]), (step, 1))
    return block


@functools.lru_cache(maxsize=64)
def _list_offsets(n: int, length: int) -> pa.Buffer:
    """Offsets of ``n`` lists of ``length`` items (immutable, so shared between calls)."""
    return pa.py_buffer(np.arange(n + 1, dtype=np.int32) * np.int32(length))


def _fixed_lists(values: np.ndarray, n: int, length: int, type_: pa.DataType) -> pa.Array:
    return pa.Array.from_buffers(type_, n, [None, _list_offsets(n, length)], children=[pa.array(values)])


def _columnwise_steps(
    buf: np.ndarray, views: _Views, starts: np.ndarray, p: np.ndarray
) -> tuple[dict[str, pa.Array], int]:
    """Steps whose layouts differ (``[]`` positions, nil in some steps, wide ints): each field of all
    steps at once, from per-step offsets ``p`` (just after the step number), checking every type byte.
    """
    key_at = []
    out: dict[str, pa.Array] = {}

    def key() -> None:
        nonlocal p
        key_at.append(p)
        p = p + _KEY_LENGTHS[len(key_at) - 1, 0]

    key()
    out["x"], out["y"], out["z"], p = _positions(buf, p)
    key()
    out["meters"], p = _float_lists(buf, views, p, nullable=False)
    key()
    out["action"], p = _ints(buf, views, p, nullable=False)
    key()
    out["reward"], p = _floats(buf, views, p, nullable=False)
    key()
    out["intrinsic_reward"], p = _floats(buf, views, p, nullable=False)
    key()
    out["done"], p = _bools(buf, p)
    key()
    out["q_values"], p = _float_lists(buf, views, p, nullable=True)
    key()
    out["epsilon"], p = _floats(buf, views, p, nullable=True)
    key()
    out["action_masks"], p = _bool_lists(buf, p)
    key()
    out["time_of_day"], p = _ints(buf, views, p, nullable=True)
    key()
    out["interaction_progress"], p = _floats(buf, views, p, nullable=True)
    if not np.array_equal(p[:-1], starts[1:]):
        raise _Unusual("step maps are not back to back")
    keys = np.stack(key_at)
    if not (
        (buf[keys] == _KEY_HEADS).all()
        and (buf[keys + 1] == _KEY_FIRSTS).all()
        and (buf[keys + _KEY_LENGTHS - 1] == _KEY_LASTS).all()
    ):
        raise _Unusual("unexpected step keys")
    return out, int(p[-1])


def _ints(buf: np.ndarray, views: _Views, p: np.ndarray, *, nullable: bool) -> tuple[pa.Array, np.ndarray]:
    """msgpack integers (nil too when ``nullable``) at offsets ``p`` as int32; the offsets after them."""
    b = buf[p]
    if b.max() < 0x80:  # all positive fixints: the usual case
        return pa.array(b.astype(np.int32)), p + 1
    values = b.astype(np.int64)
    values[b >= 0xE0] -= 256
    size = np.ones(len(p), np.int64)
    nil = b == _NIL
    for marker in np.flatnonzero(np.bincount(b[~_IS_FIXINT[b]], minlength=256)).tolist():
        if marker == _NIL and nullable:
            continue
        if marker not in _WIDE_INTS:
            raise _Unusual("not an integer")
        width, dtype = _WIDE_INTS[marker]
        rows = np.flatnonzero(b == marker)
        values[rows] = views[dtype][p[rows] + 1]
        size[rows] = 1 + width
    if values.max() > INT32_MAX or values.min() < -INT32_MAX - 1:
        raise _Unusual("integer outside int32")
    return pa.array(values.astype(np.int32), mask=nil if nil.any() else None), p + size


def _floats(buf: np.ndarray, views: _Views, p: np.ndarray, *, nullable: bool) -> tuple[pa.Array, np.ndarray]:
    """msgpack float64s (nil too when ``nullable``) at offsets ``p``; the offsets after them."""
    b = buf[p]
    is_float = b == _FLOAT64
    if is_float.all():
        return pa.array(views[">f8"][p + 1].astype(np.float64)), p + 9
    nil = b == _NIL
    if not nullable or not (is_float | nil).all():
        raise _Unusual("not a float64")
    values = np.zeros(len(p), np.float64)
    rows = np.flatnonzero(is_float)
    values[rows] = views[">f8"][p[rows] + 1]
    return pa.array(values, mask=nil), p + np.where(nil, 1, 9)


def _bools(buf: np.ndarray, p: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    b = buf[p]
    if not _IS_BOOL[b].all():
        raise _Unusual("not a bool")
    return pa.array(b == _TRUE), p + 1


def _list_headers(buf: np.ndarray, p: np.ndarray, nullable: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """``(nil mask, offsets of the non-nil lists, their common length)`` of fixarray headers at ``p``."""
    b = buf[p]
    nil = b == _NIL
    if not nullable and nil.any():
        raise _Unusual("nil list")
    listed = p[~nil]
    if not len(listed):
        return nil, listed, 0
    marker = int(buf[listed[0]])
    if not 0x90 <= marker <= 0x9F or not (buf[listed] == marker).all():
        raise _Unusual("lists of different or long lengths")
    return nil, listed, marker - 0x90


def _list_array(nil: np.ndarray, length: int, values: np.ndarray) -> pa.Array:
    lengths = np.where(nil, 0, length).astype(np.int32)
    offsets = np.zeros(len(nil) + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    mask = pa.array(nil) if nil.any() else None
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values), mask=mask)


def _float_lists(
    buf: np.ndarray, views: _Views, p: np.ndarray, *, nullable: bool
) -> tuple[pa.Array, np.ndarray]:
    """Fixarrays of float64 (nil too when ``nullable``) as list<float32>; the offsets after them."""
    nil, listed, length = _list_headers(buf, p, nullable)
    items = (listed + 1)[:, None] + 9 * np.arange(length)
    if not (buf[items] == _FLOAT64).all():
        raise _Unusual("list item is not a float64")
    values = views[">f8"][items + 1].astype(np.float32).reshape(-1)
    return _list_array(nil, length, values), p + np.where(nil, 1, 1 + 9 * length)


def _bool_lists(buf: np.ndarray, p: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """Fixarrays of bools, or nil, as list<bool>; the offsets after them."""
    nil, listed, length = _list_headers(buf, p, nullable=True)
    items = buf[(listed + 1)[:, None] + np.arange(length)]
    if not _IS_BOOL[items].all():
        raise _Unusual("list item is not a bool")
    return _list_array(nil, length, (items == _TRUE).reshape(-1)), p + np.where(nil, 1, 1 + length)


def _positions(buf: np.ndarray, p: np.ndarray) -> tuple[pa.Array, pa.Array, pa.Array, np.ndarray]:
    """``[]``, ``[x, y]`` or ``[x, y, z]`` of fixints as x, y, z (null where absent); offsets after them."""
    lengths = buf[p].astype(np.int64) - 0x90
    if not np.isin(lengths, (0, 2, 3)).all():
        raise _Unusual("position is not [], [x, y] or [x, y, z]")
    coordinates = buf[np.minimum(p[:, None] + np.arange(1, 4), len(buf) - 1)]
    present = np.arange(3) < lengths[:, None]
    if not (_IS_FIXINT[coordinates] | ~present).all():
        raise _Unusual("coordinate is not a fixint")
    signed = coordinates.view(np.int8).astype(np.int32)
    x, y, z = (pa.array(signed[:, axis], mask=~present[:, axis]) for axis in range(3))
    return x, y, z, p + 1 + lengths
