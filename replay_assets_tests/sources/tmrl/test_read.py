"""sources/tmrl/read.py and sources/tmrl/unpickle.py: the safe unpickler, the run validation and the batches.

The real runs in ../shared/data/tmrl/player_runs are trusted, so the tests load them with plain
``pickle`` as the reference. Everything hostile or malformed is built here.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from replay_assets.errors import ReplayAssetsError
from replay_assets.sources.contract import Lineage
from replay_assets.sources.tmrl import read as tmrl
from replay_assets.sources.tmrl import unpickle as tmrl_unpickle
from replay_assets.sources.tmrl.read import (
    TMRL_DEMO_BUFFERS,
    RunFormatError,
    TmrlRunError,
    UnsafePickleError,
    load_run,
    run_batches,
    run_day_from_name,
)
from replay_assets.sources.tmrl.sample import tmrl_player_run_object
from replay_assets_tests.conftest import SHARED_DATA

RUNS_DIR = SHARED_DATA / "tmrl" / "player_runs"
RECORDED = dt.datetime(2025, 10, 14, 10, 15, tzinfo=dt.UTC)
DAY = dt.date(2025, 10, 14)
FIELDS = ("act", "obs", "rew", "terminated", "truncated", "info")
LIDAR_SHAPES = [("<f4", (1,)), ("<f4", (4, 19)), ("<f4", (3,)), ("<f4", (3,))]
FULL_SHAPES = [
    ("<f4", (1,)),
    ("<f4", (1,)),
    ("<f4", (1,)),
    ("|u1", (4, 64, 64)),
    ("<f4", (3,)),
    ("<f4", (3,)),
]


# ------------------------------------------------------------------------------------------ helpers


def _run(layout: str = "lidar", n: int = 12, seed: int = 0, **kwargs: Any) -> Any:
    """The unpickled form of a run (the project's own writer, shaped like the real files)."""
    return tmrl_player_run_object(
        run_id="20251014_101500_test", recorded_at=RECORDED, layout=layout, num_samples=n, seed=seed, **kwargs
    )


def _dumps(obj: Any, protocol: int = 5) -> bytes:
    return pickle.dumps(obj, protocol=protocol)


def _replace(run: dict[str, Any], index: int, **fields: Any) -> dict[str, Any]:
    sample = list(run["samples"][index])
    for field, value in fields.items():
        sample[FIELDS.index(field)] = value
    run["samples"][index] = tuple(sample)
    return run


def _source(data: bytes, file_name: str = "20251014_101500_test.pkl") -> Lineage:
    return Lineage(
        DAY, f"s3://landing/tmrl/player_runs/{file_name}", hashlib.sha256(data).hexdigest(), file_name
    )


def _table(data: bytes, file_name: str = "20251014_101500_test.pkl", **kwargs: Any) -> pa.Table:
    batches = list(run_batches(data, _source(data, file_name), **kwargs))
    for batch in batches:
        assert batch.schema.equals(TMRL_DEMO_BUFFERS, check_metadata=True)
    return pa.Table.from_batches(batches, schema=TMRL_DEMO_BUFFERS)


def _rows(table: pa.Table, column: str, width: int) -> np.ndarray:
    return table.column(column).combine_chunks().flatten().to_numpy().reshape(-1, width)


def _trusted_layout(obs: tuple[np.ndarray, ...]) -> str:
    shapes = [(a.dtype.str, a.shape) for a in obs]
    return {str(LIDAR_SHAPES): "lidar", str(FULL_SHAPES): "full"}.get(str(shapes), "unknown")


def _assert_matches_trusted(table: pa.Table, trusted: Any, layout: str) -> None:
    """Every column of ``table`` against a plain-pickle load of the same file."""
    samples = trusted["samples"] if isinstance(trusted, dict) else trusted
    n = len(samples)
    assert table.num_rows == n
    assert table.column("sample_index").to_pylist() == list(range(n))
    assert set(table.column("obs_layout").to_pylist()) == {layout}
    np.testing.assert_array_equal(_rows(table, "act", 3), np.stack([s[0] for s in samples]))
    assert table.column("reward").to_pylist() == [float(s[2]) for s in samples]
    assert table.column("terminated").to_pylist() == [bool(s[3]) for s in samples]
    assert table.column("truncated").to_pylist() == [bool(s[4]) for s in samples]
    assert [json.loads(text) for text in table.column("info").to_pylist()] == [s[5] for s in samples]
    speed = table.column("speed").to_numpy()
    np.testing.assert_array_equal(speed, np.array([s[1][0][0] for s in samples], np.float32))
    np.testing.assert_array_equal(_rows(table, "prev_act_1", 3), np.stack([s[1][-2] for s in samples]))
    np.testing.assert_array_equal(_rows(table, "prev_act_2", 3), np.stack([s[1][-1] for s in samples]))
    assert table.column("obs_raw").null_count == n
    if layout == "lidar":
        np.testing.assert_array_equal(
            _rows(table, "lidar", 76).reshape(n, 4, 19), np.stack([s[1][1] for s in samples])
        )
        for column in ("gear", "rpm", "images"):
            assert table.column(column).null_count == n
    else:
        np.testing.assert_array_equal(table.column("gear").to_numpy(), [s[1][1][0] for s in samples])
        np.testing.assert_array_equal(table.column("rpm").to_numpy(), [s[1][2][0] for s in samples])
        assert table.column("images").to_pylist() == [s[1][3].tobytes() for s in samples]
        assert table.column("lidar").null_count == n


def _assert_samples_equal(ours: list[tuple[Any, ...]], trusted: list[tuple[Any, ...]]) -> None:
    assert len(ours) == len(trusted)
    for mine, theirs in zip(ours, trusted, strict=True):
        assert type(mine) is tuple and len(mine) == 6
        assert type(mine[0]) is np.ndarray and mine[0].dtype == theirs[0].dtype
        np.testing.assert_array_equal(mine[0], theirs[0])
        assert len(mine[1]) == len(theirs[1])
        for a, b in zip(mine[1], theirs[1], strict=True):
            assert type(a) is np.ndarray and a.dtype == b.dtype and a.shape == b.shape
            np.testing.assert_array_equal(a, b)
        assert mine[2:] == theirs[2:]


# ------------------------------------------------------------------------------------------ real runs


@pytest.fixture(scope="module")
def real_runs() -> list[Path]:
    if not RUNS_DIR.is_dir():
        pytest.skip(f"real TMRL player runs not found at {RUNS_DIR} (../shared beside the checkout)")
    return sorted(path for path in RUNS_DIR.iterdir() if path.is_file())


def test_real_runs_cover_every_kind(real_runs: list[Path]) -> None:
    kinds = set()
    for path in real_runs:
        trusted = pickle.loads(path.read_bytes())  # the shared files are trusted
        samples = trusted["samples"] if isinstance(trusted, dict) else trusted
        kinds.add((_trusted_layout(samples[0][1]), isinstance(trusted, list)))
    assert {("lidar", False), ("full", False), ("lidar", True)} <= kinds


def test_real_runs_decode_like_a_trusted_pickle_load(real_runs: list[Path]) -> None:
    for path in real_runs:
        data = path.read_bytes()
        trusted = pickle.loads(data)
        legacy = isinstance(trusted, list)
        samples = trusted if legacy else trusted["samples"]
        layout = _trusted_layout(samples[0][1])

        run = load_run(data, path.name)
        assert (run.layout, run.num_samples, run.legacy) == (layout, len(samples), legacy), path.name
        _assert_samples_equal(run.samples, samples)
        if legacy:
            assert (run.run_id, run.recorded_at, run.metadata) == (path.stem, None, {})
        else:
            assert run.run_id == trusted["run_id"]
            assert run.recorded_at == dt.datetime.fromisoformat(trusted["recorded_at"])
            assert run.recorded_at.tzinfo == dt.UTC
            assert run.metadata == trusted["metadata"]
            assert run.obs_scale_version == trusted.get("obs_scale_version")

        table = _table(data, path.name)
        _assert_matches_trusted(table, trusted, layout)
        assert set(table.column("run_id").to_pylist()) == {run.run_id}
        assert set(table.column("sha256").to_pylist()) == {hashlib.sha256(data).hexdigest()}
        assert set(table.column("date").to_pylist()) == {DAY}
        assert set(table.column("recorded_at").to_pylist()) == {run.recorded_at}
        assert set(table.column("obs_scale_version").to_pylist()) == {run.obs_scale_version}
        assert set(table.column("is_demo").to_pylist()) == {True}
        # One episode per real run: starts at row 0, ends at the last row (terminated or truncated).
        assert table.column("episode_start").to_pylist() == [True] + [False] * (len(samples) - 1)
        assert table.column("episode_end").to_pylist() == [False] * (len(samples) - 1) + [True]


def test_real_runs_take_the_columnar_fast_path(
    real_runs: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def slow(*args: Any) -> None:
        raise AssertionError("the per-sample path ran on a real file")

    monkeypatch.setattr(tmrl, "_slow_columns", slow)
    for path in real_runs:
        assert load_run(path.read_bytes(), path.name).num_samples > 0


def test_real_run_batches_split_and_survive_parquet(real_runs: list[Path], tmp_path: Path) -> None:
    full = next(p for p in real_runs if load_run(p.read_bytes(), p.name).layout == "full")
    data = full.read_bytes()
    whole = _table(data, full.name)
    batches = list(run_batches(data, _source(data, full.name), batch_rows=64))
    assert [b.num_rows for b in batches] == [64, 64, whole.num_rows - 128]
    assert pa.Table.from_batches(batches).equals(whole)
    pq.write_table(whole, tmp_path / "run.parquet")
    back = pq.read_table(tmp_path / "run.parquet")
    # Parquet names list items "element" where Arrow says "item": equal after a cast to the schema.
    assert back.cast(TMRL_DEMO_BUFFERS).equals(whole)
    assert json.loads(back.schema.field("images").metadata[b"shape"]) == [4, 64, 64]
    assert back.schema.field("lidar").metadata == {b"shape": b"[4, 19]", b"dtype": b"float32"}


# ------------------------------------------------------------------------------------------ schema


def test_schema() -> None:
    assert TMRL_DEMO_BUFFERS.names == [
        "date", "run_id", "source_uri", "sha256", "sample_index", "episode_start", "episode_end", "act",
        "obs_layout", "speed", "gear", "rpm", "lidar", "images", "prev_act_1", "prev_act_2", "obs_raw",
        "reward", "terminated", "truncated", "info", "is_demo", "recorded_at", "obs_scale_version",
    ]  # fmt: skip
    field = TMRL_DEMO_BUFFERS.field
    assert field("act").type == pa.list_(pa.float32(), 3) and not field("act").nullable
    assert field("lidar").type == pa.list_(pa.float32(), 76)
    assert field("lidar").metadata == {b"shape": b"[4, 19]", b"dtype": b"float32"}
    assert field("images").type == pa.binary()
    assert field("images").metadata == {
        b"shape": b"[4, 64, 64]",
        b"dtype": b"uint8",
        b"parquet_compression": b"zstd",
    }
    assert field("sample_index").type == pa.int32()
    assert field("recorded_at").type == pa.timestamp("us", tz="UTC") and field("recorded_at").nullable
    assert field("date").type == pa.date32()
    assert not any(TMRL_DEMO_BUFFERS.field(n).nullable for n in ("date", "run_id", "episode_start", "info"))


def test_batches_of_every_layout_have_the_exact_schema() -> None:
    unknown = _run()
    for index, sample in enumerate(unknown["samples"]):
        _replace(unknown, index, obs=(*sample[1][:1], np.zeros((4, 20), np.float32), *sample[1][2:]))
    for obj in (_run("lidar"), _run("full"), _run(legacy=True), unknown):
        for batch in run_batches(_dumps(obj), _source(b"x")):
            assert batch.schema.equals(TMRL_DEMO_BUFFERS, check_metadata=True)


# ------------------------------------------------------------------------------------------ hostile pickles


class _Gadget:
    """Pickles as ``func(*args)``: what an attacker would drop into the landing folder."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.func, self.args)


def _touch_command(marker: Path) -> str:
    return f"touch {marker}"


def _protocol0_global(module: str, name: str, arg: str) -> bytes:
    """``module.name(arg)`` with the text GLOBAL opcode (protocol 0)."""
    return f"c{module}\n{name}\n(V{arg}\ntR.".encode()


def _stack_global_protocol5(module: str, name: str, arg: str) -> bytes:
    """``module.name(arg)`` with STACK_GLOBAL in a protocol 5 stream."""

    def text(value: str) -> bytes:
        raw = value.encode()
        return b"X" + struct.pack("<I", len(raw)) + raw  # BINUNICODE

    return b"\x80\x05" + text(module) + text(name) + b"\x93" + text(arg) + b"\x85R."


def _gadgets(marker: Path) -> dict[str, tuple[bytes, str]]:
    """Payload and the global the refusal must name; each would create ``marker`` if unpickled."""
    command = _touch_command(marker)
    make_file = f"open({str(marker)!r}, 'w').close()"
    in_info = _replace(_run(), 3, info={"note": _Gadget(os.system, command)})
    in_object_array = _replace(_run(), 2, info={"arr": np.array([_Gadget(os.system, command)], dtype=object)})
    getattr_chain = (  # getattr(__import__("os"), "system")(command)
        f"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(Vos\ntRVsystem\ntR(V{command}\ntR."
    ).encode()
    return {
        "os.system via __reduce__": (_dumps(_Gadget(os.system, command)), f"{os.system.__module__}.system"),
        "subprocess.Popen": (_dumps(_Gadget(subprocess.Popen, ["touch", str(marker)])), "subprocess.Popen"),
        "builtins.eval": (_dumps(_Gadget(eval, make_file)), "builtins.eval"),
        "builtins.exec": (_dumps(_Gadget(exec, make_file)), "builtins.exec"),
        "gadget inside info": (_dumps(in_info), f"{os.system.__module__}.system"),
        "gadget inside an object array": (_dumps(in_object_array), f"{os.system.__module__}.system"),
        "getattr chain": (getattr_chain, "builtins.getattr"),
        "posix.system, protocol 0 GLOBAL": (_protocol0_global("posix", "system", command), "posix.system"),
        "os.system, protocol 5 STACK_GLOBAL": (_stack_global_protocol5("os", "system", command), "os.system"),
        "numpy subclass": (_dumps(np.ma.masked_array([1.0])), "numpy.ma.core._mareconstruct"),
    }


@pytest.mark.parametrize("gadget", sorted(_gadgets(Path("/x"))))
def test_hostile_pickles_are_refused_and_nothing_runs(gadget: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload, global_name = _gadgets(marker)[gadget]
    with pytest.raises(UnsafePickleError) as raised:
        load_run(payload, "evil_run.pkl")
    assert not marker.exists()
    assert raised.value.global_name == global_name
    assert str(raised.value).startswith("evil_run.pkl: ") and global_name in str(raised.value)

    with pytest.raises(UnsafePickleError):
        list(run_batches(payload, _source(payload, "evil_run.pkl")))
    assert not marker.exists()

    if gadget != "numpy subclass":  # the gadget is live: plain pickle does run it
        with contextlib.suppress(Exception):
            pickle.loads(payload)
        deadline = time.monotonic() + 5
        while not marker.exists() and time.monotonic() < deadline:  # Popen runs asynchronously
            time.sleep(0.01)
        assert marker.exists()


def test_persistent_ids_are_refused() -> None:
    class Pickler(pickle.Pickler):
        def persistent_id(self, obj: Any) -> str | None:
            return "secret-object" if obj == "ref" else None

    buffer = io.BytesIO()
    Pickler(buffer, protocol=5).dump({"format": "tmrl_player_run_v1", "run_id": "ref"})
    for payload in (buffer.getvalue(), b"Pref\n."):  # BINPERSID (protocol 5) and PERSID (protocol 0)
        with pytest.raises(UnsafePickleError, match="persistent id") as raised:
            load_run(payload, "evil_run.pkl")
        assert raised.value.global_name is None and "evil_run.pkl" in str(raised.value)


def test_out_of_band_buffers_are_refused() -> None:
    obj = _run()
    payload = pickle.dumps(obj, protocol=5, buffer_callback=lambda buffer: False)
    with pytest.raises(RunFormatError, match="out-of-band"):
        load_run(payload, "oob.pkl")


class _Reduce:
    """Pickles as ``func(*args)`` with an optional BUILD ``state``: numpy-shaped crafted objects."""

    def __init__(self, func: Any, args: tuple[Any, ...], state: Any = None) -> None:
        self.func, self.args, self.state = func, args, state

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


# numpy's own reconstructors, whatever the installed numpy calls them.
_frombuffer = np.zeros(1).__reduce_ex__(5)[0]
_reconstruct = np.zeros(1).__reduce_ex__(4)[0]
_scalar = np.float64(0).__reduce__()[0]


def _f4(state_flags: int = 0, **state: Any) -> _Reduce:
    """``numpy.dtype('f4')`` with a chosen BUILD state (numpy writes flags 0 for float32)."""
    fields = {"endian": "<", "subarray": None, "names": None, "fields": None, "elsize": -1, "alignment": -1}
    fields.update(state)
    return _Reduce(np.dtype, ("f4", False, True), (3, *fields.values(), state_flags))


def _act(
    dtype: _Reduce, data: bytes | bytearray | None = None, shape: Any = (3,), order: str = "C"
) -> _Reduce:
    return _Reduce(_frombuffer, (bytearray(12) if data is None else data, dtype, shape, order))


def test_forged_dtype_flags_are_never_used() -> None:
    # flags 63 would tell numpy the float32 "holds object pointers": memory corruption under plain pickle.
    run = _replace(_run(), 0, act=_act(_f4(state_flags=63)))
    loaded = load_run(_dumps(run), "forged.pkl")
    act = loaded.samples[0][0]
    assert act.dtype == np.float32 and not act.dtype.hasobject and act.dtype.flags == 0
    np.testing.assert_array_equal(act, np.zeros(3, np.float32))


@pytest.mark.parametrize(
    ("crafted", "error", "match"),
    [
        (_act(_f4(fields={"a": (np.dtype("O"), 0)}, names=("a",))), RunFormatError, "structured"),
        (_act(_f4(subarray=(np.dtype("f4"), (3,)))), RunFormatError, "sub-array"),
        (_act(_f4(elsize=4096)), RunFormatError, "item size"),
        (_act(_Reduce(np.dtype, ("M8", False, True))), RunFormatError, "unsupported numpy dtype"),
        (
            _act(_Reduce(np.dtype, ("O8", False, True), (3, "|", None, None, None, -1, -1, 63))),
            UnsafePickleError,
            "object array",
        ),
        (_act(_f4(), data=bytearray(8)), RunFormatError, "does not fit"),
        (_act(_f4(), shape=[3]), RunFormatError, "shape or order"),
        (_act(_f4(), shape=(-1,)), RunFormatError, "shape or order"),
        (_act(_f4(), order="K"), RunFormatError, "axis order"),
        (_act(_f4(), data="not bytes"), UnsafePickleError, "buffer"),
        (_act(_f4(), data=[0] * 12), UnsafePickleError, "buffer"),
        (_Reduce(_frombuffer, (bytearray(12), "f4", (3,), "C")), UnsafePickleError, "dtype"),
        (_Reduce(_frombuffer, (bytearray(12),)), UnsafePickleError, "arguments"),
        (_Reduce(np.ndarray, ((10**6, 10**6), "f8")), UnsafePickleError, "never called"),
        (_Reduce(_reconstruct, (np.dtype, (0,), b"b")), UnsafePickleError, "_reconstruct"),
        (_Reduce(_reconstruct, (np.ndarray, (10**9,), b"b")), UnsafePickleError, "_reconstruct"),
        (
            _Reduce(_reconstruct, (np.ndarray, (0,), b"b"), (1, (3,), _f4(), False, b"\0" * 8)),
            RunFormatError,
            "does not match",
        ),
        (
            _Reduce(_reconstruct, (np.ndarray, (0,), b"b"), (1, (3,), "f4", False, b"\0" * 12)),
            UnsafePickleError,
            "dtype",
        ),
        (_Reduce(_scalar, (_f4(), b"\0\0")), RunFormatError, "scalar"),
        (_Reduce(np.dtype, (["f4"], False, True)), UnsafePickleError, "numpy.dtype"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_allowed_globals_cannot_be_abused(crafted: _Reduce, error: type[Exception], match: str) -> None:
    one = _replace(_run(), 1, act=crafted)
    every = _run()
    for index in range(len(every["samples"])):  # a whole column of it: the columnar fast path sees it
        _replace(every, index, act=crafted)
    for run in (one, every):
        with pytest.raises(error, match=match) as raised:
            load_run(_dumps(run), "crafted.pkl")
        assert str(raised.value).startswith("crafted.pkl: ")


def test_build_cannot_change_an_allowed_global_for_the_next_file() -> None:
    for module in ("numpy\ndtype", "numpy\nndarray", "numpy._core.numeric\n_frombuffer"):
        for state in ("(dVglobal_name\nVx\nsb.", "(N}Vglobal_name\nVx\nstb."):  # dict state, slot state
            with pytest.raises(RunFormatError, match="not a valid pickle"):
                load_run(f"c{module}\n{state}".encode(), "build.pkl")
    assert load_run(_dumps(_run()), "after.pkl").layout == "lidar"
    assert tmrl_unpickle._ALLOWED[("numpy", "dtype")].global_name == "numpy.dtype"


def test_allowlist_is_exactly_numpys_own_globals() -> None:
    expected = {
        "numpy._core.multiarray._reconstruct", "numpy.core.multiarray._reconstruct",
        "numpy._core.multiarray.scalar", "numpy.core.multiarray.scalar",
        "numpy._core.numeric._frombuffer", "numpy.core.numeric._frombuffer",
        "numpy.dtype", "numpy.ndarray",
    }  # fmt: skip
    assert expected == tmrl.ALLOWED_GLOBALS


# ------------------------------------------------------------------------------------------ broken files


def test_truncated_pickles_are_reported_as_truncated() -> None:
    data = _dumps(_run("full", n=3))
    for cut in (0, 1, 2, 11, len(data) // 3, len(data) // 2, len(data) - 100, len(data) - 1):
        with pytest.raises(RunFormatError, match="truncated pickle") as raised:
            load_run(data[:cut], "cut.pkl")
        assert str(raised.value).startswith("cut.pkl: ")


def test_other_broken_files() -> None:
    data = _dumps(_run())
    with pytest.raises(RunFormatError, match="bytes after the end of the pickle"):
        load_run(data + b"\x80\x05N.", "two.pkl")
    with pytest.raises(RunFormatError, match="not a valid pickle"):
        load_run(b'{"format": "tmrl_player_run_v1"}', "json.pkl")
    with pytest.raises(RunFormatError, match="max_bytes=100"):
        load_run(data, "big.pkl", max_bytes=100)
    with pytest.raises(ValueError, match="batch_rows"):
        next(run_batches(data, _source(data), batch_rows=0))


def test_a_bad_file_yields_no_batch() -> None:
    run = _replace(_run(n=20), 19, terminated=1)
    batches = run_batches(_dumps(run), _source(b"x"), batch_rows=4)
    with pytest.raises(RunFormatError, match="sample 19"):
        next(batches)


# ------------------------------------------------------------------------------------------ schema violations


@pytest.mark.parametrize(
    ("index", "fields", "match"),
    [
        (7, None, "not a 6-tuple"),  # a 5-tuple
        (4, {"terminated": 1}, "terminated is a int, not a bool"),
        (5, {"truncated": "no"}, "truncated is a str, not a bool"),
        (2, {"info": ["is_demo"]}, "info is a list, not a dict"),
        (3, {"act": np.zeros(4, np.float32)}, r"act is a float32 array of shape \(4,\)"),
        (3, {"act": np.zeros(3, np.float64)}, r"act is a float64 array of shape \(3,\)"),
        (6, {"act": [0.0, 0.0, 0.0]}, "act is a list, not a numpy array"),
        (1, {"rew": True}, "reward is a bool, not a number"),
        (1, {"rew": "1.0"}, "reward is a str"),
        (8, {"obs": ()}, "obs is a tuple .empty."),
        (8, {"obs": [np.zeros(1, np.float32)]}, "obs is a list"),
        (9, {"obs": (np.array(["a"], dtype=object),)}, r"obs\[0\] is an object array"),
        (10, {"info": {"is_demo": "yes"}}, "is_demo' is a str, not a bool"),
    ],
)
def test_schema_violations_name_the_file_and_the_first_bad_sample(
    index: int, fields: dict[str, Any] | None, match: str
) -> None:
    run = _run()
    if fields is None:
        run["samples"][index] = run["samples"][index][:5]
    else:
        _replace(run, index, **fields)
    data = _dumps(run)
    for call in (
        lambda: load_run(data, "bad_run.pkl"),
        lambda: next(run_batches(data, _source(data, "bad_run.pkl"))),
    ):
        with pytest.raises(RunFormatError, match=match) as raised:
            call()
        assert raised.value.sample_index == index
        assert f": sample {index}: " in str(raised.value) and "bad_run.pkl" in str(raised.value)


def test_a_sample_that_is_a_list_is_not_a_6_tuple() -> None:
    run = _run()
    run["samples"][0] = list(run["samples"][0])
    with pytest.raises(RunFormatError, match="a list of length 6, not a 6-tuple") as raised:
        load_run(_dumps(run), "x.pkl")
    assert raised.value.sample_index == 0


def test_mixed_layouts_report_the_first_sample_that_differs() -> None:
    run = _run(n=12)
    full_sample = _run("full", n=1)["samples"][0]
    _replace(run, 9, obs=full_sample[1])
    sample = run["samples"][5]
    _replace(run, 5, obs=(sample[1][0], np.zeros((4, 20), np.float32), *sample[1][2:]))
    with pytest.raises(RunFormatError, match="differs from sample 0's") as raised:
        load_run(_dumps(run), "mixed.pkl")
    assert raised.value.sample_index == 5
    assert "float32[4x20]" in str(raised.value) and "float32[4x19]" in str(raised.value)


def test_the_first_bad_sample_wins_whatever_its_problem() -> None:
    run = _replace(_replace(_run(n=12), 9, act=np.zeros(2, np.float32)), 4, info={"is_demo": 1})
    with pytest.raises(RunFormatError) as raised:
        load_run(_dumps(run), "x.pkl")
    assert raised.value.sample_index == 4 and "is_demo" in str(raised.value)
    run = _replace(_replace(_run(n=12), 9, info="x"), 6, act=np.zeros(2, np.float32))
    with pytest.raises(RunFormatError) as raised:
        load_run(_dumps(run), "x.pkl")
    assert raised.value.sample_index == 6 and "act" in str(raised.value)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda run: run.update(format="tmrl_player_run_v2"), "unknown format 'tmrl_player_run_v2'"),
        (lambda run: run.pop("format"), "missing required key 'format'"),
        (lambda run: run.pop("samples"), "missing required key 'samples'"),
        (lambda run: run.update(samples=tuple(run["samples"])), "'samples' is a tuple, not a list"),
        (lambda run: run.update(samples=[]), "no samples"),
        (lambda run: run.update(metadata=None), "'metadata' is a NoneType, not a dict"),
        (lambda run: run.update(run_id=7), "'run_id' is a int, not a str"),
        (lambda run: run.update(recorded_at="2025-10-14T10:15:00"), "has no UTC offset"),
        (lambda run: run.update(recorded_at="yesterday"), "not an ISO-8601 timestamp"),
        (lambda run: run.update(obs_scale_version="2"), "obs_scale_version"),
        (lambda run: run["metadata"].update(is_demo="yes"), "metadata 'is_demo' is a str"),
    ],
)
def test_top_level_violations(mutate: Any, match: str) -> None:
    run = _run()
    mutate(run)
    with pytest.raises(RunFormatError, match=match) as raised:
        load_run(_dumps(run), "top.pkl")
    assert raised.value.sample_index is None and str(raised.value).startswith("top.pkl: ")


def test_top_level_that_is_neither_a_dict_nor_a_list() -> None:
    with pytest.raises(RunFormatError, match="top level is a tuple"):
        load_run(_dumps(tuple(_run(legacy=True))), "tuple.pkl")


def test_info_bombs_and_cycles_are_refused_quickly() -> None:
    leaf = ["x" * 10]
    for _ in range(4):
        leaf = [leaf] * 40  # shared references: 2.6 M leaves (~40 MB of JSON) from a few KB of pickle
    data = _dumps(_replace(_run(), 2, info={"bomb": leaf}))
    assert len(data) < 20_000
    started = time.monotonic()
    with pytest.raises(RunFormatError, match="pickle bomb") as raised:
        load_run(data, "bomb.pkl")
    assert raised.value.sample_index == 2 and time.monotonic() - started < 2
    cycle: dict[str, Any] = {}
    cycle["self"] = [cycle]
    with pytest.raises(RunFormatError, match="reference cycle") as raised:
        load_run(_dumps(_replace(_run(), 4, info=cycle)), "cycle.pkl")
    assert raised.value.sample_index == 4


# ------------------------------------------------------------------------------------------ decoding


def test_lidar_run_columns() -> None:
    obj = _run("lidar", n=30, seed=3)
    table = _table(_dumps(obj))
    _assert_matches_trusted(table, obj, "lidar")
    assert set(table.column("recorded_at").to_pylist()) == {RECORDED}
    assert table.column("obs_scale_version").null_count == 30  # lidar runs come from the earlier writer


def test_full_run_columns() -> None:
    obj = _run("full", n=9, seed=4)
    table = _table(_dumps(obj))
    _assert_matches_trusted(table, obj, "full")
    assert set(table.column("obs_scale_version").to_pylist()) == {2}
    images = np.frombuffer(b"".join(table.column("images").to_pylist()), np.uint8).reshape(9, 4, 64, 64)
    np.testing.assert_array_equal(images, np.stack([s[1][3] for s in obj["samples"]]))


def test_legacy_list_uses_the_file_stem_and_no_date() -> None:
    obj = _run(legacy=True)
    for name, run_id in [("legacy_run_0001.pkl", "legacy_run_0001"), ("s3://b/p/old.pkl.imported", "old")]:
        run = load_run(_dumps(obj), name)
        assert (run.run_id, run.recorded_at, run.legacy, run.metadata) == (run_id, None, True, {})
    table = _table(_dumps(obj), "legacy_run_0007.pkl")
    assert set(table.column("run_id").to_pylist()) == {"legacy_run_0007"}
    assert table.column("recorded_at").null_count == table.num_rows


def test_unknown_layout_keeps_every_component_in_obs_raw() -> None:
    run = _run(n=5)
    extra = np.arange(6, dtype=np.int16).reshape(2, 3)
    for index, sample in enumerate(run["samples"]):
        _replace(run, index, obs=(sample[1][0], sample[1][1].astype(np.float64), extra + index))
    loaded = load_run(_dumps(run), "odd.pkl")
    assert loaded.layout == "unknown:float32[1],float64[4x19],int16[2x3]"
    table = _table(_dumps(run))
    for column in ("speed", "gear", "rpm", "lidar", "images", "prev_act_1", "prev_act_2"):
        assert table.column(column).null_count == 5
    raw = table.column("obs_raw").to_pylist()
    for index, (sample, components) in enumerate(zip(run["samples"], raw, strict=True)):
        assert [c["shape"] for c in components] == [[1], [4, 19], [2, 3]]
        assert [c["dtype"] for c in components] == ["<f4", "<f8", "<i2"]
        for original, component in zip(sample[1], components, strict=True):
            np.testing.assert_array_equal(
                np.frombuffer(component["data"], component["dtype"]).reshape(component["shape"]), original
            )
        assert table.column("obs_layout")[index].as_py() == loaded.layout


def test_episode_bounds() -> None:
    run = _run(n=10)
    for index in range(10):
        _replace(run, index, terminated=index == 3, truncated=index == 7)
    table = _table(_dumps(run), batch_rows=3)  # bounds must not depend on the batch cut
    starts = table.column("episode_start").to_pylist()
    ends = table.column("episode_end").to_pylist()
    assert starts == [True, False, False, False, True, False, False, False, True, False]
    assert ends == [False, False, False, True, False, False, False, True, False, True]
    run = _run(n=1)
    table = _table(_dumps(run))
    assert table.column("episode_start").to_pylist() == table.column("episode_end").to_pylist() == [True]


def test_is_demo_from_info_then_metadata_then_true() -> None:
    run = _replace(_replace(_run(n=4), 1, info={"is_demo": False}), 2, info={"is_demo": np.True_})
    assert _table(_dumps(run)).column("is_demo").to_pylist() == [True, False, True, True]
    run["metadata"]["is_demo"] = False
    assert _table(_dumps(run)).column("is_demo").to_pylist() == [False, False, True, False]


def test_info_json_converts_numpy_values() -> None:
    info = {
        "f32": np.float32(1.5),
        "arr": np.arange(3, dtype=np.int64),
        "nested": {"list": [np.int16(2), np.bool_(True)], "tuple": (1, "a")},
        "bytes": b"\x01\xff",
        "set": {3, 1, 2},
        "nan": float("nan"),
        7: "int key",
    }
    text = _table(_dumps(_replace(_run(n=2), 1, info=info))).column("info")[1].as_py()
    assert json.loads(text) == {
        "f32": 1.5,
        "arr": [0, 1, 2],
        "nested": {"list": [2, True], "tuple": [1, "a"]},
        "bytes": "01ff",
        "set": [1, 2, 3],
        "nan": None,
        "7": "int key",
    }
    loaded = load_run(_dumps(_replace(_run(n=2), 1, info=info)), "x.pkl").samples[1][5]
    assert type(loaded["arr"]) is np.ndarray and loaded["f32"] == np.float32(1.5)


def test_numpy_scalars_and_flags_are_accepted() -> None:
    run = _run(n=3)
    _replace(run, 1, rew=np.float32(0.25), terminated=np.False_, truncated=np.bool_(False))
    _replace(run, 2, rew=3)
    table = _table(_dumps(run))
    assert table.column("reward").to_pylist()[1:] == [0.25, 3.0]
    assert load_run(_dumps(run), "x.pkl").samples[1][2] == np.float32(0.25)


def test_fortran_and_big_endian_columns_take_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    obj = _run(n=8, seed=5)
    reference = _table(_dumps(obj))
    for index, (act, obs, *rest) in enumerate(obj["samples"]):
        lidar = np.asfortranarray(obs[1].astype(">f4"))
        obj["samples"][index] = (act.astype(">f4"), (obs[0], lidar, *obs[2:]), *rest)
    monkeypatch.setattr(tmrl, "_slow_columns", None)  # any fallback would fail
    table = _table(_dumps(obj))
    assert table.drop_columns(["sha256"]).equals(reference.drop_columns(["sha256"]))


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_other_array_encodings_decode_the_same(protocol: int) -> None:
    obj = _run(n=8, seed=5)
    reference = _table(_dumps(obj))
    fancy = _run(n=8, seed=5)
    for index, (act, obs, *rest) in enumerate(fancy["samples"]):
        wide = np.zeros((4, 38), np.float32)
        wide[:, ::2] = obs[1]
        lidar = wide[:, ::2] if index % 2 else np.asfortranarray(obs[1])  # non-contiguous, Fortran order
        fancy["samples"][index] = (act.astype(">f4"), (obs[0], lidar, *obs[2:]), *rest)  # big-endian act
    table = _table(_dumps(fancy, protocol))
    assert table.drop_columns(["sha256"]).equals(reference.drop_columns(["sha256"]))


def test_numpy_1_spellings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Arrays and scalars pickled under numpy 1.x names (``numpy.core.numeric._frombuffer``...)."""
    aliases = {}
    modules: dict[str, types.ModuleType] = {}
    for module_name, name, real in [
        ("numpy.core.numeric", "_frombuffer", _frombuffer),
        ("numpy.core.multiarray", "_reconstruct", _reconstruct),
        ("numpy.core.multiarray", "scalar", _scalar),
    ]:
        module = modules.setdefault(module_name, types.ModuleType(module_name))

        def alias(*args: Any, _real: Any = real) -> Any:
            return _real(*args)

        alias.__module__, alias.__name__, alias.__qualname__ = module_name, name, name
        setattr(module, name, alias)
        aliases[real] = alias
    for module_name, module in modules.items():
        monkeypatch.setitem(sys.modules, module_name, module)

    def pickled_as_numpy_1(obj: Any, protocol: int) -> bytes:
        class Numpy1Pickler(pickle.Pickler):
            def reducer_override(self, value: Any) -> Any:
                if isinstance(value, np.ndarray | np.generic):
                    func, *rest = value.__reduce_ex__(protocol)
                    return (aliases[func], *rest)
                return NotImplemented

        buffer = io.BytesIO()
        Numpy1Pickler(buffer, protocol=protocol).dump(obj)
        return buffer.getvalue()

    obj = _replace(_run(n=6, seed=6), 2, rew=np.float64(0.5))
    for protocol in (4, 5):
        data = pickled_as_numpy_1(obj, protocol)
        assert b"numpy.core." in data and b"numpy._core" not in data
        _assert_samples_equal(load_run(data, "np1.pkl").samples, obj["samples"])


def test_load_run_gives_plain_writable_arrays() -> None:
    run = load_run(_dumps(_run("full", n=3)), "x.pkl")
    act, obs = run.samples[0][:2]
    assert type(act) is np.ndarray and act.flags.writeable
    assert all(type(a) is np.ndarray and a.flags.writeable and a.dtype.isnative for a in obs)


# ------------------------------------------------------------------------------------------ small API


def test_run_day_from_name() -> None:
    assert run_day_from_name("20251014_101500_a1b2c3d4.pkl") == dt.date(2025, 10, 14)
    assert run_day_from_name("s3://landing/tmrl/player_runs/20251015_x.pkl.imported") == dt.date(2025, 10, 15)
    for name in (
        "legacy_run_0001.pkl",
        "20251399_x.pkl",
        "20251014.pkl",
        "x_20251014_y.pkl",
        "2025101_x.pkl",
    ):
        assert run_day_from_name(name) is None


def test_errors_are_one_family_and_survive_pickling() -> None:
    for error in (
        RunFormatError("a.pkl", "bad   act", 3),
        RunFormatError("a.pkl", "no samples"),
        UnsafePickleError("a.pkl", "posix.system", "not allowed"),
        UnsafePickleError("a.pkl", None, "persistent id 'x'"),
    ):
        assert isinstance(error, TmrlRunError) and isinstance(error, ReplayAssetsError)
        assert isinstance(error, ValueError)
        copy = pickle.loads(pickle.dumps(error))
        assert (
            type(copy) is type(error) and str(copy) == str(error) and copy.__reduce__() == error.__reduce__()
        )
    assert str(RunFormatError("a.pkl", "bad   act", 3)) == "a.pkl: sample 3: bad act"
