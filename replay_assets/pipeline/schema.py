"""The Arrow schema every source's ``*_failures`` table shares."""

from __future__ import annotations

import pyarrow as pa

# One row per raw file a source asset could not use; shared by every source's `*_failures` table.
REPLAY_FAILURES = pa.schema(
    [
        pa.field("date", pa.date32(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("source_sha256", pa.string()),
        pa.field("error_class", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),  # one line, names the file
    ]
)
