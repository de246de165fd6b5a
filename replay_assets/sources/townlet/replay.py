"""A loaded Townlet episode: ``TownletReplay`` (what ``TownletRecordings.load`` returns) of ``TownletStep``.

Split out of ``sources/townlet/load.py``: these classes only hold an episode already read (an index row
and NumPy step arrays from ``townlet_files``) and play it back (``len``, iteration, ``seek``,
``columns``, ``tensors()``); they read no file. Users import them from ``datasets.townlet``.

Importing this module imports neither torch (only ``tensors()`` needs it) nor Dagster.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from replay_assets.sources.townlet.load_files import TownletRecordingRow, item_arrays

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class TownletStep:
    """One recorded step, with the recording's own values: ``position`` is ``()``, ``(x, y)`` or
    ``(x, y, z)``; meters and q-values are the float32 values as Python floats; the optional fields are
    None where the producer wrote nil. ``as_dict()`` gives the recording's step map exactly."""

    step: int
    position: tuple[int, ...]
    meters: tuple[float, ...]
    action: int
    reward: float
    intrinsic_reward: float
    done: bool
    q_values: tuple[float, ...] | None
    epsilon: float | None
    action_masks: tuple[bool, ...] | None
    time_of_day: int | None
    interaction_progress: float | None

    def as_dict(self) -> dict[str, Any]:
        """The step as the recording's msgpack map decodes (lists, not tuples)."""
        out = asdict(self)
        for key in ("position", "meters", "q_values", "action_masks"):
            if out[key] is not None:
                out[key] = list(out[key])
        return out


class TownletReplay:
    """One loaded episode: ``info`` (its index row) and its recorded steps.

    * ``len(episode)``, ``for step in episode``, ``episode[i]`` (``i``-th recorded step, negative from the
      end) go over the recorded steps in order, as ``TownletStep`` records. Where the producer dropped
      frames the step numbers jump: ``len`` is ``info.steps_recorded``, not ``survival_steps``.
    * ``seek(step)`` goes by step number: the record of the last recorded step ``<= step``, i.e. what
      the episode looked like at that step (a dropped frame shows the frame before it, as a player
      would). ``exact=True`` raises ``KeyError`` for a dropped step instead. A step before the first
      recorded one raises ``KeyError``; one outside the episode (``< 0`` or past both
      ``survival_steps - 1`` and the last recorded step) raises ``IndexError``. (The producer's own
      ``ReplayManager.seek`` takes a list index: that is ``episode[i]`` here.)
    * ``columns`` (and ``column(name)``): read-only NumPy arrays, one row per recorded step:
      ``step`` int32, ``position`` (n, D) int32 with D = 2 or 3 (0 if no step has one), ``meters``
      (n, M) float32, ``action`` int32, ``reward`` / ``intrinsic_reward`` float64, ``done`` bool,
      ``q_values`` (n, A) float32, ``epsilon`` float64, ``action_masks`` (n, A) bool, ``time_of_day``
      int32, ``interaction_progress`` float64. Where an optional field is null: NaN for floats, -1 for
      ints, False for bools, and ``present(name)`` is False (``OPTIONAL_FIELDS``).
    * ``tensors()``: the same as torch tensors in the dataset's item layout (see ``TownletStepDataset``).
    """

    def __init__(
        self,
        info: TownletRecordingRow,
        arrays: dict[str, np.ndarray],
        present: dict[str, np.ndarray],
        dims: np.ndarray,
    ) -> None:
        self.info = info
        self._arrays = arrays
        self._present = present
        self._dims = dims
        self._records: list[TownletStep] | None = None

    # -- metadata
    @property
    def episode_id(self) -> int:
        assert self.info.episode_id is not None
        return self.info.episode_id

    @property
    def checkpoint(self) -> str:
        return self.info.checkpoint

    @property
    def steps(self) -> np.ndarray:
        """The recorded step numbers, increasing."""
        return self._arrays["step"]

    @property
    def length(self) -> int:
        """Steps the episode lasted: ``survival_steps``, or more if more were recorded."""
        last = int(self.steps[-1]) + 1 if len(self.steps) else 0
        return max(self.info.survival_steps or 0, last)

    @property
    def missing_steps(self) -> np.ndarray:
        """Step numbers in ``range(length)`` the producer dropped."""
        return np.setdiff1d(np.arange(self.length, dtype=np.int64), self.steps.astype(np.int64))

    # -- columns
    @property
    def columns(self) -> dict[str, np.ndarray]:
        return dict(self._arrays)

    def column(self, name: str) -> np.ndarray:
        try:
            return self._arrays[name]
        except KeyError:
            raise KeyError(f"no column {name!r}; columns: {', '.join(self._arrays)}") from None

    def present(self, name: str) -> np.ndarray:
        """Per recorded step, whether the optional field ``name`` was recorded (not nil / not ``[]``)."""
        if name in self._present:
            return self._present[name]
        if name in self._arrays:
            return np.ones(len(self), dtype=bool)
        raise KeyError(f"no column {name!r}; columns: {', '.join(self._arrays)}")

    def tensors(self) -> dict[str, torch.Tensor]:
        import torch

        return {k: torch.from_numpy(np.array(v)) for k, v in item_arrays(self._arrays, self._present).items()}

    # -- steps
    def __len__(self) -> int:
        return len(self._arrays["step"])

    def _all_records(self) -> list[TownletStep]:
        if self._records is None:
            a, p = self._arrays, self._present
            positions = [
                tuple(xyz[:dim]) for xyz, dim in zip(a["position"].tolist(), self._dims.tolist(), strict=True)
            ]

            def optional(name: str, as_tuple: bool = False) -> list[Any]:
                values = a[name].tolist()
                return [
                    (tuple(v) if as_tuple else v) if has else None
                    for v, has in zip(values, p[name].tolist(), strict=True)
                ]

            self._records = [
                TownletStep(*fields)
                for fields in zip(
                    a["step"].tolist(), positions, map(tuple, a["meters"].tolist()), a["action"].tolist(),
                    a["reward"].tolist(), a["intrinsic_reward"].tolist(), a["done"].tolist(),
                    optional("q_values", True), optional("epsilon"), optional("action_masks", True),
                    optional("time_of_day"), optional("interaction_progress"), strict=True,
                )
            ]  # fmt: skip
        return self._records

    def __iter__(self) -> Iterator[TownletStep]:
        return iter(self._all_records())

    def __getitem__(self, index: int) -> TownletStep:
        i = operator.index(index)
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} recorded steps")
        return self._all_records()[i]

    def index_of(self, step: int, exact: bool = False) -> int:
        """The position (row) of ``seek(step)``'s record; same rules and errors as ``seek``."""
        s = operator.index(step)
        if not 0 <= s < self.length:
            raise IndexError(f"step {s} is outside episode {self.episode_id} (steps 0..{self.length - 1})")
        i = int(np.searchsorted(self.steps, s, side="right")) - 1
        if i < 0:
            raise KeyError(
                f"step {s} of episode {self.episode_id} precedes its first recorded step {self.steps[0]}"
            )
        if exact and self.steps[i] != s:
            raise KeyError(
                f"step {s} of episode {self.episode_id} was dropped by the producer "
                f"(last recorded before it: {self.steps[i]})"
            )
        return i

    def seek(self, step: int, exact: bool = False) -> TownletStep:
        """The last recorded step ``<= step`` (exactly ``step`` with ``exact=True``): see the class doc."""
        return self[self.index_of(step, exact)]

    def __repr__(self) -> str:
        return (
            f"TownletReplay(checkpoint={self.checkpoint!r}, episode_id={self.info.episode_id}, "
            f"steps_recorded={len(self)}, survival_steps={self.info.survival_steps})"
        )
