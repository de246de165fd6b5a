"""The training loaders over ``metta_action_samples``: ReplayDataset, MettaSampleStream, day selection.

Warehouses are built here with the IO layer's own ``write_parquet`` at the layout's own paths, from
synthetic but realistically shaped tables (several episodes a day, agents walking a grid, sparse
inventories that differ between agents, rows sorted like the asset writes them).
"""

from __future__ import annotations

import datetime as dt
import pickle
import subprocess
import sys
import uuid
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch
from torch.utils.data import DataLoader

from replay_assets.datasets import (
    FilterError,
    MettaSampleStream,
    MissingPartitionsError,
    MissingPartitionsWarning,
    ReplayDataset,
    connect,
    filters_sql,
    parse_filters,
)
from replay_assets.sources.metta.schema import METTA_ACTION_SAMPLES
from replay_assets.warehouse.layout import partition_file, warehouse_root
from replay_assets.warehouse.parquet import write_parquet

ASSET = "metta_action_samples"
ITEMS = ["battery", "carbon", "energy", "germanium", "heart", "ore.red", "oxygen", "silicon"]
DAYS = [dt.date(2025, 10, 14), dt.date(2025, 10, 15), dt.date(2025, 10, 17)]  # the 16th is absent


def metta_table(
    day: dt.date, *, episodes: int = 3, agents: int = 4, steps: int = 40, seed: int = 0
) -> pa.Table:
    """One day of samples shaped like the asset's output; vectorized so a benchmark can make 1M rows."""
    rng = np.random.default_rng([seed, day.toordinal()])
    ids = sorted(str(uuid.UUID(int=int(rng.integers(2**62)) << 64 | e)) for e in range(episodes))
    per_episode = agents * steps
    n = episodes * per_episode
    episode = np.repeat(np.arange(episodes), per_episode)
    agent = np.tile(np.repeat(np.arange(agents, dtype=np.int32), steps), episodes)
    timestep = np.tile(np.arange(1, steps + 1, dtype=np.int32), episodes * agents)
    action = rng.integers(0, 9, n, dtype=np.int32)
    moves = rng.integers(-1, 2, (n, 2), dtype=np.int32)
    location = (20 + np.cumsum(moves, axis=0) % 40).astype(np.int32)
    # Sparse inventories: each row holds 0-4 items, different agents different items.
    held = rng.random((n, len(ITEMS))) < np.linspace(0.05, 0.5, len(ITEMS))
    _, slots = np.nonzero(held)
    offsets = np.concatenate([[0], np.cumsum(held.sum(axis=1))]).astype(np.int32)
    inventory = pa.MapArray.from_arrays(
        pa.array(offsets),
        pa.array(np.asarray(ITEMS, dtype=object)[slots], pa.string()),
        pa.array(rng.integers(1, 50, len(slots), dtype=np.int32)),
    )
    reward = rng.random(n).astype(np.float32)
    columns = {
        "date": pa.array(np.full(n, day), pa.date32()),
        "episode_id": pa.array(np.asarray(ids, dtype=object)[episode], pa.string()),
        "source_uri": pa.array([f"s3://landing/metta/{day}/{ids[e]}.json.z" for e in episode], pa.string()),
        "source_sha256": pa.array(["ab" * 32] * n, pa.string()),
        "replay_version": pa.array(np.full(n, 2, dtype=np.int8)),
        "environment": pa.array(["arena" if e % 2 else None for e in episode], pa.string()),
        "agent_id": pa.array(agent),
        "timestep": pa.array(timestep),
        "action": pa.array(action),
        "action_name": pa.array([f"a{a}" for a in action], pa.string()),
        "action_param": pa.array(np.zeros(n, dtype=np.int32)),
        "action_success": pa.array(rng.random(n) < 0.8),
        "reward": pa.array(reward),
        "total_reward": pa.array(reward),
        "location_x": pa.array(location[:, 0]),
        "location_y": pa.array(location[:, 1]),
        "orientation": pa.array(rng.integers(0, 4, n, dtype=np.int32)),
        "inventory": inventory,
        "is_frozen": pa.array(np.zeros(n, dtype=bool)),
    }
    return pa.Table.from_pydict(columns, schema=METTA_ACTION_SAMPLES)


def build_warehouse(uri: str, days: list[dt.date] = DAYS, **kwargs: int) -> pa.Table:
    """Write one partition per day; return every row written, in date order."""
    tables = [metta_table(day, **kwargs) for day in days]
    for day, table in zip(days, tables, strict=True):
        write_parquet(partition_file(warehouse_root(uri), ASSET, day.isoformat()), table)
    return pa.concat_tables(tables)


def expected_sample(table: pa.Table, i: int, items: list[str]) -> dict:
    row = table.slice(i, 1).to_pylist()[0]
    held = dict(row["inventory"])
    return {
        "observation": {
            "location": [row["location_x"], row["location_y"]],
            "orientation": row["orientation"],
            "inventory": {item: held.get(item, 0) for item in items},
        },
        "action": row["action"],
        "agent_id": row["agent_id"],
        "episode_id": row["episode_id"],
        "timestep": row["timestep"],
    }


def as_plain(sample: dict) -> dict:
    observation = dict(sample["observation"], location=sample["observation"]["location"].tolist())
    return dict(sample, observation=observation)


def row_keys(table: pa.Table) -> list[tuple[str, int, int]]:
    return list(
        zip(
            table["episode_id"].to_pylist(),
            table["agent_id"].to_pylist(),
            table["timestep"].to_pylist(),
            strict=True,
        )
    )


def stream_keys(stream: MettaSampleStream, batches) -> list[tuple[str, int, int]]:
    keys = []
    for batch in batches:
        episodes = [stream.episodes[c] for c in batch["episode_id"].tolist()]
        keys += zip(episodes, batch["agent_id"].tolist(), batch["timestep"].tolist(), strict=True)
    return keys


@pytest.fixture(scope="module")
def local_wh(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, pa.Table]:
    uri = str(tmp_path_factory.mktemp("wh"))
    return uri, build_warehouse(uri)


# ---------------------------------------------------------------------------------------------------------
# Package surface


def test_import_does_not_load_torch_duckdb_pyarrow_or_dagster() -> None:
    code = (
        "import sys, replay_assets.datasets as d\n"
        "heavy = [m for m in ('torch', 'dagster', 'duckdb', 'pyarrow') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert d.MettaSampleStream.__name__ == 'MettaSampleStream' and callable(d.connect)\n"
        "assert 'dagster' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_connect_is_reexported_and_filters_render_for_duckdb(local_wh: tuple[str, pa.Table]) -> None:
    uri, _ = local_wh
    conditions = parse_filters({"agent_id": "IN (1, 2)", "action": "> 3"}, METTA_ACTION_SAMPLES)
    where, params = filters_sql(conditions)
    conn = connect(warehouse=uri)
    (count,) = conn.execute(f"SELECT count(*) FROM {ASSET} WHERE {where}", params).fetchone()
    dataset = ReplayDataset(base_path=uri, filters={"agent_id": "IN (1, 2)", "action": "> 3"})
    assert count == len(dataset) > 0


# ---------------------------------------------------------------------------------------------------------
# ReplayDataset


def test_samples_have_the_original_shape_and_values(local_wh: tuple[str, pa.Table]) -> None:
    uri, table = local_wh
    dataset = ReplayDataset(base_path=uri)
    assert len(dataset) == table.num_rows
    assert dataset.items == ITEMS
    assert dataset.selection.days == DAYS
    for i in (0, 1, 57, table.num_rows // 2, table.num_rows - 1):
        sample = dataset[i]
        assert sample["observation"]["location"].dtype == torch.int32
        assert type(sample["action"]) is int and type(sample["timestep"]) is int
        assert as_plain(sample) == expected_sample(table, i, ITEMS)
    assert as_plain(dataset[-1]) == as_plain(dataset[len(dataset) - 1])
    with pytest.raises(IndexError):
        dataset[len(dataset)]


def test_dataloader_batch_256_shuffle_end_to_end(local_wh: tuple[str, pa.Table]) -> None:
    uri, table = local_wh
    dataset = ReplayDataset(base_path=uri)
    torch.manual_seed(0)
    seen = []
    for batch in DataLoader(dataset, batch_size=256, shuffle=True):
        size = len(batch["episode_id"])
        assert batch["observation"]["location"].shape == (size, 2)
        assert batch["observation"]["location"].dtype == torch.int32
        assert set(batch["observation"]["inventory"]) == set(ITEMS)
        assert all(v.shape == (size,) for v in batch["observation"]["inventory"].values())
        assert batch["action"].dtype == torch.int64 and batch["observation"]["orientation"].shape == (size,)
        seen += zip(batch["episode_id"], batch["agent_id"].tolist(), batch["timestep"].tolist(), strict=True)
    assert len(seen) == table.num_rows
    assert sorted(seen) == sorted(row_keys(table))
    assert seen != row_keys(table)  # shuffled


def test_dataloader_with_workers(local_wh: tuple[str, pa.Table]) -> None:
    uri, table = local_wh
    dataset = ReplayDataset(base_path=uri, dates=["2025-10-14"])
    total = sum(len(b["action"]) for b in DataLoader(dataset, batch_size=256, shuffle=True, num_workers=2))
    assert total == len(dataset) == table.filter(pc.field("date") == dt.date(2025, 10, 14)).num_rows


def test_dates_list_range_and_date_objects(local_wh: tuple[str, pa.Table]) -> None:
    uri, table = local_wh
    by_day = Counter(table["date"].to_pylist())
    assert len(ReplayDataset(base_path=uri, dates=["2025-10-15"])) == by_day[DAYS[1]]
    assert (
        len(ReplayDataset(base_path=uri, dates=[DAYS[0], "2025-10-17"])) == by_day[DAYS[0]] + by_day[DAYS[2]]
    )
    closed_range = ReplayDataset(start_date=DAYS[0], end_date="2025-10-15", base_path=uri)
    assert len(closed_range) == by_day[DAYS[0]] + by_day[DAYS[1]]
    with pytest.warns(MissingPartitionsWarning, match="2025-10-16"):
        open_range = ReplayDataset(start_date="2025-10-15", base_path=uri, missing="skip")
    assert len(open_range) == by_day[DAYS[1]] + by_day[DAYS[2]]
    assert len(ReplayDataset(end_date="2025-10-14", base_path=uri)) == by_day[DAYS[0]]


def test_missing_days_raise_listing_them(local_wh: tuple[str, pa.Table]) -> None:
    uri, _ = local_wh
    with pytest.raises(MissingPartitionsError, match=r"2025-10-16, 2025-10-20"):
        ReplayDataset(base_path=uri, dates=["2025-10-14", "2025-10-16", "2025-10-20"])
    with pytest.raises(MissingPartitionsError, match=r"2025-10-16"):  # a range must be complete
        ReplayDataset(start_date="2025-10-14", end_date="2025-10-17", base_path=uri)
    with pytest.raises(MissingPartitionsError, match=r"no partitions"):
        ReplayDataset(start_date="2026-01-01", base_path=uri)


def test_missing_skip_warns_and_loads_the_rest(local_wh: tuple[str, pa.Table]) -> None:
    uri, table = local_wh
    with pytest.warns(MissingPartitionsWarning, match=r"2025-10-16"):
        dataset = ReplayDataset(start_date="2025-10-14", end_date="2025-10-17", base_path=uri, missing="skip")
    assert len(dataset) == table.num_rows
    with pytest.warns(MissingPartitionsWarning, match=r"2025-11-01"):
        empty = ReplayDataset(base_path=uri, dates=["2025-11-01"], missing="skip")
    assert len(empty) == 0
    with pytest.warns(MissingPartitionsWarning, match=r"2025-11-01"):
        nothing = MettaSampleStream(warehouse=uri, dates=["2025-11-01"], missing="skip")
    assert nothing.num_rows == 0 and list(nothing) == []


def test_bad_arguments_raise_before_loading(local_wh: tuple[str, pa.Table], tmp_path: Path) -> None:
    uri, _ = local_wh
    with pytest.raises(ValueError, match="missing must be"):
        ReplayDataset(base_path=uri, missing="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="after end_date"):
        ReplayDataset(start_date="2025-10-17", end_date="2025-10-14", base_path=uri)
    with pytest.raises(ValueError, match="not both"):
        ReplayDataset(start_date="2025-10-14", dates=["2025-10-14"], base_path=uri)
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        ReplayDataset(dates=["14/10/2025"], base_path=uri)
    with pytest.raises(ValueError, match="datetime"):
        ReplayDataset(dates=[dt.datetime(2025, 10, 14, tzinfo=dt.UTC)], base_path=uri)
    with pytest.raises(ValueError, match="unknown column"):
        ReplayDataset(base_path=uri, columns=["nope"])
    with pytest.raises(FilterError, match="agent_id"):
        ReplayDataset(base_path=uri, filters={"agent_id": "= 5 OR 1=1"})
    with pytest.raises(MissingPartitionsError, match="no partitions"):
        ReplayDataset(base_path=str(tmp_path / "empty"))  # the original silently loaded nothing


def test_base_path_may_be_the_asset_folder(local_wh: tuple[str, pa.Table]) -> None:
    uri, table = local_wh
    dataset = ReplayDataset(base_path=f"{uri}/{ASSET}", dates=["2025-10-15"])
    assert len(dataset) == table.filter(pc.field("date") == DAYS[1]).num_rows
    assert len(ReplayDataset(base_path=Path(uri) / ASSET)) == table.num_rows


def test_default_base_path_comes_from_settings(
    local_wh: tuple[str, pa.Table], monkeypatch: pytest.MonkeyPatch
) -> None:
    uri, table = local_wh
    monkeypatch.setenv("REPLAY_WAREHOUSE_URI", uri)
    assert len(ReplayDataset()) == table.num_rows


def test_filters_and_extra_columns(local_wh: tuple[str, pa.Table]) -> None:
    uri, table = local_wh
    filters = {"agent_id": "IN (1, 3)", "action": "> 0", "date": "BETWEEN '2025-10-15' AND '2025-10-17'"}
    dataset = ReplayDataset(
        base_path=uri, filters=filters, columns=["reward", "environment", "date", "agent_id"]
    )
    expected = table.filter(
        pc.field("agent_id").isin([1, 3]) & (pc.field("action") > 0) & (pc.field("date") >= DAYS[1])
    )
    assert len(dataset) == expected.num_rows > 0
    sample = dataset[0]
    assert as_plain({k: sample[k] for k in expected_sample(expected, 0, [])}) == {
        **expected_sample(expected, 0, dataset.items)
    }
    assert sample["reward"] == expected["reward"][0].as_py() and sample["reward"].dtype == np.float32
    assert sample["date"] == expected["date"][0].as_py().isoformat()
    assert sample["environment"] in ("arena", None)
    assert set(sample) == {
        "observation",
        "action",
        "agent_id",
        "episode_id",
        "timestep",
        "reward",
        "environment",
        "date",
    }
    with_reward = ReplayDataset(base_path=uri, filters=filters, columns=["reward"])
    batch = next(iter(DataLoader(with_reward, batch_size=8, shuffle=False)))
    assert batch["reward"].dtype == torch.float32  # NumPy scalars keep their dtype through collate


def test_fixed_item_vocabulary(local_wh: tuple[str, pa.Table]) -> None:
    uri, table = local_wh
    dataset = ReplayDataset(base_path=uri, dates=[DAYS[0]], items=["heart", "energy", "unobtainium"])
    assert list(dataset[0]["observation"]["inventory"]) == ["heart", "energy", "unobtainium"]
    assert expected_sample(table, 0, ["heart", "energy", "unobtainium"]) == as_plain(dataset[0])


# ---------------------------------------------------------------------------------------------------------
# MettaSampleStream


def test_stream_yields_ready_tensors_that_match_the_rows(local_wh: tuple[str, pa.Table]) -> None:
    uri, table = local_wh
    stream = MettaSampleStream(warehouse=uri, batch_size=100, shuffle_buffer=0, columns=["reward"])
    assert stream.items == ITEMS and stream.num_rows == table.num_rows
    assert stream.episodes == sorted(set(table["episode_id"].to_pylist()))
    batches = list(DataLoader(stream, batch_size=None))
    assert [len(b["action"]) for b in batches[:-1]] == [100] * (len(batches) - 1)
    first = batches[0]
    assert first["observation"]["location"].shape == (100, 2)
    assert first["observation"]["location"].dtype == torch.int32
    assert first["observation"]["inventory"].shape == (100, len(ITEMS))
    for key in ("action", "agent_id", "timestep", "episode_id"):
        assert first[key].dtype == torch.int64 and first[key].shape == (100,)
    assert first["reward"].dtype == torch.float32
    # Unshuffled: rows in date/file order, each field equal to the source row.
    assert stream_keys(stream, batches) == row_keys(table)
    reference = ReplayDataset(base_path=uri)
    for i in (0, 99, 250):
        batch, j = batches[i // 100], i % 100
        sample = reference[i]
        assert batch["observation"]["location"][j].tolist() == sample["observation"]["location"].tolist()
        assert batch["observation"]["inventory"][j].tolist() == list(
            sample["observation"]["inventory"].values()
        )
        assert batch["observation"]["orientation"][j].item() == sample["observation"]["orientation"]
        assert batch["action"][j].item() == sample["action"]
        assert batch["reward"][j].item() == table["reward"][i].as_py()


@pytest.mark.parametrize("num_workers", [0, 2])
def test_stream_serves_every_row_once_across_workers(tmp_path: Path, num_workers: int) -> None:
    uri = str(tmp_path / "wh")
    days = [dt.date(2025, 10, d) for d in range(1, 6)]
    table = build_warehouse(uri, days, episodes=2, agents=3, steps=50)
    stream = MettaSampleStream(warehouse=uri, batch_size=64, shuffle_buffer=500, seed=7)
    assert len(stream.row_groups) == len(days)
    loader = DataLoader(stream, batch_size=None, num_workers=num_workers)
    keys = stream_keys(stream, loader)
    assert len(keys) == len(set(keys)) == table.num_rows
    assert set(keys) == set(row_keys(table))
    assert keys != row_keys(table)
    assert keys == stream_keys(stream, loader)  # deterministic for a seed (and worker count)


def test_loaders_pickle_for_spawned_workers(local_wh: tuple[str, pa.Table]) -> None:
    """Spawn/forkserver workers receive the dataset pickled: plain data, no open filesystem inside."""
    uri, _ = local_wh
    dataset = pickle.loads(pickle.dumps(ReplayDataset(base_path=uri, dates=[DAYS[0]])))
    assert as_plain(dataset[3]) == as_plain(ReplayDataset(base_path=uri, dates=[DAYS[0]])[3])
    stream = MettaSampleStream(warehouse=uri, dates=[DAYS[0]], filters={"action": "> 2"}, seed=4)
    copy = pickle.loads(pickle.dumps(stream))
    assert stream_keys(copy, copy) == stream_keys(stream, stream)


def test_stream_order_depends_on_seed_and_epoch(local_wh: tuple[str, pa.Table]) -> None:
    uri, _ = local_wh

    def order(seed: int, epoch: int = 0) -> list:
        stream = MettaSampleStream(warehouse=uri, batch_size=50, shuffle_buffer=300, seed=seed)
        stream.set_epoch(epoch)
        return stream_keys(stream, stream)

    assert order(1) == order(1)
    assert order(1) != order(2)
    assert order(1, epoch=0) != order(1, epoch=1)
    assert sorted(order(1)) == sorted(order(2))


def test_stream_shuffle_is_bounded_by_the_buffer(tmp_path: Path) -> None:
    """One row group, so only the buffer reorders: no row can come out before the buffer has reached it."""
    uri = str(tmp_path / "wh")
    table = build_warehouse(uri, [DAYS[0]], episodes=4, agents=5, steps=100)
    position = {key: i for i, key in enumerate(row_keys(table))}
    buffer, read_rows = 200, 64
    stream = MettaSampleStream(
        warehouse=uri, batch_size=32, shuffle_buffer=buffer, read_rows=read_rows, seed=3
    )
    source = [position[key] for key in stream_keys(stream, stream)]
    assert sorted(source) == list(range(table.num_rows))
    assert all(src < out + buffer + read_rows for out, src in enumerate(source))
    displacement = np.abs(np.asarray(source) - np.arange(len(source)))
    assert displacement.mean() > buffer / 4  # rows travel...
    runs = np.mean(np.diff(source) == 1)
    assert runs < 0.05, runs  # ...and neighbours are separated: a mere delay line would fail this


def test_stream_filters_drop_last_and_fixed_items(local_wh: tuple[str, pa.Table]) -> None:
    uri, table = local_wh
    filters = {"agent_id": "= 2", "timestep": "<= 30"}
    expected = table.filter((pc.field("agent_id") == 2) & (pc.field("timestep") <= 30))
    stream = MettaSampleStream(warehouse=uri, filters=filters, batch_size=32, drop_last=True, seed=0)
    assert stream.num_rows == expected.num_rows
    batches = list(stream)
    assert all(len(b["action"]) == 32 for b in batches)
    assert len(batches) == expected.num_rows // 32
    assert all(b["agent_id"].eq(2).all() and b["timestep"].le(30).all() for b in batches)
    fixed = MettaSampleStream(warehouse=uri, dates=[DAYS[0]], items=["heart", "zinc"], shuffle_buffer=0)
    first = next(iter(fixed))
    assert fixed.items == ["heart", "zinc"] and first["observation"]["inventory"].shape[1] == 2
    assert first["observation"]["inventory"][:, 1].eq(0).all()
    with pytest.raises(ValueError, match="numeric or bool"):
        MettaSampleStream(warehouse=uri, columns=["source_uri"])
    with pytest.raises(ValueError, match="batch_size"):
        MettaSampleStream(warehouse=uri, batch_size=0)


# ---------------------------------------------------------------------------------------------------------
# S3 (moto server)


def test_replay_dataset_and_stream_on_s3(s3_bucket: str, local_wh: tuple[str, pa.Table]) -> None:
    uri = f"s3://{s3_bucket}/wh"
    table = build_warehouse(uri, DAYS[:2], episodes=2, agents=3, steps=30)
    dataset = ReplayDataset(base_path=uri)
    assert len(dataset) == table.num_rows
    assert as_plain(dataset[5]) == expected_sample(table, 5, dataset.items)
    assert len(ReplayDataset(base_path=f"{uri}/{ASSET}", dates=[DAYS[1]])) == table.num_rows // 2
    with pytest.raises(MissingPartitionsError, match="2025-10-16"):
        ReplayDataset(base_path=uri, dates=["2025-10-16"])
    batch = next(iter(DataLoader(dataset, batch_size=256, shuffle=True)))
    assert batch["observation"]["location"].shape == (256, 2)
    stream = MettaSampleStream(warehouse=uri, batch_size=64, seed=0)
    assert sorted(stream_keys(stream, stream)) == sorted(row_keys(table))  # s3fs used in this process...
    keys = stream_keys(stream, DataLoader(stream, batch_size=None, num_workers=2))  # ...then after a fork
    assert sorted(keys) == sorted(row_keys(table))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(ReplayDataset(base_path=uri, filters={"agent_id": "= 1"})) == table.num_rows // 3
