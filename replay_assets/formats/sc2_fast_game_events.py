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
    """Turns one protocol's typeinfos into the source of ``walk``."""

    def __init__(self, protocol: ModuleType) -> None:
        self.typeinfos: list[tuple[str, list[Any]]] = protocol.typeinfos
        self.protocol = protocol
        self.fixed_cache: dict[int, int | None] = {}
        self.functions: dict[int, list[str]] = {}
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

    def read(self, var: str, bounds: tuple[int, int], out: list[str], ind: str) -> None:
        """Source reading an int of ``bounds`` (offset, bits) into ``var`` and advancing ``p``."""
        offset, n = bounds
        plus = f" + {offset}" if offset else ""
        if n == 0:
            out.append(f"{ind}{var} = {offset}")
            return
        if n == 1:
            out.append(f"{ind}{var} = ((data[p >> 3] >> (p & 7)) & 1){plus}")
        elif n <= 8:
            out.append(f"{ind}q = p & 7")
            out.append(f"{ind}if q <= {8 - n}:")
            out.append(f"{ind}    {var} = ((data[p >> 3] >> q) & {(1 << n) - 1}){plus}")
            out.append(f"{ind}else:")
            out.append(f"{ind}    r = q - {8 - n}")
            out.append(
                f"{ind}    {var} = (((data[p >> 3] >> q) << r) | (data[(p >> 3) + 1] & ((1 << r) - 1))){plus}"
            )
        else:
            out.append(f"{ind}{var} = _read_bits(data, p, {n}){plus}")
        out.append(f"{ind}p += {n}")

    def int_value(self, typeid: int, var: str, out: list[str], ind: str) -> None:
        """Source reading an int, a choice of ints (SVarUint32) or a struct of one int (SGameUserId)."""
        kind, args = self.info(typeid)
        if kind == "_int":
            self.read(var, args[0], out, ind)
        elif kind == "_struct" and len(args[0]) == 1:
            self.int_value(args[0][0][1], var, out, ind)
        elif kind == "_choice":
            self.read("t", args[0], out, ind)
            for n, (tag, (_, child)) in enumerate(sorted(args[1].items())):
                out.append(f"{ind}{'if' if n == 0 else 'elif'} t == {tag}:")
                self.int_value(child, var, out, ind + "    ")
            out.append(f"{ind}else:")
            out.append(f"{ind}    raise GameEventsDecodeError(f'choice tag {{t}} at bit {{p}}')")
        else:
            raise GameEventsDecodeError(f"typeid {typeid} ({kind}) is not an int")

    def skip(self, typeid: int, out: list[str], ind: str, depth: int) -> None:
        """Source advancing ``p`` past one value of ``typeid``."""
        size = self.fixed(typeid)
        if size is not None:
            if size:
                out.append(f"{ind}p += {size}")
            return
        if depth > _MAX_INLINE_DEPTH:
            out.append(f"{ind}p = {self.function(typeid)}(data, p)")
            return
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
                    pending = 0
                self.skip(field[1], out, ind, depth + 1)
            if pending:
                out.append(f"{ind}p += {pending}")
        elif kind == "_optional":
            self.read("v", (0, 1), out, ind)
            out.append(f"{ind}if v:")
            self.body(args[0], out, ind + "    ", depth + 1)
        elif kind == "_choice":
            self.read("v", args[0], out, ind)
            for n, (tag, (_, child)) in enumerate(sorted(args[1].items())):
                out.append(f"{ind}{'if' if n == 0 else 'elif'} v == {tag}:")
                self.body(child, out, ind + "    ", depth + 1)
            out.append(f"{ind}else:")
            out.append(f"{ind}    raise GameEventsDecodeError(f'choice tag {{v}} at bit {{p}}')")
        elif kind == "_array":
            self.read("v", args[0], out, ind)
            element = self.fixed(args[1])
            if element is not None:
                if element:
                    out.append(f"{ind}p += v * {element}")
            else:
                out.append(f"{ind}for _ in range(v):")
                out.append(f"{ind}    p = {self.function(args[1])}(data, p)")
        elif kind == "_blob":
            self.read("v", args[0], out, ind)
            out.append(f"{ind}p = ((p + 7) & -8) + 8 * v")
        elif kind == "_bitarray":
            self.read("v", args[0], out, ind)
            out.append(f"{ind}p += v")
        elif kind in ("_real32", "_real64"):  # s2protocol's bit-packed reader fails on these in Python 3
            out.append(f"{ind}raise GameEventsDecodeError('{kind} at bit ' + str(p))")
        else:
            raise GameEventsDecodeError(f"typeid {typeid} has unknown kind {kind}")

    def body(self, typeid: int, out: list[str], ind: str, depth: int) -> None:
        """``skip`` for the body of an ``if``: never empty."""
        before = len(out)
        self.skip(typeid, out, ind, depth)
        if len(out) == before:
            out.append(f"{ind}pass")

    def function(self, typeid: int) -> str:
        """The name of a function skipping one value of ``typeid`` (defined once)."""
        name = f"_t{typeid}"
        if typeid not in self.functions:
            self.functions[typeid] = []  # guards recursive types
            lines = [f"def {name}(data, p):"]
            self.skip(typeid, lines, "    ", 0)
            lines.append("    return p")
            self.functions[typeid] = lines
        return name

    def module_source(self) -> str:
        p = self.protocol
        for eventid, (typeid, _) in p.game_event_types.items():
            if self.info(typeid)[0] != "_struct":  # s2protocol sets keys on the event: it must be a dict
                raise GameEventsDecodeError(f"event {eventid} is not a struct")
        events = {e: (self.function(typeid), name) for e, (typeid, name) in p.game_event_types.items()}
        actions = sorted(e for e, (_, name) in events.items() if name in ACTION_EVENTS)
        leave = [e for e, (_, name) in events.items() if name == LEAVE_EVENT]
        walk = [
            "def walk(data, trace):",
            "    nbits = len(data) * 8",
            "    p = 0",
            "    loop = 0",
            "    counts = {}",
            "    leaves = {}",
            f"    skips = {{{', '.join(f'{e}: {fn}' for e, (fn, _) in sorted(events.items()))}}}",
            f"    actions = frozenset({actions!r})",
            f"    leave = {leave[0] if leave else -1}",
            "    try:",
            "        while p < nbits:",
            "            start = p",
        ]
        ind = " " * 12
        self.int_value(p.svaruint32_typeid, "d", walk, ind)
        walk.append(f"{ind}loop += d")
        self.int_value(p.replay_userid_typeid, "u", walk, ind)
        self.int_value(p.game_eventid_typeid, "e", walk, ind)
        walk += [
            f"{ind}skip = skips.get(e)",
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
