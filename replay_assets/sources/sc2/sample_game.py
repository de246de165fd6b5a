"""The toy 1v1 behind the synthetic StarCraft II replays: a coherent story of units, told as events.

Why a simulation rather than random events: the readers (ours, s2protocol, sc2reader) follow units
from birth to death, so the tracker stream must tell one coherent story. A tiny greedy economy runs
per player (workers mine, supply/gas/production/tech buildings go up, a research completes, army is
trained, armies skirmish mid-map, the stronger one pushes at the end) and every state change is
recorded as the event the game writes (the tracker and game events s2protocol decodes); ``sc2.py``
encodes them.

* tracker: ``SPlayerSetupEvent``; neutral minerals/geysers and start units born at loop 0;
  ``SPlayerStatsEvent`` at loop 1, every 160 loops and at the end (all 39 score values);
  ``SUnitBornEvent`` for trained units (creator tag + ability), ``SUnitInitEvent``/``SUnitDoneEvent``
  for buildings, Zerg larva -> ``Egg`` -> unit as ``SUnitTypeChangeEvent``s, ``SUnitDiedEvent`` with
  killer, ``SUpgradeEvent``, ``SUnitPositionsEvent`` every 240 loops for units damaged since the last
  one. Unit tag indexes are recycled lowest-first after a death (recycle counter + 1), as the game does.
* game events: options at loop 0, per command a selection delta then an ``SCmdEvent`` (real ability
  links of 4.10), control-group set/recall, army move/attack spam, target updates, camera moves,
  and the loser's ``SGameUserLeaveEvent`` at the last loop; APM lands around 60-180.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "MAP_SIZE",
    "RACES",
    "RACE_DATA",
    "STATS_EVERY",
    "TICK",
    "Game",
    "Player",
    "Sc2PlayerSpec",
    "Sc2StatsRow",
    "child_rng",
    "finish",
    "simulate",
]

RACES = ("Terran", "Zerg", "Protoss")
LOOPS_PER_SECOND = 22.4
STATS_EVERY = 160
POSITIONS_EVERY = 240
TICK = 8  # loops per simulation step
MAP_SIZE = (152, 136)
_FOOD_SCALE = 4096
# Unit type ids (unit links in game events) of 4.10, and the neutral resources.
_UNIT_LINKS = {
    "CommandCenter": 39, "SupplyDepot": 40, "Refinery": 41, "Barracks": 42, "BarracksTechLab": 59,
    "SCV": 67, "Marine": 70, "Marauder": 73, "Nexus": 81, "Pylon": 82, "Assimilator": 83, "Gateway": 84,
    "CyberneticsCore": 94, "Zealot": 95, "Stalker": 96, "Probe": 106, "Hatchery": 108, "Extractor": 110,
    "SpawningPool": 111, "RoachWarren": 119, "Egg": 125, "Drone": 126, "Zergling": 127, "Overlord": 128,
    "Roach": 132, "Larva": 177, "MineralField": 476, "VespeneGeyser": 478,
}  # fmt: skip
_MOVE, _ATTACK = (42, 0), (45, 0)


@dataclass(frozen=True)
class Sc2PlayerSpec:
    """One player of the generated game; ``mmr=None`` leaves ``m_scaledRating`` unrecorded."""

    name: str
    race: str
    mmr: int | None = None


@dataclass(frozen=True)
class Sc2StatsRow:
    """What one ``SPlayerStatsEvent`` says (food in supply units, not x4096)."""

    loop: int
    player_id: int
    minerals: int
    vespene: int
    food_used: float
    food_made: float
    workers: int


@dataclass(frozen=True)
class _Kind:
    """A unit or building type: its cost, build time and the command that makes it."""

    name: str
    minerals: int
    gas: int
    seconds: float
    ability: tuple[int, int]  # (ability link, command index) of 4.10
    category: str  # score category: "economy" | "technology" | "army"
    food: float = 0.0
    provides: int = 0
    built_by: str = "worker"  # "worker", "townhall", "larva" or the building type that makes it
    creator: str = ""  # m_creatorAbilityName of the born unit
    pair: bool = False  # Zerglings hatch two per egg

    @property
    def loops(self) -> int:
        return round(self.seconds * LOOPS_PER_SECOND)


@dataclass(frozen=True)
class _Race:
    """A race's build: what the greedy player makes, in priority order."""

    townhall: str
    townhall_food: int
    worker: _Kind
    supply: _Kind
    gas: _Kind
    production: _Kind
    tech: _Kind
    research: _Kind
    army: tuple[_Kind, _Kind]  # basic, and the one that needs ``tech``
    expansion: _Kind  # a second townhall at the natural
    harvest: tuple[int, int]
    consumes_worker: bool = False  # a Zerg drone becomes the building


RACE_DATA = {
    "Terran": _Race(
        townhall="CommandCenter",
        townhall_food=15,
        worker=_Kind("SCV", 50, 0, 12, (155, 0), "economy", 1, 0, "townhall", "CommandCenterTrain"),
        supply=_Kind("SupplyDepot", 100, 0, 21, (129, 1), "economy", provides=8),
        gas=_Kind("Refinery", 75, 0, 21, (129, 2), "economy"),
        production=_Kind("Barracks", 150, 0, 46, (129, 3), "technology"),
        tech=_Kind("BarracksTechLab", 50, 25, 18, (139, 0), "technology", built_by="Barracks"),
        research=_Kind("Stimpack", 100, 100, 100, (165, 0), "technology", built_by="BarracksTechLab"),
        army=(
            _Kind("Marine", 50, 0, 18, (159, 0), "army", 1, 0, "Barracks", "BarracksTrain"),
            _Kind("Marauder", 100, 25, 21, (159, 3), "army", 2, 0, "Barracks", "BarracksTrain"),
        ),
        expansion=_Kind("CommandCenter", 400, 0, 71, (129, 0), "economy", provides=15),
        harvest=(119, 0),
    ),
    "Zerg": _Race(
        townhall="Hatchery",
        townhall_food=6,
        worker=_Kind("Drone", 50, 0, 12, (193, 0), "economy", 1, 0, "larva", "LarvaTrain"),
        supply=_Kind("Overlord", 100, 0, 18, (193, 2), "economy", 0, 8, "larva", "LarvaTrain"),
        gas=_Kind("Extractor", 25, 0, 21, (183, 2), "economy"),
        production=_Kind("SpawningPool", 200, 0, 46, (183, 3), "technology"),
        tech=_Kind("RoachWarren", 150, 0, 39, (183, 13), "technology"),
        research=_Kind(
            "zerglingmovementspeed", 100, 100, 110, (190, 1), "technology", built_by="SpawningPool"
        ),
        army=(
            _Kind("Zergling", 50, 0, 17, (193, 1), "army", 1, 0, "larva", "LarvaTrain", pair=True),
            _Kind("Roach", 75, 25, 19, (193, 9), "army", 2, 0, "larva", "LarvaTrain"),
        ),
        expansion=_Kind("Hatchery", 300, 0, 71, (183, 0), "economy", provides=6),
        harvest=(184, 0),
        consumes_worker=True,
    ),
    "Protoss": _Race(
        townhall="Nexus",
        townhall_food=15,
        worker=_Kind("Probe", 50, 0, 12, (175, 0), "economy", 1, 0, "townhall", "NexusTrain"),
        supply=_Kind("Pylon", 100, 0, 18, (170, 1), "economy", provides=8),
        gas=_Kind("Assimilator", 75, 0, 21, (170, 2), "economy"),
        production=_Kind("Gateway", 150, 0, 46, (170, 3), "technology"),
        tech=_Kind("CyberneticsCore", 150, 0, 36, (170, 14), "technology"),
        research=_Kind("WarpGateResearch", 50, 50, 100, (236, 6), "technology", built_by="CyberneticsCore"),
        army=(
            _Kind("Zealot", 100, 0, 27, (172, 0), "army", 2, 0, "Gateway", "GatewayTrain"),
            _Kind("Stalker", 125, 50, 30, (172, 1), "army", 2, 0, "Gateway", "GatewayTrain"),
        ),
        expansion=_Kind("Nexus", 400, 0, 71, (170, 0), "economy", provides=15),
        harvest=(120, 0),
    ),
}


@dataclass
class _Unit:
    tag: int
    kind: str
    x: int
    y: int
    food: float = 0.0
    provides: int = 0
    cost: tuple[int, int, str] = (0, 0, "economy")  # minerals, gas, score category
    done: bool = True


class _Tags:
    """Unit tags as the game hands them out: new indexes in order, freed ones reused lowest-first.

    A freed index is reused only by a unit created at a later loop, so a reused index is never born
    before its previous owner died (events are generated slightly out of loop order within a step).
    """

    def __init__(self) -> None:
        self._next = 0
        self._free: dict[int, int] = {}  # index -> loop it was freed at
        self._recycle: dict[int, int] = {}

    def new(self, loop: int) -> tuple[int, int]:
        reusable = [i for i, freed in self._free.items() if freed < loop]
        if reusable:
            index = min(reusable)
            del self._free[index]
        else:
            index = self._next
            self._next += 1
        self._recycle[index] = self._recycle.get(index, 0) + 1
        return index, self._recycle[index]

    def free(self, index: int, loop: int) -> None:
        self._free[index] = loop


def _tag(index: int, recycle: int) -> int:
    return (index << 18) + recycle


def _split(tag: int) -> tuple[int, int]:
    return tag >> 18, tag & 0x3FFFF


@dataclass
class Player:
    """One side's economy: resources, units, what is being built, and its score bookkeeping."""

    pid: int
    spec: Sc2PlayerSpec
    race: _Race
    base: tuple[int, int]
    rng: random.Random
    minerals: float = 50.0
    gas: float = 0.0
    food_used: float = 0.0
    food_made: float = 0.0
    units: dict[int, _Unit] = field(default_factory=dict)
    busy_until: dict[int, int] = field(default_factory=dict)  # producer tag -> loop it is free again
    larva: dict[int, list[int]] = field(default_factory=dict)  # hatchery tag -> larva tags
    larva_clock: dict[int, int] = field(default_factory=dict)
    pending: dict[str, int] = field(default_factory=dict)  # kind name -> in production
    research_started: bool = False
    gas_done: int = 0
    mineral_fields: list[_Unit] = field(default_factory=list)
    score: dict[str, float] = field(default_factory=dict)
    sequence: int = 0
    selection: tuple[int, ...] = ()
    groups: dict[int, tuple[int, ...]] = field(default_factory=dict)
    worker_target: int = 20
    gas_at: int = 16
    production_at: int = 14
    tech_at: int = 2400
    expand_at: int = 3000
    max_production: int = 3

    @property
    def natural(self) -> tuple[int, int]:
        """The second base: toward the map's middle and along its long side."""
        x_sign = 1 if self.base[0] < MAP_SIZE[0] // 2 else -1
        y_sign = 1 if self.base[1] < MAP_SIZE[1] // 2 else -1
        return self.base[0] + 4 * x_sign, self.base[1] + 24 * y_sign

    def count(self, name: str, done_only: bool = False) -> int:
        alive = sum(1 for u in self.units.values() if u.kind == name and (u.done or not done_only))
        return alive if done_only else alive + self.pending.get(name, 0)

    def of_kind(self, name: str, done_only: bool = True) -> list[_Unit]:
        return [u for u in self.units.values() if u.kind == name and (u.done or not done_only)]

    def workers(self) -> list[_Unit]:
        return self.of_kind(self.race.worker.name)

    def army(self) -> list[_Unit]:
        names = {k.name for k in self.race.army}
        return [u for u in self.units.values() if u.kind in names]

    def add_score(self, key: str, amount: float) -> None:
        self.score[key] = self.score.get(key, 0.0) + amount


def _unit_fields(owner: int, unit: _Unit) -> dict[str, Any]:
    """The fields SUnitBornEvent and SUnitInitEvent share, in tag order."""
    index, recycle = _split(unit.tag)
    return {
        "m_unitTagIndex": index,
        "m_unitTagRecycle": recycle,
        "m_unitTypeName": unit.kind.encode(),
        "m_controlPlayerId": owner,
        "m_upkeepPlayerId": owner,
        "m_x": unit.x,
        "m_y": unit.y,
    }


class Game:
    """The shared clock: tracker and game events as they happen, completions scheduled for later."""

    def __init__(self, rng: random.Random, protocol: Any) -> None:
        self.rng = rng
        self.protocol = protocol
        self.tags = _Tags()
        self.tracker: list[tuple[int, int, int, dict[str, Any]]] = []  # (loop, seq, event id, fields)
        self.game: list[tuple[int, int, int, int, dict[str, Any]]] = []  # (loop, seq, user, id, fields)
        self.messages: list[tuple[int, int, int, int, dict[str, Any]]] = []
        self._seq = 0
        self._due: list[tuple[int, int, Callable[[int], None]]] = []
        self.damaged: set[int] = set()
        self.players: list[Player] = []
        self.stats: list[Sc2StatsRow] = []
        self.born: dict[int, int] = {}
        self.died: dict[int, int] = {}
        self.end = 0  # the last game loop
        tracker_stats = protocol.typeinfos[protocol.tracker_event_types[0][0]][1][0]
        stats_typeid = next(t for name, t, _ in tracker_stats if name == "m_stats")
        self.stats_names = [f[0] for f in protocol.typeinfos[stats_typeid][1][0]]

    def seq(self) -> int:
        self._seq += 1
        return self._seq

    def track(self, loop: int, eventid: int, fields: dict[str, Any]) -> None:
        self.tracker.append((loop, self.seq(), eventid, fields))

    def action(self, loop: int, player: Player, eventid: int, fields: dict[str, Any]) -> None:
        self.game.append((loop, self.seq(), player.pid - 1, eventid, fields))

    def at(self, loop: int, callback: Callable[[int], None]) -> None:
        heapq.heappush(self._due, (loop, self.seq(), callback))

    def run_due(self, until: int) -> None:
        while self._due and self._due[0][0] <= until:
            loop, _, callback = heapq.heappop(self._due)
            callback(loop)

    # --- tracker events -------------------------------------------------------------------------

    def born_event(self, loop: int, owner: int, unit: _Unit, creator: tuple[int, str] | None = None) -> None:
        creator_index, creator_recycle = _split(creator[0]) if creator else (None, None)
        fields = {
            **_unit_fields(owner, unit),
            "m_creatorUnitTagIndex": creator_index,
            "m_creatorUnitTagRecycle": creator_recycle,
            "m_creatorAbilityName": creator[1].encode() if creator else None,
        }
        self.track(loop, 1, fields)
        if owner:
            self.born[owner] = self.born.get(owner, 0) + 1

    def init_event(self, loop: int, owner: int, unit: _Unit) -> None:
        self.track(loop, 6, _unit_fields(owner, unit))
        self.born[owner] = self.born.get(owner, 0) + 1

    def tag_event(self, loop: int, eventid: int, tag: int, **extra: Any) -> None:
        index, recycle = _split(tag)
        self.track(loop, eventid, {"m_unitTagIndex": index, "m_unitTagRecycle": recycle, **extra})

    def new_unit(self, loop: int, player: Player, kind: str, x: int, y: int, **attrs: Any) -> _Unit:
        unit = _Unit(_tag(*self.tags.new(loop)), kind, x, y, **attrs)
        player.units[unit.tag] = unit
        return unit

    def kill(self, loop: int, player: Player, unit: _Unit, killer: tuple[Player, _Unit] | None) -> None:
        """A unit dies: died event, supply and score bookkeeping, its tag index freed for reuse."""
        del player.units[unit.tag]
        index, recycle = _split(unit.tag)
        killer_index, killer_recycle = _split(killer[1].tag) if killer else (None, None)
        self.track(
            loop,
            2,
            {
                "m_unitTagIndex": index,
                "m_unitTagRecycle": recycle,
                "m_killerPlayerId": killer[0].pid if killer else None,
                "m_x": unit.x,
                "m_y": unit.y,
                "m_killerUnitTagIndex": killer_index,
                "m_killerUnitTagRecycle": killer_recycle,
            },
        )
        self.tags.free(index, loop)
        self.damaged.discard(unit.tag)
        self.died[player.pid] = self.died.get(player.pid, 0) + 1
        player.food_used -= unit.food
        if unit.done:
            player.food_made -= unit.provides
        minerals, gas, category = unit.cost
        player.add_score(f"m_current_{category}", -minerals)
        player.add_score(f"v_current_{category}", -gas)
        if killer:
            player.add_score(f"m_lost_{category}", minerals)
            player.add_score(f"v_lost_{category}", gas)
            killer[0].add_score(f"m_killed_{category}", minerals)
            killer[0].add_score(f"v_killed_{category}", gas)


def child_rng(rng: random.Random | np.random.Generator) -> random.Random:
    """One ``random.Random`` drawn from either kind of seed, so the rest of the code has one API."""
    if isinstance(rng, np.random.Generator):
        return random.Random(int(rng.integers(0, 2**63)))
    return random.Random(rng.getrandbits(64))


def _near(rng: random.Random, point: tuple[int, int], spread: int) -> tuple[int, int]:
    x = min(max(point[0] + rng.randint(-spread, spread), 1), MAP_SIZE[0] - 2)
    y = min(max(point[1] + rng.randint(-spread, spread), 1), MAP_SIZE[1] - 2)
    return x, y


# --- setup --------------------------------------------------------------------------------------


def _setup(game: Game) -> None:
    """Loop 0: player setup, neutral resources at both mains and naturals, start units."""
    for p in game.players:
        game.track(0, 9, {"m_playerId": p.pid, "m_type": 1, "m_userId": p.pid - 1, "m_slotId": p.pid - 1})
    for p in game.players:
        sign = 1 if p.base[0] < MAP_SIZE[0] // 2 else -1
        for base in (p.base, p.natural):
            for dx, dy in ((-7, 0), (-7, 2), (-6, -2), (-6, 4), (-5, -4), (-5, 6), (-4, -5), (-4, 7)):
                mineral = _Unit(_tag(*game.tags.new(0)), "MineralField", base[0] - sign * dx, base[1] + dy)
                game.born_event(0, 0, mineral)
                if base == p.base:
                    p.mineral_fields.append(mineral)
            for dx, dy in ((3, -7), (-3, 7)):
                geyser = _Unit(_tag(*game.tags.new(0)), "VespeneGeyser", base[0] + dx, base[1] + dy)
                game.born_event(0, 0, geyser)
    for p in game.players:
        _start_units(game, p)


def _start_units(game: Game, p: Player) -> None:
    race = p.race
    hall = game.new_unit(0, p, race.townhall, *p.base, provides=race.townhall_food)
    hall.cost = (race.expansion.minerals, 0, "economy")
    game.born_event(0, p.pid, hall)
    p.food_made += race.townhall_food
    p.add_score("m_current_economy", race.expansion.minerals)
    for _ in range(12):
        worker = game.new_unit(0, p, race.worker.name, *_near(p.rng, p.base, 3), food=1)
        worker.cost = (50, 0, "economy")
        game.born_event(0, p.pid, worker)
        p.food_used += 1
        p.add_score("m_current_economy", 50)
    if race.consumes_worker:
        overlord = game.new_unit(0, p, "Overlord", *_near(p.rng, p.base, 4), provides=8)
        overlord.cost = (100, 0, "economy")
        game.born_event(0, p.pid, overlord)
        p.food_made += 8
        p.add_score("m_current_economy", 100)
        p.larva[hall.tag] = []
        p.larva_clock[hall.tag] = 0
        for _ in range(3):
            _spawn_larva(game, p, hall, 0)


def _spawn_larva(game: Game, p: Player, hall: _Unit, loop: int) -> None:
    larva = game.new_unit(loop, p, "Larva", *_near(p.rng, (hall.x, hall.y - 3), 1))
    game.born_event(loop, p.pid, larva, (hall.tag, ""))
    p.larva[hall.tag].append(larva.tag)


# --- production ---------------------------------------------------------------------------------


def _pay(p: Player, kind: _Kind) -> bool:
    if p.minerals < kind.minerals or p.gas < kind.gas:
        return False
    p.minerals -= kind.minerals
    p.gas -= kind.gas
    p.add_score(f"m_progress_{kind.category}", kind.minerals)
    p.add_score(f"v_progress_{kind.category}", kind.gas)
    return True


def _finish_score(p: Player, kind: _Kind) -> None:
    p.add_score(f"m_progress_{kind.category}", -kind.minerals)
    p.add_score(f"v_progress_{kind.category}", -kind.gas)
    p.add_score(f"m_current_{kind.category}", kind.minerals)
    p.add_score(f"v_current_{kind.category}", kind.gas)


def _idle(p: Player, name: str, loop: int) -> _Unit | None:
    for unit in p.of_kind(name):
        if p.busy_until.get(unit.tag, -1) <= loop:
            return unit
    return None


def _free_larva(p: Player) -> tuple[int, int] | None:
    for hall, larvae in p.larva.items():
        if hall in p.units and larvae:
            return hall, larvae[0]
    return None


def _can_make(p: Player, kind: _Kind, loop: int) -> bool:
    if kind.built_by == "larva":
        return _free_larva(p) is not None
    if kind.built_by == "worker":
        return bool(p.workers())
    producer = p.race.townhall if kind.built_by == "townhall" else kind.built_by
    return _idle(p, producer, loop) is not None


def _make(game: Game, p: Player, kind: _Kind, loop: int) -> bool:
    """Start ``kind`` if affordable and a producer is free: the command, then its tracker story."""
    if not _can_make(p, kind, loop) or not _pay(p, kind):
        return False
    p.pending[kind.name] = p.pending.get(kind.name, 0) + 1
    p.food_used += kind.food
    if kind.built_by == "larva":
        _morph_larva(game, p, kind, loop)
    elif kind.built_by == "worker":
        _construct(game, p, kind, loop)
    elif kind is p.race.research:
        _research(game, p, kind, loop)
    else:
        _train(game, p, kind, loop)
    return True


def _command(
    game: Game,
    p: Player,
    loop: int,
    selected: list[_Unit],
    ability: tuple[int, int],
    target: dict[str, Any],
) -> None:
    """A selection change (when needed) then the command: the two game events every order costs."""
    tags = tuple(u.tag for u in selected)
    if tags and tags != p.selection:
        _select(game, p, loop, selected)
    p.sequence += 1
    game.action(
        loop,
        p,
        27,
        {
            "m_cmdFlags": 256,
            "m_abil": {"m_abilLink": ability[0], "m_abilCmdIndex": ability[1], "m_abilCmdData": None},
            "m_data": target,
            "m_sequence": p.sequence,
            "m_otherUnit": None,
            "m_unitGroup": None,
        },
    )


def _select(game: Game, p: Player, loop: int, units: list[_Unit]) -> None:
    by_kind: dict[str, int] = {}
    for u in units:
        by_kind[u.kind] = by_kind.get(u.kind, 0) + 1
    game.action(
        loop,
        p,
        28,
        {
            "m_controlGroupId": 10,
            "m_delta": {
                "m_subgroupIndex": 0,
                "m_removeMask": {"ZeroIndices": []},
                "m_addSubgroups": [
                    {
                        "m_unitLink": _UNIT_LINKS.get(kind, 0),
                        "m_subgroupPriority": 20,
                        "m_intraSubgroupPriority": 0,
                        "m_count": count,
                    }
                    for kind, count in by_kind.items()
                ],
                "m_addUnitTags": [u.tag for u in units],
            },
        },
    )
    p.selection = tuple(u.tag for u in units)


def _point(x: float, y: float) -> dict[str, Any]:
    return {"TargetPoint": {"x": int(x * 4096), "y": int(y * 4096), "z": 40960}}


def _target_unit(unit: _Unit, owner: int) -> dict[str, Any]:
    return {
        "TargetUnit": {
            "m_targetUnitFlags": 111,
            "m_timer": 0,
            "m_tag": unit.tag,
            "m_snapshotUnitLink": _UNIT_LINKS.get(unit.kind, 0),
            "m_snapshotControlPlayerId": owner,
            "m_snapshotUpkeepPlayerId": owner,
            "m_snapshotPoint": {"x": unit.x * 4096, "y": unit.y * 4096, "z": 40960},
        }
    }


def _morph_larva(game: Game, p: Player, kind: _Kind, loop: int) -> None:
    free = _free_larva(p)
    assert free is not None  # _can_make checked
    hall, larva_tag = free
    p.larva[hall].remove(larva_tag)
    egg = p.units[larva_tag]
    _command(game, p, loop, [egg], kind.ability, {"None": None})
    egg.kind = "Egg"
    game.tag_event(loop, 4, egg.tag, m_unitTypeName=b"Egg")

    def hatch(done: int) -> None:
        p.pending[kind.name] -= 1
        _finish_score(p, kind)
        for i in range(2 if kind.pair else 1):
            unit = game.new_unit(
                done, p, kind.name, egg.x + i, egg.y, food=kind.food / (2 if kind.pair else 1)
            )
            unit.cost = (kind.minerals // (2 if kind.pair else 1), kind.gas, kind.category)
            unit.provides = kind.provides
            game.born_event(done, p.pid, unit, (egg.tag, kind.creator))
        p.food_made += kind.provides
        egg.kind = "Larva"
        game.tag_event(done, 4, egg.tag, m_unitTypeName=b"Larva")
        game.kill(done, p, egg, None)

    game.at(loop + kind.loops, hatch)


def _construct(game: Game, p: Player, kind: _Kind, loop: int) -> None:
    worker = p.rng.choice(p.workers())
    toward_middle = 1 if p.base[0] < MAP_SIZE[0] // 2 else -1
    spot = _near(p.rng, (p.base[0] + 6 * toward_middle, p.base[1]), 6)
    if kind is p.race.gas:
        first = not p.of_kind(kind.name, done_only=False)
        spot = (p.base[0] + (3 if first else -3), p.base[1] + (-7 if first else 7))
    elif kind is p.race.expansion:
        spot = p.natural
    _command(game, p, loop, [worker], kind.ability, _point(*spot))
    if p.race.consumes_worker:
        game.kill(loop, p, worker, None)
    building = game.new_unit(loop, p, kind.name, *spot, provides=kind.provides, done=False)
    building.cost = (kind.minerals, kind.gas, kind.category)
    game.init_event(loop, p.pid, building)
    p.pending[kind.name] -= 1  # now a (not done) unit rather than pending

    def finish(done: int) -> None:
        if building.tag not in p.units:
            return
        building.done = True
        _finish_score(p, kind)
        p.food_made += kind.provides
        game.tag_event(done, 7, building.tag)
        if kind is p.race.gas:
            p.gas_done += 1
            miners = p.rng.sample(p.workers(), min(3, len(p.workers())))
            order_at = done + p.rng.randint(8, 40)
            if miners and order_at <= game.end:
                _command(game, p, order_at, miners, p.race.harvest, _target_unit(building, p.pid))
        if kind is p.race.production and not p.groups:
            p.groups[5] = (building.tag,)
        if kind is p.race.expansion and p.race.consumes_worker:
            p.larva[building.tag] = []
            p.larva_clock[building.tag] = done

    game.at(loop + kind.loops, finish)


def _train(game: Game, p: Player, kind: _Kind, loop: int) -> None:
    producer_name = p.race.townhall if kind.built_by == "townhall" else kind.built_by
    producer = _idle(p, producer_name, loop)
    assert producer is not None
    p.busy_until[producer.tag] = loop + kind.loops
    _command(game, p, loop, [producer], kind.ability, {"None": None})
    if kind is p.race.tech:  # an add-on: built by its production building, like a building
        addon = game.new_unit(loop, p, kind.name, producer.x + 3, producer.y, done=False)
        addon.cost = (kind.minerals, kind.gas, kind.category)
        game.init_event(loop, p.pid, addon)
        p.pending[kind.name] -= 1

        def attach(done: int) -> None:
            addon.done = True
            _finish_score(p, kind)
            game.tag_event(done, 7, addon.tag)

        game.at(loop + kind.loops, attach)
        return

    def born(done: int) -> None:
        p.pending[kind.name] -= 1
        _finish_score(p, kind)
        x, y = _near(p.rng, (producer.x, producer.y + 2), 1)
        unit = game.new_unit(done, p, kind.name, x, y, food=kind.food)
        unit.cost = (kind.minerals, kind.gas, kind.category)
        game.born_event(done, p.pid, unit, (producer.tag, kind.creator))

    game.at(loop + kind.loops, born)


def _research(game: Game, p: Player, kind: _Kind, loop: int) -> None:
    lab = _idle(p, kind.built_by, loop)
    assert lab is not None
    p.busy_until[lab.tag] = loop + kind.loops
    p.research_started = True
    _command(game, p, loop, [lab], kind.ability, {"None": None})

    def complete(done: int) -> None:
        p.pending[kind.name] -= 1
        _finish_score(p, kind)
        game.track(done, 5, {"m_playerId": p.pid, "m_upgradeTypeName": kind.name.encode(), "m_count": 1})

    game.at(loop + kind.loops, complete)


# --- decisions ----------------------------------------------------------------------------------


def _decide(game: Game, p: Player, loop: int) -> None:
    """At most one order per step, by priority; an unaffordable priority saves money for itself."""
    race = p.race
    producers = p.count(race.production.name, done_only=True) + 1
    coming = 8 * (p.pending.get(race.supply.name, 0) + _building(p, race.supply.name))
    food = p.food_used
    wants = (
        (race.supply, p.food_made + coming < min(200, food + 2 + 2 * producers)),
        (race.gas, food >= p.gas_at and p.count(race.gas.name) < 1 + (food >= 30)),
        (race.production, food >= p.production_at and p.count(race.production.name) == 0),
        (
            race.tech,
            loop >= p.tech_at and p.count(race.production.name, True) > 0 and not p.count(race.tech.name),
        ),
        (race.research, p.count(race.research.built_by, True) > 0 and not p.research_started),
        (race.expansion, loop >= p.expand_at and p.count(race.townhall) < 2),
        (race.worker, p.count(race.worker.name) < p.worker_target + 3 * p.gas_done),
        (
            race.production,
            p.count(race.production.name) < p.max_production
            and p.minerals > 350
            and not race.consumes_worker,
        ),
    )
    for kind, wanted in wants:
        if wanted and _can_make(p, kind, loop):
            _make(game, p, kind, loop)
            return
    if p.count(race.production.name, True) == 0:
        return
    advanced, basic = race.army[1], race.army[0]
    kind = (
        advanced
        if p.count(race.tech.name, True) and p.gas >= advanced.gas and p.rng.random() < 0.6
        else basic
    )
    _make(game, p, kind, loop)


def _building(p: Player, name: str) -> int:
    return sum(1 for u in p.units.values() if u.kind == name and not u.done)


def _grow_larva(game: Game, p: Player, loop: int) -> None:
    """Each hatchery makes a larva every 11 s while it has fewer than three."""
    for hall_tag, larvae in p.larva.items():
        hall = p.units.get(hall_tag)
        if hall is None:
            continue
        if len(larvae) >= 3:
            p.larva_clock[hall_tag] = loop
        elif loop - p.larva_clock[hall_tag] >= 246:
            p.larva_clock[hall_tag] = loop
            _spawn_larva(game, p, hall, loop)


def _mine(p: Player) -> tuple[float, float]:
    """Minerals and gas per loop: ~55/min per mineral worker (less past 16), ~160/min per geyser."""
    workers = len(p.workers())
    on_gas = min(3 * p.gas_done, max(workers - 6, 0))
    on_minerals = workers - on_gas
    rate = 55 / 60 / LOOPS_PER_SECOND
    minerals = rate * min(on_minerals, 16) + 0.5 * rate * max(min(on_minerals, 24) - 16, 0)
    gas = 160 / 60 / LOOPS_PER_SECOND * on_gas / 3
    return minerals, gas


# --- fighting -----------------------------------------------------------------------------------


@dataclass
class _Fight:
    point: tuple[int, int]
    until: int
    at_base_of: int | None = None  # the final push: the attacked player's id


def _fight_step(game: Game, fight: _Fight, loop: int) -> None:
    """One step of a battle: each side's supply deals damage; a unit dies when its share is used up."""
    a, b = game.players
    sides = [
        (a, _engaged(a, fight), b),
        (b, _engaged(b, fight), a),
    ]
    strength = {p.pid: sum(max(u.food, 0.5) for u in units) for p, units, _ in sides}
    for p, units, enemy in sides:
        if not units:
            continue
        enemy_units = _engaged(enemy, fight)
        if not enemy_units:
            continue
        edge = 1.0 if fight.at_base_of is None else (1.5 if p.pid == fight.at_base_of else 0.5)
        hits = strength[enemy.pid] * 0.05 * edge * game.rng.uniform(0.4, 1.6)
        for unit in game.rng.sample(units, min(len(units), 1 + int(hits))):
            unit.x, unit.y = _near(game.rng, fight.point, 4)
            game.damaged.add(unit.tag)
        for shooter in game.rng.sample(enemy_units, min(len(enemy_units), 3)):
            shooter.x, shooter.y = _near(game.rng, fight.point, 5)
            game.damaged.add(shooter.tag)
        while hits >= 1 and units:
            victim = game.rng.choice(units)
            hits -= max(victim.food, 0.5) * 2
            units.remove(victim)
            when = min(loop + game.rng.randint(0, TICK - 1), game.end)
            game.kill(when, p, victim, (enemy, game.rng.choice(enemy_units)))


def _engaged(p: Player, fight: _Fight) -> list[_Unit]:
    units = p.army()
    if fight.at_base_of == p.pid:
        units += [u for u in p.workers()] + p.of_kind(p.race.supply.name)
    return units


def _army_supply(p: Player) -> float:
    return sum(u.food for u in p.army())


# --- game events besides orders -----------------------------------------------------------------


def _camera(game: Game, p: Player, loop: int, fight: _Fight | None) -> None:
    """Camera moves: the most frequent game event, not an action for APM."""
    target = fight.point if fight and p.rng.random() < 0.6 else _near(p.rng, p.base, 20)
    game.action(
        loop,
        p,
        49,
        {
            "m_target": {"x": target[0] * 256, "y": target[1] * 256},
            "m_distance": None,
            "m_pitch": None,
            "m_yaw": None,
            "m_reason": None,
            "m_follow": False,
        },
    )


def _chatter(game: Game, p: Player, loop: int, fight: _Fight | None) -> None:
    """The clicks between orders: control-group recalls, army moves and re-targets (APM)."""
    rng = p.rng
    roll = rng.random()
    army = p.army()
    if roll < 0.3 and p.groups:
        group = rng.choice(sorted(p.groups))
        alive = tuple(t for t in p.groups[group] if t in p.units)
        p.groups[group] = alive
        game.action(
            loop, p, 29, {"m_controlGroupIndex": group, "m_controlGroupUpdate": 2, "m_mask": {"None": None}}
        )
        p.selection = alive
    elif army and roll < 0.75:
        ability = _ATTACK if fight else rng.choice((_MOVE, _ATTACK))
        spot = _near(rng, fight.point if fight else p.base, 8)
        _command(game, p, loop, army, ability, _point(*spot))
        if 1 not in p.groups or rng.random() < 0.1:
            p.groups[1] = tuple(u.tag for u in army)
            game.action(
                loop, p, 29, {"m_controlGroupIndex": 1, "m_controlGroupUpdate": 0, "m_mask": {"None": None}}
            )
    elif army:
        spot = _near(rng, fight.point if fight else p.base, 8)
        game.action(loop, p, 104, {"m_target": {"x": spot[0] * 4096, "y": spot[1] * 4096, "z": 40960}})
    else:
        workers = p.workers()
        if workers:
            miner, mineral = rng.choice(workers), rng.choice(p.mineral_fields)
            _command(game, p, loop, [miner], p.race.harvest, _target_unit(mineral, 0))


# --- the game loop ------------------------------------------------------------------------------


def _stats_event(game: Game, p: Player, loop: int) -> None:
    s = p.score
    minerals_rate, gas_rate = _mine(p)
    per_minute = 60 * LOOPS_PER_SECOND
    values = [
        int(p.minerals), int(p.gas), int(minerals_rate * per_minute), int(gas_rate * per_minute),
        len(p.workers()),
    ]  # fmt: skip
    for prefix in (
        "m_progress",
        "v_progress",
        "m_current",
        "v_current",
        "m_lost",
        "v_lost",
        "m_killed",
        "v_killed",
    ):
        values += [int(s.get(f"{prefix}_{c}", 0)) for c in ("army", "economy", "technology")]
    values += [int(p.food_used * _FOOD_SCALE), int(p.food_made * _FOOD_SCALE)]
    values += [int(s.get("m_current_army", 0)), int(s.get("v_current_army", 0))]
    values += [0] * 6  # friendly fire
    game.track(loop, 0, {"m_playerId": p.pid, "m_stats": dict(zip(game.stats_names, values, strict=True))})
    game.stats.append(Sc2StatsRow(loop, p.pid, values[0], values[1], p.food_used, p.food_made, values[4]))


def _positions_event(game: Game, loop: int) -> None:
    by_index = {}
    for p in game.players:
        for tag in game.damaged:
            unit = p.units.get(tag)
            if unit is not None:
                by_index[tag >> 18] = unit
    game.damaged.clear()
    if not by_index:
        return
    indexes = sorted(by_index)[:255]
    items: list[int] = []
    previous = indexes[0]
    for index in indexes:
        unit = by_index[index]
        items += [index - previous, unit.x, unit.y]
        previous = index
    game.track(loop, 8, {"m_firstUnitIndex": indexes[0], "m_items": items})


@dataclass
class _Schedule:
    """When the next periodic things happen, and the battle under way."""

    next_stats: int = 1
    next_positions: int = POSITIONS_EVERY
    next_fight: int = 0
    push_at: int = 0
    fight: _Fight | None = None
    attacker: int = 0  # who pushed at the end (0: nobody yet)
    clicks_at: dict[int, int] = field(default_factory=dict)
    cameras_at: dict[int, int] = field(default_factory=dict)
    click_rate: dict[int, float] = field(default_factory=dict)  # extra clicks per loop


def simulate(game: Game, game_loops: int) -> int:
    """Run the game to ``game_loops``; returns the winner's player id."""
    rng = game.rng
    game.end = game_loops
    _setup(game)
    plan = _Schedule(
        next_fight=rng.randint(game_loops // 3, game_loops // 2),
        push_at=game_loops - rng.randint(game_loops // 10, game_loops // 6),
        clicks_at={p.pid: rng.randint(10, 40) for p in game.players},
        cameras_at={p.pid: rng.randint(0, 20) for p in game.players},
        click_rate={p.pid: rng.uniform(30, 100) / 60 / LOOPS_PER_SECOND for p in game.players},
    )
    for loop in range(0, game_loops, TICK):
        game.run_due(loop)
        while plan.next_stats <= loop:
            for p in game.players:
                _stats_event(game, p, plan.next_stats)
            plan.next_stats = STATS_EVERY if plan.next_stats == 1 else plan.next_stats + STATS_EVERY
        for p in game.players:
            _player_step(game, p, plan, loop)
        _battle_step(game, plan, loop)
        while plan.next_positions <= loop:
            _positions_event(game, plan.next_positions)
            plan.next_positions += POSITIONS_EVERY
    return _winner(game, plan)


def _player_step(game: Game, p: Player, plan: _Schedule, loop: int) -> None:
    """Mine, grow larva, give at most one order, and click/move the camera as a human would."""
    rng, end = game.rng, game.end
    minerals, gas = _mine(p)
    p.minerals += minerals * TICK
    p.gas += gas * TICK
    _grow_larva(game, p, loop)
    _decide(game, p, min(loop + rng.randint(0, TICK - 1), end))
    while plan.clicks_at[p.pid] < min(loop + TICK, end):
        _chatter(game, p, max(plan.clicks_at[p.pid], loop), plan.fight)
        plan.clicks_at[p.pid] += max(1, int(rng.expovariate(plan.click_rate[p.pid])))
    while plan.cameras_at[p.pid] < min(loop + TICK, end):
        _camera(game, p, max(plan.cameras_at[p.pid], loop), plan.fight)
        plan.cameras_at[p.pid] += rng.randint(6, 30)


def _battle_step(game: Game, plan: _Schedule, loop: int) -> None:
    """Start a mid-map skirmish or the final push when due, and fight the one under way."""
    rng = game.rng
    if plan.fight is None and loop >= plan.push_at and not plan.attacker:
        a, b = game.players
        strong = a if (_army_supply(a), rng.random()) > (_army_supply(b), rng.random()) else b
        weak = b if strong is a else a
        plan.attacker = strong.pid
        plan.fight = _Fight(weak.base, game.end, at_base_of=weak.pid)
    elif plan.fight is None and loop >= plan.next_fight and all(len(p.army()) >= 3 for p in game.players):
        middle = ((game.players[0].base[0] + game.players[1].base[0]) // 2, MAP_SIZE[1] // 2)
        plan.fight = _Fight(_near(rng, middle, 12), loop + rng.randint(120, 360))
    if plan.fight is not None:
        _fight_step(game, plan.fight, loop)
        if loop >= plan.fight.until:
            plan.fight = None
            plan.next_fight = loop + rng.randint(600, 1400)


def _winner(game: Game, plan: _Schedule) -> int:
    """The pusher wins unless its army was wiped out and the defender still has one."""
    by_army = max(game.players, key=lambda p: (_army_supply(p), p.pid == 1))
    if not plan.attacker:
        return by_army.pid
    attacker = next(p for p in game.players if p.pid == plan.attacker)
    return plan.attacker if attacker.army() or by_army is attacker else by_army.pid


def finish(game: Game, game_loops: int, winner: int) -> None:
    """The loser types gg and leaves at the last loop; both get their end-of-game stats."""
    loser = next(p for p in game.players if p.pid != winner)
    game.messages.append(
        (game_loops - 12, game.seq(), loser.pid - 1, 0, {"m_recipient": 0, "m_string": b"gg"})
    )
    game.action(game_loops, loser, 101, {"m_leaveReason": 0})
    for p in sorted(game.players, key=lambda p: p.pid != loser.pid):
        _stats_event(game, p, game_loops)


# --- files --------------------------------------------------------------------------------------
