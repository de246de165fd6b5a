"""Which replays of a day become frames, with which backend, and their outcomes in replay_id order.

SC2 frames do not fit a single per-file reader: each replay goes to one of two backends (tracker events
decoded in worker processes, or StarCraft II itself through the engine pool), chosen from the day's
``sc2_replay_metadata``. This module is that adapter: it turns a day's listed replays into the pipeline's
``FileOutcome`` stream (one per replay, in replay_id order, each labelled with its backend), so the
pipeline's ``mine_day`` stages the rows and records the failures as for every other source. No Dagster.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa

from replay_assets.errors import ReplayAssetsError
from replay_assets.landing.backends import LandingBackend, LandingUnavailableError
from replay_assets.pipeline.files import FileOutcome, read_listed_file
from replay_assets.sources.contract import Lineage
from replay_assets.sources.sc2.jobs import ReplayJob, tracker_state_job
from replay_assets.sources.sc2.replay import DEFAULT_LIMITS, Sc2Limits
from replay_assets.sources.sc2.tracker import state_frames
from replay_assets.util.process_map import decode_in_processes

__all__ = ["Engine", "FramesPlan", "frame_outcomes", "plan_frames"]

METADATA = "sc2_replay_metadata"
BACKENDS = ("tracker", "engine")


class Engine(Protocol):
    """What choosing and playing need of the engine resource."""

    sc2path: str

    def can_play(self, base_build: int) -> bool: ...
    def pool(self, step_mul: int | None = None) -> Any: ...


class NotJudged(ReplayAssetsError):
    """The listing names a replay the day's metadata does not (metadata older than the listing)."""


class NoEngine(ReplayAssetsError):
    """backend=engine, but StarCraft II is not installed in the replay's exact build."""


@dataclass(frozen=True)
class FramesPlan:
    """The day's replays to play (once per replay_id, in replay_id order, with their backend), the ones
    refused while choosing (their outcomes), and the counts of those left out on purpose."""

    chosen: list[tuple[Lineage, str]]
    refused: list[FileOutcome]
    counts: Counter[str]


def plan_frames(
    lineages: Sequence[Lineage], metadata: pa.Table, backend: str, only_valid: bool, engine: Engine
) -> FramesPlan:
    judged = {r["source_uri"]: r for r in metadata.select(["source_uri", "valid", "base_build"]).to_pylist()}
    chosen: dict[str, tuple[Lineage, str]] = {}
    refused: list[FileOutcome] = []
    counts: Counter[str] = Counter()
    for lineage in lineages:
        meta = judged.get(lineage.uri)
        if meta is None:
            reason = f"{lineage.uri}: not in {METADATA} of this day; re-materialize it"
            refused.append(FileOutcome(lineage, error=NotJudged(reason)))
            continue
        if only_valid and not meta["valid"]:
            counts["skipped_invalid"] += 1
            continue
        if lineage.sha256 in chosen:
            counts["duplicates"] += 1
            continue
        build = meta["base_build"]
        can_play = build is not None and engine.can_play(build)
        if backend == "engine" and not can_play:
            reason = f"{lineage.uri}: SC2PATH {engine.sc2path} has no Base{build} to play it"
            refused.append(FileOutcome(lineage, error=NoEngine(reason)))
            continue
        use_engine = backend == "engine" or (backend == "auto" and can_play)
        chosen[lineage.sha256] = (lineage, "engine" if use_engine else "tracker")
    return FramesPlan(sorted(chosen.values(), key=lambda c: c[0].sha256), refused, counts)


def frame_outcomes(
    store: LandingBackend,
    plan: FramesPlan,
    step_mul: int,
    parallel: int,
    engine: Engine,
    limits: Sc2Limits = DEFAULT_LIMITS,
) -> Iterator[FileOutcome]:
    """The replays refused while choosing, then every chosen replay's frames (or failure) in replay_id
    order. Both backends keep replay_id order, so merging them keeps the partition sorted.
    ``limits`` bound what the tracker backend decodes of each replay."""
    by_backend = {
        name: _read_jobs(store, [lin for lin, chosen in plan.chosen if chosen == name], step_mul, limits)
        for name in BACKENDS
    }
    streams = [
        _tracker_outcomes(by_backend["tracker"], parallel),
        _engine_outcomes(by_backend["engine"], engine, step_mul),
    ]
    yield from plan.refused
    yield from heapq.merge(*streams, key=lambda outcome: outcome.lineage.sha256)


def _read_jobs(
    store: LandingBackend, lineages: Iterable[Lineage], step_mul: int, limits: Sc2Limits
) -> Iterator[ReplayJob | FileOutcome]:
    """Each replay's bytes as a worker job, or the outcome of a replay that could not be read back."""
    for lineage in lineages:
        try:
            yield ReplayJob(read_listed_file(store, lineage), lineage, step_mul, limits)
        except LandingUnavailableError:
            raise
        except Exception as exc:
            yield FileOutcome(lineage, error=exc)


def _playable(jobs: Iterator[ReplayJob | FileOutcome], unread: list[FileOutcome]) -> Iterator[ReplayJob]:
    """The jobs; replays that could not be read go to ``unread``, to be yielded in their place."""
    for job in jobs:
        if isinstance(job, FileOutcome):
            unread.append(job)
        else:
            yield job


def _tracker_outcomes(jobs: Iterator[ReplayJob | FileOutcome], parallel: int) -> Iterator[FileOutcome]:
    unread: list[FileOutcome] = []
    # Workers decode (Python, the costly half) and send back a replay's small TrackerState; frames
    # are expanded here, vectorised, where they are written: ~100x less to send than the frames.
    for job, state in decode_in_processes(tracker_state_job, _playable(jobs, unread), parallel):
        yield from _sorted_before(unread, job.source.sha256)
        if isinstance(state, BaseException):
            yield FileOutcome(job.source, error=state)
            continue
        try:
            yield FileOutcome(
                job.source, list(state_frames(state, job.source, job.step_mul)), label="tracker"
            )
        except Exception as exc:  # a bug, not a bad replay: this replay fails, the day goes on
            yield FileOutcome(job.source, error=exc)
    yield from _sorted_before(unread, None)


def _engine_outcomes(
    jobs: Iterator[ReplayJob | FileOutcome], engine: Engine, step_mul: int
) -> Iterator[FileOutcome]:
    unread: list[FileOutcome] = []
    playable = _playable(jobs, unread)
    first = next(playable, None)
    if first is not None:  # no SC2 instance is started for a day without engine replays
        items = ((job.data, job.source) for job in itertools.chain([first], playable))
        with engine.pool(step_mul) as pool:
            for source, result in pool.frames(items):
                yield from _sorted_before(unread, source.sha256)
                if isinstance(result, BaseException):
                    yield FileOutcome(source, error=result)
                else:
                    yield FileOutcome(source, result, label="engine")
    yield from _sorted_before(unread, None)


def _sorted_before(unread: list[FileOutcome], replay_id: str | None) -> Iterator[FileOutcome]:
    """The unreadable replays that sort before ``replay_id`` (all of them for None), keeping the order."""
    while unread and (replay_id is None or unread[0].lineage.sha256 < replay_id):
        yield unread.pop(0)
