"""sources/metta/read.py on the real MettaScope replays and on fixtures built here for every edge case."""

from __future__ import annotations

import datetime as dt
import functools
import gzip
import json
import pickle
import re
import zlib
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from replay_assets.errors import ReplayAssetsError
from replay_assets.sources.contract import Lineage
from replay_assets.sources.metta.read import (
    MettaLimits,
    ReplayFormatError,
    environment_from_path,
    episode_id_for,
    json_depth,
    read_metta_samples,
)
from replay_assets.sources.metta.sample import metta_replay_bytes
from replay_assets.sources.metta.schema import METTA_ACTION_SAMPLES
from replay_assets_tests.conftest import SHARED_DATA

METTA = SHARED_DATA / "metta"
DAY = dt.date(2025, 1, 2)
SHA = "ab" * 32

# file -> (version, agents, rows per agent). v2/v3 and same-step v1 files: max_steps - 1 rows per agent
# (step 0 has no prior state); heart_collector logs each action's success/reward one step late, so its
# last action has no recorded outcome: max_steps - 2.
REAL_FILES = {
    "dinky7.json.z": (2, 4, 999),
    "dinky7.json.gz": (2, 4, 999),
    "early_cvc.json": (2, 4, 999),
    "early_cvc.json.z": (2, 4, 999),
    "pens.json.z": (2, 24, 255),
    "heart_collector.json.z": (1, 20, 998),
    "sequence.json.z": (1, 1, 599),
    "the_4_maze.json.z": (1, 4, 999),
    "the_280_agents.json.z": (1, 240, 999),
}


def _source(name: str, folder: str = f"metta/{DAY.isoformat()}") -> Lineage:
    return Lineage(DAY, f"file:///landing/{folder}/{name}", SHA, f"{folder}/{name}")


def _read(data: bytes, source: Lineage | None = None, **kwargs: Any) -> pa.Table:
    """``kwargs``: the reader's keyword arguments, or fields of ``MettaLimits``."""
    limits = {k: kwargs.pop(k) for k in list(kwargs) if k in MettaLimits.__dataclass_fields__}
    batches = list(
        read_metta_samples(data, source or _source("fixture.json.z"), limits=MettaLimits(**limits), **kwargs)
    )
    for batch in batches:
        assert batch.schema.equals(METTA_ACTION_SAMPLES, check_metadata=True)
    return pa.Table.from_batches(batches, schema=METTA_ACTION_SAMPLES)


def _real_bytes(name: str) -> bytes:
    path = METTA / name
    if not path.is_file():
        pytest.skip(f"real replay {path} not available (../shared/data/metta beside the checkout)")
    return path.read_bytes()


@functools.cache
def _real_table(name: str) -> pa.Table:
    return _read(_real_bytes(name), _source(name))


def _row(table: pa.Table, agent_id: int, timestep: int) -> dict[str, Any]:
    mask = pc.and_(pc.equal(table["agent_id"], agent_id), pc.equal(table["timestep"], timestep))
    rows = table.filter(mask).to_pylist()
    assert len(rows) == 1, (agent_id, timestep)
    return rows[0]


def _agent(table: pa.Table, agent_id: int) -> pa.Table:
    return table.filter(pc.equal(table["agent_id"], agent_id))


def _location(row: dict[str, Any]) -> tuple[int, int]:
    return row["location_x"], row["location_y"]


# ---------------------------------------------------------------------------------------- real files


@pytest.mark.parametrize("name", sorted(REAL_FILES))
def test_every_real_file_decodes_with_the_row_count_rule(name: str) -> None:
    version, agents, per_agent = REAL_FILES[name]
    table = _real_table(name)
    assert table.num_rows == agents * per_agent
    assert set(table["replay_version"].to_pylist()) == {version}
    ids = np.asarray(table["agent_id"])
    steps = np.asarray(table["timestep"])
    assert np.array_equal(np.unique(ids), np.arange(agents))
    # sorted by (agent_id, timestep), each agent's timesteps exactly 1..per_agent
    assert np.array_equal(ids, np.repeat(np.arange(agents), per_agent))
    assert np.array_equal(steps, np.tile(np.arange(1, per_agent + 1), agents))
    assert set(table["episode_id"].to_pylist()) == {"sha256:" + SHA[:32]}
    assert table["action_name"].null_count == 0


@pytest.mark.parametrize(
    ("compressed", "other"), [("dinky7.json.z", "dinky7.json.gz"), ("early_cvc.json.z", "early_cvc.json")]
)
def test_containers_of_one_replay_give_identical_tables(compressed: str, other: str) -> None:
    source = _source("same.json.z")
    assert _read(_real_bytes(compressed), source).equals(_read(_real_bytes(other), source))


def test_early_cvc_three_change_location_series_and_constant_locations() -> None:
    table = _real_table("early_cvc.json")
    # agent 0: location [[0,[24,24]],[227,[23,24]],[745,[22,24]]]; moves west at 227 and 745
    expected = [
        (226, "noop", (24, 24)), (227, "move_west", (24, 24)), (228, "noop", (23, 24)),
        (745, "move_west", (23, 24)), (746, "noop", (22, 24)), (999, "noop", (22, 24)),
    ]  # fmt: skip
    for t, action, before in expected:
        row = _row(table, 0, t)
        assert (row["action_name"], _location(row)) == (action, before), t
    for agent_id, x in [(1, 26), (2, 27), (3, 28)]:
        agent = _agent(table, agent_id)
        assert set(zip(agent["location_x"].to_pylist(), agent["location_y"].to_pylist(), strict=True)) == {
            (x, 24)
        }


def test_early_cvc_inventory_and_rewards() -> None:
    table = _real_table("early_cvc.json")
    # energy logged after each step: agent 0 spent 2 on its move at step 0, then regains 2 per step
    assert _row(table, 0, 1)["inventory"] == [("energy", 100)]
    assert _row(table, 0, 2)["inventory"] == [("energy", 102)]
    assert _row(table, 1, 1)["inventory"] == [("energy", 102)]
    assert _row(table, 1, 999)["inventory"] == [("energy", 200)]
    assert pc.max(table["reward"]).as_py() == 0.0 and pc.max(table["total_reward"]).as_py() == 0.0
    assert pc.all(table["action_success"]).as_py() and not pc.any(table["is_frozen"]).as_py()


def test_dinky7_move_south_pairs_the_state_before_the_action() -> None:
    table = _real_table("dinky7.json.z")
    first, second = _row(table, 1, 1), _row(table, 1, 2)
    assert (first["action"], first["action_name"], _location(first)) == (2, "move_south", (101, 104))
    assert _location(second) == (101, 105)
    assert first["inventory"] == [("energy", 100)] and second["inventory"] == [("energy", 99)]


def test_dinky7_rewards_and_running_total() -> None:
    table = _real_table("dinky7.json.z")
    assert (_row(table, 0, 315)["reward"], _row(table, 0, 315)["total_reward"]) == (0.25, 0.25)
    assert (_row(table, 0, 316)["reward"], _row(table, 0, 316)["total_reward"]) == (0.0, 0.25)
    for agent_id in range(4):
        agent = _agent(table, agent_id)
        running = np.cumsum(np.asarray(agent["reward"], dtype=np.float64))  # step 0's reward is 0 here
        assert np.allclose(running, np.asarray(agent["total_reward"]))
        assert agent["total_reward"][-1].as_py() == 1.0


@pytest.mark.parametrize("name", ["dinky7.json.z", "pens.json.z"])
def test_v2_a_successful_move_or_turn_shows_in_the_next_rows_state(name: str) -> None:
    table = _real_table(name)
    same_agent = np.asarray(table["agent_id"])[1:] == np.asarray(table["agent_id"])[:-1]
    names = np.asarray(table["action_name"].to_pylist())[:-1]
    ok = np.asarray(table["action_success"])[:-1]
    x, y, facing = (np.asarray(table[c]) for c in ("location_x", "location_y", "orientation"))
    moved = (x[1:] != x[:-1]) | (y[1:] != y[:-1])
    is_move = same_agent & np.char.startswith(names, "move")
    assert is_move.sum() > 100
    assert not np.any(moved & same_agent & ~is_move)  # nothing moves without a move action
    assert not np.any(moved & is_move & ~ok)  # a failed move never moves
    if name == "pens.json.z":  # rotate's param is the new orientation
        param = np.asarray(table["action_param"])[:-1]
        turning = same_agent & (names == "rotate") & (facing[:-1] != param)
        assert turning.sum() > 100 and np.array_equal(facing[1:][turning] == param[turning], ok[turning])


@pytest.mark.parametrize("name", ["heart_collector.json.z", "the_4_maze.json.z", "the_280_agents.json.z"])
def test_v1_rows_pair_state_before_action_with_that_actions_outcome(name: str) -> None:
    table = _real_table(name)
    same_agent = np.asarray(table["agent_id"])[1:] == np.asarray(table["agent_id"])[:-1]
    names = np.asarray(table["action_name"].to_pylist())
    param = np.asarray(table["action_param"])[:-1]
    facing = np.asarray(table["orientation"])
    ok = np.asarray(table["action_success"])[:-1]
    turning = same_agent & (names[:-1] == "rotate") & (facing[:-1] != param)
    turned = facing[1:] == param
    # a rotation shows in the next row's (before) state exactly when this row says it succeeded
    assert turning.sum() > 500
    assert np.mean(turned[turning] == ok[turning]) > 0.99
    if name != "the_280_agents.json.z":  # there attacks and moves also pay; here only get_output does
        rewarded = np.asarray(table["reward"]) > 0
        assert rewarded.sum() > 10 and set(names[rewarded]) == {"get_output"}


def test_v1_exact_rows_of_both_outcome_timings() -> None:
    late = _real_table("heart_collector.json.z")  # success/reward of action t logged at t + 1
    row = _row(late, 0, 8)
    assert (row["action_name"], row["reward"], row["total_reward"], row["inventory"]) == (
        "get_output",
        1.0,
        1.0,
        [],
    )
    row = _row(late, 0, 9)
    assert (row["action_name"], row["reward"], row["inventory"]) == ("rotate", 0.0, [("heart", 1)])
    assert _location(_row(late, 0, 1)) == (26, 10) and _location(_row(late, 0, 3)) == (26, 12)
    same = _real_table("the_4_maze.json.z")  # logged at t
    row = _row(same, 0, 1)
    assert (row["action_name"], row["reward"], row["total_reward"], row["inventory"]) == (
        "get_output",
        1.0,
        1.0,
        [],
    )
    assert _row(same, 0, 2)["inventory"] == [("heart", 1)]
    frozen = _real_table("the_280_agents.json.z")  # agent:frozen countdown
    assert 0 < pc.sum(frozen["is_frozen"]).as_py() < frozen.num_rows


def test_v1_sequence_reads_inv_prefixed_items() -> None:
    table = _real_table("sequence.json.z")
    assert _row(table, 0, 251)["inventory"] == [("ore.red", 1), ("battery.red", 1)]
    assert _row(table, 0, 253)["inventory"] == [("ore.red", 1), ("heart", 1)]
    assert _row(table, 0, 252)["reward"] == 1.0


def test_real_v2_rewritten_as_v3_decodes_identically() -> None:
    data = _real_bytes("pens.json.z")  # its locations are [x, y, layer]; v3 writes [x, y]
    doc = json.loads(zlib.decompress(data))
    doc["version"] = 3
    for obj in doc["objects"]:
        loc = obj["location"]
        obj["location"] = [[s, xy[:2]] for s, xy in loc] if isinstance(loc[0], list) else loc[:2]
    v3 = _read(gzip.compress(json.dumps(doc).encode(), mtime=0), _source("pens.json.z"))
    v2 = _real_table("pens.json.z")
    assert set(v3["replay_version"].to_pylist()) == {3}
    assert v3.drop_columns(["replay_version"]).equals(v2.drop_columns(["replay_version"]))


def test_filters_on_real_files() -> None:
    data = _real_bytes("dinky7.json.z")
    assert _read(data, environment="mettagrid").num_rows == 4 * 999  # mg_config label, no folder name
    assert _read(data, environment="arena").num_rows == 0
    in_folder = _source("dinky7.json.z", folder=f"metta/arena/{DAY.isoformat()}")
    assert set(_read(data, in_folder)["environment"].to_pylist()) == {"arena"}  # the folder wins
    assert _read(data, in_folder, environment="mettagrid").num_rows == 0
    pens = _real_table("pens.json.z")
    assert pens["environment"].null_count == pens.num_rows  # no folder, no mg_config
    finals = {
        r["agent_id"]: r["total_reward"] for r in pens.filter(pc.equal(pens["timestep"], 255)).to_pylist()
    }
    threshold = sorted(finals.values())[len(finals) // 2]
    kept = _read(_real_bytes("pens.json.z"), min_reward=threshold)
    expected = {a for a, final in finals.items() if final >= threshold}
    assert set(kept["agent_id"].to_pylist()) == expected and 0 < len(expected) < len(finals)


def test_batches_respect_batch_rows_and_concatenate_to_the_same_table() -> None:
    data = _real_bytes("heart_collector.json.z")
    batches = list(read_metta_samples(data, _source("heart_collector.json.z"), batch_rows=777))
    assert all(b.num_rows <= 777 for b in batches) and sum(b.num_rows for b in batches) == 20 * 998
    assert pa.Table.from_batches(batches).equals(_real_table("heart_collector.json.z"))
    with pytest.raises(ValueError, match="batch_rows"):
        list(read_metta_samples(data, _source("x"), batch_rows=0))


# ---------------------------------------------------------------------------------------- fixtures


def _v2_doc(
    agents: list[dict[str, Any]], *, version: int = 2, max_steps: int = 6, **top: Any
) -> dict[str, Any]:
    objects = [{"id": 1, "type_name": "wall", "location": [0, 0], "inventory": []}]
    objects += [{"id": i + 2, "type_name": "agent", "is_agent": True, **a} for i, a in enumerate(agents)]
    return {
        "version": version,
        "action_names": ["noop", "move_north", "move_south"],
        "item_names": ["energy", "heart"],
        "type_names": ["agent", "wall"],
        "map_size": [8, 8],
        "num_agents": len(agents),
        "max_steps": max_steps,
        "mg_config": {"label": "tiny"},
        "objects": objects,
        **top,
    }


def _z(doc: Any) -> bytes:
    return zlib.compress(json.dumps(doc).encode())


def test_series_starting_late_use_the_default_before() -> None:
    agent = {
        "agent_id": 0,
        "location": [[3, [5, 6]]],
        "inventory": [[2, [[1, 4], [0, 0]]]],
        "action_id": [[2, 1]],
        "is_frozen": [[4, True]],
        "current_reward": [[3, 0.5], [4, 0.0]],
        "total_reward": [[3, 0.5]],
    }
    rows = _read(_z(_v2_doc([agent]))).to_pylist()
    assert [r["timestep"] for r in rows] == [1, 2, 3, 4, 5]
    assert [_location(r) for r in rows] == [(0, 0), (0, 0), (0, 0), (5, 6), (5, 6)]  # state at t - 1
    assert [r["inventory"] for r in rows] == [[], [], [("heart", 4)], [("heart", 4)], [("heart", 4)]]
    assert [r["action"] for r in rows] == [0, 1, 1, 1, 1]
    assert [r["is_frozen"] for r in rows] == [False, False, False, False, True]
    assert [r["reward"] for r in rows] == [0.0, 0.0, 0.5, 0.0, 0.0]
    assert [r["total_reward"] for r in rows] == [0.0, 0.0, 0.5, 0.5, 0.5]


def test_field_aware_constants_missing_keys_and_unknown_actions() -> None:
    agents = [
        {"agent_id": 1, "location": [[0, [4, 4]], [2, [3, 4]], [4, [2, 4]]]},  # 3 changes, not [x, y, z]
        {"agent_id": 0, "location": [7, 8, 1], "inventory": [[0, 3], [1, 0]], "action_id": 99},
        {"agent_id": 2},  # every key missing: 0 / false / []
    ]
    table = _read(_z(_v2_doc(agents, max_steps=5)))
    assert table["agent_id"].to_pylist() == [0] * 4 + [1] * 4 + [2] * 4  # sorted by agent_id
    zero, one, two = (_agent(table, a).to_pylist() for a in range(3))
    assert {_location(r) for r in zero} == {(7, 8)} and {tuple(r["inventory"]) for r in zero} == {
        (("energy", 3),)
    }
    assert {(r["action"], r["action_name"]) for r in zero} == {(99, None)}  # out of range: null, no crash
    assert [_location(r) for r in one] == [(4, 4), (4, 4), (3, 4), (3, 4)]
    assert {
        (_location(r), r["action_name"], r["action_success"], r["is_frozen"], r["reward"]) for r in two
    } == {((0, 0), "noop", False, False, 0.0)}
    assert all(r["inventory"] == [] for r in two)


def test_v1_fields_total_reward_computed_when_absent() -> None:
    agent = {
        "agent_id": 0, "r": [[0, 3], [2, 4]], "c": 5, "agent:orientation": 1,
        "agent:frozen": [[0, 0], [3, 2]], "agent:inv:heart": [[0, 0], [2, 1]], "inv:ore": 2,
        "action": [[0, [2, 0]], [1, [3, 0]]], "reward": [[1, 1.0], [2, 0.0]],
    }  # fmt: skip
    doc = {"version": 1, "action_names": ["a", "b", "noop", "move"], "max_steps": 5, "grid_objects": [agent]}
    rows = _read(_z(doc)).to_pylist()
    assert [r["timestep"] for r in rows] == [1, 2, 3, 4]  # the reward comes before its heart: same-step
    assert [_location(r) for r in rows] == [
        (5, 3),
        (5, 4),
        (5, 4),
        (5, 4),
    ]  # v1 state at t is before action t
    assert [r["inventory"] for r in rows] == [
        [("ore", 2)],
        [("heart", 1), ("ore", 2)],
        *[[("heart", 1), ("ore", 2)]] * 2,
    ]
    assert [r["reward"] for r in rows] == [1.0, 0.0, 0.0, 0.0]
    assert [r["total_reward"] for r in rows] == [1.0, 1.0, 1.0, 1.0]
    assert [r["is_frozen"] for r in rows] == [False, False, True, True]
    assert {(r["action_name"], r["orientation"]) for r in rows} == {("move", 1)}


@pytest.mark.parametrize("compression", ["zlib", "gzip", "none"])
@pytest.mark.parametrize("version", [1, 2, 3])
def test_sample_writer_replays_decode(version: int, compression: str) -> None:
    data = metta_replay_bytes(version=version, compression=compression, seed=5, type_field="type_id")
    table = _read(data, _source("s.json", folder=f"metta/arena/{DAY.isoformat()}"))
    # the writer's v1 logs a reward one step after its get_output (like heart_collector): one row fewer
    per_agent = 198 if version == 1 else 199
    assert table.num_rows == 4 * per_agent and set(table["replay_version"].to_pylist()) == {version}
    assert set(table["environment"].to_pylist()) == {"arena"}
    rewarded = table.filter(pc.greater(table["reward"], 0))
    assert rewarded.num_rows > 0
    if version == 1:
        assert set(rewarded["action_name"].to_pylist()) == {"get_output"}
    else:  # trap agent 0 starts at (3, 7) and moves west at steps 50 and 150
        assert [_location(_row(table, 0, t)) for t in (50, 51, 150, 151)] == [(3, 7), (2, 7), (2, 7), (1, 7)]
        assert _row(table, 0, 50)["action_name"] == "move_west"
        assert pc.any(table["is_frozen"]).as_py()


# ---------------------------------------------------------------------------------------- errors


def _broken_gzip() -> bytes:
    data = bytearray(metta_replay_bytes(version=2, compression="gzip", seed=1))
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0x5A for b in data[middle : middle + 64])
    return bytes(data)


def _malformed_agent(**fields: Any) -> bytes:
    return _z(_v2_doc([{"agent_id": 0}, {"agent_id": 1, **fields}]))


def _without(key: str) -> bytes:
    doc = _v2_doc([{"agent_id": 0}])
    del doc[key]
    return _z(doc)


ERROR_CASES = {
    "truncated zlib": (
        lambda: metta_replay_bytes(version=2, compression="zlib", seed=1)[:3000],
        "broken zlib",
    ),
    "corrupted gzip": (_broken_gzip, "broken gzip"),
    "invalid JSON": (lambda: b'{"version": 2, "objects": [', "invalid JSON"),
    "JSON not an object": (lambda: b"[1, 2]", "not an object"),
    "not a replay": (lambda: b"PK\x03\x04 a zip file", "not a MettaScope replay"),
    "empty file": (lambda: b"", "container is empty"),
    "unknown version 7": (lambda: _z({"version": 7, "objects": []}), "unknown replay version 7"),
    "missing version": (lambda: _without("version"), "missing required key 'version'"),
    "missing objects": (lambda: _without("objects"), "missing required key 'objects'"),
    "missing max_steps": (lambda: _without("max_steps"), "missing required key 'max_steps'"),
    "missing item_names": (lambda: _without("item_names"), "missing required key 'item_names'"),
    "v1 without grid_objects": (
        lambda: _z({"version": 1, "objects": []}),
        "missing required key 'grid_objects'",
    ),
    "steps not increasing": (lambda: _malformed_agent(action_id=[[3, 1], [2, 0]]), "not strictly increasing"),
    "step past max_steps": (lambda: _malformed_agent(current_reward=[[0, 0.0], [6, 1.0]]), "outside 0..5"),
    "series of strings": (lambda: _malformed_agent(action_id=[[0, "up"]]), "'action_id'"),
    "bad location": (lambda: _malformed_agent(location=[[0, [1]]]), "'location'"),
    "item id outside item_names": (lambda: _malformed_agent(inventory=[[0, [[5, 1]]]]), "item id outside"),
    "agent without agent_id": (lambda: _z(_v2_doc([{"agent_id": None}])), "no integer 'agent_id'"),
    "num_agents mismatch": (lambda: _z(_v2_doc([{"agent_id": 0}], num_agents=3)), "num_agents is 3"),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_bad_files_raise_one_line_errors_naming_the_file(case: str) -> None:
    build, reason = ERROR_CASES[case]
    source = _source("bad-replay.json.z")
    batches = read_metta_samples(build(), source)
    with pytest.raises(ReplayFormatError) as info:
        next(batches)  # nothing is yielded before the whole file is validated
    message = str(info.value)
    assert message.startswith(source.uri) and reason in message and "\n" not in message
    assert isinstance(info.value, ValueError) and isinstance(info.value, ReplayAssetsError)


def test_error_survives_pickling_for_multiprocess_executors() -> None:
    error = ReplayFormatError("s3://b/metta/x.json.z", "unknown replay version 7")
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), str(copy), copy.name, copy.reason) == (
        type(error),
        str(error),
        error.name,
        error.reason,
    )


def test_a_folder_outside_the_wanted_environment_is_not_even_decoded() -> None:
    source = _source("x.json.z", folder=f"metta/arena/{DAY.isoformat()}")
    assert list(read_metta_samples(b"garbage", source, environment="other")) == []
    with pytest.raises(ReplayFormatError):
        list(read_metta_samples(b"garbage", source, environment="arena"))


def test_min_reward_uses_each_agents_final_total() -> None:
    agents = [
        {
            "agent_id": a,
            "current_reward": [[0, 0.0], [2, float(a)], [3, 0.0]],
            "total_reward": [[2, float(a)]],
        }
        for a in range(3)
    ]
    data = _z(_v2_doc(agents))
    assert sorted(set(_read(data, min_reward=1.0)["agent_id"].to_pylist())) == [1, 2]
    assert _read(data, min_reward=2.5).num_rows == 0
    assert _read(data, min_reward=-1.0).num_rows == 3 * 5


# ---------------------------------------------------------------------------------------- ids


@pytest.mark.parametrize(
    ("relative_path", "expected"),
    [
        (
            "metta/arena/2025-01-02/0F3C5D2E-1A2B-4C3D-8E9F-A0B1C2D3E4F5.json.z",
            "0f3c5d2e-1a2b-4c3d-8e9f-a0b1c2d3e4f5",
        ),
        (
            "metta/2025-01-02/0f3c5d2e-1a2b-4c3d-8e9f-a0b1c2d3e4f5.json",
            "0f3c5d2e-1a2b-4c3d-8e9f-a0b1c2d3e4f5",
        ),
        ("metta/2025-01-02/dinky7.json.z", "sha256:" + "CD" * 16),
        ("metta/2025-01-02/run-0f3c5d2e-1a2b-4c3d-8e9f-a0b1c2d3e4f5.json.z", "sha256:" + "CD" * 16),
    ],
)
def test_episode_id_for(relative_path: str, expected: str) -> None:
    assert episode_id_for(relative_path, "CD" * 32) == expected.lower()


@pytest.mark.parametrize(
    ("relative_path", "expected"),
    [
        ("metta/arena/2025-01-02/x.json.z", "arena"),
        ("metta/2025-01-02/arena/x.json.z", "arena"),
        ("metta/2025-01-02/x.json.z", None),
        ("metta/x.json.z", None),
        ("sc2/arena/2025-01-02/x.json.z", None),
    ],
)
def test_environment_from_path(relative_path: str, expected: str | None) -> None:
    assert environment_from_path(relative_path) == expected


def test_lineage_columns() -> None:
    source = Lineage(
        DAY, "s3://bucket/metta/arena/2025-01-02/x.json.z", "EF" * 32, "metta/arena/2025-01-02/x.json.z"
    )
    table = _read(metta_replay_bytes(version=2, compression="zlib", seed=2), source)
    first = table.slice(0, 1).to_pylist()[0]
    assert (first["date"], first["source_uri"], first["source_sha256"], first["episode_id"]) == (
        DAY,
        source.uri,
        source.sha256,
        "sha256:" + "ef" * 16,
    )


@pytest.mark.parametrize("compression", ["zlib", "gzip", "none"])
def test_a_replay_over_the_decompressed_limit_is_refused_naming_the_limit(compression: str) -> None:
    data = metta_replay_bytes(version=2, compression=compression, seed=1)
    text = len(metta_replay_bytes(version=2, compression="none", seed=1))
    assert _read(data, max_decompressed_bytes=text).num_rows > 0  # exactly at the limit: read
    with pytest.raises(ReplayAssetsError, match=f"fixture.json.z: .*max_decompressed_bytes={text - 1}"):
        _read(data, max_decompressed_bytes=text - 1)


def test_a_zlib_bomb_is_refused_at_the_default_limit() -> None:
    """A 0.6 MB file claiming 600 MiB: refused once 512 MiB are inflated, not parsed."""
    bomb = zlib.compress(b" " * (600 << 20), 9)
    assert len(bomb) < 1 << 20
    with pytest.raises(ReplayAssetsError, match=f"more than max_decompressed_bytes={512 << 20} bytes"):
        _read(bomb)


def _agents(n: int) -> list[dict[str, Any]]:
    return [{"agent_id": i, "location": [1, 1], "action_id": 0} for i in range(n)]


@pytest.mark.parametrize(
    ("doc", "setting", "value", "message"),
    [
        (_v2_doc(_agents(3)), "max_agents", 3, "agents 3 is more than the limit max_agents=2"),
        (_v2_doc(_agents(2), max_steps=50), "max_rows", 100, "rows (agents x max_steps) 100 is more than"),
        (_v2_doc(_agents(1)), "max_items", 2, "items 2 is more than the limit max_items=1"),
        (_v2_doc(_agents(1), max_steps=9), "max_steps", 9, "max_steps 9 is more than the limit max_steps=8"),
    ],
)
def test_counts_over_a_limit_are_refused_before_any_series_is_expanded(
    doc: dict[str, Any], setting: str, value: int, message: str
) -> None:
    assert _read(_z(doc), **{setting: value}).num_rows > 0  # exactly at the limit: read
    with pytest.raises(ReplayFormatError, match=r"fixture.json.z: " + re.escape(message)):
        _read(_z(doc), **{setting: value - 1})


def test_json_depth_counts_brackets_outside_strings_only() -> None:
    assert json_depth(b'{"a": [[1, 2], {"b": []}]}') == 4
    assert json_depth(b'{"a": "[[[{{ \\" ]]] \\\\", "b": [1]}') == 2
    assert json_depth(b"3") == 0
    assert json_depth(json.dumps(_v2_doc(_agents(2))).encode()) == 4


def test_nesting_deeper_than_max_json_depth_is_refused_naming_the_depth() -> None:
    doc = _v2_doc(_agents(1))
    doc["mg_config"] = {"deep": [[[[[[[[[[0]]]]]]]]]]}
    assert _read(_z(doc), max_json_depth=12).num_rows > 0
    with pytest.raises(
        ReplayFormatError, match="JSON nesting depth 12 is more than the limit max_json_depth=11"
    ):
        _read(_z(doc), max_json_depth=11)
    bomb = b"[" * 100_000 + b"]" * 100_000  # refused by the count, neither parser recursing
    with pytest.raises(
        ReplayFormatError, match="JSON nesting depth 100000 is more than the limit max_json_depth=64"
    ):
        _read(bomb)


def test_real_files_are_far_inside_the_default_limits() -> None:
    for name in REAL_FILES:
        _read(
            _real_bytes(name), **{k: v // 16 for k, v in vars(MettaLimits()).items() if k != "max_json_depth"}
        )
