"""``metta_action_samples`` (+ ``metta_replay_failures``): (state before, action) samples from every
MettaScope replay of the day, built by the pipeline from the reader declared in ``read.py``; this module
adds only what is Metta's own: its checks.
"""

from collections.abc import Iterator

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    MetadataValue,
)

from replay_assets.pipeline.day import DayResult
from replay_assets.pipeline.resources import WarehouseDuckDB
from replay_assets.pipeline.source_assets import run_config_class, source_assets
from replay_assets.sources.metta.read import READER, MettaReadConfig

SAMPLES = "metta_action_samples"
FAILURES = "metta_replay_failures"
NO_DUPLICATES = "no_duplicate_samples"
CONTIGUOUS = "timesteps_contiguous"
ACTIONS_KNOWN = "actions_within_action_names"
REPLAYS_DECODED = "replays_decoded"


def _count(warehouse_sql: WarehouseDuckDB, sql: str, first: str, last: str) -> int:
    with warehouse_sql.get_connection() as conn:
        return conn.execute(sql, [first, last]).fetchone()[0]


_IN_RANGE = "date BETWEEN ?::DATE AND ?::DATE"
_DUPLICATES = f"""SELECT count(*) FROM (SELECT episode_id, agent_id, timestep FROM {SAMPLES} WHERE {_IN_RANGE}
    GROUP BY ALL HAVING count(*) > 1)"""
_GAPS = f"""SELECT count(*) FROM (SELECT episode_id, agent_id FROM {SAMPLES} WHERE {_IN_RANGE}
    GROUP BY ALL HAVING max(timestep) - min(timestep) + 1 != count(*) OR min(timestep) != 1)"""
_UNKNOWN_ACTIONS = f"SELECT count(*) FROM {SAMPLES} WHERE {_IN_RANGE} AND action_name IS NULL"


def _checks(context: AssetExecutionContext, results: dict[str, DayResult]) -> Iterator[AssetCheckResult]:
    warehouse_sql: WarehouseDuckDB = context.resources.warehouse_sql
    first, last = min(results), max(results)
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
    replays = sum(r.report["files"] for r in results.values())
    failed = sum(r.report["files_failed"] for r in results.values())
    every_file_failed = replays > 0 and failed == replays
    yield AssetCheckResult(
        asset_key=SAMPLES,
        check_name=REPLAYS_DECODED,
        passed=failed == 0,
        severity=AssetCheckSeverity.ERROR if every_file_failed else AssetCheckSeverity.WARN,
        metadata={
            "replays": replays,
            "failed": failed,
            "failures": MetadataValue.json([reason for r in results.values() for reason in r.reasons[:20]]),
        },
    )


MettaSamplesConfig = run_config_class("MettaSamplesConfig", MettaReadConfig)

metta_action_samples = source_assets(
    READER,
    rows=SAMPLES,
    failures=FAILURES,
    group="metta",
    description="One row per (agent, action) of each MettaScope replay (v1, v2, v3; zlib, gzip or plain "
    "JSON), the action at ``timestep`` paired with the agent's state before it; sorted by episode, agent, "
    "step.",
    failures_description="MettaScope replays of the day that could not be used, with the reason.",
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
    checks=_checks,
    config_class=MettaSamplesConfig,
    required_resource_keys={"warehouse_sql"},
)
