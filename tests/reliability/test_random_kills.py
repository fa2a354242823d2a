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


def _kill_at_random_moments(command, out, seed, parts_total):
    """Run `command` KILLS times, each SIGKILLed at a seeded random moment, then once more to
    the end. A moment is: a seeded number of manifest parts committed in all (increasing from
    kill to kill and below `parts_total`, so work is always left), then a random fraction of
    the time one part takes on this machine (mid-shard, between a shard and its part, ...):
    measured from the run itself, so the moments fall inside the run on fast and slow machines
    alike. Returns, for each kill that hit a running process, the parts committed by then."""
    rng = random.Random(seed)
    parts = out / ".datakit" / "parts"

    def committed():
        return len(list(parts.glob("*.parquet")))

    hits, pace = [], 0.1  # seconds per part, re-measured from each run's commits
    for target in sorted(rng.sample(range(parts_total - 1), KILLS)):
        process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        commits = []  # (time, count) each time the count changed
        deadline = time.monotonic() + 120
        while process.poll() is None and (now := committed()) < target:
            if not commits or commits[-1][1] != now:
                commits.append((time.monotonic(), now))
            assert time.monotonic() < deadline, "the run never got there"
            time.sleep(0.005)
        if len(commits) >= 3:  # the first change may include the start-up
            pace = (commits[-1][0] - commits[1][0]) / (commits[-1][1] - commits[1][1])
        time.sleep(rng.uniform(0.0, 1.0) * pace)
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
    hits = _kill_at_random_moments(command, out, seed, len(inputs) // 2)  # shard-size 2
    manifest = assert_accounted_for(out, inputs)
    assert (manifest["status"] == "ok").all(), manifest[manifest["status"] != "ok"]
    # Kills hit running processes, at least one after a commit: real resumes.
    assert len(hits) >= KILLS - 1 and max(hits) > 0, hits
