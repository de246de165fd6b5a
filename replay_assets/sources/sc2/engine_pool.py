"""A pool of worker processes, each owning one StarCraft II instance, that turns replays into frame batches.

The game is the fragile part: it leaks memory over hundreds of replays, crashes on some, hangs on others. So
each worker is its own process group (worker + game) that the pool can kill outright on a timeout, a crash
costs one replay and the next replay gets a fresh instance, and instances are restarted every
`restart_every` replays. Results come back in input order. Spawn-safe: workers get their settings as
arguments, nothing global (not even `SC2PATH`: the install folder reaches pysc2 as an argument).
"""

import contextlib
import multiprocessing
import os
import platform
import signal
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
from pysc2.lib.remote_controller import RequestError

from replay_assets.settings import sc2_game_environ, sc2path_from_env
from replay_assets.sources.contract import Lineage
from replay_assets.sources.sc2.engine import Sc2EngineError, engine_frame_batches
from replay_assets.util.process_map import main_module_hidden

S = TypeVar("S", bound=Lineage)


def default_sc2path() -> str:
    """`$SC2PATH` as pysc2 reads it, else pysc2's Linux default (read by `replay_assets.settings`)."""
    return sc2path_from_env()


def installed_builds(sc2path: str | os.PathLike[str] | None) -> list[int]:
    """The base builds under `<SC2PATH>/Versions` (`Base<build>` folders), ascending."""
    versions = Path(sc2path or default_sc2path()).expanduser() / "Versions"
    if not versions.is_dir():
        return []
    names = (p.name[len("Base") :] for p in versions.iterdir() if p.is_dir() and p.name.startswith("Base"))
    return sorted(int(n) for n in names if n.isdigit())


def engine_can_play(
    sc2path: str | os.PathLike[str] | None, base_build: int, fixed_build: int | None = None
) -> bool:
    """Whether a pool could play a replay of `base_build`: the engine plays only its exact build, so it must
    be installed, and the pool must be able to start it. A pool with a `fixed_build` starts only that one;
    otherwise it starts the newest installed build, or one pysc2 knows the data version of."""
    installed = installed_builds(sc2path)
    if base_build not in installed:
        return False
    if fixed_build is not None:
        return base_build == fixed_build and _known_build(base_build) is not None
    return base_build == installed[-1] or _known_build(base_build) is not None


@dataclass(frozen=True)
class EngineSettings:
    """What a worker needs to start its game and play replays; passed to the spawned process as is."""

    sc2path: str
    base_build: int | None = None  # None: each replay's own build when installed, else the newest
    step_mul: int = 8
    restart_every: int = 300
    batch_rows: int = 512


def _known_build(base_build: int) -> str | None:
    """pysc2's game version for a base build (it passes that build's data version to the game)."""
    from pysc2.run_configs import lib as run_config_lib

    known = [v.game_version for v in run_config_lib.VERSIONS.values() if v.build_version == base_build]
    return known[-1] if known else None


def _run_config(sc2path: str, base_build: int | None) -> Any:
    """pysc2's platform run config for the install at `sc2path` and the wanted build (absl flags must count
    as parsed first)."""
    from absl import flags
    from pysc2 import run_configs
    from pysc2.lib import sc_process
    from pysc2.run_configs import platforms

    sc2path = os.path.expanduser(sc2path)  # as pysc2 expands $SC2PATH
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    version = None
    if base_build is not None and base_build != max(installed_builds(sc2path), default=None):
        version = _known_build(base_build)  # the newest needs none: SC2 finds it in its .build.info
        if version is None:
            raise sc_process.SC2LaunchError(f"pysc2 does not know base build {base_build}")
    if platform.system() != "Linux":
        # pysc2's macOS and Windows run configs take the install only from $SC2PATH (no flag, no
        # argument): set it in this worker process alone, which was spawned for the pool and dies with it.
        os.environ["SC2PATH"] = sc2path
        return run_configs.get(version=version)
    # pysc2's `platforms.Linux()` reads the install from $SC2PATH only, but all it does with it is pass the
    # folder to `LocalBase.__init__` with the game's `Libs/` on LD_LIBRARY_PATH: the same, with the path
    # as an argument and no process-wide environment change.
    config = platforms.Linux.__new__(platforms.Linux)
    platforms.LocalBase.__init__(config, sc2path, "SC2_x64", version=version, env=sc2_game_environ(sc2path))
    return config


class _Instance:
    """One running game and the count of replays it has played."""

    def __init__(self, sc2path: str, base_build: int | None) -> None:
        self.run_config = _run_config(sc2path, base_build)
        self.process = self.run_config.start(want_rgb=False)
        self.controller = self.process.controller
        self.base_build: int = self.controller.ping().base_build
        self.played = 0

    def map_data(self, path: str) -> bytes:
        return self.run_config.map_data(path)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # a crashed game fails its quit; it is gone either way
            self.process.close()


def _build_to_play(instance: _Instance, settings: EngineSettings, data: bytes) -> int | None:
    """The build a fresh instance should have for this replay, or None to keep this one.

    SC2 reads any build's replay info (pysc2's replay_version tool relies on it); when the pool follows the
    replays' builds and can start the replay's (`engine_can_play`), the worker switches to it.
    """
    if settings.base_build is not None:
        return None
    try:
        wanted = instance.controller.replay_info(data).base_build
    except RequestError:
        return None  # unreadable: playing it with this instance reports why
    if wanted == instance.base_build or not engine_can_play(settings.sc2path, wanted):
        return None
    return wanted


def _play(
    instance: _Instance, settings: EngineSettings, data: bytes, lineage: Lineage
) -> list[pa.RecordBatch]:
    return list(
        engine_frame_batches(
            instance.controller, data, lineage, settings.step_mul, instance.map_data, settings.batch_rows
        )
    )


def _exit_on_term(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _worker_main(conn: Connection, settings: EngineSettings) -> None:
    """Serves (index, data, lineage) tasks until told to stop or the pool goes away."""
    os.setpgrp()  # the pool kills this process and its game together, by group
    signal.signal(signal.SIGTERM, _exit_on_term)  # a terminated worker still quits its game (finally below)
    instance: _Instance | None = None
    try:
        while True:
            try:
                task = conn.recv()
            except EOFError:
                return
            if task is None:
                return
            index, data, lineage = task
            if instance is not None and instance.played >= settings.restart_every:
                instance.close()
                instance = None
            result: list[pa.RecordBatch] | Exception
            try:
                if instance is None:
                    instance = _Instance(settings.sc2path, settings.base_build)
                wanted = _build_to_play(instance, settings, data)
                if wanted is not None:
                    instance.close()
                    instance = None
                    instance = _Instance(settings.sc2path, wanted)
                instance.played += 1
                result = _play(instance, settings, data, lineage)
            except Sc2EngineError as error:
                result = error  # the replay was refused; the game is fine
            except Exception as error:  # the game crashed or misbehaved: a fresh one next time
                stage = "could not start SC2" if instance is None else "SC2 failed during the replay"
                result = Sc2EngineError(lineage.uri, f"{stage}: {type(error).__name__}: {error}")
                if instance is not None:
                    instance.close()
                instance = None
            conn.send((index, result))
    finally:
        if instance is not None:
            instance.close()


@dataclass
class _Worker:
    process: BaseProcess
    conn: Connection
    task: int | None = None
    deadline: float = field(default=0.0)

    def kill(self) -> None:
        """Kills the worker and its game (one process group), then reaps the worker."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        self.process.join(5)
        self.conn.close()


class Sc2EnginePool:
    """`with Sc2EnginePool(sc2path) as pool: for source, result in pool.frames(items): ...`

    `items` are `(replay bytes, source)`; each result is the replay's list of record batches or the
    `Sc2EngineError` that explains why there are none (refused, crashed, timed out).
    """

    def __init__(
        self,
        sc2path: str | os.PathLike[str] | None = None,
        workers: int = 2,
        restart_every: int = 300,
        replay_timeout_s: float = 600.0,
        step_mul: int = 8,
        base_build: int | None = None,
        batch_rows: int = 512,
    ) -> None:
        if workers < 1 or restart_every < 1 or step_mul < 1 or replay_timeout_s <= 0:
            raise ValueError("workers, restart_every, step_mul and replay_timeout_s must be positive")
        root = str(Path(sc2path or default_sc2path()).expanduser())
        self.settings = EngineSettings(root, base_build, step_mul, restart_every, batch_rows)
        self.workers = workers
        self.replay_timeout_s = replay_timeout_s
        self._context = multiprocessing.get_context("spawn")
        self._pool: list[_Worker] = []

    def __enter__(self) -> "Sc2EnginePool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Asks idle workers to quit their games; kills whatever does not stop in time."""
        for worker in self._pool:
            if worker.task is None:
                with contextlib.suppress(OSError):
                    worker.conn.send(None)
        for worker in self._pool:
            if worker.task is None:
                worker.process.join(10)
            worker.kill()
        self._pool = []

    def _spawn(self) -> _Worker:
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=_worker_main, args=(child, self.settings), name="sc2-engine-worker", daemon=True
        )
        with main_module_hidden(_worker_main):
            process.start()
        child.close()
        worker = _Worker(process, parent)
        self._pool.append(worker)
        return worker

    def _retire(self, worker: _Worker) -> None:
        worker.kill()
        self._pool.remove(worker)

    def frames(
        self, items: Iterable[tuple[bytes, S]]
    ) -> Iterator[tuple[S, list[pa.RecordBatch] | Exception]]:
        """Plays every replay, yielding `(source, batches or error)` in input order."""
        todo = enumerate(items)
        sources: dict[int, S] = {}
        done: dict[int, list[pa.RecordBatch] | Exception] = {}
        next_out, exhausted, window = 0, False, 2 * self.workers
        try:
            while True:
                while not exhausted and len(sources) < window and self._idle_worker() is not None:
                    task = next(todo, None)
                    if task is None:
                        exhausted = True
                        break
                    index, (data, source) = task
                    sources[index] = source
                    self._dispatch(self._idle_worker(), index, data, source)
                while next_out in done:
                    yield sources.pop(next_out), done.pop(next_out)
                    next_out += 1
                if exhausted and not sources:
                    return
                if any(w.task is not None for w in self._pool):
                    self._collect(sources, done)  # else the window just emptied: dispatch more first
        finally:
            for worker in [w for w in self._pool if w.task is not None]:
                self._retire(worker)  # abandoned mid-replay (the caller stopped early): never reuse

    def _idle_worker(self) -> _Worker | None:
        idle = next((w for w in self._pool if w.task is None), None)
        if idle is None and len(self._pool) < self.workers:
            idle = self._spawn()
        return idle

    def _dispatch(self, worker: _Worker | None, index: int, data: bytes, lineage: Lineage) -> None:
        assert worker is not None
        worker.task = index
        worker.deadline = time.monotonic() + self.replay_timeout_s
        worker.conn.send((index, data, lineage))

    def _collect(self, sources: dict[int, Any], done: dict[int, list[pa.RecordBatch] | Exception]) -> None:
        """Waits for the next result or deadline; a dead or late worker turns its replay into a failure."""
        busy = [w for w in self._pool if w.task is not None]
        timeout = max(0.0, min(w.deadline for w in busy) - time.monotonic())
        ready = wait([w.conn for w in busy], timeout=timeout)
        for worker in busy:
            index = worker.task
            assert index is not None
            uri = sources[index].uri
            if worker.conn in ready:
                try:
                    got, result = worker.conn.recv()
                    assert got == index
                except (EOFError, OSError):
                    worker.process.join(1)
                    reason = f"the SC2 worker process died (exit code {worker.process.exitcode})"
                    done[index] = Sc2EngineError(uri, reason)
                    self._retire(worker)
                    continue
                done[index] = result
                worker.task = None
            elif time.monotonic() >= worker.deadline:
                reason = f"timed out after {self.replay_timeout_s:g} s; SC2 was killed"
                done[index] = Sc2EngineError(uri, reason)
                self._retire(worker)
