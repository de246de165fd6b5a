"""Local files that appear complete or not at all: written under a hidden temporary name beside the
target, fsynced, then renamed over it. The warehouse's Parquet partitions and tmrl's ``data.pkl`` export
both go through here.

The temporary name starts with ``.`` and ends with ``.tmp``, so folder readers (pyarrow, pandas, polars
globs of ``*.parquet``, Hugging Face ``datasets``) never see a file being written.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from typing import BinaryIO

__all__ = ["atomic_write", "publish", "temporary_name", "written_beside"]


def temporary_name(target: str) -> str:
    """A fresh hidden name in ``target``'s folder (same filesystem, so the final rename is atomic)."""
    folder, name = os.path.split(target)
    return os.path.join(folder, f".{name}.{uuid.uuid4().hex}.tmp")


@contextlib.contextmanager
def written_beside(target: str) -> Iterator[tuple[BinaryIO, str]]:
    """``(sink, temporary path)``: the bytes written to ``sink`` are on disk (fsynced) when the block
    ends; on error the temporary file is removed. Publishing it is the caller's choice (``publish``)."""
    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    tmp = temporary_name(target)
    try:
        with open(tmp, "wb") as sink:
            yield sink, tmp
            sink.flush()
            os.fsync(sink.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def publish(tmp: str, target: str, *, overwrite: bool = True) -> None:
    """Rename ``tmp`` over ``target`` (``overwrite``), or hard-link it into place, which fails with
    ``FileExistsError`` if ``target`` appeared meanwhile. ``tmp`` is gone afterwards either way."""
    try:
        if overwrite:
            os.replace(tmp, target)
            return
        try:
            os.link(tmp, target)
        except FileExistsError:
            raise
        except OSError:  # no hard links on this filesystem: check, then rename
            if os.path.exists(target):
                raise FileExistsError(target) from None
            os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


@contextlib.contextmanager
def atomic_write(target: str, *, overwrite: bool = True) -> Iterator[BinaryIO]:
    """A sink whose bytes replace ``target`` at once when the block ends without error."""
    with written_beside(target) as (sink, tmp):
        yield sink
    publish(tmp, target, overwrite=overwrite)
