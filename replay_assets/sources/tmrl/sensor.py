"""``player_runs_sensor``: online injection of TMRL player runs while a trainer is running.

Each tick, in this order (the original injector's defects in brackets):
1. runs requested earlier that succeeded: their files are renamed ``.pkl.imported`` now, only after
   the samples are stored (CONSUME_ON_READ) [it renamed before storing: a crash lost the demo];
   failed runs leave their file in place and are logged;
2. files already seen (same path, size and modification time) are skipped *before* the cap
   [it cut the list first, so one stuck file blocked all others forever];
3. at most MAX_FILES_PER_UPDATE new files are validated with the restricted unpickler [it unpickled
   anything]; a file that fails is renamed ``.pkl.rejected`` with a ``.reason`` file beside it, so it
   never blocks the queue and is never retried silently;
4. one run per good file, for the day the file belongs to, with a run key on path, size and sha256.
"""

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from dagster import (
    AssetKey,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from replay_assets.landing.backends import LandingBackend, LandingFile
from replay_assets.landing.days import day_of_file
from replay_assets.partitions import DAILY
from replay_assets.pipeline.resources import ReplayStore
from replay_assets.settings import PlayerRunsSettings
from replay_assets.sources.tmrl.read import TmrlRunError, load_run

RUN_SUFFIX = ".pkl"
IMPORTED_SUFFIX = ".imported"
REJECTED_SUFFIX = ".rejected"
PLAYER_RUN_TAG = "replay_assets/player_run"
TARGET = [AssetKey("raw_replay_listings"), AssetKey("tmrl_demo_buffers"), AssetKey("tmrl_run_failures")]


@dataclass
class InjectionCursor:
    """What the sensor knows between ticks: files seen (path -> size:mtime) and runs not yet finished."""

    seen: dict[str, str] = field(default_factory=dict)
    pending: dict[str, str] = field(default_factory=dict)  # path -> run key
    failed: dict[str, int] = field(default_factory=dict)  # path -> failed runs (a retry needs a new key)

    @classmethod
    def parse(cls, text: str | None) -> "InjectionCursor":
        data = json.loads(text) if text else {}
        return cls(seen=data.get("seen", {}), pending=data.get("pending", {}), failed=data.get("failed", {}))

    def dump(self) -> str:
        state = {"seen": self.seen, "pending": self.pending, "failed": self.failed}
        return json.dumps(state, sort_keys=True, separators=(",", ":"))


def _stamp(file: LandingFile) -> str:
    return f"{file.size_bytes}:{file.modified_at.isoformat()}"


def _finish_pending(
    context: SensorEvaluationContext, backend: LandingBackend, cursor: InjectionCursor, consume: bool
) -> None:
    """Rename the files whose runs succeeded; forget (with a warning) those whose runs failed."""
    for path, run_key in list(cursor.pending.items()):
        runs = context.instance.get_runs(RunsFilter(tags={"dagster/run_key": run_key}), limit=1)
        if not runs or not runs[0].is_finished:
            continue
        del cursor.pending[path]
        if runs[0].status == DagsterRunStatus.SUCCESS:
            cursor.failed.pop(path, None)
            if consume:
                backend.rename(path, path + IMPORTED_SUFFIX)
                cursor.seen.pop(path, None)
            context.log.info(f"player run {path} stored by run {runs[0].run_id}")
        else:
            cursor.failed[path] = cursor.failed.get(path, 0) + 1
            context.log.warning(
                f"player run {path}: run {runs[0].run_id} ended {runs[0].status.value}; the file stays. "
                "Fix the cause, then touch the file to inject it again."
            )


def _reject(
    context: SensorEvaluationContext, backend: LandingBackend, file: LandingFile, exc: Exception
) -> None:
    backend.rename(file.relative_path, file.relative_path + REJECTED_SUFFIX)
    backend.write_bytes(file.relative_path + ".reason", f"{type(exc).__name__}: {exc}\n".encode())
    context.log.warning(f"player run {file.relative_path} rejected: {exc}")


def _request(
    context: SensorEvaluationContext, backend: LandingBackend, file: LandingFile, attempt: int
) -> RunRequest | None:
    """A run for a valid file's day; None when the file was rejected."""
    with backend.open(file.relative_path) as handle:
        data = handle.read()
    try:
        load_run(data, file.uri)
    except TmrlRunError as exc:
        _reject(context, backend, file, exc)
        return None
    day = day_of_file(file)[0].isoformat()
    run_key = f"{file.relative_path}:{file.size_bytes}:{hashlib.sha256(data).hexdigest()[:16]}"
    if attempt:  # Dagster never reruns a run key: a retry after a failed run needs its own
        run_key += f":retry{attempt}"
    return RunRequest(run_key=run_key, partition_key=day, tags={PLAYER_RUN_TAG: file.relative_path})


def evaluate_tick(
    context: SensorEvaluationContext, backend: LandingBackend, settings: PlayerRunsSettings
) -> SensorResult | SkipReason:
    """One tick of the sensor, apart from Dagster's decorator so tests can drive it with any backend."""
    source = settings.SOURCE_PATH.strip("/")
    exists = backend.folder_exists(source)
    if context.cursor is None or not exists:
        context.log.info(f"SOURCE_PATH={backend.uri}/{source} (exists={exists})")
    if not exists:
        return SkipReason(f"SOURCE_PATH {backend.uri}/{source} does not exist")
    cursor = InjectionCursor.parse(context.cursor)
    _finish_pending(context, backend, cursor, settings.CONSUME_ON_READ)
    files = [f for f in backend.list_files(source) if f.relative_path.endswith(RUN_SUFFIX)]
    present = {f.relative_path for f in files}
    cursor.seen = {path: stamp for path, stamp in cursor.seen.items() if path in present}
    new = [
        f
        for f in files
        if f.relative_path not in cursor.pending and cursor.seen.get(f.relative_path) != _stamp(f)
    ]
    last_day = DAILY.get_last_partition_key()
    ready = [f for f in new if day_of_file(f)[0].isoformat() <= last_day]
    if len(ready) < len(new):
        context.log.info(
            f"{len(new) - len(ready)} player runs belong to a day that is not a partition yet (today); "
            "set REPLAY_PARTITIONS_INCLUDE_TODAY=1 to inject runs the day they are recorded"
        )
    requests = []
    for file in ready[: settings.MAX_FILES_PER_UPDATE]:  # capped only after skipping what was seen
        request = _request(context, backend, file, cursor.failed.get(file.relative_path, 0))
        if request is None:
            continue
        cursor.seen[file.relative_path] = _stamp(file)
        cursor.pending[file.relative_path] = request.run_key
        requests.append(request)
    return SensorResult(run_requests=requests, cursor=cursor.dump())


def _default_status(settings: PlayerRunsSettings) -> DefaultSensorStatus:
    return DefaultSensorStatus.RUNNING if settings.ONLINE_INJECTION else DefaultSensorStatus.STOPPED


@sensor(
    name="player_runs_sensor",
    asset_selection=TARGET,
    minimum_interval_seconds=30,
    # Read at import, through settings: Dagster takes the default status when the sensor is defined, so
    # ONLINE_INJECTION must be known when this module is imported.
    default_status=_default_status(PlayerRunsSettings.from_env()),
    description="Injects new TMRL player runs (PLAYER_RUNS settings) into tmrl_demo_buffers.",
)
def player_runs_sensor(context: SensorEvaluationContext, replay_store: ReplayStore) -> Any:
    # Read again each tick (through settings), so an edit of REPLAY_TMRL_CONFIG's file applies from the next.
    return evaluate_tick(context, replay_store.backend(), PlayerRunsSettings.from_env())
