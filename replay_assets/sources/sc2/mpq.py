"""Reading one member of a replay's MPQ archive with its size bounded before anything is inflated.

``mpyq``'s ``read_file`` inflates each sector with ``zlib.decompress`` / ``bz2.decompress``: a member
stored as a bz2 stream of 3 GiB takes 3 GiB (and half a minute) before anyone can look at it. Here the
member's declared size (the block table's) is checked against the limit first, and every sector is
inflated at most to what it may hold (a sector of ``512 << sector_size_shift`` bytes, a single-unit
member its declared size), so a lying header costs nothing and a bomb is refused while inflating.
The archive's tables are still parsed by ``mpyq``; this replaces only the member read.
"""

from __future__ import annotations

import itertools
import struct
from typing import Any

import mpyq

from replay_assets.util.capped_inflate import Codec, InflateLimitError, inflate

# The largest member a replay may hold, inflated. The largest seen in real replays is a few MB (a long
# team game's game events); 256 MiB is far above any, and one file's decoding stays within a few GiB.
DEFAULT_MAX_MEMBER_BYTES = 256 << 20
_CODECS: dict[int, Codec] = {2: "zlib", 16: "bz2"}  # MPQ compression masks SC2 uses


class MemberError(ValueError):
    """A member that cannot be read within its limits; the message says why."""


def read_member(
    archive: mpyq.MPQArchive, name: str, max_bytes: int = DEFAULT_MAX_MEMBER_BYTES
) -> bytes | None:
    """The inflated bytes of member ``name``, None when the archive has no such (non-empty) member."""
    hash_entry = archive.get_hash_table_entry(name)
    if hash_entry is None:
        return None
    try:
        block = archive.block_table[hash_entry.block_table_index]
    except IndexError:
        raise MemberError(
            f"its hash entry points past the block table ({hash_entry.block_table_index})"
        ) from None
    if not block.flags & mpyq.MPQ_FILE_EXISTS or block.archived_size == 0:
        return None
    if block.flags & mpyq.MPQ_FILE_ENCRYPTED:
        raise MemberError("it is encrypted (replays never are)")
    if block.size > max_bytes:
        raise MemberError(f"it declares {block.size} bytes, more than max_member_bytes={max_bytes}")
    archive.file.seek(block.offset + archive.header["offset"])
    stored = archive.file.read(block.archived_size)
    if len(stored) < block.archived_size:
        raise MemberError(f"the archive ends {block.archived_size - len(stored)} bytes into it (truncated?)")
    compressed = bool(block.flags & mpyq.MPQ_FILE_COMPRESS)
    if block.flags & mpyq.MPQ_FILE_SINGLE_UNIT:
        # Compressed only when that gained at least one byte (mpyq's rule, which every writer follows).
        data = _inflate(stored, block.size) if compressed and block.size > block.archived_size else stored
    else:
        data = _sectors(stored, block, 512 << archive.header["sector_size_shift"], compressed)
    if len(data) > block.size:
        raise MemberError(f"it inflates to {len(data)} bytes, more than the {block.size} it declares")
    return data


def _sectors(stored: bytes, block: Any, sector_size: int, compressed: bool) -> bytes:
    """A sectored member: a table of sector offsets, then each sector (compressed when it gained)."""
    count = block.size // sector_size + 1
    with_crc = bool(block.flags & mpyq.MPQ_FILE_SECTOR_CRC)
    count += with_crc
    try:
        positions = struct.unpack(f"<{count + 1}I", stored[: 4 * (count + 1)])
    except struct.error:
        raise MemberError("its sector table is cut short") from None
    parts: list[bytes] = []
    left = block.size
    for start, end in itertools.pairwise(positions[: len(positions) - with_crc]):
        if not 0 <= start <= end <= len(stored):
            raise MemberError(f"a sector spans bytes {start}..{end} of a {len(stored)}-byte member")
        sector = stored[start:end]
        if compressed and left > len(sector):
            sector = _inflate(sector, min(sector_size, left))
        left -= len(sector)
        parts.append(sector)
    return b"".join(parts)


def _inflate(data: bytes, most: int) -> bytes:
    """One compressed unit: a mask byte naming the codec, then the stream, inflated at most ``most``."""
    codec = _CODECS.get(data[0]) if data else None
    if codec is None:
        raise MemberError(f"unsupported compression mask {data[:1].hex() or 'none'}")
    try:
        return inflate(data[1:], codec, most, setting="its declared size")
    except InflateLimitError:
        raise MemberError(f"a {codec} unit inflates to more than the {most} bytes it may hold") from None
