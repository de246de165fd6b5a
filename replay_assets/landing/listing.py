"""Build ``raw_replay_listings`` rows: plan from metadata in one pass, then hash the day's files.

Planning lists the zone once (names, sizes, times) and reads only the small Townlet indexes, so the
days of a whole range are known without opening a replay. Hashing then reads only the requested days'
files, one at a time, and yields record batches: memory does not grow with the size of a day.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath

import pyarrow as pa

from replay_assets.landing.backends import LandingBackend, LandingFile, LandingReadError
from replay_assets.landing.days import PRODUCER_TIMESTAMP, day_of_file, day_of_timestamp, source_of
from replay_assets.landing.detect import MAGIC_BYTES_NEEDED, UNKNOWN, detect_format
from replay_assets.landing.schema import RAW_REPLAY_LISTINGS
from replay_assets.sources.townlet.index import TownletIndexError, read_recordings_index

OK = "ok"
MISSING_FILE = "missing_file"
UNINDEXED = "unindexed"
UNREADABLE = "unreadable"
UNRECOGNIZED = "unrecognized"

SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")
INDEX_SUFFIXES = (".db", ".sqlite", ".sqlite3")
HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class ListingEntry:
    """A row before its file is read: everything that metadata alone can say."""

    day: dt.date
    source: str
    relative_path: str
    uri: str
    size_bytes: int | None
    modified_at: dt.datetime | None
    day_rule: str
    status: str = OK
    detail: str | None = None
    episode_id: int | None = None
    index_uri: str | None = None

    @property
    def sort_key(self) -> tuple[str, str, int]:
        return (self.source, self.relative_path, -1 if self.episode_id is None else self.episode_id)


@dataclass
class ListingPlan:
    by_day: dict[dt.date, list[ListingEntry]] = field(default_factory=lambda: defaultdict(list))
    ignored: list[str] = field(default_factory=list)  # files outside the four source folders

    def add(self, entry: ListingEntry) -> None:
        self.by_day[entry.day].append(entry)

    def entries(self, day: dt.date) -> list[ListingEntry]:
        return sorted(self.by_day.get(day, []), key=lambda e: e.sort_key)

    @property
    def days(self) -> list[dt.date]:
        return sorted(d for d, entries in self.by_day.items() if entries)


def _file_entry(file: LandingFile, source: str, **overrides: object) -> ListingEntry:
    day, rule = day_of_file(file)
    entry = ListingEntry(day, source, file.relative_path, file.uri, file.size_bytes, file.modified_at, rule)
    return replace(entry, **overrides) if overrides else entry


def _is_checkpoint_index(file: LandingFile) -> bool:
    """A SQLite index sits directly in its checkpoint folder: ``townlet/<checkpoint>/<name>.db``."""
    return len(file.parts) == 3 and file.parts[-1].endswith(INDEX_SUFFIXES)


def _is_index_companion(file: LandingFile) -> bool:
    name = file.parts[-1]
    return len(file.parts) == 3 and any(
        name.endswith(s + c) for s in INDEX_SUFFIXES for c in SQLITE_COMPANIONS
    )


def _plan_townlet_checkpoint(
    backend: LandingBackend, checkpoint: str, files: list[LandingFile], plan: ListingPlan
) -> None:
    """Index rows by their producer timestamp, plus orphan files and rows whose file is missing."""
    by_path = {f.relative_path: f for f in files}
    indexed: set[str] = set()
    for db in filter(_is_checkpoint_index, files):
        try:
            with backend.local_copy(db.relative_path, SQLITE_COMPANIONS) as local_db:
                rows = read_recordings_index(local_db)
        except (TownletIndexError, LandingReadError) as exc:
            plan.add(_file_entry(db, "townlet", status=UNREADABLE, detail=f"{db.uri}: {exc}"))
            continue
        for row in rows:
            rel = str(PurePosixPath("townlet", checkpoint, *PurePosixPath(row["file_path"]).parts))
            indexed.add(rel)
            file = by_path.get(rel)
            entry = ListingEntry(
                day=day_of_timestamp(float(row["timestamp"])),
                source="townlet",
                relative_path=rel,
                uri=file.uri if file else f"{backend.uri}/{rel}",
                size_bytes=file.size_bytes if file else None,
                modified_at=file.modified_at if file else None,
                day_rule=PRODUCER_TIMESTAMP,
                episode_id=int(row["episode_id"]),
                index_uri=db.uri,
            )
            if file is None:
                entry = replace(entry, status=MISSING_FILE, detail=f"index {db.uri} names a missing file")
            plan.add(entry)
    for file in files:
        if file.relative_path in indexed or _is_checkpoint_index(file) or _is_index_companion(file):
            continue
        if len(file.parts) > 3 and file.parts[2] == "recordings":
            plan.add(_file_entry(file, "townlet", status=UNINDEXED, detail="no index row names this file"))
        else:
            detail = "not a recording: Townlet files belong in <checkpoint>/recordings/"
            plan.add(_file_entry(file, "townlet", status=UNRECOGNIZED, detail=detail))


def plan_listing(backend: LandingBackend) -> ListingPlan:
    """One metadata pass over the landing zone: every file's source and day."""
    plan = ListingPlan()
    townlet: dict[str, list[LandingFile]] = defaultdict(list)
    for file in backend.list_files():
        source = source_of(file)
        if source is None:
            plan.ignored.append(file.relative_path)
        elif source == "townlet":
            if len(file.parts) < 3:
                plan.add(_file_entry(file, source, status=UNRECOGNIZED, detail="outside a checkpoint folder"))
            else:
                townlet[file.parts[1]].append(file)
        else:
            plan.add(_file_entry(file, source))
    for checkpoint, files in sorted(townlet.items()):
        _plan_townlet_checkpoint(backend, checkpoint, files, plan)
    return plan


def _read_entry(backend: LandingBackend, entry: ListingEntry) -> dict[str, object]:
    row: dict[str, object] = {
        "date": entry.day,
        "source": entry.source,
        "relative_path": entry.relative_path,
        "uri": entry.uri,
        "size_bytes": entry.size_bytes,
        "modified_at": entry.modified_at,
        "sha256": None,
        "format": UNKNOWN,
        "day_rule": entry.day_rule,
        "status": entry.status,
        "detail": entry.detail,
        "episode_id": entry.episode_id,
        "index_uri": entry.index_uri,
    }
    if entry.status == MISSING_FILE:
        return row
    digest = hashlib.sha256()
    head = b""
    try:
        with backend.open(entry.relative_path) as handle:
            while chunk := handle.read(HASH_CHUNK):
                if len(head) < MAGIC_BYTES_NEEDED:
                    head += chunk[: MAGIC_BYTES_NEEDED - len(head)]
                digest.update(chunk)
    except (LandingReadError, OSError) as exc:
        row["status"] = UNREADABLE
        row["detail"] = str(exc)
        return row
    row["sha256"] = digest.hexdigest()
    row["format"] = detect_format(head)
    return row


def listing_batches(
    backend: LandingBackend, entries: Iterable[ListingEntry], batch_rows: int = 1024
) -> Iterator[pa.RecordBatch]:
    """Read each entry's bytes once (sha256 and magic bytes) and yield rows in batches."""
    rows: list[dict[str, object]] = []
    for entry in entries:
        rows.append(_read_entry(backend, entry))
        if len(rows) >= batch_rows:
            yield pa.RecordBatch.from_pylist(rows, schema=RAW_REPLAY_LISTINGS)
            rows = []
    if rows:
        yield pa.RecordBatch.from_pylist(rows, schema=RAW_REPLAY_LISTINGS)


def listing_reader(backend: LandingBackend, entries: Iterable[ListingEntry]) -> pa.RecordBatchReader:
    return pa.RecordBatchReader.from_batches(RAW_REPLAY_LISTINGS, listing_batches(backend, entries))
