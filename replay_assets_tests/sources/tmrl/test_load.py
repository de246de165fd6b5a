"""DemoBuffer, MixedSampler and export_tmrl_memory over ``tmrl_demo_buffers`` warehouses.

Warehouses are written the way the asset writes them (``run_batches`` into ``write_parquet`` at
``partition_file``) from the real player runs in ``../shared/data/tmrl/player_runs`` and from synthetic
runs (``tmrl_player_run_bytes``). Expected values come from the run pickles themselves, loaded with plain
``pickle`` (trusted test files), never from the code under test.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import pickle
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch
from torch.utils.data import DataLoader

import replay_assets.sources.tmrl.export as tmrl_export
import replay_assets.sources.tmrl.load as tmrl_datasets
from replay_assets.datasets import (
    DemoBuffer,
    EmptyDemoBufferWarning,
    ExportSummary,
    MixedIndex,
    MixedLayoutsError,
    MixedSampler,
    TmrlExportError,
    export_tmrl_memory,
)
from replay_assets.errors import ReplayAssetsError
from replay_assets.sources.contract import Lineage
from replay_assets.sources.tmrl.export import COLUMNS, ExportTargetExistsError, NoDemoSamplesError
from replay_assets.sources.tmrl.load import IMAGES_SHAPE, LIDAR_SHAPE, MixedSamplerWarning
from replay_assets.sources.tmrl.read import TMRL_DEMO_BUFFERS, run_batches
from replay_assets.sources.tmrl.sample import tmrl_player_run_bytes, tmrl_player_run_object
from replay_assets.warehouse.layout import partition_file, warehouse_root
from replay_assets.warehouse.parquet import write_parquet

ASSET = "tmrl_demo_buffers"
DAY_14, DAY_15, DAY_16 = dt.date(2025, 10, 14), dt.date(2025, 10, 15), dt.date(2025, 10, 16)
# The real runs and the day each is put on (the legacy list has no day in its name: the 15th, as in conftest).
REAL_DAYS = {
    "20251014_101500_a1b2c3d4.pkl": DAY_14,
    "20251014_113000_b2c3d4e5.pkl": DAY_14,
    "20251015_090000_c3d4e5f6.pkl": DAY_15,
    "legacy_run_0001.pkl": DAY_15,
}
LIDAR_ORDER = ["20251014_101500_a1b2c3d4", "20251014_113000_b2c3d4e5", "legacy_run_0001"]  # day, run id
Run = tuple[str, bytes]  # file name, bytes


# ---------------------------------------------------------------------------------------------------------
# Building warehouses


def write_day(uri: str, day: dt.date, runs: list[Run]) -> None:
    """One partition holding ``runs``, as the asset writes it."""
    batches = []
    for name, data in runs:
        source = Lineage(
            day, f"s3://landing/tmrl/player_runs/{name}", hashlib.sha256(data).hexdigest(), name
        )
        batches.extend(run_batches(data, source))
    table = pa.Table.from_batches(batches, schema=TMRL_DEMO_BUFFERS)
    write_parquet(partition_file(warehouse_root(uri), ASSET, day.isoformat()), table)


def remove_day(uri: str, day: dt.date) -> None:
    path = partition_file(warehouse_root(uri), ASSET, day.isoformat())
    path.fs.rm(path.path)


def synthetic(day: dt.date, layout: str, num_samples: int, seed: int) -> Run:
    run_id = f"{day:%Y%m%d}_120000_{seed:08x}"
    recorded_at = dt.datetime(day.year, day.month, day.day, 12, tzinfo=dt.UTC)
    data = tmrl_player_run_bytes(
        run_id=run_id, recorded_at=recorded_at, layout=layout, num_samples=num_samples, seed=seed
    )
    return f"{run_id}.pkl", data


def samples_of(data: bytes) -> list[tuple[Any, ...]]:
    run = pickle.loads(data)  # trusted: the shared test files and our own synthetic runs
    return run["samples"] if isinstance(run, dict) else run


def run_id_of(name: str, data: bytes) -> str:
    run = pickle.loads(data)
    return run["run_id"] if isinstance(run, dict) else name.removesuffix(".pkl")


@pytest.fixture(scope="module")
def real_runs(shared_data: Path) -> dict[str, tuple[str, bytes, list[tuple[Any, ...]]]]:
    """run id -> (file name, bytes, samples) of every real run."""
    runs = {}
    for name in REAL_DAYS:
        data = (shared_data / "tmrl" / "player_runs" / name).read_bytes()
        runs[run_id_of(name, data)] = (name, data, samples_of(data))
    return runs


@pytest.fixture(scope="module")
def real_wh(real_runs: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> str:
    uri = str(tmp_path_factory.mktemp("wh"))
    by_day: dict[dt.date, list[Run]] = {}
    for name, data, _ in real_runs.values():
        by_day.setdefault(REAL_DAYS[name], []).append((name, data))
    for day, runs in by_day.items():
        write_day(uri, day, runs[::-1])  # runs out of order in the file: loaders put them in run id order
    return uri


def test_loader_constants_match_the_schema() -> None:
    for column, shape in (("lidar", LIDAR_SHAPE), ("images", IMAGES_SHAPE)):
        assert tuple(json.loads(TMRL_DEMO_BUFFERS.field(column).metadata[b"shape"])) == shape
    needed = {"obs_layout", "act", "reward", "terminated", "truncated", "is_demo", "run_id", "sha256"}
    needed |= {"sample_index", "episode_end", "info", "date"}
    for fields in tmrl_datasets.OBS_FIELDS.values():
        needed |= set(fields)
    assert needed <= set(TMRL_DEMO_BUFFERS.names)


# ---------------------------------------------------------------------------------------------------------
# DemoBuffer items


def _check_item(item: dict[str, torch.Tensor], sample: tuple[Any, ...], layout: str) -> None:
    act, obs, rew, terminated, truncated, _ = sample
    expected = {"act": act, "prev_act_1": obs[-2], "prev_act_2": obs[-1], "speed": obs[0]}
    if layout == "lidar":
        expected["lidar"] = obs[1]
    else:
        expected.update(gear=obs[1], rpm=obs[2], images=obs[3])
    assert set(item) == {*expected, "reward", "terminated", "truncated"}
    for name, value in expected.items():
        assert item[name].numpy().dtype == value.dtype, name
        np.testing.assert_array_equal(item[name].numpy(), value, err_msg=name)
    assert item["reward"].dtype == torch.float32 and item["reward"].shape == ()
    assert item["reward"].item() == pytest.approx(rew, rel=1e-6, abs=1e-7)
    assert item["terminated"].dtype == torch.bool and item["terminated"].item() is terminated
    assert item["truncated"].item() is truncated


def test_lidar_items_match_the_run_pickles(real_wh: str, real_runs: dict[str, Any]) -> None:
    buffer = DemoBuffer(warehouse=real_wh, layout="lidar")
    assert buffer.layout == "lidar" and len(buffer) == 300 + 120 + 40
    assert buffer.days == [DAY_14, DAY_15]
    seen = []
    for i in range(len(buffer)):
        ref = buffer.source(i)
        seen.append((ref.run_id, ref.sample_index))
        _check_item(buffer[i], real_runs[ref.run_id][2][ref.sample_index], "lidar")
    # Every lidar sample once, runs in (day, run id) order, each run in file order.
    assert seen == [(run, k) for run in LIDAR_ORDER for k in range(len(real_runs[run][2]))]
    batch = buffer.__getitems__([459, 0, 301, -1])
    for item, index in zip(batch, [459, 0, 301, 459], strict=True):
        assert all(torch.equal(item[k], buffer[index][k]) for k in item)
    assert buffer[-460]["act"].equal(buffer[0]["act"])
    with pytest.raises(IndexError):
        buffer[460]
    loader = DataLoader(buffer, batch_size=64, shuffle=True)
    first = next(iter(loader))
    assert first["lidar"].shape == (64, 4, 19) and first["reward"].shape == (64,)


def test_full_items_match_the_run_pickles(real_wh: str, real_runs: dict[str, Any]) -> None:
    buffer = DemoBuffer(warehouse=real_wh, layout="full")
    assert len(buffer) == 150 and buffer.samples_per_day() == {DAY_14: 0, DAY_15: 150}
    for i in range(len(buffer)):
        ref = buffer.source(i)
        assert ref.run_id == "20251015_090000_c3d4e5f6" and ref.sample_index == i and ref.date == DAY_15
        _check_item(buffer[i], real_runs[ref.run_id][2][i], "full")
    item = buffer[7]
    item["images"][0, 0, 0] += 1  # items are copies: the buffer is untouched
    assert not torch.equal(buffer[7]["images"], item["images"])


def test_mixed_layouts_are_refused_unless_a_layout_is_chosen(real_wh: str) -> None:
    with pytest.raises(MixedLayoutsError, match=r"150 'full', 460 'lidar'.*layout='lidar'") as info:
        DemoBuffer(warehouse=real_wh)
    assert isinstance(info.value, ReplayAssetsError)
    only_lidar = DemoBuffer(
        warehouse=real_wh, end_date="2025-10-14"
    )  # one layout present: it is the buffer's
    assert only_lidar.layout == "lidar" and len(only_lidar) == 420
    with pytest.raises(MixedLayoutsError):  # the 15th holds the legacy lidar run beside the full one
        DemoBuffer(warehouse=real_wh, start_date=DAY_15)
    assert len(DemoBuffer(warehouse=real_wh, start_date=DAY_15, layout="lidar")) == 40
    picked = DemoBuffer(
        warehouse=real_wh, layout="lidar", run_ids=["legacy_run_0001", "20251014_113000_b2c3d4e5"]
    )
    assert len(picked) == 160 and {picked.source(i).run_id for i in range(160)} == {
        "legacy_run_0001",
        "20251014_113000_b2c3d4e5",
    }
    with pytest.raises(ValueError, match="layout"):
        DemoBuffer(warehouse=real_wh, layout="images")
    with pytest.raises(ValueError, match="run_ids"):
        DemoBuffer(warehouse=real_wh, layout="lidar", run_ids="legacy_run_0001")
    with pytest.raises(ValueError, match="after"):
        DemoBuffer(warehouse=real_wh, start_date=DAY_15, end_date=DAY_14)


def test_a_refresh_bringing_a_second_layout_is_refused_without_changing_the_buffer(tmp_path: Path) -> None:
    uri = str(tmp_path / "wh")
    write_day(uri, DAY_14, [synthetic(DAY_14, "lidar", 30, seed=1)])
    buffer = DemoBuffer(warehouse=uri)
    assert (buffer.layout, len(buffer), buffer.generation) == ("lidar", 30, 1)
    write_day(uri, DAY_15, [synthetic(DAY_15, "full", 10, seed=2)])
    with pytest.raises(MixedLayoutsError, match="10 'full', 30 'lidar'"):
        buffer.refresh()
    assert (buffer.layout, len(buffer), buffer.generation, buffer.days) == ("lidar", 30, 1, [DAY_14])
    remove_day(uri, DAY_14)  # now only the full day: the buffer follows (it was never told a layout)
    assert buffer.refresh() == 10 and buffer.layout == "full" and len(buffer) == 10


def test_an_empty_warehouse_gives_an_empty_buffer(tmp_path: Path) -> None:
    buffer = DemoBuffer(warehouse=tmp_path / "nothing-yet")
    assert len(buffer) == 0 and buffer.layout is None and buffer.refresh() == 0
    with pytest.raises(IndexError):
        buffer[0]


# ---------------------------------------------------------------------------------------------------------
# refresh()


@pytest.fixture(params=["local", "s3"])
def warehouse_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "s3":
        return f"s3://{request.getfixturevalue('s3_bucket')}/warehouse"
    return str(tmp_path / "warehouse")


def test_refresh_reads_new_and_rewritten_days_only(
    warehouse_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[str] = []
    real_read = tmrl_datasets._read_rows

    def counting_read(filesystem: Any, path: str, *args: Any) -> Any:
        reads.append(path.rsplit("/", 2)[-2])
        return real_read(filesystem, path, *args)

    monkeypatch.setattr(tmrl_datasets, "_read_rows", counting_read)
    first = synthetic(DAY_14, "lidar", 50, seed=1)
    write_day(warehouse_uri, DAY_14, [first])
    buffer = DemoBuffer(warehouse=warehouse_uri, layout="lidar")
    assert len(buffer) == 50 and reads == ["date=2025-10-14"] and buffer.generation == 1

    reads.clear()
    assert buffer.refresh() == 0 and reads == []  # nothing changed: nothing read
    assert buffer.last_refresh.unchanged_days == (DAY_14,) and buffer.generation == 1

    second = synthetic(DAY_15, "lidar", 30, seed=2)
    write_day(warehouse_uri, DAY_15, [second])
    assert buffer.refresh() == 30 and reads == ["date=2025-10-15"]
    assert buffer.last_refresh.added_days == (DAY_15,) and buffer.last_refresh.unchanged_days == (DAY_14,)
    assert len(buffer) == 80 and buffer.generation == 2

    reads.clear()
    rewritten = synthetic(DAY_14, "lidar", 20, seed=3)  # the 14th re-materialized with other runs
    write_day(warehouse_uri, DAY_14, [rewritten])
    assert buffer.refresh() == 20 and reads == ["date=2025-10-14"]
    report = buffer.last_refresh
    assert report.changed_days == (DAY_14,) and report.unchanged_days == (DAY_15,)
    assert report.dropped_samples == 50 and len(buffer) == 50 and buffer.generation == 3
    assert buffer.days == [DAY_14, DAY_15]
    expected = samples_of(rewritten[1]) + samples_of(second[1])  # days in date order
    for i in (0, 19, 20, 49):
        _check_item(buffer[i], expected[i], "lidar")

    reads.clear()
    remove_day(warehouse_uri, DAY_15)
    assert buffer.refresh() == 0 and reads == [] and buffer.last_refresh.removed_days == (DAY_15,)
    assert len(buffer) == 20 and buffer.generation == 4

    # An open-ended range picks up later days; a bounded one ignores them.
    bounded = DemoBuffer(warehouse=warehouse_uri, end_date=DAY_15, layout="lidar")
    write_day(warehouse_uri, DAY_16, [synthetic(DAY_16, "lidar", 5, seed=4)])
    assert bounded.refresh() == 0 and buffer.refresh() == 5 and len(buffer) == 25

    summary = export_tmrl_memory(Path("unused.pkl"), "lidar", warehouse=warehouse_uri, dry_run=True)
    assert summary.samples == 25 and summary.runs == 2 and not Path("unused.pkl").exists()


def test_a_same_size_rewrite_is_still_seen(tmp_path: Path) -> None:
    uri = str(tmp_path / "wh")
    write_day(uri, DAY_14, [synthetic(DAY_14, "lidar", 10, seed=1)])
    buffer = DemoBuffer(warehouse=uri, layout="lidar")
    path = partition_file(warehouse_root(uri), ASSET, DAY_14.isoformat()).path
    size = os.stat(path).st_size
    write_day(uri, DAY_14, [synthetic(DAY_14, "lidar", 10, seed=1)])  # same bytes, a new file
    assert os.stat(path).st_size == size
    assert buffer.refresh() == 10 and buffer.last_refresh.changed_days == (DAY_14,)


def test_a_buffer_pickles_for_dataloader_workers(real_wh: str) -> None:
    buffer = DemoBuffer(warehouse=real_wh, layout="lidar", end_date=DAY_14)
    copy = pickle.loads(pickle.dumps(buffer))
    assert len(copy) == 420 and torch.equal(copy[5]["lidar"], buffer[5]["lidar"])
    assert copy.refresh() == 0


# ---------------------------------------------------------------------------------------------------------
# MixedSampler


def _demo_counts(sampler: MixedSampler) -> list[int]:
    return [sum(key.source == "demo" for key in batch) for batch in sampler]


def test_a_fixed_demo_fraction_holds_over_many_batches() -> None:
    sampler = MixedSampler(
        range(10_000), range(1_000), demo_fraction=0.1, batch_size=256, seed=7, num_batches=400
    )
    counts = _demo_counts(sampler)
    assert len(counts) == len(sampler) == 400
    assert set(counts) == {25, 26}  # 25.6 demos a batch: rounded down or up, never further
    assert np.mean(counts) / 256 == pytest.approx(0.1, abs=0.002)
    batch = next(iter(sampler))
    assert len(batch) == 256 and all(isinstance(key, MixedIndex) for key in batch)
    assert all(0 <= key.index < (1_000 if key.source == "demo" else 10_000) for key in batch)
    positions = [i for i, key in enumerate(batch) if key.source == "demo"]
    assert positions != list(range(len(positions)))  # demos are spread over the batch, not first


def test_without_a_fraction_the_share_follows_repeat_and_weight_like_tmrl() -> None:
    # 100 demos injected twice, each copy weighing 1.5, against 900 fresh samples: 300 / 1200 = 25 %.
    sampler = MixedSampler(
        range(900),
        range(100),
        demo_fraction=None,
        demo_injection_repeat=2,
        demo_sampling_weight=1.5,
        batch_size=128,
        seed=3,
        num_batches=500,
    )
    assert sampler.demo_share() == pytest.approx(0.25)
    assert np.mean(_demo_counts(sampler)) / 128 == pytest.approx(0.25, abs=0.003)
    plain = MixedSampler(range(900), range(100), demo_fraction=None, seed=3, num_batches=1)
    assert plain.demo_share() == pytest.approx(0.1)
    assert (
        MixedSampler(range(900), range(100), demo_fraction=None, demo_sampling_weight=0.0).demo_share() == 0
    )


def test_each_demo_is_drawn_repeat_times_per_pass() -> None:
    sampler = MixedSampler(
        range(50), range(10), demo_fraction=1.0, batch_size=6, demo_injection_repeat=3, seed=1
    )
    draws = iter(sampler)
    for _ in range(3):  # three passes of 30 draws: each demo exactly 3 times in each
        drawn = Counter(key.index for _ in range(5) for key in next(draws))
        assert drawn == Counter({i: 3 for i in range(10)})


def test_seeds_make_the_batches_reproducible() -> None:
    def run(seed: int) -> list[list[MixedIndex]]:
        return list(MixedSampler(range(500), range(60), batch_size=32, seed=seed, num_batches=20))

    assert run(5) == run(5) and run(5) != run(6)


def test_empty_datasets_and_bad_arguments() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = list(MixedSampler(range(100), [], demo_fraction=0.2, batch_size=16, seed=0, num_batches=5))
    assert [w.category for w in caught] == [EmptyDemoBufferWarning]  # once, not per batch
    assert "empty" in str(caught[0].message) and caught[0].filename == __file__
    assert all(key.source == "fresh" for batch in batches for key in batch)
    with pytest.warns(MixedSamplerWarning, match="fresh dataset is empty"):
        only_demos = list(MixedSampler([], range(5), batch_size=4, seed=0, num_batches=2))
    assert all(key.source == "demo" for batch in only_demos for key in batch)
    with pytest.raises(RuntimeError, match="nothing to sample"):
        next(iter(MixedSampler([], [], num_batches=1)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no demo wanted: an empty demo set is no news
        list(MixedSampler(range(10), [], demo_fraction=0.0, batch_size=4, num_batches=2))
    for kwargs in (
        {"demo_fraction": 1.5},
        {"demo_fraction": 0.2, "demo_sampling_weight": 2.0},
        {"demo_injection_repeat": 0},
        {"demo_fraction": None, "demo_sampling_weight": -1.0},
        {"batch_size": 0},
        {"seed": -1},
    ):
        with pytest.raises(ValueError):
            MixedSampler(range(10), range(10), **kwargs)
    with pytest.raises(TypeError):
        len(MixedSampler(range(10), range(10)))


def test_the_factory_reads_player_runs_settings() -> None:
    config = {"ONLINE_INJECTION": True, "DEMO_INJECTION_REPEAT": 2, "DEMO_SAMPLING_WEIGHT": 1.5}
    sampler = MixedSampler.from_player_runs(range(900), range(100), config, seed=1)
    assert (sampler.demo_injection_repeat, sampler.demo_sampling_weight, sampler.demo_fraction) == (
        2,
        1.5,
        None,
    )
    assert sampler.demo_share() == pytest.approx(0.25)
    constants = SimpleNamespace(PLAYER_RUNS_DEMO_INJECTION_REPEAT=3)  # tmrl.config-style module
    assert MixedSampler.from_player_runs(range(9), range(1), constants).demo_injection_repeat == 3
    assert MixedSampler.from_player_runs(range(9), range(1)).demo_share() == pytest.approx(0.1)
    with pytest.warns(MixedSamplerWarning, match="DEMO_SAMPLING_WEIGHT=1.5 ignored"):
        fixed = MixedSampler.from_player_runs(range(9), range(1), config, demo_fraction=0.2)
    assert (fixed.demo_sampling_weight, fixed.demo_fraction, fixed.demo_injection_repeat) == (1.0, 0.2, 2)
    with pytest.raises(ValueError):
        MixedSampler.from_player_runs(range(9), range(1), {"DEMO_INJECTION_REPEAT": 0})


def test_batches_draw_from_demos_a_refresh_brought(tmp_path: Path) -> None:
    demo_uri, fresh_uri = str(tmp_path / "demos"), str(tmp_path / "agent")
    write_day(demo_uri, DAY_14, [synthetic(DAY_14, "lidar", 40, seed=1)])
    write_day(fresh_uri, DAY_14, [synthetic(DAY_14, "lidar", 400, seed=9)])
    demo = DemoBuffer(warehouse=demo_uri, layout="lidar")
    fresh = DemoBuffer(warehouse=fresh_uri, layout="lidar")  # any map-style dataset with the same item keys
    sampler = MixedSampler(fresh, demo, demo_fraction=None, batch_size=50, seed=11)
    twin = MixedSampler(fresh, demo, demo_fraction=None, batch_size=50, seed=11)  # same draws, as indices
    assert sampler.demo_share() == pytest.approx(40 / 440)
    batches, keys = sampler.batches(), iter(twin)
    for _ in range(3):
        batch, slots = next(batches), next(keys)
        assert batch["lidar"].shape == (50, 4, 19) and batch["from_demo"].dtype == torch.bool
        assert batch["from_demo"].tolist() == [key.source == "demo" for key in slots]
        for j in (0, 17, 49):
            source = demo if slots[j].source == "demo" else fresh
            assert torch.equal(batch["act"][j], source[slots[j].index]["act"])
        assert all(key.index < 40 for key in slots if key.source == "demo")

    write_day(demo_uri, DAY_15, [synthetic(DAY_15, "lidar", 60, seed=2)])
    assert demo.refresh() == 60 and sampler.demo_share() == pytest.approx(100 / 500)
    # 20 % of 50 is exactly 10 demos a batch; the refresh started a new pass over all 100 demos.
    drawn = Counter()
    for _ in range(10):
        batch, slots = next(batches), next(keys)
        assert int(batch["from_demo"].sum()) == 10
        drawn.update(key.index for key in slots if key.source == "demo")
    assert drawn == Counter(range(100))

    loader = DataLoader(
        sampler.dataset, batch_sampler=MixedSampler(fresh, demo, batch_size=32, num_batches=2)
    )
    loaded = list(loader)
    assert len(loaded) == 2 and loaded[0]["lidar"].shape == (32, 4, 19)


# ---------------------------------------------------------------------------------------------------------
# export_tmrl_memory


class _RecordingUnpickler(pickle.Unpickler):
    def __init__(self, file: Any) -> None:
        super().__init__(file)
        self.globals: set[tuple[str, str]] = set()

    def find_class(self, module: str, name: str) -> Any:
        self.globals.add((module, name))
        return super().find_class(module, name)


def _load_memory(path: Path) -> tuple[list[list[Any]], set[tuple[str, str]]]:
    with open(path, "rb") as source:
        unpickler = _RecordingUnpickler(source)
        return unpickler.load(), unpickler.globals


def _expected_rows(real_runs: dict[str, Any], run_ids: list[str]) -> list[tuple[str, int, tuple[Any, ...]]]:
    return [(run, k, sample) for run in run_ids for k, sample in enumerate(real_runs[run][2])]


def _check_common(
    columns: list[list[Any]], rows: list[tuple[str, int, tuple[Any, ...]]], memory: str
) -> None:
    names = COLUMNS[memory]
    col = {name: columns[names.index(name)] for name in names}
    assert isinstance(columns, list) and all(type(c) is list and len(c) == len(rows) for c in columns)
    assert col["index"] == list(range(len(rows))) and all(type(i) is int for i in col["index"])
    lengths = Counter(run for run, _, _ in rows)
    for i, (run, k, (act, obs, rew, terminated, truncated, info)) in enumerate(rows):
        for name, value in (("action", act), ("speed", obs[0])):
            assert type(col[name][i]) is np.ndarray and col[name][i].dtype == np.float32, name
            np.testing.assert_array_equal(col[name][i], value)
        assert col["action"][i].shape == (3,) and col["speed"][i].shape == (1,)
        assert col["terminated"][i] is terminated and col["truncated"][i] is truncated
        assert col["eoe"][i] is (terminated or truncated or k == lengths[run] - 1)
        assert type(col["info"][i]) is dict and info.items() <= col["info"][i].items()
        assert col["info"][i]["is_demo"] is True and col["info"][i]["demo_run_id"] == run
        if memory == "lidar":
            assert type(col["reward"][i]) is np.float32 and col["reward"][i] == np.float32(rew)
        else:
            assert type(col["reward"][i]) is float and col["reward"][i] == rew


def test_export_lidar_reads_back_in_tmrl_memory_layout(
    real_wh: str, real_runs: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "TmrlData" / "dataset" / "data.pkl"
    summary = export_tmrl_memory(out, "lidar", warehouse=real_wh)
    assert isinstance(summary, ExportSummary) and not summary.dry_run
    assert (summary.samples, summary.runs, summary.episodes, summary.trimmed) == (460, 3, 3, 0)
    assert (summary.first_day, summary.last_day, summary.other_layouts) == (DAY_14, DAY_15, {"full": 150})
    line = str(summary)
    assert (
        "\n" not in line
        and line.startswith("wrote 460 lidar sample(s)")
        and "MemoryTMLidar, 9 columns" in line
    )
    assert summary.bytes_written == out.stat().st_size
    columns, names = _load_memory(out)
    assert len(columns) == 9
    rows = _expected_rows(real_runs, LIDAR_ORDER)
    _check_common(columns, rows, "lidar")
    for i, (_, _, (_, obs, *_)) in enumerate(rows):
        scan = columns[3][i]
        assert type(scan) is np.ndarray and scan.dtype == np.float32 and scan.shape == (19,)
        np.testing.assert_array_equal(scan, obs[1][0])  # the newest scan
        assert scan.flags.writeable
    # What tmrl's memory does with it: 4 + 1 consecutive scans make two (76,) lidar observations.
    assert np.stack(columns[3][10:15]).shape == (5, 19) and np.stack(columns[3][10:14]).reshape(-1).shape == (
        76,
    )
    # Only names that numpy 1.x and 2.x both have: no numpy._core / numpy.core module paths.
    assert names <= {("numpy", "ndarray"), ("numpy", "float32"), ("builtins", "bytearray")}
    assert [p.name for p in out.parent.iterdir()] == ["data.pkl"]  # no temporary file left


def test_export_full_reads_back_in_tmrl_memory_layout(
    real_wh: str, real_runs: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "data.pkl"
    summary = export_tmrl_memory(out, "full", warehouse=real_wh, start_date="2025-10-15", end_date=DAY_15)
    assert (summary.samples, summary.runs, summary.episodes) == (150, 1, 1)
    assert summary.other_layouts == {"lidar": 40} and "MemoryTMFull, 11 columns" in str(summary)
    columns, names = _load_memory(out)
    assert len(columns) == 11
    rows = _expected_rows(real_runs, ["20251015_090000_c3d4e5f6"])
    _check_common(columns, rows, "full")
    for i, (_, _, (_, obs, *_)) in enumerate(rows):
        image, gear, rpm = columns[3][i], columns[7][i], columns[8][i]
        assert type(image) is np.ndarray and image.dtype == np.uint8 and image.shape == (64, 64)
        np.testing.assert_array_equal(image, obs[3][0])  # the newest frame
        for value, expected in ((gear, obs[1]), (rpm, obs[2])):
            assert type(value) is np.ndarray and value.dtype == np.float32 and value.shape == (1,)
            np.testing.assert_array_equal(value, expected)
    assert names <= {("numpy", "ndarray"), ("builtins", "bytearray")}


def test_export_max_samples_keeps_the_newest(real_wh: str, real_runs: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "data.pkl"
    summary = export_tmrl_memory(out, "lidar", warehouse=real_wh, max_samples=100)
    assert (summary.samples, summary.trimmed, summary.runs) == (100, 360, 2)
    assert "360 older sample(s) left out" in str(summary)
    columns, _ = _load_memory(out)
    rows = _expected_rows(real_runs, LIDAR_ORDER)[-100:]
    assert columns[0] == list(range(100))
    for i, (_, _, (act, *_)) in enumerate(rows):
        np.testing.assert_array_equal(columns[1][i], act)
    small = export_tmrl_memory(
        tmp_path / "small.pkl", "lidar", warehouse=real_wh, max_samples=10, dry_run=True
    )
    assert (small.samples, small.trimmed, small.first_day) == (10, 450, DAY_15)


def test_export_overwrite_and_dry_run(real_wh: str, tmp_path: Path) -> None:
    out = tmp_path / "data.pkl"
    dry = export_tmrl_memory(out, "lidar", warehouse=real_wh, dry_run=True)
    assert not out.exists() and dry.bytes_written is None
    assert str(dry).startswith("dry run: would write 460 lidar sample(s)") and "\n" not in str(dry)
    export_tmrl_memory(out, "lidar", warehouse=real_wh)
    before = out.read_bytes()
    with pytest.raises(ExportTargetExistsError, match=r"already exists.*overwrite") as info:
        export_tmrl_memory(out, "lidar", warehouse=real_wh, max_samples=5)
    assert isinstance(info.value, ReplayAssetsError) and isinstance(info.value, TmrlExportError)
    with pytest.raises(ExportTargetExistsError):  # a dry run tells the same
        export_tmrl_memory(out, "lidar", warehouse=real_wh, dry_run=True)
    assert out.read_bytes() == before
    assert export_tmrl_memory(out, "lidar", warehouse=real_wh, max_samples=5, overwrite=True).samples == 5
    assert len(_load_memory(out)[0][0]) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.pkl"]


def test_export_never_replaces_a_file_created_during_the_export(
    real_wh: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "data.pkl"
    check = tmrl_export._check_target

    def check_then_someone_writes(target: Path, overwrite: bool) -> None:
        check(target, overwrite)
        target.write_bytes(b"another writer")

    monkeypatch.setattr(tmrl_export, "_check_target", check_then_someone_writes)
    with pytest.raises(ExportTargetExistsError):
        export_tmrl_memory(out, "lidar", warehouse=real_wh)
    assert out.read_bytes() == b"another writer" and [p.name for p in tmp_path.iterdir()] == ["data.pkl"]


def test_export_ends_an_episode_where_a_run_ends_without_a_flag(tmp_path: Path) -> None:
    # A run cut short (neither terminated nor truncated at its end) followed by another run: tmrl must
    # not build a transition or a scan history across the two.
    uri = str(tmp_path / "wh")
    cut = tmrl_player_run_object(
        run_id="20251014_080000_cut", recorded_at=dt.datetime(2025, 10, 14, 8, tzinfo=dt.UTC),
        layout="lidar", num_samples=8, seed=5,
    )  # fmt: skip
    act, obs, rew, _, _, info = cut["samples"][-1]
    cut["samples"][-1] = (act, obs, rew, False, False, info)
    write_day(
        uri,
        DAY_14,
        [("20251014_080000_cut.pkl", pickle.dumps(cut, protocol=5)), synthetic(DAY_14, "lidar", 6, 6)],
    )
    out = tmp_path / "data.pkl"
    assert export_tmrl_memory(out, "lidar", warehouse=uri).episodes == 2
    columns, _ = _load_memory(out)
    eoe, terminated, truncated = columns[4], columns[7], columns[8]
    assert eoe == [False] * 7 + [True] + [False] * 5 + [True]
    assert terminated[7] is False and truncated[7] is False and terminated[13] is True


def test_export_user_errors_are_one_line_replay_assets_errors(real_wh: str, tmp_path: Path) -> None:
    cases = [
        (dict(memory="full", end_date=DAY_14), NoDemoSamplesError, r"no 'full' samples.*420 'lidar'"),
        (dict(memory="lidar", warehouse=str(tmp_path / "empty")), NoDemoSamplesError, "no tmrl_demo_buffers"),
        (dict(memory="images"), TmrlExportError, "memory must be"),
        (dict(memory="lidar", max_samples=0), TmrlExportError, "max_samples"),
        (dict(memory="lidar", start_date="yesterday"), TmrlExportError, "YYYY-MM-DD"),
        (dict(memory="lidar", out=tmp_path), TmrlExportError, "is a directory"),
    ]
    for kwargs, error, pattern in cases:
        arguments = {"out": tmp_path / "data.pkl", "warehouse": real_wh, **kwargs}
        with pytest.raises(error, match=pattern) as info:
            export_tmrl_memory(**arguments)
        assert isinstance(info.value, ReplayAssetsError) and "\n" not in str(info.value)
    assert not (tmp_path / "data.pkl").exists()


# ---------------------------------------------------------------------------------------------------------
# Package surface


def test_import_stays_lazy_and_export_needs_no_torch() -> None:
    code = (
        "import sys, replay_assets.datasets as d\n"
        "assert not [m for m in ('torch', 'dagster', 'pyarrow') if m in sys.modules]\n"
        "assert callable(d.export_tmrl_memory) and d.DemoBuffer and d.MixedSampler\n"
        "heavy = [m for m in ('torch', 'dagster', 'duckdb') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
