"""What a worker process does with one StarCraft II replay, importable without Dagster.

Why a module of its own: ``decode_in_processes`` spawns workers, and a spawned worker imports the
module of the function it runs. From the asset module that meant importing Dagster in every worker
(~2.5 s before its first replay); from here a worker starts in ~0.2 s.
"""

from __future__ import annotations

from dataclasses import dataclass

from replay_assets.sources.contract import Lineage
from replay_assets.sources.sc2.replay import DEFAULT_LIMITS, Sc2Limits
from replay_assets.sources.sc2.tracker import TrackerState, decode_tracker_state

__all__ = ["ReplayJob", "tracker_state_job"]


@dataclass(frozen=True)
class ReplayJob:
    """One replay's bytes, read and checked by the parent; only plain, picklable data."""

    data: bytes
    source: Lineage
    step_mul: int = 8
    limits: Sc2Limits = DEFAULT_LIMITS


def tracker_state_job(job: ReplayJob) -> TrackerState:
    return decode_tracker_state(job.data, job.source.uri, job.limits)
