"""Capped decompression: the same bytes as the standard library's one-shot functions below the limit,
a refusal above it that never allocates what the stream claims, and a clean error on damage."""

from __future__ import annotations

import bz2
import gzip
import tracemalloc
import zlib

import lz4.frame
import pytest

from replay_assets.util.capped_inflate import BrokenStreamError, InflateLimitError, inflate

PAYLOAD = b"".join(f"step {i}: move north, reward {i % 7}\n".encode() for i in range(20_000))
COMPRESS = {
    "zlib": zlib.compress,
    "gzip": lambda data: gzip.compress(data, mtime=0),
    "lz4": lz4.frame.compress,
    "bz2": bz2.compress,
}
ONE_SHOT = {
    "zlib": zlib.decompress,
    "gzip": gzip.decompress,
    "lz4": lz4.frame.decompress,
    "bz2": bz2.decompress,
}


@pytest.mark.parametrize("codec", sorted(COMPRESS))
def test_round_trip_up_to_exactly_the_limit(codec: str) -> None:
    packed = COMPRESS[codec](PAYLOAD)
    assert inflate(packed, codec, len(PAYLOAD)) == PAYLOAD
    with pytest.raises(InflateLimitError, match=f"max_decompressed_bytes={len(PAYLOAD) - 1}"):
        inflate(packed, codec, len(PAYLOAD) - 1)


@pytest.mark.parametrize("codec", sorted(COMPRESS))
def test_a_bomb_costs_the_limit_not_its_claim(codec: str) -> None:
    bomb = COMPRESS[codec](bytes(256 << 20))  # 256 MiB of zeros: a few hundred kB (bz2: 46 bytes)
    tracemalloc.start()
    try:
        with pytest.raises(InflateLimitError, match="inflates to more than max_steps_bytes=1048576") as err:
            inflate(bomb, codec, 1 << 20, setting="max_steps_bytes")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert err.value.limit == 1 << 20
    assert peak < 16 << 20, f"{codec}: {peak} bytes traced while refusing a 256 MiB bomb"


@pytest.mark.parametrize("codec", sorted(COMPRESS))
def test_truncated_and_garbage_are_clean_errors(codec: str) -> None:
    packed = COMPRESS[codec](PAYLOAD)
    for damaged in (packed[: len(packed) // 2], packed[:8] + bytes(64), b"garbage" * 10):
        with pytest.raises(BrokenStreamError, match=f"broken {codec} "):
            inflate(damaged, codec, 1 << 30)


@pytest.mark.parametrize(
    ("codec", "data"),
    [
        ("gzip", gzip.compress(b"one ", mtime=0) + gzip.compress(b"two", mtime=0) + bytes(8)),
        ("bz2", bz2.compress(b"one ") + bz2.compress(b"two")),
        ("zlib", zlib.compress(b"one two") + b"trailing bytes"),
        ("lz4", lz4.frame.compress(b"one two") + b"trailing bytes"),
    ],
)
def test_what_follows_a_stream_is_read_as_the_standard_library_reads_it(codec: str, data: bytes) -> None:
    assert inflate(data, codec, 100) == ONE_SHOT[codec](data) == b"one two"


def test_an_lz4_frame_is_held_to_the_content_size_it_declares() -> None:
    from replay_assets_tests.fuzz.targets import lz4_claiming

    assert inflate(lz4_claiming(1), "lz4", 100) == b"\x80"
    with pytest.raises(BrokenStreamError, match="broken lz4 frame"):
        inflate(lz4_claiming(50), "lz4", 100)  # declares 50 bytes, holds 1
    with pytest.raises(InflateLimitError):
        inflate(lz4_claiming(2**40), "lz4", 1 << 30)  # refused from the header: nothing inflated
