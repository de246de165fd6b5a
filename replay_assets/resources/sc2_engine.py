"""The StarCraft II engine as a Dagster resource: where the game is installed and how to run the pool.

Only configuration lives here; the pool itself (formats/sc2_engine_pool.py) stays Dagster-free so its
spawned workers do not import Dagster.
"""

from dagster import ConfigurableResource
from pydantic import Field

from replay_assets.formats.sc2_engine_pool import Sc2EnginePool, default_sc2path, engine_can_play


class Sc2Engine(ConfigurableResource):
    """`sc2path` defaults to `$SC2PATH`, else `~/StarCraftII` (pysc2's rule)."""

    sc2path: str = Field(default_factory=default_sc2path)
    workers: int = 2  # one SC2 instance each: 1-2 GB of RAM per worker
    restart_every: int = 300  # replays per instance before a fresh one (the game leaks over long runs)
    replay_timeout_s: float = 600.0  # a replay takes 1-5 minutes at step_mul 8; past this it is killed
    step_mul: int = 8
    base_build: int | None = None  # None: each replay's own build when installed, else the newest

    def can_play(self, base_build: int) -> bool:
        """Whether this install can start the replay's exact build (backend=auto then picks the engine)."""
        return engine_can_play(self.sc2path, base_build, self.base_build)

    def pool(self, step_mul: int | None = None) -> Sc2EnginePool:
        """A fresh pool; use it as a context manager so its games are shut down."""
        return Sc2EnginePool(
            self.sc2path,
            workers=self.workers,
            restart_every=self.restart_every,
            replay_timeout_s=self.replay_timeout_s,
            step_mul=step_mul or self.step_mul,
            base_build=self.base_build,
        )
