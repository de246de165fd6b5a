"""Townlet assets: every recording indexed and verified, and the steps of the valid ones.

``townlet_recordings_index`` puts each ``episode_recordings`` row beside what its file really holds
(orphan files and rows without a file included, as invalid rows). It is not a per-file reader over the
pipeline: its unit is a checkpoint's SQLite index joined with the files it names (and those it does not),
and a file that cannot be read or verified is an invalid row of the index, never a gap. Each file's
conversion still runs under a guard that turns anything raised into that row's ``invalid_reason``.

``townlet_episode_steps`` is the pipeline's per-file reader (``read.py`` ``READER``) over the recordings
the index judged valid. Decoding and verification live in ``read.py``.
"""

import datetime as dt
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    MetadataValue,
    Output,
)

from replay_assets.landing.backends import LandingBackend, LandingUnavailableError, relative_path_of
from replay_assets.landing.listing import MISSING_FILE, OK, SQLITE_COMPANIONS, UNINDEXED, UNREADABLE
from replay_assets.pipeline.daily import daily_asset
from replay_assets.pipeline.files import failure_reason, read_listed_file
from replay_assets.pipeline.resources import ReplayStore
from replay_assets.pipeline.source_assets import DayInputs, reader_config, run_config_class, source_assets
from replay_assets.sources.contract import Lineage
from replay_assets.sources.townlet.index import read_recordings_index
from replay_assets.sources.townlet.read import READER, TownletReadConfig, checkpoint_of, recordings_index_row
from replay_assets.sources.townlet.schema import TOWNLET_RECORDINGS_INDEX

INDEX = "townlet_recordings_index"
STEPS = "townlet_episode_steps"
SIZES_MATCH = "index_sizes_match_files"
UNIQUE_EPISODES = "no_duplicate_episode_ids"
RECORDING_STATUSES = (OK, MISSING_FILE, UNINDEXED, UNREADABLE)
# Small row groups (about 16 episodes of 500 steps): TownletRecordings.load() reads one group;
# measured 0.8 ms median at 8,192 rows vs 1.2 ms at 16,384 and 4 ms at 65,536, same file size.
STEPS_ROW_GROUP_ROWS = 8192
# The index decodes every recording to verify it: the same limits as the steps reader, as run config.
TownletIndexConfig = run_config_class("TownletIndexConfig", TownletReadConfig)


def _index_rows(backend: LandingBackend, index_uri: str) -> dict[int, dict[str, Any]]:
    """``episode_recordings`` rows by episode id, read from one consistent snapshot of the index."""
    with backend.local_copy(relative_path_of(backend, index_uri), SQLITE_COMPANIONS) as local_db:
        return {int(row["episode_id"]): row for row in read_recordings_index(local_db)}


def _day_index_rows(
    backend: LandingBackend, day: dt.date, listing: pa.Table, limits: TownletReadConfig
) -> list[dict[str, Any]]:
    """One TOWNLET_RECORDINGS_INDEX row per recording the listing found for the day."""
    listed = [
        r for r in listing.to_pylist() if r["source"] == "townlet" and r["status"] in RECORDING_STATUSES
    ]
    indexes: dict[str, dict[int, dict[str, Any]]] = {}
    rows = []
    for entry in listed:
        index_uri = entry["index_uri"]
        if index_uri and index_uri not in indexes:
            indexes[index_uri] = _index_rows(backend, index_uri)
        index_row = indexes[index_uri].get(entry["episode_id"]) if index_uri else None
        data, read_error = None, None
        if entry["status"] in (OK, UNINDEXED):
            try:
                data = read_listed_file(backend, _lineage(day, entry))  # checked against the listing
            except LandingUnavailableError:
                raise
            except Exception as exc:
                read_error = failure_reason(_lineage(day, entry), exc)
        try:
            row = recordings_index_row(
                index_row,
                data,
                entry["uri"],
                date=day,
                checkpoint=checkpoint_of(entry["relative_path"]),
                index_uri=index_uri,
                sha256=entry["sha256"] if data is not None else None,
                max_decompressed_bytes=limits.max_decompressed_bytes,
            )
        except Exception as exc:  # a bug or an unforeseen input: this recording is invalid, the day goes on
            row = recordings_index_row(
                index_row,
                None,
                entry["uri"],
                date=day,
                checkpoint=checkpoint_of(entry["relative_path"]),
                index_uri=index_uri,
            )
            read_error = failure_reason(_lineage(day, entry), exc)
        if entry["status"] == UNREADABLE or read_error:
            # The file is there but could not be read: say so, rather than "missing file".
            row.update(
                file_exists=True, valid=False, invalid_reason=f"unreadable: {read_error or entry['detail']}"
            )
        rows.append(row)
    return rows


def _index_metadata(tables: dict[str, pa.Table]) -> dict[str, Any]:
    rows = [
        r
        for t in tables.values()
        for r in t.select(["valid", "invalid_reason", "frames_dropped"]).to_pylist()
    ]
    invalid = [r["invalid_reason"] for r in rows if not r["valid"]]
    return {
        "recordings": len(rows),
        "valid": len(rows) - len(invalid),
        "invalid": len(invalid),
        "frames_dropped": sum(r["frames_dropped"] or 0 for r in rows),
        "invalid_reasons": MetadataValue.json(invalid[:20]),
    }


# The columns the asset checks read: converting only these to Python is 10x cheaper than whole rows.
_CHECKED_COLUMNS = [
    "checkpoint", "episode_id", "source_uri", "index_uri", "file_exists", "compressed_size_bytes",
    "actual_compressed_size", "file_size_bytes", "actual_uncompressed_size",
]  # fmt: skip


def _index_checks(tables: dict[str, pa.Table]) -> Iterator[AssetCheckResult]:
    rows = [r for t in tables.values() for r in t.select(_CHECKED_COLUMNS).to_pylist()]
    mismatched = [
        r["source_uri"]
        for r in rows
        if r["file_exists"]
        and r["compressed_size_bytes"] is not None
        and (
            r["compressed_size_bytes"] != r["actual_compressed_size"]
            or (
                r["actual_uncompressed_size"] is not None
                and r["file_size_bytes"] != r["actual_uncompressed_size"]
            )
        )
    ]
    yield AssetCheckResult(
        check_name=SIZES_MATCH,
        passed=not mismatched,
        metadata={"mismatched": len(mismatched), "files": MetadataValue.json(mismatched[:20])},
    )
    seen: dict[tuple[str, int], int] = defaultdict(int)
    for r in rows:
        if r["index_uri"] and r["episode_id"] is not None:
            seen[(r["checkpoint"], r["episode_id"])] += 1
    duplicates = sorted(f"{c}/{e}" for (c, e), n in seen.items() if n > 1)
    yield AssetCheckResult(
        check_name=UNIQUE_EPISODES,
        passed=not duplicates,
        metadata={"duplicates": MetadataValue.json(duplicates[:20])},
    )


@daily_asset(
    name=INDEX,
    group_name="townlet",
    ins={"raw_replay_listings": AssetIn()},
    check_specs=[
        AssetCheckSpec(
            SIZES_MATCH, asset=INDEX, description="The index's sizes equal the files' real sizes."
        ),
        AssetCheckSpec(UNIQUE_EPISODES, asset=INDEX, description="No episode_id twice within a checkpoint."),
    ],
)
def townlet_recordings_index(
    context: AssetExecutionContext,
    config: TownletIndexConfig,
    raw_replay_listings: dict[str, pa.Table],
    replay_store: ReplayStore,
):
    """Every Townlet recording of the day (by the index's ``timestamp``): its ``episode_recordings``
    row, what the file holds (sizes, sha256, compression, steps recorded vs survival steps, meters,
    optional fields, affordance layout) and ``valid`` with the reason when not."""
    keys = list(context.partition_keys)
    backend = replay_store.backend()
    limits = reader_config(config, TownletReadConfig)
    tables = {
        key: pa.Table.from_pylist(
            sorted(
                _day_index_rows(backend, dt.date.fromisoformat(key), raw_replay_listings[key], limits),
                key=lambda r: (
                    r["checkpoint"],
                    r["episode_id"] is None,
                    r["episode_id"] or 0,
                    r["source_uri"],
                ),
            ),
            schema=TOWNLET_RECORDINGS_INDEX,
        )
        for key in keys
    }
    yield Output(tables if len(keys) > 1 else tables[keys[0]], metadata=_index_metadata(tables))
    yield from _index_checks(tables)


def _lineage(day: dt.date, entry: dict[str, Any]) -> Lineage:
    return Lineage(day, entry["uri"], entry["sha256"], entry["relative_path"])


def _valid_recordings(inputs: DayInputs) -> list[Lineage]:
    """The recordings the day's index judged valid, in (checkpoint, episode) order."""
    columns = ["valid", "checkpoint", "episode_id", "source_uri", "sha256"]
    valid = sorted(
        (r for r in inputs.tables[INDEX].select(columns).to_pylist() if r["valid"]),
        key=lambda r: (r["checkpoint"], r["episode_id"], r["source_uri"]),
    )
    return [
        Lineage(inputs.day, r["source_uri"], r["sha256"], relative_path_of(inputs.backend, r["source_uri"]))
        for r in valid
    ]


townlet_episode_steps = source_assets(
    READER,
    rows=STEPS,
    group="townlet",
    description="One row per recorded step of every valid Townlet recording of the day, sorted by episode "
    "and step: position, meters, action, rewards, done, and the optional Q-values, epsilon, masks and "
    "temporal fields.",
    ins={INDEX: AssetIn()},
    files=_valid_recordings,
    row_group_rows=STEPS_ROW_GROUP_ROWS,
)
