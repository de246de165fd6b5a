"""Townlet episode recordings (``recordings/episode_{id:06d}.msgpack.lz4``) to Arrow: bytes in, Arrow out.

Pure on purpose (no Dagster, boto3 or torch): the assets hand it one file's bytes (and its
``episode_recordings`` row), users can call it directly. Facts it relies on (formats.md section 3,
checked on ``shared/data/townlet/checkpoints_level2_5``, see the tests):

* A file is an ``lz4.frame`` of one msgpack map ``{"version": 1, "metadata", "steps", "affordances"}``,
  or, with the producer's ``compression: none``, the raw msgpack under the same name (episodes 140
  and 141). Compression is told by the lz4 frame magic ``04 22 4d 18``, never by the name.
* Every step is a 12-key map written from one dict literal, so every step has the same keys in the
  same order; meters and q-values are float32 tensors written as msgpack float64s (lossless as float32),
  rewards, epsilon and interaction_progress are genuine float64s.
* ``affordance_layout`` is either flat ``{name: [x, y]}`` or the runner's ``{"positions": {...},
  "ordering": [...], "position_dim": 2}``: both normalize to ``{name: [x, y]}`` in ``ordering`` order.
* The producer silently drops steps when its queue is full: ``len(steps)`` may be below
  ``survival_steps``. That is recorded (``frames_dropped``), not an error.

Speed (the benchmark holds it to 5x the producer's own way, ``msgpack.unpackb`` into Python dicts then
pandas): the producer's way spends ~0.8 ms of a 500-step episode creating 20,000 Python objects. The
fast path (``_fast_document``) creates none per step. msgpack reads only the metadata and the small
tail; the step maps are located in the bytes with numpy (predicted from the first two steps when no
step was dropped, else searched for), and when every step has the first one's layout after its step
number (the usual file) all steps are copied into one (steps x bytes) block: one masked comparison
against the first step checks every key, type byte and list header of every step, and each field is a
strided view of the block. Steps of differing layouts (``[]`` positions, nil in some steps, wide ints)
are decoded field by field over all steps instead. Anything unexpected (another key order, a float32,
a list longer than 15, ...) makes the fast path give up, and ``_generic_document`` decodes the file with
``msgpack.unpackb`` and validates it, raising the errors. Both paths give identical results (tested on
the real files and on generated variants). Two allocation habits matter as much as the arithmetic: each
``msgpack.Unpacker`` gets a buffer sized to its input (the default 1 MiB is fresh pages to fault in on
every call), and the step block is a per-thread scratch buffer, checked in place (block-sized
temporaries on every call make malloc return and re-fault their pages).

Errors: a file this reader cannot decode (broken lz4, truncated or invalid msgpack, not a map, wrong
version, missing top-level, metadata or step keys, wrongly typed values) raises ``RecordingFormatError``
whose one-line message starts with the file's name. ``verify_recording`` turns that, and every
disagreement between a file and its index row, into the ``valid``/``invalid_reason`` columns of
``TOWNLET_RECORDINGS_INDEX``.
"""

from __future__ import annotations

import collections
import datetime as dt
import functools
import hashlib
import itertools
import json
import math
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import PurePosixPath
from typing import Any

import lz4.frame
import msgpack
import numpy as np
import pyarrow as pa

from replay_assets.errors import FileFormatError
from replay_assets.formats.schemas import TOWNLET_EPISODE_STEPS, TOWNLET_RECORDINGS_INDEX

__all__ = [
    "INDEX_COLUMNS",
    "LZ4_FRAME_MAGIC",
    "STEP_COLUMNS",
    "SUPPORTED_VERSIONS",
    "VERIFICATION_COLUMNS",
    "RecordingFormatError",
    "TownletEpisode",
    "decode_recording",
    "episode_steps_batch",
    "normalize_affordance_layout",
    "read_episode_steps",
    "recordings_index_batch",
    "recordings_index_row",
    "verify_recording",
]

SUPPORTED_VERSIONS = (1,)
LZ4_FRAME_MAGIC = b"\x04\x22\x4d\x18"
REQUIRED_STEP_KEYS = ("step", "position", "meters", "action", "reward", "intrinsic_reward", "done")
# Written as nil when not recorded; a step without the key at all is read the same way.
OPTIONAL_STEP_KEYS = ("q_values", "epsilon", "action_masks", "time_of_day", "interaction_progress")
REQUIRED_METADATA_KEYS = ("episode_id", "survival_steps")
CONTEXT_COLUMNS = ("date", "checkpoint", "episode_id", "source_uri")
# TOWNLET_EPISODE_STEPS without the context columns: what decode_recording returns per step.
STEP_COLUMNS = pa.schema([f for f in TOWNLET_EPISODE_STEPS if f.name not in CONTEXT_COLUMNS])
# The episode_recordings columns, in the index schema's order (recorded_at is derived from timestamp).
INDEX_COLUMNS = (
    "file_path", "timestamp", "survival_steps", "total_reward", "extrinsic_reward", "intrinsic_reward",
    "curriculum_stage", "epsilon", "intrinsic_weight", "recording_reason", "file_size_bytes",
    "compressed_size_bytes",
)  # fmt: skip
_VERIFICATION_START = TOWNLET_RECORDINGS_INDEX.get_field_index("file_exists")
VERIFICATION_COLUMNS = tuple(TOWNLET_RECORDINGS_INDEX.names[_VERIFICATION_START:])
_INDEX_TYPES: dict[str, tuple[type, ...]] = {
    "file_path": (str,), "timestamp": (int, float), "survival_steps": (int,), "total_reward": (int, float),
    "extrinsic_reward": (int, float), "intrinsic_reward": (int, float), "curriculum_stage": (int,),
    "epsilon": (int, float), "intrinsic_weight": (int, float), "recording_reason": (str,),
    "file_size_bytes": (int,), "compressed_size_bytes": (int,),
}  # fmt: skip
# Metadata values the index repeats: compared by verify_recording when both hold them.
_MIRRORED_EXACT = ("survival_steps", "curriculum_stage")
_MIRRORED_FLOAT = (
    "timestamp",
    "total_reward",
    "extrinsic_reward",
    "intrinsic_reward",
    "epsilon",
    "intrinsic_weight",
)
_EPISODE_FILE = re.compile(r"episode_(\d+)\.msgpack(?:\.lz4)?$")
_INT32_MAX = 2**31 - 1
_SORTED = "_sorted"  # marker key in a columns dict: the step numbers are known increasing, non-negative
_EPOCH = dt.date(1970, 1, 1)


class RecordingFormatError(FileFormatError):
    """A recording this reader cannot decode; the one-line message names the file and the reason."""


@dataclass(frozen=True)
class TownletEpisode:
    """One recording's metadata and the facts derived from its file and steps.

    ``compressed_size`` is the file's size as stored (equal to ``uncompressed_size``, the msgpack
    document's size, when ``compression`` is ``"none"``). ``metadata`` holds every producer metadata key
    as written. ``position_dim``: coordinates per recorded position (2 or 3); when no step has a
    position, the layout's ``position_dim`` or its positions' length; 0 if neither says.
    ``affordance_layout`` is normalized from either producer shape to ``{name: [x, y(, z)]}`` in
    ``affordance_order`` (the runner's ``ordering``, then any name it leaves out, in file order).
    """

    episode_id: int
    version: int
    compression: str  # "lz4" | "none"
    compressed_size: int
    uncompressed_size: int
    metadata: dict[str, Any] = field(repr=False)
    steps_recorded: int
    survival_steps: int
    meter_count: int
    position_dim: int
    has_q_values: bool
    has_action_masks: bool
    has_temporal: bool  # any step records time_of_day or interaction_progress
    affordance_layout: dict[str, list[int]]
    affordance_order: list[str]
    affordance_visits: dict[str, Any]

    @property
    def frames_dropped(self) -> int:
        """Steps the producer dropped: ``survival_steps - steps_recorded`` (negative means a bad file)."""
        return self.survival_steps - self.steps_recorded


# ------------------------------------------------------------------------------------------ public API


def decode_recording(data: bytes, name: str) -> tuple[TownletEpisode, pa.RecordBatch]:
    """Decode one recording file: its metadata and facts, and its steps as one ``STEP_COLUMNS`` batch.

    The batch is sorted by ``step`` (the producer writes steps in order; dropped steps leave gaps).
    Raises ``RecordingFormatError`` naming ``name`` for anything it cannot decode.
    """
    data = bytes(data) if not isinstance(data, bytes) else data
    compression, raw = _decompress(data, name)
    return _decode_document(raw, name, compression=compression, compressed_size=len(data))


def episode_steps_batch(
    episode: TownletEpisode, steps: pa.RecordBatch, *, date: dt.date, checkpoint: str, source_uri: str
) -> pa.RecordBatch:
    """``steps`` (from ``decode_recording``) with the context columns: a ``TOWNLET_EPISODE_STEPS`` batch."""
    columns = _context_columns(steps.num_rows, (date, checkpoint, source_uri), episode.episode_id)
    columns.update(zip(steps.schema.names, steps.columns, strict=True))
    arrays = [columns[name] for name in TOWNLET_EPISODE_STEPS.names]
    return pa.RecordBatch.from_arrays(arrays, schema=TOWNLET_EPISODE_STEPS)


def _context_columns(n: int, context: tuple[dt.date, str, str], episode_id: int) -> dict[str, pa.Array]:
    """The constant columns of ``TOWNLET_EPISODE_STEPS`` for ``n`` steps of one episode."""
    date, checkpoint, source_uri = context
    days = np.full(n, (date - _EPOCH).days, np.int32)
    return {
        "date": pa.Array.from_buffers(pa.date32(), n, [None, pa.py_buffer(days)]),
        "checkpoint": _repeated_string(checkpoint, n),
        "episode_id": pa.array(np.full(n, episode_id, np.int64)),
        "source_uri": _repeated_string(source_uri, n),
    }


def _repeated_string(value: str, n: int) -> pa.Array:
    encoded = value.encode()
    offsets = np.arange(n + 1, dtype=np.int32) * np.int32(len(encoded))
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(encoded * n)])


def read_episode_steps(
    data: bytes, name: str, *, date: dt.date, checkpoint: str, source_uri: str | None = None
) -> tuple[TownletEpisode, pa.RecordBatch]:
    """One file's bytes to its ``TOWNLET_EPISODE_STEPS`` batch (sorted by step) and its episode facts.

    ``source_uri`` defaults to ``name``. Raises ``RecordingFormatError`` like ``decode_recording``.
    """
    data = bytes(data) if not isinstance(data, bytes) else data
    compression, raw = _decompress(data, name)
    context = (date, checkpoint, name if source_uri is None else source_uri)
    return _decode_document(raw, name, compression=compression, compressed_size=len(data), context=context)


def normalize_affordance_layout(
    layout: Any, name: str = "<recording>"
) -> tuple[dict[str, list[int]], list[str]]:
    """Either producer shape of ``affordance_layout`` as ``({name: position}, order)``."""
    positions, order, _ = _normalize_layout(layout, name)
    return positions, order


def verify_recording(index_row: Mapping[str, Any] | None, data: bytes | None, name: str) -> dict[str, Any]:
    """The verification columns of ``TOWNLET_RECORDINGS_INDEX`` (``VERIFICATION_COLUMNS``) for one recording.

    ``index_row``: its ``episode_recordings`` row (None for a file the index does not name);
    ``data``: the file's bytes (None when the file is missing); ``name``: the file, for messages.

    ``valid`` is True exactly when every one of these holds (``invalid_reason`` lists, "; "-joined, each
    that does not):

    1. the file exists (``missing file``);
    2. an index row names it (``unindexed``: an orphan file);
    3. the index row's values have the column types of ``episode_recordings``;
    4. the file decodes completely with ``decode_recording`` (``undecodable: <reason>``);
    5. the index's ``compressed_size_bytes`` equals the file's size and its ``file_size_bytes`` the
       msgpack document's size (each only when the index holds a value: both columns are nullable);
    6. the metadata's ``episode_id`` equals the index's, and the number in the file name
       (``episode_NNNNNN.msgpack.lz4``, when the name has that form) equals the metadata's;
    7. the metadata values the index repeats agree with it: ``survival_steps`` and ``curriculum_stage``
       exactly, ``timestamp``, ``total_reward``, ``extrinsic_reward``, ``intrinsic_reward``, ``epsilon``
       and ``intrinsic_weight`` to 1e-9 relative (each only when the metadata has the key);
    8. no more steps are recorded than ``survival_steps`` (``frames_dropped >= 0``).

    Dropped frames (``frames_dropped > 0``) do not make a recording invalid: the producer drops steps
    when its queue is full, and the recorded steps are still good. ``affordance_visits`` is the
    metadata's map as compact JSON, keys in the producer's order.
    """
    return _verify(index_row, data, name)[0]


def recordings_index_row(
    index_row: Mapping[str, Any] | None,
    data: bytes | None,
    source_uri: str,
    *,
    date: dt.date,
    checkpoint: str,
    index_uri: str | None,
) -> dict[str, Any]:
    """One full ``TOWNLET_RECORDINGS_INDEX`` row: the index row's columns, lineage and verification.

    ``source_uri`` names the recording (also in messages). ``episode_id`` is the index's; for a file
    without index row the metadata's, else the number in the file name, else null.
    """
    verification, episode, index_values = _verify(index_row, data, source_uri)
    episode_id = index_values.get("episode_id")
    if episode_id is None and episode is not None:
        episode_id = episode.episode_id
    if episode_id is None and (match := _EPISODE_FILE.search(source_uri)):
        episode_id = int(match.group(1))
    timestamp = index_values.get("timestamp")
    recorded_at = None if timestamp is None else _utc(timestamp)
    row: dict[str, Any] = {"date": date, "checkpoint": checkpoint, "episode_id": episode_id}
    row.update({column: index_values.get(column) for column in INDEX_COLUMNS})
    row["recorded_at"] = recorded_at
    row["source_uri"] = source_uri
    row["index_uri"] = index_uri
    row.update(verification)
    return {name: row[name] for name in TOWNLET_RECORDINGS_INDEX.names}


def recordings_index_batch(rows: Iterable[Mapping[str, Any]]) -> pa.RecordBatch:
    """``recordings_index_row`` rows as one ``TOWNLET_RECORDINGS_INDEX`` batch, sorted by episode and uri."""
    ordered = sorted(rows, key=lambda r: (r["episode_id"] is None, r["episode_id"] or 0, r["source_uri"]))
    return pa.RecordBatch.from_pylist(ordered, schema=TOWNLET_RECORDINGS_INDEX)


# ------------------------------------------------------------------------------------------ container


def _decompress(data: bytes, name: str) -> tuple[str, bytes]:
    """``(compression, msgpack bytes)``: an lz4 frame by its magic, else raw msgpack (compression none)."""
    if data[:4] == LZ4_FRAME_MAGIC:
        try:
            return "lz4", lz4.frame.decompress(data)
        except RuntimeError as exc:
            raise RecordingFormatError(name, f"broken lz4 frame: {exc}") from None
    if not data:
        raise RecordingFormatError(name, "empty file")
    if not (0x80 <= data[0] <= 0x8F or data[0] in (0xDE, 0xDF)):
        raise RecordingFormatError(
            name, f"neither an lz4 frame nor a msgpack map (first bytes {data[:4].hex(' ')})"
        )
    return "none", data


def _decode_document(
    raw: bytes,
    name: str,
    *,
    compression: str,
    compressed_size: int,
    fast: bool = True,
    context: tuple[dt.date, str, str] | None = None,
) -> tuple[TownletEpisode, pa.RecordBatch]:
    """The msgpack document to (episode, steps batch): ``STEP_COLUMNS``, or with ``context`` (date,
    checkpoint, source_uri) ``TOWNLET_EPISODE_STEPS``; ``fast=False`` forces the generic path (tests).
    """
    parsed = _fast_document(raw) if fast else None
    if parsed is None:
        parsed = _generic_document(raw, name)
    top, columns = parsed
    version, metadata, episode_id, survival_steps = _check_top(top, name)
    layout, order, layout_dim = _normalize_layout(
        metadata["affordance_layout"] if "affordance_layout" in metadata else top.get("affordances"), name
    )
    visits = metadata.get("affordance_visits")
    if visits is None:
        visits = {}
    elif not isinstance(visits, dict):
        raise RecordingFormatError(name, f"metadata affordance_visits is not a map: {type(visits).__name__}")

    if context is not None:
        columns.update(_context_columns(len(columns["step"]), context, episode_id))
    schema = STEP_COLUMNS if context is None else TOWNLET_EPISODE_STEPS
    batch, meter_count, position_dim = _finish_steps(columns, name, schema)
    if position_dim == 0:
        position_dim = layout_dim or (len(next(iter(layout.values()))) if layout else 0)
    n = batch.num_rows
    episode = TownletEpisode(
        episode_id=episode_id,
        version=version,
        compression=compression,
        compressed_size=compressed_size,
        uncompressed_size=len(raw),
        metadata=metadata,
        steps_recorded=n,
        survival_steps=survival_steps,
        meter_count=meter_count,
        position_dim=position_dim,
        has_q_values=columns["q_values"].null_count < n,
        has_action_masks=columns["action_masks"].null_count < n,
        has_temporal=columns["time_of_day"].null_count < n or columns["interaction_progress"].null_count < n,
        affordance_layout=layout,
        affordance_order=order,
        affordance_visits=visits,
    )
    return episode, batch


def _check_top(top: dict[str, Any], name: str) -> tuple[int, dict[str, Any], int, int]:
    """Validate version and metadata: ``(version, metadata, episode_id, survival_steps)``."""
    for key in ("version", "metadata"):
        if key not in top:
            raise RecordingFormatError(name, f"missing top-level key {key!r}")
    version = top["version"]
    if type(version) is not int or version not in SUPPORTED_VERSIONS:
        supported = ", ".join(map(str, SUPPORTED_VERSIONS))
        raise RecordingFormatError(
            name, f"unsupported recording version {version!r} (supported: {supported})"
        )
    metadata = top["metadata"]
    if not isinstance(metadata, dict):
        raise RecordingFormatError(name, f"'metadata' is not a map: {type(metadata).__name__}")
    for key in REQUIRED_METADATA_KEYS:
        if key not in metadata:
            raise RecordingFormatError(name, f"metadata has no {key!r}")
        if type(metadata[key]) is not int or metadata[key] < 0:
            raise RecordingFormatError(
                name, f"metadata {key} is not a non-negative integer: {metadata[key]!r}"
            )
    return version, metadata, metadata["episode_id"], metadata["survival_steps"]


def _normalize_layout(layout: Any, name: str) -> tuple[dict[str, list[int]], list[str], int | None]:
    """``({name: position}, order, declared position_dim)`` from the flat or the runner shape."""
    if layout is None:
        return {}, [], None
    if not isinstance(layout, dict):
        raise RecordingFormatError(name, f"affordance_layout is not a map: {type(layout).__name__}")
    if isinstance(layout.get("positions"), dict):  # the training runner's shape
        positions = layout["positions"]
        ordering = layout.get("ordering") or []
        declared = layout.get("position_dim")
        if not isinstance(ordering, list):
            raise RecordingFormatError(name, "affordance_layout ordering is not a list")
    else:
        positions, ordering, declared = layout, [], None
    order = list(
        dict.fromkeys([n for n in ordering if isinstance(n, str) and n in positions] + list(positions))
    )
    normalized = {}
    for affordance in order:
        position = positions[affordance]
        if (
            not isinstance(affordance, str)
            or not isinstance(position, list)
            or not all(type(v) is int and -_INT32_MAX - 1 <= v <= _INT32_MAX for v in position)
        ):
            raise RecordingFormatError(
                name, f"affordance_layout entry {affordance!r}: {position!r} is not a list of integers"
            )
        normalized[affordance] = list(position)
    return normalized, order, declared if type(declared) is int and declared > 0 else None


def _finish_steps(
    columns: dict[str, pa.Array], name: str, schema: pa.Schema
) -> tuple[pa.RecordBatch, int, int]:
    """Checks shared by both paths, then the batch sorted by step: ``(batch, meter_count, position_dim)``."""
    known_sorted = columns.pop(_SORTED, False)  # set by the fast path when it proved it
    steps = columns["step"].to_numpy()
    n = len(steps)
    meter_lengths = np.diff(columns["meters"].offsets.to_numpy())
    meter_count = int(meter_lengths[0]) if n else 0
    if n and (meter_lengths != meter_count).any():
        at = int(np.flatnonzero(meter_lengths != meter_count)[0])
        raise RecordingFormatError(
            name, f"steps[{at}] has {int(meter_lengths[at])} meters, steps[0] has {meter_count}"
        )
    # x is present for 2 and 3 coordinates, z only for 3.
    with_xy, with_z = n - columns["x"].null_count, n - columns["z"].null_count
    if with_z and with_xy > with_z:
        raise RecordingFormatError(name, "positions mix 2 and 3 coordinates")
    position_dim = 3 if with_z else 2 if with_xy else 0
    batch = pa.RecordBatch.from_arrays([columns[column] for column in schema.names], schema=schema)
    if n > 1 and not known_sorted and not (np.diff(steps) > 0).all():
        order = np.argsort(steps, kind="stable")
        steps = steps[order]
        if (np.diff(steps) == 0).any():
            at = int(np.flatnonzero(np.diff(steps) == 0)[0])
            raise RecordingFormatError(name, f"step number {int(steps[at])} occurs twice")
        batch = batch.take(pa.array(order))
    if n and steps[0] < 0:
        raise RecordingFormatError(name, f"negative step number {int(steps[0])}")
    return batch, meter_count, position_dim


# ------------------------------------------------------------------------------------------ generic path


def _generic_document(raw: bytes, name: str) -> tuple[dict[str, Any], dict[str, pa.Array]]:
    """``msgpack.unpackb`` and full validation; raises RecordingFormatError for anything wrong."""
    try:
        doc = msgpack.unpackb(raw)
    except msgpack.ExtraData:
        raise RecordingFormatError(name, "trailing bytes after the msgpack document") from None
    except (ValueError, msgpack.UnpackException) as exc:
        text = str(exc)
        kind = "truncated msgpack" if "incomplete" in text or "exceeds max_" in text else "invalid msgpack"
        raise RecordingFormatError(name, f"{kind}: {text or type(exc).__name__}") from None
    if not isinstance(doc, dict):
        raise RecordingFormatError(name, f"not a msgpack map but {type(doc).__name__}")
    _check_top(doc, name)
    if "steps" not in doc:
        raise RecordingFormatError(name, "missing top-level key 'steps'")
    steps = doc.pop("steps")
    return doc, _generic_steps(steps, name)


def _generic_steps(steps: Any, name: str) -> dict[str, pa.Array]:
    if not isinstance(steps, list):
        raise RecordingFormatError(name, f"'steps' is not a list: {type(steps).__name__}")
    for i, step in enumerate(steps):
        if not isinstance(step, dict):
            raise RecordingFormatError(name, f"steps[{i}] is not a map: {type(step).__name__}")
    try:
        rows = list(map(itemgetter(*REQUIRED_STEP_KEYS), steps))
    except KeyError:
        i, key = next((i, k) for i, s in enumerate(steps) for k in REQUIRED_STEP_KEYS if k not in s)
        raise RecordingFormatError(name, f"steps[{i}] has no {key!r}") from None
    columns = map(list, zip(*rows, strict=True)) if rows else ([] for _ in REQUIRED_STEP_KEYS)
    values: dict[str, Any] = dict(zip(REQUIRED_STEP_KEYS, columns, strict=True))
    for key in OPTIONAL_STEP_KEYS:
        values[key] = [step.get(key) for step in steps]

    out = {
        "step": _typed(values["step"], "step", pa.int32(), pa.types.is_integer, name),
        "meters": _typed(values["meters"], "meters", pa.list_(pa.float32()), _is_number_list, name),
        "action": _typed(values["action"], "action", pa.int32(), pa.types.is_integer, name),
        "reward": _typed(values["reward"], "reward", pa.float64(), _is_number, name),
        "intrinsic_reward": _typed(
            values["intrinsic_reward"], "intrinsic_reward", pa.float64(), _is_number, name
        ),
        "done": _typed(values["done"], "done", pa.bool_(), pa.types.is_boolean, name),
        "q_values": _typed(
            values["q_values"], "q_values", pa.list_(pa.float32()), _is_number_list, name, nullable=True
        ),
        "epsilon": _typed(values["epsilon"], "epsilon", pa.float64(), _is_number, name, nullable=True),
        "action_masks": _typed(
            values["action_masks"], "action_masks", pa.list_(pa.bool_()), _is_bool_list, name, nullable=True
        ),
        "time_of_day": _typed(
            values["time_of_day"], "time_of_day", pa.int32(), pa.types.is_integer, name, nullable=True
        ),
        "interaction_progress": _typed(
            values["interaction_progress"],
            "interaction_progress",
            pa.float64(),
            _is_number,
            name,
            nullable=True,
        ),
    }
    position = _typed(values["position"], "position", pa.list_(pa.int32()), _is_int_list, name)
    offsets = position.offsets.to_numpy()
    lengths = np.diff(offsets)
    bad = ~np.isin(lengths, (0, 2, 3))
    if bad.any():
        at = int(np.flatnonzero(bad)[0])
        raise RecordingFormatError(
            name, f"steps[{at}].position has {int(lengths[at])} coordinates (expected 0, 2 or 3)"
        )
    flat = position.values.to_numpy()
    starts = offsets[:-1]
    for axis, (column, needed) in enumerate((("x", 2), ("y", 2), ("z", 3))):
        absent = lengths < needed
        coordinate = (
            flat[np.where(absent, 0, starts + axis)] if len(flat) else np.zeros(len(lengths), np.int32)
        )
        out[column] = pa.array(coordinate, pa.int32(), mask=absent)
    return out


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


def _is_number_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) and (_is_number(t.value_type) or pa.types.is_null(t.value_type))


def _is_int_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) and (pa.types.is_integer(t.value_type) or pa.types.is_null(t.value_type))


def _is_bool_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) and (pa.types.is_boolean(t.value_type) or pa.types.is_null(t.value_type))


def _typed(values: list[Any], key: str, target: pa.DataType, accepts: Any, name: str, nullable: bool = False):
    """One step field as an Arrow array of ``target``: type-checked, nil-checked, range-checked."""
    try:
        array = pa.array(values) if values else pa.array([], target)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
        raise RecordingFormatError(name, f"steps[*].{key}: {exc}") from None
    if not (pa.types.is_null(array.type) or array.type == target or accepts(array.type)):
        raise RecordingFormatError(name, f"steps[*].{key} holds {array.type} values, not {target}")
    if not nullable and array.null_count:
        at = int(np.flatnonzero(array.is_null().to_numpy(zero_copy_only=False))[0])
        raise RecordingFormatError(name, f"steps[{at}].{key} is nil")
    if pa.types.is_list(array.type) and array.values.null_count:
        raise RecordingFormatError(name, f"steps[*].{key} holds a list with a nil element")
    try:
        return array.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise RecordingFormatError(name, f"steps[*].{key}: {exc}") from None


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


def _fast_document(raw: bytes) -> tuple[dict[str, Any], dict[str, pa.Array]] | None:
    """Decode a producer-shaped document without a Python object per step; None when anything is unusual."""
    try:
        return _fast_document_unchecked(raw)
    except Exception:  # any surprise (_Unusual, msgpack or index errors): the generic path decides
        return None


def _fast_document_unchecked(raw: bytes) -> tuple[dict[str, Any], dict[str, pa.Array]]:
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
    columns, end = _fast_steps(raw, first, count)
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
    return top, columns


def _unpacker(chunk: bytes) -> msgpack.Unpacker:
    """An Unpacker fed ``chunk``, its buffer sized to it: by default each Unpacker mallocs a 1 MiB buffer,
    fresh pages to fault in on every call, which alone cost as much as decoding a short episode."""
    size = max(len(chunk), 1)
    unpacker = msgpack.Unpacker(read_size=size, max_buffer_size=size)
    unpacker.feed(chunk)
    return unpacker


def _fast_steps(raw: bytes, first: int, count: int) -> tuple[dict[str, pa.Array], int]:
    """Every field of ``count`` back-to-back step maps starting at ``first``: ``(columns, end offset)``."""
    buf = np.frombuffer(raw, np.uint8)
    views = _Views(buf)
    located = _consecutive_steps(raw, buf, views, first, count)
    if located is None:
        starts = _step_starts(buf, first, count)
        step, rest = _ints(buf, views, starts + len(_STEP_HEAD), nullable=False)
    else:
        starts, step, rest = located
    with np.errstate(all="ignore"):  # float64 -> float32 overflows to inf, as in pyarrow's cast
        uniform = _uniform_steps(buf, starts, rest) if count > 1 else None
        columns, end = uniform if uniform is not None else _columnwise_steps(buf, views, starts, rest)
    columns["step"] = step
    if located is not None:  # consecutive non-negative numbers: nothing for _finish_steps to sort or check
        columns[_SORTED] = True
    return columns, end


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
    buf: np.ndarray, starts: np.ndarray, rest: np.ndarray
) -> tuple[dict[str, pa.Array], int] | None:
    """Steps that all share the first one's layout after the step number (same keys, encodings, list
    lengths), read from one (steps x bytes) block: every field is a strided view of it, and one pass
    checks every step against the first (see ``_template``). None when the steps are not uniform.
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
    for name, kind, at, length in fields:
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
    return out, end


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
    if values.max() > _INT32_MAX or values.min() < -_INT32_MAX - 1:
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


# ------------------------------------------------------------------------------------------ verification


def _verify(
    index_row: Mapping[str, Any] | None, data: bytes | None, name: str
) -> tuple[dict[str, Any], TownletEpisode | None, dict[str, Any]]:
    """``(verification columns, decoded episode or None, index row values with bad types nulled)``."""
    out: dict[str, Any] = dict.fromkeys(VERIFICATION_COLUMNS)
    reasons: list[str] = []
    index_values: dict[str, Any] = {}
    if index_row is None:
        reasons.append("unindexed: no episode_recordings row names this file")
    else:
        index_values = _index_values(index_row, reasons)
    out["file_exists"] = data is not None
    episode = None
    uncompressed = None
    if data is None:
        reasons.append("missing file: no bytes for this recording")
    else:
        data = bytes(data) if not isinstance(data, bytes) else data
        out["sha256"] = hashlib.sha256(data).hexdigest()
        out["actual_compressed_size"] = len(data)
        out["compression"] = "lz4" if data[:4] == LZ4_FRAME_MAGIC else None  # "none" once it reads as msgpack
        try:
            compression, raw = _decompress(data, name)
            out["compression"] = compression
            uncompressed = out["actual_uncompressed_size"] = len(raw)
            episode, _ = _decode_document(raw, name, compression=compression, compressed_size=len(data))
        except RecordingFormatError as exc:
            reasons.append(f"undecodable: {exc.reason}")
    if episode is not None:
        out.update(
            version=episode.version,
            steps_recorded=episode.steps_recorded,
            frames_dropped=episode.frames_dropped,
            meter_count=episode.meter_count,
            has_q_values=episode.has_q_values,
            has_action_masks=episode.has_action_masks,
            has_temporal=episode.has_temporal,
            affordance_layout=episode.affordance_layout,
            affordance_visits=json.dumps(episode.affordance_visits, separators=(",", ":"), default=str),
        )
    if index_values and data is not None:
        _compare_sizes(index_values, len(data), uncompressed, reasons)
    if index_values and episode is not None:
        _compare_metadata(index_values, episode, reasons)
    if episode is not None:
        match = _EPISODE_FILE.search(PurePosixPath(name).name)
        if match and int(match.group(1)) != episode.episode_id:
            reasons.append(
                f"file name says episode {int(match.group(1))}, metadata episode_id {episode.episode_id}"
            )
        if episode.frames_dropped < 0:
            reasons.append(
                f"{episode.steps_recorded} steps recorded but survival_steps is {episode.survival_steps}"
            )
    out["valid"] = not reasons
    out["invalid_reason"] = "; ".join(reasons) if reasons else None
    return out, episode, index_values


def _index_values(index_row: Mapping[str, Any], reasons: list[str]) -> dict[str, Any]:
    """The row's columns; a wrongly typed value (SQLite is dynamically typed) becomes null plus a reason."""
    values: dict[str, Any] = {}
    episode_id = index_row.get("episode_id")
    if type(episode_id) is int:
        values["episode_id"] = episode_id
    else:
        reasons.append(f"index episode_id is not an integer: {episode_id!r}")
    for column, types in _INDEX_TYPES.items():
        value = index_row.get(column)
        if value is None or (type(value) in types):
            values[column] = value
        else:
            values[column] = None
            reasons.append(f"index {column} has a wrong type: {value!r}")
    return values


def _compare_sizes(
    index: dict[str, Any], file_size: int, uncompressed: int | None, reasons: list[str]
) -> None:
    if index.get("compressed_size_bytes") is not None and index["compressed_size_bytes"] != file_size:
        reasons.append(
            f"index compressed_size_bytes {index['compressed_size_bytes']} != file size {file_size}"
        )
    expected = index.get("file_size_bytes")
    if expected is not None and uncompressed is not None and expected != uncompressed:
        reasons.append(f"index file_size_bytes {expected} != uncompressed size {uncompressed}")


def _compare_metadata(index: dict[str, Any], episode: TownletEpisode, reasons: list[str]) -> None:
    if index.get("episode_id") is not None and index["episode_id"] != episode.episode_id:
        reasons.append(f"index episode_id {index['episode_id']} != metadata episode_id {episode.episode_id}")
    metadata = episode.metadata
    for key in _MIRRORED_EXACT + _MIRRORED_FLOAT:
        if key not in metadata or index.get(key) is None:
            continue
        mine, theirs = metadata[key], index[key]
        if key in _MIRRORED_EXACT:
            same = type(mine) is int and mine == theirs
        else:
            same = type(mine) in (int, float) and _close(float(mine), float(theirs))
        if not same:
            reasons.append(f"index {key} {theirs!r} != metadata {key} {mine!r}")


def _close(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _utc(timestamp: float) -> dt.datetime | None:
    try:
        return dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)
    except (OverflowError, OSError, ValueError):
        return None
