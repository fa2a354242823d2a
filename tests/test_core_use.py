"""More of the core as a new user meets it: odd inputs, the summary, installs without torch."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from skimage import data
from typer.testing import CliRunner

from datakit.cli import app
from datakit.cli.options import print_summary

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--size", "96x64", "--frames", "4", "--fps", "4", "--preset", "ultrafast",
        "--workers", "1"]


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_gif_inputs_give_clips(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    frames = [Image.fromarray(np.roll(data.chelsea(), 20 * i, axis=1)) for i in range(3)]
    frames[0].save(src / "cat.gif", save_all=True, append_images=frames[1:])
    out = tmp_path / "out"
    assert _invoke("pan-zoom", src, "--out", out, "--quiet", *FAST).exit_code == 0
    row = pd.read_parquet(out / "manifest.parquet").iloc[0]
    assert row["key"] == "cat" and row["status"] == "ok"


def test_summary_says_how_many_reasons_it_leaves_out(capsys):
    errors = {f"kind {i}": 20 - i for i in range(14)}
    stats = {"status": {"ok": 1, "failed": 200}, "errors": errors, "error_kinds": 14,
             "run": {"processed": 201, "seconds": 2.0, "per_second": 100.5}}
    print_summary(stats, Path("out"), "pan-zoom")
    said = " ".join(capsys.readouterr().err.split())
    assert "the 10 most common of 14 kinds" in said and "kind 9" in said
    assert "kind 10" not in said and "start-up included" in said


def test_a_no_op_resume_shows_no_empty_bar(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(data.coffee()).save(src / "coffee.jpg")
    out = tmp_path / "out"
    assert _invoke("pan-zoom", src, "--out", out, "--quiet", *FAST).exit_code == 0
    again = _invoke("pan-zoom", src, "--out", out, *FAST)
    assert again.exit_code == 0 and "0/0" not in again.output


def test_pan_zoom_and_label_captions_run_without_torch(tmp_path):
    """The base install has no torch, transformers or diffusers: block them and run."""
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\nfor name in ('torch', 'transformers', 'diffusers'):\n"
        "    sys.modules[name] = None  # import fails as if not installed\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), str(ROOT)])}
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(data.coffee()).save(src / "coffee.jpg")
    videos = tmp_path / "videos" / "drinking_coffee"
    videos.mkdir(parents=True)
    from datakit.io.video import encode_video

    (videos / "a.mp4").write_bytes(encode_video(
        [np.full((64, 96, 3), 10 * i, np.uint8) for i in range(8)], 8, preset="ultrafast"))
    run = [sys.executable, "-m", "datakit.cli"]
    for args in (["pan-zoom", str(src), "--out", str(tmp_path / "p"), "--quiet", *FAST],
                 ["caption", str(videos.parent), "--out", str(tmp_path / "c"), "--quiet",
                  "--workers", "1", "--captioner", "label"]):
        result = subprocess.run(run + args, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    model = subprocess.run(run + ["caption", str(videos.parent), "--out", str(tmp_path / "m"),
                                  "--captioner", "blip2", "--model", "x/y"],
                           env=env, capture_output=True, text=True)
    assert model.returncode == 2
    assert "pip install 'datakit[caption]'" in model.stderr and "Traceback" not in model.stderr


def test_one_opencv_and_heavy_libraries_only_in_extras():
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads TOML")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = [r.split(">")[0].split("[")[0].split("=")[0].strip().lower()
            for r in project["dependencies"]]
    assert [name for name in base if "opencv" in name] == ["opencv-python-headless"]
    assert "scenedetect" not in base  # it would pull a second cv2 (opencv-python)
    for heavy in ("torch", "transformers", "diffusers"):
        assert heavy not in base
    extras = project["optional-dependencies"]
    assert any(r.startswith("torch") for r in extras["caption"])
    assert any(r.startswith("diffusers") for r in extras["generate"])
    (own,) = [r for r in extras["dev"] if r.startswith("datakit[")]
    assert set(own[len("datakit["):-1].split(",")) == {"caption", "generate", "ray", "heif"}
