"""Which UTC day a landed file belongs to, decided from names and metadata only.

In this order: the producer's own timestamp where it is cheap to read (the Townlet index's
``timestamp``, handled by the listing; a ``YYYYMMDD_`` run-id prefix on a TMRL file name), else a
``YYYY-MM-DD`` folder anywhere in the path, else the file's modification time in UTC.
"""

from __future__ import annotations

import datetime as dt
import re

from replay_assets.landing.backends import LandingFile

SOURCES = ("metta", "sc2", "townlet", "tmrl")

PRODUCER_TIMESTAMP = "producer_timestamp"
FILE_NAME_DATE = "file_name_date"
PATH_DATE = "path_date"
MODIFIED_TIME = "modified_time"

_RUN_ID_DATE = re.compile(r"^(\d{8})_")
_DATE_FOLDER = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _parse_date(text: str, fmt: str) -> dt.date | None:
    try:
        return dt.datetime.strptime(text, fmt).date()
    except ValueError:
        return None


def source_of(file: LandingFile) -> str | None:
    """The source a file belongs to, from its top-level folder; None outside the four sources."""
    top = file.parts[0]
    return top if top in SOURCES and len(file.parts) > 1 else None


def day_of_timestamp(unix_seconds: float) -> dt.date:
    return dt.datetime.fromtimestamp(unix_seconds, tz=dt.UTC).date()


def day_of_file(file: LandingFile) -> tuple[dt.date, str]:
    """The day of a file and which rule decided it."""
    parts = file.parts
    if parts[0] == "tmrl" and (match := _RUN_ID_DATE.match(parts[-1])):
        day = _parse_date(match.group(1), "%Y%m%d")
        if day is not None:
            return day, FILE_NAME_DATE
    for folder in parts[:-1]:
        if _DATE_FOLDER.match(folder) and (day := _parse_date(folder, "%Y-%m-%d")) is not None:
            return day, PATH_DATE
    return file.modified_at.astimezone(dt.UTC).date(), MODIFIED_TIME
