"""One loader shape: every loader takes ``warehouse=`` keyword-only (default ``REPLAY_WAREHOUSE_URI``), days
as ``start_date``/``end_date``/``dates`` and row filters as ``filters=``; old spellings still work for one
release with a ``DeprecationWarning`` naming ``warehouse=``. Run on the demo warehouse, locally and on S3."""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path

import pytest

from replay_assets.datasets import (
    DemoBuffer,
    MettaSampleStream,
    ReplayDataset,
    Sc2FramesDataset,
    TownletRecordings,
    TownletStepDataset,
    connect,
    export_tmrl_memory,
)
from replay_assets_tests.conftest import upload_tree
from replay_assets_tests.warehouse.conftest import DEMO_DAYS

DAY = DEMO_DAYS[1].isoformat()
LOADERS = [
    DemoBuffer,
    MettaSampleStream,
    ReplayDataset,
    Sc2FramesDataset,
    TownletRecordings,
    TownletStepDataset,
]


def _parameters(loader: object) -> dict[str, inspect.Parameter]:
    target = loader.__init__ if isinstance(loader, type) else loader  # type: ignore[misc]
    return dict(inspect.signature(target).parameters)


@pytest.mark.parametrize("loader", [*LOADERS, connect, export_tmrl_memory], ids=lambda f: f.__name__)
def test_every_loader_takes_warehouse_keyword_only(loader: object) -> None:
    parameters = _parameters(loader)
    assert parameters["warehouse"].kind is inspect.Parameter.KEYWORD_ONLY
    assert parameters["warehouse"].default is None  # REPLAY_WAREHOUSE_URI
    if loader not in (TownletRecordings, connect):  # these choose no days
        assert {"start_date", "end_date", "dates", "filters"} <= set(parameters), loader


def test_replay_dataset_keeps_its_original_signature() -> None:
    names = list(_parameters(ReplayDataset))[1:8]
    assert names == ["start_date", "end_date", "dates", "base_path", "filters", "columns", "missing"]


def test_default_is_the_warehouse_setting(demo_warehouse: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLAY_WAREHOUSE_URI", str(demo_warehouse))
    assert len(ReplayDataset(dates=[DAY])) == len(ReplayDataset(dates=[DAY], warehouse=str(demo_warehouse)))
    assert TownletRecordings().warehouse_uri == str(demo_warehouse)
    assert len(DemoBuffer(layout="lidar")) > 0
    assert connect().sql("SELECT count(*) FROM raw_replay_listings").fetchone()[0] > 0


def test_replay_dataset_base_path_and_warehouse(demo_warehouse: Path) -> None:
    uri = str(demo_warehouse)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # the original spelling is not deprecated
        original = ReplayDataset(DAY, DAY, None, uri)
        named = ReplayDataset(start_date=DAY, end_date=DAY, base_path=uri)
    new = ReplayDataset(start_date=DAY, end_date=DAY, warehouse=uri)
    assert len(original) == len(named) == len(new) > 0
    assert str(original[0]) == str(new[0]) and str(named[len(named) - 1]) == str(new[len(new) - 1])
    with pytest.raises(TypeError, match="warehouse="):
        ReplayDataset(base_path=uri, warehouse=uri)


def _deprecated(call):
    with pytest.warns(DeprecationWarning, match="pass warehouse=") as caught:
        value = call()
    assert caught[0].filename == __file__  # points at the caller's line
    return value


def test_old_spellings_warn_and_still_work(demo_warehouse: Path) -> None:
    uri = str(demo_warehouse)
    stream = _deprecated(lambda: MettaSampleStream(None, None, [DAY], uri, shuffle_buffer=0))
    stream_named = _deprecated(lambda: MettaSampleStream(dates=[DAY], base_path=uri, shuffle_buffer=0))
    stream_new = MettaSampleStream(dates=[DAY], warehouse=uri, shuffle_buffer=0)
    assert stream.num_rows == stream_named.num_rows == stream_new.num_rows > 0

    recordings = _deprecated(lambda: TownletRecordings(uri))
    assert recordings.list(limit=None) == TownletRecordings(warehouse=uri).list(limit=None)

    steps = _deprecated(lambda: TownletStepDataset(uri))
    steps_source = _deprecated(lambda: TownletStepDataset(source=recordings))
    assert len(steps) == len(steps_source) == len(TownletStepDataset(warehouse=recordings)) > 0

    demos = _deprecated(lambda: DemoBuffer(uri, None, None, "lidar"))
    assert len(demos) == len(DemoBuffer(warehouse=uri, layout="lidar")) > 0

    conn = _deprecated(lambda: connect(uri))
    query = "SELECT count(*) FROM tmrl_demo_buffers"
    assert conn.sql(query).fetchone() == connect(warehouse=uri).sql(query).fetchone()

    for call in (
        lambda: MettaSampleStream(base_path=uri, warehouse=uri),
        lambda: TownletRecordings(uri, warehouse=uri),
        lambda: TownletStepDataset(uri, warehouse=uri),
        lambda: DemoBuffer(uri, warehouse=uri),
        lambda: connect(uri, warehouse=uri),
    ):
        with pytest.raises(TypeError, match="warehouse="):
            call()


def test_days_and_filters_the_same_way(demo_warehouse: Path, tmp_path: Path) -> None:
    uri = str(demo_warehouse)
    everything = DemoBuffer(warehouse=uri, layout="lidar")
    one_day = DemoBuffer(warehouse=uri, dates=[DAY], layout="lidar")
    assert one_day.days == [DEMO_DAYS[1]] and 0 < len(one_day) < len(everything)
    assert len(DemoBuffer(warehouse=uri, start_date=DAY, end_date=DAY, layout="lidar")) == len(one_day)
    with pytest.raises(ValueError, match="either dates"):
        DemoBuffer(warehouse=uri, dates=[DAY], start_date=DAY)
    early = DemoBuffer(warehouse=uri, layout="lidar", filters={"sample_index": "< 10"})
    assert 0 < len(early) < len(everything)
    assert all(early.source(i).sample_index < 10 for i in range(len(early)))
    with pytest.raises(ValueError, match="nope"):
        DemoBuffer(warehouse=uri, filters={"nope": "= 1"})

    summary = export_tmrl_memory(tmp_path / "data.pkl", "lidar", warehouse=uri, dates=[DAY], dry_run=True)
    assert (summary.first_day, summary.last_day, summary.samples) == (
        DEMO_DAYS[1],
        DEMO_DAYS[1],
        len(one_day),
    )
    filtered = export_tmrl_memory(
        tmp_path / "data.pkl", "lidar", warehouse=uri, filters={"sample_index": "< 10"}, dry_run=True
    )
    assert filtered.samples == len(early)

    frames = Sc2FramesDataset(warehouse=uri, dates=[DAY], max_units=4)
    player_one = Sc2FramesDataset(warehouse=uri, dates=[DAY], max_units=4, filters={"player_id": "= 1"})
    assert 0 < len(player_one) < len(frames)
    assert {player_one[i]["player_id"].item() for i in range(len(player_one))} == {1}
    assert len(player_one) == len(Sc2FramesDataset(warehouse=uri, dates=[DAY], max_units=4, player_id=1))

    all_steps = TownletStepDataset(warehouse=uri)
    long_ones = TownletStepDataset(warehouse=uri, filters={"steps_recorded": ">= 150"})
    assert 0 < len(long_ones.episodes) < len(all_steps.episodes)
    with pytest.raises(ValueError, match="not both"):
        TownletStepDataset(warehouse=uri, episodes=[1], filters={"steps_recorded": ">= 1"})
    on_day = TownletStepDataset(warehouse=uri, dates=[DAY])
    assert 0 < len(on_day.episodes) < len(all_steps.episodes)
    assert len(TownletStepDataset(warehouse=uri, start_date=DAY)) == len(on_day)
    assert len(TownletStepDataset(warehouse=uri, filters={"date": f"= '{DAY}'"})) == len(on_day)


def test_loaders_on_s3(demo_warehouse: Path, s3_bucket: str) -> None:
    upload_tree(demo_warehouse, s3_bucket, "warehouse")
    uri = f"s3://{s3_bucket}/warehouse"
    local = str(demo_warehouse)
    assert len(ReplayDataset(warehouse=uri)) == len(ReplayDataset(warehouse=local))
    assert len(DemoBuffer(warehouse=uri, layout="lidar")) == len(DemoBuffer(warehouse=local, layout="lidar"))
    assert len(TownletStepDataset(warehouse=uri)) == len(TownletStepDataset(warehouse=local))
    assert len(Sc2FramesDataset(warehouse=uri, max_units=4)) == len(
        Sc2FramesDataset(warehouse=local, max_units=4)
    )
    query = "SELECT date, typeof(date), count(*) FROM metta_action_samples GROUP BY ALL ORDER BY ALL"
    assert connect(warehouse=uri).sql(query).fetchall() == connect(warehouse=local).sql(query).fetchall()
