"""``sc2_replay_metadata`` and ``sc2_ground_truth_frames`` (+ ``sc2_replay_failures``): every StarCraft II
replay of the day judged, then turned into per-player frames by the tracker backend (any machine, any
build) or the engine.

Metadata is the pipeline's per-file reader (``replay.py`` ``READER``, decoded in worker processes): a
replay that fails is an invalid row with the reason. Frames have two backends, so ``frames.py`` adapts
them to the pipeline's outcome stream; the pipeline stages the rows and records the failures. This
module holds only the Dagster side: resources, run config, checks.
"""

import datetime as dt
from collections import Counter
from collections.abc import Iterator
from typing import Any, Literal

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetOut,
    Config,
    ConfigurableResource,
    MetadataValue,
)
from pydantic import Field

from replay_assets.pipeline.daily import daily_multi_asset
from replay_assets.pipeline.day import DayResult, mine_day
from replay_assets.pipeline.files import day_lineages
from replay_assets.pipeline.source_assets import (
    LISTINGS,
    mine_range,
    parallel_field,
    run_config_class,
    source_assets,
    source_outputs,
)
from replay_assets.sources.sc2.engine_pool import Sc2EnginePool, default_sc2path, engine_can_play
from replay_assets.sources.sc2.frames import frame_outcomes, plan_frames
from replay_assets.sources.sc2.mpq import DEFAULT_MAX_MEMBER_BYTES
from replay_assets.sources.sc2.replay import DEFAULT_MAX_GAME_LOOPS, READER, Sc2Limits, ValidityRules
from replay_assets.sources.sc2.schema import SC2_GROUND_TRUTH_FRAMES
from replay_assets.warehouse.io_manager import ROW_GROUP_ROWS_METADATA

METADATA = "sc2_replay_metadata"
FRAMES = "sc2_ground_truth_frames"
FAILURES = "sc2_replay_failures"
REPLAYS_DECODED = "sc2_replays_decoded"
FRAMES_WRITTEN = "sc2_frames_written"
SOURCE = "sc2"
# ~100 units a frame: 2048 frames keep a row group near 200k units, so a loader reads a few MB at a time.
FRAMES_ROW_GROUP_ROWS = 2048


class Sc2Engine(ConfigurableResource):
    """The StarCraft II engine as a resource: where the game is installed and how to run the pool (the pool
    itself, engine_pool.py, stays Dagster-free so its spawned workers do not import Dagster).

    `sc2path` defaults to `$SC2PATH`, else `~/StarCraftII` (pysc2's rule)."""

    sc2path: str = Field(default_factory=default_sc2path)
    workers: int = 2  # one SC2 instance each: 1-2 GB of RAM per worker
    restart_every: int = 300  # replays per instance before a fresh one (the game leaks over long runs)
    replay_timeout_s: float = 600.0  # a replay takes 1-5 minutes at step_mul 8; past this it is killed
    step_mul: int = 8
    base_build: int | None = None  # None: each replay's own build when installed, else the newest

    def can_play(self, base_build: int) -> bool:
        """Whether this install can start the replay's exact build (backend=auto then picks the engine)."""
        return engine_can_play(self.sc2path, base_build, self.base_build)

    def pool(self, step_mul: int | None = None) -> Sc2EnginePool:
        """A fresh pool; use it as a context manager so its games are shut down."""
        return Sc2EnginePool(
            self.sc2path,
            workers=self.workers,
            restart_every=self.restart_every,
            replay_timeout_s=self.replay_timeout_s,
            step_mul=step_mul or self.step_mul,
            base_build=self.base_build,
        )


# ---------------------------------------------------------------------------------------------------------
# Metadata


def _metadata_report(results: dict[str, DayResult]) -> dict[str, Any]:
    rows = [
        r
        for result in results.values()
        for r in result.summary.select(["valid", "invalid_reasons"]).to_pylist()
    ]
    reasons = Counter(reason.split(":")[0] for r in rows for reason in r["invalid_reasons"] or [])
    return {
        "replays": len(rows),
        "valid": sum(r["valid"] for r in rows),
        "invalid_reasons": MetadataValue.json(dict(reasons.most_common(20))),
    }


def _metadata_checks(
    context: AssetExecutionContext, results: dict[str, DayResult]
) -> Iterator[AssetCheckResult]:
    columns = ["source_uri", "base_build", "players"]
    rows = [r for result in results.values() for r in result.summary.select(columns).to_pylist()]
    undecodable = [r["source_uri"] for r in rows if r["base_build"] is None or r["players"] is None]
    yield AssetCheckResult(
        asset_key=METADATA,
        check_name=REPLAYS_DECODED,
        passed=not undecodable,
        severity=AssetCheckSeverity.ERROR
        if rows and len(undecodable) == len(rows)
        else AssetCheckSeverity.WARN,
        metadata={"replays": len(rows), "undecodable": MetadataValue.json(undecodable[:20])},
    )


# The seed's ``valid_replay`` thresholds (null disables a rule) and the decoding processes.
Sc2MetadataConfig = run_config_class("Sc2MetadataConfig", ValidityRules, parallel=parallel_field(2))

sc2_replay_metadata = source_assets(
    READER,
    rows=METADATA,
    group=SOURCE,
    description="One row per StarCraft II replay of the day: builds and decoder, map, length, time, players "
    "(race, result, MMR, APM) and ``valid`` with the reasons when not, by the seed's configurable rules.",
    check_specs=[
        AssetCheckSpec(
            REPLAYS_DECODED, asset=METADATA, description="Replays of the day decode (fails hard if none did)."
        )
    ],
    checks=_metadata_checks,
    report=_metadata_report,
    summary_columns=["source_uri", "valid", "invalid_reasons", "base_build", "players"],
    config_class=Sc2MetadataConfig,
)


# ---------------------------------------------------------------------------------------------------------
# Frames


class Sc2FramesConfig(Config):
    backend: Literal["auto", "engine", "tracker"] = Field(
        default="auto",
        description="auto: the engine when SC2PATH holds the replay's exact base build, else tracker events.",
    )
    step_mul: int = Field(default=8, ge=1, description="Game loops between frames.")
    only_valid: bool = Field(default=True, description="Keep only replays sc2_replay_metadata judged valid.")
    parallel: int = Field(
        default=2,
        ge=1,
        description="Processes decoding tracker events; frames are expanded and written in the run's "
        "process. Writing the Parquet (~31 ms a replay, one thread) costs more than decoding (~10 ms), so "
        "a second process adds little on 2 vCPUs (bench/sc2.py, README).",
    )
    max_member_bytes: int = Field(
        default=DEFAULT_MAX_MEMBER_BYTES,
        ge=1,
        description="Refuse a replay with an archive member inflating to more bytes than this.",
    )
    max_game_loops: int = Field(
        default=DEFAULT_MAX_GAME_LOOPS,
        ge=1,
        description="Refuse a replay whose header claims more game loops.",
    )


@daily_multi_asset(
    name="sc2_ground_truth_frames_assets",
    outs={
        FRAMES: AssetOut(
            io_manager_key="warehouse_io_manager",
            kinds={"parquet"},
            is_required=False,
            metadata={ROW_GROUP_ROWS_METADATA: FRAMES_ROW_GROUP_ROWS},
            description="One row per (replay, game loop, player) every ``step_mul`` loops: stats, upgrades, "
            "units died and the units the player owns, from tracker events or from StarCraft II itself "
            "(``backend`` says which).",
        ),
        FAILURES: AssetOut(
            io_manager_key="warehouse_io_manager",
            kinds={"parquet"},
            is_required=False,
            description="StarCraft II replays of the day that produced no frames (decoding, engine crash, "
            "timeout), and why.",
        ),
    },
    ins={
        LISTINGS: AssetIn(key=AssetKey(LISTINGS)),
        METADATA: AssetIn(key=AssetKey(METADATA)),
    },
    check_specs=[
        AssetCheckSpec(
            FRAMES_WRITTEN, asset=FRAMES, description="Every replay chosen for frames produced them."
        )
    ],
    required_resource_keys={"replay_store", "warehouse", "sc2_engine"},
    group_name=SOURCE,
)
def sc2_ground_truth_frames(
    context: AssetExecutionContext,
    config: Sc2FramesConfig,
    raw_replay_listings: dict,
    sc2_replay_metadata: dict,
):
    """One row per (replay, game loop, player) every ``step_mul`` loops, from tracker events or the engine."""
    store = context.resources.replay_store.backend()
    sc2_engine: Sc2Engine = context.resources.sc2_engine
    limits = Sc2Limits(config.max_member_bytes, config.max_game_loops)

    def mine(key: str, stage: Any) -> DayResult:
        lineages = day_lineages(raw_replay_listings[key], READER)
        plan = plan_frames(lineages, sc2_replay_metadata[key], config.backend, config.only_valid, sc2_engine)
        result = mine_day(
            frame_outcomes(store, plan, config.step_mul, config.parallel, sc2_engine, limits),
            day=dt.date.fromisoformat(key),
            source=SOURCE,
            schema=SC2_GROUND_TRUTH_FRAMES,
            stage=stage,
        )
        # The names these counts have always had: ``replays`` chosen for frames or refused, by backend.
        counts = result.report
        counts.update(
            replays=counts["files"],
            replays_failed=counts["files_failed"],
            replays_tracker=counts.pop("files_tracker", 0),
            replays_engine=counts.pop("files_engine", 0),
            files=len(lineages),
            **plan.counts,
        )
        return result

    results = mine_range(context, FRAMES, mine, FRAMES_ROW_GROUP_ROWS)
    yield from source_outputs(context, results, FRAMES, FAILURES)
    for result in results.values():
        for reason in result.reasons[:20]:
            context.log.warning(f"{FRAMES}: no frames from {reason}")
    if FRAMES in context.op_execution_context.selected_output_names:
        chosen = sum(r.report["replays"] for r in results.values())
        failed = sum(r.report["replays_failed"] for r in results.values())
        yield AssetCheckResult(
            asset_key=FRAMES,
            check_name=FRAMES_WRITTEN,
            passed=failed == 0,
            severity=AssetCheckSeverity.ERROR if chosen and failed >= chosen else AssetCheckSeverity.WARN,
            metadata={"replays": chosen, "failed": failed},
        )
