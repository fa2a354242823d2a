"""Inputs that are not regular files.

Opening a FIFO for reading blocks until some writer appears, so a named pipe called
`x.jpg` (or a device node, or a socket) among the inputs would hang whatever reads it, the
main process included when it is a sidecar or a shard. Readers ask `special_kind` first
and turn a special file into a reason instead.
"""

from __future__ import annotations

import os
import stat

_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISDIR, "a folder"),
)


def special_kind(path: str | os.PathLike) -> str | None:
    """What `path` is when it exists and is not a regular file ("a FIFO (named pipe)", ...);
    None for a regular file, and for a path that cannot be looked at (the reader says why)."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode):
        return None
    return next((kind for test, kind in _KINDS if test(mode)), "not a regular file")
