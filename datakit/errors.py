"""Errors that are the user's to fix, kept apart from bugs.

The CLI prints a `UserError` as one line on stderr and exits with its code, never a traceback;
any other exception is a bug and propagates.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input (a missing folder, a malformed file, an impossible setting).

    Args:
        message: one line saying what is wrong and where.
        exit_code: 2 for bad arguments or inputs, 1 for an expected failure of the job.
    """

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code
