"""A real two-node Ray cluster on this machine, started as on any cluster: `ray start --head`
and `ray start --address` run from another folder than the command, with token
authentication on. SRC and OUT are typed as relative paths, as users type them; the shards
must be byte-identical to the local engine's.

Ray maps 127.0.0.1 to the machine's network address, so the nodes take 127.0.0.2 and
127.0.0.3 (loopback addresses it leaves alone). Each `ray start` runs in its own process
group, which the test kills at the end: `ray stop` would stop every Ray process of the
machine, other runs' included.
"""

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from helpers import write_photos

pytest.importorskip("ray", reason="the ray extra is not installed")

FAST = ["--size", "96x64", "--frames", "4", "--fps", "4", "--preset", "ultrafast", "--quiet",
        "--workers", "2", "--shard-size", "2"]
RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.2", 0))
        return probe.getsockname()[1]


def _ray_start(args: list[str], cwd: Path, env: dict) -> subprocess.Popen:
    process = subprocess.Popen([RAY, "start", *args], cwd=cwd, env=env, start_new_session=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output = process.communicate(timeout=120)[0]
    except subprocess.TimeoutExpired:
        output = "ray start did not finish in 120 s"
    if process.returncode != 0:
        _stop([process])
        pytest.skip(f"ray cannot start here: {output.strip().splitlines()[-1:]}")
    return process


def _stop(processes: list[subprocess.Popen]) -> None:
    """SIGTERM, then SIGKILL, each `ray start`'s process group (its daemons stay in it)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
        if sig == signal.SIGTERM:
            time.sleep(3)


@contextlib.contextmanager
def two_node_cluster(cwd: Path, env: dict):
    """A head (127.0.0.2) and one more node (127.0.0.3), 1 CPU each; yields the address."""
    if not os.access(RAY, os.X_OK):
        pytest.skip("no ray command beside this python")
    temp = tempfile.mkdtemp(prefix="dkray", dir="/tmp")  # Ray's socket paths must be short
    port = _free_port()
    common = ["--num-cpus", "1", "--object-store-memory", str(80 * 2**20),
              "--disable-usage-stats", "--temp-dir", temp]
    started: list[subprocess.Popen] = []
    try:
        started.append(_ray_start(["--head", "--port", str(port), "--node-ip-address",
                                   "127.0.0.2", "--include-dashboard", "false", *common],
                                  cwd, env))
        started.append(_ray_start(["--address", f"127.0.0.2:{port}", "--node-ip-address",
                                   "127.0.0.3", *common], cwd, env))
        yield f"127.0.0.2:{port}"
    finally:
        _stop(started)
        shutil.rmtree(temp, ignore_errors=True)


def _tars(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "shards").glob("*.tar"))}


@pytest.mark.timeout(480)
def test_relative_src_and_out_on_a_two_node_cluster_match_the_local_engine(tmp_path):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    write_photos(project / "photos", 4)
    elsewhere.mkdir()
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16),
               PYTHONPATH=os.pathsep.join(sys.path))  # the nodes import this datakit
    pan_zoom = [sys.executable, "-m", "datakit.cli", "pan-zoom", "photos", *FAST]
    with two_node_cluster(elsewhere, env) as address:
        joined = subprocess.run([*pan_zoom, "--out", "ray-out", "--engine", "ray",
                                 "--ray-address", address], cwd=project, env=env,
                                capture_output=True, text=True, timeout=300)
        assert joined.returncode == 0, joined.stderr[-3000:]
        no_token = {k: v for k, v in env.items() if k != "RAY_AUTH_TOKEN"}
        refused = subprocess.run([*pan_zoom, "--out", "refused", "--engine", "ray",
                                  "--ray-address", address], cwd=project, env=no_token,
                                 capture_output=True, text=True, timeout=120)
    local = subprocess.run([*pan_zoom, "--out", "local-out"], cwd=project, env=env,
                           capture_output=True, text=True, timeout=120)
    assert local.returncode == 0, local.stderr
    assert _tars(project / "ray-out") == _tars(project / "local-out")
    assert len(_tars(project / "ray-out")) == 2  # 4 clips, 2 per shard
    [line] = [x for x in refused.stderr.splitlines() if x.startswith("error:")]
    assert refused.returncode == 2 and f"cannot join the Ray cluster at {address}" in line
