"""Settings read from the environment, in one place.

Every other module takes these values as arguments, so nothing below reads the environment on its
own and a test can build any configuration without touching ``os.environ``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass, fields
from pathlib import Path

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
    # Off: the last partition is yesterday (complete days only). On: today is a partition too, so
    # player runs recorded today can be injected today (the sensor needs it for same-day injection).
    partitions_include_today: bool = False

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
            partitions_include_today=env.get("REPLAY_PARTITIONS_INCLUDE_TODAY", "").strip().lower() in _TRUE,
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


_TRUE = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class PlayerRunsSettings:
    """tmrl's ``PLAYER_RUNS`` block: online injection of human player runs into training.

    Read from the ``PLAYER_RUNS`` block of the tmrl ``config.json`` named by ``REPLAY_TMRL_CONFIG``
    (when set), then from ``REPLAY_PLAYER_RUNS_<KEY>`` variables, which win. ``SOURCE_PATH`` is a
    folder inside the landing zone, relative to it (default ``tmrl/player_runs``).
    """

    ONLINE_INJECTION: bool = False
    SOURCE_PATH: str = "tmrl/player_runs"
    CONSUME_ON_READ: bool = True
    MAX_FILES_PER_UPDATE: int = 10
    DEMO_INJECTION_REPEAT: int = 1
    DEMO_SAMPLING_WEIGHT: float = 1.0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> PlayerRunsSettings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        if config_path := env.get("REPLAY_TMRL_CONFIG"):
            try:
                block = json.loads(Path(config_path).read_text()).get("PLAYER_RUNS", {})
            except (OSError, ValueError) as exc:
                raise ValueError(
                    f"REPLAY_TMRL_CONFIG={config_path}: cannot read its PLAYER_RUNS block: {exc}"
                ) from None
            values.update({f.name: block[f.name] for f in fields(cls) if f.name in block})
        for f in fields(cls):
            if (raw := env.get(f"REPLAY_PLAYER_RUNS_{f.name}")) is not None:
                values[f.name] = raw
        return cls(**{name: _coerce(cls, name, value) for name, value in values.items()})


def _coerce(cls: type, name: str, value: object) -> object:
    kind = type(next(f.default for f in fields(cls) if f.name == name))
    if kind is bool:
        return value if isinstance(value, bool) else str(value).strip().lower() in _TRUE
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"PLAYER_RUNS {name}: expected {kind.__name__}, got {value!r}") from None
