"""Read Townlet's SQLite recording index without blocking or changing a live producer.

The producer keeps the database in WAL mode and may be writing while we read, so the index is opened
read-only and copied into memory with SQLite's backup API: one consistent snapshot, no locks held
while the rows are used. When no ``-wal`` file exists no producer has it open, and the file is opened
``immutable`` so that reading creates no ``-wal``/``-shm`` files beside it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

RECORDINGS_TABLE = "episode_recordings"


class TownletIndexError(ValueError):
    """The file is not a readable Townlet recording index."""


def snapshot_index(db_path: Path) -> sqlite3.Connection:
    """An in-memory copy of the database at ``db_path``, taken read-only."""
    try:
        live = Path(f"{db_path}-wal").exists()
        mode = "mode=ro" if live else "mode=ro&immutable=1"
        source = sqlite3.connect(f"file:{db_path}?{mode}", uri=True)
        try:
            snapshot = sqlite3.connect(":memory:")
            source.backup(snapshot)
        finally:
            source.close()
    except sqlite3.Error as exc:
        raise TownletIndexError(f"{db_path}: cannot read the SQLite index: {exc}") from exc
    return snapshot


def read_recordings_index(db_path: Path) -> list[dict[str, Any]]:
    """Every row of ``episode_recordings``, ordered by episode id."""
    snapshot = snapshot_index(db_path)
    try:
        snapshot.row_factory = sqlite3.Row
        try:
            rows = snapshot.execute(f"SELECT * FROM {RECORDINGS_TABLE} ORDER BY episode_id").fetchall()
        except sqlite3.Error as exc:
            raise TownletIndexError(f"{db_path}: no readable {RECORDINGS_TABLE} table: {exc}") from exc
        return [dict(row) for row in rows]
    finally:
        snapshot.close()
