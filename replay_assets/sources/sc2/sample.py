"""Synthetic StarCraft II replays: genuine ``.SC2Replay`` bytes of a small 1v1 ladder game, from a seed.

The game is ``sc2_game``'s simulation; this module writes what a replay holds: header, details
(players, map, ``m_timeUTC`` = ``played_at`` as a FILETIME, cache handles that mark a LotV game),
initData (lobby slots, ``m_scaledRating`` = MMR), attributes, chat messages, and the tracker and game
event streams, in an MPQ archive.

Everything is encoded for one fixed base build, ``BASE_BUILD`` (4.10.0.75689: the last Linux engine
build, so the stand-in engine can play it), with ``sc2_encoding``'s encoders driven by s2protocol's
typeinfos. Output depends only on the seed (a ``random.Random`` or numpy ``Generator``) and arguments.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
from s2protocol import versions

from replay_assets.sources.sc2.sample_encoding import (
    BitPackedEncoder,
    VersionedEncoder,
    encode_event_stream,
    mpq_archive,
)
from replay_assets.sources.sc2.sample_game import (
    MAP_SIZE,
    RACE_DATA,
    RACES,
    TICK,
    Game,
    Player,
    Sc2PlayerSpec,
    Sc2StatsRow,
    child_rng,
    finish,
    simulate,
)

__all__ = [
    "BASE_BUILD",
    "RACES",
    "Sc2PlayerSpec",
    "Sc2SampleReplay",
    "Sc2StatsRow",
    "sc2_replay",
    "sc2_replay_bytes",
]

BASE_BUILD = 75689
_VERSION = (4, 10, 0)  # m_major, m_minor, m_revision of 4.10.0.75689
_FILETIME_UNIX_EPOCH = 116_444_736_000_000_000
_NAMES = (
    "Zephyr", "Kestrel", "Mirage", "Tundra", "Basalt", "Quasar", "Nimbus", "Halcyon", "Obsidian",
    "Vesper", "Cobalt", "Lynx", "Sable", "Talon", "Ember", "Aurora",
)  # fmt: skip
_MAP_WORDS = (("Azure", "Crimson", "Silent", "Frozen", "Golden", "Shattered"),
              ("Harbor", "Steppe", "Citadel", "Reef", "Canyon", "Orbit"))  # fmt: skip
_COLORS = ((180, 20, 30), (0, 66, 255))  # red, blue (details m_color r, g, b)
_RACE_ATTR = {"Terran": b"Terr", "Zerg": b"Zerg", "Protoss": b"Prot"}
_RACE_PREF = {"Terran": 0, "Zerg": 1, "Protoss": 2}


@dataclass(frozen=True)
class Sc2SampleReplay:
    """A generated replay: its bytes and the facts a test checks them against."""

    data: bytes
    players: tuple[Sc2PlayerSpec, ...]
    winner: int  # player id (1-based, as tracker events and details number players)
    game_loops: int
    map_name: str
    played_at: dt.datetime
    stats: tuple[Sc2StatsRow, ...]
    actions: dict[int, int]  # APM-counted game events per player id
    units_born: dict[int, int]  # units each player owned at some point (born or init)
    deaths: dict[int, int]  # of those, how many died


def _handles(rng: random.Random) -> list[bytes]:
    """Depot cache handles: the standard mods (the Void one marks LotV for sc2reader), then the map."""
    mods = [b"Standard Data: Core.SC2Mod", b"Standard Data: Liberty.SC2Mod", b"Standard Data: Swarm.SC2Mod"]
    mods += [b"Standard Data: Void.SC2Mod", b"Standard Data: VoidMulti.SC2Mod"]
    digests = [hashlib.sha256(m).digest() for m in mods] + [rng.randbytes(32)]
    return [b"s2ma\x00\x00US" + d for d in digests]


def _header(protocol: Any, game_loops: int, rng: random.Random) -> bytes:
    major, minor, revision = _VERSION
    header = {
        "m_signature": b"StarCraft II replay\x1b11",
        "m_version": {
            "m_flags": 1,
            "m_major": major,
            "m_minor": minor,
            "m_revision": revision,
            "m_build": BASE_BUILD,
            "m_baseBuild": BASE_BUILD,
        },
        "m_type": 2,
        "m_elapsedGameLoops": game_loops,
        "m_useScaledTime": True,
        "m_ngdpRootKey": {"m_data": rng.randbytes(16)},
        "m_dataBuildNum": BASE_BUILD,
        "m_replayCompatibilityHash": {"m_data": bytes(16)},
        "m_ngdpRootKeyIsDevData": False,
    }
    encoder = VersionedEncoder(protocol.typeinfos)
    encoder.instance(protocol.replay_header_typeid, header)
    return encoder.getvalue()


def _details(
    protocol: Any, game: Game, winner: int, map_name: str, played_at: dt.datetime, handles: list[bytes]
) -> bytes:
    players = []
    for p, (r, g, b) in zip(game.players, _COLORS, strict=True):
        players.append(
            {
                "m_name": p.spec.name.encode(),
                "m_toon": {"m_region": 1, "m_programId": b"\x00\x00S2", "m_realm": 1, "m_id": _toon(p)},
                "m_race": p.spec.race.encode(),
                "m_color": {"m_a": 255, "m_r": r, "m_g": g, "m_b": b},
                "m_control": 2,
                "m_teamId": p.pid - 1,
                "m_handicap": 100,
                "m_observe": 0,
                "m_result": 1 if p.pid == winner else 2,
                "m_workingSetSlotId": p.pid - 1,
                "m_hero": b"",
            }
        )
    seconds = (played_at - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)
    details = {
        "m_playerList": players,
        "m_title": map_name.encode(),
        "m_difficulty": b"",
        "m_thumbnail": {"m_file": b"Minimap.tga"},
        "m_isBlizzardMap": True,
        "m_timeUTC": _FILETIME_UNIX_EPOCH + seconds * 10,
        "m_timeLocalOffset": 0,
        "m_description": b"",
        "m_imageFilePath": b"",
        "m_mapFileName": b"",
        "m_cacheHandles": handles,
        "m_miniSave": False,
        "m_gameSpeed": 4,
        "m_defaultDifficulty": 3,
        "m_modPaths": None,
        "m_campaignIndex": 0,
        "m_restartAsTransitionMap": False,
        "m_disableRecoverGame": False,
    }
    encoder = VersionedEncoder(protocol.typeinfos)
    encoder.instance(protocol.game_details_typeid, details)
    return encoder.getvalue()


def _toon(p: Player) -> int:
    return int.from_bytes(hashlib.sha256(p.spec.name.encode()).digest()[:3], "big")


def _user_data(p: Player | None) -> dict[str, Any]:
    return {
        "m_name": p.spec.name.encode() if p else b"",
        "m_clanTag": b"" if p else None,
        "m_clanLogo": None,
        "m_highestLeague": (min(7, max(1, (p.spec.mmr or 2500) // 800))) if p else None,
        "m_combinedRaceLevels": 4294967295 if p else None,
        "m_randomSeed": 0,
        "m_racePreference": {"m_race": None},
        "m_teamPreference": {"m_team": None},
        "m_testMap": False,
        "m_testAuto": False,
        "m_examine": False,
        "m_customInterface": False,
        "m_testType": 0,
        "m_observe": 0,
        "m_hero": b"",
        "m_skin": b"",
        "m_mount": b"",
        "m_toonHandle": b"",
        "m_scaledRating": p.spec.mmr if p else None,
    }


def _slot(p: Player) -> dict[str, Any]:
    return {
        "m_control": 2,
        "m_userId": p.pid - 1,
        "m_teamId": p.pid - 1,
        "m_colorPref": {"m_color": p.pid},
        "m_racePref": {"m_race": _RACE_PREF[p.spec.race]},
        "m_difficulty": 3,
        "m_aiBuild": 0,
        "m_handicap": 100,
        "m_observe": 0,
        "m_logoIndex": 0,
        "m_hero": b"",
        "m_skin": b"",
        "m_mount": b"",
        "m_artifacts": [],
        "m_workingSetSlotId": p.pid - 1,
        "m_rewards": [],
        "m_toonHandle": f"1-S2-1-{_toon(p)}".encode(),
        "m_licenses": [],
        "m_tandemLeaderId": None,
        "m_commander": b"",
        "m_commanderLevel": 0,
        "m_hasSilencePenalty": False,
        "m_tandemId": p.pid - 1,
        "m_commanderMasteryLevel": 0,
        "m_commanderMasteryTalents": [],
        "m_trophyId": 0,
        "m_rewardOverrides": [],
    }


def _init_data(protocol: Any, game: Game, handles: list[bytes], rng: random.Random) -> bytes:
    users = [_user_data(p) for p in game.players] + [_user_data(None) for _ in range(14)]
    slot_description = {
        "m_allowedColors": (16, 0xFEFF),
        "m_allowedRaces": (3, 7),
        "m_allowedDifficulty": (32, 0xFE07FE00),
        "m_allowedControls": (3, 5),
        "m_allowedObserveTypes": (3, 1),
        "m_allowedAIBuilds": (0, 0),
    }
    options = {
        "m_lockTeams": True, "m_teamsTogether": False, "m_advancedSharedControl": False,
        "m_randomRaces": False, "m_battleNet": True, "m_amm": True, "m_competitive": True,
        "m_practice": False, "m_cooperative": False, "m_noVictoryOrDefeat": False,
        "m_heroDuplicatesAllowed": True, "m_fog": 0, "m_observers": 0, "m_userDifficulty": 0,
        "m_clientDebugFlags": 0, "m_buildCoachEnabled": False,
    }  # fmt: skip
    description = {
        "m_randomValue": rng.getrandbits(32), "m_gameCacheName": b"Dflt", "m_gameOptions": options,
        "m_gameSpeed": 4, "m_gameType": 2, "m_maxUsers": 2, "m_maxObservers": 0, "m_maxPlayers": 2,
        "m_maxTeams": 2, "m_maxColors": 16, "m_maxRaces": 3, "m_maxControls": 2,
        "m_mapSizeX": MAP_SIZE[0], "m_mapSizeY": MAP_SIZE[1], "m_mapFileSyncChecksum": rng.getrandbits(32),
        "m_mapFileName": b"", "m_mapAuthorName": b"98", "m_modFileSyncChecksum": rng.getrandbits(32),
        "m_slotDescriptions": [slot_description, slot_description], "m_defaultDifficulty": 3,
        "m_defaultAIBuild": 0, "m_cacheHandles": handles, "m_hasExtensionMod": False,
        "m_hasNonBlizzardExtensionMod": False, "m_isBlizzardMap": True, "m_isPremadeFFA": False,
        "m_isCoopMode": False, "m_isRealtimeMode": False,
    }  # fmt: skip
    lobby = {
        "m_phase": 0, "m_maxUsers": 2, "m_maxObservers": 0, "m_slots": [_slot(p) for p in game.players],
        "m_randomSeed": rng.getrandbits(32), "m_hostUserId": None, "m_isSinglePlayer": False,
        "m_pickedMapTag": 0, "m_gameDuration": 0, "m_defaultDifficulty": 3, "m_defaultAIBuild": 0,
    }  # fmt: skip
    init = {
        "m_syncLobbyState": {
            "m_userInitialData": users,
            "m_gameDescription": description,
            "m_lobbyState": lobby,
        }
    }
    encoder = BitPackedEncoder(protocol.typeinfos)
    encoder.instance(protocol.replay_initdata_typeid, init)
    return encoder.getvalue()


def _attributes(game: Game) -> bytes:
    """``replay.attributes.events``: little-endian (namespace, id, scope, 4-byte reversed value)."""
    entries: list[tuple[int, int, bytes]] = [
        (16, 1000, b"Dflt"), (16, 1001, b"no"), (16, 2000, b"t2"), (16, 2001, b"1v1"),
        (16, 3000, b"Fasr"), (16, 3006, b"10"), (16, 3009, b"Amm"), (16, 3010, b"yes"), (16, 4000, b"Norm"),
    ]  # fmt: skip
    for p in game.players:
        values = (
            (500, b"Humn"), (2002, f"T{p.pid}".encode()), (3001, _RACE_ATTR[p.spec.race]),
            (3002, f"tc{p.pid:02d}".encode()), (3003, b" 100"), (3004, b"Medi"), (3007, b"Part"),
        )  # fmt: skip
        entries += [(p.pid, attr, value) for attr, value in values]
    out = bytearray(struct.pack("<BII", 0, 0, len(entries)))
    for scope, attr, value in entries:
        out += struct.pack("<IIB", 999, attr, scope) + value[::-1].ljust(4, b"\x00")
    return bytes(out)


def _user_options(protocol_build: int) -> dict[str, Any]:
    flags = (
        "m_gameFullyDownloaded", "m_developmentCheatsEnabled", "m_testCheatsEnabled",
        "m_multiplayerCheatsEnabled", "m_syncChecksummingEnabled", "m_isMapToMapTransition",
        "m_debugPauseEnabled", "m_useGalaxyAsserts", "m_platformMac", "m_cameraFollow",
    )  # fmt: skip
    options: dict[str, Any] = {name: name == "m_gameFullyDownloaded" for name in flags}
    options.update(
        m_baseBuildNum=protocol_build,
        m_buildNum=protocol_build,
        m_versionFlags=0,
        m_hotkeyProfile=b"<custom>",
    )
    return options


def _archive(game: Game, winner: int, map_name: str, played_at: dt.datetime, game_loops: int) -> bytes:
    protocol, rng = game.protocol, game.rng
    handles = _handles(rng)
    for p in game.players:
        game.game.append((0, -p.pid, p.pid - 1, 7, _user_options(BASE_BUILD)))
        game.messages.append(
            (rng.randint(20, 200), game.seq(), p.pid - 1, 0, {"m_recipient": 0, "m_string": b"glhf"})
        )
    tracker = sorted(game.tracker, key=lambda e: (e[0], e[1]))
    events = sorted(game.game, key=lambda e: (e[0], e[1]))
    messages = sorted(game.messages, key=lambda e: (e[0], e[1]))
    files = {
        "replay.attributes.events": _attributes(game),
        "replay.details": _details(protocol, game, winner, map_name, played_at, handles),
        "replay.initData": _init_data(protocol, game, handles, rng),
        "replay.message.events": encode_event_stream(
            BitPackedEncoder(protocol.typeinfos),
            protocol,
            protocol.message_eventid_typeid,
            protocol.message_event_types,
            [(loop, user, eid, fields) for loop, _, user, eid, fields in messages],
        ),
        "replay.tracker.events": encode_event_stream(
            VersionedEncoder(protocol.typeinfos),
            protocol,
            protocol.tracker_eventid_typeid,
            protocol.tracker_event_types,
            [(loop, None, eid, fields) for loop, _, eid, fields in tracker],
        ),
        "replay.game.events": encode_event_stream(
            BitPackedEncoder(protocol.typeinfos),
            protocol,
            protocol.game_eventid_typeid,
            protocol.game_event_types,
            [(loop, user, eid, fields) for loop, _, user, eid, fields in events],
        ),
    }
    return mpq_archive(_header(protocol, game_loops, rng), files)


def _specs(rng: random.Random, players: tuple[Sc2PlayerSpec, ...] | None) -> tuple[Sc2PlayerSpec, ...]:
    if players is None:
        names = rng.sample(_NAMES, 2)
        races = ("Terran", "Zerg") if rng.random() < 0.5 else ("Zerg", "Terran")
        return tuple(Sc2PlayerSpec(n, r, rng.randint(2200, 5200)) for n, r in zip(names, races, strict=True))
    if len(players) != 2:
        raise ValueError(f"a 1v1 needs exactly 2 players, got {len(players)}")
    for spec in players:
        if spec.race not in RACE_DATA:
            raise ValueError(f"unknown race {spec.race!r}; one of {RACES}")
    return tuple(players)


def sc2_replay(
    rng: random.Random | np.random.Generator,
    *,
    played_at: dt.datetime,
    game_loops: int | None = None,
    players: tuple[Sc2PlayerSpec, ...] | None = None,
    map_name: str | None = None,
) -> Sc2SampleReplay:
    """Generate one 1v1 ladder replay (base build ``BASE_BUILD``) and the facts it encodes.

    ``played_at`` (timezone-aware) is written as ``details.m_timeUTC``; ``game_loops`` defaults to
    3-6 game minutes from the seed; ``players`` defaults to two named players (Terran vs Zerg in a
    seed-chosen order, MMR 2200-5200); ``map_name`` defaults to a made-up "... LE" title.
    """
    if played_at.tzinfo is None:
        raise ValueError("played_at must be timezone-aware (details store UTC)")
    child = child_rng(rng)
    specs = _specs(child, players)
    loops = game_loops if game_loops is not None else child.randint(3 * 1344, 6 * 1344)
    if loops < 2 * TICK:
        raise ValueError(f"game_loops must be >= {2 * TICK}, got {loops}")
    title = map_name or f"{child.choice(_MAP_WORDS[0])} {child.choice(_MAP_WORDS[1])} LE"
    game = Game(child, versions.build(BASE_BUILD))
    bases = ((30, 34), (MAP_SIZE[0] - 30, MAP_SIZE[1] - 34))
    for pid, (spec, base) in enumerate(zip(specs, bases, strict=True), start=1):
        p = Player(pid, spec, RACE_DATA[spec.race], base, random.Random(child.getrandbits(64)))
        p.worker_target = child.randint(18, 24)
        p.gas_at = child.randint(15, 19)
        p.production_at = child.randint(13, 16)
        p.tech_at = child.randint(1800, 3200)
        p.max_production = child.randint(3, 5)
        p.expand_at = child.randint(1600, 3600)
        game.players.append(p)
    winner = simulate(game, loops)
    finish(game, loops, winner)
    data = _archive(game, winner, title, played_at, loops)
    actions = dict.fromkeys((p.pid for p in game.players), 0)
    for _, _, user, eid, _ in game.game:
        if eid in (27, 28, 29, 104, 105):
            actions[user + 1] += 1
    return Sc2SampleReplay(
        data=data,
        players=specs,
        winner=winner,
        game_loops=loops,
        map_name=title,
        played_at=played_at,
        stats=tuple(game.stats),
        actions=actions,
        units_born={p.pid: game.born.get(p.pid, 0) for p in game.players},
        deaths={p.pid: game.died.get(p.pid, 0) for p in game.players},
    )


def sc2_replay_bytes(
    rng: random.Random | np.random.Generator,
    *,
    played_at: dt.datetime,
    game_loops: int | None = None,
    players: tuple[Sc2PlayerSpec, ...] | None = None,
    map_name: str | None = None,
) -> bytes:
    """The ``.SC2Replay`` bytes of ``sc2_replay`` (same arguments, same seed -> same bytes)."""
    return sc2_replay(
        rng, played_at=played_at, game_loops=game_loops, players=players, map_name=map_name
    ).data
