"""The Arrow schema of ``metta_action_samples``."""

from __future__ import annotations

import pyarrow as pa

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
