"""Per-protocol straight-line decoders for the tracker event structs, generated as Python source.

Why: the generic walk in ``sc2_fast_tracker`` looks every struct field up by tag and dispatches on its
kind byte, yet a build writes each tracker event in one fixed layout (every field present, in tag
order). So, once per protocol, this module writes one function per event struct (and per struct nested
in one) that *checks* that layout byte by byte while decoding it with no lookups: the tag and kind
bytes are compared with constants, ints, blobs, optionals, bools and arrays are decoded inline. A
struct of many ints only (``m_stats``: 39) is matched by one compiled regex instead, whose groups are
the varints' bytes, turned into values by a table: C does the per-field work.

Any byte that does not match (a field missing or out of order, an unknown or multi-byte tag, a long or
past-the-end blob) makes the function start again from the struct's first byte with the generic
decoder, so the output never depends on the fast path; the tests check both paths against s2protocol.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

__all__ = ["EventDecoder", "Fallback", "compile_event_decoders"]

# (bytes, position, typeid) -> (value, position after it): the generic decoder.
Fallback = Callable[[bytes, int, int], tuple[Any, int]]
# (bytes, position) -> (value, position after it): the generic varint decoder.
Varint = Callable[[bytes, int], tuple[int, int]]
# (bytes, event start, position of the struct, game loop) -> (event dict with the _ keys, position after)
EventDecoder = Callable[[bytes, int, int, int], tuple[dict[str, Any], int]]

_INT, _BLOB, _OPTIONAL, _STRUCT, _ARRAY, _BOOL = "_int", "_blob", "_optional", "_struct", "_array", "_bool"
_KIND_BYTE = {_ARRAY: 0, _BLOB: 2, _OPTIONAL: 4, _STRUCT: 5, _BOOL: 6, _INT: 9}
_MIN_PATTERN_FIELDS = 16  # measured: below this many int fields the straight-line code is as fast
_VARINT_PATTERN = rb"([\x80-\xff]*[\x00-\x7f])"  # continuation bytes, then a last byte


def compile_event_decoders(
    typeinfos: list[tuple[str, list[Any]]],
    event_types: dict[int, tuple[int, str]],
    fallback: Fallback,
    varint: Varint,
    name: str = "protocol",
) -> dict[int, EventDecoder]:
    """One decoder per tracker event id whose struct can be laid out; the others keep the generic walk."""
    writer = _Writer(typeinfos)
    functions = {
        eventid: writer.event_function(eventid, typeid, event_name)
        for eventid, (typeid, event_name) in event_types.items()
        if writer.can_lay_out(typeid)
    }
    namespace = {"_fallback": fallback, "_varint": varint, **writer.constants}
    if writer.uses_table:
        namespace["_varint_value"] = _varint_table(varint).__getitem__
    exec(compile(writer.source(), f"<sc2 tracker decoders {name}>", "exec"), namespace)
    return {eventid: namespace[function] for eventid, function in functions.items()}


class _VarintTable(dict[bytes, int]):
    """The value of each varint's bytes: one- and two-byte ones stored, longer ones decoded on a miss."""

    def __init__(self, varint: Varint) -> None:
        super().__init__()
        self.varint = varint
        for first in range(0x80):
            self[bytes((first,))] = varint(bytes((first,)), 0)[0]
            for second in range(0x80):  # the 2 bytes of 0..8191 and -8191..0
                self[bytes((first | 0x80, second))] = varint(bytes((first | 0x80, second)), 0)[0]

    def __missing__(self, key: bytes) -> int:
        return self.varint(key, 0)[0]


@functools.cache
def _varint_table(varint: Varint) -> _VarintTable:
    """Built once per process (16K entries, a few ms) and only when a protocol has a long int struct."""
    return _VarintTable(varint)


def _varint_lines(target: str, indent: str, at: int = 0) -> list[str]:
    """Decode the varint at ``pos + at`` into ``target`` and move ``pos`` past it.

    Non-negative one- and two-byte varints (ids, counts, coordinates, most resources) are inlined;
    negative or longer ones go through ``_varint``."""
    return [
        f"{indent}b = buf[pos + {at}]",
        f"{indent}if not b & 0x81:",
        f"{indent}    {target} = b >> 1",
        f"{indent}    pos += {at + 1}",
        f"{indent}elif not b & 1 and buf[pos + {at + 1}] < 0x80:",
        f"{indent}    {target} = ((b >> 1) & 0x3F) | (buf[pos + {at + 1}] << 6)",
        f"{indent}    pos += {at + 2}",
        f"{indent}else:",
        f"{indent}    {target}, pos = _varint(buf, pos + {at})",
    ]


def _one_byte_varint(value: int) -> int | None:
    """The byte encoding ``value`` as a one-byte non-negative varint, or None when it needs more."""
    return value << 1 if 0 <= value < 64 else None


class _Writer:
    """Accumulates the generated functions' source and the constants (regexes, names) they use."""

    def __init__(self, typeinfos: list[tuple[str, list[Any]]]) -> None:
        self.typeinfos = typeinfos
        self.functions: list[str] = []
        self.constants: dict[str, Any] = {}
        self.uses_table = False
        self._nested: dict[int, str] = {}

    def source(self) -> str:
        return "\n\n".join(self.functions) + "\n"

    def can_lay_out(self, typeid: int) -> bool:
        """A struct whose field count and tags are one-byte varints and without ``__parent`` to merge."""
        kind, args = self.typeinfos[typeid]
        if kind != _STRUCT or _one_byte_varint(len(args[0])) is None:
            return False
        return all(name != "__parent" and _one_byte_varint(tag) is not None for name, _, tag in args[0])

    def event_function(self, eventid: int, typeid: int, event_name: str) -> str:
        """The decoder of one event: its struct's fields plus the ``_event`` ... ``_bits`` keys."""
        function = f"_event_{eventid}"
        extras = {
            "_event": repr(event_name),
            "_eventid": repr(eventid),
            "_gameloop": "gameloop",
            "_bits": "(pos - start) * 8",
        }
        self.functions.append(
            "\n".join(
                [
                    f"def _generic{function}(buf, start, first, gameloop):",
                    f"    value, pos = _fallback(buf, first, {typeid})",
                    *(f"    value[{key!r}] = {expr}" for key, expr in extras.items()),
                    "    return value, pos",
                ]
            )
        )
        bail = f"return _generic{function}(buf, start, first, gameloop)"
        self._struct_function(f"{function}(buf, start, pos, gameloop)", typeid, extras, bail)
        return function

    def _nested_function(self, typeid: int) -> str:
        """The name of the decoder of a struct inside an event, written on first use."""
        if typeid not in self._nested:
            function = f"_struct_{typeid}"
            self._nested[typeid] = function
            bail = f"return _fallback(buf, first, {typeid})"
            self._struct_function(f"{function}(buf, pos)", typeid, {}, bail)
        return self._nested[typeid]

    def _struct_function(self, signature: str, typeid: int, extras: dict[str, str], bail: str) -> None:
        """Append ``def signature``: the struct's fields into a dict with ``extras``, or ``bail``."""
        fields = self.typeinfos[typeid][1][0]
        head = [f"def {signature}:", "    first = pos"]
        if len(fields) >= _MIN_PATTERN_FIELDS and all(self.typeinfos[c][0] == _INT for _, c, _ in fields):
            body = self._pattern_body(typeid, fields, extras, bail)
        else:
            body = self._straight_body(fields, extras, bail)
        self.functions.append("\n".join(head + body))

    def _straight_body(
        self, fields: list[tuple[str, int, int]], extras: dict[str, str], bail: str
    ) -> list[str]:
        """Kind byte and field count, then each field's tag, kind and value in order."""
        lines = [
            f"    if buf[pos] != 5 or buf[pos + 1] != {_one_byte_varint(len(fields))}:",
            f"        {bail}",
        ]
        lines.append("    pos += 2")
        entries = []
        for index, (name, child, tag) in enumerate(fields):
            entries.append(f"{name!r}: f{index}")
            lines.append(f"    # {name}")
            lines += self._value_lines(f"f{index}", child, "    ", bail, _one_byte_varint(tag))
        entries += [f"{key!r}: {expr}" for key, expr in extras.items()]
        return [*lines, "    return {" + ", ".join(entries) + "}, pos"]

    def _pattern_body(
        self, typeid: int, fields: list[tuple[str, int, int]], extras: dict[str, str], bail: str
    ) -> list[str]:
        """All-int struct: one regex checks kind, count, tags and kinds and captures every varint."""
        header = bytes((5, len(fields) << 1))
        pattern = re.escape(header) + b"".join(
            re.escape(bytes((tag << 1, 9))) + _VARINT_PATTERN for _, _, tag in fields
        )
        self.constants[f"_match_{typeid}"] = re.compile(pattern).match
        self.constants[f"_names_{typeid}"] = tuple(name for name, _, _ in fields)
        self.uses_table = True
        return [
            f"    match = _match_{typeid}(buf, pos)",
            "    if match is None:",
            f"        {bail}",
            f"    value = dict(zip(_names_{typeid}, map(_varint_value, match.groups())))",
            "    pos = match.end()",
            *(f"    value[{key!r}] = {expr}" for key, expr in extras.items()),
            "    return value, pos",
        ]

    def _value_lines(
        self, target: str, typeid: int, indent: str, bail: str, tag: int | None = None
    ) -> list[str]:
        """Decode one value of ``typeid`` into ``target``, checking its kind byte (after ``tag``, if any).

        The tag and kind bytes are checked in one test and the varint read at an offset, so the common
        field (tag, kind, one-byte varint) costs three reads and one ``pos`` update."""
        kind, args = self.typeinfos[typeid]
        if kind == _STRUCT or kind not in _KIND_BYTE:  # decoded by a function that checks its kind
            if tag is None:
                return [f"{indent}{target}, pos = {self._delegate(typeid, 'pos')}"]
            return [
                f"{indent}if buf[pos] != {tag}:",
                f"{indent}    {bail}",
                f"{indent}{target}, pos = {self._delegate(typeid, 'pos + 1')}",
            ]
        at = 0 if tag is None else 1  # the kind byte's offset from pos
        tag_test = "" if tag is None else f"buf[pos] != {tag} or "
        check = [f"{indent}if {tag_test}buf[pos + {at}] != {_KIND_BYTE[kind]}:", f"{indent}    {bail}"]
        if kind == _INT:
            return check + _varint_lines(target, indent, at + 1)
        if kind == _BOOL:
            return [*check, f"{indent}{target} = buf[pos + {at + 1}] != 0", f"{indent}pos += {at + 2}"]
        if kind == _BLOB:
            return [
                *check,
                f"{indent}n = buf[pos + {at + 1}]",
                f"{indent}if n & 0x81:",  # only one-byte non-negative lengths
                f"{indent}    {bail}",
                f"{indent}pos += {at + 2}",
                f"{indent}n = pos + (n >> 1)",
                f"{indent}if n > len(buf):",
                f"{indent}    {bail}",
                f"{indent}{target} = buf[pos:n]",
                f"{indent}pos = n",
            ]
        if kind == _OPTIONAL:
            return [
                *check,
                f"{indent}if buf[pos + {at + 1}]:",
                f"{indent}    pos += {at + 2}",
                *self._value_lines(target, args[0], indent + "    ", bail),
                f"{indent}else:",
                f"{indent}    {target} = None",
                f"{indent}    pos += {at + 2}",
            ]
        item = f"{target}_item"  # kind == _ARRAY
        return [
            *check,
            *_varint_lines(f"{target}_n", indent, at + 1),
            f"{indent}{target} = []",
            f"{indent}for _ in range({target}_n):",
            *self._value_lines(item, args[1], indent + "    ", bail),
            f"{indent}    {target}.append({item})",
        ]

    def _delegate(self, typeid: int, at: str) -> str:
        """A call decoding a value not inlined: a laid-out struct's own function, else the generic."""
        if self.can_lay_out(typeid):
            return f"{self._nested_function(typeid)}(buf, {at})"
        return f"_fallback(buf, {at}, {typeid})"
