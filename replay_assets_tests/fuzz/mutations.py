"""Seeded damage: byte-level (truncation, flips, garbage, zeroed runs) on the file as stored, and
structure edits inside the container (a value swapped for a hostile one, a key deleted, a list cut or
repeated, a member's bytes damaged) packed again. The same seed always gives the same cases."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from replay_assets_tests.fuzz.targets import Seed, Target

# Values a hostile or buggy writer puts where a reader expects something sane.
HOSTILE: list[Any] = [
    -1,
    0,
    2**31,
    -(2**31) - 1,
    2**63,
    2**64 + 5,
    -(2**63) - 1,
    10**30,
    1e308,
    -1e308,
    float("nan"),
    float("inf"),
    True,
    None,
    "",
    "x" * 300,
    [],
    {},
    [None],
    [[1, 2], [3]],
    {"": None},
]


@dataclass(frozen=True)
class Case:
    target: str
    seed: str  # the seed file's name
    mutation: str  # what was done, to reproduce and to group by
    name: str  # the name the damaged file is read under
    data: bytes


def byte_mutations(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    kind = rng.choice(["truncate", "flip", "garbage", "zero"])
    if not data:
        return "empty", b""
    if kind == "truncate":
        cut = rng.randrange(len(data))
        return f"truncate@{cut}", data[:cut]
    damaged = bytearray(data)
    if kind == "flip":
        spots = [rng.randrange(len(data)) for _ in range(rng.randint(1, 8))]
        for spot in spots:
            damaged[spot] ^= rng.randint(1, 255)
        return f"flip@{','.join(map(str, spots))}", bytes(damaged)
    start, length = rng.randrange(len(data)), rng.randint(4, 256)
    fill = bytes(rng.getrandbits(8) for _ in range(length)) if kind == "garbage" else bytes(length)
    damaged[start : start + length] = fill[: len(damaged) - start]
    return f"{kind}@{start}+{length}", bytes(damaged)


def _children(node: Any) -> list[Any]:
    if isinstance(node, dict):
        return list(node)
    if isinstance(node, list | tuple):
        return list(range(len(node)))
    return []


def structure_edit(doc: Any, rng: random.Random) -> tuple[str, Any]:
    """One edit at a random depth of ``doc`` (a copy along the path, the rest shared)."""
    path: list[Any] = []
    node = doc
    while (keys := _children(node)) and (not path or rng.random() < 0.8):
        key = rng.choice(keys)
        path.append(key)
        node = node[key]
    if not path:
        return "none", doc
    return _edited(doc, path, rng)


def _edited(doc: Any, path: list[Any], rng: random.Random) -> tuple[str, Any]:
    parents = [doc]
    for step in path[:-1]:
        parents.append(parents[-1][step])
    parent, key = parents[-1], path[-1]
    value = parent[key]
    label = "/".join(map(str, path))[:120]
    choice = rng.random()
    if isinstance(value, bytes | bytearray):
        what, replacement = byte_mutations(bytes(value), rng)
        label = f"{label}:{what}"
    elif choice < 0.15 and isinstance(parent, dict):
        replacement, label = _DELETED, f"{label}:deleted"
    elif choice < 0.3 and isinstance(value, list) and value:
        cut = rng.randrange(len(value))
        replacement = value[:cut] if rng.random() < 0.5 else value + value[cut:] * rng.randint(1, 3)
        label = f"{label}:resized"
    else:
        replacement = rng.choice(HOSTILE)
        label = f"{label}:={str(replacement)[:20]}"
    for step, above in zip(reversed(path), reversed(parents), strict=True):
        replacement = _with(above, step, replacement)
    return label, replacement


_DELETED = object()


def _with(node: Any, key: Any, value: Any) -> Any:
    """A shallow copy of ``node`` (dict, list or tuple) with ``key`` set to ``value`` (or deleted)."""
    if isinstance(node, dict):
        copied = dict(node)
        if value is _DELETED:
            del copied[key]
        else:
            copied[key] = value
        return copied
    items = list(node)
    items[key] = value
    return type(node)(items) if isinstance(node, tuple) else items


def cases(target: Target, seeds: list[Seed], per_seed: int, seed: int) -> Iterator[Case]:
    """``per_seed`` damaged versions of each seed (half byte-level, half structure edits when the
    target can open its container), then the target's bombs."""
    for file in seeds:
        rng = random.Random(f"{seed}:{target.name}:{file.name}")
        document = None
        if target.codec is not None:
            try:
                document = target.codec.unpack(file.data)
            except Exception:  # a seed the codec cannot open gets byte-level damage only
                document = None
        for i in range(per_seed):
            if document is not None and i % 2:
                label, edited = structure_edit(document, rng)
                try:
                    data = target.codec.pack(edited, file.data)
                except (TypeError, ValueError, OverflowError, RecursionError):  # not encodable: skip
                    continue
                yield Case(target.name, file.name, f"edit {label}", file.name, data)
            else:
                label, data = byte_mutations(file.data, rng)
                yield Case(target.name, file.name, label, file.name, data)
    if target.bombs is not None:
        for name, data in target.bombs():
            yield Case(target.name, "-", "hostile", name, data)
