"""``sc2_replay_metadata`` and ``sc2_ground_truth_frames``: every StarCraft II replay of the day judged,
then turned into per-player frames by the tracker backend (any machine, any build) or the engine.

Thin by design: ``sources/sc2/replay.py`` decodes and judges, ``sources/sc2/tracker.py`` rebuilds frames
from tracker events, ``sources/sc2/engine_pool.py`` plays replays in StarCraft II. This module picks the
day's files, reads them (checked against the listing), fans them out over processes and streams the
frames, sorted by replay_id, into the IO manager. A replay that fails is a failure row; the day goes on.
"""

import datetime as dt
import heapq
import itertools
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    Config,
    ConfigurableResource,
    MetadataValue,
    Output,
)
from pydantic import Field

from replay_assets.errors import ReplayAssetsError
from replay_assets.landing.backends import LandingBackend
from replay_assets.pipeline.daily import daily_asset, daily_multi_asset
from replay_assets.pipeline.files import (
    FailureLog,
    listed_files,
    read_listed_file,
    source_outputs,
    source_outs,
)
from replay_assets.pipeline.resources import ReplayStore
from replay_assets.sources.sc2.engine_pool import Sc2EnginePool, default_sc2path, engine_can_play
from replay_assets.sources.sc2.jobs import ReplayJob, metadata_job, tracker_state_job
from replay_assets.sources.sc2.replay import (
    ReplaySource,
    ValidityRules,
    invalid_metadata_row,
)
from replay_assets.sources.sc2.schema import SC2_GROUND_TRUTH_FRAMES, SC2_REPLAY_METADATA
from replay_assets.sources.sc2.tracker import state_frames
from replay_assets.util.process_map import decode_in_processes
from replay_assets.warehouse.io_manager import ROW_GROUP_ROWS_METADATA
from replay_assets.warehouse.parquet import PartitionStream

METADATA = "sc2_replay_metadata"
FRAMES = "sc2_ground_truth_frames"
FAILURES = "sc2_replay_failures"
REPLAYS_DECODED = "sc2_replays_decoded"
FRAMES_WRITTEN = "sc2_frames_written"
SOURCE = "sc2"
# ~100 units a frame: 2048 frames keep a row group near 200k units, so a loader reads a few MB at a time.
FRAMES_ROW_GROUP_ROWS = 2048


class Sc2MetadataConfig(Config):
    """The seed's ``valid_replay`` thresholds; null disables a rule."""

    min_game_loops: int | None = 1000
    players: int | None = 2
    min_apm: float | None = 10.0
    min_mmr: int | None = Field(default=1000, description="An unrecorded MMR satisfies the rule.")
    require_exact_decoder: bool = False
    parallel: int = Field(default=2, ge=1, description="Processes decoding replays.")

    def rules(self) -> ValidityRules:
        return ValidityRules(
            min_game_loops=self.min_game_loops,
            players=self.players,
            min_apm=self.min_apm,
            min_mmr=self.min_mmr,
            require_exact_decoder=self.require_exact_decoder,
        )


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


def _source(day: dt.date, row: dict[str, Any]) -> ReplaySource:
    return ReplaySource(day=day, uri=row["uri"], sha256=row["sha256"])


def _unreadable_row(source: ReplaySource, exc: BaseException) -> dict[str, Any]:
    """The metadata row of a listed replay whose bytes could not be read back (gone, changed)."""
    return invalid_metadata_row(source, " ".join(str(exc).split()) or type(exc).__name__)


def _day_metadata(
    backend: LandingBackend, day: dt.date, listing: pa.Table, config: Sc2MetadataConfig
) -> pa.Table:
    rows: list[dict[str, Any]] = []
    rules = config.rules()

    def jobs() -> Iterator[ReplayJob]:
        for row in listed_files(listing, SOURCE):
            try:
                data = read_listed_file(backend, row)
            except (ReplayAssetsError, OSError) as exc:
                rows.append(_unreadable_row(_source(day, row), exc))
                continue
            yield ReplayJob(data, _source(day, row), rules=rules)

    for job, result in decode_in_processes(metadata_job, jobs(), config.parallel):
        if isinstance(result, BaseException):  # a bug or a dead worker, not a bad replay: still a row
            result = _unreadable_row(job.source, result)
        rows.append(result)
    rows.sort(key=lambda r: (r["replay_id"], r["source_uri"]))
    return pa.Table.from_pylist(rows, schema=SC2_REPLAY_METADATA)


def _metadata_report(tables: dict[str, pa.Table]) -> dict[str, Any]:
    rows = [r for t in tables.values() for r in t.select(["valid", "invalid_reasons"]).to_pylist()]
    reasons = Counter(reason.split(":")[0] for r in rows for reason in r["invalid_reasons"] or [])
    return {
        "replays": len(rows),
        "valid": sum(r["valid"] for r in rows),
        "invalid_reasons": MetadataValue.json(dict(reasons.most_common(20))),
    }


@daily_asset(
    name=METADATA,
    group_name=SOURCE,
    ins={"raw_replay_listings": AssetIn()},
    check_specs=[
        AssetCheckSpec(
            REPLAYS_DECODED, asset=METADATA, description="Replays of the day decode (fails hard if none did)."
        )
    ],
)
def sc2_replay_metadata(
    context: AssetExecutionContext,
    config: Sc2MetadataConfig,
    raw_replay_listings: dict[str, pa.Table],
    replay_store: ReplayStore,
):
    """One row per StarCraft II replay of the day: builds and decoder, map, length, time, players (race,
    result, MMR, APM) and ``valid`` with the reasons when not, by the seed's configurable rules."""
    keys = list(context.partition_keys)
    backend = replay_store.backend()
    tables = {
        key: _day_metadata(backend, dt.date.fromisoformat(key), raw_replay_listings[key], config)
        for key in keys
    }
    yield Output(tables if len(keys) > 1 else tables[keys[0]], metadata=_metadata_report(tables))
    undecodable = [
        r["source_uri"]
        for t in tables.values()
        for r in t.select(["source_uri", "base_build", "players"]).to_pylist()
        if r["base_build"] is None or r["players"] is None
    ]
    replays = sum(t.num_rows for t in tables.values())
    yield AssetCheckResult(
        check_name=REPLAYS_DECODED,
        passed=not undecodable,
        severity=AssetCheckSeverity.ERROR
        if replays and len(undecodable) == replays
        else AssetCheckSeverity.WARN,
        metadata={"replays": replays, "undecodable": MetadataValue.json(undecodable[:20])},
    )


# ---------------------------------------------------------------------------------------------------------
# Frames


@dataclass(frozen=True)
class _Chosen:
    """A replay the frames asset will play, with the backend chosen for it."""

    row: dict[str, Any]  # the listing row
    replay_id: str
    backend: str


def _choose(
    files: list[dict[str, Any]],
    metadata: pa.Table,
    config: Sc2FramesConfig,
    engine: Sc2Engine,
    failures: FailureLog,
    counts: Counter[str],
) -> list[_Chosen]:
    """The day's replays to play, once per replay_id, in replay_id order; the rest counted or failed."""
    judged = {r["source_uri"]: r for r in metadata.select(["source_uri", "valid", "base_build"]).to_pylist()}
    chosen: dict[str, _Chosen] = {}
    for row in files:
        meta = judged.get(row["uri"])
        if meta is None:
            failures.add(row, _NotJudged(f"{row['uri']}: not in {METADATA} of this day; re-materialize it"))
            continue
        if config.only_valid and not meta["valid"]:
            counts["skipped_invalid"] += 1
            continue
        if row["sha256"] in chosen:
            counts["duplicates"] += 1
            continue
        build = meta["base_build"]
        can_play = build is not None and engine.can_play(build)
        if config.backend == "engine" and not can_play:
            reason = f"{row['uri']}: SC2PATH {engine.sc2path} has no Base{build} to play it"
            failures.add(row, _NoEngine(reason))
            continue
        use_engine = config.backend == "engine" or (config.backend == "auto" and can_play)
        chosen[row["sha256"]] = _Chosen(row, row["sha256"], "engine" if use_engine else "tracker")
    return sorted(chosen.values(), key=lambda c: c.replay_id)


class _NotJudged(ReplayAssetsError):
    """The listing names a replay the day's metadata does not (metadata older than the listing)."""


class _NoEngine(ReplayAssetsError):
    """backend=engine, but StarCraft II is not installed in the replay's exact build."""


def _read_jobs(
    backend: LandingBackend, day: dt.date, replays: Iterable[_Chosen], step_mul: int, failures: FailureLog
) -> Iterator[tuple[_Chosen, ReplayJob]]:
    for chosen in replays:
        try:
            data = read_listed_file(backend, chosen.row)
        except (ReplayAssetsError, OSError) as exc:
            failures.add(chosen.row, exc)
            continue
        yield chosen, ReplayJob(data, _source(day, chosen.row), step_mul=step_mul)


def _tracker_results(
    jobs: Iterator[tuple[_Chosen, ReplayJob]], parallel: int
) -> Iterator[tuple[_Chosen, list[pa.RecordBatch] | BaseException]]:
    chosen_of: dict[str, _Chosen] = {}

    def only_jobs() -> Iterator[ReplayJob]:
        for chosen, job in jobs:
            chosen_of[job.source.uri] = chosen
            yield job

    # Workers decode (Python, the costly half) and send back a replay's small TrackerState; frames
    # are expanded here, vectorised, where they are written: ~100x less to send than the frames.
    for job, state in decode_in_processes(tracker_state_job, only_jobs(), parallel):
        chosen = chosen_of.pop(job.source.uri)
        if isinstance(state, BaseException):
            yield chosen, state
            continue
        try:
            yield chosen, list(state_frames(state, job.source, job.step_mul))
        except Exception as exc:  # a bug, not a bad replay: this replay fails, the day goes on
            yield chosen, exc


def _engine_results(
    jobs: Iterator[tuple[_Chosen, ReplayJob]], engine: Sc2Engine, step_mul: int
) -> Iterator[tuple[_Chosen, list[pa.RecordBatch] | BaseException]]:
    first = next(jobs, None)
    if first is None:  # no SC2 instance is started for a day without engine replays
        return
    chosen_of: dict[str, _Chosen] = {}

    def items() -> Iterator[tuple[bytes, ReplaySource]]:
        for chosen, job in itertools.chain([first], jobs):
            chosen_of[job.source.uri] = chosen
            yield job.data, job.source

    with engine.pool(step_mul) as pool:
        for source, result in pool.frames(items()):
            yield chosen_of.pop(source.uri), result


def _frames_stream(
    backend: LandingBackend,
    day: dt.date,
    listing: pa.Table,
    metadata: pa.Table,
    config: Sc2FramesConfig,
    engine: Sc2Engine,
    failures: FailureLog,
) -> PartitionStream:
    counts: Counter[str] = Counter()
    files = listed_files(listing, SOURCE)
    replays = _choose(files, metadata, config, engine, failures, counts)
    # Replays meant for frames: those chosen, and those refused while choosing (no engine, not judged).
    counts.update(files=len(files), replays=len(replays) + len(failures.rows))

    def batches() -> Iterator[pa.RecordBatch]:
        by_backend = {
            name: _read_jobs(
                backend, day, [c for c in replays if c.backend == name], config.step_mul, failures
            )
            for name in ("tracker", "engine")
        }
        streams = [
            _tracker_results(by_backend["tracker"], config.parallel),
            _engine_results(by_backend["engine"], engine, config.step_mul),
        ]
        # Both streams keep replay_id order, so merging them keeps the partition sorted.
        for chosen, result in heapq.merge(*streams, key=lambda pair: pair[0].replay_id):
            if isinstance(result, BaseException):
                failures.add(chosen.row, result)
                continue
            counts[f"replays_{chosen.backend}"] += 1
            counts["rows"] += sum(b.num_rows for b in result)
            yield from result

    def report() -> dict[str, Any]:
        return {**counts, "replays_failed": len(failures.rows), "failures": failures.summary()}

    return PartitionStream(pa.RecordBatchReader.from_batches(SC2_GROUND_TRUTH_FRAMES, batches()), report)


@daily_multi_asset(
    outs=source_outs(
        FRAMES,
        FAILURES,
        SOURCE,
        "StarCraft II replays of the day that produced no frames (decoding, engine crash, timeout), why.",
        rows_metadata={ROW_GROUP_ROWS_METADATA: FRAMES_ROW_GROUP_ROWS},
    ),
    ins={
        "raw_replay_listings": AssetIn(key=AssetKey("raw_replay_listings")),
        "sc2_replay_metadata": AssetIn(key=AssetKey(METADATA)),
    },
    check_specs=[
        AssetCheckSpec(
            FRAMES_WRITTEN, asset=FRAMES, description="Every replay chosen for frames produced them."
        )
    ],
    name="sc2_ground_truth_frames_assets",
)
def sc2_ground_truth_frames(
    context: AssetExecutionContext,
    config: Sc2FramesConfig,
    raw_replay_listings: dict[str, pa.Table],
    sc2_replay_metadata: dict[str, pa.Table],
    replay_store: ReplayStore,
    sc2_engine: Sc2Engine,
):
    """One row per (replay, game loop, player) every ``step_mul`` loops: stats, upgrades, units died and
    the units the player owns, from tracker events or from StarCraft II itself (``backend`` says which)."""
    keys = list(context.partition_keys)
    backend = replay_store.backend()
    failures = {key: FailureLog(dt.date.fromisoformat(key), SOURCE) for key in keys}
    streams = {
        key: _frames_stream(
            backend,
            failures[key].day,
            raw_replay_listings[key],
            sc2_replay_metadata[key],
            config,
            sc2_engine,
            failures[key],
        )
        for key in keys
    }
    yield from source_outputs(context, streams, failures, FRAMES, FAILURES)
    for log in failures.values():
        for reason in log.summary():
            context.log.warning(f"{FRAMES}: no frames from {reason}")
    if FRAMES in context.op_execution_context.selected_output_names:
        # The IO manager has written every stream by now, so their reports are complete.
        reports = [stream.report() for stream in streams.values()]
        chosen = sum(r["replays"] for r in reports)
        failed = sum(r["replays_failed"] for r in reports)
        yield AssetCheckResult(
            asset_key=FRAMES,
            check_name=FRAMES_WRITTEN,
            passed=failed == 0,
            severity=AssetCheckSeverity.ERROR if chosen and failed >= chosen else AssetCheckSeverity.WARN,
            metadata={"replays": chosen, "failed": failed},
        )
