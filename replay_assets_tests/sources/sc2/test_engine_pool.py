"""The engine pool: worker processes that launch the stand-in SC2 binary through pysc2, survive its crashes
and hangs, restart it on schedule, and return results in input order. Plus the real engine when installed."""

import datetime as dt
import os
from pathlib import Path

import pyarrow as pa
import pytest

from replay_assets.settings import sc2path_from_env
from replay_assets.sources.contract import Lineage
from replay_assets.sources.sc2.assets import Sc2Engine
from replay_assets.sources.sc2.engine import Sc2EngineError
from replay_assets.sources.sc2.engine_pool import (
    Sc2EnginePool,
    _run_config,
    default_sc2path,
    engine_can_play,
    installed_builds,
)
from replay_assets_tests.sources.sc2.standin import BUILD, install_standin, replay_bytes, scenario

DAY = dt.date(2025, 10, 15)


@pytest.fixture
def sc2path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "StarCraftII"
    install_standin(root)
    monkeypatch.setenv("SC2_STANDIN_LAUNCH_LOG", str(tmp_path / "launches.log"))
    return root


def launches(sc2path: Path) -> list[int]:
    log = sc2path.parent / "launches.log"
    return [int(line) for line in log.read_text().split()] if log.exists() else []


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def item(name: str, **game: object) -> tuple[bytes, Lineage]:
    data = replay_bytes(scenario(**game))
    return data, Lineage.of_bytes(data, DAY, f"landing/sc2/{DAY}/{name}.SC2Replay")


def rows(result: list[pa.RecordBatch] | Exception) -> int:
    assert not isinstance(result, Exception), result
    return sum(batch.num_rows for batch in result)


@pytest.mark.slow
def test_results_in_input_order_from_two_workers(sc2path: Path) -> None:
    items = [item(f"r{i}", game_loops=8 * (3 - i % 3)) for i in range(7)]
    with Sc2EnginePool(sc2path, workers=2, base_build=BUILD) as pool:  # a look-ahead window of 4
        results = list(pool.frames(items))
    assert [source for source, _ in results] == [source for _, source in items]
    assert [rows(result) for _, result in results] == [8, 6, 4, 8, 6, 4, 8]  # (loops/8 + 1) x 2
    first = pa.Table.from_batches(results[0][1])
    assert set(first.column("replay_id").to_pylist()) == {items[0][1].sha256}
    assert set(first.column("source_uri").to_pylist()) == {items[0][1].uri}
    assert len(launches(sc2path)) == 2  # one instance per worker, reused


@pytest.mark.slow
def test_crash_mid_replay_fails_that_replay_and_a_fresh_instance_plays_the_next(sc2path: Path) -> None:
    items = [item("crashes", crash_at=16), item("fine")]
    with Sc2EnginePool(sc2path, workers=1) as pool:
        (_, crashed), (_, fine) = pool.frames(items)
    assert isinstance(crashed, Sc2EngineError)
    assert str(crashed).startswith(f"{items[0][1].uri}: SC2 failed during the replay")
    assert rows(fine) == 12
    crashed_pid, _ = launches(sc2path)
    assert not alive(crashed_pid)


@pytest.mark.slow
def test_hung_replay_times_out_and_its_game_is_killed(sc2path: Path) -> None:
    items = [item("hangs", hang_at=8), item("fine")]
    with Sc2EnginePool(sc2path, workers=1, replay_timeout_s=5) as pool:
        (_, hung), (_, fine) = pool.frames(items)
    assert isinstance(hung, Sc2EngineError)
    assert str(hung) == f"{items[0][1].uri}: timed out after 5 s; SC2 was killed"
    assert rows(fine) == 12
    hung_pid, _ = launches(sc2path)
    assert not alive(hung_pid)


@pytest.mark.slow
def test_instance_restarts_every_n_replays(sc2path: Path) -> None:
    items = [item(f"r{i}", game_loops=8) for i in range(5)]
    with Sc2EnginePool(sc2path, workers=1, restart_every=2) as pool:
        assert [rows(result) for _, result in pool.frames(items)] == [4] * 5
    pids = launches(sc2path)
    assert len(pids) == 3  # replays 1-2, 3-4, 5
    assert not any(alive(pid) for pid in pids)  # closing the pool quits the last game too


@pytest.mark.slow
def test_wrong_build_is_a_clear_failure_and_the_instance_carries_on(sc2path: Path) -> None:
    items = [item("newer", base_build=75800), item("fine", game_loops=8)]
    with Sc2EnginePool(sc2path, workers=1) as pool:
        (_, refused), (_, fine) = pool.frames(items)
    reason = "replay base build 75800 (4.10.0.75800) needs SC2 Base75800; this engine is Base75689"
    assert str(refused) == f"{items[0][1].uri}: {reason}"
    assert rows(fine) == 4
    assert len(launches(sc2path)) == 1


@pytest.mark.slow
def test_without_a_fixed_build_each_replay_gets_an_instance_of_its_own_build(sc2path: Path) -> None:
    install_standin(sc2path, 76114)  # 4.10.3, now the newest installed
    items = [item("a", game_loops=8), item("b", game_loops=8, base_build=76114), item("c", base_build=75800)]
    with Sc2EnginePool(sc2path, workers=1) as pool:
        (_, a), (_, b), (_, c) = pool.frames(items)
    assert rows(a) == 4 and rows(b) == 4
    assert str(c).endswith("needs SC2 Base75800; this engine is Base76114")  # not installed
    assert len(launches(sc2path)) == 3  # newest, then 75689 for "a", then 76114 again for "b"


@pytest.mark.slow
def test_the_newest_build_is_started_even_when_pysc2_does_not_know_it(sc2path: Path) -> None:
    install_standin(sc2path, 99999)  # newer than any build pysc2 knows, as a fresh SC2 install is
    items = [item("known", game_loops=8), item("newest", game_loops=8, base_build=99999)]
    with Sc2EnginePool(sc2path, workers=1) as pool:
        (_, known), (_, newest) = pool.frames(items)
    assert rows(known) == 4 and rows(newest) == 4
    assert len(launches(sc2path)) == 3  # newest, then 75689 for "known", then the newest again


def test_the_install_reaches_pysc2_as_an_argument_not_through_the_environment(
    sc2path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SC2PATH", str(sc2path.parent / "nowhere"))  # what the workers inherit, too
    config = _run_config(str(sc2path), None)
    assert config.data_dir == str(sc2path) and config.version.build_version == BUILD
    assert config.env["LD_LIBRARY_PATH"].split(":")[-1] == f"{sc2path}/Libs/"  # as pysc2's Linux config
    assert os.environ["SC2PATH"] == str(sc2path.parent / "nowhere")  # untouched


@pytest.mark.slow
def test_workers_play_from_the_pools_install_whatever_sc2path_says(
    sc2path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SC2PATH", str(sc2path.parent / "nowhere"))  # inherited by the spawned workers
    with Sc2EnginePool(sc2path, workers=1) as pool:
        [(_, result)] = pool.frames([item("r", game_loops=8)])
    assert rows(result) == 4


def test_missing_install_is_a_failure_per_replay(tmp_path: Path) -> None:
    with Sc2EnginePool(tmp_path / "nowhere", workers=1) as pool:
        [(_, result)] = pool.frames([item("any")])
    assert isinstance(result, Sc2EngineError) and "could not start SC2" in str(result)


@pytest.mark.slow
def test_stopping_early_leaves_no_game_running(sc2path: Path) -> None:
    items = [item(f"r{i}", game_loops=8) for i in range(4)]
    with Sc2EnginePool(sc2path, workers=2) as pool:
        for _ in pool.frames(items):
            break
    assert launches(sc2path) and not any(alive(pid) for pid in launches(sc2path))


@pytest.mark.slow
def test_a_terminated_worker_quits_its_game(sc2path: Path) -> None:
    """Daemonic workers get SIGTERM when the parent exits without closing the pool: no game is left behind."""
    with Sc2EnginePool(sc2path, workers=1) as pool:
        [(_, result)] = pool.frames([item("r", game_loops=8)])
        assert rows(result) == 4
        [worker] = pool._pool
        worker.process.terminate()
        worker.process.join(10)
        [pid] = launches(sc2path)
        assert worker.process.exitcode == 128 + 15 and not alive(pid)  # before close() kills the group


def test_engine_can_play_only_builds_a_pool_can_start(sc2path: Path) -> None:
    """Installed is not enough: the pool starts the newest build, or one pysc2 knows the data version of."""
    assert installed_builds(sc2path) == [75689]
    (sc2path / "Versions" / "Base12345").mkdir()  # installed, older, unknown to pysc2: cannot be started
    (sc2path / "Versions" / "Base99999").mkdir()  # installed, newest: SC2 finds its own data version
    assert installed_builds(sc2path) == [12345, 75689, 99999]
    assert [engine_can_play(sc2path, b) for b in (12345, 75689, 75800, 99999)] == [False, True, False, True]
    assert [engine_can_play(sc2path, b, fixed_build=75689) for b in (75689, 99999)] == [True, False]
    assert Sc2Engine(sc2path=str(sc2path), base_build=75689).can_play(99999) is False
    assert installed_builds(sc2path / "nowhere") == []


@pytest.mark.slow
def test_engine_can_play_and_the_resource(sc2path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert engine_can_play(sc2path, 75689) and not engine_can_play(sc2path, 75800)
    monkeypatch.setenv("SC2PATH", str(sc2path))
    assert default_sc2path() == str(sc2path)
    engine = Sc2Engine(workers=1, restart_every=7, replay_timeout_s=30, step_mul=4)
    assert engine.sc2path == str(sc2path) and engine.can_play(75689)
    with engine.pool() as pool:
        assert (pool.workers, pool.settings.restart_every, pool.settings.step_mul) == (1, 7, 4)
        [(_, result)] = pool.frames([item("r", game_loops=8)])
    assert rows(result) == 6  # loops 0, 4, 8


REAL_SC2 = Path(sc2path_from_env()).expanduser()


@pytest.mark.slow
@pytest.mark.skipif(
    not engine_can_play(REAL_SC2, 75689),
    reason=f"no StarCraft II 4.10 (Versions/Base75689) under SC2PATH={REAL_SC2}: the real engine cannot run",
)
def test_real_engine_on_replays_that_match_the_last_linux_build(shared_data: Path) -> None:
    items = []
    for name in ("replay_01", "replay_05", "replay_09"):
        data = (shared_data / "sc2" / f"{name}.SC2Replay").read_bytes()
        items.append((data, Lineage.of_bytes(data, DAY, f"sc2/{name}.SC2Replay")))
    with Sc2EnginePool(REAL_SC2, workers=2, base_build=75689, replay_timeout_s=1800, step_mul=64) as pool:
        for source, result in pool.frames(items):
            assert not isinstance(result, Exception), result
            table = pa.Table.from_batches(result)
            assert table.num_rows > 0 and set(table.column("player_id").to_pylist()) == {1, 2}
            first = table.slice(0, 2).to_pylist()
            assert all(row["minerals"] == 50 and row["units"] for row in first), source.uri
