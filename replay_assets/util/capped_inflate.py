"""Decompression with a ceiling: a stream inflates to at most ``limit`` bytes, checked while inflating.

A 3 MB zlib file can claim 3 GiB; ``zlib.decompress`` would allocate all of it before anyone could
measure. Here each codec's incremental decompressor is asked for at most ``limit + 1`` bytes, so a bomb
costs the limit (and the time to inflate that much), never its claim. What each codec does with data
after its stream is what the one-shot function of the standard library does: zlib and lz4 ignore it,
gzip reads further members (and zero padding) and refuses anything else, bz2 reads further streams.
"""

from __future__ import annotations

import bz2
import gzip
import io
import zlib
from typing import Literal

import lz4.frame

Codec = Literal["zlib", "gzip", "lz4", "bz2"]
_WHAT = {"zlib": "zlib stream", "gzip": "gzip data", "lz4": "lz4 frame", "bz2": "bz2 stream"}


class InflateLimitError(ValueError):
    """The stream inflates to more than the limit: refused before that much memory is used."""

    def __init__(self, codec: Codec, limit: int, setting: str) -> None:
        self.limit = limit
        super().__init__(f"{_WHAT[codec]} inflates to more than {setting}={limit} bytes; not decompressed")


class BrokenStreamError(ValueError):
    """The compressed data is damaged or ends early; the message says how."""


def inflate(data: bytes, codec: Codec, limit: int, setting: str = "max_decompressed_bytes") -> bytes:
    """``data`` decompressed with ``codec``, refusing (``InflateLimitError``) past ``limit`` bytes.

    ``setting`` names the run-config field the limit came from, so the error says what to raise."""
    try:
        out = _INFLATERS[codec](data, limit + 1)
    except _OverLimit:
        raise InflateLimitError(codec, limit, setting) from None
    except (zlib.error, OSError, EOFError, RuntimeError) as exc:  # what each codec raises on damage
        raise BrokenStreamError(f"broken {_WHAT[codec]}: {exc}") from None
    if len(out) > limit:
        raise InflateLimitError(codec, limit, setting)
    return out


class _OverLimit(Exception):
    """Raised by an inflater that knows before inflating that the stream declares too much."""


def _zlib(data: bytes, most: int) -> bytes:
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, most)
    if len(out) < most and not inflater.eof:
        raise EOFError("the stream ends before its end marker (truncated?)")
    return out


def _gzip(data: bytes, most: int) -> bytes:
    with gzip.GzipFile(fileobj=io.BytesIO(data)) as members:
        return members.read(most)


def _lz4(data: bytes, most: int) -> bytes:
    # A frame that declares its content size (the producer's always do) is inflated in one call, which
    # allocates that size and fails if the content differs: the declaration is checked first. Only a
    # frame without one goes through the incremental decompressor (4x slower on a Townlet recording).
    declared = lz4.frame.get_frame_info(data)["content_size"] if len(data) >= 7 else 0
    if declared:
        if declared >= most:
            raise _OverLimit
        return lz4.frame.decompress(data)
    inflater = lz4.frame.LZ4FrameDecompressor()
    out = inflater.decompress(data, max_length=most)
    if len(out) < most and not inflater.eof:
        raise EOFError("the frame ends before its end mark (truncated?)")
    return out


def _bz2(data: bytes, most: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    while data and size < most:
        inflater = bz2.BZ2Decompressor()
        part = inflater.decompress(data, most - size)
        parts.append(part)
        size += len(part)
        if size >= most:
            break
        if not inflater.eof:
            raise EOFError("the stream ends before its end marker (truncated?)")
        data = inflater.unused_data
    return b"".join(parts)


_INFLATERS = {"zlib": _zlib, "gzip": _gzip, "lz4": _lz4, "bz2": _bz2}
