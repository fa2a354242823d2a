"""Pan-zoom on the inputs and options users actually give it (issue: the core under real use)."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import webdataset as wds
from PIL import Image
from skimage import data
from typer.testing import CliRunner

from datakit.cli import app, split_pairs
from datakit.io.video import read_frames

FAST = ["--size", "128x80", "--frames", "6", "--fps", "6", "--preset", "ultrafast", "--quiet",
        "--workers", "1"]


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _samples(out):
    return {s["__key__"]: s for tar in sorted((out / "shards").glob("*.tar"))
            for s in wds.WebDataset(str(tar), shardshuffle=False, empty_check=False)}


def test_ranges_take_the_form_the_help_shows(tmp_path):
    assert split_pairs(["--zoom-range", "1.1,1.3", "--speed-range=0.1,0.2", "--x", "1,2"]) == [
        "--zoom-range", "1.1", "1.3", "--speed-range", "0.1", "0.2", "--x", "1,2"]
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(data.coffee()).save(src / "coffee.jpg")
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "datakit.cli", "pan-zoom", str(src), "--out",
                             str(out), "--zoom-range", "1.1,1.3", "--speed-range=0.1,0.2",
                             *FAST], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    config = json.loads((out / ".datakit" / "config.json").read_text())
    assert config["zoom_range"] == [1.1, 1.3] and config["speed_range"] == [0.1, 0.2]


def test_capped_speed_is_noted_and_the_used_speed_recorded(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(data.coffee()).save(src / "coffee.jpg")
    out = tmp_path / "out"
    result = _invoke("pan-zoom", src, "--out", out, "--motions", "pan-left", "--speed-range",
                     "5", "10", *FAST)
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "1 x speed capped to fit the image" in said
    row = pd.read_parquet(out / "manifest.parquet").iloc[0]
    assert list(row["notes"]) == ["speed capped to fit the image"]
    camera = json.loads(_samples(out)["coffee"]["json"])["camera"]
    assert camera["capped"] == ["speed"] and 0 < camera["speed"] < 5


def test_a_panorama_is_panned_end_to_end(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(np.tile(data.astronaut()[:200], (1, 8, 1))).save(src / "pano.jpg")  # 4096x200
    out = tmp_path / "out"
    assert _invoke("pan-zoom", src, "--out", out, "--motions", "zoom-in", *FAST).exit_code == 0
    camera = json.loads(_samples(out)["pano"]["json"])["camera"]
    assert camera["panorama"] is True and camera["motion"] in ("pan-left", "pan-right")
    # zoom 1: the window is the full height, 200 * 1.6 = 320 px = 0.078 of the width
    width = 320 / 4096
    assert abs(camera["start"]["width"] - width) < 1e-6
    starts_ends = sorted([camera["start"]["cx"], camera["end"]["cx"]])
    assert abs(starts_ends[0] - width / 2) < 1e-6 and abs(starts_ends[1] - (1 - width / 2)) < 1e-6


def test_transparent_images_use_the_background_and_say_so(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rgba = np.zeros((200, 320, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[:, 160:, 3] = 255  # the left half fully transparent
    Image.fromarray(rgba, "RGBA").save(src / "half.png")
    out = tmp_path / "out"
    result = _invoke("pan-zoom", src, "--out", out, "--background", "0,0,255", "--motions",
                     "zoom-in", "--zoom-range", "1.0", "1.0", *FAST)
    assert result.exit_code == 0, result.output
    sample = _samples(out)["half"]
    assert json.loads(sample["json"])["alpha"] == {"composited": True,
                                                  "background": [0, 0, 255]}
    frame = read_frames(sample["mp4"])[0].astype(int)
    assert np.abs(frame[40, 10] - [0, 0, 255]).max() < 12  # the transparent side is blue
    assert np.abs(frame[40, 118] - [200, 200, 200]).max() < 12
    row = pd.read_parquet(out / "manifest.parquet").iloc[0]
    assert "transparent: composited over rgb(0, 0, 255)" in list(row["notes"])
    bad = _invoke("pan-zoom", src, "--out", tmp_path / "o2", "--background", "blue-ish", *FAST)
    assert bad.exit_code == 2 and "--background: expected" in bad.output


def test_max_pixels_raises_the_bomb_limit(tmp_path):
    from test_images import handmade_png

    src = tmp_path / "src"
    src.mkdir()
    (src / "big.png").write_bytes(handmade_png(12000, 10000, 8, 0, b"\0" * 64))  # 120 MP
    out = tmp_path / "out"
    assert _invoke("pan-zoom", src, "--out", out, *FAST).exit_code == 1  # its only input failed
    error = pd.read_parquet(out / "manifest.parquet").iloc[0]["error"]
    assert error.startswith("decompression bomb: 120000000 pixels > limit 100000000")
    assert "--max-pixels" in error
    raised = tmp_path / "raised"
    assert _invoke("pan-zoom", src, "--out", raised, "--max-pixels", "200000000",
                   *FAST).exit_code == 1
    error = pd.read_parquet(raised / "manifest.parquet").iloc[0]["error"]
    assert not error.startswith("decompression bomb")  # decoded (and found broken) instead
