"""Container format of a raw replay file, from its first bytes only (never from its name)."""

from __future__ import annotations

MAGIC_BYTES_NEEDED = 16

ZLIB_JSON = "zlib_json"
GZIP_JSON = "gzip_json"
JSON = "json"
MPQ = "mpq"
LZ4_FRAME = "lz4_frame"
MSGPACK = "msgpack"
PICKLE = "pickle"
SQLITE = "sqlite"
EMPTY = "empty"
UNKNOWN = "unknown"

LZ4_FRAME_MAGIC = b"\x04\x22\x4d\x18"


def _is_zlib_header(head: bytes) -> bool:
    # RFC 1950: CMF low nibble 8 (deflate), window <= 32K, and (CMF*256 + FLG) divisible by 31.
    return len(head) >= 2 and head[0] & 0x0F == 8 and head[0] >> 4 <= 7 and (head[0] << 8 | head[1]) % 31 == 0


def is_msgpack_map(head: bytes) -> bool:
    # fixmap (0x80-0x8f), map16 (0xde) or map32 (0xdf): every producer here writes one top-level map.
    return 0x80 <= head[0] <= 0x8F or head[0] in (0xDE, 0xDF)


def detect_format(head: bytes) -> str:
    """Name the container of a file given (at least) its first ``MAGIC_BYTES_NEEDED`` bytes."""
    if not head:
        return EMPTY
    if head.startswith(b"\x1f\x8b"):
        return GZIP_JSON
    if head.startswith(b"MPQ\x1a") or head.startswith(b"MPQ\x1b"):
        return MPQ
    if head.startswith(LZ4_FRAME_MAGIC):
        return LZ4_FRAME
    if head.startswith(b"SQLite format 3\x00"):
        return SQLITE
    if head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5:
        return PICKLE
    if _is_zlib_header(head):
        return ZLIB_JSON
    stripped = head.lstrip(b" \t\r\n\xef\xbb\xbf")
    if stripped[:1] in (b"{", b"["):
        return JSON
    if is_msgpack_map(head):
        return MSGPACK
    return UNKNOWN
