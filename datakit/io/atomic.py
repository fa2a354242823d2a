"""Files that appear under their final name only when complete.

Write to a temporary name in the same folder, fsync, then rename: a reader (or a rerun after
SIGKILL) sees either nothing or the whole file, never half of one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

TEMP_SUFFIX = ".partial"


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename inside `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open `path` for binary writing; it is renamed into place only if the block succeeds."""
    path = Path(path)
    temp = path.with_name(path.name + TEMP_SUFFIX)
    handle = open(temp, "wb")  # noqa: SIM115 - closed below on every path
    try:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        os.replace(temp, path)
        fsync_dir(path.parent)
    except BaseException:
        handle.close()
        temp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    with atomic_file(path) as handle:
        handle.write(data.encode() if isinstance(data, str) else data)


def remove_partials(folder: str | os.PathLike) -> list[Path]:
    """Delete leftovers of writes that were killed midway; return what was removed."""
    removed = []
    for temp in Path(folder).glob(f"*{TEMP_SUFFIX}"):
        temp.unlink(missing_ok=True)
        removed.append(temp)
    return removed
