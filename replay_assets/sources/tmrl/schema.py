"""The Arrow schema of ``tmrl_demo_buffers`` and the observation shapes it stores."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import pyarrow as pa

# TMRL player runs: the shapes of the known observation layouts (tmrl's lidar and full observations).
ACT_SIZE = 3  # gas, brake, steer
LIDAR_SHAPE = (4, 19)  # 4 frames of 19 beams, newest first
IMAGES_SHAPE = (4, 64, 64)  # 4 grayscale frames, newest first


def _tensor_field(name: str, type_: pa.DataType, shape: Sequence[int], dtype: str, **extra: str) -> pa.Field:
    """A nullable column holding one flattened numpy array per row; its shape and dtype as metadata."""
    return pa.field(name, type_, metadata={"shape": json.dumps(list(shape)), "dtype": dtype, **extra})


OBS_RAW_TYPE = pa.list_(
    pa.struct(
        [
            pa.field("shape", pa.list_(pa.int32())),
            pa.field("dtype", pa.string()),  # numpy dtype string, native byte order, e.g. "<f4"
            pa.field("data", pa.binary()),  # the array's bytes in C order
        ]
    )
)

# One row per sample of a TMRL player run, in file order.
# A sample is (act, obs, rew, terminated, truncated, info): the action taken after observing obs and
# the reward and flags it earned. Observation columns not applicable to the run's layout are null;
# `obs_raw` holds the observation of any other layout, unchanged, so nothing is dropped.
TMRL_DEMO_BUFFERS = pa.schema(
    [
        pa.field("date", pa.date32(), nullable=False),  # the partition day (from the landing listing)
        pa.field("run_id", pa.string(), nullable=False),  # the file's run_id; legacy lists: file stem
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),  # of the file's bytes
        pa.field("sample_index", pa.int32(), nullable=False),  # position in the file's samples list
        # First sample, or the one after a terminated/truncated sample.
        pa.field("episode_start", pa.bool_(), nullable=False),
        pa.field("episode_end", pa.bool_(), nullable=False),  # terminated or truncated, or the last sample
        pa.field("act", pa.list_(pa.float32(), ACT_SIZE), nullable=False),  # gas, brake, steer in [-1, 1]
        pa.field("obs_layout", pa.string(), nullable=False),  # lidar | full | unknown:<dtype[shape],...>
        pa.field("speed", pa.float32()),  # lidar and full
        pa.field("gear", pa.float32()),  # full
        pa.field("rpm", pa.float32()),  # full
        _tensor_field("lidar", pa.list_(pa.float32(), math.prod(LIDAR_SHAPE)), LIDAR_SHAPE, "float32"),
        # The (4, 64, 64) uint8 frames' 16384 bytes. Binary, not a list of uint8: one Parquet value per
        # row (30x faster to write and read than fixed_size_list<uint8>[16384]); not fixed-size binary,
        # whose null rows (every lidar run) would still allocate 16 KiB each, writing and reading.
        # zstd (see warehouse/parquet.py): consecutive samples share three of their four frames.
        _tensor_field("images", pa.binary(), IMAGES_SHAPE, "uint8", parquet_compression="zstd"),
        _tensor_field("prev_act_1", pa.list_(pa.float32(), ACT_SIZE), (ACT_SIZE,), "float32"),  # act t-1
        _tensor_field("prev_act_2", pa.list_(pa.float32(), ACT_SIZE), (ACT_SIZE,), "float32"),  # act t-2
        pa.field("obs_raw", OBS_RAW_TYPE),  # unknown layouts only: every obs component
        pa.field("reward", pa.float64(), nullable=False),
        pa.field("terminated", pa.bool_(), nullable=False),
        pa.field("truncated", pa.bool_(), nullable=False),
        pa.field("info", pa.string(), nullable=False),  # the sample's info dict as JSON
        pa.field("is_demo", pa.bool_(), nullable=False),  # info, else metadata "is_demo"; default true
        pa.field("recorded_at", pa.timestamp("us", tz="UTC")),  # null for legacy lists
        pa.field("obs_scale_version", pa.int32()),  # null when the file does not say (earlier writers)
    ]
)
