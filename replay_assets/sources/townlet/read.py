"""Townlet episode recordings (``recordings/episode_{id:06d}.msgpack.lz4``) to Arrow: bytes in, Arrow out.

Pure on purpose (no Dagster, boto3 or torch): the assets hand it one file's bytes (and its
``episode_recordings`` row), users can call it directly. Facts it relies on (from Townlet's own
``EpisodeRecorder``, checked on ``shared/data/townlet/checkpoints_level2_5``, see the tests):

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
pandas): producer-shaped files take the fast path of ``sources/townlet/fast_msgpack.py`` (no Python object
per step); anything it does not expect makes it give up, and ``_generic_document`` decodes the file with
``msgpack.unpackb`` and validates it, raising the errors. Both paths give identical results (tested on
the real files and on generated variants). Verification checks every step the same way but builds no
step column for the usual (uniform) file: ``fast_step_facts``.

Errors: a file this reader cannot decode (broken lz4, truncated or invalid msgpack, not a map, wrong
version, missing top-level, metadata or step keys, wrongly typed values) raises ``RecordingFormatError``
whose one-line message starts with the file's name. ``verify_recording`` turns that, and every
disagreement between a file and its index row, into the ``valid``/``invalid_reason`` columns of
``TOWNLET_RECORDINGS_INDEX``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import PurePosixPath
from typing import Any

import msgpack
import numpy as np
import pyarrow as pa

from replay_assets.errors import FileFormatError
from replay_assets.landing.detect import LZ4_FRAME_MAGIC, is_msgpack_map
from replay_assets.sources.contract import Lineage, SourceReader
from replay_assets.sources.townlet.fast_msgpack import (
    INT32_MAX,
    INT64_MAX,
    OPTIONAL_STEP_KEYS,
    REQUIRED_STEP_KEYS,
    SORTED,
    STEP_COLUMNS,
    StepFacts,
    fast_document,
    fast_step_facts,
)
from replay_assets.sources.townlet.schema import TOWNLET_EPISODE_STEPS, TOWNLET_RECORDINGS_INDEX
from replay_assets.util.capped_inflate import BrokenStreamError, InflateLimitError, inflate

__all__ = [
    "INDEX_COLUMNS",
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
REQUIRED_METADATA_KEYS = ("episode_id", "survival_steps")
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
_EPOCH = dt.date(1970, 1, 1)


# The largest msgpack document a recording may be (or inflate to). A 500-step recording is ~1 MB; the
# decoded steps take a few times the document, so one file's work stays within a few GiB.
DEFAULT_MAX_DECOMPRESSED_BYTES = 512 << 20


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


def decode_recording(
    data: bytes, name: str, *, max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES
) -> tuple[TownletEpisode, pa.RecordBatch]:
    """Decode one recording file: its metadata and facts, and its steps as one ``STEP_COLUMNS`` batch.

    The batch is sorted by ``step`` (the producer writes steps in order; dropped steps leave gaps).
    Raises ``RecordingFormatError`` naming ``name`` for anything it cannot decode, and for a file whose
    msgpack document is (or would inflate to) more than ``max_decompressed_bytes``.
    """
    data = bytes(data) if not isinstance(data, bytes) else data
    compression, raw = _decompress(data, name, max_decompressed_bytes)
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
    data: bytes,
    name: str,
    *,
    date: dt.date,
    checkpoint: str,
    source_uri: str | None = None,
    max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES,
) -> tuple[TownletEpisode, pa.RecordBatch]:
    """One file's bytes to its ``TOWNLET_EPISODE_STEPS`` batch (sorted by step) and its episode facts.

    ``source_uri`` defaults to ``name``. Raises ``RecordingFormatError`` like ``decode_recording``.
    """
    data = bytes(data) if not isinstance(data, bytes) else data
    compression, raw = _decompress(data, name, max_decompressed_bytes)
    context = (date, checkpoint, name if source_uri is None else source_uri)
    return _decode_document(raw, name, compression=compression, compressed_size=len(data), context=context)


def normalize_affordance_layout(
    layout: Any, name: str = "<recording>"
) -> tuple[dict[str, list[int]], list[str]]:
    """Either producer shape of ``affordance_layout`` as ``({name: position}, order)``."""
    positions, order, _ = _normalize_layout(layout, name)
    return positions, order


def verify_recording(
    index_row: Mapping[str, Any] | None,
    data: bytes | None,
    name: str,
    *,
    max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES,
) -> dict[str, Any]:
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
    return _verify(index_row, data, name, max_decompressed_bytes=max_decompressed_bytes)[0]


def recordings_index_row(
    index_row: Mapping[str, Any] | None,
    data: bytes | None,
    source_uri: str,
    *,
    date: dt.date,
    checkpoint: str,
    index_uri: str | None,
    sha256: str | None = None,
    max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES,
) -> dict[str, Any]:
    """One full ``TOWNLET_RECORDINGS_INDEX`` row: the index row's columns, lineage and verification.

    ``source_uri`` names the recording (also in messages). ``episode_id`` is the index's; for a file
    without index row the metadata's, else the number in the file name, else null. ``sha256``: the hex
    digest of ``data`` when the caller has already checked it (reading a listed file does), else computed.
    """
    verification, episode, index_values = _verify(
        index_row, data, source_uri, sha256, max_decompressed_bytes=max_decompressed_bytes
    )
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


def _decompress(data: bytes, name: str, max_decompressed_bytes: int) -> tuple[str, bytes]:
    """``(compression, msgpack bytes)``: an lz4 frame by its magic (inflated at most
    ``max_decompressed_bytes``), else raw msgpack (compression none)."""
    if data[:4] == LZ4_FRAME_MAGIC:
        try:
            return "lz4", inflate(data, "lz4", max_decompressed_bytes)
        except (BrokenStreamError, InflateLimitError) as exc:
            raise RecordingFormatError(name, str(exc)) from None
    if not data:
        raise RecordingFormatError(name, "empty file")
    if not is_msgpack_map(data[:1]):
        raise RecordingFormatError(
            name, f"neither an lz4 frame nor a msgpack map (first bytes {data[:4].hex(' ')})"
        )
    if len(data) > max_decompressed_bytes:
        raise RecordingFormatError(
            name,
            f"msgpack document of {len(data)} bytes, more than {max_decompressed_bytes=}",
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
    steps: bool = True,
) -> tuple[TownletEpisode, pa.RecordBatch | None]:
    """The msgpack document to (episode, steps batch): ``STEP_COLUMNS``, or with ``context`` (date,
    checkpoint, source_uri) ``TOWNLET_EPISODE_STEPS``; ``fast=False`` forces the generic path (tests).

    ``steps=False`` (verification): the same checks and the same episode, the batch None, and for the
    usual file no step column built (``fast_step_facts``). It raises exactly when decoding would.
    """
    parsed = (fast_document(raw) if steps else fast_step_facts(raw)) if fast else None
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

    if isinstance(columns, StepFacts):
        batch, facts = None, columns
        _check_step_numbers(facts.step.to_numpy(), name, facts.known_sorted)
    else:
        if context is not None:
            columns.update(_context_columns(len(columns["step"]), context, episode_id))
        schema = STEP_COLUMNS if context is None else TOWNLET_EPISODE_STEPS
        batch, facts = _finish_steps(columns, name, schema)
    position_dim = facts.position_dim
    if position_dim == 0:
        position_dim = layout_dim or (len(next(iter(layout.values()))) if layout else 0)
    episode = TownletEpisode(
        episode_id=episode_id,
        version=version,
        compression=compression,
        compressed_size=compressed_size,
        uncompressed_size=len(raw),
        metadata=metadata,
        steps_recorded=len(facts.step),
        survival_steps=survival_steps,
        meter_count=facts.meter_count,
        position_dim=position_dim,
        has_q_values=facts.has_q_values,
        has_action_masks=facts.has_action_masks,
        has_temporal=facts.has_temporal,
        affordance_layout=layout,
        affordance_order=order,
        affordance_visits=visits,
    )
    return episode, batch if steps else None


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
        if type(metadata[key]) is not int or not 0 <= metadata[key] <= INT64_MAX:
            raise RecordingFormatError(
                name, f"metadata {key} is not an integer in 0..{INT64_MAX} (int64): {metadata[key]!r}"
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
            or not all(type(v) is int and -INT32_MAX - 1 <= v <= INT32_MAX for v in position)
        ):
            raise RecordingFormatError(
                name, f"affordance_layout entry {affordance!r}: {position!r} is not a list of integers"
            )
        normalized[affordance] = list(position)
    return normalized, order, declared if type(declared) is int and declared > 0 else None


def _finish_steps(
    columns: dict[str, pa.Array], name: str, schema: pa.Schema
) -> tuple[pa.RecordBatch, StepFacts]:
    """Checks shared by both paths, then ``(the batch sorted by step, the steps' facts)``."""
    known_sorted = columns.pop(SORTED, False)  # set by the fast path when it proved it
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
    batch = pa.RecordBatch.from_arrays([columns[column] for column in schema.names], schema=schema)
    order = _check_step_numbers(steps, name, known_sorted)
    if order is not None:
        batch = batch.take(pa.array(order))
    facts = StepFacts(
        step=columns["step"],
        known_sorted=known_sorted,
        meter_count=meter_count,
        position_dim=3 if with_z else 2 if with_xy else 0,
        has_q_values=columns["q_values"].null_count < n,
        has_action_masks=columns["action_masks"].null_count < n,
        has_temporal=columns["time_of_day"].null_count < n or columns["interaction_progress"].null_count < n,
    )
    return batch, facts


def _check_step_numbers(steps: np.ndarray, name: str, known_sorted: bool) -> np.ndarray | None:
    """Raise for a repeated or a negative step number; the sorting order when not already increasing."""
    n = len(steps)
    order = None
    if n > 1 and not known_sorted and not (np.diff(steps) > 0).all():
        order = np.argsort(steps, kind="stable")
        steps = steps[order]
        if (np.diff(steps) == 0).any():
            at = int(np.flatnonzero(np.diff(steps) == 0)[0])
            raise RecordingFormatError(name, f"step number {int(steps[at])} occurs twice")
    if n and steps[0] < 0:
        raise RecordingFormatError(name, f"negative step number {int(steps[0])}")
    return order


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


# ------------------------------------------------------------------------------------------ verification


def _verify(
    index_row: Mapping[str, Any] | None,
    data: bytes | None,
    name: str,
    sha256: str | None = None,
    *,
    max_decompressed_bytes: int,
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
        out["sha256"] = sha256 or hashlib.sha256(data).hexdigest()
        out["actual_compressed_size"] = len(data)
        out["compression"] = "lz4" if data[:4] == LZ4_FRAME_MAGIC else None  # "none" once it reads as msgpack
        try:
            compression, raw = _decompress(data, name, max_decompressed_bytes)
            out["compression"] = compression
            uncompressed = out["actual_uncompressed_size"] = len(raw)
            episode, _ = _decode_document(
                raw, name, compression=compression, compressed_size=len(data), steps=False
            )
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


def checkpoint_of(relative_path: str) -> str:
    """The checkpoint folder of a recording or index: ``townlet/<checkpoint>/...``."""
    return relative_path.split("/")[1]


@dataclass(frozen=True)
class TownletReadConfig:
    """The run config of ``townlet_recordings_index`` and ``townlet_episode_steps``."""

    max_decompressed_bytes: int = field(
        default=DEFAULT_MAX_DECOMPRESSED_BYTES,
        metadata={"description": "Refuse a recording whose msgpack document is, or inflates to, more bytes."},
    )


def read(data: bytes, lineage: Lineage, config: TownletReadConfig) -> list[pa.RecordBatch]:
    """The reader contract's ``read``: one recording's steps (the index decides which files are read)."""
    _, batch = read_episode_steps(
        data,
        lineage.uri,
        date=lineage.day,
        checkpoint=checkpoint_of(lineage.relative_path),
        max_decompressed_bytes=config.max_decompressed_bytes,
    )
    return [batch]


READER = SourceReader(source="townlet", schema=TOWNLET_EPISODE_STEPS, read=read, config=TownletReadConfig)
