"""StarCraft II replays: open the MPQ archive from bytes, pick a decoder, and judge the replay.

Why one module: both the metadata row and the tracker frames start the same way (archive, header,
protocol, details, players), and a replay must fail the same way for both: an ``Sc2ReplayError`` whose
one-line message names the file and the reason (missing archive member, truncated or corrupted bytes,
no decoder for the build).

Decisions, documented once here:

* Protocol: ``s2protocol.versions.build(base_build)`` when Blizzard ships that build's decoder; else the
  nearest *older* one, with ``decoder_exact=False`` (s2protocol ships no exact decoder for builds 2.5-3.11
  and 4.12). The tracker stream is self-describing, so the fallback decodes it correctly; the bit-packed
  files (initData, game events) may fail or be approximate, and any such failure is a named reason.
  ``ValidityRules.require_exact_decoder`` (default False) lets a caller reject approximate replays.
* Players: the non-observer entries of ``details.m_playerList``; ``player_id`` is the entry's
  1-based index (the id tracker events and the engine use), ``user_id`` (for game events and initData)
  comes from the lobby slot with the same working-set slot, else the slot at the same index.
* ``played_at``: ``details.m_timeUTC`` is a Windows FILETIME already in UTC (``m_timeLocalOffset`` is
  only the recorder's time zone), written when the replay was saved, i.e. at the end of the game.
* MMR: ``initData.m_syncLobbyState.m_userInitialData[user_id].m_scaledRating``; null when absent or
  <= 0 (co-op and custom games record negative placeholders), and then it satisfies the MMR rule.
* APM, sc2reader's definition: actions are ``SCmdEvent``, ``SCmdUpdateTargetPointEvent``,
  ``SCmdUpdateTargetUnitEvent``, ``SSelectionDeltaEvent`` and ``SControlGroupUpdateEvent`` of the
  player's user id; minutes are the loops the player played (until their ``SGameUserLeaveEvent``, else
  the whole game) / 22.4 loops per real second at Faster / 60. Null when game events do not decode
  (the reason is listed and the replay judged invalid: the rule cannot be checked). Counted by
  ``sc2_fast_game_events`` (a per-build compiled walk, ~10x s2protocol, which was ~90% of this row's
  cost); a stream it cannot walk goes through s2protocol, so the reason is s2protocol's own message.
"""

from __future__ import annotations

import datetime as dt
import html
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import mpyq
import pyarrow as pa
from s2protocol import versions

from replay_assets.errors import FileFormatError
from replay_assets.sources.contract import Lineage, SourceReader
from replay_assets.sources.sc2.fast_game_events import (
    ACTION_EVENTS,
    LEAVE_EVENT,
    GameEventsDecodeError,
    UserActions,
    game_event_actions,
)
from replay_assets.sources.sc2.mpq import DEFAULT_MAX_MEMBER_BYTES, read_member
from replay_assets.sources.sc2.schema import SC2_REPLAY_METADATA

__all__ = [
    "LOOPS_PER_SECOND",
    "READER",
    "Sc2Player",
    "Sc2Replay",
    "Sc2ReplayError",
    "ValidityRules",
    "choose_protocol",
    "invalid_metadata_row",
    "open_replay",
    "replay_metadata",
    "split_player_name",
    "text",
]

LOOPS_PER_SECOND = 22.4  # game loops per real second at the Faster speed ladder games use
_FILETIME_UNIX_EPOCH = 116_444_736_000_000_000  # 100 ns ticks from 1601-01-01 to 1970-01-01
_RESULTS = {0: "Undecided", 1: "Win", 2: "Loss", 3: "Tie"}
_PROTOCOL_FILE = re.compile(r"protocol(\d+)\.py$")


class Sc2ReplayError(FileFormatError):
    """A replay this project cannot read: the message names the file and why."""


# The most game loops a header may claim: frames are made for every ``step_mul`` loops of it. Ladder games
# run ~20k-80k loops (22.4 a second); 2**20 is 13 hours of game time.
DEFAULT_MAX_GAME_LOOPS = 1 << 20


@dataclass(frozen=True)
class Sc2Limits:
    """What reading one replay may cost, checked before the memory is reserved."""

    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES  # an archive member, inflated
    max_game_loops: int = DEFAULT_MAX_GAME_LOOPS  # the header's elapsed game loops


DEFAULT_LIMITS = Sc2Limits()


@dataclass(frozen=True)
class ValidityRules:
    """The seed's ``valid_replay`` rules, every threshold configurable (None disables a rule), and the
    reading limit (a replay over it is invalid, with the reason)."""

    min_game_loops: int | None = field(default=1000, metadata={"description": "Shortest valid game (loops)."})
    players: int | None = field(default=2, metadata={"description": "Exactly this many non-observers."})
    min_apm: float | None = field(
        default=10.0, metadata={"description": "Every human player at least this APM; unknown APM fails."}
    )
    min_mmr: int | None = field(default=1000, metadata={"description": "An unrecorded MMR satisfies it."})
    require_exact_decoder: bool = field(
        default=False, metadata={"description": "Reject replays decoded with the nearest older protocol."}
    )
    max_member_bytes: int = field(
        default=DEFAULT_MAX_MEMBER_BYTES,
        metadata={"description": "Refuse a replay with an archive member inflating to more bytes than this."},
    )
    max_game_loops: int = field(
        default=DEFAULT_MAX_GAME_LOOPS,
        metadata={"description": "Refuse a replay whose header claims more game loops than this."},
    )

    @property
    def limits(self) -> Sc2Limits:
        return Sc2Limits(self.max_member_bytes, self.max_game_loops)


@dataclass(frozen=True)
class Sc2Player:
    """One non-observer entry of the details' player list."""

    player_id: int
    name: str
    race: str
    result: str
    team_id: int
    clan_tag: str | None
    is_human: bool
    user_id: int | None
    mmr: int | None = None
    apm: float | None = None


@dataclass
class Sc2Replay:
    """An opened replay: its archive, header facts and the protocol chosen for the other files."""

    uri: str
    archive: mpyq.MPQArchive
    base_build: int
    game_version: str
    game_loops: int
    protocol: ModuleType
    decoder_build: int
    decoder_exact: bool
    limits: Sc2Limits = DEFAULT_LIMITS
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def member(self, name: str) -> bytes:
        """One archive file's bytes (within ``limits``), or an ``Sc2ReplayError`` naming it."""
        try:
            data = read_member(self.archive, name, self.limits.max_member_bytes)
        except Exception as exc:  # what zlib/bz2/struct raise on bad bytes, and the limits
            raise Sc2ReplayError(self.uri, f"corrupted archive member {name}: {describe(exc)}") from exc
        if data is None:
            raise Sc2ReplayError(self.uri, f"missing archive member {name}")
        return data

    def has_member(self, name: str) -> bool:
        return name.encode() in (self.archive.files or [])

    def details(self) -> dict[str, Any]:
        if "details" not in self._cache:
            self._cache["details"] = self._decode("replay.details", self.protocol.decode_replay_details)
        return self._cache["details"]

    def init_data(self) -> dict[str, Any]:
        if "init" not in self._cache:
            self._cache["init"] = self._decode("replay.initData", self.protocol.decode_replay_initdata)
        return self._cache["init"]

    def players(self, user_ids: bool = True) -> list[Sc2Player]:
        """Non-observer players in player_id order; user ids from initData when asked and it decodes.

        ``user_ids=False`` skips initData (a slow bit-packed decode the tracker backend does not need).
        """
        slots = []
        if user_ids:
            try:
                slots = self.init_data()["m_syncLobbyState"]["m_lobbyState"]["m_slots"]
            except Sc2ReplayError:
                slots = []
        return _players(self.details(), slots)

    def game_events(self) -> Iterator[dict[str, Any]]:
        data = self.member("replay.game.events")
        try:
            yield from self.protocol.decode_replay_game_events(data)
        except Exception as exc:
            raise Sc2ReplayError(self.uri, f"replay.game.events does not decode: {describe(exc)}") from exc

    def _decode(self, name: str, decoder: Any) -> dict[str, Any]:
        data = self.member(name)
        try:
            return decoder(data)
        except Exception as exc:
            exact = "" if self.decoder_exact else f" with the nearest older protocol {self.decoder_build}"
            raise Sc2ReplayError(self.uri, f"{name} does not decode{exact}: {describe(exc)}") from exc


def describe(exc: BaseException) -> str:
    """An exception as ``Type: message`` for a one-line reason."""
    try:
        text = str(exc).strip()
    except Exception:  # s2protocol's errors on damaged bytes can fail to format their own message
        text = ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def available_builds() -> list[int]:
    """Base builds s2protocol ships a decoder for, ascending."""
    return sorted(int(m.group(1)) for f in versions.list_all() if (m := _PROTOCOL_FILE.match(f)))


def choose_protocol(base_build: int) -> tuple[ModuleType, int, bool]:
    """(protocol module, its build, exact?): the build's own decoder, else the nearest older one.

    Raises ``LookupError`` when no decoder is as old as ``base_build``.
    """
    builds = available_builds()
    if base_build in builds:
        return versions.build(base_build), base_build, True
    older = [b for b in builds if b < base_build]
    if not older:
        raise LookupError(f"no s2protocol decoder for base build {base_build} (oldest is {builds[0]})")
    return versions.build(older[-1]), older[-1], False


def open_replay(data: bytes, uri: str, limits: Sc2Limits = DEFAULT_LIMITS) -> Sc2Replay:
    """Open a replay from its bytes: archive, header and protocol, or an ``Sc2ReplayError``; a header
    claiming more than ``limits.max_game_loops`` is refused, and no member read later may inflate to
    more than ``limits.max_member_bytes``."""
    try:
        archive = mpyq.MPQArchive(io.BytesIO(data))
        header_bytes = archive.header["user_data_header"]["content"]
    except Exception as exc:
        raise Sc2ReplayError(
            uri, f"not a readable MPQ archive (truncated or corrupted?): {describe(exc)}"
        ) from exc
    try:
        header = versions.latest().decode_replay_header(header_bytes)
        version = header["m_version"]
        base_build = int(version["m_baseBuild"])
        game_version = (
            f"{version['m_major']}.{version['m_minor']}.{version['m_revision']}.{version['m_build']}"
        )
        game_loops = int(header["m_elapsedGameLoops"])
    except Exception as exc:
        raise Sc2ReplayError(uri, f"replay header does not decode: {describe(exc)}") from exc
    if not 0 <= game_loops <= limits.max_game_loops:
        raise Sc2ReplayError(
            uri,
            f"the header claims {game_loops} game loops, outside 0..max_game_loops={limits.max_game_loops}",
        )
    try:
        protocol, decoder_build, exact = choose_protocol(base_build)
    except LookupError as exc:
        raise Sc2ReplayError(uri, str(exc)) from exc
    return Sc2Replay(
        uri, archive, base_build, game_version, game_loops, protocol, decoder_build, exact, limits
    )


def text(value: Any) -> str:
    """A recorded string as text: replays store UTF-8 bytes (invalid bytes become U+FFFD)."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def split_player_name(recorded: str) -> tuple[str, str | None]:
    """(name, clan tag) of a details name as the game records it: ``&lt;WoS&gt;<sp/>StoicLoofah`` or
    ``[JUNGE]<sp/>Lilly`` (the clan tag in brackets, ``<sp/>`` for the space, HTML entities escaped)."""
    clan, separator, name = recorded.partition("<sp/>")
    if not separator:
        return html.unescape(recorded), None
    clan = html.unescape(clan)
    if len(clan) >= 2 and (clan[0], clan[-1]) in (("<", ">"), ("[", "]")):
        clan = clan[1:-1]
    return html.unescape(name), clan or None


def _players(details: dict[str, Any], slots: list[dict[str, Any]]) -> list[Sc2Player]:
    by_working_slot = {
        s.get("m_workingSetSlotId"): s for s in slots if s.get("m_workingSetSlotId") is not None
    }
    players = []
    for index, entry in enumerate(details.get("m_playerList") or []):
        if entry.get("m_observe"):
            continue
        slot = by_working_slot.get(entry.get("m_workingSetSlotId"))
        if slot is None and entry.get("m_workingSetSlotId") is None and index < len(slots):
            slot = slots[index]
        is_human = entry.get("m_control") == 2
        user_id = slot.get("m_userId") if (slot is not None and is_human) else None
        name, clan_tag = split_player_name(text(entry.get("m_name", b"")))
        players.append(
            Sc2Player(
                player_id=index + 1,
                name=name,
                clan_tag=clan_tag,
                race=text(entry.get("m_race", b"")),
                result=_RESULTS.get(entry.get("m_result"), "Undecided"),
                team_id=int(entry.get("m_teamId") or 0),
                is_human=is_human,
                user_id=user_id,
            )
        )
    return players


def filetime_to_utc(filetime: int) -> dt.datetime:
    """A Windows FILETIME (100 ns ticks since 1601-01-01 UTC) as an aware UTC datetime."""
    micros = (filetime - _FILETIME_UNIX_EPOCH) // 10
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=micros)


def _mmrs(init_data: dict[str, Any], players: list[Sc2Player]) -> dict[int, int | None]:
    users = init_data["m_syncLobbyState"]["m_userInitialData"]
    out: dict[int, int | None] = {}
    for p in players:
        rating = None
        if p.user_id is not None and 0 <= p.user_id < len(users):
            rating = users[p.user_id].get("m_scaledRating")
        out[p.player_id] = int(rating) if rating is not None and rating > 0 else None
    return out


def player_apms(replay: Sc2Replay, players: list[Sc2Player]) -> dict[int, float | None]:
    """APM per player_id (sc2reader's definition, see the module docstring); None for non-humans."""
    by_user = {p.user_id: p.player_id for p in players if p.user_id is not None}
    actions = dict.fromkeys(by_user.values(), 0)
    left = dict.fromkeys(by_user.values(), replay.game_loops)
    for user, counted in _user_actions(replay).items():
        pid = by_user.get(user)
        if pid is None:
            continue
        actions[pid] += counted.actions
        if counted.left_at is not None:
            left[pid] = min(left[pid], counted.left_at)
    out: dict[int, float | None] = {p.player_id: None for p in players}
    for pid, count in actions.items():
        minutes = left[pid] / LOOPS_PER_SECOND / 60
        out[pid] = count / minutes if minutes > 0 else 0.0
    return out


def _user_actions(replay: Sc2Replay) -> dict[int, UserActions]:
    """Per user id, APM's inputs: the fast walk, else s2protocol (its error is the named reason)."""
    data = replay.member("replay.game.events")
    try:
        return game_event_actions(data, replay.protocol)
    except GameEventsDecodeError:
        pass
    actions: dict[int, int] = {}
    left: dict[int, int] = {}
    for event in replay.game_events():
        name = event["_event"]
        if name in ACTION_EVENTS:
            user = event["_userid"]["m_userId"]
            actions[user] = actions.get(user, 0) + 1
        elif name == LEAVE_EVENT:
            user = event["_userid"]["m_userId"]
            left[user] = min(left.get(user, event["_gameloop"]), event["_gameloop"])
    return {u: UserActions(actions.get(u, 0), left.get(u)) for u in sorted(actions.keys() | left.keys())}


def invalid_metadata_row(source: Lineage, *reasons: str) -> dict[str, Any]:
    """A metadata row knowing nothing but where the replay came from: invalid, for ``reasons``."""
    row: dict[str, Any] = dict.fromkeys(SC2_REPLAY_METADATA.names)
    row.update(
        date=source.day,
        replay_id=source.sha256,  # a replay's id is the sha256 of its bytes
        source_uri=source.uri,
        valid=False,
        invalid_reasons=list(reasons),
    )
    return row


def replay_metadata(data: bytes, source: Lineage, rules: ValidityRules | None = None) -> dict[str, Any]:
    """One ``SC2_REPLAY_METADATA`` row; a replay that does not decode still gets one (invalid, reasons)."""
    rules = rules or ValidityRules()
    row = invalid_metadata_row(source)
    reasons: list[str] = row["invalid_reasons"]
    try:
        replay = open_replay(data, source.uri, rules.limits)
    except Sc2ReplayError as exc:
        reasons.append(exc.reason)
        return row
    row.update(
        base_build=replay.base_build,
        game_version=replay.game_version,
        decoder_build=replay.decoder_build,
        decoder_exact=replay.decoder_exact,
        game_loops=replay.game_loops,
    )
    if not replay.has_member("replay.tracker.events"):
        reasons.append("missing archive member replay.tracker.events")
    players = _metadata_players(replay, row, reasons)
    reasons.extend(_judge(row, players, rules))
    row["valid"] = not reasons
    return row


def _metadata_players(replay: Sc2Replay, row: dict[str, Any], reasons: list[str]) -> list[Sc2Player] | None:
    """Fill map, time and players into ``row``; each file that fails adds its reason."""
    try:
        details = replay.details()
    except Sc2ReplayError as exc:
        reasons.append(exc.reason)
        return None
    row["map_name"] = text(details.get("m_title", b"")) or None
    if details.get("m_timeUTC"):
        row["played_at"] = filetime_to_utc(int(details["m_timeUTC"]))
    players = replay.players()
    mmrs: dict[int, int | None] = {}
    try:
        mmrs = _mmrs(replay.init_data(), players)
    except Sc2ReplayError as exc:
        reasons.append(exc.reason)
    except (KeyError, TypeError, IndexError) as exc:
        reasons.append(f"replay.initData has no user initial data: {describe(exc)}")
    apms: dict[int, float | None] = {}
    try:
        apms = player_apms(replay, players)
    except Sc2ReplayError as exc:
        reasons.append(exc.reason)
    players = [
        Sc2Player(**{**p.__dict__, "mmr": mmrs.get(p.player_id), "apm": apms.get(p.player_id)})
        for p in players
    ]
    row["players"] = [
        {
            "player_id": p.player_id,
            "name": p.name,
            "clan_tag": p.clan_tag,
            "race": p.race,
            "result": p.result,
            "mmr": p.mmr,
            "apm": p.apm,
        }
        for p in players
    ]
    return players


def _judge(row: dict[str, Any], players: list[Sc2Player] | None, rules: ValidityRules) -> list[str]:
    """The rules a decoded replay breaks, one readable reason each."""
    reasons = []
    if rules.require_exact_decoder and row["decoder_exact"] is False:
        reasons.append(f"no exact decoder for base build {row['base_build']} (used {row['decoder_build']})")
    if rules.min_game_loops is not None and row["game_loops"] < rules.min_game_loops:
        reasons.append(f"{row['game_loops']} game loops < {rules.min_game_loops}")
    if players is None:
        return reasons
    if rules.players is not None and len(players) != rules.players:
        reasons.append(f"{len(players)} players, expected {rules.players}")
    for p in players:
        if rules.min_apm is not None and p.is_human:
            if p.apm is None:
                reasons.append(f"player {p.player_id} APM unknown")
            elif p.apm < rules.min_apm:
                reasons.append(f"player {p.player_id} APM {p.apm:.1f} < {rules.min_apm:g}")
        if rules.min_mmr is not None and p.mmr is not None and p.mmr < rules.min_mmr:
            reasons.append(f"player {p.player_id} MMR {p.mmr} < {rules.min_mmr}")
    return reasons


def read(data: bytes, lineage: Lineage, rules: ValidityRules) -> list[pa.RecordBatch]:
    """The reader contract's ``read``: one replay's metadata row (invalid, with reasons, when it does not
    decode), converted to Arrow here, inside the pipeline's per-file guard."""
    return [pa.RecordBatch.from_pylist([replay_metadata(data, lineage, rules)], schema=SC2_REPLAY_METADATA)]


def _unreadable_row(lineage: Lineage, reason: str) -> dict[str, Any]:
    return invalid_metadata_row(lineage, reason)


def _by_replay_id(lineage: Lineage) -> str:
    return lineage.sha256


# A row for every replay of the day, in replay_id order: one that fails (even a bug, or bytes that could
# not be read back) is an invalid row with the reason, never missing.
READER = SourceReader(
    source="sc2",
    schema=SC2_REPLAY_METADATA,
    read=read,
    config=ValidityRules,
    order=_by_replay_id,
    failure_row=_unreadable_row,
)
