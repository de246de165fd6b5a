"""Real Dagster processes for end-to-end tests: a free port, a supervised child, a DAGSTER_HOME instance."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from dagster import DagsterInstance

from replay_assets_tests.conftest import REPO_ROOT

BIN = Path(sys.executable).parent


def dagster_home(tmp_path: Path) -> Path:
    """A DAGSTER_HOME holding the project's dagster.yaml."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").symlink_to(REPO_ROOT / "dagster.yaml")
    return home


def clean_env(**overrides: str) -> dict[str, str]:
    """This process's environment without AWS or REPLAY settings, plus ``overrides``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "REPLAY_"))}
    env.update(overrides)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    with open(log, "w") as out:
        proc = subprocess.Popen(args, env=env, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def wait_for(url: str, proc: subprocess.Popen, log: Path, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=5) as response:
            if response.status == 200:
                return
        time.sleep(0.5)
    raise AssertionError(f"{url} not up after {seconds}s: {log.read_text()[-3000:]}")


@contextlib.contextmanager
def instance_at(home: str) -> Iterator[DagsterInstance]:
    old = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = home
    try:
        with DagsterInstance.get() as instance:
            yield instance
    finally:
        if old is None:
            del os.environ["DAGSTER_HOME"]
        else:
            os.environ["DAGSTER_HOME"] = old
