"""The landing zone as a list of files with bytes behind them: a local folder or an S3 prefix.

Listing uses metadata only (names, sizes, modification times); bytes are read file by file, on
demand, so listing one day never reads the whole zone. The S3 backend takes a boto3 client (the
Dagster resource hands it the one from ``dagster_aws.s3.S3Resource``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from replay_assets.errors import ReplayAssetsError


class LandingZoneError(ReplayAssetsError):
    """The landing zone itself cannot be listed (missing folder or bucket, no permission)."""


class LandingReadError(ReplayAssetsError, OSError):
    """One file of the landing zone cannot be read; the message names it."""


class LandingUnavailableError(ReplayAssetsError):
    """The landing zone's storage cannot be reached at all (no connection, no credentials): not one
    file's fault, so the day fails loudly instead of recording every file as a failure."""


@dataclass(frozen=True)
class LandingFile:
    relative_path: str  # POSIX path below the landing root, e.g. "metta/arena/2025-01-02/x.json.z"
    uri: str
    size_bytes: int
    modified_at: dt.datetime  # UTC

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(self.relative_path.split("/"))


class LandingBackend(Protocol):
    uri: str

    def list_files(self, under: str = "") -> Iterator[LandingFile]: ...

    def open(self, relative_path: str) -> contextlib.AbstractContextManager[BinaryIO]: ...

    def rename(self, relative_path: str, new_relative_path: str) -> None: ...

    def folder_exists(self, relative_path: str) -> bool: ...

    def write_bytes(self, relative_path: str, data: bytes) -> None: ...

    def local_copy(
        self, relative_path: str, companions: tuple[str, ...] = ()
    ) -> contextlib.AbstractContextManager[Path]: ...


def _utc(timestamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)


class LocalLanding:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.uri = str(self.root)

    def list_files(self, under: str = "") -> Iterator[LandingFile]:
        """Every file below the root (or below the folder ``under``, relative to it), sorted by path."""
        if not self.root.is_dir():
            raise LandingZoneError(f"landing zone {self.uri} does not exist or is not a folder")
        errors: list[OSError] = []
        for dirpath, dirnames, filenames in os.walk(self.root / under, onerror=errors.append):
            dirnames.sort()
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                try:
                    st = os.stat(full)
                except OSError:
                    st = os.lstat(full)  # a dangling link: listed, then reported unreadable on read
                rel = Path(full).relative_to(self.root).as_posix()
                yield LandingFile(rel, full, st.st_size, _utc(st.st_mtime))
        if errors:
            raise LandingZoneError(f"landing zone {self.uri}: cannot list {errors[0].filename}: {errors[0]}")

    @contextlib.contextmanager
    def open(self, relative_path: str) -> Iterator[BinaryIO]:
        full = self.root / relative_path
        try:
            handle = open(full, "rb")  # noqa: SIM115 - closed below, after the caller's block
        except OSError as exc:
            raise LandingReadError(f"{full}: cannot read: {exc.strerror or exc}") from exc
        with handle:
            yield handle

    @contextlib.contextmanager
    def local_copy(self, relative_path: str, companions: tuple[str, ...] = ()) -> Iterator[Path]:
        yield self.root / relative_path

    def rename(self, relative_path: str, new_relative_path: str) -> None:
        os.replace(self.root / relative_path, self.root / new_relative_path)

    def folder_exists(self, relative_path: str) -> bool:
        return (self.root / relative_path).is_dir()

    def write_bytes(self, relative_path: str, data: bytes) -> None:
        (self.root / relative_path).write_bytes(data)


class S3Landing:
    def __init__(self, client: Any, uri: str):
        if not uri.startswith("s3://"):
            raise ValueError(f"not an s3:// URI: {uri}")
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")

    def _key(self, relative_path: str) -> str:
        return f"{self.prefix}/{relative_path}" if self.prefix else relative_path

    def list_files(self, under: str = "") -> Iterator[LandingFile]:
        from botocore.exceptions import BotoCoreError, ClientError

        root_prefix = f"{self.prefix}/" if self.prefix else ""
        list_prefix = root_prefix + (under.strip("/") + "/" if under.strip("/") else "")
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=list_prefix):
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    if key.endswith("/"):
                        continue
                    rel = key[len(root_prefix) :]
                    modified = obj["LastModified"].astimezone(dt.UTC)
                    yield LandingFile(rel, f"s3://{self.bucket}/{key}", obj["Size"], modified)
        except (ClientError, BotoCoreError) as exc:
            raise LandingZoneError(f"landing zone {self.uri} cannot be listed: {exc}") from exc

    @contextlib.contextmanager
    def open(self, relative_path: str) -> Iterator[BinaryIO]:
        from botocore.exceptions import BotoCoreError, ClientError

        key = self._key(relative_path)
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except ClientError as exc:  # the server answered: this key is missing or refused
            raise LandingReadError(f"s3://{self.bucket}/{key}: cannot read: {exc}") from exc
        except BotoCoreError as exc:  # no answer at all (endpoint, credentials)
            raise LandingUnavailableError(
                f"landing zone {self.uri} unreachable reading {key}: {exc}"
            ) from exc
        with contextlib.closing(body):
            yield body

    def rename(self, relative_path: str, new_relative_path: str) -> None:
        """Copy then delete: S3 has no rename; the new key is complete before the old one goes."""
        source = {"Bucket": self.bucket, "Key": self._key(relative_path)}
        self.client.copy_object(CopySource=source, Bucket=self.bucket, Key=self._key(new_relative_path))
        self.client.delete_object(**source)

    def folder_exists(self, relative_path: str) -> bool:
        """S3 has no folders: one exists when any key lies below it."""
        prefix = self._key(relative_path.strip("/")) + "/"
        return bool(self.client.list_objects_v2(Bucket=self.bucket, Prefix=prefix, MaxKeys=1).get("KeyCount"))

    def write_bytes(self, relative_path: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(relative_path), Body=data)

    @contextlib.contextmanager
    def local_copy(self, relative_path: str, companions: tuple[str, ...] = ()) -> Iterator[Path]:
        """Download a file (and any companion suffixes that exist, e.g. SQLite's ``-wal``) to a temp dir."""
        with tempfile.TemporaryDirectory(prefix="replay-landing-") as tmp:
            target = Path(tmp) / Path(relative_path).name
            for suffix in ("", *companions):
                destination = target.with_name(target.name + suffix)
                try:
                    with self.open(relative_path + suffix) as body, open(destination, "wb") as out:
                        shutil.copyfileobj(body, out, 1 << 20)
                except LandingReadError:
                    if not suffix:
                        raise
            yield target


def open_landing(uri: str, s3_client_factory: Any = None) -> LandingBackend:
    """The backend for a landing URI; ``s3_client_factory`` builds the boto3 client when needed."""
    if uri.startswith("s3://"):
        if s3_client_factory is None:
            raise ValueError(f"{uri}: an S3 landing zone needs an S3 client")
        return S3Landing(s3_client_factory(), uri)
    return LocalLanding(uri)


def relative_path_of(backend: LandingBackend, uri: str) -> str:
    """The path below the landing root of a URI the backend listed (warehouse rows keep full URIs)."""
    prefix = backend.uri.rstrip("/") + "/"
    if not uri.startswith(prefix):
        raise LandingReadError(f"{uri} is not inside the landing zone {backend.uri}")
    return uri[len(prefix) :]
