"""The decorators every daily asset shares, so each asset states only what is its own.

A day is a partition; a range of days is one run (``BackfillPolicy.single_run()``: the CLI's
``--partition-range`` needs it); single assets write Parquet through the warehouse IO manager, and
multi-assets (a table plus its failures) can be materialized one output at a time.
"""

import warnings
from typing import Any

from dagster import BackfillPolicy, BetaWarning, asset, multi_asset

from replay_assets.partitions import DAILY

__all__ = ["daily_asset", "daily_multi_asset"]


def _quietly(decorator: Any, **kwargs: Any) -> Any:
    """``decorator(**kwargs)`` without Dagster's notice that ``backfill_policy`` is Beta: every asset uses
    ``BackfillPolicy.single_run()`` on purpose. Silenced here, where it is passed, not process-wide."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Parameter `backfill_policy`", category=BetaWarning)
        return decorator(backfill_policy=BackfillPolicy.single_run(), partitions_def=DAILY, **kwargs)


def daily_asset(**kwargs: Any) -> Any:
    """``@asset`` partitioned by UTC day, one run per backfill, Parquet in the warehouse."""
    return _quietly(asset, io_manager_key="warehouse_io_manager", kinds={"parquet"}, **kwargs)


def daily_multi_asset(**kwargs: Any) -> Any:
    """``@multi_asset`` partitioned by UTC day, one run per backfill, its outputs selectable alone."""
    return _quietly(multi_asset, **{"can_subset": True, **kwargs})
