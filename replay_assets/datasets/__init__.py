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
- ``DemoBuffer``: map-style dataset of TMRL demo samples (one observation layout), ``refresh()``-able
  while a trainer runs; ``MixedSampler``: batches mixing fresh samples with demos in tmrl's way.
- ``export_tmrl_memory``: the demos as tmrl's own replay memory file ``data.pkl``.
- ``Sc2FramesDataset``: map-style dataset of StarCraft II frames, units as padded tensors with masks;
  ``RowGroupShuffleSampler``: shuffled order that still reads each Parquet row group once.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "ReplayDataset": "replay_assets.sources.metta.load",
    "MettaSampleStream": "replay_assets.sources.metta.load",
    "connect": "replay_assets.warehouse.sql",
    "parse_filters": "replay_assets.warehouse.filters",
    "filters_sql": "replay_assets.warehouse.filters",
    "filters_expression": "replay_assets.warehouse.filters",
    "FilterError": "replay_assets.warehouse.filters",
    "MissingPartitionsError": "replay_assets.warehouse.selection",
    "MissingPartitionsWarning": "replay_assets.warehouse.selection",
    "TownletRecordings": "replay_assets.sources.townlet.load",
    "TownletRecordingRow": "replay_assets.sources.townlet.load",
    "TownletReplay": "replay_assets.sources.townlet.load",
    "TownletStep": "replay_assets.sources.townlet.load",
    "TownletStepDataset": "replay_assets.sources.townlet.load",
    "EpisodeNotFoundError": "replay_assets.sources.townlet.load",
    "AmbiguousEpisodeError": "replay_assets.sources.townlet.load",
    "DemoBuffer": "replay_assets.sources.tmrl.load",
    "MixedSampler": "replay_assets.sources.tmrl.load",
    "MixedIndex": "replay_assets.sources.tmrl.load",
    "MixedLayoutsError": "replay_assets.sources.tmrl.load",
    "EmptyDemoBufferWarning": "replay_assets.sources.tmrl.load",
    "export_tmrl_memory": "replay_assets.sources.tmrl.export",
    "Sc2FramesDataset": "replay_assets.sources.sc2.load",
    "RowGroupShuffleSampler": "replay_assets.sources.sc2.load",
    "ExportSummary": "replay_assets.sources.tmrl.export",
    "TmrlExportError": "replay_assets.sources.tmrl.export",
}

__all__ = [
    "AmbiguousEpisodeError",
    "DemoBuffer",
    "EmptyDemoBufferWarning",
    "EpisodeNotFoundError",
    "ExportSummary",
    "FilterError",
    "MettaSampleStream",
    "MissingPartitionsError",
    "MissingPartitionsWarning",
    "MixedIndex",
    "MixedLayoutsError",
    "MixedSampler",
    "ReplayDataset",
    "RowGroupShuffleSampler",
    "Sc2FramesDataset",
    "TmrlExportError",
    "TownletRecordingRow",
    "TownletRecordings",
    "TownletReplay",
    "TownletStep",
    "TownletStepDataset",
    "connect",
    "export_tmrl_memory",
    "filters_expression",
    "filters_sql",
    "parse_filters",
]

if TYPE_CHECKING:
    from replay_assets.sources.metta.load import MettaSampleStream, ReplayDataset
    from replay_assets.sources.sc2.load import RowGroupShuffleSampler, Sc2FramesDataset
    from replay_assets.sources.tmrl.export import ExportSummary, TmrlExportError, export_tmrl_memory
    from replay_assets.sources.tmrl.load import (
        DemoBuffer,
        EmptyDemoBufferWarning,
        MixedIndex,
        MixedLayoutsError,
        MixedSampler,
    )
    from replay_assets.sources.townlet.load import (
        AmbiguousEpisodeError,
        EpisodeNotFoundError,
        TownletRecordingRow,
        TownletRecordings,
        TownletReplay,
        TownletStep,
        TownletStepDataset,
    )
    from replay_assets.warehouse.filters import FilterError, filters_expression, filters_sql, parse_filters
    from replay_assets.warehouse.selection import MissingPartitionsError, MissingPartitionsWarning
    from replay_assets.warehouse.sql import connect


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # resolve once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
