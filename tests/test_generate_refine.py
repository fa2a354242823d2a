"""`--refine`: causal SDEdit windows, noise shared per global latent, randomized blending;
Wan 2.2 A14B's low-noise steps on transformer_2."""

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from datakit.cli import app
from datakit.io.errors import UserError
from datakit.io.video import probe
from generate.backbone import Backbone
from generate.chunked import ChunkedGenerator, ChunkSettings
from generate.loading import load_backbone, share_backbone
from generate.prompts import Story
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


# (window, overlap, starts in pixel frames) for 30 frames: windows advance by
# window - 1 - overlap + 4 frames, the last starts on the first multiple of 4 that reaches
# frame 29
WINDOWS = {"wan": (13, 8, [0, 8, 16, 20]), "cogvideox-v2v": (17, 8, [0, 12, 16])}


@pytest.mark.parametrize("v2v", ["wan", "cogvideox-v2v"])
def test_refine_windows_share_noise_and_take_turns(tiny, tmp_path, monkeypatch, v2v):
    model = tiny["cogvideox" if v2v.startswith("cog") else "wan"]
    window, overlap, starts = WINDOWS[v2v]
    calls, order, noises, handed = [], [], [], {}
    original, original_noise = Backbone.run, Backbone.scheduler_noise

    def spy(self, prompt, latents, steps, *args, on_step=None, **kwargs):
        if self.role == "v2v":
            index = len(calls)
            calls.append(latents.clone())

            def wrapped(step, current):
                order.append((index, step))
                blended = on_step(step, current)
                handed[index, step] = (current.clone(), blended)
                return blended

            return original(self, prompt, latents, steps, *args, on_step=wrapped, **kwargs)
        return original(self, prompt, latents, steps, *args, on_step=on_step, **kwargs)

    def noise_spy(self, scheduler, clean, noise, timestep):
        noises.append(noise.clone())
        return original_noise(self, scheduler, clean, noise, timestep)

    monkeypatch.setattr(Backbone, "run", spy)
    monkeypatch.setattr(Backbone, "scheduler_noise", noise_spy)
    assert torch.is_grad_enabled()
    mp4, info = run(tmp_path, model, tmp_path / "out", "--refine-model", str(tiny[v2v]),
                    "--refine-chunk", str(window), "--refine-overlap", str(overlap))
    # the windows' calls (each under no_grad) end out of order: grad mode must come back
    assert torch.is_grad_enabled()
    refine = info["refine"]
    assert probe(mp4).frames == 30
    latent_window = (window - 1) // 4 + 1
    assert refine["window_starts"] == starts and refine["window_latent_frames"] == latent_window
    assert refine["padded_frames"] == starts[-1] + window - 30 <= 3
    assert len(calls) == len(noises) == len(starts)
    # one noise per global latent: slot j of the window starting at frame P is latent P/4 + j,
    # so overlapping windows (and a window's slot 0 and the group it ends) share their noise
    for k in range(1, len(starts)):
        d = (starts[k] - starts[k - 1]) // 4
        assert torch.equal(noises[k][:, :, :latent_window - d], noises[k - 1][:, :, d:])
    # windows take strict turns, one step each
    steps = refine["steps_run"]
    assert steps == 2
    assert order == [(k, i) for i in range(steps) for k in range(len(starts))]
    # a random cut inside each overlap of aligned latents at every step, 0 for the first
    for cuts in refine["blend_offsets"]:
        assert cuts[0] == 0
        assert all(0 <= cut <= (starts[k - 1] + window - 1 - starts[k]) // 4
                   for k, cut in enumerate(cuts) if k)
    assert any(cut for cuts in refine["blend_offsets"] for cut in cuts)  # the cut moves
    assert len(refine["blend_offsets"]) == steps
    # the blend, read from what each window handed over and got back: global latent
    # g = P/4 + j comes from the last window whose cut lies before it; slot 0 stays the
    # window's own
    firsts = [start // 4 for start in starts]
    for step, cuts in enumerate(refine["blend_offsets"][:-1]):
        begins = [0] + [first + 1 + cut for first, cut in zip(firsts[1:], cuts[1:], strict=True)]
        for k, first in enumerate(firsts):
            own, blended = handed[k, step]
            for j in range(latent_window):
                g = first + j
                if k and j == 0:
                    expected = own[:, :, 0]
                else:
                    owner = max(w for w in range(len(starts))
                                if begins[w] <= g <= firsts[w] + latent_window - 1)
                    expected = handed[owner, step][0][:, :, g - firsts[owner]]
                assert torch.equal(blended[:, :, j].float(), expected.float()), (step, k, j)


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


@pytest.mark.parametrize("frames", [1, 5, 17, 18, 30, 61, 200])
def test_refine_windows_start_on_latent_groups_and_cover_the_video(frames):
    """Windows start on multiples of t (so slot 0 is one frame and slots j >= 1 are whole
    groups of the video), neighbours share overlap - t + 1 frames or more (the overlap's
    latents, the next window's slot 0 one of them), the last window reaches the end with
    under t frames of padding; a short video is one window."""
    backbone = SimpleNamespace(temporal=4, writable=lambda n: (n - 1) % 4 == 0)
    refiner = SimpleNamespace(backbone=backbone, chunk_frames=17, overlap=8)
    window, starts = Refiner.prepare_windows(refiner, frames)
    if frames <= 17:
        assert starts == [0] and window == frames + (-(frames - 1)) % 4
        return
    assert window == 17 and starts[0] == 0 and all(s % 4 == 0 for s in starts)
    assert 0 <= starts[-1] + window - frames < 4
    assert all(a + window - b >= 8 - 4 + 1 for a, b in zip(starts, starts[1:], strict=False))
    assert all(b - a == 12 for a, b in zip(starts, starts[1:-1], strict=False))


def refine_directly(tmp_path, model, frames, window, overlap, chunk_frames=13, steps=4,
                    strength=0.5, guidance_2=None, before_refine=None):
    """Generate `frames` frames with the chunk loop, then refine them on the shared V2V class
    (library calls, so a test can spy on the objects); return the generator, state folder
    and the refinement's json."""
    backbone = load_backbone(str(model))
    settings = ChunkSettings(frames=frames, chunk_frames=chunk_frames, overlap=5, steps=steps,
                             guidance=2.0, height=32, width=32, fps=8, search_k=1,
                             guidance_2=guidance_2)
    generator = ChunkedGenerator(backbone, settings)
    story = Story("s", ("a cat running",), None, "s")
    generator(story, 0, tmp_path / "loop.mp4", tmp_path / "state")
    refiner = Refiner(share_backbone(backbone, "v2v"), window, overlap, strength=strength,
                      steps=steps, guidance=2.0)
    if before_refine is not None:
        before_refine(backbone, refiner.backbone)
    info = refiner(generator, tmp_path / "state", story, 0, tmp_path / "refined.mp4")
    return generator, info


@pytest.mark.parametrize(("family", "frames", "chunk", "window", "starts"), [
    ("wan", 30, 13, 13, [0, 8, 16, 20]),
    ("cogvideox", 26, 9, 17, [0, 12]),  # 26 frames were padded to 29: 8 latents, decoded to 32
])
def test_refine_encodes_each_window_from_its_pixels_and_writes_every_frame_in_place(
        tiny, tmp_path, monkeypatch, family, frames, chunk, window, starts):
    """Each window's slot 0 is its own first frame alone (encoded from pixels, not cut out of
    a whole-video encoding), every window decodes back into exactly its frames (CogVideoX:
    8k+1), and frame f of the MP4 is frame f of the window that owns it: nothing shifted, the
    video never encoded or decoded whole."""
    encoded, decoded, written = [], [], []

    class Recorder:
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

        def write_many(self, many):
            written.extend(np.array(f) for f in many)

    def spy(_, v2v):
        encode, decode = v2v.encode, v2v.decode
        monkeypatch.setattr(v2v, "encode", lambda f: encoded.append(f.copy()) or encode(f))
        monkeypatch.setattr(v2v, "decode",
                            lambda latents: decoded.append(decode(latents)) or decoded[-1])

    monkeypatch.setattr("generate.refine.VideoWriter", Recorder)
    generator, info = refine_directly(tmp_path, tiny[family], frames, window, 8,
                                      chunk_frames=chunk, before_refine=spy)
    assert info["window_starts"] == starts
    video = np.stack(list(generator.replay(tmp_path / "state")))
    assert len(video) == frames
    padded = np.concatenate([video, np.repeat(video[-1:], starts[-1] + window - frames, 0)])
    assert len(encoded) == len(decoded) == len(starts)
    for k, start in enumerate(starts):
        assert np.array_equal(encoded[k], padded[start:start + window])
        assert len(decoded[k]) == window  # decodes back whole: no frame shifted
    # frame f comes from the last window whose cut (at the last step) lies before it
    cuts = info["blend_offsets"][-1]
    assert len(written) == frames
    for f, frame in enumerate(written):
        owner = max(k for k, s in enumerate(starts) if k == 0 or f >= s + 4 * cuts[k] + 1)
        assert np.array_equal(frame, decoded[owner][f - starts[owner]]), f


def test_refine_refuses_windows_that_do_not_decode_whole_before_any_compute(tiny, tmp_path):
    """CogVideoX's VAE decodes an even latent count L into 4L frames: a 13-frame window
    (4 latents) would come back as 16 frames, every frame shifted by 3."""
    backbone = load_backbone(str(tiny["cogvideox"]), "v2v")
    with pytest.raises(UserError, match=r"^--refine-chunk 13 does not fit .* 8k\+1 .*"
                                        r"decode into 16\): use 9 or 17$"):
        Refiner(backbone, chunk_frames=13, overlap=4, steps=4, strength=0.5)
    assert Refiner(backbone, chunk_frames=17, overlap=4, steps=4, strength=0.5)
    # CogVideoX 1.5: its transformer needs an even latent count, its VAE an odd one
    v15 = load_backbone(str(build_tiny_pipeline(tmp_path / "c15", "cogvideox15-v2v")), "v2v")
    with pytest.raises(UserError, match="^--refine-chunk 21: no frame count fits"):
        Refiner(v15, chunk_frames=21, overlap=8, steps=4, strength=0.5)
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\n")
    result = CliRunner().invoke(app, [
        "generate", "--prompts", str(prompts), "--model", str(tiny["cogvideox"]),
        "--out", str(tmp_path / "o"), "--frames", "30", "--chunk-frames", "9", "--steps", "2",
        "--search-k", "1", "--height", "32", "--width", "32", "--no-checks", "--refine",
        "--refine-chunk", "13"])
    assert result.exit_code == 2 and "--refine-chunk 13 does not fit" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").rglob("*.safetensors"))


def test_a_two_expert_refine_model_is_refused_not_run_on_one_expert(tiny, tmp_path):
    """A Wan 2.2 A14B folder loaded as the video-to-video pipeline would lose transformer_2
    (that class has no slot for it) and refine every step on the high-noise expert."""
    model = build_tiny_pipeline(tmp_path / "w22", "wan22")
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat running\n")
    result = CliRunner().invoke(app, [
        "generate", "--prompts", str(prompts), "--model", str(tiny["wan"]), "--out",
        str(tmp_path / "o"), "--frames", "9", "--chunk-frames", "9", "--steps", "2",
        "--height", "32", "--width", "32", "--no-checks", "--refine", "--refine-model",
        str(model)])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (
        f"error: {model} has two experts (transformer_2: Wan 2.2 A14B); refinement takes its "
        "low-noise expert from the generating pipeline, so give it as --model and leave "
        "--refine-model out")


def test_wan22_refine_runs_low_noise_steps_on_transformer_2(tiny, tmp_path, monkeypatch):
    """Wan 2.2 A14B: WanPipeline runs t >= boundary_ratio * 1000 on `transformer` and the rest
    on `transformer_2` with guidance_scale_2; the refinement (a V2V class without
    transformer_2) must switch the same way."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    model = build_tiny_pipeline(tmp_path / "w22", "wan22")
    steps, strength = 9, 0.6
    calls: list[tuple[str, float]] = []
    guidances: list[float] = []
    original = Backbone.run

    def spy(backbone, v2v):
        for name in ("transformer", "transformer_2"):
            module = getattr(backbone.pipe, name)
            forward = module.forward

            def recorded(*args, name=name, forward=forward, **kwargs):
                calls.append((name, float(kwargs["timestep"].flatten()[0])))
                return forward(*args, **kwargs)

            monkeypatch.setattr(module, "forward", recorded)

        def run(self, prompt, latents, steps, guidance, *args, **kwargs):
            guidances.append(guidance)
            return original(self, prompt, latents, steps, guidance, *args, **kwargs)

        monkeypatch.setattr(Backbone, "run", run)

    _, info = refine_directly(tmp_path, model, 13, 13, 4, steps=steps, strength=strength,
                              guidance_2=1.5, before_refine=spy)
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(
        json.loads((model / "scheduler" / "scheduler_config.json").read_text()))
    scheduler.set_timesteps(steps)
    run_steps = int(steps * strength)
    refined = scheduler.timesteps[steps - run_steps:]
    high = int((refined >= 875).sum())
    assert 0 < high < run_steps  # both experts have steps to run here
    assert info["experts"] == {"transformer": high, "transformer_2": run_steps - high}
    # with guidance, two forward calls per step (conditional, unconditional)
    assert [name for name, _ in calls] == (["transformer"] * 2 * high
                                           + ["transformer_2"] * 2 * (run_steps - high))
    assert all((t >= 875) == (name == "transformer") for name, t in calls)
    assert guidances == [2.0, 1.5]  # the low-noise steps with guidance_2


@pytest.mark.timeout(300)  # a hang guard: each window now encodes and decodes its own frames
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
            "--model", str(tiny["wan"]), "--out", str(out), "--frames", "240",
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
