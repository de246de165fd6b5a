"""A fast walk of ``replay.game.events``: per user, the APM actions and the leave loop, no dicts built.

Why: game events are bit-packed (no length prefixes), so finding the next event means parsing every
field of this one; s2protocol's generic ``BitPackedDecoder`` does that one bit-read and one ``getattr``
per field and builds a dict per value, and was ~95% of ``replay_metadata``. APM needs only each
event's game loop, user id and event id. So, once per protocol build, this module compiles the build's
``typeinfos`` into Python source: one function per event type that only advances a bit position
(runs of fixed-width fields become one addition; only choice tags, optional flags and array, blob
and bit-array lengths are read), and an event loop that reads the three values APM needs.

Bit order is s2protocol's: bytes in order, each consumed from its least significant bit, a value
spanning bytes assembled most significant chunk first; every event starts byte aligned. Whatever
s2protocol rejects (unknown event id or choice tag, a stream that ends inside an event, protocols
without a user id type) raises ``GameEventsDecodeError`` here; callers fall back to s2protocol for
its exact message. The tests compare the walk with ``decode_replay_game_events`` on every real replay.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

__all__ = ["GameEventsDecodeError", "UserActions", "game_event_actions", "game_event_trace"]

ACTION_EVENTS = frozenset(
    {
        "NNet.Game.SCmdEvent",
        "NNet.Game.SCmdUpdateTargetPointEvent",
        "NNet.Game.SCmdUpdateTargetUnitEvent",
        "NNet.Game.SSelectionDeltaEvent",
        "NNet.Game.SControlGroupUpdateEvent",
    }
)
LEAVE_EVENT = "NNet.Game.SGameUserLeaveEvent"
_MAX_INLINE_DEPTH = 8  # deeper values get their own function (keeps generated code small)

# (data, trace or None) -> ({user: actions}, {user: first leave loop})
_Walk = Callable[[bytes, "list[tuple[int, int, int, int]] | None"], "tuple[dict[int, int], dict[int, int]]"]


class GameEventsDecodeError(ValueError):
    """The game events do not walk with this protocol (or it lacks the types): use s2protocol's error."""


@dataclass(frozen=True)
class UserActions:
    """One user id's APM inputs: how many action events, and the loop of its first leave event."""

    actions: int
    left_at: int | None


def game_event_actions(contents: bytes, protocol: ModuleType) -> dict[int, UserActions]:
    """Per user id with events: action count and leave loop. Raises ``GameEventsDecodeError``."""
    counts, leaves = _compiled(protocol)(bytes(contents), None)
    return {u: UserActions(counts.get(u, 0), leaves.get(u)) for u in sorted(counts.keys() | leaves.keys())}


def game_event_trace(contents: bytes, protocol: ModuleType) -> list[tuple[int, int, int, int]]:
    """(game loop, user id, event id, bits) of every event, as s2protocol's ``_gameloop``, ``_userid``,
    ``_eventid`` and ``_bits``: what the tests compare."""
    trace: list[tuple[int, int, int, int]] = []
    _compiled(protocol)(bytes(contents), trace)
    return trace


def _read_bits(data: bytes, p: int, n: int) -> int:
    """``n`` bits at bit ``p`` as s2protocol's ``read_bits``: the first byte's chunk is most significant."""
    i = p >> 3
    q = p & 7
    value = data[i] >> q
    if n <= 8 - q:
        return value & ((1 << n) - 1)
    n -= 8 - q
    i += 1
    while n >= 8:
        value = (value << 8) | data[i]
        i += 1
        n -= 8
    if n:
        value = (value << n) | (data[i] & ((1 << n) - 1))
    return value


@functools.lru_cache(maxsize=16)
def _compiled(protocol: ModuleType) -> _Walk:
    """The protocol's walker, compiled once per build (a failure is cached as a raising walker)."""
    try:
        source = _Compiler(protocol).module_source()
    except GameEventsDecodeError as exc:
        reason = str(exc)

        def unsupported(data: bytes, trace: list[tuple[int, int, int, int]] | None) -> Any:
            raise GameEventsDecodeError(reason)

        return unsupported
    namespace: dict[str, Any] = {"_read_bits": _read_bits, "GameEventsDecodeError": GameEventsDecodeError}
    exec(compile(source, f"<sc2 game events walker {protocol.__name__}>", "exec"), namespace)
    return namespace["walk"]


class _Compiler:
    """Turns one protocol's typeinfos into the source of ``walk``.

    Besides the code, it tracks the bit alignment (``p % 8``) where the data does not decide it: events
    start byte aligned, so the header and every field up to the first variable-length one are read with
    constant shifts. ``None`` means unknown; functions are compiled once per (typeid, entry alignment).
    """

    def __init__(self, protocol: ModuleType) -> None:
        self.typeinfos: list[tuple[str, list[Any]]] = protocol.typeinfos
        self.protocol = protocol
        self.fixed_cache: dict[int, int | None] = {}
        self.functions: dict[tuple[int, int | None], list[str]] = {}
        self.exits: dict[tuple[int, int | None], int | None] = {}
        self.tables: dict[str, str] = {}  # name -> source of an event id -> skip function dict
        for attr in ("game_event_types", "game_eventid_typeid", "svaruint32_typeid", "replay_userid_typeid"):
            if getattr(protocol, attr, None) is None:
                raise GameEventsDecodeError(f"protocol {protocol.__name__} has no {attr}")

    def info(self, typeid: int) -> tuple[str, list[Any]]:
        if not 0 <= typeid < len(self.typeinfos):
            raise GameEventsDecodeError(f"typeid {typeid} out of range")
        return self.typeinfos[typeid]

    def fixed(self, typeid: int) -> int | None:
        """Bits of every value of ``typeid`` when they do not depend on the data, else None."""
        if typeid not in self.fixed_cache:
            self.fixed_cache[typeid] = None  # guards recursive types
            kind, args = self.info(typeid)
            size: int | None = None
            if kind == "_int":
                size = args[0][1]
            elif kind == "_bool":
                size = 1
            elif kind == "_null":
                size = 0
            elif kind == "_fourcc":
                size = 32
            elif kind == "_struct":
                sizes = [self.fixed(field[1]) for field in args[0]]
                size = None if None in sizes else sum(s for s in sizes if s is not None)
            self.fixed_cache[typeid] = size
        return self.fixed_cache[typeid]

    def read(self, var: str, bounds: tuple[int, int], out: list[str], ind: str, a: int | None) -> int | None:
        """Source reading an int of ``bounds`` (offset, bits) into ``var`` and advancing ``p``."""
        offset, n = bounds
        plus = f" + {offset}" if offset else ""
        if n == 0:
            out.append(f"{ind}{var} = {offset}")
            return a
        if a is not None:
            out.append(f"{ind}{var} = ({_static_read(a, n)}){plus}")
        elif n == 1:
            out.append(f"{ind}{var} = ((data[p >> 3] >> (p & 7)) & 1){plus}")
        elif n <= 8:  # within one byte or across two
            out += [
                f"{ind}q = p & 7",
                f"{ind}if q <= {8 - n}:",
                f"{ind}    {var} = ((data[p >> 3] >> q) & {(1 << n) - 1}){plus}",
                f"{ind}else:",
                f"{ind}    r = q - {8 - n}",
                f"{ind}    {var} = (((data[p >> 3] >> q) << r)"
                f" | (data[(p >> 3) + 1] & ((1 << r) - 1))){plus}",
            ]
        elif n <= 16:  # across two bytes or three
            out += [
                f"{ind}q = p & 7",
                f"{ind}i = p >> 3",
                f"{ind}if q <= {16 - n}:",
                f"{ind}    r = q + {n - 8}",
                f"{ind}    {var} = (((data[i] >> q) << r) | (data[i + 1] & ((1 << r) - 1))){plus}",
                f"{ind}else:",
                f"{ind}    r = q - {16 - n}",
                f"{ind}    {var} = (((data[i] >> q) << (r + 8)) | (data[i + 1] << r)"
                f" | (data[i + 2] & ((1 << r) - 1))){plus}",
            ]
        else:
            out.append(f"{ind}{var} = _read_bits(data, p, {n}){plus}")
        out.append(f"{ind}p += {n}")
        return None if a is None else (a + n) % 8

    def int_value(self, typeid: int, var: str, out: list[str], ind: str, a: int | None) -> int | None:
        """Source reading an int, a choice of ints (SVarUint32) or a struct of one int (SGameUserId)."""
        kind, args = self.info(typeid)
        if kind == "_int":
            return self.read(var, args[0], out, ind, a)
        if kind == "_struct" and len(args[0]) == 1:
            return self.int_value(args[0][0][1], var, out, ind, a)
        if kind != "_choice":
            raise GameEventsDecodeError(f"typeid {typeid} ({kind}) is not an int")
        a = self.read("t", args[0], out, ind, a)
        ends = []
        for n, (tag, (_, child)) in enumerate(sorted(args[1].items())):
            out.append(f"{ind}{'if' if n == 0 else 'elif'} t == {tag}:")
            ends.append(self.int_value(child, var, out, ind + "    ", a))
        out.append(f"{ind}else:")
        out.append(f"{ind}    raise GameEventsDecodeError(f'choice tag {{t}} at bit {{p}}')")
        return _merge(ends)

    def skip(self, typeid: int, out: list[str], ind: str, depth: int, a: int | None) -> int | None:
        """Source advancing ``p`` past one value of ``typeid`` entered at alignment ``a``; the exit one."""
        size = self.fixed(typeid)
        if size is not None:
            if size:
                out.append(f"{ind}p += {size}")
            return None if a is None else (a + size) % 8
        if depth > _MAX_INLINE_DEPTH:
            out.append(f"{ind}p = {self.function(typeid, a)}(data, p)")
            return self.exits[(typeid, a)]
        kind, args = self.info(typeid)
        if kind == "_struct":
            pending = 0
            for field in args[0]:
                size = self.fixed(field[1])
                if size is not None:
                    pending += size
                    continue
                if pending:
                    out.append(f"{ind}p += {pending}")
                    a = None if a is None else (a + pending) % 8
                    pending = 0
                a = self.skip(field[1], out, ind, depth + 1, a)
            if pending:
                out.append(f"{ind}p += {pending}")
                a = None if a is None else (a + pending) % 8
            return a
        if kind == "_optional":
            a = self.read("v", (0, 1), out, ind, a)
            out.append(f"{ind}if v:")
            return _merge([a, self.body(args[0], out, ind + "    ", depth + 1, a)])
        if kind == "_choice":
            a = self.read("v", args[0], out, ind, a)
            ends = []
            for n, (tag, (_, child)) in enumerate(sorted(args[1].items())):
                out.append(f"{ind}{'if' if n == 0 else 'elif'} v == {tag}:")
                ends.append(self.body(child, out, ind + "    ", depth + 1, a))
            out.append(f"{ind}else:")
            out.append(f"{ind}    raise GameEventsDecodeError(f'choice tag {{v}} at bit {{p}}')")
            return _merge(ends)
        if kind == "_array":
            a = self.read("v", args[0], out, ind, a)
            element = self.fixed(args[1])
            if element is None:
                out.append(f"{ind}for _ in range(v):")
                out.append(f"{ind}    p = {self.function(args[1], None)}(data, p)")
                return None
            if element:
                out.append(f"{ind}p += v * {element}")
            return a if element % 8 == 0 else None
        if kind == "_blob":
            self.read("v", args[0], out, ind, a)
            out.append(f"{ind}p = ((p + 7) & -8) + 8 * v")
            return 0
        if kind == "_bitarray":
            self.read("v", args[0], out, ind, a)
            out.append(f"{ind}p += v")
            return None
        if kind in ("_real32", "_real64"):  # s2protocol's bit-packed reader fails on these in Python 3
            out.append(f"{ind}raise GameEventsDecodeError('{kind} at bit ' + str(p))")
            return a
        raise GameEventsDecodeError(f"typeid {typeid} has unknown kind {kind}")

    def body(self, typeid: int, out: list[str], ind: str, depth: int, a: int | None) -> int | None:
        """``skip`` for the body of an ``if``: never empty."""
        before = len(out)
        a = self.skip(typeid, out, ind, depth, a)
        if len(out) == before:
            out.append(f"{ind}pass")
        return a

    def function(self, typeid: int, a: int | None) -> str:
        """The name of a function skipping one value of ``typeid`` entered at ``a`` (defined once)."""
        name = f"_t{typeid}_{'x' if a is None else a}"
        key = (typeid, a)
        if key not in self.functions:
            self.functions[key] = []  # guards recursive types
            self.exits[key] = None
            lines = [f"def {name}(data, p):"]
            self.exits[key] = self.skip(typeid, lines, "    ", 0, a)
            lines.append("    return p")
            self.functions[key] = lines
        return name

    def dispatch(self, out: list[str], ind: str, a: int | None) -> None:
        """Source reading user and event id at ``a`` and skipping the event."""
        p = self.protocol
        a = self.int_value(p.replay_userid_typeid, "u", out, ind, a)
        a = self.int_value(p.game_eventid_typeid, "e", out, ind, a)
        name = f"skips_{'x' if a is None else a}"
        if name not in self.tables:
            skips = {e: self.function(typeid, a) for e, (typeid, _) in sorted(p.game_event_types.items())}
            self.tables[name] = f"{{{', '.join(f'{e}: {fn}' for e, fn in skips.items())}}}"
        out.append(f"{ind}skip = {name}.get(e)")

    def module_source(self) -> str:
        p = self.protocol
        for eventid, (typeid, _) in p.game_event_types.items():
            if self.info(typeid)[0] != "_struct":  # s2protocol sets keys on the event: it must be a dict
                raise GameEventsDecodeError(f"event {eventid} is not a struct")
        names = {e: name for e, (_, name) in p.game_event_types.items()}
        actions = sorted(e for e, name in names.items() if name in ACTION_EVENTS)
        leave = [e for e, name in names.items() if name == LEAVE_EVENT]
        ind = " " * 12
        head: list[str] = []
        a = self.int_value(p.svaruint32_typeid, "d", head, ind, 0)
        head.append(f"{ind}loop += d")
        if a is None:  # loop deltas of different widths: a path for byte-aligned ends, one for the rest
            head.append(f"{ind}if (p & 7) == 0:")
            self.dispatch(head, ind + "    ", 0)
            head.append(f"{ind}else:")
            self.dispatch(head, ind + "    ", None)
        else:
            self.dispatch(head, ind, a)
        walk = [
            "def walk(data, trace):",
            "    nbits = len(data) * 8",
            "    p = 0",
            "    loop = 0",
            "    counts = {}",
            "    leaves = {}",
            *(f"    {name} = {table}" for name, table in self.tables.items()),
            f"    actions = frozenset({actions!r})",
            f"    leave = {leave[0] if leave else -1}",
            "    try:",
            "        while p < nbits:",
            "            start = p",
            *head,
            f"{ind}if skip is None:",
            f"{ind}    raise GameEventsDecodeError(f'unknown event id {{e}} at bit {{start}}')",
            f"{ind}p = skip(data, p)",
            f"{ind}if p > nbits:",
            f"{ind}    raise IndexError",
            f"{ind}p = (p + 7) & -8",
            f"{ind}if trace is not None:",
            f"{ind}    trace.append((loop, u, e, p - start))",
            f"{ind}if e in actions:",
            f"{ind}    counts[u] = counts.get(u, 0) + 1",
            f"{ind}elif e == leave and u not in leaves:",
            f"{ind}    leaves[u] = loop",
            "    except IndexError:",
            "        raise GameEventsDecodeError(f'truncated: an event ends past bit {nbits}') from None",
            "    return counts, leaves",
        ]
        parts = ["\n".join(lines) for lines in self.functions.values()]
        return "\n\n".join([*parts, "\n".join(walk)]) + "\n"


def _merge(alignments: list[int | None]) -> int | None:
    """The alignment after branches: known only when every branch ends at the same one."""
    return alignments[0] if alignments and all(x == alignments[0] for x in alignments) else None


def _static_read(a: int, n: int) -> str:
    """An expression of ``n`` bits at ``p`` when ``p % 8 == a`` is known: constant shifts and masks."""
    chunks = []  # (byte offset, low bit, width), first chunk most significant
    low, left, offset = a, n, 0
    while left:
        width = min(8 - low, left)
        chunks.append((offset, low, width))
        left -= width
        offset += 1
        low = 0
    terms = []
    after = n
    for offset, low, width in chunks:
        after -= width
        term = f"data[(p >> 3) + {offset}]" if offset else "data[p >> 3]"
        if low:
            term = f"({term} >> {low})"
        if low + width < 8:
            term = f"({term} & {(1 << width) - 1})"
        if after:
            term = f"({term} << {after})"
        terms.append(term)
    return " | ".join(terms)
