"""StarCraft II ground truth from the game engine (pysc2's controller): observations in, frame rows out.

The engine only plays a replay of its own exact base build, so this module validates first and says why
when it refuses. Each replay is observed once per player with fog disabled: only the owner sees its units'
orders, and only the observed player gets `player_common` and upgrades, so the perspectives are merged by unit
tag with the owner's view winning. Everything here works on plain `s2clientprotocol` messages and a
controller with pysc2's `RemoteController` methods, so tests drive it against a stand-in binary that speaks
the real protocol.
"""

import heapq
import itertools
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO, Any, Protocol

import pyarrow as pa
from pysc2.lib.remote_controller import RequestError
from s2clientprotocol import raw_pb2
from s2clientprotocol import sc2api_pb2 as sc_pb

from replay_assets.errors import FileFormatError
from replay_assets.sources.contract import Lineage
from replay_assets.sources.sc2.schema import SC2_GROUND_TRUTH_FRAMES

try:  # Plain enums: both import on 3.11 (unlike pysc2.lib.features); names are optional, ids are not.
    from pysc2.lib import units as _pysc2_units
    from pysc2.lib import upgrades as _pysc2_upgrades
except ImportError:  # pragma: no cover - pysc2 is a declared dependency
    _pysc2_units = None
    _pysc2_upgrades = None

BACKEND = "engine"
_LENGTH = struct.Struct("<I")


class Sc2EngineError(FileFormatError):
    """A replay the engine could not (or would not) play: the message names the replay and the reason."""


class Controller(Protocol):
    """The subset of pysc2's `RemoteController` the driving loop uses."""

    def ping(self) -> sc_pb.ResponsePing: ...
    def replay_info(self, replay_data: bytes) -> sc_pb.ResponseReplayInfo: ...
    def start_replay(self, req_start_replay: sc_pb.RequestStartReplay) -> sc_pb.ResponseStartReplay: ...
    def step(self, count: int = 1) -> sc_pb.ResponseStep: ...
    def observe(self, disable_fog: bool = False, target_game_loop: int = 0) -> sc_pb.ResponseObservation: ...


def unit_name(unit_type: int) -> str | None:
    """pysc2's name for an engine unit type id, or None when pysc2 does not know it."""
    if _pysc2_units is None:
        return None
    found = _pysc2_units.get_unit_type(unit_type)
    return found.name if found is not None else None


def upgrade_names(upgrade_ids: Iterable[int]) -> list[str | None] | None:
    """Names aligned with the ids (None for an id pysc2 does not know); None without pysc2's table."""
    if _pysc2_upgrades is None:
        return None
    names: list[str | None] = []
    for upgrade_id in upgrade_ids:
        try:
            names.append(_pysc2_upgrades.Upgrades(upgrade_id).name)
        except ValueError:
            names.append(None)
    return names


def _opt(message: Any, field: str) -> Any:
    """A proto2 optional field's value, or None when the engine did not send it (never a default)."""
    return getattr(message, field) if message.HasField(field) else None


def order_row(order: raw_pb2.UnitOrder) -> dict[str, Any]:
    target = order.target_world_space_pos if order.HasField("target_world_space_pos") else None
    return {
        "ability_id": _opt(order, "ability_id"),
        "target_unit_tag": _opt(order, "target_unit_tag"),
        "target_x": target.x if target is not None else None,
        "target_y": target.y if target is not None else None,
        "progress": _opt(order, "progress"),
    }


def unit_row(unit: raw_pb2.Unit, game_loop: int) -> dict[str, Any]:
    """One SC2_UNIT struct: the engine's values, its position current as of `game_loop`."""
    pos = unit.pos if unit.HasField("pos") else None
    build_progress = _opt(unit, "build_progress")
    unit_type = _opt(unit, "unit_type")
    return {
        "tag": unit.tag,
        "unit_type": unit_type,
        "unit_name": unit_name(unit_type) if unit_type is not None else None,
        "x": pos.x if pos is not None else None,
        "y": pos.y if pos is not None else None,
        "z": _opt(pos, "z") if pos is not None else None,
        "position_loop": game_loop if pos is not None else None,
        "position_source": BACKEND if pos is not None else None,
        "is_complete": build_progress >= 1.0 if build_progress is not None else None,
        "health": _opt(unit, "health"),
        "health_max": _opt(unit, "health_max"),
        "shield": _opt(unit, "shield"),
        "energy": _opt(unit, "energy"),
        "build_progress": build_progress,
        "is_flying": _opt(unit, "is_flying"),
        "orders": [order_row(order) for order in unit.orders],
    }


class FrameMerger:
    """Merges one game loop's perspectives into one row per player; remembers owners to attribute deaths.

    A unit is taken from its owner's perspective when that perspective sees it (orders are only visible to
    the owner), else from the first perspective that does. `event.dead_units` names tags only; a death is
    charged to the owner the unit had when last seen, and dropped when it was never seen (never invented).
    """

    def __init__(self, player_ids: Iterable[int]) -> None:
        self.player_ids = sorted(player_ids)
        self._last_owner: dict[int, int] = {}

    def merge(self, game_loop: int, observations: Mapping[int, sc_pb.ResponseObservation]) -> list[dict]:
        chosen: dict[int, raw_pb2.Unit] = {}
        dead: set[int] = set()
        for perspective in sorted(observations):
            raw = observations[perspective].observation.raw_data
            dead.update(raw.event.dead_units)
            for unit in raw.units:
                if unit.display_type == raw_pb2.Placeholder:
                    continue
                held = chosen.get(unit.tag)
                if held is None or (unit.owner == perspective and held.owner != perspective):
                    chosen[unit.tag] = unit
        dead_by_owner: dict[int, list[int]] = {}
        for tag in sorted(dead):
            owner = self._last_owner.pop(tag, None)
            if owner is not None:
                dead_by_owner.setdefault(owner, []).append(tag)
        units_by_owner: dict[int, list[dict]] = {}
        for tag in sorted(chosen):
            unit = chosen[tag]
            if tag in dead:
                continue
            self._last_owner[tag] = unit.owner
            units_by_owner.setdefault(unit.owner, []).append(unit_row(unit, game_loop))
        return [
            self._player_row(
                game_loop,
                player_id,
                observations.get(player_id),
                units_by_owner.get(player_id, []),
                dead_by_owner.get(player_id, []),
            )
            for player_id in self.player_ids
        ]

    @staticmethod
    def _player_row(
        game_loop: int,
        player_id: int,
        own: sc_pb.ResponseObservation | None,
        units: list[dict],
        dead_units: list[int],
    ) -> dict[str, Any]:
        """Stats and upgrades come only from the player's own perspective: null when it is missing."""
        has_common = own is not None and own.observation.HasField("player_common")
        common = own.observation.player_common if has_common else None
        upgrade_ids = list(own.observation.raw_data.player.upgrade_ids) if own is not None else None
        return {
            "game_loop": game_loop,
            "player_id": player_id,
            "stats_loop": None,
            "minerals": _opt(common, "minerals") if common is not None else None,
            "vespene": _opt(common, "vespene") if common is not None else None,
            "food_used": _opt(common, "food_used") if common is not None else None,
            "food_cap": _opt(common, "food_cap") if common is not None else None,
            "food_army": _opt(common, "food_army") if common is not None else None,
            "food_workers": _opt(common, "food_workers") if common is not None else None,
            "upgrades": upgrade_names(upgrade_ids) if upgrade_ids is not None else None,
            "upgrade_ids": upgrade_ids,
            "dead_units": dead_units,
            "units": units,
        }


def aligned_frames(
    perspectives: Mapping[int, Iterable[sc_pb.ResponseObservation]],
) -> Iterator[tuple[int, dict[int, sc_pb.ResponseObservation]]]:
    """Walks the perspectives' observation streams together, grouping the observations of each game loop."""
    # (game_loop, player_id, sequence, obs, rest): the sequence keeps heapq from ever comparing messages.
    heads: list[tuple[int, int, int, sc_pb.ResponseObservation, Iterator[sc_pb.ResponseObservation]]] = []
    sequence = itertools.count()
    for player_id, stream in perspectives.items():
        iterator = iter(stream)
        first = next(iterator, None)
        if first is not None:
            heads.append((first.observation.game_loop, player_id, next(sequence), first, iterator))
    heapq.heapify(heads)
    while heads:
        game_loop = heads[0][0]
        group: dict[int, sc_pb.ResponseObservation] = {}
        while heads and heads[0][0] == game_loop:
            _, player_id, _, obs, iterator = heapq.heappop(heads)
            group[player_id] = obs
            following = next(iterator, None)
            if following is not None:
                head = (following.observation.game_loop, player_id, next(sequence), following, iterator)
                heapq.heappush(heads, head)
        yield game_loop, group


def merged_rows(
    player_ids: Iterable[int], perspectives: Mapping[int, Iterable[sc_pb.ResponseObservation]]
) -> Iterator[dict[str, Any]]:
    """Frame rows (without lineage columns) in (game_loop, player_id) order."""
    merger = FrameMerger(player_ids)
    for game_loop, group in aligned_frames(perspectives):
        yield from merger.merge(game_loop, group)


def frame_batches(
    rows: Iterable[dict[str, Any]], lineage: Lineage, batch_rows: int = 512
) -> Iterator[pa.RecordBatch]:
    """SC2_GROUND_TRUTH_FRAMES batches of at most `batch_rows` rows, lineage columns added."""
    lineage_columns = {
        "date": lineage.day,
        "replay_id": lineage.sha256,  # a replay's id is the sha256 of its bytes
        "source_uri": lineage.uri,
        "backend": BACKEND,
    }
    pending: list[dict[str, Any]] = []
    for row in rows:
        pending.append({**lineage_columns, **row})
        if len(pending) >= batch_rows:
            yield pa.RecordBatch.from_pylist(pending, schema=SC2_GROUND_TRUTH_FRAMES)
            pending = []
    if pending:
        yield pa.RecordBatch.from_pylist(pending, schema=SC2_GROUND_TRUTH_FRAMES)


def observed_players(name: str, info: sc_pb.ResponseReplayInfo, engine_base_build: int) -> list[int]:
    """Validates a replay for this engine and returns the players to observe (observers excluded)."""
    if info.HasField("error"):
        error = sc_pb.ResponseReplayInfo.Error.Name(info.error)
        details = info.error_details or "no details"
        raise Sc2EngineError(name, f"the engine cannot read the replay ({error}: {details})")
    if info.base_build != engine_base_build:
        raise Sc2EngineError(
            name,
            f"replay base build {info.base_build} ({info.game_version or 'unknown version'}) needs SC2 "
            f"Base{info.base_build}; this engine is Base{engine_base_build}",
        )
    players = sorted(
        extra.player_info.player_id for extra in info.player_info if extra.player_info.type != sc_pb.Observer
    )
    if not players:
        raise Sc2EngineError(name, "the replay has no players to observe")
    return players


def start_replay_request(
    replay_data: bytes, map_data: bytes | None, player_id: int
) -> sc_pb.RequestStartReplay:
    """Raw units and score, no rendering, fog disabled, observed from `player_id`."""
    options = sc_pb.InterfaceOptions(
        raw=True, score=True, show_cloaked=True, show_burrowed_shadows=True, raw_crop_to_playable_area=False
    )
    request = sc_pb.RequestStartReplay(
        replay_data=replay_data, options=options, observed_player_id=player_id, disable_fog=True
    )
    if map_data is not None:
        request.map_data = map_data
    return request


def observe_perspective(
    controller: Controller, request: sc_pb.RequestStartReplay, step_mul: int, name: str
) -> Iterator[sc_pb.ResponseObservation]:
    """One pass over the replay: an observation every `step_mul` loops until the engine reports the result.

    At the end SC2 may send a stub observation that pysc2 replaces by a copy of the previous one: a game loop
    that does not advance is never yielded twice, and ends the pass even without a result.
    """
    try:
        controller.start_replay(request)
    except RequestError as error:  # SC2 answered and refused this replay: not a crash
        raise Sc2EngineError(name, f"SC2 refused to start the replay: {error}") from error
    previous: int | None = None
    while True:
        obs = controller.observe(disable_fog=True)
        game_loop = obs.observation.game_loop
        if previous is not None and game_loop <= previous:
            return
        yield obs
        if obs.player_result:
            return
        previous = game_loop
        controller.step(step_mul)


def _spool(observations: Iterable[sc_pb.ResponseObservation]) -> IO[bytes]:
    """Writes a pass to a temporary file so a long replay's earlier perspectives do not sit in memory."""
    spool = tempfile.TemporaryFile()  # noqa: SIM115 - handed over open; _unspool closes it
    try:
        for obs in observations:
            data = obs.SerializeToString()
            spool.write(_LENGTH.pack(len(data)))
            spool.write(data)
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return spool


def _unspool(spool: IO[bytes]) -> Iterator[sc_pb.ResponseObservation]:
    try:
        while header := spool.read(_LENGTH.size):
            (size,) = _LENGTH.unpack(header)
            yield sc_pb.ResponseObservation.FromString(spool.read(size))
    finally:
        spool.close()


def engine_frame_batches(
    controller: Controller,
    replay_data: bytes,
    lineage: Lineage,
    step_mul: int = 8,
    map_data_for: Callable[[str], bytes] | None = None,
    batch_rows: int = 512,
) -> Iterator[pa.RecordBatch]:
    """Plays one replay from every player's perspective and yields its merged frame batches.

    Validation errors raise `Sc2EngineError`; the engine's own failures (a crash, a protocol error) propagate
    unchanged so the caller can tell a broken instance from a bad replay. All perspectives but the last are
    spooled to temporary files; the last streams live into the merge.
    """
    name = lineage.uri
    engine_build = controller.ping().base_build
    try:
        info = controller.replay_info(replay_data)
    except RequestError as error:  # pysc2 raises on the response's error field; judge the response itself
        info = error.res
    players = observed_players(name, info, engine_build)
    map_data = None
    if info.local_map_path and map_data_for is not None:
        try:
            map_data = map_data_for(info.local_map_path)
        except (OSError, ValueError) as error:
            raise Sc2EngineError(name, f"map {info.local_map_path!r} is not installed: {error}") from error
    streams: dict[int, Iterable[sc_pb.ResponseObservation]] = {}
    for player_id in players[:-1]:
        request = start_replay_request(replay_data, map_data, player_id)
        streams[player_id] = _unspool(_spool(observe_perspective(controller, request, step_mul, name)))
    last = start_replay_request(replay_data, map_data, players[-1])
    streams[players[-1]] = observe_perspective(controller, last, step_mul, name)
    yield from frame_batches(merged_rows(players, streams), lineage, batch_rows)
