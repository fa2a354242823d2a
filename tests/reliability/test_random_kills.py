"""SIGKILL at several seeded random moments, rerun on the same OUT each time, then finish.

`tests/test_pipeline.py` kills once at fixed points; here each pipeline is killed (the whole
process group: main process, fork server, workers) at a few moments a seeded
`random.Random` picks, so kills land anywhere: during start-up, while a shard is being
written, between a shard and its manifest part, while the manifest is rebuilt. Whatever the
moments, the last run must leave every input with exactly one manifest row, every ok key in
exactly one shard, every shard readable, and no temporary file.
"""

import os
import random
import signal
import subprocess
import sys
import time

import pytest
from corpus import encode
from helpers import assert_accounted_for, live_group, wait_for, write_photos

KILLS = 4


def _photos(root, count=32):
    return write_photos(root, count)


def _videos(root, count=16):
    for i in range(count):
        encode(root / ("walking" if i % 2 else "running") / f"v{i:02d}.mp4", count=16,
               size=(128, 96))
    return {f"{'walking' if i % 2 else 'running'}__v{i:02d}" for i in range(count)}


def _kill_at_random_moments(command, out, seed):
    """Run `command` KILLS times, each SIGKILLed at a seeded random moment, then once more to
    the end. A moment is: `grow` more manifest parts committed (0: during start-up or the
    first shard), then a random `jitter` (mid-shard, between a shard and its part, ...).
    Returns, for each kill that hit a running process, the parts committed by then."""
    rng = random.Random(seed)
    parts = out / ".datakit" / "parts"

    def committed():
        return len(list(parts.glob("*.parquet")))

    hits = []
    for _ in range(KILLS):
        grow, jitter = rng.randint(0, 2), rng.uniform(0.0, 0.5)
        before = committed()
        process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        wait_for(lambda p=process, b=before, g=grow: p.poll() is not None or committed() >= b + g,
                 timeout=120)
        time.sleep(jitter)
        if process.poll() is None:
            hits.append(committed())
        os.killpg(process.pid, signal.SIGKILL)  # the group: workers and fork server too
        process.wait()
        wait_for(lambda pgid=process.pid: not live_group(pgid), timeout=10)
    final = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    return hits


@pytest.mark.parametrize("pipeline,seed", [("pan-zoom", 11), ("caption", 12)])
def test_sigkill_at_random_moments_then_rerun_loses_and_doubles_nothing(tmp_path, pipeline,
                                                                        seed):
    src, out = tmp_path / "src", tmp_path / "out"
    command = [sys.executable, "-m", "datakit.cli", pipeline, str(src), "--out", str(out),
               "--workers", "2", "--shard-size", "2", "--quiet"]
    if pipeline == "pan-zoom":
        inputs = _photos(src)
        command += ["--size", "192x128", "--frames", "24", "--preset", "veryfast"]
    else:
        inputs = _videos(src)
        command += ["--captioner", "label", "--size", "128x96", "--batch-size", "2"]
    hits = _kill_at_random_moments(command, out, seed)
    manifest = assert_accounted_for(out, inputs)
    assert (manifest["status"] == "ok").all(), manifest[manifest["status"] != "ok"]
    # Kills hit running processes, at least one after a commit: real resumes. (How many hit
    # depends on the machine's speed: a fast one may finish before the last kills.)
    assert len(hits) >= 2 and max(hits) > 0, hits
