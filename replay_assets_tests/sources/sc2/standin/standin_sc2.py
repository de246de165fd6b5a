"""A stand-in StarCraft II binary: pysc2's websocket protocol (`/sc2api`) over a scripted toy game.

Standard library and `s2clientprotocol` only, so it starts fast.

pysc2's real `run_configs`/`sc_process` launch it as `<SC2PATH>/Versions/Base<build>/SC2_x64 -listen H -port P
...`; its base build is the directory's. The "replay" is JSON (see `scenario()` in this package) that says
which units exist, move, die, which upgrades land, and where to crash (exit mid-replay) or hang; a real
.SC2Replay plays a short toy game with the replay's own base build (`mpq_scenario`). Each launch
appends its pid to `$SC2_STANDIN_LAUNCH_LOG` when set, so tests can count instance restarts.
"""

import base64
import contextlib
import hashlib
import json
import os
import re
import socket
import struct
import sys
import time

from s2clientprotocol import common_pb2, raw_pb2
from s2clientprotocol import sc2api_pb2 as sc_pb

MAGIC = "SC2STANDIN"
IDLE_EXIT_S = 60.0
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
RACES = {"Terran": common_pb2.Terran, "Zerg": common_pb2.Zerg, "Protoss": common_pb2.Protoss}


def load_scenario(data: bytes) -> dict:
    """The scripted game of a stand-in replay; a real .SC2Replay plays a short toy game instead."""
    if data[:4] == b"MPQ\x1b":
        return mpq_scenario(data)
    scenario = json.loads(data)
    assert scenario["magic"] == MAGIC
    return scenario


def mpq_scenario(data: bytes) -> dict:
    """For a real replay: its header's base build and length (capped at 48 loops, to stay fast), and a
    worker per player, so an asset can route real replays to this "engine" end to end."""
    import io

    import mpyq
    from s2protocol import versions

    archive = mpyq.MPQArchive(io.BytesIO(data))
    header = versions.latest().decode_replay_header(archive.header["user_data_header"]["content"])
    build = header["m_version"]["m_baseBuild"]
    units = [
        {"tag": (player << 18) + 1, "owner": player, "unit_type": 45, "x": 20.0 * player, "y": 30.0,
         "health": 45.0, "health_max": 45.0}
        for player in (1, 2)
    ]  # fmt: skip
    return {
        "magic": MAGIC, "base_build": build, "map_name": "Real replay in the stand-in",
        "game_loops": min(header["m_elapsedGameLoops"], 48),
        "players": [{"id": 1, "race": "Terran", "wins": True}, {"id": 2, "race": "Zerg"}],
        "units": units, "upgrades": [],
    }  # fmt: skip


def arg(name: str) -> str:
    return sys.argv[sys.argv.index(name) + 1]


class Game:
    """The state one connection's requests act on."""

    def __init__(self, base_build: int) -> None:
        self.base_build = base_build
        self.status = sc_pb.launched
        self.scenario: dict = {}
        self.loop = 0
        self.observed = 0
        self.last_observed = -1

    def handle(self, request: sc_pb.Request) -> sc_pb.Response | None:
        kind = request.WhichOneof("request")
        response = sc_pb.Response(id=request.id)
        if kind == "quit":
            os._exit(0)
        elif kind == "ping":
            response.ping.CopyFrom(self.ping())
        elif kind == "replay_info":
            response.replay_info.CopyFrom(self.replay_info(request.replay_info.replay_data))
        elif kind == "start_replay":
            response.start_replay.CopyFrom(self.start_replay(request.start_replay))
        elif kind == "game_info":
            response.game_info.CopyFrom(self.game_info())
        elif kind == "step":
            response.step.CopyFrom(self.step(request.step.count))
        elif kind == "observation":
            response.observation.CopyFrom(self.observe())
        else:
            response.error.append(f"stand-in does not implement {kind}")
        response.status = self.status
        return response

    def ping(self) -> sc_pb.ResponsePing:
        return sc_pb.ResponsePing(
            game_version=f"stand-in.{self.base_build}", data_version="STANDIN", data_build=self.base_build,
            base_build=self.base_build,
        )

    def replay_info(self, data: bytes) -> sc_pb.ResponseReplayInfo:
        try:
            scenario = load_scenario(data)
        except Exception:
            return sc_pb.ResponseReplayInfo(error=sc_pb.ResponseReplayInfo.ParsingError,
                                            error_details="not a stand-in replay")
        info = sc_pb.ResponseReplayInfo(
            map_name=scenario["map_name"], game_duration_loops=scenario["game_loops"],
            game_duration_seconds=scenario["game_loops"] / 22.4,
            game_version=f"4.10.0.{scenario['base_build']}",
            data_build=scenario["base_build"], base_build=scenario["base_build"], data_version="STANDIN",
        )
        for player in scenario["players"]:
            extra = info.player_info.add()
            extra.player_info.player_id = player["id"]
            extra.player_info.type = sc_pb.Observer if player.get("observer") else sc_pb.Participant
            extra.player_info.race_requested = RACES[player["race"]]
            extra.player_info.race_actual = RACES[player["race"]]
            extra.player_result.player_id = player["id"]
            extra.player_result.result = sc_pb.Victory if player.get("wins") else sc_pb.Defeat
            extra.player_mmr = 3000
            extra.player_apm = 120
        return info

    def start_replay(self, request: sc_pb.RequestStartReplay) -> sc_pb.ResponseStartReplay:
        self.scenario = load_scenario(request.replay_data)
        if self.scenario.get("start_error"):  # what SC2 answers for e.g. map data it cannot use
            return sc_pb.ResponseStartReplay(
                error=sc_pb.ResponseStartReplay.Error.Value(self.scenario["start_error"]),
                error_details=f"stand-in: {self.scenario['start_error']}",
            )
        assert request.options.raw and request.disable_fog, "the engine path asks for raw data without fog"
        self.observed = request.observed_player_id
        self.loop = 0
        self.last_observed = -1
        self.status = sc_pb.in_replay
        return sc_pb.ResponseStartReplay()

    def game_info(self) -> sc_pb.ResponseGameInfo:
        return sc_pb.ResponseGameInfo(map_name=self.scenario["map_name"])

    def step(self, count: int) -> sc_pb.ResponseStep:
        self.loop = min(self.loop + count, self.scenario["game_loops"])
        crash_at = self.scenario.get("crash_at")
        if crash_at is not None and self.loop >= crash_at:
            os._exit(3)  # a crashed game: the socket closes without a response
        hang_at = self.scenario.get("hang_at")
        if hang_at is not None and self.loop >= hang_at:
            time.sleep(3600)
        if self.loop >= self.scenario["game_loops"]:
            self.status = sc_pb.ended
        return sc_pb.ResponseStep(simulation_loop=self.loop)

    def observe(self) -> sc_pb.ResponseObservation:
        loop, player = self.loop, self.observed
        response = sc_pb.ResponseObservation()
        if self.status == sc_pb.ended and self.scenario.get("stub_end"):
            # What SC2 sometimes sends once a replay is over: no observation, only the results.
            response.observation.game_loop = 2**32 - 1
            response.player_result.add(player_id=player, result=sc_pb.Victory)
            return response
        obs = response.observation
        obs.game_loop = loop
        stats = next(p for p in self.scenario["players"] if p["id"] == player)
        obs.player_common.player_id = player
        obs.player_common.minerals = stats.get("minerals", 50) + stats.get("income", 1) * loop
        obs.player_common.vespene = loop // 2
        obs.player_common.food_cap = 15
        obs.player_common.food_used = 12
        obs.player_common.food_army = 0
        obs.player_common.food_workers = 12
        raw = obs.raw_data
        raw.player.upgrade_ids.extend(
            u["id"] for u in self.scenario.get("upgrades", []) if u["player"] == player and u["at"] <= loop
        )
        for spec in self.scenario["units"]:
            dies_at = spec.get("dies_at")
            if self.last_observed < (dies_at if dies_at is not None else -2) <= loop:
                raw.event.dead_units.append(spec["tag"])
            alive = spec.get("born_at", 0) <= loop and (dies_at is None or loop < dies_at)
            if alive and player not in spec.get("hidden_from", []):
                raw.units.append(self.unit(spec, loop, player))
        self.last_observed = loop
        if self.status == sc_pb.ended:
            for p in self.scenario["players"]:
                result = sc_pb.Victory if p.get("wins") else sc_pb.Defeat
                response.player_result.add(player_id=p["id"], result=result)
        return response

    @staticmethod
    def unit(spec: dict, loop: int, player: int) -> raw_pb2.Unit:
        owner = spec["owner"]
        alliance = raw_pb2.Neutral if owner == 16 else raw_pb2.Self if owner == player else raw_pb2.Enemy
        unit = raw_pb2.Unit(
            display_type=raw_pb2.Visible, alliance=alliance, tag=spec["tag"], unit_type=spec["unit_type"],
            owner=owner, facing=0.5, radius=0.375, is_flying=spec.get("is_flying", False),
        )
        unit.pos.x = spec["x"] + spec.get("dx", 0.0) * loop
        unit.pos.y = spec["y"]
        unit.pos.z = spec.get("z", 10.0)
        build_loops = spec.get("build_loops")
        born = spec.get("born_at", 0)
        unit.build_progress = min(1.0, (loop - born) / build_loops) if build_loops else 1.0
        for field in ("health", "health_max", "shield", "energy"):
            if field in spec:
                setattr(unit, field, spec[field])
        if owner == player:  # only the owner sees orders
            for order in spec.get("orders", []):
                unit.orders.add(**order)
        return unit


def handshake(sock: socket.socket) -> bool:
    """Answers the HTTP upgrade; like SC2, only `/sc2api` exists (pysc2 retries on 404)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return False
        data += chunk
    lines = data.decode("latin-1").split("\r\n")
    path = lines[0].split(" ")[1]
    pairs = (line.partition(":") for line in lines[1:] if line)
    headers = {key.strip().lower(): value.strip() for key, _, value in pairs}
    if path != "/sc2api" or "sec-websocket-key" not in headers:
        sock.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        return False
    accept = base64.b64encode(hashlib.sha1((headers["sec-websocket-key"] + GUID).encode()).digest()).decode()
    sock.sendall(
        ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode()
    )
    return True


def read_exact(stream, size: int) -> bytes:
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return data


def read_message(stream) -> tuple[int, bytes]:
    """One (unfragmented) client frame. pysc2 sends its protobufs as *text* frames that are not UTF-8,
    which is why this is hand-rolled: strict servers (the `websockets` package) reject them."""
    first, second = read_exact(stream, 2)
    opcode, size = first & 0x0F, second & 0x7F
    if size == 126:
        size = struct.unpack(">H", read_exact(stream, 2))[0]
    elif size == 127:
        size = struct.unpack(">Q", read_exact(stream, 8))[0]
    mask = read_exact(stream, 4) if second & 0x80 else b"\0\0\0\0"
    payload = bytearray(read_exact(stream, size))
    for i in range(size):
        payload[i] ^= mask[i % 4]
    return opcode, bytes(payload)


def write_message(sock: socket.socket, payload: bytes, opcode: int = 0x2) -> None:
    size = len(payload)
    if size < 126:
        header = struct.pack(">BB", 0x80 | opcode, size)
    elif size < 1 << 16:
        header = struct.pack(">BBH", 0x80 | opcode, 126, size)
    else:
        header = struct.pack(">BBQ", 0x80 | opcode, 127, size)
    sock.sendall(header + payload)


def serve(sock: socket.socket, game: Game) -> None:
    stream = sock.makefile("rb")
    while True:
        opcode, payload = read_message(stream)
        if opcode == 0x8:  # close
            return
        if opcode == 0x9:  # ping
            write_message(sock, payload, 0xA)
        elif opcode in (0x1, 0x2):
            write_message(sock, game.handle(sc_pb.Request.FromString(payload)).SerializeToString())


def main() -> None:
    build = int(re.search(r"Base(\d+)", os.path.abspath(sys.argv[0])).group(1))
    if log := os.environ.get("SC2_STANDIN_LAUNCH_LOG"):
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
    game = Game(build)
    listener = socket.create_server((arg("-listen"), int(arg("-port"))))
    listener.settimeout(IDLE_EXIT_S)
    while True:  # like SC2, a client that goes away without `quit` leaves the game running, listening
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            return  # unlike SC2: an orphaned stand-in does not outlive a crashed test run for long
        conn.settimeout(None)
        with conn:
            if handshake(conn):
                with contextlib.suppress(EOFError, OSError):
                    serve(conn, game)


if __name__ == "__main__":
    main()
