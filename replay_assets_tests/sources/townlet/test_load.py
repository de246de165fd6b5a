"""TownletRecordings (list / load / seek) and TownletStepDataset over a warehouse the assets wrote.

The warehouse is materialized once per module with the real assets from a landing zone holding the real
checkpoint (``../shared/data/townlet``) beside a synthetic one written by the project's own
``write_townlet_checkpoint``: episodes with dropped steps, raw msgpack, every optional-field pattern, an
episode id shared with the real checkpoint, a missing file, a corrupt file and an orphan. A copy of it
with tiny row groups (written by ``write_parquet``, as the IO manager writes) makes episodes straddle
row groups and row groups span both checkpoints. Expected values come from the SQLite index and the
recording files themselves (lz4.frame + msgpack), never from the code under test.
"""

from __future__ import annotations

import datetime as dt
import os
import pickle
import shutil
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import lz4.frame
import msgpack
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from dagster import DagsterInstance, materialize
from torch.utils.data import DataLoader
from upath import UPath

from replay_assets.datasets import (
    AmbiguousEpisodeError,
    EpisodeNotFoundError,
    MissingPartitionsError,
    TownletRecordingRow,
    TownletRecordings,
    TownletReplay,
    TownletStepDataset,
)
from replay_assets.definitions import build_resources
from replay_assets.errors import ReplayAssetsError
from replay_assets.landing.assets import raw_replay_listings
from replay_assets.settings import Settings
from replay_assets.sources.townlet.assets import townlet_episode_steps, townlet_recordings_index
from replay_assets.sources.townlet.load_files import _fixed_lists
from replay_assets.sources.townlet.sample import TownletEpisode, recording_file_path, write_townlet_checkpoint
from replay_assets.sources.townlet.schema import TOWNLET_RECORDINGS_INDEX
from replay_assets.warehouse.parquet import write_parquet
from replay_assets_tests.conftest import upload_tree

REAL, SYNTH = "checkpoints_level2_5", "checkpoints_synth"
RANGE_TAGS = {
    "dagster/asset_partition_range_start": "2025-10-14",
    "dagster/asset_partition_range_end": "2025-10-16",
}
BASE = 1760500000.0  # 2025-10-15 03:46 UTC: the synthetic episodes share that day with real ones
INDEX_COLUMNS = (
    "episode_id", "file_path", "timestamp", "survival_steps", "total_reward", "extrinsic_reward",
    "intrinsic_reward", "curriculum_stage", "epsilon", "intrinsic_weight", "recording_reason",
    "file_size_bytes", "compressed_size_bytes",
)  # fmt: skip
QV = ("q_values", "epsilon", "action_masks")
SYNTH_EPISODES = [
    TownletEpisode(95, seed=1, num_steps=40, timestamp=BASE),  # also a real id, of the same day
    TownletEpisode(200, seed=2, num_steps=300, timestamp=BASE + 60, drop_steps=37, optional_fields=QV),
    TownletEpisode(201, seed=3, num_steps=60, timestamp=BASE + 120, drop_steps=1, compression="none"),
    TownletEpisode(202, seed=4, num_steps=120, timestamp=BASE + 180, optional_fields=QV, layout_shape="flat"),
    TownletEpisode(203, seed=5, num_steps=80, timestamp=BASE + 240, optional_fields=()),
    TownletEpisode(
        204,
        seed=6,
        num_steps=90,
        timestamp=BASE + 300,
        optional_fields=("time_of_day", "interaction_progress"),
    ),
    TownletEpisode(205, seed=7, num_steps=10, timestamp=BASE + 360),  # shorter than the windows below
    TownletEpisode(206, seed=8, num_steps=50, timestamp=BASE + 420),  # its file is deleted
    TownletEpisode(207, seed=9, num_steps=50, timestamp=BASE + 480),  # its file is truncated
    TownletEpisode(
        208,
        seed=10,
        num_steps=40,
        timestamp=BASE + 540,
        drop_steps=5,
        curriculum_stage=2,
        recording_reason="top_10pct",
    ),
]
VALID_SYNTH = [95, 200, 201, 202, 203, 204, 205, 208]
WINDOW = 16


# ---------------------------------------------------------------------------------------------------------
# Fixtures


def decode_file(path: Path) -> dict:
    data = path.read_bytes()
    return msgpack.unpackb(lz4.frame.decompress(data) if data[:4] == b"\x04\x22\x4d\x18" else data)


def build_landing(shared: Path, root: Path) -> Path:
    shutil.copytree(shared / "townlet", root / "townlet")
    for path in (root / "townlet").rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)  # the shared copy is read-only
    synth = root / "townlet" / SYNTH
    write_townlet_checkpoint(synth, SYNTH_EPISODES, db_name="demo_synth.db")
    (synth / recording_file_path(206)).unlink()
    corrupt = synth / recording_file_path(207)
    corrupt.write_bytes(corrupt.read_bytes()[:300])
    orphan = synth / recording_file_path(999)
    shutil.copyfile(synth / recording_file_path(203), orphan)  # its metadata says episode 203
    os.utime(orphan, (BASE + 600, BASE + 600))
    return root


def rewrite_steps(warehouse: Path, row_group_rows: int) -> None:
    """Rewrite every steps partition with ``write_parquet``, fed small batches as the asset streams."""
    for path in sorted((warehouse / "townlet_episode_steps").glob("date=*/part-0.parquet")):
        table = pq.read_table(path)
        write_parquet(UPath(str(path)), table.to_batches(max_chunksize=100), row_group_rows=row_group_rows)


@pytest.fixture(scope="module")
def built(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("townlet")
    landing = build_landing(shared_data, root / "landing")
    warehouse = root / "warehouse"
    settings = Settings(str(landing), str(warehouse), dt.date(2025, 1, 1))
    result = materialize(
        [raw_replay_listings, townlet_recordings_index, townlet_episode_steps],
        resources=build_resources(settings),
        instance=DagsterInstance.ephemeral(),
        tags=RANGE_TAGS,
    )
    assert result.success
    small = root / "small_groups"
    shutil.copytree(warehouse, small)
    rewrite_steps(small, row_group_rows=64)
    return {
        "landing": landing,
        "warehouse": warehouse,
        "small": small,
        "real_db": shared_data / "townlet" / REAL / "demo_level2_5.db",
    }


@pytest.fixture(scope="module", params=["as_materialized", "small_row_groups"])
def recordings(request: pytest.FixtureRequest, built: dict[str, Path]) -> TownletRecordings:
    key = "warehouse" if request.param == "as_materialized" else "small"
    with TownletRecordings(warehouse=str(built[key])) as loader:
        yield loader


def raw(built: dict[str, Path], checkpoint: str, episode_id: int) -> dict:
    return decode_file(built["landing"] / "townlet" / checkpoint / recording_file_path(episode_id))


def sqlite_list(
    db: Path, stage=None, reason=None, min_reward=None, max_reward=None, limit=100
) -> list[tuple]:
    """The producer's DemoDatabase.list_recordings query, on the real index opened without writing."""
    query = f"SELECT {', '.join(INDEX_COLUMNS)} FROM episode_recordings WHERE 1=1"
    params: list = []
    for clause, value in (
        (" AND curriculum_stage = ?", stage),
        (" AND recording_reason = ?", reason),
        (" AND total_reward >= ?", min_reward),
        (" AND total_reward <= ?", max_reward),
    ):
        if value is not None:
            query += clause
            params.append(value)
    connection = sqlite3.connect(f"file:{db}?mode=ro&immutable=1", uri=True)
    try:
        return connection.execute(
            f"{query} ORDER BY episode_id DESC LIMIT ?", [*params, -1 if limit is None else limit]
        ).fetchall()
    finally:
        connection.close()


def listed(rows: list[TownletRecordingRow]) -> list[tuple]:
    return [tuple(getattr(r, c) for c in INDEX_COLUMNS) for r in rows]


# ---------------------------------------------------------------------------------------------------------
# Package surface


def test_import_stays_lazy_and_the_loader_needs_no_torch() -> None:
    code = (
        "import sys, replay_assets.datasets as d\n"
        "assert not [m for m in ('torch', 'dagster', 'pyarrow') if m in sys.modules]\n"
        "assert d.TownletRecordings.__name__ == 'TownletRecordings' and d.TownletStepDataset\n"
        "assert 'pyarrow' in sys.modules\n"
        "heavy = [m for m in ('torch', 'dagster', 'duckdb') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_rows_carry_every_index_column() -> None:
    assert [f for f in TownletRecordingRow.__dataclass_fields__] == TOWNLET_RECORDINGS_INDEX.names


# ---------------------------------------------------------------------------------------------------------
# list()


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"stage": 3},
        {"stage": 9},
        {"reason": "periodic"},
        {"reason": "top_10pct"},
        {"min_reward": 200},
        {"max_reward": 141.08069885070967},  # exactly episode 128's reward: bounds are inclusive
        {"min_reward": 141.08069885070967, "max_reward": 141.08069885070967},
        {"min_reward": 100.5, "max_reward": 300},
        {"stage": 2, "min_reward": 150, "reason": "periodic"},
        {"limit": 5},
        {"limit": 0},
        {"limit": None, "stage": 4},
        {"min_reward": 400, "max_reward": 100},
    ],
)
def test_list_matches_the_producers_query_on_the_real_index(
    recordings: TownletRecordings, built: dict[str, Path], filters: dict
) -> None:
    expected = sqlite_list(built["real_db"], **filters)
    if filters.get("min_reward") == filters.get("max_reward") == 141.08069885070967:
        assert [row[0] for row in expected] == [128]
    rows = recordings.list(**filters, checkpoint=REAL)
    assert listed(rows) == expected
    assert all(r.checkpoint == REAL and r.valid and r.invalid_reason is None for r in rows)


def test_list_is_newest_first_across_checkpoints_with_validity(recordings: TownletRecordings) -> None:
    everything = recordings.list(limit=None)
    keys = [(r.episode_id, r.checkpoint) for r in everything]
    assert keys == sorted(keys, key=lambda k: (-k[0], k[1]))
    assert keys[0] == (208, SYNTH)
    # The orphan file has an index row (no file_path: no episode_recordings row names it) but is not listed.
    folder = Path(recordings.warehouse_uri) / "townlet_recordings_index"
    index = pa.concat_tables(pq.read_table(p) for p in sorted(folder.glob("date=*/part-0.parquet")))
    orphans = index.filter(pc.is_null(index["file_path"]))
    assert orphans["source_uri"].to_pylist() == [str(orphans["source_uri"][0])]
    assert orphans["source_uri"][0].as_py().endswith(recording_file_path(999))
    assert Counter(k[1] for k in keys) == {REAL: 32, SYNTH: len(SYNTH_EPISODES)}
    invalid = {r.episode_id: r for r in everything if not r.valid}
    assert set(invalid) == {206, 207}
    assert "missing file" in invalid[206].invalid_reason and not invalid[206].file_exists
    assert "undecodable" in invalid[207].invalid_reason
    assert [r.episode_id for r in recordings.list(limit=None, valid=False)] == [207, 206]
    loadable = recordings.list(limit=None, valid=True)
    assert len(loadable) == len(everything) - 2
    assert [(r.episode_id, r.checkpoint) for r in recordings.list(limit=3)] == keys[:3]
    top = recordings.list(reason="top_10pct")
    assert [(r.checkpoint, r.episode_id, r.curriculum_stage) for r in top] == [(SYNTH, 208, 2)]
    assert [r.episode_id for r in recordings.list(stage=1, checkpoint=SYNTH, max_reward=1e9)] == [
        207, 206, 205, 204, 203, 202, 201, 200, 95,
    ]  # fmt: skip


def test_list_rejects_bad_arguments(recordings: TownletRecordings) -> None:
    for bad in ({"stage": "1"}, {"stage": True}, {"reason": 3}, {"min_reward": "1"}, {"limit": -1}):
        with pytest.raises(ValueError):
            recordings.list(**bad)


# ---------------------------------------------------------------------------------------------------------
# load() / seek()


def assert_matches_file(episode: TownletReplay, document: dict) -> None:
    steps = document["steps"]
    assert len(episode) == len(steps) == episode.info.steps_recorded
    assert [s.as_dict() for s in episode] == steps
    assert episode[-1].as_dict() == steps[-1] and episode[0].as_dict() == steps[0]
    columns = episode.columns
    assert columns["step"].tolist() == [s["step"] for s in steps]
    assert np.array_equal(columns["meters"], np.array([s["meters"] for s in steps], dtype=np.float32))
    assert columns["meters"].dtype == np.float32
    assert columns["position"].tolist() == [s["position"] for s in steps]
    assert columns["reward"].tolist() == [s["reward"] for s in steps]
    has_q = [s["q_values"] is not None for s in steps]
    assert episode.present("q_values").tolist() == has_q
    if any(has_q):
        assert np.array_equal(
            columns["q_values"][has_q], np.array([s["q_values"] for s in steps if s["q_values"]], np.float32)
        )
    assert np.isnan(columns["q_values"][~np.array(has_q)]).all()
    assert np.isnan(columns["epsilon"][[s["epsilon"] is None for s in steps]]).all()
    assert (columns["time_of_day"][[s["time_of_day"] is None for s in steps]] == -1).all()
    metadata = document["metadata"]
    assert episode.episode_id == metadata["episode_id"]
    assert episode.info.survival_steps == metadata["survival_steps"]
    assert episode.info.total_reward == metadata["total_reward"]
    tensors = episode.tensors()
    assert tensors["meters"].dtype == torch.float32 and tensors["action"].dtype == torch.int64
    assert tensors["step"].tolist() == columns["step"].tolist()


@pytest.mark.parametrize("episode_id", [140, 141, 100, 0, 136])  # 140 and 141: raw msgpack, not lz4
def test_load_matches_the_real_recording(
    recordings: TownletRecordings, built: dict[str, Path], episode_id: int
) -> None:
    episode = recordings.load(episode_id)
    assert episode.checkpoint == REAL
    assert_matches_file(episode, raw(built, REAL, episode_id))
    assert episode.info.compression == ("none" if episode_id in (140, 141) else "lz4")
    (expected,) = [r for r in sqlite_list(built["real_db"], limit=None) if r[0] == episode_id]
    assert listed([episode.info]) == [expected]
    assert recordings.info(episode_id) == episode.info


@pytest.mark.parametrize("episode_id", [200, 201, 202, 203, 204, 205, 208])
def test_load_matches_synthetic_recordings(
    recordings: TownletRecordings, built: dict[str, Path], episode_id: int
) -> None:
    episode = recordings.load(episode_id)
    assert episode.checkpoint == SYNTH
    assert_matches_file(episode, raw(built, SYNTH, episode_id))


def test_seek_over_dropped_steps(recordings: TownletRecordings, built: dict[str, Path]) -> None:
    episode = recordings.load(200)
    recorded = [s["step"] for s in raw(built, SYNTH, 200)["steps"]]
    dropped = sorted(set(range(300)) - set(recorded))
    assert len(dropped) == 37 == episode.info.frames_dropped and dropped[-1] - dropped[0] == 36
    assert episode.missing_steps.tolist() == dropped
    assert episode.length == 300 and len(episode) == 263
    for step in range(300):
        expected = max(s for s in recorded if s <= step)
        assert episode.seek(step).step == expected
        assert episode[episode.index_of(step)].step == expected
        if step in dropped:
            with pytest.raises(KeyError, match="dropped"):
                episode.seek(step, exact=True)
        else:
            assert episode.seek(step, exact=True).step == step
    assert episode.seek(dropped[0]) == episode.seek(dropped[0] - 1)  # a dropped frame shows the one before
    for outside in (-1, 300, 10_000):
        with pytest.raises(IndexError):
            episode.seek(outside)
    with pytest.raises(IndexError):
        episode[len(episode)]
    assert episode[-1].done and episode.seek(299).done


def test_load_errors(recordings: TownletRecordings) -> None:
    with pytest.raises(AmbiguousEpisodeError, match="checkpoint"):
        recordings.load(95)
    assert len(recordings.load(95, checkpoint=SYNTH)) == 40
    assert recordings.load(95, checkpoint=REAL).info.survival_steps == 30
    assert len(recordings.load(203)) == 80  # the orphan copy (metadata id 203) does not make it ambiguous
    with pytest.raises(EpisodeNotFoundError, match="missing file"):
        recordings.load(206)
    with pytest.raises(EpisodeNotFoundError, match="undecodable"):
        recordings.load(207)
    with pytest.raises(EpisodeNotFoundError, match="not in townlet_recordings_index"):
        recordings.load(12345)
    with pytest.raises(EpisodeNotFoundError, match=f"it is in '{SYNTH}'"):
        recordings.load(200, checkpoint=REAL)  # says where episode 200 is instead
    for bad in ("5", 5.0, True):
        with pytest.raises(ValueError):
            recordings.load(bad)


def test_missing_steps_partition_and_refresh(built: dict[str, Path], tmp_path: Path) -> None:
    warehouse = tmp_path / "wh"
    shutil.copytree(built["small"], warehouse)
    loader = TownletRecordings(warehouse=str(warehouse))
    assert len(loader.load(0)) == 50  # episode 0 is on 2025-10-14
    shutil.rmtree(warehouse / "townlet_episode_steps" / "date=2025-10-16")
    with pytest.raises(MissingPartitionsError, match="2025-10-16"):
        loader.load(141)
    shutil.rmtree(warehouse / "townlet_recordings_index" / "date=2025-10-16")
    assert any(r.episode_id == 141 for r in loader.list())  # the index is read once...
    loader.refresh()  # ...until refreshed
    assert not any(r.episode_id == 141 for r in loader.list())
    with pytest.raises(EpisodeNotFoundError):
        loader.load(141)
    with pytest.raises(MissingPartitionsError, match="townlet_recordings_index"):
        TownletRecordings(warehouse=str(tmp_path / "empty")).list()


def test_default_warehouse_and_pickling(built: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLAY_WAREHOUSE_URI", str(built["small"]))
    loader = TownletRecordings()
    assert loader.warehouse_uri == str(built["small"])
    before = loader.load(141)
    copy = pickle.loads(pickle.dumps(loader))
    assert [s.as_dict() for s in copy.load(141)] == [s.as_dict() for s in before]
    assert TownletRecordings(warehouse=str(built["small"] / "townlet_recordings_index")).warehouse_uri == str(
        built["small"]
    )


def test_small_row_groups_really_split_episodes(built: dict[str, Path]) -> None:
    """Guard for the fixture: the small-group copy does exercise straddling and mixed row groups."""
    path = built["small"] / "townlet_episode_steps" / "date=2025-10-15" / "part-0.parquet"
    metadata = pq.ParquetFile(path).metadata
    groups = [metadata.row_group(i) for i in range(metadata.num_row_groups)]
    assert len(groups) > 30
    leaf = {metadata.schema.column(i).path: i for i in range(metadata.num_columns)}
    episode, checkpoint = leaf["episode_id"], leaf["checkpoint"]  # `date` is in the folder name only
    ids = [(g.column(episode).statistics.min, g.column(episode).statistics.max) for g in groups]
    assert any(low == high for low, high in ids)  # an episode longer than a group
    names = [(g.column(checkpoint).statistics.min, g.column(checkpoint).statistics.max) for g in groups]
    assert any(low != high for low, high in names)  # a group holding both checkpoints


# ---------------------------------------------------------------------------------------------------------
# TownletStepDataset


def test_step_dataset_items_and_dataloader(recordings: TownletRecordings, built: dict[str, Path]) -> None:
    dataset = TownletStepDataset(warehouse=recordings, checkpoint=REAL)
    real = {r.episode_id: r for r in recordings.list(limit=None, checkpoint=REAL)}
    assert dataset.episodes == [(REAL, e) for e in sorted(real)]
    assert len(dataset) == sum(r.steps_recorded for r in real.values())
    assert (dataset.position_dim, dataset.meter_count, dataset.num_actions) == (2, 8, 6)
    episode = recordings.load(141)
    first = dataset.episodes.index((REAL, 141))
    start = sum(real[e].steps_recorded for _, e in dataset.episodes[:first])
    item = dataset[start + 7]
    step = raw(built, REAL, 141)["steps"][7]
    assert item["episode_index"].item() == first and item["episode_id"].item() == 141
    assert item["step"].item() == 7 and item["action"].item() == step["action"]
    assert item["position"].tolist() == step["position"] and item["has_position"].item()
    assert item["meters"].dtype == torch.float32 and item["meters"].tolist() == step["meters"]
    assert item["reward"].item() == step["reward"] and item["done"].item() is False
    assert item["epsilon"].item() == step["epsilon"] and item["has_epsilon"].item()
    assert not item["has_q_values"].item() and torch.isnan(item["q_values"]).all()  # 141 has no q-values
    assert item["q_values"].shape == (6,) and item["action_masks"].tolist() == step["action_masks"]
    assert item["time_of_day"].item() == -1 and not item["has_time_of_day"].item()
    whole = episode.tensors()
    assert torch.equal(dataset[start + len(episode) - 1]["meters"], whole["meters"][-1])

    torch.manual_seed(0)
    seen = []
    for batch in DataLoader(dataset, batch_size=64, shuffle=True):
        size = len(batch["step"])
        assert batch["meters"].shape == (size, 8) and batch["meters"].dtype == torch.float32
        assert batch["position"].shape == (size, 2) and batch["q_values"].shape == (size, 6)
        assert batch["done"].dtype == torch.bool and batch["reward"].dtype == torch.float64
        seen += zip(batch["episode_id"].tolist(), batch["step"].tolist(), strict=True)
    assert len(seen) == len(dataset) == len(set(seen))
    assert seen != sorted(seen)  # shuffled


def windows_of(steps: list[int], k: int, contiguous_only: bool) -> int:
    starts = range(len(steps) - k + 1)
    return sum(1 for i in starts if not contiguous_only or steps[i + k - 1] - steps[i] == k - 1)


@pytest.mark.parametrize("contiguous_only", [False, True])
def test_windows_stay_in_one_episode(
    recordings: TownletRecordings, built: dict[str, Path], contiguous_only: bool
) -> None:
    dataset = TownletStepDataset(
        warehouse=recordings, checkpoint=SYNTH, window=WINDOW, contiguous_only=contiguous_only
    )
    assert dataset.episodes == [(SYNTH, e) for e in VALID_SYNTH]
    recorded = {e: [s["step"] for s in raw(built, SYNTH, e)["steps"]] for e in VALID_SYNTH}
    assert len(dataset) == sum(windows_of(s, WINDOW, contiguous_only) for s in recorded.values())
    gaps = 0
    for i in range(len(dataset)):
        item = dataset[i]
        ids = item["episode_id"].tolist()
        assert len(ids) == WINDOW and len(set(ids)) == 1 and len(set(item["episode_index"].tolist())) == 1
        steps = item["step"].tolist()
        diffs = np.diff(steps)
        assert (diffs >= 1).all()
        assert set(steps) <= set(recorded[ids[0]])
        gaps += int((diffs > 1).any())
        assert item["meters"].shape == (WINDOW, 8)
    assert (gaps == 0) if contiguous_only else (gaps > 0)
    assert 205 not in {dataset[i]["episode_id"][0].item() for i in range(len(dataset))}  # 10 steps < window
    batch = next(iter(DataLoader(dataset, batch_size=64, shuffle=True)))
    assert batch["meters"].shape == (64, WINDOW, 8) and batch["step"].shape == (64, WINDOW)
    assert (batch["episode_id"] == batch["episode_id"][:, :1]).all()


def test_dataset_episode_selection(recordings: TownletRecordings) -> None:
    rows = recordings.list(limit=2, valid=True, checkpoint=SYNTH)  # 208, 205
    chosen = TownletStepDataset(warehouse=recordings, episodes=[140, (SYNTH, 95), *rows])
    assert chosen.episodes == [(REAL, 140), (SYNTH, 95), (SYNTH, 205), (SYNTH, 208)]
    assert len(chosen) == 32 + 40 + 10 + 35
    assert len(TownletStepDataset(warehouse=recordings, episodes=[95], checkpoint=SYNTH)) == 40
    staged = TownletStepDataset(warehouse=recordings, stage=2, checkpoint=SYNTH)
    assert staged.episodes == [(SYNTH, 208)] and len(staged) == 35
    everything = TownletStepDataset(warehouse=recordings)
    assert len(everything.episodes) == 32 + len(VALID_SYNTH)
    with pytest.raises(AmbiguousEpisodeError):
        TownletStepDataset(warehouse=recordings, episodes=[95])
    with pytest.raises(EpisodeNotFoundError):
        TownletStepDataset(warehouse=recordings, episodes=[206])
    with pytest.raises(ValueError):
        TownletStepDataset(warehouse=recordings, episodes=[140], stage=1)
    with pytest.raises(ValueError):
        TownletStepDataset(warehouse=recordings, window=0)
    with pytest.raises(ValueError):
        TownletStepDataset(warehouse=recordings, contiguous_only=True)
    empty = TownletStepDataset(warehouse=recordings, stage=9)
    assert len(empty) == 0 and empty.episodes == []


def test_dataset_with_workers(built: dict[str, Path]) -> None:
    dataset = TownletStepDataset(
        warehouse=str(built["small"]), checkpoint=SYNTH, window=4, contiguous_only=True
    )
    loader = DataLoader(dataset, batch_size=64, shuffle=True, num_workers=2)
    keys = [
        (e, s)
        for batch in loader
        for e, s in zip(batch["episode_id"][:, 0].tolist(), batch["step"][:, 0].tolist(), strict=True)
    ]
    assert len(keys) == len(set(keys)) == len(dataset)


def test_ragged_lists_are_refused() -> None:
    column = pa.chunked_array([pa.array([[1.0, 2.0], [3.0]], pa.list_(pa.float32()))])
    with pytest.raises(ReplayAssetsError, match="different lengths"):
        _fixed_lists(column, np.dtype(np.float32), np.nan, "meters")


# ---------------------------------------------------------------------------------------------------------
# S3


def test_list_load_and_dataset_on_s3(s3_bucket: str, built: dict[str, Path]) -> None:
    upload_tree(built["small"], s3_bucket, "wh")
    local = TownletRecordings(warehouse=str(built["small"]))
    remote = TownletRecordings(warehouse=f"s3://{s3_bucket}/wh")
    assert remote.list(limit=None) == local.list(limit=None)
    for episode_id, checkpoint in ((140, None), (200, None), (95, SYNTH)):
        assert [s.as_dict() for s in remote.load(episode_id, checkpoint)] == [
            s.as_dict() for s in local.load(episode_id, checkpoint)
        ]
    remote_set = TownletStepDataset(warehouse=remote, checkpoint=SYNTH, window=WINDOW)
    local_set = TownletStepDataset(warehouse=local, checkpoint=SYNTH, window=WINDOW)
    assert len(remote_set) == len(local_set)
    for index in (0, 7, len(local_set) - 1):
        for key, value in local_set[index].items():
            torch.testing.assert_close(remote_set[index][key], value, rtol=0, atol=0, equal_nan=True)
    remote.close()
