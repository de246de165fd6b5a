"""``gc_paused()``: decode a file with Python's cyclic garbage collector off.

Decoders that build millions of small containers (parsed JSON, unpickled runs) trigger collections that
re-scan all of them and find nothing: the trees they build hold no cycles. Never hold it across a
``yield``: the pause must end with the decode, not when a consumer resumes.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["gc_paused"]


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
