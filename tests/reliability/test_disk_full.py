"""OUT on a full disk: the run stops with one clear line, keeps what it finished, and a
rerun after space is freed completes.

A small tmpfs is mounted as OUT's disk (root only; skipped with the reason elsewhere) and
filled by the run itself; ENOSPC while committing a manifest part or rebuilding
manifest.parquet is injected in-process, at the exact write.
"""

import errno
import os
import subprocess
import sys

import pytest
from helpers import assert_accounted_for, write_photos
from typer.testing import CliRunner

from datakit.cli import app
from datakit.io.atomic import atomic_file
from datakit.run.shards import verify_shards

IMAGES = 16
SETTINGS = ["--workers", "2", "--shard-size", "2", "--size", "256x160", "--frames", "16",
            "--preset", "ultrafast", "--quiet"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("disk") / "photos"
    write_photos(root, IMAGES)
    return root


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs: about half of what the run writes."""
    mount = tmp_path / "disk"
    mount.mkdir()
    tried = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                           capture_output=True, text=True)
    if tried.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {tried.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def _pan_zoom(photos, out):
    return subprocess.run([sys.executable, "-m", "datakit.cli", "pan-zoom", str(photos),
                           "--out", str(out), *SETTINGS], capture_output=True, text=True,
                          timeout=300)


def test_a_full_disk_stops_the_run_cleanly_and_a_rerun_finishes(photos, small_disk):
    out = small_disk / "out"
    full = _pan_zoom(photos, out)
    assert full.returncode == 1, full.stderr
    lines = full.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {out}: disk full"), full.stderr
    assert "rerun the same command" in lines[0]
    stopped = verify_shards(out)  # what was committed reads back, every clip decodes
    assert stopped.shards and not any(s.problems for s in stopped.shards)
    assert stopped.samples < IMAGES
    assert stopped.problems == ["incomplete: no stats.json, the run never finished; rerun "
                                "the same command"]
    assert not list(out.rglob("*.partial"))

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    rerun = _pan_zoom(photos, out)
    assert rerun.returncode == 0, rerun.stderr
    manifest = assert_accounted_for(out, {f"p{i:02d}" for i in range(IMAGES)})
    assert (manifest["status"] == "ok").all()


def _disk_fills_at(monkeypatch, target, after: int):
    """`manifests.store`'s atomic writes to paths matching `target` fail with ENOSPC after
    `after` of them succeeded, halfway through the file, as a full disk fails them."""
    import manifests.store

    real = manifests.store.atomic_write
    seen = []

    def write(path, data):
        if target(path):
            seen.append(path)
            if len(seen) > after:
                with atomic_file(path) as handle:
                    handle.write(data[: len(data) // 2])
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, data)

    monkeypatch.setattr(manifests.store, "atomic_write", write)


@pytest.mark.parametrize("where", ["part", "manifest"])
def test_a_full_disk_while_committing_the_manifest(photos, tmp_path, monkeypatch, where):
    out = tmp_path / "out"
    settings = [*SETTINGS[2:], "--workers", "1", "--size", "96x64", "--frames", "4"]
    if where == "part":
        _disk_fills_at(monkeypatch, lambda p: p.parent.name == "parts", after=2)
    else:
        _disk_fills_at(monkeypatch, lambda p: p.name == "manifest.parquet", after=0)
    result = CliRunner().invoke(app, ["pan-zoom", str(photos), "--out", str(out), *settings])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert f"error: {out}: disk full" in result.output
    assert not list(out.rglob("*.partial"))
    committed = len(list((out / ".datakit" / "parts").glob("*.parquet")))
    assert committed == (2 if where == "part" else IMAGES // 2)
    monkeypatch.undo()
    rerun = CliRunner().invoke(app, ["pan-zoom", str(photos), "--out", str(out), *settings])
    assert rerun.exit_code == 0, rerun.output
    manifest = assert_accounted_for(out, {f"p{i:02d}" for i in range(IMAGES)})
    assert (manifest["status"] == "ok").all()
