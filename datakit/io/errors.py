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


def require_extra(extra: str, what: str, *modules: str) -> None:
    """Refuse, in one line, work whose optional dependencies are not installed.

    Args:
        extra: the pyproject extra that installs them (`caption`, `generate`, `ray`).
        what: what needs them, for the message ("--captioner blip2").
        modules: importable names to look for (nothing is imported).

    Raises:
        UserError: a module is missing; the message names the install command.
    """
    import importlib.util

    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(f"{what} needs {', '.join(missing)}, which is not installed: "
                        f"pip install 'datakit[{extra}]'")
