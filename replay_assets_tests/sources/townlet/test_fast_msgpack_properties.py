"""Property tests of the Townlet fast path (``fast_msgpack.py``): on any producer-shaped document the
fast and the generic decoder give the same episode and steps, or refuse it the same way; damaged bytes
end in a ``RecordingFormatError``, never another exception."""

from __future__ import annotations

import msgpack
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replay_assets.sources.townlet.read import RecordingFormatError, _decode_document
from replay_assets.sources.townlet.sample import townlet_recording_bytes

NAME = "episode_000001.msgpack"
BASE = msgpack.unpackb(
    townlet_recording_bytes(
        episode_id=1, seed=1, num_steps=3, compression="none", layout_shape="runner", timestamp=1.76e9,
        optional_fields=("q_values", "epsilon", "action_masks", "time_of_day", "interaction_progress"),
    )
)  # fmt: skip

floats = st.floats(width=64, allow_nan=False)
small_ints = st.integers(-(2**31), 2**31 - 1)
wide_ints = st.one_of(small_ints, st.integers(-(2**63), 2**63 - 1))


@st.composite
def steps(draw: st.DrawFn) -> list[dict]:
    numbers = sorted(draw(st.sets(st.integers(0, 400), min_size=1, max_size=40)))
    meters = draw(st.integers(1, 10))
    actions = draw(st.integers(1, 8))
    optional = draw(st.sets(st.sampled_from(["q_values", "epsilon", "action_masks", "time_of_day"])))
    out = []
    for number in numbers:
        step = {
            "step": number,
            "position": draw(st.one_of(st.just([]), st.lists(st.integers(0, 7), min_size=2, max_size=2))),
            "meters": draw(st.lists(floats, min_size=meters, max_size=meters)),
            "action": draw(st.one_of(small_ints, wide_ints)),
            "reward": draw(st.one_of(floats, small_ints)),
            "intrinsic_reward": draw(floats),
            "done": draw(st.booleans()),
        }
        for key in optional:
            nil = draw(st.booleans()) and draw(st.booleans())
            if key == "q_values":
                step[key] = None if nil else draw(st.lists(floats, min_size=actions, max_size=actions))
            elif key == "action_masks":
                step[key] = None if nil else draw(st.lists(st.booleans(), min_size=actions, max_size=actions))
            elif key == "epsilon":
                step[key] = None if nil else draw(floats)
            else:
                step[key] = None if nil else draw(st.integers(0, 23))
        out.append(step)
    return out


def _decoded(raw: bytes, fast: bool) -> tuple[object, pa.RecordBatch | None] | str:
    try:
        return _decode_document(raw, NAME, compression="none", compressed_size=len(raw), fast=fast)
    except RecordingFormatError as exc:
        return f"refused: {exc.reason}"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps())
def test_fast_and_generic_paths_agree(generated: list[dict]) -> None:
    document = dict(BASE, steps=generated, metadata=dict(BASE["metadata"], survival_steps=len(generated)))
    raw = msgpack.packb(document)
    fast, generic = _decoded(raw, True), _decoded(raw, False)
    if isinstance(generic, str) or isinstance(fast, str):
        assert isinstance(fast, str) and isinstance(generic, str), (fast, generic)
        return
    assert fast[0] == generic[0]
    assert fast[1].equals(generic[1])


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_damaged_bytes_are_refused_cleanly(data: st.DataObject) -> None:
    raw = bytearray(msgpack.packb(BASE))
    for _ in range(data.draw(st.integers(1, 6))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(raw)))
    for fast in (True, False):
        _decoded(bytes(raw[:cut]), fast)  # anything but RecordingFormatError propagates and fails
