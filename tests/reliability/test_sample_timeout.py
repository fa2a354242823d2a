"""A decoder that hangs, stopped by `--sample-timeout`, through the CLI.

`tests/test_caption_keyframes.py` times out a stage function handed to the engine directly;
here the real `datakit caption` command runs with a PyAV that never returns from opening one
of the files (a hook in the interpreters the run starts: main process, fork server,
workers), as a decoder stuck on a damaged stream or a stalled network mount does. That input
must become a `failed` row saying it timed out, its worker must be killed (no process of the
run left behind), and the other inputs must come out as if nothing happened.
"""

import os
import subprocess
import sys
import time

from corpus import encode
from helpers import assert_accounted_for, live_group, summary_counts, wait_for

HOOK = '''
import os
import time

import datakit.io.video

_open = datakit.io.video.open_container


def _hanging_open(source):
    if not isinstance(source, bytes) and os.environ["DATAKIT_TEST_HANG"] in os.fspath(source):
        time.sleep(3600)  # a decoder that never returns
    return _open(source)


datakit.io.video.open_container = _hanging_open
'''


def test_a_hanging_decoder_times_out_and_the_run_goes_on(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    names = ["a", "b", "stuck", "c", "d", "e"]
    for name in names:
        encode(src / "walking" / f"{name}.mp4")
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOOK)
    env = {**os.environ, "DATAKIT_TEST_HANG": "stuck.mp4",
           "PYTHONPATH": f"{hook}:{os.environ.get('PYTHONPATH', '')}"}
    command = [sys.executable, "-m", "datakit.cli", "caption", str(src), "--out", str(out),
               "--workers", "2", "--sample-timeout", "3", "--batch-size", "2", "--quiet",
               "--captioner", "label"]
    started = time.time()
    process = subprocess.Popen(command, env=env, start_new_session=True, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, stderr = process.communicate(timeout=120)
    assert time.time() - started < 60
    assert process.returncode == 0, stderr  # a timed-out input is counted, not fatal
    wait_for(lambda: not live_group(process.pid), timeout=10)  # the stuck worker was killed
    manifest = assert_accounted_for(out, {f"walking__{name}" for name in names})
    rows = manifest.set_index("key")
    assert rows.loc["walking__stuck", "status"] == "failed"
    assert rows.loc["walking__stuck", "error"].startswith("timeout: no result after 3 s")
    assert (rows.drop("walking__stuck")["status"] == "ok").all()
    assert summary_counts(stderr)["failed"] == 1 and summary_counts(stderr)["ok"] == 5
    assert "Traceback" not in stderr
