"""``tmrl_demo_buffers`` (+ ``tmrl_run_failures``): every TMRL player run of the day, one row per sample,
unpickled safely; built by the pipeline from the reader declared in ``read.py``.

``read.py`` refuses any pickle that names a global outside numpy's own and validates the run; files the
online-injection sensor quarantined are left out there, consumed ones keep their day.
"""

from replay_assets.pipeline.source_assets import source_assets
from replay_assets.sources.tmrl.read import READER

__all__ = ["tmrl_demo_buffers"]

BUFFERS = "tmrl_demo_buffers"
FAILURES = "tmrl_run_failures"

tmrl_demo_buffers = source_assets(
    READER,
    rows=BUFFERS,
    failures=FAILURES,
    group="tmrl",
    description="One row per sample of every TMRL player run of the day (lidar and full layouts, legacy bare "
    "lists): action, observation components as typed columns, reward, flags, info, episode boundaries, "
    "lineage.",
    failures_description="Player runs of the day that were refused (unsafe pickle, bad schema) and why.",
)
