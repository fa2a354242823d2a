"""The `datakit` command line: one module per command, each a thin adapter over one library
function. Heavy libraries (torch, diffusers, cv2, av) are imported inside the commands, so
`--help` starts fast."""

from __future__ import annotations

import sys

import typer

from datakit.cli import (  # noqa: F401  (importing a command module registers it)
    caption,
    check,
    demo,
    generate,
    pan_zoom,
    report,
    shards,
    watermark,
)
from datakit.cli.options import app, ignore_signals_while_exiting


def _exit_on_sigterm(signum, frame) -> None:
    ignore_signals_while_exiting()
    raise SystemExit(128 + signum)


PAIR_OPTIONS = ("--zoom-range", "--speed-range")


def split_pairs(argv: list[str]) -> list[str]:
    """`--zoom-range 1.1,1.25` (as the help and defaults show a pair) becomes the two values
    the option takes, `--zoom-range 1.1 1.25`, which keeps working as it is."""
    out: list[str] = []
    for index, token in enumerate(argv):
        name, equals, value = token.partition("=")
        previous = argv[index - 1] if index else ""
        if name in PAIR_OPTIONS and equals and "," in value:
            out += [name, *value.split(",", 1)]
        elif previous in PAIR_OPTIONS and "," in token:
            out += token.split(",", 1)
        else:
            out.append(token)
    return out


def main() -> None:
    """Console entry point: user errors become one line on stderr, never a traceback."""
    # A run stopped at once (a second Ctrl-C) leaves its worker pool's semaphores to
    # multiprocessing's resource tracker, which cleans them up and warns about it; the
    # tracker is started with these options (`-W`), so the warning stays out of the output.
    sys.warnoptions.append("ignore:resource_tracker:UserWarning")
    # SIGTERM outside a run's own handling (before it starts, while the summary prints) ends
    # the command as SIGINT does: no traceback, exit 143, atomic writes cleaned up.
    import signal

    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        app(args=split_pairs(sys.argv[1:]))
    except KeyboardInterrupt:
        ignore_signals_while_exiting()
        typer.echo("interrupted", err=True)
        sys.exit(130)
    finally:
        # The work is done: a signal arriving during the interpreter's finalization (which
        # restores the default action of handlers set from Python, but not of ignored
        # signals) must not turn a finished run into "killed by SIGTERM".
        ignore_signals_while_exiting()


if __name__ == "__main__":
    main()
