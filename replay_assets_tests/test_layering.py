"""The tree's layering rules, checked in fresh interpreters: readers, loaders and the pieces spawned workers
import stay free of Dagster and boto3, and only the modules meant to hold Dagster import it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "replay_assets"
SOURCES = ["metta", "sc2", "townlet", "tmrl"]
# Where Dagster may appear (architecture: sources/*/assets.py, the pipeline, the warehouse's IO manager,
# the wiring and the CLI), plus the landing listing asset and the TMRL sensor.
DAGSTER_MODULES = {
    "definitions.py",
    "cli.py",
    "partitions.py",
    "automation/schedules.py",
    "automation/backfill.py",
    "landing/assets.py",
    "warehouse/io_manager.py",
    "sources/tmrl/sensor.py",
    *(f"sources/{s}/assets.py" for s in SOURCES),
}


def _imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_dagster_only_where_the_architecture_puts_it() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith("pipeline/") or relative in DAGSTER_MODULES:
            continue
        if {"dagster", "dagster_aws", "dagster_duckdb"} & _imports_of(path):
            offenders.append(relative)
    assert offenders == []


@pytest.mark.parametrize(
    "module",
    [
        *(f"replay_assets.sources.{s}.read" for s in ["metta", "townlet", "tmrl"]),
        "replay_assets.sources.sc2.replay",
        "replay_assets.sources.sc2.jobs",
        "replay_assets.sources.sc2.frames",
        "replay_assets.pipeline.files",  # spawned workers unpickle its decode function
        *(f"replay_assets.sources.{s}.load" for s in SOURCES),
        "replay_assets.datasets",
    ],
)
def test_module_imports_neither_dagster_nor_boto3(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        "leaked = [m for m in ('dagster', 'boto3') if m in sys.modules]\n"
        "assert not leaked, leaked\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
