"""sc2_replay_metadata and sc2_ground_truth_frames through materialize on the real replays, local and S3."""

import datetime as dt
from pathlib import Path

import pytest
from dagster import DagsterInstance, RunConfig, materialize

from replay_assets.definitions import build_resources
from replay_assets.landing.assets import raw_replay_listings
from replay_assets.settings import Settings
from replay_assets.sources.sc2.assets import (
    Sc2FramesConfig,
    Sc2MetadataConfig,
    sc2_ground_truth_frames,
    sc2_replay_metadata,
)
from replay_assets.warehouse.sql import connect
from replay_assets_tests.conftest import SC2_DAY, landing_and_warehouse
from replay_assets_tests.sources.sc2.standin import BUILD, install_standin

ASSETS = [raw_replay_listings, sc2_replay_metadata, sc2_ground_truth_frames]
TRUNCATED = "truncated_copy.SC2Replay"
MISSING_FILES = "anonymized_4.1.2.60604_missing_files.SC2Replay"


def _landing(shared_landing: Path) -> Path:
    folder = shared_landing / "sc2" / SC2_DAY.isoformat()
    good = (folder / "ladder_4.7.0.70154.SC2Replay").read_bytes()
    (folder / TRUNCATED).write_bytes(good[: len(good) // 2])
    return folder


def _materialize(
    landing: str, warehouse: str, metadata: Sc2MetadataConfig, frames: Sc2FramesConfig, sc2path: Path
):
    settings = Settings(landing, warehouse, dt.date(2025, 1, 1), sc2path=str(sc2path))
    return materialize(
        ASSETS,
        resources=build_resources(settings),
        instance=DagsterInstance.ephemeral(),
        partition_key=SC2_DAY.isoformat(),
        run_config=RunConfig(
            ops={"sc2_replay_metadata": metadata, "sc2_ground_truth_frames_assets": frames}
        ),
        raise_on_error=False,
    )


@pytest.fixture
def no_engine(tmp_path: Path) -> Path:
    """An SC2PATH with no StarCraft II under it."""
    return tmp_path / "no_starcraft_here"


@pytest.mark.parametrize("storage", ["local", "s3"])
def test_every_replay_judged_and_valid_ones_framed(
    storage: str, shared_landing: Path, tmp_path: Path, request, no_engine: Path
) -> None:
    folder = _landing(shared_landing)
    landing, warehouse = landing_and_warehouse(storage, shared_landing, tmp_path, request)
    result = _materialize(landing, warehouse, Sc2MetadataConfig(), Sc2FramesConfig(parallel=2), no_engine)
    assert result.success
    conn = connect(warehouse=warehouse)
    names = sorted(p.name for p in folder.iterdir())
    judged = dict(
        conn.sql(
            "SELECT regexp_extract(source_uri, '[^/]+$'), valid FROM sc2_replay_metadata ORDER BY 1"
        ).fetchall()
    )
    assert sorted(judged) == names  # every replay has a row, decodable or not
    assert judged[TRUNCATED] is False and judged[MISSING_FILES] is False
    reasons = conn.sql(
        "SELECT invalid_reasons FROM sc2_replay_metadata WHERE source_uri LIKE '%missing_files%'"
    ).fetchone()[0]
    assert any("replay.details" in r or "missing" in r for r in reasons)

    valid_ids = {r[0] for r in conn.sql("SELECT replay_id FROM sc2_replay_metadata WHERE valid").fetchall()}
    assert valid_ids, "some real replays are valid by the seed's rules"
    framed = conn.sql(
        "SELECT replay_id, count(*), min(game_loop), bool_and(backend = 'tracker') "
        "FROM sc2_ground_truth_frames GROUP BY 1"
    ).fetchall()
    assert {r[0] for r in framed} == valid_ids
    assert all(r[2] == 0 and r[3] for r in framed)
    order = conn.sql("SELECT replay_id, game_loop, player_id FROM sc2_ground_truth_frames").fetchall()
    assert order == sorted(order)  # written sorted: byte-identical rebuilds
    assert conn.sql("SELECT count(*) FROM sc2_replay_failures").fetchone()[0] == 0

    metadata = result.asset_materializations_for_node("sc2_replay_metadata")[0].metadata
    assert metadata["replays"].value == len(names) and metadata["valid"].value == len(valid_ids)
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert (checks["sc2_replays_decoded"], checks["sc2_frames_written"]) == (False, True)


def test_invalid_replays_framed_on_request_and_failures_listed(
    shared_landing: Path, tmp_path: Path, request, no_engine: Path
) -> None:
    _landing(shared_landing)
    landing, warehouse = landing_and_warehouse("local", shared_landing, tmp_path, request)
    lenient = Sc2MetadataConfig(min_game_loops=None, players=None, min_apm=None, min_mmr=None)
    frames = Sc2FramesConfig(only_valid=False, parallel=1)
    result = _materialize(landing, warehouse, lenient, frames, no_engine)
    assert result.success
    conn = connect(warehouse=warehouse)
    failures = dict(
        conn.sql(
            "SELECT regexp_extract(source_uri, '[^/]+$'), reason FROM sc2_replay_failures ORDER BY 1"
        ).fetchall()
    )
    assert sorted(failures) == sorted([MISSING_FILES, TRUNCATED])
    assert all(name in reason for name, reason in failures.items())  # each reason names its file
    framed = conn.sql("SELECT count(DISTINCT replay_id) FROM sc2_ground_truth_frames").fetchone()[0]
    total = conn.sql("SELECT count(*) FROM sc2_replay_metadata").fetchone()[0]
    assert framed == total - 2  # everything else of the day was written


def test_engine_backend_without_the_build_fails_per_replay(
    shared_landing: Path, tmp_path: Path, request, no_engine: Path
) -> None:
    landing, warehouse = landing_and_warehouse("local", shared_landing, tmp_path, request)
    frames = Sc2FramesConfig(backend="engine")
    result = _materialize(landing, warehouse, Sc2MetadataConfig(), frames, no_engine)
    assert result.success
    conn = connect(warehouse=warehouse)
    reasons = [r[0] for r in conn.sql("SELECT reason FROM sc2_replay_failures").fetchall()]
    valid = conn.sql("SELECT count(*) FROM sc2_replay_metadata WHERE valid").fetchone()[0]
    assert len(reasons) == valid and all("has no Base" in r for r in reasons)
    assert conn.sql("SELECT count(*) FROM sc2_ground_truth_frames").fetchone()[0] == 0
    checks = {c.check_name: (c.passed, c.severity.value) for c in result.get_asset_check_evaluations()}
    assert checks["sc2_frames_written"] == (False, "ERROR")  # every chosen replay failed: loudly


@pytest.mark.slow
def test_auto_backend_plays_replays_of_the_installed_build_in_the_engine(
    shared_landing: Path, tmp_path: Path, request
) -> None:
    """SC2PATH holds (a stand-in of) Base75689: its replays go through pysc2 and the engine pool, the
    others through tracker events, and the two streams merge into one sorted partition."""
    sc2path = tmp_path / "StarCraftII"
    install_standin(sc2path, BUILD)
    landing, warehouse = landing_and_warehouse("local", shared_landing, tmp_path, request)
    lenient = Sc2MetadataConfig(min_game_loops=None, players=None, min_apm=None, min_mmr=None)
    result = _materialize(landing, warehouse, lenient, Sc2FramesConfig(only_valid=False), sc2path)
    assert result.success
    conn = connect(warehouse=warehouse)
    backends = dict(
        conn.sql(
            "SELECT m.base_build = 75689, list_distinct(list(f.backend)) FROM sc2_ground_truth_frames f "
            "JOIN sc2_replay_metadata m USING (replay_id) GROUP BY 1"
        ).fetchall()
    )
    assert backends == {True: ["engine"], False: ["tracker"]}
    engine_rows = conn.sql(
        "SELECT count(DISTINCT replay_id), count(*), max(game_loop) FROM sc2_ground_truth_frames "
        "WHERE backend = 'engine'"
    ).fetchone()
    assert engine_rows == (3, 3 * 7 * 2, 48)  # replay_01/05/09; the stand-in plays 48 loops, 2 players
    order = conn.sql("SELECT replay_id, game_loop, player_id FROM sc2_ground_truth_frames").fetchall()
    assert order == sorted(order)
    failed = [r[0] for r in conn.sql("SELECT source_uri FROM sc2_replay_failures").fetchall()]
    assert [Path(uri).name for uri in failed] == [MISSING_FILES]
