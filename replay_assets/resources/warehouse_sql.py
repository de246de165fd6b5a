"""DuckDB for SQL over the warehouse (asset checks), a ``DuckDBResource`` with the asset views attached."""

import contextlib
from collections.abc import Iterator

import duckdb
from dagster_duckdb import DuckDBResource

from replay_assets.datasets.sql import attach_warehouse


class WarehouseDuckDB(DuckDBResource):
    """``get_connection()`` yields a connection where every asset is a view over its Parquet files."""

    warehouse_uri: str
    database: str = ":memory:"

    @contextlib.contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with super().get_connection() as conn:
            attach_warehouse(conn, self.warehouse_uri)
            yield conn
