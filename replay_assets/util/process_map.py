"""An ordered, bounded map over worker processes: decode a day's replays on every core.

Why not ``ProcessPoolExecutor.map``: it submits every item at once (a day's bytes would all sit in
the queue) and the first exception ends the iteration. Here at most ``max_in_flight`` items are
submitted at a time, results come back in input order, and an exception raised by one item is that
item's result. Workers start with ``spawn`` (safe beside threads, e.g. in a Dagster run), so
``function`` must be a picklable top-level function; ``parallel=1`` runs inline, in this process.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import sys
import types
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

__all__ = ["decode_in_processes", "main_module_hidden"]

T = TypeVar("T")
R = TypeVar("R")


def decode_in_processes(
    function: Callable[[T], R], items: Iterable[T], parallel: int, max_in_flight: int | None = None
) -> Iterator[tuple[T, R | BaseException]]:
    """``(item, function(item) or the exception it raised)`` for every item, in input order.

    ``max_in_flight`` (default ``4 * parallel``) bounds the items submitted and not yet yielded, so
    memory follows the workers, not the length of ``items``. A worker that dies (e.g. killed for
    memory) breaks the pool: the oldest pending item comes back as ``BrokenProcessPool`` and the other
    pending items are resubmitted to a fresh pool, so every crash costs at least one item and never
    stops the rest.
    """
    if parallel < 1:
        raise ValueError(f"parallel must be >= 1, got {parallel}")
    if parallel == 1:
        for item in items:
            try:
                result: R | BaseException = function(item)
            except Exception as exc:
                result = exc
            yield item, result
        return
    # Deep enough that workers keep going while the caller works on a result: 2 workers with 4 in
    # flight stalled the frames pipeline (55 replays/s), with 8 it ran at 80. An item is a replay's bytes.
    limit = max(max_in_flight or 4 * parallel, 1)
    context = multiprocessing.get_context("spawn")
    pending: deque[tuple[T, Future[R]]] = deque()
    pool = ProcessPoolExecutor(max_workers=parallel, mp_context=context)
    try:
        for item in items:
            while len(pending) >= limit:
                pool = yield from _yield_first(pending, pool, function, parallel, context)
            pending.append((item, _submit(pool, function, item)))
        while pending:
            pool = yield from _yield_first(pending, pool, function, parallel, context)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _submit(pool: ProcessPoolExecutor, function: Callable[[T], R], item: T) -> Future[R]:
    try:
        with main_module_hidden(function):  # a submit may start a worker
            return pool.submit(function, item)
    except BrokenProcessPool as exc:
        failed: Future[R] = Future()
        failed.set_exception(exc)
        return failed


@contextlib.contextmanager
def main_module_hidden(function: Callable[..., Any]) -> Iterator[None]:
    """Start workers without the parent's ``__main__``: a spawned worker runs the parent's main script
    again before its first item, and under the ``dagster`` command that script imports Dagster (~2.5 s
    of CPU a worker, each run). Kept when ``function`` itself lives in ``__main__`` (a script's own)."""
    main = sys.modules["__main__"]
    if function.__module__ == "__main__":
        yield
        return
    sys.modules["__main__"] = types.ModuleType("__main__")  # no __file__, no __spec__: nothing to import
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def _yield_first(
    pending: deque[tuple[T, Future[R]]],
    pool: ProcessPoolExecutor,
    function: Callable[[T], R],
    parallel: int,
    context: multiprocessing.context.SpawnContext,
) -> Generator[tuple[T, R | BaseException], None, ProcessPoolExecutor]:
    """Yield the oldest item's outcome; replace a broken pool (its queued items are resubmitted)."""
    item, future = pending.popleft()
    try:
        result: R | BaseException = future.result()
    except Exception as exc:
        result = exc
    yield item, result
    if isinstance(result, BrokenProcessPool):
        pool.shutdown(wait=True, cancel_futures=True)
        fresh = ProcessPoolExecutor(max_workers=parallel, mp_context=context)
        for _ in range(len(pending)):
            queued_item, queued = pending.popleft()
            if queued.done() and not isinstance(queued.exception(), BrokenProcessPool):
                pending.append((queued_item, queued))
            else:
                pending.append((queued_item, _submit(fresh, function, queued_item)))
        return fresh
    return pool
