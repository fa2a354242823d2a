"""Stopping a run the way users and schedulers do: Ctrl-C (once, twice), SIGTERM, SIGKILL.

Each test starts `datakit pan-zoom` in its own process group, signals the group (as a
terminal, `timeout`, Slurm or Kubernetes does) at a seeded random moment after the run got
going, and checks: the run exits within seconds with the shell's code (130, 143), prints no
traceback, leaves no live process of its group, and a rerun finishes with every input
accounted for exactly once and every shard readable.
"""

import os
import random
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from helpers import live_group, write_photos

from datakit.run.shards import verify_shards

IMAGES = 24


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("signals") / "photos"
    write_photos(root, IMAGES)
    return root


def _command(photos, out, frames=12):
    return [sys.executable, "-m", "datakit.cli", "pan-zoom", str(photos), "--out", str(out),
            "--workers", "2", "--shard-size", "2", "--size", "192x128", "--frames", str(frames),
            "--preset", "veryfast", "--quiet"]


def _wait(condition, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def _start_and_wait_for_progress(photos, out, seed, frames=12):
    process = subprocess.Popen(_command(photos, out, frames), start_new_session=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    parts = out / ".datakit" / "parts"
    assert _wait(lambda: parts.is_dir() and any(parts.glob("*.parquet")), 90), \
        "the run never committed a shard"
    time.sleep(random.Random(seed).uniform(0.0, 1.0))  # a seeded random moment
    return process


def _rerun_accounts_for_everything(photos, out, frames=12):
    rerun = subprocess.run(_command(photos, out, frames), capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert len(manifest) == IMAGES and manifest["key"].is_unique
    assert (manifest["status"] == "ok").all()
    report = verify_shards(out)
    assert report.ok and report.samples == IMAGES
    assert not list(out.rglob("*.partial"))  # no temp file left behind


@pytest.mark.parametrize("seed,signals,gap", [
    (1, (signal.SIGINT,), 0.0),
    (2, (signal.SIGTERM,), 0.0),
    (3, (signal.SIGINT, signal.SIGINT), 0.3),
    (4, (signal.SIGINT, signal.SIGINT), 0.05),
    (5, (signal.SIGTERM, signal.SIGTERM), 0.05),
])
def test_signals_to_the_group_stop_cleanly(photos, tmp_path, seed, signals, gap):
    out = tmp_path / "out"
    process = _start_and_wait_for_progress(photos, out, seed)
    for number, current in enumerate(signals):
        if number:
            time.sleep(gap)
        os.killpg(process.pid, current)
    try:
        _, stderr = process.communicate(timeout=30 if len(signals) == 1 else 10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail(f"the run did not stop after {[s.name for s in signals]}")
    assert process.returncode in (0, 128 + signals[0]), stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    assert _wait(lambda: not live_group(process.pid), 10), live_group(process.pid)
    if "stopped" in stderr:  # else the run had finished when the signal came
        # A second signal stops at once, unless the first one's clean stop was already done.
        said = [f"stopped by {signals[0].name}"]
        if len(signals) == 2:
            said.append("stopped at once")
        assert any(text in stderr for text in said), stderr
        assert process.returncode == 128 + signals[0], stderr
        assert (out / "manifest.parquet").is_file()  # written on the way out
    _rerun_accounts_for_everything(photos, out)


def test_workers_exit_when_the_main_process_is_killed(photos, tmp_path):
    out = tmp_path / "out"
    process = _start_and_wait_for_progress(photos, out, seed=6, frames=96)  # still running
    assert process.poll() is None, "the run ended before the kill: give it more work"
    assert len(live_group(process.pid)) > 1  # main, fork server, workers
    os.kill(process.pid, signal.SIGKILL)  # the main process alone: nothing can clean up
    process.wait()
    assert _wait(lambda: not live_group(process.pid), 10), live_group(process.pid)
    _rerun_accounts_for_everything(photos, out, frames=96)


def test_a_stopped_watermark_run_exits_like_the_other_pipelines(tmp_path, monkeypatch):
    """`watermark` re-processes shards through the same pipeline: stopped by a signal, it
    exits 128 + the signal too (it used to exit 0)."""
    from typer.testing import CliRunner

    import synthesize.watermark
    from datakit.cli import app

    stats = {"status": {"ok": 1}, "errors": {}, "run": {"processed": 1, "seconds": 1.0,
             "per_second": 1.0}, "interrupted": True, "stopped_by": "SIGTERM"}
    monkeypatch.setattr(synthesize.watermark, "watermark_shards", lambda *a, **k: stats)
    (tmp_path / "shards").mkdir()
    result = CliRunner().invoke(app, ["watermark", str(tmp_path / "shards"), "--out",
                                      str(tmp_path / "out")])
    assert result.exit_code == 143, result.output
    assert "stopped by SIGTERM" in result.output
