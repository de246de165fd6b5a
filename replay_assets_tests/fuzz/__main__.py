"""``python -m replay_assets_tests.fuzz``: the full fuzz run (``make fuzz``), printing cases per source and
outcome and every distinct failure; exits 1 if there is any."""

from __future__ import annotations

import argparse
import sys
import time

from replay_assets_tests.fuzz.mutations import cases
from replay_assets_tests.fuzz.runner import run_cases, summary
from replay_assets_tests.fuzz.targets import TARGETS


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-seed", type=int, default=100, help="damaged versions of each seed file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target", action="append", choices=sorted(TARGETS), help="default: every target")
    args = parser.parse_args()
    started = time.monotonic()
    results = []
    for name in args.target or sorted(TARGETS):
        target = TARGETS[name]
        results += list(run_cases(cases(target, target.seeds(), args.per_seed, args.seed)))
        print(f"{name}: {sum(r.case.target == name for r in results)} cases", file=sys.stderr, flush=True)
    print(summary(results))
    print(f"{len(results)} cases in {time.monotonic() - started:.0f} s")
    return 1 if any(r.failed for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
