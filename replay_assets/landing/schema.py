"""The Arrow schema of ``raw_replay_listings``: one row per raw file of a day."""

from __future__ import annotations

import pyarrow as pa

RAW_REPLAY_LISTINGS = pa.schema(
    [
        pa.field("date", pa.date32(), nullable=False),
        pa.field("source", pa.string(), nullable=False),  # metta | sc2 | townlet | tmrl
        pa.field("relative_path", pa.string(), nullable=False),  # below the landing root
        pa.field("uri", pa.string(), nullable=False),
        pa.field("size_bytes", pa.int64()),  # null when the file is missing
        pa.field("modified_at", pa.timestamp("us", tz="UTC")),
        pa.field("sha256", pa.string()),  # null when the file is missing or unreadable
        pa.field("format", pa.string(), nullable=False),  # from magic bytes: see landing/detect.py
        pa.field("day_rule", pa.string(), nullable=False),  # which rule chose `date`
        # ok | missing_file (index row without file) | unindexed (file without index row)
        # | unreadable (the bytes could not be read) | unrecognized (not a replay of its source)
        pa.field("status", pa.string(), nullable=False),
        pa.field("detail", pa.string()),  # the reason, when status is not ok
        pa.field("episode_id", pa.int64()),  # Townlet: the index's episode_id
        pa.field("index_uri", pa.string()),  # Townlet: the SQLite index naming the recording
    ]
)
