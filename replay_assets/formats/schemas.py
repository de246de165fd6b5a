"""Arrow schemas of every warehouse table, declared once: writers, checks and loaders share them."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import pyarrow as pa

RAW_REPLAY_LISTINGS = pa.schema(
    [
        pa.field("date", pa.date32(), nullable=False),
        pa.field("source", pa.string(), nullable=False),  # metta | sc2 | townlet | tmrl
        pa.field("relative_path", pa.string(), nullable=False),  # below the landing root
        pa.field("uri", pa.string(), nullable=False),
        pa.field("size_bytes", pa.int64()),  # null when the file is missing
        pa.field("modified_at", pa.timestamp("us", tz="UTC")),
        pa.field("sha256", pa.string()),  # null when the file is missing or unreadable
        pa.field("format", pa.string(), nullable=False),  # from magic bytes: see formats/detect.py
        pa.field("day_rule", pa.string(), nullable=False),  # which rule chose `date`
        # ok | missing_file (index row without file) | unindexed (file without index row)
        # | unreadable (the bytes could not be read) | unrecognized (not a replay of its source)
        pa.field("status", pa.string(), nullable=False),
        pa.field("detail", pa.string()),  # the reason, when status is not ok
        pa.field("episode_id", pa.int64()),  # Townlet: the index's episode_id
        pa.field("index_uri", pa.string()),  # Townlet: the SQLite index naming the recording
    ]
)

# One row per (agent, timestep) of a MettaScope replay: the action taken at `timestep` paired with the
# agent's state *before* it (the state logged at timestep - 1). Step 0 has no recorded prior state, so
# it is not a sample: an agent's rows start at timestep 1. `reward` is the step's `current_reward`,
# `total_reward` the running total after the step.
METTA_ACTION_SAMPLES = pa.schema(
    [
        pa.field("date", pa.date32(), nullable=False),
        pa.field("episode_id", pa.string(), nullable=False),  # file's UUID stem, else "sha256:<first 32 hex>"
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("source_sha256", pa.string(), nullable=False),
        pa.field("replay_version", pa.int8(), nullable=False),
        pa.field("environment", pa.string()),  # landing sub-folder, else mg_config's label; null if neither
        pa.field("agent_id", pa.int32(), nullable=False),
        pa.field("timestep", pa.int32(), nullable=False),
        pa.field("action", pa.int32(), nullable=False),  # index into the replay's action_names
        pa.field("action_name", pa.string()),
        pa.field("action_param", pa.int32(), nullable=False),
        pa.field("action_success", pa.bool_(), nullable=False),
        pa.field("reward", pa.float32(), nullable=False),
        pa.field("total_reward", pa.float32(), nullable=False),
        pa.field("location_x", pa.int32(), nullable=False),  # before the action
        pa.field("location_y", pa.int32(), nullable=False),
        pa.field("orientation", pa.int32(), nullable=False),
        pa.field("inventory", pa.map_(pa.string(), pa.int32()), nullable=False),  # item name -> count, before
        pa.field("is_frozen", pa.bool_(), nullable=False),  # before the action
    ]
)

# One row per raw file a source asset could not use; shared by every source's `*_failures` table.
REPLAY_FAILURES = pa.schema(
    [
        pa.field("date", pa.date32(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("source_sha256", pa.string()),
        pa.field("error_class", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),  # one line, names the file
    ]
)

# One row per Townlet recording of a checkpoint: the `episode_recordings` row (null for a file the index
# does not name) beside what the file itself holds, and whether the two agree (see
# formats/townlet.py `verify_recording` for exactly what `valid` requires).
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

# TMRL player runs: the shapes formats.md gives for the known observation layouts.
ACT_SIZE = 3  # gas, brake, steer
LIDAR_SHAPE = (4, 19)  # 4 frames of 19 beams, newest first
IMAGES_SHAPE = (4, 64, 64)  # 4 grayscale frames, newest first


def _tensor_field(
    name: str, type_: pa.DataType, shape: Sequence[int], dtype: str, **extra: str
) -> pa.Field:
    """A nullable column holding one flattened numpy array per row; its shape and dtype as metadata."""
    return pa.field(name, type_, metadata={"shape": json.dumps(list(shape)), "dtype": dtype, **extra})


OBS_RAW_TYPE = pa.list_(
    pa.struct(
        [
            pa.field("shape", pa.list_(pa.int32())),
            pa.field("dtype", pa.string()),  # numpy dtype string, native byte order, e.g. "<f4"
            pa.field("data", pa.binary()),  # the array's bytes in C order
        ]
    )
)

# One row per sample of a TMRL player run, in file order.
# A sample is (act, obs, rew, terminated, truncated, info): the action taken after observing obs and
# the reward and flags it earned. Observation columns not applicable to the run's layout are null;
# `obs_raw` holds the observation of any other layout, unchanged, so nothing is dropped.
TMRL_DEMO_BUFFERS = pa.schema(
    [
        pa.field("date", pa.date32(), nullable=False),  # the partition day (from the landing listing)
        pa.field("run_id", pa.string(), nullable=False),  # the file's run_id; legacy lists: file stem
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),  # of the file's bytes
        pa.field("sample_index", pa.int32(), nullable=False),  # position in the file's samples list
        # First sample, or the one after a terminated/truncated sample.
        pa.field("episode_start", pa.bool_(), nullable=False),
        pa.field("episode_end", pa.bool_(), nullable=False),  # terminated or truncated, or the last sample
        pa.field("act", pa.list_(pa.float32(), ACT_SIZE), nullable=False),  # gas, brake, steer in [-1, 1]
        pa.field("obs_layout", pa.string(), nullable=False),  # lidar | full | unknown:<dtype[shape],...>
        pa.field("speed", pa.float32()),  # lidar and full
        pa.field("gear", pa.float32()),  # full
        pa.field("rpm", pa.float32()),  # full
        _tensor_field("lidar", pa.list_(pa.float32(), math.prod(LIDAR_SHAPE)), LIDAR_SHAPE, "float32"),
        # The (4, 64, 64) uint8 frames' 16384 bytes. Binary, not a list of uint8: one Parquet value per
        # row (30x faster to write and read than fixed_size_list<uint8>[16384]); not fixed-size binary,
        # whose null rows (every lidar run) would still allocate 16 KiB each, writing and reading.
        # zstd (see io/parquet_files.py): consecutive samples share three of their four frames.
        _tensor_field("images", pa.binary(), IMAGES_SHAPE, "uint8", parquet_compression="zstd"),
        _tensor_field("prev_act_1", pa.list_(pa.float32(), ACT_SIZE), (ACT_SIZE,), "float32"),  # act t-1
        _tensor_field("prev_act_2", pa.list_(pa.float32(), ACT_SIZE), (ACT_SIZE,), "float32"),  # act t-2
        pa.field("obs_raw", OBS_RAW_TYPE),  # unknown layouts only: every obs component
        pa.field("reward", pa.float64(), nullable=False),
        pa.field("terminated", pa.bool_(), nullable=False),
        pa.field("truncated", pa.bool_(), nullable=False),
        pa.field("info", pa.string(), nullable=False),  # the sample's info dict as JSON
        pa.field("is_demo", pa.bool_(), nullable=False),  # info, else metadata "is_demo"; default true
        pa.field("recorded_at", pa.timestamp("us", tz="UTC")),  # null for legacy lists
        pa.field("obs_scale_version", pa.int32()),  # null when the file does not say (earlier writers)
    ]
)

# StarCraft II. One row per replay of the day, decodable or not (`valid` false with the reasons when not).
# `replay_id` is the sha256 of the file's bytes: the same replay landed twice has one id.
SC2_PLAYER = pa.struct(
    [
        pa.field("player_id", pa.int32()),  # 1-based, as in tracker events and the engine
        pa.field("name", pa.string()),  # without the clan tag and markup, entities unescaped
        pa.field("clan_tag", pa.string()),  # null when the player shows none
        pa.field("race", pa.string()),  # Terran | Zerg | Protoss | Random (as recorded)
        pa.field("result", pa.string()),  # Win | Loss | Tie | Undecided
        pa.field("mmr", pa.int32()),  # null when the replay does not record it
        pa.field("apm", pa.float32()),  # actions per game minute from game events; null if undecodable
    ]
)

SC2_REPLAY_METADATA = pa.schema(
    [
        pa.field("date", pa.date32(), nullable=False),
        pa.field("replay_id", pa.string(), nullable=False),
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("base_build", pa.int32()),  # from the header; null when even the header is unreadable
        pa.field("game_version", pa.string()),  # "major.minor.revision.build"
        pa.field("decoder_build", pa.int32()),  # the s2protocol build used for the other files
        pa.field("decoder_exact", pa.bool_()),  # false: nearest older protocol, values approximate
        pa.field("map_name", pa.string()),
        pa.field("game_loops", pa.int32()),
        pa.field("played_at", pa.timestamp("us", tz="UTC")),  # details m_timeUTC (Windows FILETIME)
        pa.field("players", pa.list_(SC2_PLAYER)),  # in player_id order; observers excluded
        pa.field("valid", pa.bool_(), nullable=False),
        pa.field("invalid_reasons", pa.list_(pa.string())),  # empty when valid
    ]
)

SC2_ORDER = pa.struct(
    [
        pa.field("ability_id", pa.int32()),
        pa.field("target_unit_tag", pa.int64()),
        pa.field("target_x", pa.float32()),
        pa.field("target_y", pa.float32()),
        pa.field("progress", pa.float32()),
    ]
)

# A unit one player owns at a frame. A field a backend cannot know is null, never invented: the tracker
# backend knows type names, tags and last observed positions; only the engine knows unit_type ids, z,
# vitals and orders. `position_loop`/`position_source` say how current (x, y) is.
# Positions and vitals change from frame to frame: plain values compress better than dictionary codes.
_PLAIN = {"parquet_dictionary": "false"}

SC2_UNIT = pa.struct(
    [
        pa.field("tag", pa.int64()),  # (unit_tag_index << 18) + unit_tag_recycle, as the engine's tag
        pa.field("unit_type", pa.int32()),  # engine id; null from tracker events
        pa.field("unit_name", pa.string()),  # e.g. "SCV"
        pa.field("x", pa.float32(), metadata=_PLAIN),
        pa.field("y", pa.float32(), metadata=_PLAIN),
        pa.field("z", pa.float32(), metadata=_PLAIN),
        pa.field("position_loop", pa.int32(), metadata=_PLAIN),  # game loop at which (x, y) was observed
        pa.field("position_source", pa.string()),  # born | tracked | engine
        pa.field("is_complete", pa.bool_()),  # construction/morph finished (tracker: born or done event)
        pa.field("health", pa.float32(), metadata=_PLAIN),
        pa.field("health_max", pa.float32()),
        pa.field("shield", pa.float32(), metadata=_PLAIN),
        pa.field("energy", pa.float32(), metadata=_PLAIN),
        pa.field("build_progress", pa.float32(), metadata=_PLAIN),
        pa.field("is_flying", pa.bool_()),
        pa.field("orders", pa.list_(SC2_ORDER)),
    ]
)

# One row per (replay_id, game_loop, player_id) every `step_mul` game loops, sorted in that order.
SC2_GROUND_TRUTH_FRAMES = pa.schema(
    [
        pa.field("date", pa.date32(), nullable=False),
        pa.field("replay_id", pa.string(), nullable=False),
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("backend", pa.string(), nullable=False),  # tracker | engine
        pa.field("game_loop", pa.int32(), nullable=False),
        pa.field("player_id", pa.int32(), nullable=False),
        # Player stats. Tracker: forward-filled from the latest player-stats event, at `stats_loop`.
        pa.field("stats_loop", pa.int32()),  # null from the engine (its stats are of this very loop)
        pa.field("minerals", pa.int32()),
        pa.field("vespene", pa.int32()),
        pa.field("food_used", pa.float32()),
        pa.field("food_cap", pa.float32()),
        pa.field("food_army", pa.float32()),
        pa.field("food_workers", pa.float32()),
        pa.field("upgrades", pa.list_(pa.string())),  # upgrade names researched so far
        pa.field("upgrade_ids", pa.list_(pa.int32())),  # engine ids; null from tracker events
        pa.field("dead_units", pa.list_(pa.int64())),  # tags of this player's units died since last frame
        # zstd (see io/parquet_files.py): a player's units repeat, barely changed, frame after frame;
        # 2.8x smaller than snappy and faster to write.
        pa.field("units", pa.list_(SC2_UNIT), metadata={"parquet_compression": "zstd"}),
    ]
)
