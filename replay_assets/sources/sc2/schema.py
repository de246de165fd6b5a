"""The Arrow schemas of ``sc2_replay_metadata`` and ``sc2_ground_truth_frames``."""

from __future__ import annotations

import pyarrow as pa

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
        # zstd (see warehouse/parquet.py): a player's units repeat, barely changed, frame after frame;
        # 2.8x smaller than snappy and faster to write.
        pa.field("units", pa.list_(SC2_UNIT), metadata={"parquet_compression": "zstd"}),
    ]
)
