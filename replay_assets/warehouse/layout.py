"""Where a partition lives in the warehouse: the one definition the writer and every reader share.

``<warehouse>/<asset_key>/date=YYYY-MM-DD/part-0.parquet``: hive style, so DuckDB and pyarrow
prune by ``date``. One file per partition, so replacing that file replaces the partition at once.
"""

from __future__ import annotations

import re

from upath import UPath

from replay_assets.settings import s3_storage_options

PARTITION_COLUMN = "date"
PART_FILE_NAME = "part-0.parquet"
UNPARTITIONED_DIR = "all"
_PARTITION_DIR = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")


def warehouse_root(uri: str) -> UPath:
    """The warehouse root for a local path or an ``s3://bucket/prefix`` URI."""
    uri = uri.rstrip("/")
    return UPath(uri, **s3_storage_options()) if uri.startswith("s3://") else UPath(uri)


def asset_root(warehouse: UPath, asset_key: str) -> UPath:
    return warehouse / asset_key


def partition_dir(warehouse: UPath, asset_key: str, partition_key: str | None) -> UPath:
    name = f"{PARTITION_COLUMN}={partition_key}" if partition_key else UNPARTITIONED_DIR
    return asset_root(warehouse, asset_key) / name


def partition_file(warehouse: UPath, asset_key: str, partition_key: str | None) -> UPath:
    return partition_dir(warehouse, asset_key, partition_key) / PART_FILE_NAME


def partition_key_of(dir_name: str) -> str | None:
    """The date of a ``date=YYYY-MM-DD`` folder name, or None for anything else."""
    match = _PARTITION_DIR.match(dir_name)
    return match.group(1) if match else None


def asset_glob(warehouse_uri: str, asset_key: str) -> str:
    """A glob over every partition file of an asset, for DuckDB's ``read_parquet``."""
    return f"{warehouse_uri.rstrip('/')}/{asset_key}/{PARTITION_COLUMN}=*/*.parquet"


def is_local(path: UPath) -> bool:
    return path.protocol in ("", "file", "local")
