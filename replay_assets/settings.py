"""Settings read from the environment, in one place.

This is the only module that reads ``os.environ``. Every other module takes these values as arguments
(or calls one of the ``from_env`` readers below where a default is needed), so a test can build any
configuration from an explicit ``environ`` mapping without touching the process environment.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

DEFAULT_LANDING_URI = "./data/landing"
DEFAULT_WAREHOUSE_URI = "./data/warehouse"
DEFAULT_PARTITIONS_START = "2025-01-01"
DEFAULT_SC2PATH = "~/StarCraftII"  # pysc2's default install folder on Linux


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
    # Where StarCraft II is installed (``SC2PATH``); only the engine backend of the frames asset uses it.
    sc2path: str = DEFAULT_SC2PATH

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
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
            sc2path=sc2path_from_env(env),
        )


@dataclass(frozen=True)
class AwsSettings:
    """The standard AWS variables.

    boto3 (through ``dagster_aws.s3.S3Resource``) and s3fs read them from the environment themselves;
    DuckDB's httpfs does not, so its S3 secret is built from these (``warehouse/sql.py``). The secret
    key and session token stay out of ``repr``.
    """

    endpoint_url: str | None = None  # AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL: a local S3 server
    region: str | None = None  # AWS_REGION, else AWS_DEFAULT_REGION
    access_key_id: str | None = None  # AWS_ACCESS_KEY_ID
    secret_access_key: str | None = field(default=None, repr=False)  # AWS_SECRET_ACCESS_KEY
    session_token: str | None = field(default=None, repr=False)  # AWS_SESSION_TOKEN

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AwsSettings:
        env = os.environ if environ is None else environ
        return cls(
            endpoint_url=env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None,
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
            access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
            secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
            session_token=env.get("AWS_SESSION_TOKEN") or None,
        )

    def storage_options(self) -> dict[str, str]:
        """fsspec/s3fs options.

        Passing the endpoint explicitly (s3fs also reads it from the environment) makes it part of
        fsspec's filesystem cache key, so a process that talks to two S3 endpoints never mixes them up.
        """
        return {"endpoint_url": self.endpoint_url} if self.endpoint_url else {}


def s3_endpoint_url(environ: Mapping[str, str] | None = None) -> str | None:
    """The S3 endpoint override (a local S3 server), or None for AWS itself."""
    return AwsSettings.from_env(environ).endpoint_url


def aws_region(environ: Mapping[str, str] | None = None) -> str | None:
    return AwsSettings.from_env(environ).region


def s3_storage_options(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """fsspec/s3fs options from the AWS variables (see ``AwsSettings.storage_options``)."""
    return AwsSettings.from_env(environ).storage_options()


def sc2path_from_env(environ: Mapping[str, str] | None = None) -> str:
    """``$SC2PATH`` as pysc2 reads it, else pysc2's Linux default."""
    env = os.environ if environ is None else environ
    return env.get("SC2PATH") or DEFAULT_SC2PATH


def sc2_game_environ(sc2path: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a StarCraft II process starts with: this process's, with ``<sc2path>/Libs/``
    appended to ``LD_LIBRARY_PATH``, as pysc2's Linux run config builds it (the game's own libraries)."""
    env = dict(os.environ if environ is None else environ)
    libs = os.path.join(os.path.expanduser(sc2path), "Libs/")
    env["LD_LIBRARY_PATH"] = ":".join(filter(None, [env.get("LD_LIBRARY_PATH"), libs]))
    return env


def dagster_home(environ: Mapping[str, str] | None = None) -> str | None:
    """``DAGSTER_HOME`` (Dagster reads it itself; this is for messages that name it)."""
    env = os.environ if environ is None else environ
    return env.get("DAGSTER_HOME")


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
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PlayerRunsSettings:
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
