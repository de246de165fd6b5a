"""Loaders users import: torch datasets over the warehouse and a DuckDB connection to query it.

Names resolve on first use (module ``__getattr__``), so ``import replay_assets.datasets`` stays fast and
pulls in neither torch, DuckDB, pyarrow nor Dagster until a loader is actually touched.

- ``ReplayDataset``: map-style ``torch.utils.data.Dataset`` of ``metta_action_samples`` samples.
- ``MettaSampleStream``: the fast path, an ``IterableDataset`` of ready tensor batches.
- ``connect``: an in-memory DuckDB connection with one view per asset.
- ``parse_filters`` / ``filters_sql``: the ``filters`` mini-language, reusable with DuckDB parameters.
- ``TownletRecordings``: list Townlet recordings like the replay viewer and ``load`` one episode
  (a ``TownletReplay`` of ``TownletStep`` records, with ``seek``); needs no torch.
- ``TownletStepDataset``: map-style dataset of Townlet steps or windows of steps.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "ReplayDataset": "replay_assets.datasets.metta",
    "MettaSampleStream": "replay_assets.datasets.metta",
    "connect": "replay_assets.datasets.sql",
    "parse_filters": "replay_assets.datasets.filters",
    "filters_sql": "replay_assets.datasets.filters",
    "filters_expression": "replay_assets.datasets.filters",
    "FilterError": "replay_assets.datasets.filters",
    "MissingPartitionsError": "replay_assets.datasets.warehouse",
    "MissingPartitionsWarning": "replay_assets.datasets.warehouse",
    "TownletRecordings": "replay_assets.datasets.townlet",
    "TownletRecordingRow": "replay_assets.datasets.townlet",
    "TownletReplay": "replay_assets.datasets.townlet",
    "TownletStep": "replay_assets.datasets.townlet",
    "TownletStepDataset": "replay_assets.datasets.townlet",
    "EpisodeNotFoundError": "replay_assets.datasets.townlet",
    "AmbiguousEpisodeError": "replay_assets.datasets.townlet",
}

__all__ = [
    "AmbiguousEpisodeError",
    "EpisodeNotFoundError",
    "FilterError",
    "MettaSampleStream",
    "MissingPartitionsError",
    "MissingPartitionsWarning",
    "ReplayDataset",
    "TownletRecordingRow",
    "TownletRecordings",
    "TownletReplay",
    "TownletStep",
    "TownletStepDataset",
    "connect",
    "filters_expression",
    "filters_sql",
    "parse_filters",
]

if TYPE_CHECKING:
    from replay_assets.datasets.filters import FilterError, filters_expression, filters_sql, parse_filters
    from replay_assets.datasets.metta import MettaSampleStream, ReplayDataset
    from replay_assets.datasets.sql import connect
    from replay_assets.datasets.townlet import (
        AmbiguousEpisodeError,
        EpisodeNotFoundError,
        TownletRecordingRow,
        TownletRecordings,
        TownletReplay,
        TownletStep,
        TownletStepDataset,
    )
    from replay_assets.datasets.warehouse import MissingPartitionsError, MissingPartitionsWarning


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # resolve once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
