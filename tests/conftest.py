"""Shared by every test folder: pytest puts this folder on `sys.path`, so tests import
`helpers` (and each other's builders, e.g. `test_images.handmade_png`) from any subfolder."""

import faulthandler
import os

import pytest

# pytest-timeout's thread needs the GIL to dump the stacks and exit: a hang inside C code that
# holds it (twice CI sat out its 90 minutes that way) never lets it run. faulthandler's
# watchdog is a C thread: it dumps every thread's stack and exits with or without the GIL.
HARD_MARGIN_S = 60
_HARD_STDERR = pytest.StashKey()


def pytest_configure(config):
    # (fd 2 is the real stderr here: capture is suspended between conftest loading and tests)
    config.stash[_HARD_STDERR] = os.fdopen(os.dup(2), "w")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    marker = item.get_closest_marker("timeout")
    try:
        limit = float(marker.args[0] if marker and marker.args else item.config.getini("timeout"))
    except ValueError:  # pytest-timeout (the dev extra) is not installed: no limit is set
        limit = 0.0
    if limit > 0:
        faulthandler.dump_traceback_later(limit + HARD_MARGIN_S, exit=True,
                                          file=item.config.stash[_HARD_STDERR])
    try:
        return (yield)
    finally:
        faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """`tiny(family)`: a tiny random diffusers pipeline of that family, built on first use and
    shared by the module's tests (a module may define its own `tiny` instead)."""
    from generate.tiny import build_tiny_pipeline

    root = tmp_path_factory.mktemp("tiny")
    built = {}

    def get(family: str):
        if family not in built:
            built[family] = build_tiny_pipeline(root / family, family)
        return built[family]

    return get
