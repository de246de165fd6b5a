"""The warehouse IO manager: one implementation for a local folder and for ``s3://``.

An asset returns, for its partition, a ``pyarrow.Table``; or, to stream, a ``pyarrow.RecordBatchReader``
(a bare generator would be taken by Dagster for a stream of events; ``Output(iterator)`` works too);
or a ``StagedPartition`` it wrote itself through the ``Warehouse`` resource, which the IO manager
commits. In a range run (a single-run backfill or ``--partition-range``) it returns a mapping from
partition key to one of those, and each partition still gets its own file.

A partition's ``date`` lives in its folder name, not in its file (``warehouse.layout``): ``handle_output``
leaves the column out of the file (and stores map columns as key/value lists), ``load_input`` puts it
back (and the maps), and ``dagster/column_schema`` shows the schema with it: downstream assets and the UI
see the asset's logical schema.
"""

from collections.abc import Mapping
from typing import Any, get_origin

import pyarrow as pa
from dagster import (
    ConfigurableIOManager,
    ConfigurableResource,
    InputContext,
    MetadataValue,
    OutputContext,
    TableColumn,
    TableSchema,
)
from pydantic import PrivateAttr
from upath import UPath

from replay_assets.warehouse.layout import (
    decoded_schema,
    is_local,
    logical_schema,
    partition_file,
    warehouse_root,
    with_partition_column,
)
from replay_assets.warehouse.parquet import (
    StagedPartition,
    commit_staged,
    discard_staged,
    read_parquet,
    stage_parquet,
    write_parquet,
)

# Definition metadata an asset sets to choose its Parquet row-group size (see write_parquet).
ROW_GROUP_ROWS_METADATA = "parquet_row_group_rows"


def table_schema(schema: pa.Schema) -> TableSchema:
    """The Arrow schema as Dagster column metadata, shown in the UI's column view."""
    return TableSchema(columns=[TableColumn(name=f.name, type=str(f.type)) for f in schema])


def _uri_metadata(path: UPath) -> MetadataValue:
    return MetadataValue.path(path.path) if is_local(path) else MetadataValue.url(str(path))


class PartitionedParquetIOManager(ConfigurableIOManager):
    """Writes ``<warehouse>/<asset>/date=YYYY-MM-DD/part-0.parquet``, streaming and atomically."""

    warehouse_uri: str
    _root: UPath | None = PrivateAttr(default=None)

    def _warehouse(self) -> UPath:
        if self._root is None:
            self._root = warehouse_root(self.warehouse_uri)
        return self._root

    def path_for(self, asset_key: str, partition_key: str | None) -> UPath:
        return partition_file(self._warehouse(), asset_key, partition_key)

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        asset_key = "/".join(context.asset_key.path)
        keys: list[str | None] = (
            list(context.asset_partition_keys) if context.has_asset_partitions else [None]
        )
        per_partition = self._split_by_partition(asset_key, keys, obj)
        group_rows = (context.definition_metadata or {}).get(ROW_GROUP_ROWS_METADATA)
        counts: dict[str, int] = {}
        schema = None
        uris = []
        for key, data in per_partition.items():
            path = self.path_for(asset_key, key)
            if isinstance(data, StagedPartition):
                result = commit_staged(data, path)
            else:
                result = write_parquet(path, data, group_rows, partition_key=key)
            context.log.debug(f"wrote {result.row_count} rows to {result.uri}")
            counts[key or "all"] = result.row_count
            schema = logical_schema(result.schema) if key is not None else decoded_schema(result.schema)
            uris.append(path)
        metadata: dict[str, Any] = {
            "dagster/row_count": sum(counts.values()),
            "dagster/column_schema": table_schema(schema),
            "uri": _uri_metadata(uris[0]) if len(uris) == 1 else MetadataValue.json([str(u) for u in uris]),
        }
        if len(counts) > 1:
            metadata["partition_row_counts"] = MetadataValue.json(counts)
        context.add_output_metadata(metadata)

    @staticmethod
    def _split_by_partition(asset_key: str, keys: list[str | None], obj: Any) -> dict[str | None, Any]:
        if isinstance(obj, Mapping):
            missing = sorted(str(k) for k in keys if k not in obj)
            extra = sorted(str(k) for k in obj if k not in keys)
            if missing or extra:
                raise ValueError(
                    f"{asset_key}: the output mapping must have exactly the run's partition keys; "
                    f"missing {missing}, unexpected {extra}"
                )
            return {k: obj[k] for k in keys}
        if len(keys) > 1:
            raise TypeError(
                f"{asset_key}: this run covers {len(keys)} partitions; return a mapping from partition key "
                "to its table or record batches"
            )
        return {keys[0]: obj}

    def load_input(self, context: InputContext) -> pa.Table | dict[str, pa.Table]:
        asset_key = "/".join(context.asset_key.path)
        if not context.has_asset_partitions:
            return read_parquet(self.path_for(asset_key, None))
        allow_missing = bool((context.definition_metadata or {}).get("allow_missing_partitions"))
        tables: dict[str, pa.Table] = {}
        missing: list[str] = []
        for key in context.asset_partition_keys:
            path = self.path_for(asset_key, key)
            if path.exists():
                tables[key] = with_partition_column(read_parquet(path), key)
            else:
                missing.append(key)
        if missing and not allow_missing:
            raise FileNotFoundError(
                f"{asset_key} has no materialized partition for {', '.join(missing)} "
                f"in {self.warehouse_uri}: materialize it first"
            )
        if missing:
            context.log.warning(f"{asset_key}: skipping missing partitions {', '.join(missing)}")
        if _wants_mapping(context):
            return tables
        if not tables:
            raise FileNotFoundError(f"{asset_key}: none of the requested partitions exists")
        return pa.concat_tables(tables.values())


def _wants_mapping(context: InputContext) -> bool:
    typing_type = context.dagster_type.typing_type
    return typing_type is dict or get_origin(typing_type) in (dict, Mapping)


class Warehouse(ConfigurableResource):
    """The warehouse the IO manager writes (same ``warehouse_uri``), for assets that stage a partition
    themselves: they learn what the write produced (and which files failed) before handing it on, and
    the IO manager's commit is what makes it visible."""

    warehouse_uri: str

    def stage(
        self, asset_key: str, partition_key: str | None, data: Any, row_group_rows: int | None = None
    ) -> StagedPartition:
        path = partition_file(warehouse_root(self.warehouse_uri), asset_key, partition_key)
        return stage_parquet(path, data, row_group_rows, partition_key)

    def discard(self, staged: StagedPartition) -> None:
        discard_staged(staged, warehouse_root(staged.target_uri))
