"""Settings read from the environment, in one place.

Every other module takes these values as arguments, so nothing below reads the environment on its
own and a test can build any configuration without touching ``os.environ``.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass

DEFAULT_LANDING_URI = "./data/landing"
DEFAULT_WAREHOUSE_URI = "./data/warehouse"
DEFAULT_PARTITIONS_START = "2025-01-01"


def resolve_uri(uri: str) -> str:
    """Make a local path absolute (run workers may start in another directory); keep URLs as they are."""
    if "://" in uri:
        return uri.rstrip("/")
    return os.path.abspath(os.path.expanduser(uri))


@dataclass(frozen=True)
class Settings:
    landing_uri: str
    warehouse_uri: str
    partitions_start: dt.date

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        start = env.get("REPLAY_PARTITIONS_START", DEFAULT_PARTITIONS_START)
        try:
            partitions_start = dt.date.fromisoformat(start)
        except ValueError as exc:
            raise ValueError(f"REPLAY_PARTITIONS_START must be YYYY-MM-DD, got {start!r}") from exc
        return cls(
            landing_uri=resolve_uri(env.get("REPLAY_LANDING_URI") or DEFAULT_LANDING_URI),
            warehouse_uri=resolve_uri(env.get("REPLAY_WAREHOUSE_URI") or DEFAULT_WAREHOUSE_URI),
            partitions_start=partitions_start,
        )


def s3_endpoint_url() -> str | None:
    """The S3 endpoint override (a local S3 server), or None for AWS itself."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def aws_region() -> str | None:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None


def s3_storage_options() -> dict[str, str]:
    """fsspec/s3fs options from the AWS variables.

    Passing the endpoint explicitly (s3fs also reads it from the environment) makes it part of
    fsspec's filesystem cache key, so a process that talks to two S3 endpoints never mixes them up.
    """
    endpoint = s3_endpoint_url()
    return {"endpoint_url": endpoint} if endpoint else {}
