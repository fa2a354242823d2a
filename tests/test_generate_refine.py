"""`--refine`: SDEdit windows with one global noise tensor and randomized blending."""

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from datakit.cli import app
from datakit.io.video import probe
from generate.backbone import Backbone
from generate.refine import Refiner
from generate.tiny import build_tiny_pipeline


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_refine")
    return {family: build_tiny_pipeline(root / family, family)
            for family in ("wan", "cogvideox", "cogvideox-v2v")}


def run(tmp_path, model, out, *extra):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat running\n")
    result = CliRunner().invoke(app, [
        "generate", "--prompts", str(prompts), "--model", str(model), "--out", str(out),
        "--frames", "30", "--chunk-frames", "9", "--overlap", "5", "--steps", "4",
        "--search-k", "1", "--height", "32", "--width", "32", "--no-checks", "--refine",
        "--refine-chunk", "13", "--refine-overlap", "4", "--refine-strength", "0.5", *extra,
    ])
    assert result.exit_code == 0, result.output
    (mp4,) = out.glob("*.mp4")
    return mp4, json.loads(mp4.with_suffix(".json").read_text())


@pytest.mark.parametrize("v2v", ["wan", "cogvideox-v2v"])
def test_refine_windows_share_noise_and_take_turns(tiny, tmp_path, monkeypatch, v2v):
    model = tiny["cogvideox" if v2v.startswith("cog") else "wan"]
    calls, order = [], []
    original = Backbone.run

    def spy(self, prompt, latents, steps, *args, on_step=None, **kwargs):
        if self.role == "v2v":
            window = len(calls)
            calls.append(latents.clone())

            def wrapped(step, current):
                order.append((window, step))
                return on_step(step, current)

            return original(self, prompt, latents, steps, *args, on_step=wrapped, **kwargs)
        return original(self, prompt, latents, steps, *args, on_step=on_step, **kwargs)

    monkeypatch.setattr(Backbone, "run", spy)
    assert torch.is_grad_enabled()
    mp4, info = run(tmp_path, model, tmp_path / "out", "--refine-model", str(tiny[v2v]))
    # the windows' calls (each under no_grad) end out of order: grad mode must come back
    assert torch.is_grad_enabled()
    refine = info["refine"]
    assert probe(mp4).frames == 30
    # 30 frames padded to 33 = 9 latent frames; windows of 4 latent frames (13 pixel frames)
    assert refine["padded_frames"] == 3 and refine["window_latent_frames"] == 4
    # latent windows start at 0, 3, 5: pixel frames 0, 9, 17 (latent s >= 1 covers 4s-3..4s)
    assert refine["window_starts"] == [0, 9, 17]
    starts = [0, 3, 5]
    assert len(calls) == 3
    # one global noise tensor: overlapping windows start from identical latents
    for k in range(1, 3):
        shared = starts[k - 1] + 4 - starts[k]
        assert torch.equal(calls[k][:, :, :shared], calls[k - 1][:, :, 4 - shared:])
    # windows take strict turns, one step each
    steps = refine["steps_run"]
    assert steps == 2
    assert order == [(k, i) for i in range(steps) for k in range(3)]
    # a random cut inside each overlap at every step, 0 for the first window
    for cuts in refine["blend_offsets"]:
        assert cuts[0] == 0
        assert all(0 <= cut <= starts[k - 1] + 4 - starts[k] for k, cut in enumerate(cuts) if k)
    assert len(refine["blend_offsets"]) == steps


def test_refine_is_deterministic_and_changes_the_video(tiny, tmp_path):
    a, info = run(tmp_path, tiny["wan"], tmp_path / "a")
    b, _ = run(tmp_path, tiny["wan"], tmp_path / "b")
    assert a.read_bytes() == b.read_bytes()
    prompts = tmp_path / "p.txt"
    plain = tmp_path / "plain"
    result = CliRunner().invoke(app, [
        "generate", "--prompts", str(prompts), "--model", str(tiny["wan"]), "--out", str(plain),
        "--frames", "30", "--chunk-frames", "9", "--overlap", "5", "--steps", "4",
        "--search-k", "1", "--height", "32", "--width", "32", "--no-checks",
    ])
    assert result.exit_code == 0
    assert (plain / a.name).read_bytes() != a.read_bytes()
    assert info["refine"]["strength"] == 0.5


def test_refine_bad_settings(tiny, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\n")
    base = ["generate", "--prompts", str(prompts), "--out", str(tmp_path / "o"), "--frames", "9",
            "--chunk-frames", "9", "--steps", "4", "--search-k", "1", "--height", "32",
            "--width", "32", "--no-checks", "--refine"]
    for extra, message in (
        (["--model", str(tiny["wan"]), "--refine-chunk", "12"], "--refine-chunk 12 does not fit"),
        (["--model", str(tiny["wan"]), "--refine-overlap", "6"], "--refine-overlap 6 must be"),
        (["--model", str(tiny["wan"]), "--refine-strength", "0.1"], "runs no step"),
    ):
        result = CliRunner().invoke(app, base + extra)
        assert result.exit_code == 2 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_blend_offsets_move(tiny, tmp_path):
    """Over many steps the cut takes several positions (the seam does not stay in one place)."""
    _, info = run(tmp_path, tiny["wan"], tmp_path / "o", "--steps", "20",
                  "--refine-overlap", "8", "--refine-chunk", "17")
    cuts = np.array(info["refine"]["blend_offsets"])
    assert len({tuple(c) for c in cuts[:, 1:]}) > 1


@pytest.mark.parametrize("latent_frames", [1, 2, 3, 9])
def test_refine_windows_cover_short_videos(latent_frames):
    """A video shorter than one window is one window (the overlap cannot exceed it)."""
    backbone = SimpleNamespace(temporal=4, latent_frames=lambda frames: (frames - 1) // 4 + 1)
    refiner = SimpleNamespace(backbone=backbone, chunk_frames=17, overlap=8)
    window, starts = Refiner.prepare_windows(refiner, latent_frames)
    assert window == min(5, latent_frames)
    assert starts[0] == 0 and starts[-1] + window == latent_frames
    assert all(b - a == 3 for a, b in zip(starts, starts[1:-1], strict=False))


def test_cogvideox15_refine_windows_pass_the_pipelines_frame_check(tmp_path):
    """CogVideoX 1.5 (temporal patch 2): given latents=, diffusers' V2V pipeline checks
    (L - 1) // 4 + 1 against the patch, so 4-latent windows fail inside diffusers; the refiner
    refuses such a --refine-chunk up front and 6-latent windows run."""
    from datakit.io.errors import UserError
    from generate.loading import load_backbone

    backbone = load_backbone(str(build_tiny_pipeline(tmp_path / "c15", "cogvideox15-v2v")),
                             "v2v")
    assert backbone.patch_t == 2
    with pytest.raises(UserError, match=r"--refine-chunk 13: .* use 21$"):
        Refiner(backbone, chunk_frames=13, overlap=4, steps=4, strength=0.5)
    refiner = Refiner(backbone, chunk_frames=21, overlap=8, steps=4, strength=0.5)
    assert refiner.prepare_windows(6) == (6, [0])
    generator = torch.Generator("cpu").manual_seed(0)
    with pytest.raises(ValueError, match="patch_size_t"):  # what the check prevents
        backbone.run("a cat", torch.randn(1, 4, 4, 4, 4), 4, 2.0, generator, 32, 32,
                     strength=0.5)
    out = backbone.run("a cat", torch.randn(1, 4, 6, 4, 4), 4, 2.0, generator, 32, 32,
                       strength=0.5)
    assert tuple(out.shape) == (1, 4, 6, 4, 4)
    # its text-to-video chunks are refused in one line (an even latent count decodes to 4L
    # frames; diffusers' own 1.5 pipeline pads a latent and drops it, the chunk loop does not)
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\n")
    t2v = build_tiny_pipeline(tmp_path / "c15t2v", "cogvideox15")
    result = CliRunner().invoke(app, ["generate", "--prompts", str(prompts), "--model", str(t2v),
                                      "--out", str(tmp_path / "o"), "--chunk-frames", "21",
                                      "--height", "32", "--width", "32", "--search-k", "1"])
    assert result.exit_code == 2 and "is not supported for chunks yet" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.timeout(120)
@pytest.mark.parametrize("stop_after", [1, 3])
def test_a_window_whose_pipeline_runs_short_or_long_fails_the_video_instead_of_hanging(
        tiny, tmp_path, monkeypatch, stop_after):
    """The other windows wait for its turn: without a check they would wait forever."""
    original = Backbone.run

    def miscounting(self, prompt, latents, steps, *args, on_step=None, **kwargs):
        if self.role != "v2v" or not calls.append(1) and len(calls) != 2:
            return original(self, prompt, latents, steps, *args, on_step=on_step, **kwargs)
        for step in range(stop_after):  # window 1 calls back 1 or 3 times for 2 steps
            on_step(step, latents)
        return latents

    calls = []
    monkeypatch.setattr(Backbone, "run", miscounting)
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat running\n")
    result = CliRunner().invoke(app, [
        "generate", "--prompts", str(prompts), "--model", str(tiny["wan"]),
        "--out", str(tmp_path / "out"), "--frames", "30", "--chunk-frames", "9", "--overlap",
        "5", "--steps", "4", "--search-k", "1", "--height", "32", "--width", "32",
        "--no-checks", "--refine", "--refine-chunk", "13", "--refine-overlap", "4",
        "--refine-strength", "0.5"])
    assert len(calls) == 3 and result.exit_code == 1
    (reason,) = pd.read_parquet(tmp_path / "out" / "manifest.parquet")["error"]
    assert reason == ("RuntimeError: refinement window 1: the pipeline stopped after 1 of 2 steps"
                      if stop_after == 1 else
                      "RuntimeError: refinement window 1: the pipeline ran step 3 of a planned 2")


def test_ctrl_c_during_refinement_stops_cleanly(tiny, tmp_path):
    """No runtime abort, no traceback, exit 130, and OUT gets no unrefined MP4."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    prompts = tmp_path / "p.txt"
    prompts.write_text("a red kite over snowy hills\n")
    out = tmp_path / "out"
    args = [sys.executable, "-m", "datakit.cli", "generate", "--prompts", str(prompts),
            "--model", str(tiny["wan"]), "--out", str(out), "--frames", "120",
            "--chunk-frames", "9", "--steps", "20", "--search-k", "1", "--height", "32",
            "--width", "48", "--no-checks", "--refine", "--refine-chunk", "13",
            "--refine-overlap", "4", "--refine-strength", "0.5"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, preexec_fn=lambda: signal.signal(signal.SIGINT,
                                                                            signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob(".datakit/generate/*/unrefined.mp4")):
        time.sleep(0.01)
    time.sleep(0.3)  # into the windows
    for _ in range(2):
        process.send_signal(signal.SIGINT)
        time.sleep(0.1)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "terminate called" not in stderr and "Traceback" not in stderr, stderr
    assert stderr.strip().splitlines()[-1].startswith("generate: stopped by Ctrl-C"), stderr
    assert not list(out.glob("*.mp4")), stderr
