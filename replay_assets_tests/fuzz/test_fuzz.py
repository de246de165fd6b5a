"""The fixed-seed slice of the fuzz suite that ``make test`` runs (``make fuzz`` runs the full suite):
damaged and hostile files of every source, each in a child process under an address-space limit and a
wall clock, must end as ok, a clean ``FileFormatError`` naming the file, or an invalid row with a reason."""

from __future__ import annotations

import pytest

from replay_assets_tests.fuzz.mutations import Case, cases
from replay_assets_tests.fuzz.runner import Result, run_cases, summary
from replay_assets_tests.fuzz.targets import TARGETS

PER_SEED = 4  # damaged versions of each seed file in this slice (make fuzz: 100)


@pytest.mark.slow  # ~30 s in all: make test runs it, make test-fast leaves it out
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_every_damaged_or_hostile_file_is_ok_clean_or_invalid(name: str, shared_data) -> None:
    target = TARGETS[name]
    results = list(run_cases(cases(target, target.seeds(), PER_SEED, seed=0)))
    assert any(r.case.mutation == "hostile" for r in results), "the slice must include the bombs"
    refused = {r.outcome for r in results} & {"clean", "invalid"}
    assert refused, "no case was refused: do the mutations change anything?"
    assert not [r for r in results if r.failed], summary(results)


def test_the_runner_reports_what_is_not_clean() -> None:
    """The harness itself: a crash, a timeout and a memory blow-up are failures, with where they happened."""
    from replay_assets_tests.fuzz import runner

    assert runner.classify("metta", "x.json", b"{}")[0] == "clean"
    bad = [
        Case("metta", "-", "not bytes", "x.json", None),  # type: ignore[arg-type]
    ]
    (result,) = run_cases(bad)
    assert isinstance(result, Result) and result.failed and result.outcome == "crash"
    assert "TypeError" in result.detail and " at " in result.detail


# Cases full runs (make fuzz --seed S --per-seed N) found failing once, fixed since: replayed here.
REGRESSIONS = [
    # describe() on an s2protocol error whose message cannot be formatted (IndexError in __str__)
    ("sc2_metadata", 1, 200, "sample.SC2Replay", "edit user_data:garbage@4+201"),
    ("sc2_frames", 1, 200, "anonymized_4.1.2.60604_missing_files.SC2Replay", "edit user_data:flip@4,69,56"),
    # a damaged tracker event without m_playerId (KeyError in the walk)
    ("sc2_frames", 1, 200, "sample.SC2Replay", "edit members/replay.tracker.events:garbage@7205+209"),
]


@pytest.mark.parametrize(("name", "seed", "per_seed", "file", "mutation"), REGRESSIONS)
def test_cases_that_once_failed(
    name: str, seed: int, per_seed: int, file: str, mutation: str, shared_data
) -> None:
    target = TARGETS[name]
    seeds = [s for s in target.seeds() if s.name == file]
    (case,) = [c for c in cases(target, seeds, per_seed, seed) if c.mutation == mutation]
    (result,) = run_cases([case])
    assert not result.failed, result.detail
