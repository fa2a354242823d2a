"""The Ray engine: the same outputs as the local engine, and resume after a killed driver."""

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from helpers import write_photos
from PIL import Image
from skimage import data
from typer.testing import CliRunner

from datakit.cli import app
from datakit.cli.samples import write_sample_videos
from datakit.run.shards import verify_shards

pytest.importorskip("ray", reason="the ray extra is not installed")

FAST = ["--size", "96x64", "--frames", "4", "--fps", "4", "--preset", "ultrafast", "--quiet",
        "--workers", "2", "--shard-size", "3"]


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _tars(out):
    return {p.name: p.read_bytes() for p in sorted((out / "shards").glob("*.tar"))}


def test_ray_and_local_write_the_same_bytes(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, name in enumerate(["astronaut", "chelsea", "coffee", "rocket", "camera"]):
        Image.fromarray(getattr(data, name)()).save(photos / f"{i}_{name}.jpg", quality=85)
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    videos = tmp_path / "videos"
    write_sample_videos(videos, seconds=1, size=(96, 64))
    for command, src, extra in (("pan-zoom", photos, FAST),
                                ("caption", videos, ["--quiet", "--workers", "2", "--captioner",
                                                     "label", "--shard-size", "3",
                                                     "--batch-size", "2"])):
        local, ray = tmp_path / f"{command}-local", tmp_path / f"{command}-ray"
        assert _invoke(command, src, "--out", local, *extra).exit_code == 0
        result = _invoke(command, src, "--out", ray, "--engine", "ray", *extra)
        assert result.exit_code == 0, result.output
        assert _tars(ray) == _tars(local)  # same keys, captions and clips, byte for byte
        columns = ["key", "status", "error", "caption", "shard"]
        assert pd.read_parquet(ray / "manifest.parquet")[columns].equals(
            pd.read_parquet(local / "manifest.parquet")[columns])
        assert verify_shards(ray).ok
    # re-processing shards: the records carry the samples' bytes, not paths
    flagged = ["--watermarks", "flag", "--quiet", "--workers", "2", "--shard-size", "3"]
    local, ray = tmp_path / "watermark-local", tmp_path / "watermark-ray"
    shards = tmp_path / "pan-zoom-local" / "shards"
    assert _invoke("watermark", shards, "--out", local, *flagged).exit_code == 0
    result = _invoke("watermark", shards, "--out", ray, "--engine", "ray", *flagged)
    assert result.exit_code == 0, result.output
    assert _tars(ray) == _tars(local) and len(_tars(ray)) == 2
    assert verify_shards(ray).ok


def test_a_killed_ray_driver_resumes_without_duplicates_or_gaps(tmp_path):
    photos = tmp_path / "photos"
    write_photos(photos, 24)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "datakit.cli", "pan-zoom", str(photos), "--out", str(out),
               "--engine", "ray", "--workers", "2", "--shard-size", "2", "--size", "128x80",
               "--frames", "8", "--preset", "ultrafast", "--quiet"]
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    parts = out / ".datakit" / "parts"
    deadline = time.time() + 180
    while time.time() < deadline and len(list(parts.glob("*.parquet"))) < 2:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the driver and the Ray processes it started
    process.wait()
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert len(manifest) == 24 and manifest["key"].is_unique
    assert (manifest["status"] == "ok").all()
    report = verify_shards(out)
    assert report.ok and report.samples == 24
