"""Running fuzz cases in a child process under an address-space limit and a wall clock.

One child serves many cases (imports once); a case that overruns the clock or kills the child is
recorded as such and a fresh child takes the next. Outcomes: ``ok``, ``invalid`` (a row with a reason),
``clean`` (a ``FileFormatError`` whose one-line message names the file); anything else is a failure:
``crash`` (another exception), ``unclear`` (a FileFormatError not naming the file or not one line),
``memory`` (the limit hit), ``timeout``, ``died``.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import time
import traceback
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from replay_assets_tests.fuzz.mutations import Case

GOOD = ("ok", "invalid", "clean")
PACKAGE = str(Path(__file__).resolve().parents[2] / "replay_assets")


@dataclass(frozen=True)
class Result:
    case: Case
    outcome: str
    detail: str = ""  # for a failure: exception type, message and where it was raised
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.outcome not in GOOD

    @property
    def signature(self) -> str:
        """What makes two failures the same bug: target, outcome, exception type and place."""
        kind, _, rest = self.detail.partition(": ")
        where = rest.rsplit(" at ", 1)[-1] if " at " in rest else ""
        return f"{self.case.target} {self.outcome} {kind} {where}"


def _where(exc: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith(PACKAGE)]
    frame = frames[-1] if frames else traceback.extract_tb(exc.__traceback__)[-1]
    return f"{Path(frame.filename).name}:{frame.lineno}"


def classify(target_name: str, name: str, data: bytes) -> tuple[str, str]:
    """Run one case here and now; what the child does for each case."""
    from replay_assets.errors import FileFormatError
    from replay_assets_tests.fuzz.targets import TARGETS, lineage

    target = TARGETS[target_name]
    try:
        return target.run(data, lineage(target.source, name, data)), ""
    except FileFormatError as exc:
        message = str(exc)
        if name in message and "\n" not in message:
            return "clean", message[:300]
        return "unclear", f"{type(exc).__name__}: {message[:300]} at {_where(exc)}"
    except MemoryError as exc:
        return "memory", f"MemoryError: over the address-space limit at {_where(exc)}"
    except Exception as exc:
        return "crash", f"{type(exc).__name__}: {str(exc)[:300]} at {_where(exc)}"


def _serve(connection: Any, memory_bytes: int) -> None:
    import replay_assets.sources.metta.read
    import replay_assets.sources.sc2.tracker
    import replay_assets.sources.tmrl.read
    import replay_assets.sources.townlet.read  # noqa: F401
    from replay_assets_tests.fuzz import targets  # noqa: F401  (imports done before the limit is set)

    with open("/proc/self/status") as status:
        size = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (size + memory_bytes, size + memory_bytes))
    connection.send("ready")
    while (request := connection.recv()) is not None:
        connection.send(classify(*request))


class _Child:
    def __init__(self, memory_bytes: int) -> None:
        context = mp.get_context("spawn")
        self.connection, theirs = context.Pipe()
        self.process = context.Process(target=_serve, args=(theirs, memory_bytes), daemon=True)
        self.process.start()
        theirs.close()
        if not self.connection.poll(120) or self.connection.recv() != "ready":
            raise RuntimeError("the fuzz child did not start")

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join()


def run_cases(
    cases: Iterable[Case], *, timeout_s: float = 30.0, memory_bytes: int = 3 << 30
) -> Iterator[Result]:
    """Each case's result, in order. ``memory_bytes``: address space a case may add to the child's."""
    child = _Child(memory_bytes)
    try:
        for case in cases:
            started = time.monotonic()
            try:
                child.connection.send((case.target, case.name, case.data))
                if child.connection.poll(timeout_s):
                    outcome, detail = child.connection.recv()
                else:
                    outcome, detail = "timeout", f"Timeout: no answer in {timeout_s:.0f} s"
            except (EOFError, BrokenPipeError, ConnectionResetError):
                child.process.join(5)
                outcome, detail = "died", f"Died: exit code {child.process.exitcode}"
            yield Result(case, outcome, detail, time.monotonic() - started)
            if outcome in ("timeout", "died", "memory"):
                child.stop()
                child = _Child(memory_bytes)
    finally:
        child.stop()


def summary(results: list[Result]) -> str:
    """Cases per target and outcome, then each distinct failure once with a case that shows it."""
    counts: Counter[tuple[str, str]] = Counter((r.case.target, r.outcome) for r in results)
    targets = sorted({r.case.target for r in results})
    outcomes = ["ok", "invalid", "clean", "crash", "unclear", "memory", "timeout", "died"]
    lines = [f"{'target':15}" + "".join(f"{o:>9}" for o in outcomes)]
    lines += [f"{t:15}" + "".join(f"{counts[(t, o)]:>9}" for o in outcomes) for t in targets]
    failures: dict[str, Result] = {}
    for result in results:
        if result.failed:
            failures.setdefault(result.signature, result)
    lines.append(f"{len(failures)} distinct failure(s)")
    for signature, result in sorted(failures.items()):
        lines.append(
            f"  {signature}\n    {result.detail}\n    case: {result.case.seed} {result.case.mutation}"
        )
    return "\n".join(lines)
