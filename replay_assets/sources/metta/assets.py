"""``metta_action_samples``: (state before, action) samples from every MettaScope replay of the day.

Thin by design: the decoding lives in ``sources/metta/read.py``; this module picks the day's files from the
listing, streams each replay's batches into the warehouse, and reports the replays it could not use
in the metadata and in ``metta_replay_failures``.
"""

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    Config,
    MetadataValue,
)
from pydantic import Field

from replay_assets.errors import ReplayAssetsError
from replay_assets.pipeline.daily import daily_multi_asset
from replay_assets.pipeline.files import (
    FailureLog,
    files_stream,
    listed_files,
    source_outputs,
    source_outs,
)
from replay_assets.pipeline.resources import ReplayStore, WarehouseDuckDB
from replay_assets.sources.metta.read import ReplaySource, episode_id_for, read_metta_samples
from replay_assets.sources.metta.schema import METTA_ACTION_SAMPLES
from replay_assets.warehouse.parquet import PartitionStream

SAMPLES = "metta_action_samples"
FAILURES = "metta_replay_failures"
NO_DUPLICATES = "no_duplicate_samples"
CONTIGUOUS = "timesteps_contiguous"
ACTIONS_KNOWN = "actions_within_action_names"
REPLAYS_DECODED = "replays_decoded"


class MettaSamplesConfig(Config):
    environment: str | None = Field(
        default=None, description="Keep only replays of this environment (landing sub-folder or mg_config)."
    )
    min_reward: float | None = Field(
        default=None, description="Keep an agent's episode only if its final total_reward is at least this."
    )


def _day_stream(
    backend: Any, day: dt.date, listing: pa.Table, config: MettaSamplesConfig, failures: FailureLog
) -> PartitionStream:
    """One day's samples, replay by replay in episode order."""
    files = sorted(
        listed_files(listing, "metta"),
        key=lambda r: (episode_id_for(r["relative_path"], r["sha256"]), r["uri"]),
    )
    seen_episodes: dict[str, str] = {}

    def decode(data: bytes, row: dict[str, Any]) -> Iterator[pa.RecordBatch]:
        episode_id = episode_id_for(row["relative_path"], row["sha256"])
        if episode_id in seen_episodes:
            raise ReplayAssetsError(
                f"{row['uri']}: episode id {episode_id} already used by {seen_episodes[episode_id]}"
            )
        source = ReplaySource(day, row["uri"], row["sha256"], row["relative_path"])
        batches = list(
            read_metta_samples(data, source, environment=config.environment, min_reward=config.min_reward)
        )
        seen_episodes[episode_id] = row["uri"]
        return iter(batches)

    return files_stream(backend, files, METTA_ACTION_SAMPLES, decode, failures)


def _count(warehouse_sql: WarehouseDuckDB, sql: str, first: str, last: str) -> int:
    with warehouse_sql.get_connection() as conn:
        return conn.execute(sql, [first, last]).fetchone()[0]


_IN_RANGE = "date BETWEEN ?::DATE AND ?::DATE"
_DUPLICATES = f"""SELECT count(*) FROM (SELECT episode_id, agent_id, timestep FROM {SAMPLES} WHERE {_IN_RANGE}
    GROUP BY ALL HAVING count(*) > 1)"""
_GAPS = f"""SELECT count(*) FROM (SELECT episode_id, agent_id FROM {SAMPLES} WHERE {_IN_RANGE}
    GROUP BY ALL HAVING max(timestep) - min(timestep) + 1 != count(*) OR min(timestep) != 1)"""
_UNKNOWN_ACTIONS = f"SELECT count(*) FROM {SAMPLES} WHERE {_IN_RANGE} AND action_name IS NULL"


def _checks(warehouse_sql: WarehouseDuckDB, first: str, last: str, failures: list[FailureLog], replays: int):
    duplicates = _count(warehouse_sql, _DUPLICATES, first, last)
    yield AssetCheckResult(
        asset_key=SAMPLES,
        check_name=NO_DUPLICATES,
        passed=duplicates == 0,
        metadata={"duplicate_keys": duplicates},
    )
    gaps = _count(warehouse_sql, _GAPS, first, last)
    yield AssetCheckResult(
        asset_key=SAMPLES, check_name=CONTIGUOUS, passed=gaps == 0, metadata={"agents_with_gaps": gaps}
    )
    unknown = _count(warehouse_sql, _UNKNOWN_ACTIONS, first, last)
    yield AssetCheckResult(
        asset_key=SAMPLES,
        check_name=ACTIONS_KNOWN,
        passed=unknown == 0,
        metadata={"unknown_actions": unknown},
    )
    failed = sum(len(f.rows) for f in failures)
    every_file_failed = replays > 0 and failed == replays
    yield AssetCheckResult(
        asset_key=SAMPLES,
        check_name=REPLAYS_DECODED,
        passed=failed == 0,
        severity=AssetCheckSeverity.ERROR if every_file_failed else AssetCheckSeverity.WARN,
        metadata={
            "replays": replays,
            "failed": failed,
            "failures": MetadataValue.json([r for f in failures for r in f.summary()]),
        },
    )


@daily_multi_asset(
    outs=source_outs(
        SAMPLES, FAILURES, "metta", "MettaScope replays of the day that could not be used, with the reason."
    ),
    ins={"raw_replay_listings": AssetIn(key=AssetKey("raw_replay_listings"))},
    check_specs=[
        AssetCheckSpec(
            NO_DUPLICATES, asset=SAMPLES, description="No duplicate (episode_id, agent_id, timestep)."
        ),
        AssetCheckSpec(
            CONTIGUOUS, asset=SAMPLES, description="Each agent's timesteps run 1, 2, ... without gaps."
        ),
        AssetCheckSpec(
            ACTIONS_KNOWN, asset=SAMPLES, description="Every action indexes the replay's action_names."
        ),
        AssetCheckSpec(
            REPLAYS_DECODED,
            asset=SAMPLES,
            description="Every listed replay decoded (fails hard if none did).",
        ),
    ],
    name="metta_action_samples_assets",
)
def metta_action_samples(
    context: AssetExecutionContext,
    config: MettaSamplesConfig,
    raw_replay_listings: dict[str, pa.Table],
    replay_store: ReplayStore,
    warehouse_sql: WarehouseDuckDB,
):
    """One row per (agent, action) of each MettaScope replay (v1, v2, v3; zlib, gzip or plain JSON),
    the action at ``timestep`` paired with the agent's state before it; sorted by episode, agent, step."""
    keys = list(context.partition_keys)
    backend = replay_store.backend()
    failures = {key: FailureLog(dt.date.fromisoformat(key), "metta") for key in keys}
    streams = {
        key: _day_stream(backend, failures[key].day, raw_replay_listings[key], config, failures[key])
        for key in keys
    }
    replays = sum(len(listed_files(raw_replay_listings[key], "metta")) for key in keys)
    yield from source_outputs(context, streams, failures, SAMPLES, FAILURES)
    if SAMPLES in context.op_execution_context.selected_output_names:
        yield from _checks(warehouse_sql, keys[0], keys[-1], list(failures.values()), replays)
