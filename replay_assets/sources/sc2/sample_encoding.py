"""Byte-level writers for synthetic ``.SC2Replay`` files: Blizzard's two value encodings and the MPQ archive.

Why hand-written: s2protocol only ships *decoders*. The encoders here are driven by the same protocol
module's ``typeinfos`` and mirror ``s2protocol.decoders`` line for line, so whatever they write decodes
back to the value given (the tests round-trip every file through s2protocol and sc2reader):

* ``VersionedEncoder`` (header, details, tracker events): every value starts with a kind byte, struct
  fields carry their tags, integers are zig-zag-like varints.
* ``BitPackedEncoder`` (initData, game and message events): values packed to their typeinfo bounds,
  most significant bits first, the way ``BitPackedBuffer`` reads them back in big-endian mode.
* ``mpq_archive``: an MPQ v1 archive preceded by the user-data block holding the replay header; hash
  and block tables encrypted with the standard MPQ crypt table; each file stored as a single unit,
  zlib-compressed when that saves bytes (what ``mpyq`` reads and sc2reader forces decompression of).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "BitPackedEncoder",
    "VersionedEncoder",
    "encode_event_stream",
    "mpq_archive",
]

_VARUINT32_BITS = (6, 14, 22, 32)  # the choice arms of NNet.SVarUint32 (gameloop deltas)


class BitPackedEncoder:
    """The inverse of ``s2protocol.decoders.BitPackedDecoder`` for one protocol's typeinfos."""

    def __init__(self, typeinfos: Sequence[tuple[str, list[Any]]]) -> None:
        self._typeinfos = typeinfos
        self._out = bytearray()
        self._next = 0  # the partial byte being filled, low bits first
        self._nextbits = 0

    def getvalue(self) -> bytes:
        self.byte_align()
        return bytes(self._out)

    def byte_align(self) -> None:
        if self._nextbits:
            self._out.append(self._next)
            self._next = self._nextbits = 0

    def write_bits(self, value: int, bits: int) -> None:
        """Most significant bits first, each byte filled from its low bit: what ``read_bits`` undoes."""
        if value < 0 or value >> bits:
            raise ValueError(f"{value} does not fit in {bits} bits")
        while bits:
            copy = min(bits, 8 - self._nextbits)
            chunk = (value >> (bits - copy)) & ((1 << copy) - 1)
            self._next |= chunk << self._nextbits
            self._nextbits += copy
            bits -= copy
            if self._nextbits == 8:
                self._out.append(self._next)
                self._next = self._nextbits = 0

    def write_aligned_bytes(self, data: bytes) -> None:
        self.byte_align()
        self._out += data

    def instance(self, typeid: int, value: Any) -> None:
        kind, args = self._typeinfos[typeid]
        getattr(self, kind)(value, *args)

    def _int(self, value: int, bounds: tuple[int, int]) -> None:
        self.write_bits(value - bounds[0], bounds[1])

    def _array(self, value: Sequence[Any], bounds: tuple[int, int], typeid: int) -> None:
        self._int(len(value), bounds)
        for item in value:
            self.instance(typeid, item)

    def _bitarray(self, value: tuple[int, int], bounds: tuple[int, int]) -> None:
        length, bits = value
        self._int(length, bounds)
        self.write_bits(bits, length)

    def _blob(self, value: bytes, bounds: tuple[int, int]) -> None:
        self._int(len(value), bounds)
        self.write_aligned_bytes(value)

    def _bool(self, value: bool) -> None:
        self.write_bits(1 if value else 0, 1)

    def _choice(
        self, value: dict[str, Any], bounds: tuple[int, int], fields: dict[int, tuple[str, int]]
    ) -> None:
        ((name, inner),) = value.items()
        tag = next(t for t, (n, _) in fields.items() if n == name)
        self._int(tag, bounds)
        self.instance(fields[tag][1], inner)

    def _fourcc(self, value: bytes) -> None:
        for byte in value:
            self.write_bits(byte, 8)

    def _null(self, value: None) -> None:
        pass

    def _optional(self, value: Any, typeid: int) -> None:
        self._bool(value is not None)
        if value is not None:
            self.instance(typeid, value)

    def _real32(self, value: float) -> None:
        self._fourcc(struct.pack(">f", value))

    def _real64(self, value: float) -> None:
        self._fourcc(struct.pack(">d", value))

    def _struct(self, value: dict[str, Any], fields: list[tuple[str, int, int]]) -> None:
        for name, typeid, _tag in fields:
            self.instance(typeid, value if name == "__parent" else value[name])


def _vint(value: int) -> bytes:
    """The varint ``VersionedDecoder._vint`` reads: sign in bit 0, 6 bits, then 7 bits per byte."""
    magnitude = abs(value)
    out = bytearray([((magnitude & 0x3F) << 1) | (1 if value < 0 else 0)])
    magnitude >>= 6
    while magnitude:
        out[-1] |= 0x80
        out.append(magnitude & 0x7F)
        magnitude >>= 7
    return bytes(out)


class VersionedEncoder:
    """The inverse of ``s2protocol.decoders.VersionedDecoder``: self-describing, byte aligned.

    Struct fields are written in tag order (as Blizzard writes them, and as sc2reader's positional
    readers expect); a field missing from the value is left out, which the format allows.
    """

    def __init__(self, typeinfos: Sequence[tuple[str, list[Any]]]) -> None:
        self._typeinfos = typeinfos
        self._out = bytearray()

    def getvalue(self) -> bytes:
        return bytes(self._out)

    def byte_align(self) -> None:
        pass  # every versioned value is whole bytes

    def instance(self, typeid: int, value: Any) -> None:
        kind, args = self._typeinfos[typeid]
        getattr(self, kind)(value, *args)

    def _int(self, value: int, bounds: tuple[int, int]) -> None:
        self._out += b"\x09" + _vint(value)

    def _array(self, value: Sequence[Any], bounds: tuple[int, int], typeid: int) -> None:
        self._out += b"\x00" + _vint(len(value))
        for item in value:
            self.instance(typeid, item)

    def _bitarray(self, value: tuple[int, bytes], bounds: tuple[int, int]) -> None:
        length, data = value
        self._out += b"\x01" + _vint(length) + data

    def _blob(self, value: bytes, bounds: tuple[int, int]) -> None:
        self._out += b"\x02" + _vint(len(value)) + value

    def _bool(self, value: bool) -> None:
        self._out += b"\x06" + (b"\x01" if value else b"\x00")

    def _choice(
        self, value: dict[str, Any], bounds: tuple[int, int], fields: dict[int, tuple[str, int]]
    ) -> None:
        ((name, inner),) = value.items()
        tag = next(t for t, (n, _) in fields.items() if n == name)
        self._out += b"\x03" + _vint(tag)
        self.instance(fields[tag][1], inner)

    def _fourcc(self, value: bytes) -> None:
        self._out += b"\x07" + value

    def _null(self, value: None) -> None:
        pass

    def _optional(self, value: Any, typeid: int) -> None:
        self._out += b"\x04" + (b"\x00" if value is None else b"\x01")
        if value is not None:
            self.instance(typeid, value)

    def _real32(self, value: float) -> None:
        self._out += b"\x07" + struct.pack(">f", value)

    def _real64(self, value: float) -> None:
        self._out += b"\x08" + struct.pack(">d", value)

    def _struct(self, value: dict[str, Any], fields: list[tuple[str, int, int]]) -> None:
        present = sorted((f for f in fields if f[0] == "__parent" or f[0] in value), key=lambda f: f[2])
        self._out += b"\x05" + _vint(len(present))
        for name, typeid, tag in present:
            self._out += _vint(tag)
            self.instance(typeid, value if name == "__parent" else value[name])


def _gameloop_delta(delta: int) -> dict[str, int]:
    """The smallest ``SVarUint32`` arm that holds ``delta`` (the choice Blizzard's writer makes)."""
    for name, bits in zip(("m_uint6", "m_uint14", "m_uint22", "m_uint32"), _VARUINT32_BITS, strict=True):
        if delta < 1 << bits:
            return {name: delta}
    raise ValueError(f"gameloop delta {delta} does not fit in 32 bits")


def encode_event_stream(
    encoder: BitPackedEncoder | VersionedEncoder,
    protocol: Any,
    eventid_typeid: int,
    event_types: dict[int, tuple[int, str]],
    events: Iterable[tuple[int, int | None, int, dict[str, Any]]],
) -> bytes:
    """Events as (gameloop, user id or None, event id, fields), in loop order: the inverse of
    the protocol's ``_decode_event_stream`` (delta loop, optional user id, event id, struct, align)."""
    previous = 0
    for loop, user, eventid, fields in events:
        if loop < previous:
            raise ValueError(f"events out of order: loop {loop} after {previous}")
        encoder.instance(protocol.svaruint32_typeid, _gameloop_delta(loop - previous))
        previous = loop
        if user is not None:
            encoder.instance(protocol.replay_userid_typeid, {"m_userId": user})
        encoder.instance(eventid_typeid, eventid)
        encoder.instance(event_types[eventid][0], fields)
        encoder.byte_align()
    return encoder.getvalue()


# --- MPQ -------------------------------------------------------------------------------------------

_MPQ_FILE_EXISTS = 0x80000000
_MPQ_FILE_SINGLE_UNIT = 0x01000000
_MPQ_FILE_COMPRESS = 0x00000200
_ZLIB = 0x02  # the compression-type byte before zlib data
_HEADER_OFFSET = 1024  # where the MPQ header starts, after the user-data block (as in real replays)
_USER_DATA_SIZE = 512
_HASH_KINDS = {"TABLE_OFFSET": 0, "HASH_A": 1, "HASH_B": 2, "TABLE": 3}


def _crypt_table() -> list[int]:
    """The standard MPQ crypt table (1280 words) every MPQ hash and table key is built from."""
    table = [0] * 0x500
    seed = 0x00100001
    for i in range(256):
        index = i
        for _ in range(5):
            seed = (seed * 125 + 3) % 0x2AAAAB
            high = (seed & 0xFFFF) << 16
            seed = (seed * 125 + 3) % 0x2AAAAB
            table[index] = high | (seed & 0xFFFF)
            index += 0x100
    return table


_CRYPT = _crypt_table()


def mpq_hash(name: str, kind: str) -> int:
    """MPQ's string hash of ``name`` (case-insensitive) for one of the four hash kinds."""
    seed1, seed2 = 0x7FED7FED, 0xEEEEEEEE
    offset = _HASH_KINDS[kind] << 8
    for ch in name.upper().encode():
        seed1 = (_CRYPT[offset + ch] ^ (seed1 + seed2)) & 0xFFFFFFFF
        seed2 = (ch + seed1 + seed2 + (seed2 << 5) + 3) & 0xFFFFFFFF
    return seed1


def mpq_encrypt(data: bytes, key: int) -> bytes:
    """Encrypt whole 32-bit words: the inverse of the readers' table decryption."""
    seed1, seed2 = key, 0xEEEEEEEE
    words = struct.unpack(f"<{len(data) // 4}I", data)
    out = []
    for plain in words:
        seed2 = (seed2 + _CRYPT[0x400 + (seed1 & 0xFF)]) & 0xFFFFFFFF
        out.append((plain ^ (seed1 + seed2)) & 0xFFFFFFFF)
        seed1 = ((((~seed1) << 21) + 0x11111111) | (seed1 >> 11)) & 0xFFFFFFFF
        seed2 = (plain + seed2 + (seed2 << 5) + 3) & 0xFFFFFFFF
    return struct.pack(f"<{len(out)}I", *out)


def _stored(data: bytes) -> tuple[bytes, int]:
    """(bytes as stored, block flags): zlib behind its type byte when that is smaller, else raw."""
    flags = _MPQ_FILE_EXISTS | _MPQ_FILE_SINGLE_UNIT
    if data:
        packed = bytes([_ZLIB]) + zlib.compress(data, 6)
        if len(packed) < len(data):
            return packed, flags | _MPQ_FILE_COMPRESS
    return data, flags


def mpq_archive(
    user_data: bytes, files: dict[str, bytes], stored: dict[str, tuple[bytes, int]] | None = None
) -> bytes:
    """An MPQ archive holding ``files`` (plus ``(listfile)``), preceded by the ``user_data`` block.

    ``stored``: members given as they are stored (a compression mask byte, then the stream) with the size
    their block declares, whatever the stream really holds: for damaged and hostile archives in tests.
    Layout: user-data header + content padded to 1024 bytes, MPQ v1 header, file blocks, hash table,
    block table; offsets in the tables are relative to the MPQ header, as the format requires.
    """
    stored = stored or {}
    names = [*files, *stored, "(listfile)"]
    listfile = "".join(f"{n}\r\n" for n in names[:-1]).encode()
    units = [(*_stored(data), len(data)) for data in files.values()]
    units += [
        (unit, _MPQ_FILE_EXISTS | _MPQ_FILE_SINGLE_UNIT | _MPQ_FILE_COMPRESS, size)
        for unit, size in stored.values()
    ]
    units.append((*_stored(listfile), len(listfile)))
    hash_size = 1 << max(4, (len(names) * 2 - 1).bit_length())
    body = bytearray()
    blocks = []
    offset = 44  # the v1 header's size: blocks follow it
    for unit, flags, size in units:
        blocks.append(struct.pack("<4I", offset + len(body), len(unit), size, flags))
        body += unit
    hash_entries: list[bytes | None] = [None] * hash_size
    for index, name in enumerate(names):
        slot = mpq_hash(name, "TABLE_OFFSET") & (hash_size - 1)
        while hash_entries[slot] is not None:
            slot = (slot + 1) & (hash_size - 1)
        hash_entries[slot] = struct.pack(
            "<2I2HI", mpq_hash(name, "HASH_A"), mpq_hash(name, "HASH_B"), 0, 0, index
        )
    empty = b"\xff" * 16
    hash_table = mpq_encrypt(b"".join(e or empty for e in hash_entries), mpq_hash("(hash table)", "TABLE"))
    block_table = mpq_encrypt(b"".join(blocks), mpq_hash("(block table)", "TABLE"))
    hash_offset = offset + len(body)
    block_offset = hash_offset + len(hash_table)
    archive_size = block_offset + len(block_table)
    header = struct.pack(
        "<4s2I2H4I", b"MPQ\x1a", 44, archive_size, 1, 3, hash_offset, block_offset, hash_size, len(names)
    ) + struct.pack("<q2h", 0, 0, 0)
    user = struct.pack("<4s3I", b"MPQ\x1b", _USER_DATA_SIZE, _HEADER_OFFSET, len(user_data)) + user_data
    if len(user) > _HEADER_OFFSET:
        raise ValueError("replay header too large for the user-data block")
    return user.ljust(_HEADER_OFFSET, b"\x00") + header + bytes(body) + hash_table + block_table
