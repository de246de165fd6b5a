"""The ordered, bounded process map: order, per-item exceptions, inline and spawned workers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from replay_assets.util.process_map import decode_in_processes


def square_or_fail(n: int) -> int:
    if n % 5 == 3:
        raise ValueError(f"item {n} is bad")
    return n * n


def die_on_seven(n: int) -> int:
    if n == 7:
        os._exit(1)  # a worker killed mid-item, like the OOM killer would
    return n


@pytest.mark.parametrize("parallel", [1, 2])
def test_order_and_exceptions_as_results(parallel: int) -> None:
    out = list(decode_in_processes(square_or_fail, range(20), parallel=parallel))
    assert [item for item, _ in out] == list(range(20))
    for item, result in out:
        if item % 5 == 3:
            assert isinstance(result, ValueError) and str(result) == f"item {item} is bad"
        else:
            assert result == item * item


def test_items_are_pulled_lazily() -> None:
    pulled = []

    def items():
        for n in range(50):
            pulled.append(n)
            yield n

    stream = decode_in_processes(square_or_fail, items(), parallel=2, max_in_flight=3)
    next(stream)
    assert len(pulled) <= 4
    assert len(list(stream)) == 49


def test_a_dead_worker_fails_one_item_not_the_rest() -> None:
    out = dict(decode_in_processes(die_on_seven, range(12), parallel=2, max_in_flight=2))
    assert sorted(out) == list(range(12))
    broken = [item for item, result in out.items() if isinstance(result, BaseException)]
    assert 7 in broken and len(broken) <= 2
    assert all(out[n] == n for n in range(12) if n not in broken)


def test_parallel_must_be_positive() -> None:
    with pytest.raises(ValueError, match="parallel"):
        list(decode_in_processes(square_or_fail, [1], parallel=0))


MAIN_SCRIPT = """
import math, sys
with open(sys.argv[1], "a") as marker:
    marker.write("imported\\n")  # the line a worker would add if it ran this script again
if __name__ == "__main__":
    from replay_assets.util.process_map import decode_in_processes
    print([r for _, r in decode_in_processes(math.sqrt, [1.0, 4.0, 9.0], parallel=2)])
"""


def test_workers_do_not_rerun_the_parents_main_script(tmp_path: Path) -> None:
    """Under the dagster command the main script imports Dagster: workers must not pay for it again."""
    script, marker = tmp_path / "main_script.py", tmp_path / "imports.txt"
    script.write_text(MAIN_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), str(marker)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[1.0, 2.0, 3.0]"
    assert marker.read_text() == "imported\n"
