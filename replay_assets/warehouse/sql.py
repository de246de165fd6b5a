"""DuckDB over the warehouse: one view per asset, hive-partitioned by ``date``, local or S3.

``connect()`` is the "query the dataset with SQL" entry point for users; the Dagster resource and the
``replay-assets query`` command attach the same views through ``attach_warehouse``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlparse

import duckdb

from replay_assets.settings import AwsSettings, Settings, resolve_uri
from replay_assets.warehouse.layout import PARTITION_COLUMN, asset_glob, warehouse_root
from replay_assets.warehouse.selection import UNSET, warehouse_argument

_VIEW_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
# How DuckDB describes a map column as the warehouse stores it (a list of key/value structs, see
# ``warehouse.layout``): the view turns it back into a MAP with ``map_from_entries``.
_STORED_MAP = re.compile(r'^STRUCT\("key" .+, "value" .+\)\[\]$')


def _load_httpfs(conn: duckdb.DuckDBPyConnection) -> None:
    """Load httpfs from the ``duckdb-extension-httpfs`` wheel: no download at run time."""
    import duckdb_extension_httpfs

    package_dir = Path(duckdb_extension_httpfs.__file__).parent
    extension = next(package_dir.glob("extensions/*/httpfs.duckdb_extension"), None)
    if extension is None:
        raise RuntimeError(f"no httpfs extension file under {package_dir}")
    conn.load_extension(str(extension))


def _configure_s3(conn: duckdb.DuckDBPyConnection, aws: AwsSettings) -> None:
    """An S3 secret from the standard AWS variables, so a local S3 server needs no code change."""
    _load_httpfs(conn)
    settings = ["TYPE s3"]
    quoted: dict[str, str] = {}
    if key := aws.access_key_id:
        quoted["KEY_ID"] = key
        quoted["SECRET"] = aws.secret_access_key or ""
    if token := aws.session_token:
        quoted["SESSION_TOKEN"] = token
    if region := aws.region:
        quoted["REGION"] = region
    if endpoint := aws.endpoint_url:
        parsed = urlparse(endpoint)
        quoted["ENDPOINT"] = parsed.netloc or parsed.path
        quoted["URL_STYLE"] = "path"
        settings.append(f"USE_SSL {'true' if parsed.scheme == 'https' else 'false'}")
    settings += [f"{name} {_quote(value)}" for name, value in quoted.items()]
    conn.execute(f"CREATE OR REPLACE SECRET replay_assets_s3 ({', '.join(settings)})")


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def asset_names(warehouse_uri: str) -> list[str]:
    """Asset folders that hold at least one partition."""
    root = warehouse_root(warehouse_uri)
    if not root.exists():
        return []
    names = []
    for child in root.iterdir():
        if _VIEW_NAME.match(child.name) and any(child.glob(f"{PARTITION_COLUMN}=*/*.parquet")):
            names.append(child.name)
    return sorted(names)


def attach_warehouse(
    conn: duckdb.DuckDBPyConnection, warehouse_uri: str, aws: AwsSettings | None = None
) -> list[str]:
    """Create one view per asset in ``conn``; return the view names.

    ``aws`` (for an ``s3://`` warehouse) defaults to the AWS variables as they are now.
    """
    if warehouse_uri.startswith("s3://"):
        _configure_s3(conn, AwsSettings.from_env() if aws is None else aws)
    names = asset_names(warehouse_uri)
    column = f'"{PARTITION_COLUMN}"'
    for name in names:
        glob = _quote(asset_glob(warehouse_uri, name))
        # `date` comes from the folder name (typed DATE, whatever DuckDB would guess; it also wins over the
        # in-file column of files written before) and stays the first column, as in every asset's schema.
        files = (
            f"read_parquet({glob}, hive_partitioning = true, hive_types = {{{column}: DATE}}, "
            "union_by_name = true)"
        )
        maps = _stored_maps(conn, files)
        replace = f" REPLACE ({', '.join(f'map_from_entries({c}) AS {c}' for c in maps)})" if maps else ""
        conn.execute(
            f'CREATE OR REPLACE VIEW "{name}" AS SELECT {column}, * EXCLUDE ({column}){replace} FROM {files}'
        )
    return names


def _stored_maps(conn: duckdb.DuckDBPyConnection, files: str) -> list[str]:
    """The quoted names of the columns of ``files`` that hold maps stored as key/value lists."""
    described = conn.sql(f"DESCRIBE SELECT * FROM {files}").fetchall()
    return ['"' + name.replace('"', '""') + '"' for name, kind, *_ in described if _STORED_MAP.match(kind)]


def connect(
    _warehouse: str | None = UNSET, /, *, warehouse: str | None = None, aws: AwsSettings | None = None
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with a view per asset of ``warehouse``.

    ``warehouse=`` (keyword-only, as in every loader) defaults to ``REPLAY_WAREHOUSE_URI`` (or
    ``./data/warehouse``), a local folder or ``s3://``; passing it positionally is deprecated (a
    ``DeprecationWarning``, for one release). ``aws`` defaults to the AWS variables (both read through
    ``replay_assets.settings``).
    """
    warehouse = warehouse_argument(
        warehouse, _warehouse, legacy_spelling="the first positional argument", owner="connect"
    )
    uri = Settings.from_env().warehouse_uri if warehouse is None else resolve_uri(os.fspath(warehouse))
    conn = duckdb.connect(":memory:")
    attach_warehouse(conn, uri, aws)
    return conn
