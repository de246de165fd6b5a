"""Helpers to install the stand-in SC2 binary under a temporary SC2PATH and to write its scripted replays."""

import json
import shutil
import stat
import sys
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).with_name("standin_sc2.py")
BUILD = 75689  # the last Linux build Blizzard published (4.10.0); pysc2 knows its data version


def install_standin(sc2path: Path, base_build: int = BUILD) -> Path:
    """Lays out `<sc2path>/Versions/Base<build>/SC2_x64` as an executable script run by this venv's python."""
    binary = sc2path / "Versions" / f"Base{base_build:05d}" / "SC2_x64"
    binary.parent.mkdir(parents=True, exist_ok=True)
    binary.write_text(f"#!{sys.executable}\n" + SCRIPT.read_text())
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP)
    (sc2path / "Maps").mkdir(exist_ok=True)
    return binary


def scenario(game_loops: int = 40, base_build: int = BUILD, **overrides: Any) -> dict[str, Any]:
    """A two-player toy game: a worker and a base each, a neutral mineral field, one death and one upgrade.

    Player 1's SCV (tag 1001) carries a gather order only player 1 sees; player 2's drone (tag 2002) is
    hidden from player 1's perspective (only the merge brings it in) and dies at loop 20; player 1 researches
    upgrade 1 at loop 16.
    """
    game: dict[str, Any] = {
        "magic": "SC2STANDIN",
        "base_build": base_build,
        "map_name": "Stand-in Station",
        "game_loops": game_loops,
        "players": [
            {"id": 1, "race": "Terran", "minerals": 50, "income": 2, "wins": True},
            {"id": 2, "race": "Zerg", "minerals": 75, "income": 1},
        ],
        "units": [
            {"tag": 1001, "owner": 1, "unit_type": 45, "x": 30.0, "y": 40.0, "dx": 0.25, "health": 45.0,
             "health_max": 45.0, "orders": [{"ability_id": 295, "target_unit_tag": 16001, "progress": 0.5}]},
            {"tag": 1002, "owner": 1, "unit_type": 18, "x": 32.5, "y": 42.5, "health": 1500.0,
             "health_max": 1500.0, "energy": 50.0, "build_loops": 32},
            {"tag": 2001, "owner": 2, "unit_type": 86, "x": 120.5, "y": 110.5, "health": 1500.0,
             "health_max": 1500.0},
            {"tag": 2002, "owner": 2, "unit_type": 104, "x": 118.0, "y": 108.0, "health": 40.0,
             "health_max": 40.0, "dies_at": 20, "hidden_from": [1],
             "orders": [{"ability_id": 16, "target_world_space_pos": {"x": 100.0, "y": 100.0}}]},
            {"tag": 16001, "owner": 16, "unit_type": 341, "x": 28.0, "y": 38.0},
        ],
        "upgrades": [{"player": 1, "id": 1, "at": 16}],
    }
    game.update(overrides)
    return game


def replay_bytes(game: dict[str, Any]) -> bytes:
    return json.dumps(game).encode()


def remove_standin(sc2path: Path) -> None:
    shutil.rmtree(sc2path / "Versions", ignore_errors=True)
