"""Settings parsed from explicit environ mappings: the one module that reads the environment."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import duckdb
import pytest

from replay_assets.settings import (
    DEFAULT_SC2PATH,
    AwsSettings,
    PlayerRunsSettings,
    Settings,
    aws_region,
    dagster_home,
    s3_endpoint_url,
    s3_storage_options,
    sc2_game_environ,
    sc2path_from_env,
)
from replay_assets.warehouse.sql import _configure_s3


def test_settings_defaults_from_an_empty_environ() -> None:
    settings = Settings.from_env({})
    assert settings.landing_uri == os.path.abspath("data/landing")
    assert settings.warehouse_uri == os.path.abspath("data/warehouse")
    assert settings.partitions_start == dt.date(2025, 1, 1)
    assert settings.partitions_include_today is False
    assert settings.sc2path == DEFAULT_SC2PATH == "~/StarCraftII"


def test_settings_from_an_explicit_environ() -> None:
    settings = Settings.from_env(
        {
            "REPLAY_LANDING_URI": "s3://bucket/landing/",
            "REPLAY_WAREHOUSE_URI": "~/warehouse",
            "REPLAY_PARTITIONS_START": "2025-10-01",
            "REPLAY_PARTITIONS_INCLUDE_TODAY": " Yes ",
            "SC2PATH": "/opt/StarCraftII",
        }
    )
    assert settings.landing_uri == "s3://bucket/landing"
    assert settings.warehouse_uri == str(Path("~/warehouse").expanduser())
    assert settings.partitions_start == dt.date(2025, 10, 1)
    assert settings.partitions_include_today is True
    assert settings.sc2path == "/opt/StarCraftII"
    with pytest.raises(ValueError, match="REPLAY_PARTITIONS_START must be YYYY-MM-DD, got '10/01/2025'"):
        Settings.from_env({"REPLAY_PARTITIONS_START": "10/01/2025"})


def test_sc2path_is_pysc2s_rule() -> None:
    assert sc2path_from_env({}) == sc2path_from_env({"SC2PATH": ""}) == "~/StarCraftII"
    assert sc2path_from_env({"SC2PATH": "/games/sc2"}) == "/games/sc2"


def test_the_game_gets_its_libs_on_ld_library_path() -> None:
    assert sc2_game_environ("/games/sc2", {"HOME": "/root"}) == {
        "HOME": "/root",
        "LD_LIBRARY_PATH": "/games/sc2/Libs/",
    }
    env = sc2_game_environ("/games/sc2", {"LD_LIBRARY_PATH": "/usr/local/lib"})
    assert env["LD_LIBRARY_PATH"] == "/usr/local/lib:/games/sc2/Libs/"


def test_aws_settings_and_their_fallbacks() -> None:
    assert AwsSettings.from_env({}) == AwsSettings()
    assert s3_storage_options({}) == {} and s3_endpoint_url({}) is None and aws_region({}) is None
    fallbacks = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_DEFAULT_REGION": "eu-west-1"}
    assert s3_endpoint_url(fallbacks) == "http://127.0.0.1:9000" and aws_region(fallbacks) == "eu-west-1"
    env = {
        **fallbacks,
        "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9001",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "AKID",
        "AWS_SECRET_ACCESS_KEY": "very-secret",
        "AWS_SESSION_TOKEN": "session-token",
    }
    aws = AwsSettings.from_env(env)
    assert aws == AwsSettings("http://127.0.0.1:9001", "us-east-1", "AKID", "very-secret", "session-token")
    assert aws.storage_options() == s3_storage_options(env) == {"endpoint_url": "http://127.0.0.1:9001"}
    assert "very-secret" not in repr(aws) and "session-token" not in repr(aws)


def test_duckdb_secret_comes_from_the_settings_passed_in(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_REGION", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        monkeypatch.setenv(name, "from-the-environment")
    conn = duckdb.connect(":memory:")
    aws = AwsSettings("http://127.0.0.1:9000", "eu-west-1", "AKID", "shh", "tok")
    _configure_s3(conn, aws)
    query = "SELECT secret_string FROM duckdb_secrets() WHERE name = 'replay_assets_s3'"
    [secret] = conn.sql(query).fetchone()
    assert "from-the-environment" not in secret
    for part in ("key_id=AKID", "region=eu-west-1", "endpoint=127.0.0.1:9000", "use_ssl=false"):
        assert part in secret
    assert "session_token=redacted" in secret  # given, and kept out of the listing by DuckDB


def test_player_runs_and_dagster_home_from_an_explicit_environ(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text('{"PLAYER_RUNS": {"ONLINE_INJECTION": true, "MAX_FILES_PER_UPDATE": 3}}')
    env = {"REPLAY_TMRL_CONFIG": str(config), "REPLAY_PLAYER_RUNS_MAX_FILES_PER_UPDATE": "5"}
    settings = PlayerRunsSettings.from_env(env)
    assert settings.ONLINE_INJECTION is True and settings.MAX_FILES_PER_UPDATE == 5
    assert PlayerRunsSettings.from_env({}) == PlayerRunsSettings()
    assert dagster_home({}) is None and dagster_home({"DAGSTER_HOME": "/srv/dagster"}) == "/srv/dagster"
