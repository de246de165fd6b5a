"""The daily partitions every asset, job and schedule shares."""

from __future__ import annotations

import datetime as dt

from dagster import DailyPartitionsDefinition

from replay_assets.config import Settings


def daily_partitions(start: dt.date) -> DailyPartitionsDefinition:
    """UTC days from ``start`` to yesterday (``end_offset=0``: only complete days are partitions)."""
    return DailyPartitionsDefinition(start_date=start.isoformat(), end_offset=0, timezone="UTC")


DAILY = daily_partitions(Settings.from_env().partitions_start)
