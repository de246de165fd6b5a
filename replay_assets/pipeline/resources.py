"""The resources every source's assets share: the landing zone (a local folder or an S3 prefix behind one
interface) and DuckDB over the warehouse for asset checks."""

import contextlib
from collections.abc import Iterator

import duckdb
from dagster import ConfigurableResource
from dagster_aws.s3 import S3Resource
from dagster_duckdb import DuckDBResource

from replay_assets.landing.backends import LandingBackend, open_landing
from replay_assets.warehouse.sql import attach_warehouse


class ReplayStore(ConfigurableResource):
    """Where raw replays arrive (``REPLAY_LANDING_URI``); S3 is reached with the ``s3`` resource's client."""

    landing_uri: str
    s3: S3Resource

    def backend(self) -> LandingBackend:
        return open_landing(self.landing_uri, self.s3.get_client)


class WarehouseDuckDB(DuckDBResource):
    """``get_connection()`` yields a connection where every asset is a view over its Parquet files."""

    warehouse_uri: str
    database: str = ":memory:"

    @contextlib.contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with super().get_connection() as conn:
            attach_warehouse(conn, self.warehouse_uri)
            yield conn
