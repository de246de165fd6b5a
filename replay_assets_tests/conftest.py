"""Shared fixtures: the real files in ../shared/data, landing zones built from them, a local S3 server."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

# Days the test landing zone puts the shared files on (see build_landing_from_shared).
METTA_DAY = dt.date(2025, 10, 14)
SC2_DAY = dt.date(2025, 10, 15)
LEGACY_TMRL_MTIME = dt.datetime(2025, 10, 15, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real replay files not found at {SHARED_DATA} (../shared beside the checkout)")
    return SHARED_DATA


def build_landing_from_shared(shared: Path, root: Path) -> Path:
    """A landing zone in the documented layout, made of copies of the shared real files."""
    for src in sorted((shared / "metta").iterdir()):
        _copy(src, root / "metta" / METTA_DAY.isoformat() / src.name)
    for src in sorted((shared / "sc2").iterdir()):
        _copy(src, root / "sc2" / SC2_DAY.isoformat() / src.name)
    for src in sorted((shared / "townlet").rglob("*")):
        if src.is_file():
            _copy(src, root / "townlet" / src.relative_to(shared / "townlet"))
    for src in sorted((shared / "tmrl" / "player_runs").iterdir()):
        _copy(src, root / "tmrl" / "player_runs" / src.name)
    legacy = root / "tmrl" / "player_runs" / "legacy_run_0001.pkl"
    os.utime(legacy, (LEGACY_TMRL_MTIME.timestamp(), LEGACY_TMRL_MTIME.timestamp()))
    return root


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    dst.chmod(0o644)


@pytest.fixture
def shared_landing(shared_data: Path, tmp_path: Path) -> Path:
    return build_landing_from_shared(shared_data, tmp_path / "landing")


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1, reached over HTTP like AWS."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def use_s3_endpoint(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")


def new_bucket(endpoint: str) -> str:
    name = f"replays-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_bucket(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket on the local S3 server, with the AWS variables pointing at it."""
    use_s3_endpoint(monkeypatch, moto_server)
    return new_bucket(moto_server)


def upload_tree(local_root: Path, bucket: str, prefix: str) -> None:
    client = boto3.client("s3")
    for path in sorted(local_root.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(local_root).as_posix()}")


def landing_and_warehouse(
    storage: str, landing: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> tuple[str, str]:
    """URIs of a landing zone (uploaded to a fresh bucket for "s3") and an empty warehouse beside it."""
    if storage == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        upload_tree(landing, bucket, "landing")
        return f"s3://{bucket}/landing", f"s3://{bucket}/warehouse"
    return str(landing), str(tmp_path / "warehouse")
