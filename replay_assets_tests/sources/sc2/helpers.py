"""Shared helpers of the SC2 format tests: the real replays by name and fixtures built from them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from replay_assets.sources.contract import Lineage

DAY = dt.date(2025, 10, 15)
# Replays sc2reader 1.9 also reads (it fails on the bot replays replay_0x with an IndexError).
SC2READER_READABLE = (
    "4v4_3.0.3.38749_no_exact_decoder",
    "coop_4.11.0.77379_oblivion_express",
    "ladder_3.16.0.55505_abyssal_reef",
    "ladder_4.7.0.70154",
    "ladder_5.0.0.80949_TvZ",
    "short_4.3.0.64469",
)
MISSING_FILES = "anonymized_4.1.2.60604_missing_files"
NO_EXACT_DECODER = "4v4_3.0.3.38749_no_exact_decoder"


def sc2_path(shared: Path, name: str) -> Path:
    return shared / "sc2" / f"{name}.SC2Replay"


def all_replays(shared: Path) -> list[Path]:
    return sorted((shared / "sc2").glob("*.SC2Replay"))


def source_for(data: bytes, uri: str) -> Lineage:
    return Lineage.of_bytes(data, DAY, uri)
