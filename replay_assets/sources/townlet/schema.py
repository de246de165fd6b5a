"""The Arrow schemas of ``townlet_recordings_index`` and ``townlet_episode_steps``."""

from __future__ import annotations

import pyarrow as pa

# One row per Townlet recording of a checkpoint: the `episode_recordings` row (null for a file the index
# does not name) beside what the file itself holds, and whether the two agree (see
# sources/townlet/read.py `verify_recording` for exactly what `valid` requires).
TOWNLET_RECORDINGS_INDEX = pa.schema(
    [
        pa.field("date", pa.date32(), nullable=False),
        pa.field("checkpoint", pa.string(), nullable=False),  # e.g. "checkpoints_level2_5"
        # The index's; for a file without index row the file's metadata, else the number in its name.
        pa.field("episode_id", pa.int64()),
        # episode_recordings columns, verbatim; all null when the file has no index row.
        pa.field("file_path", pa.string()),  # relative to the checkpoint directory
        pa.field("timestamp", pa.float64()),  # unix seconds, as the producer wrote it
        pa.field("recorded_at", pa.timestamp("us", tz="UTC")),  # the same instant as a timestamp
        pa.field("survival_steps", pa.int64()),
        pa.field("total_reward", pa.float64()),
        pa.field("extrinsic_reward", pa.float64()),
        pa.field("intrinsic_reward", pa.float64()),
        pa.field("curriculum_stage", pa.int64()),
        pa.field("epsilon", pa.float64()),
        pa.field("intrinsic_weight", pa.float64()),
        pa.field("recording_reason", pa.string()),
        pa.field("file_size_bytes", pa.int64()),  # uncompressed msgpack size, per the index
        pa.field("compressed_size_bytes", pa.int64()),  # file size, per the index
        # Lineage.
        pa.field("source_uri", pa.string(), nullable=False),  # the recording file
        pa.field("index_uri", pa.string()),  # the SQLite index; null when there is none
        # What the file holds; null where the file is missing or could not be decoded that far.
        pa.field("file_exists", pa.bool_(), nullable=False),
        pa.field("sha256", pa.string()),
        pa.field("actual_compressed_size", pa.int64()),  # bytes of the file as stored
        pa.field("actual_uncompressed_size", pa.int64()),  # bytes of its msgpack document
        pa.field("compression", pa.string()),  # lz4 | none (raw msgpack under the .lz4 name)
        pa.field("version", pa.int32()),
        pa.field("steps_recorded", pa.int64()),  # len(steps)
        pa.field("frames_dropped", pa.int64()),  # metadata survival_steps - steps_recorded
        pa.field("meter_count", pa.int32()),
        pa.field("has_q_values", pa.bool_()),
        pa.field("has_action_masks", pa.bool_()),
        pa.field("has_temporal", pa.bool_()),  # time_of_day / interaction_progress recorded
        # Both producer shapes normalized to name -> position, in the runner's `ordering`.
        pa.field("affordance_layout", pa.map_(pa.string(), pa.list_(pa.int32()))),
        pa.field("affordance_visits", pa.string()),  # metadata affordance_visits as compact JSON
        pa.field("valid", pa.bool_(), nullable=False),
        pa.field("invalid_reason", pa.string()),  # "; "-joined reasons, null when valid
    ]
)

# One row per recorded step of a Townlet episode, sorted by (episode_id, step). Steps the producer
# dropped are simply absent (see TOWNLET_RECORDINGS_INDEX.frames_dropped). `position[t]` already shows
# the effect of `action[t]`. Precision follows the producer: meters and q-values are float32 tensors
# (stored losslessly as float32), rewards, epsilon and interaction_progress are Python float64s.
TOWNLET_EPISODE_STEPS = pa.schema(
    [
        pa.field("date", pa.date32(), nullable=False),
        pa.field("checkpoint", pa.string(), nullable=False),
        pa.field("episode_id", pa.int64(), nullable=False),
        pa.field("step", pa.int32(), nullable=False),
        pa.field("x", pa.int32()),  # null when the step's position is []
        pa.field("y", pa.int32()),
        pa.field("z", pa.int32()),  # null for 2-D positions
        pa.field("meters", pa.list_(pa.float32()), nullable=False),  # config order, no names
        pa.field("action", pa.int32(), nullable=False),
        pa.field("reward", pa.float64(), nullable=False),
        pa.field("intrinsic_reward", pa.float64(), nullable=False),
        pa.field("done", pa.bool_(), nullable=False),
        pa.field("q_values", pa.list_(pa.float32())),  # null when not recorded
        pa.field("epsilon", pa.float64()),
        pa.field("action_masks", pa.list_(pa.bool_())),
        pa.field("time_of_day", pa.int32()),
        pa.field("interaction_progress", pa.float64()),
        pa.field("source_uri", pa.string(), nullable=False),
    ]
)
