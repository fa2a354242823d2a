"""Ray: a worker process killed mid-run (not the driver, which `tests/test_ray.py` kills).

The run is watched until it has committed a shard, then one of the Ray worker processes
running a task (`ray::Map(_RunStage)`, under the driver's local cluster) is SIGKILLed,
chosen with a seeded `random.Random`. Ray retries a task whose worker died, so the run should
finish by itself; if it fails instead, a rerun on the same OUT must. Either way: every input
once, no duplicates, every shard reads back.
"""

import os
import random
import signal
import subprocess
import sys
import time

import pytest
from helpers import assert_accounted_for, wait_for, write_photos

pytest.importorskip("ray", reason="the ray extra is not installed")
psutil = pytest.importorskip("psutil", reason="psutil (installed with ray) finds the workers")

IMAGES = 24


def _task_workers(driver: int) -> list[psutil.Process]:
    """Ray worker processes under the driver (its local cluster) running a datakit task
    (`ray::Map(_RunStage)`), not Ray's own agents and actors (`ray::DashboardAgent`,
    `ray::_StatsActor`: killing those takes the cluster down, which is another test) nor idle
    ones."""
    workers = []
    for child in psutil.Process(driver).children(recursive=True):
        try:
            title = child.cmdline()[0]
        except (psutil.NoSuchProcess, psutil.AccessDenied, IndexError):
            continue
        name = title.removeprefix("ray::")
        if title.startswith("ray::") and name != "IDLE" and not name.startswith("_") \
                and not name.endswith("Agent"):
            workers.append(child)
    return sorted(workers, key=lambda worker: worker.pid)


@pytest.mark.slow
def test_a_killed_ray_worker_loses_and_doubles_nothing(tmp_path):
    photos, out = tmp_path / "photos", tmp_path / "out"
    write_photos(photos, IMAGES)
    command = [sys.executable, "-m", "datakit.cli", "pan-zoom", str(photos), "--out", str(out),
               "--engine", "ray", "--workers", "2", "--shard-size", "2", "--size", "192x128",
               "--frames", "24", "--preset", "veryfast", "--quiet"]
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        parts = out / ".datakit" / "parts"
        wait_for(lambda: process.poll() is not None or any(parts.glob("*.parquet")),
                 timeout=180)
        # between two tasks every worker may be idle for a moment: look again until one is busy
        busy = []
        wait_for(lambda: process.poll() is not None or busy.extend(_task_workers(process.pid))
                 or busy, timeout=60)
        assert process.poll() is None, "the run ended before a worker could be killed"
        assert busy, "no busy Ray worker found under the driver"
        victim = random.Random(21).choice(busy)
        victim.send_signal(signal.SIGKILL)
        killed_at = len(list(parts.glob("*.parquet")))
        _, stderr = process.communicate(timeout=240)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert killed_at < IMAGES // 2, "the worker was killed after the last shard"
    if process.returncode != 0:  # the run gave up: a rerun must finish it
        assert "Traceback" not in stderr, stderr
        started = time.time()
        rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr
        assert time.time() - started < 300
    manifest = assert_accounted_for(out, {f"p{i:02d}" for i in range(IMAGES)})
    assert (manifest["status"] == "ok").all(), manifest[manifest["status"] != "ok"]
