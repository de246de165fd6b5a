"""The daily partitions every asset, job and schedule shares."""

from __future__ import annotations

import datetime as dt

from dagster import DailyPartitionsDefinition

from replay_assets.settings import Settings


def daily_partitions(start: dt.date, include_today: bool = False) -> DailyPartitionsDefinition:
    """UTC days from ``start`` to yesterday (``end_offset=0``: only complete days are partitions), or
    to today with ``include_today`` (``REPLAY_PARTITIONS_INCLUDE_TODAY``)."""
    end_offset = 1 if include_today else 0
    return DailyPartitionsDefinition(start_date=start.isoformat(), end_offset=end_offset, timezone="UTC")


# Read at import, through settings: the asset decorators bind ``partitions_def=DAILY`` when their modules
# are imported, before any Definitions (or settings object) exists to pass it in.
_SETTINGS = Settings.from_env()
DAILY = daily_partitions(_SETTINGS.partitions_start, _SETTINGS.partitions_include_today)
