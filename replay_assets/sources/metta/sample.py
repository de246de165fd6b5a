"""Synthetic MettaScope replays (v1, v2, v3) shaped like the real files in ``shared/data/metta``.

The readers must be exercised on every quirk real replays have (change-only series, series that
start late, constant ``[x, y]`` locations, a 3-change location series, constant inventories),
without shipping third-party files, so this module simulates a tiny grid world and writes it the
way the MettaScope writers do. Output is deterministic for a given seed (``random.Random``,
``gzip`` with ``mtime=0``, fixed key order, ``json.dumps`` default separators like the real files).
"""

from __future__ import annotations

import gzip
import json
import random
import zlib
from typing import Any, Literal

__all__ = ["V1_ACTION_NAMES", "V2_ACTION_NAMES", "V2_ITEM_NAMES", "V2_TYPE_NAMES", "metta_replay_bytes"]

Compression = Literal["zlib", "gzip", "none"]
TypeField = Literal["type_name", "type_id"]

# v1 vocabulary, copied from heart_collector / the_4_maze.
V1_ACTION_NAMES = [
    "put_recipe_items", "get_output", "noop", "move", "rotate", "attack", "attack_nearest", "swap",
    "change_color",
]  # fmt: skip
V1_OBJECT_TYPES = [
    "agent", "wall", "mine", "generator", "altar", "armory", "lasery", "lab", "factory", "temple",
    "converter",
]  # fmt: skip
V1_ITEMS = ["ore.red", "ore.blue", "ore.green", "battery", "heart", "armor", "laser", "blueprint"]
_V1_NOOP, _V1_GET_OUTPUT, _V1_MOVE, _V1_ROTATE = 2, 1, 3, 4
_V1_WALL, _V1_ALTAR = 1, 4
# v1 orientation: 0 up (r-1), 1 down (r+1), 2 left (c-1), 3 right (c+1) -- checked on heart_collector.
_V1_DIRS = {0: (-1, 0), 1: (1, 0), 2: (0, -1), 3: (0, 1)}

# v2/v3 vocabulary, a subset of dinky7 / early_cvc (cogs-vs-clips).
V2_ACTION_NAMES = [
    "noop", "move_north", "move_south", "move_west", "move_east",
    "change_vibe_default", "change_vibe_charger", "change_vibe_carbon", "change_vibe_heart",
]  # fmt: skip
V2_ITEM_NAMES = ["energy", "carbon", "oxygen", "germanium", "silicon", "heart"]
V2_TYPE_NAMES = ["agent", "assembler", "carbon_extractor", "charger", "chest", "oxygen_extractor", "wall"]
_ENERGY, _CARBON, _OXYGEN, _HEART = 0, 1, 2, 5
_NOOP, _MOVE_WEST = 0, 3
_FIRST_VIBE_ACTION = 5
# v2 move_north/south/west/east as (dx, dy) on [x, y] locations; x is the column.
_V2_MOVES = {1: (0, -1), 2: (0, 1), 3: (-1, 0), 4: (1, 0)}
_DEPOSIT_REWARD = 0.25
_FREEZE_DURATION = 10
_ENERGY_CAP = 100
_NO_DEFAULT: Any = object()


def metta_replay_bytes(
    *,
    version: int,
    compression: Compression,
    seed: int,
    num_agents: int = 4,
    max_steps: int = 200,
    environment: str = "arena",
    type_field: TypeField = "type_name",
) -> bytes:
    """Return one compressed replay.

    v1 mirrors heart_collector/the_4_maze: ``grid_objects`` with ``r``/``c``, ``agent:``-prefixed
    fields, ``action`` as ``[[step, [action_id, action_param]], ...]``; a v1 row at step ``t`` is the
    state *before* action ``t`` (its effect shows at ``t+1``), as in the real v1 files.

    v2/v3 mirror dinky7/early_cvc: ``objects`` with change-only ``[step, value]`` series, ``[x, y]``
    locations, ``location[t]`` already showing the effect of ``action_id[t]``. Agent 0 moves west
    exactly twice (its location series has exactly 3 entries, the early_cvc trap); the last two
    agents never move (constant ``[x, y]``), the very last one also has a constant inventory; the
    vibe, freeze and chest-inventory series start after step 0.

    The environment name is stored in ``mg_config["label"]`` for v2/v3 (the only name-like field
    real files have there; dinky7/early_cvc carry the generic ``"mettagrid"``, pens has no
    ``mg_config`` at all, so readers should prefer the landing-zone folder name). v1 has no slot for
    it. ``type_field`` selects dinky7-style ``type_name`` strings or pens-style ``type_id`` ints.
    """
    if version not in (1, 2, 3):
        raise ValueError(f"version must be 1, 2 or 3, not {version!r}")
    if num_agents < 1 or max_steps < 20:
        raise ValueError("need num_agents >= 1 and max_steps >= 20")
    rng = random.Random(seed)
    if version == 1:
        replay = _v1_replay(rng, num_agents, max_steps)
    else:
        replay = _v2_replay(rng, version, num_agents, max_steps, environment, seed, type_field)
    return _compress(json.dumps(replay).encode(), compression)


def _compress(data: bytes, compression: Compression) -> bytes:
    if compression == "zlib":
        return zlib.compress(data)
    if compression == "gzip":
        return gzip.compress(data, mtime=0)
    if compression == "none":
        return data
    raise ValueError(f"unknown compression {compression!r}")


def _series(values: list[Any], *, skip_leading: Any = _NO_DEFAULT) -> Any:
    """Change-only encoding: the constant itself, or ``[[step, value], ...]`` at each change.

    With ``skip_leading`` given, leading steps equal to it are omitted so the series starts late
    (readers apply the field's default before the first entry: a real series may start after step 0).
    """
    if all(v == values[0] for v in values):
        return values[0]
    out: list[list[Any]] = []
    prev = skip_leading
    for step, value in enumerate(values):
        if prev is _NO_DEFAULT or value != prev:
            out.append([step, value])
            prev = value
    return out


def _map_size(num_agents: int) -> tuple[int, int]:
    width = max(16, 2 * num_agents + 10)
    return width, max(14, num_agents + 10)


# ---------------------------------------------------------------------------------------------- v2/v3


def _v2_replay(
    rng: random.Random,
    version: int,
    num_agents: int,
    max_steps: int,
    environment: str,
    seed: int,
    type_field: TypeField,
) -> dict[str, Any]:
    width, height = _map_size(num_agents)
    type_ids = {name: i for i, name in enumerate(V2_TYPE_NAMES)}
    blocked: set[tuple[int, int]] = set()
    objects: list[dict[str, Any]] = []

    def new_object(type_name: str, x: int, y: int) -> dict[str, Any]:
        obj: dict[str, Any] = {"id": len(objects) + 1}
        obj[type_field] = type_name if type_field == "type_name" else type_ids[type_name]
        obj.update(location=[x, y], orientation=0, inventory=[], inventory_max=0, color=0, is_swappable=False)
        objects.append(obj)
        blocked.add((x, y))
        return obj

    for y in range(height):
        for x in range(width):
            if x in (0, width - 1) or y in (0, height - 1):
                new_object("wall", x, y)

    row = height // 2
    agent_cells = [(3 + 2 * i, row) for i in range(num_agents)]
    reserved = {(1, row), (2, row)}  # the trap agent's path must stay free
    stations: dict[tuple[int, int], str] = {}
    station_specs = [
        ("carbon_extractor", width // 4, 2),
        ("oxygen_extractor", 3 * width // 4, 2),
        ("chest", width // 2, height - 3),
        ("charger", 2, height - 3),
        ("assembler", width - 3, height - 3),
    ]
    station_objects: dict[str, dict[str, Any]] = {}
    for name, x, y in station_specs:
        obj = new_object(name, x, y)
        if name != "chest":
            obj.update(_station_fields(name))
        stations[(x, y)] = name
        station_objects[name] = obj
    for _ in range(num_agents + 2):  # a few interior walls, never on the agents' row
        x, y = rng.randrange(2, width - 2), rng.randrange(2, height - 2)
        if (x, y) not in blocked and y != row:
            new_object("wall", x, y)

    sim = _V2World(rng, max_steps, blocked, reserved, stations, agent_cells)
    for agent_id in range(num_agents):
        obj: dict[str, Any] = {"id": len(objects) + 1}
        obj[type_field] = "agent" if type_field == "type_name" else type_ids["agent"]
        obj.update(sim.agent_fields(agent_id))
        objects.append(obj)
    station_objects["chest"]["inventory"] = _series(sim.chest_inventory, skip_leading=[])

    return {
        "version": version,
        "action_names": V2_ACTION_NAMES,
        "item_names": V2_ITEM_NAMES,
        "type_names": V2_TYPE_NAMES,
        "map_size": [width, height],
        "num_agents": num_agents,
        "max_steps": max_steps,
        "mg_config": _mg_config(environment, num_agents, max_steps, width, height, seed),
        "objects": objects,
    }


def _station_fields(name: str) -> dict[str, Any]:
    """Assembler-like fields as dinky7 writes them for extractors/chargers/assemblers."""
    recipes = {
        "carbon_extractor": ([], [[_CARBON, 2]], 0, []),
        "oxygen_extractor": ([], [[_OXYGEN, 10]], 20, []),
        "charger": ([], [[_ENERGY, 50]], 10, []),
        "assembler": ([[_CARBON, 10], [_OXYGEN, 10]], [[_HEART, 1]], 0, [3]),
    }
    inputs, outputs, cooldown, vibes = recipes[name]
    protocols = [{"minAgents": 0, "vibes": vibes, "inputs": inputs, "outputs": outputs, "cooldown": cooldown}]
    return {
        "cooldown_remaining": 0,
        "cooldown_duration": 0,
        "is_clipped": False,
        "is_clip_immune": name == "assembler",
        "uses_count": 0,
        "max_uses": 25 if name.endswith("extractor") else 0,
        "allow_partial_usage": name != "assembler",
        "protocols": protocols,
    }


def _mg_config(
    environment: str, num_agents: int, max_steps: int, width: int, height: int, seed: int
) -> dict[str, Any]:
    """A trimmed dinky7-style ``mg_config``; ``label`` carries the environment name."""
    return {
        "label": environment,
        "game": {
            "resource_names": V2_ITEM_NAMES,
            "vibe_names": ["default", "charger", "carbon", "heart"],
            "num_agents": num_agents,
            "max_steps": max_steps,
            "episode_truncates": False,
            "obs": {"width": 11, "height": 11, "token_dim": 3, "num_tokens": 200},
            "agent": {
                "default_resource_limit": 255,
                "freeze_duration": _FREEZE_DURATION,
                "rewards": {"inventory": {}, "inventory_max": {}, "stats": {"chest.carbon.amount": 0.25},
                            "stats_max": {}},
                "action_failure_penalty": 0.0,
                "initial_inventory": {"energy": _ENERGY_CAP},
                "team_id": 0,
                "tags": ["agent"],
                "inventory_regen_amounts": {"energy": 1},
                "initial_vibe": 0,
            },
            "agents": [],
            "actions": {
                "noop": {"action_handler": "noop", "enabled": True},
                "move": {"action_handler": "move", "enabled": True, "consumed_resources": {"energy": 2.0},
                         "allowed_directions": ["north", "south", "west", "east"]},
                "change_vibe": {"action_handler": "change_vibe", "enabled": True, "number_of_vibes": 4},
            },
            "map_builder": {
                "type": "mettagrid.map_builder.random.RandomMapBuilder.Config",
                "width": width,
                "height": height,
                "border_width": 1,
                "seed": seed,
            },
        },
        "desync_episodes": True,
    }  # fmt: skip


def _inventory(counts: dict[int, int]) -> list[list[int]]:
    return [[item, count] for item, count in sorted(counts.items()) if count]


class _V2World:
    """Steps every agent in lock-step; the writer logs the state *after* each step's action.

    Roles: agent 0 is the early_cvc trap (two ``move_west`` steps, otherwise noop), the last agent
    never acts (all fields constant, constant inventory), the one before it only changes vibe, and
    the others shuttle between the carbon extractor, the chest (deposits earn a reward) and the
    charger; agent 1 is frozen for ``_FREEZE_DURATION`` steps a third of the way in.
    """

    def __init__(
        self,
        rng: random.Random,
        max_steps: int,
        blocked: set[tuple[int, int]],
        reserved: set[tuple[int, int]],
        stations: dict[tuple[int, int], str],
        agent_cells: list[tuple[int, int]],
    ) -> None:
        self.rng = rng
        self.max_steps = max_steps
        self.blocked = blocked
        self.reserved = reserved
        self.stations = stations
        self.targets = {name: pos for pos, name in stations.items()}
        self.num_agents = len(agent_cells)
        self.tracks: list[dict[str, list[Any]]] = [
            {key: [] for key in ("location", "inventory", "action_id", "action_success", "reward",
                                 "vibe", "freeze_remaining")}
            for _ in agent_cells
        ]  # fmt: skip
        self.chest_inventory: list[list[list[int]]] = []
        self._run(agent_cells)

    def _role(self, agent_id: int) -> str:
        if agent_id == 0:
            return "trap"
        if agent_id == self.num_agents - 1:
            return "idle"
        if agent_id == self.num_agents - 2:
            return "vibe"
        return "walker"

    def _run(self, agent_cells: list[tuple[int, int]]) -> None:
        cells = list(agent_cells)
        inventories = [{_ENERGY: _ENERGY_CAP, _CARBON: 0} for _ in cells]
        vibes = [0] * len(cells)
        frozen_left = [0] * len(cells)
        chest_carbon = 0
        trap_moves = {self.max_steps // 4, (3 * self.max_steps) // 4}
        first_vibe = self.max_steps // 10 + 3
        freeze_at = self.max_steps // 3
        for step in range(self.max_steps):
            for agent_id in range(len(cells)):
                role = self._role(agent_id)
                inventory = inventories[agent_id]
                action, success, reward = _NOOP, True, 0.0
                if role == "trap" and step in trap_moves:
                    action = _MOVE_WEST
                    x, y = cells[agent_id]
                    cells[agent_id] = (x - 1, y)
                    inventory[_ENERGY] -= 2
                elif role == "vibe" and step >= first_vibe and (step - first_vibe) % 37 == 0:
                    vibes[agent_id] = 1 + vibes[agent_id] % 3
                    action = _FIRST_VIBE_ACTION + vibes[agent_id]
                elif role == "walker":
                    if agent_id == 1 and step == freeze_at:
                        frozen_left[agent_id] = _FREEZE_DURATION
                    action, success, reward, deposit = self._walk(
                        agent_id, cells, inventory, frozen=frozen_left[agent_id] > 0
                    )
                    chest_carbon += deposit
                inventory[_ENERGY] = min(_ENERGY_CAP, inventory[_ENERGY] + 1)
                remaining = frozen_left[agent_id]
                frozen_left[agent_id] = max(0, remaining - 1)
                track = self.tracks[agent_id]
                track["location"].append(list(cells[agent_id]))
                track["inventory"].append(_inventory(inventory))
                track["action_id"].append(action)
                track["action_success"].append(success)
                track["reward"].append(reward)
                track["vibe"].append(vibes[agent_id])
                track["freeze_remaining"].append(remaining)
            self.chest_inventory.append(_inventory({_CARBON: chest_carbon}))

    def _walk(
        self, agent_id: int, cells: list[tuple[int, int]], inventory: dict[int, int], *, frozen: bool
    ) -> tuple[int, bool, float, int]:
        """One walker step: returns (action_id, success, reward, carbon deposited)."""
        x, y = cells[agent_id]
        if inventory[_ENERGY] < 30:
            goal = self.targets["charger"]
        elif inventory[_CARBON] >= 6:
            goal = self.targets["chest"]
        else:
            goal = self.targets["carbon_extractor"]
        action = self._choose_move((x, y), goal)
        if frozen or inventory[_ENERGY] < 2:
            return action, False, 0.0, 0
        dx, dy = _V2_MOVES[action]
        cell = (x + dx, y + dy)
        station = self.stations.get(cell)
        success, reward, deposit = False, 0.0, 0
        if station == "carbon_extractor":
            inventory[_CARBON] += 2
            success = True
        elif station == "charger":
            inventory[_ENERGY] = min(_ENERGY_CAP, inventory[_ENERGY] + 50)
            success = True
        elif station == "chest" and inventory[_CARBON]:
            deposit, inventory[_CARBON] = inventory[_CARBON], 0
            success, reward = True, _DEPOSIT_REWARD
        elif cell not in self.blocked and cell not in self.reserved and cell not in cells:
            cells[agent_id] = cell
            success = True
        if success:
            inventory[_ENERGY] -= 2
        return action, success, reward, deposit

    def _choose_move(self, pos: tuple[int, int], goal: tuple[int, int]) -> int:
        dx, dy = goal[0] - pos[0], goal[1] - pos[1]
        options = [a for a, (mx, my) in _V2_MOVES.items() if mx * dx > 0 or my * dy > 0]
        if not options or self.rng.random() < 0.2:
            return self.rng.choice(list(_V2_MOVES))
        return self.rng.choice(options)

    def agent_fields(self, agent_id: int) -> dict[str, Any]:
        track = self.tracks[agent_id]
        totals: list[float] = []
        running = 0.0
        for reward in track["reward"]:
            running += reward
            totals.append(running)
        freeze = track["freeze_remaining"]
        if self._role(agent_id) == "idle":
            inventory: Any = [[_ENERGY, _ENERGY_CAP], [_HEART, 1]]  # never changes: a constant
        else:
            inventory = _series(track["inventory"])
        return {
            "location": _series(track["location"]),
            "orientation": 0,
            "inventory": inventory,
            "inventory_max": 0,
            "color": 0,
            "is_swappable": False,
            "is_agent": True,
            "agent_id": agent_id,
            "vision_size": 11,
            "action_id": _series(track["action_id"]),
            "action_param": 0,
            "action_success": _series(track["action_success"]),
            "current_reward": _series(track["reward"]),
            "total_reward": _series(totals),
            "freeze_remaining": _series(freeze, skip_leading=0),
            "is_frozen": _series([f > 0 for f in freeze], skip_leading=False),
            "freeze_duration": _FREEZE_DURATION,
            "group_id": 0,
            "vibe_id": _series(track["vibe"], skip_leading=0),
            "vibe": _series(track["vibe"], skip_leading=0),
        }


# ---------------------------------------------------------------------------------------------- v1


def _v1_replay(rng: random.Random, num_agents: int, max_steps: int) -> dict[str, Any]:
    width, height = _map_size(num_agents)
    objects: list[dict[str, Any]] = []
    occupied: dict[tuple[int, int], dict[str, Any]] = {}

    def place(obj: dict[str, Any], r: int, c: int) -> dict[str, Any]:
        obj = {"id": len(objects) + 1, "type": obj.pop("type"), "r": r, "c": c, **obj}
        objects.append(obj)
        occupied[(r, c)] = obj
        return obj

    for r in range(height):
        for c in range(width):
            if r in (0, height - 1) or c in (0, width - 1):
                place({"type": _V1_WALL, "layer": 1, "wall": 1, "hp": 8, "swappable": 0}, r, c)
    altars: list[dict[str, Any]] = []
    while len(altars) < 2 * num_agents + 2:
        r, c = rng.randrange(2, height - 2), rng.randrange(2, width - 2)
        if (r, c) in occupied:
            continue
        fields = {"type": _V1_ALTAR, "layer": 1, "altar": 1, "hp": 30, "color": 0, "converting": 0}
        altars.append(place(fields, r, c))
    altar_hearts = {id(a): [1] * max_steps for a in altars}

    agent_rows: list[tuple[dict[str, Any], dict[str, list[Any]]]] = []
    for _ in range(num_agents):
        while True:
            r, c = rng.randrange(1, height - 1), rng.randrange(1, width - 1)
            if (r, c) not in occupied:
                break
        obj = place({"type": 0, "layer": 0, "agent": 1, "agent:group": 0, "hp": 10, "agent:frozen": 0}, r, c)
        agent_rows.append((obj, _v1_simulate(rng, obj, occupied, altars, altar_hearts, max_steps)))

    for altar in altars:
        hearts = altar_hearts[id(altar)]
        for item in V1_ITEMS:
            altar[f"inv:{item}"] = _series(hearts) if item == "heart" else 0
    for agent_id, (obj, track) in enumerate(agent_rows):
        obj["r"] = _series(track["r"])
        obj["c"] = _series(track["c"])
        obj["agent:orientation"] = _series(track["orientation"])
        obj["agent:color"] = 0
        for item in V1_ITEMS:
            obj[f"agent:inv:{item}"] = _series(track["hearts"]) if item == "heart" else 0
        obj["agent_id"] = agent_id
        obj["action"] = _series(track["action"])
        obj["action_success"] = _series(track["success"])
        obj["reward"] = _series(track["reward"])
        totals, running = [], 0.0
        for reward in track["reward"]:
            running += reward
            totals.append(running)
        obj["total_reward"] = _series(totals)

    objects.sort(key=lambda o: o["id"])
    return {
        "version": 1,
        "action_names": V1_ACTION_NAMES,
        "inventory_items": V1_ITEMS,
        "object_types": V1_OBJECT_TYPES,
        "map_size": [width, height],
        "num_agents": num_agents,
        "max_steps": max_steps,
        "grid_objects": objects,
    }


def _v1_simulate(
    rng: random.Random,
    agent: dict[str, Any],
    occupied: dict[tuple[int, int], dict[str, Any]],
    altars: list[dict[str, Any]],
    altar_hearts: dict[int, list[int]],
    max_steps: int,
) -> dict[str, list[Any]]:
    """Rotate/move toward the nearest altar with a heart and ``get_output`` it.

    Row ``t`` is logged before action ``t`` is applied, so effects (position, heart, reward)
    appear at ``t + 1`` -- the v1 writer's timing.
    """
    r, c = agent["r"], agent["c"]
    orientation, hearts, pending_reward = 0, 0, 0.0
    track: dict[str, list[Any]] = {k: [] for k in ("r", "c", "orientation", "hearts", "action", "success",
                                                   "reward")}  # fmt: skip
    for step in range(max_steps):
        track["r"].append(r)
        track["c"].append(c)
        track["orientation"].append(orientation)
        track["hearts"].append(hearts)
        track["reward"].append(pending_reward)
        pending_reward = 0.0
        live = [a for a in altars if altar_hearts[id(a)][step]]
        goal = min(live, key=lambda a: abs(a["r"] - r) + abs(a["c"] - c)) if live else None
        wanted = _v1_direction(rng, (r, c), goal)
        dr, dc = _V1_DIRS[orientation]
        ahead = occupied.get((r + dr, c + dc))
        if goal is not None and ahead is goal:
            action, success = [_V1_GET_OUTPUT, 0], True
            hearts += 1
            pending_reward = 1.0
            for later in range(step + 1, max_steps):
                altar_hearts[id(goal)][later] = 0
        elif wanted != orientation:
            action, success = [_V1_ROTATE, wanted], True
            orientation = wanted
        elif rng.random() < 0.05:
            action, success = [_V1_NOOP, 0], True
        else:
            action, success = [_V1_MOVE, 0], ahead is None
            if success:
                del occupied[(r, c)]
                r, c = r + dr, c + dc
                occupied[(r, c)] = agent
        track["action"].append(action)
        track["success"].append(success)
    return track


def _v1_direction(rng: random.Random, pos: tuple[int, int], goal: dict[str, Any] | None) -> int:
    if goal is None or rng.random() < 0.15:
        return rng.randrange(4)
    dr, dc = goal["r"] - pos[0], goal["c"] - pos[1]
    options = [d for d, (mr, mc) in _V1_DIRS.items() if mr * dr > 0 or mc * dc > 0]
    return rng.choice(options) if options else rng.randrange(4)
