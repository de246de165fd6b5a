"""Synthetic TMRL player runs, pickled exactly like the files in ``shared/data/tmrl/player_runs``.

The real files are ``pickle.dumps(obj, protocol=5)`` of a ``tmrl_player_run_v1`` dict (or a bare
sample list for the legacy writer) whose numpy arrays pickle through
``numpy._core.numeric._frombuffer`` + ``numpy.dtype`` only; we reproduce that so the safe loader
can be tested on realistic bytes. Every array is its own object (no shared memo references), the
reward is a Python float and the flags are Python bools, as in the real samples.
"""

from __future__ import annotations

import pickle
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np

__all__ = ["FULL_IMAGE_SHAPE", "LIDAR_SHAPE", "tmrl_player_run_bytes", "tmrl_player_run_object"]

Layout = Literal["lidar", "full"]
LIDAR_SHAPE = (4, 19)
FULL_IMAGE_SHAPE = (4, 64, 64)


def tmrl_player_run_bytes(
    *,
    run_id: str,
    recorded_at: datetime,
    layout: Layout,
    num_samples: int,
    seed: int,
    legacy: bool = False,
    episode_index: int = 0,
) -> bytes:
    """Pickle (protocol 5) of one run; deterministic for a seed with a given numpy version."""
    return pickle.dumps(
        tmrl_player_run_object(
            run_id=run_id,
            recorded_at=recorded_at,
            layout=layout,
            num_samples=num_samples,
            seed=seed,
            legacy=legacy,
            episode_index=episode_index,
        ),
        protocol=5,
    )


def tmrl_player_run_object(
    *,
    run_id: str,
    recorded_at: datetime,
    layout: Layout,
    num_samples: int,
    seed: int,
    legacy: bool = False,
    episode_index: int = 0,
) -> dict[str, Any] | list[tuple[Any, ...]]:
    """The unpickled form: the ``tmrl_player_run_v1`` dict, or the bare sample list when ``legacy``.

    Mirrors the real files: ``recorded_at`` as ISO-8601 UTC (``...+00:00``); metadata
    ``episode_index``, ``episode_return`` (0.0) and ``episode_steps`` (0) -- the real writer leaves
    those two at zero, so readers must not trust them -- ``map_name``, ``run_name``,
    ``memory_class``; full-layout runs come from the later writer (``"obs_scale_version": 2``,
    ``info == {"is_demo": True}``, last sample truncated), lidar runs have ``info == {}`` and end
    terminated. Each sample is ``(act, obs, rew, terminated, truncated, info)``; ``obs`` ends with
    the two previous actions (zeros before the start) and its history (lidar or images) holds the
    newest frame at index 0, as in the real lidar file.
    """
    if layout not in ("lidar", "full"):
        raise ValueError(f"unknown layout {layout!r}")
    if num_samples < 1:
        raise ValueError("num_samples must be >= 1")
    if recorded_at.tzinfo is None:
        raise ValueError("recorded_at must be timezone-aware (the file stores UTC)")
    rng = np.random.default_rng(seed)
    samples = _lidar_samples(rng, num_samples) if layout == "lidar" else _full_samples(rng, num_samples)
    if legacy:
        return samples
    run: dict[str, Any] = {
        "format": "tmrl_player_run_v1",
        "run_id": run_id,
        "recorded_at": recorded_at.astimezone(UTC).isoformat(),
    }
    if layout == "full":
        run["obs_scale_version"] = 2
    run["metadata"] = {
        "episode_index": episode_index,
        "episode_return": 0.0,
        "episode_steps": 0,
        "map_name": "tmrl-test",
        "run_name": "demo",
        "memory_class": "MemoryTMLidar" if layout == "lidar" else "MemoryTMFull",
    }
    run["samples"] = samples
    return run


def _actions(rng: np.random.Generator, n: int) -> np.ndarray:
    """Gas mostly on, small brake, smooth steering, all clipped to [-1, 1] like the real runs."""
    gas = 0.75 + 0.2 * rng.standard_normal(n)
    brake = 0.1 * rng.standard_normal(n)
    steer = np.cumsum(0.25 * rng.standard_normal(n))
    steer -= np.round(steer / 2.0) * 2.0
    return np.clip(np.stack([gas, brake, steer], axis=1), -1.0, 1.0).astype(np.float32)


def _previous(actions: np.ndarray, t: int, lag: int) -> np.ndarray:
    return actions[t - lag].copy() if t >= lag else np.zeros(3, dtype=np.float32)


def _flags(t: int, n: int, *, truncate: bool) -> tuple[bool, bool]:
    last = t == n - 1
    return (last and not truncate, last and truncate)


def _lidar_samples(rng: np.random.Generator, n: int) -> list[tuple[Any, ...]]:
    actions = _actions(rng, n)
    speed = np.cumsum(rng.uniform(0.5, 3.0, size=n)).astype(np.float32)
    frames = np.clip(
        350.0 + np.cumsum(rng.normal(0.0, 40.0, size=(n + LIDAR_SHAPE[0], LIDAR_SHAPE[1])), axis=0),
        100.0,
        600.0,
    ).astype(np.float32)
    rewards = np.clip(0.5 + 0.25 * rng.standard_normal(n), -0.05, 1.0).tolist()
    samples = []
    for t in range(n):
        history = frames[t : t + LIDAR_SHAPE[0]][::-1].copy()  # newest first
        obs = (speed[t : t + 1].copy(), history, _previous(actions, t, 1), _previous(actions, t, 2))
        terminated, truncated = _flags(t, n, truncate=False)
        samples.append((actions[t].copy(), obs, rewards[t], terminated, truncated, {}))
    return samples


def _full_samples(rng: np.random.Generator, n: int) -> list[tuple[Any, ...]]:
    actions = _actions(rng, n)
    images = rng.integers(0, 255, size=(n + FULL_IMAGE_SHAPE[0], *FULL_IMAGE_SHAPE[1:]), dtype=np.uint8)
    rewards = np.clip(0.3 + 0.1 * rng.standard_normal(n), 0.0, 1.0).tolist()
    samples = []
    for t in range(n):
        obs = (
            np.array([2.0 * t], dtype=np.float32),
            np.array([min(5, 1 + t // 20)], dtype=np.float32),
            np.array([5000.0 + t], dtype=np.float32),
            images[t : t + FULL_IMAGE_SHAPE[0]][::-1].copy(),
            _previous(actions, t, 1),
            _previous(actions, t, 2),
        )
        terminated, truncated = _flags(t, n, truncate=True)
        samples.append((actions[t].copy(), obs, rewards[t], terminated, truncated, {"is_demo": True}))
    return samples
