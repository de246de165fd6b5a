"""The pipeline's day mining: re-cutting a file-by-file stream into row-group-sized batches."""

import datetime as dt

import pyarrow as pa


def test_steps_are_regrouped_into_row_group_sized_batches() -> None:
    """Episode batches become contiguous batches of exactly the row-group size (the last shorter),
    holding the same rows in the same order."""
    from replay_assets.pipeline.day import regrouped
    from replay_assets.sources.townlet.read import read_episode_steps
    from replay_assets.sources.townlet.sample import townlet_recording_bytes
    from replay_assets.sources.townlet.schema import TOWNLET_EPISODE_STEPS

    episodes = []
    for i, steps in enumerate([7, 30, 2, 12, 24]):
        data = townlet_recording_bytes(
            episode_id=i + 1, seed=i, num_steps=steps, compression="lz4", layout_shape="flat", timestamp=1e9
        )
        episodes.append(read_episode_steps(data, f"e{i}", date=dt.date(2025, 1, 1), checkpoint="c")[1])
    batches = list(regrouped(iter(episodes), 16, TOWNLET_EPISODE_STEPS))
    assert [b.num_rows for b in batches] == [16, 16, 16, 16, 11]
    assert all(b.schema.equals(TOWNLET_EPISODE_STEPS) for b in batches)
    expected = pa.Table.from_batches(episodes)
    assert pa.Table.from_batches(batches).equals(expected)
    assert list(regrouped(iter([]), 16, TOWNLET_EPISODE_STEPS)) == []
