"""Thin Dagster assets, one module per source, with their checks."""

import warnings

from dagster import BetaWarning

# Every asset uses BackfillPolicy.single_run() on purpose (a range of days is one run); the notice that
# the parameter is Beta would otherwise print on every command.
warnings.filterwarnings("ignore", message=r"Parameter `backfill_policy`", category=BetaWarning)
