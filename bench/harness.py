"""What every benchmark in bench/ shares: interleaved timings, verdicts and peak-RSS readings.

Run the benchmarks as scripts (``.venv/bin/python bench/x.py``): their folder is then on ``sys.path``, so
``from harness import ...`` finds this module.
"""

from __future__ import annotations

import gc
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

MIB = 1024 * 1024


@dataclass(frozen=True)
class Timing:
    seconds: tuple[float, ...]
    samples: int

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def rate(self) -> float:
        return self.samples / self.median

    def spread(self) -> str:
        return f"[{min(self.seconds):.2f}..{max(self.seconds):.2f}]"


@dataclass(frozen=True)
class Case:
    """``run`` returns the samples it produced; ``warmup`` pays first-use costs (imports, allocator)."""

    run: Callable[[], int]
    warmup: Callable[[], object]


def quiesce() -> None:
    """Collect, then freeze the survivors, so a timed run's GC scans only the objects it makes itself.

    Otherwise a case pays for scanning whatever this process already holds (torch, Dagster, an
    instance, an earlier case's leftovers): on dinky7 that turned a 35 ms ``json.loads`` into 250 ms.
    A fresh mining or training process would not carry that heap; the baseline must not either.
    """
    gc.collect()
    gc.freeze()


def time_interleaved(
    cases: dict[str, Case],
    repeats: int,
    *,
    before_each: Callable[[], object] | None = None,
    slow_case: tuple[str, float] | None = None,
) -> dict[str, Timing]:
    """Each case once per round, ``repeats`` rounds, after one untimed warm-up per case.

    A warm-up may be smaller than the timed run: it only has to pay the one-time costs, and the
    baseline at full size would cost as much as a whole round. ``before_each`` runs untimed before
    every timed call (e.g. ``os.sync``, so no case pays for another's dirty pages). ``slow_case`` =
    (name, seconds): that case runs only in the first and last rounds once its first run took longer
    than that; two samples still show how much one run can vary.
    """
    for case in cases.values():
        case.warmup()
    seconds: dict[str, list[float]] = {name: [] for name in cases}
    samples: dict[str, int] = {}
    for round_ in range(repeats):
        for name, case in cases.items():
            middle_round = 0 < round_ < repeats - 1
            if middle_round and slow_case and name == slow_case[0] and seconds[name][0] > slow_case[1]:
                continue
            if before_each is not None:
                before_each()
            quiesce()
            started = time.perf_counter()
            samples[name] = case.run()
            seconds[name].append(time.perf_counter() - started)
    return {name: Timing(tuple(values), samples[name]) for name, values in seconds.items()}


def timing_row(label: str, timing: Timing, baseline: Timing | None) -> str:
    ratio = f"{timing.rate / baseline.rate:8.1f}x" if baseline else ""
    return (
        f"   {label:<52} {timing.samples:>9,} {timing.median:7.2f}s {timing.spread():<14}"
        f" {timing.rate:>11,.0f}/s {ratio}"
    )


def timing_header(first: str) -> str:
    return f"   {first:<52} {'samples':>9} {'median':>8} {'[min..max]':<14} {'samples/s':>13} vs baseline"


def verdict(ok: bool) -> str:
    return "OK" if ok else "MISSED"


def maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MIB  # Linux reports KiB


def vmhwm_mib() -> float:
    """The kernel's per-address-space peak RSS: a cross-check on ``ru_maxrss``."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / MIB
    return float("nan")


@dataclass(frozen=True)
class Peak:
    baseline: float
    peak: float
    hwm: float
    rows: int

    @property
    def growth(self) -> float:
        return self.peak - self.baseline

    def cell(self) -> str:
        return f"{self.peak:7.0f} MiB (+{self.growth:.0f})"


def warn_if_rss_disagrees(peaks: Sequence[Peak]) -> None:
    worst = max(abs(p.peak - p.hwm) / p.hwm for p in peaks)
    if worst > 0.05:
        print(f"   WARNING: ru_maxrss and VmHWM differ by up to {worst:.0%}: a peak above may be inherited")
    else:
        print(f"   ru_maxrss agrees with VmHWM within {worst:.1%} in every child")
