"""`datakit generate` on tiny random pipelines built offline and loaded through --model DIR.

The pipelines are noise generators (random weights, 32x32, 2 layers); the tests check the
chunk arithmetic, VidRD's reuse mechanics on captured tensors, the k-step search, seeds,
resume after SIGKILL, the CLI's errors and the manifest.
"""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from datakit.cli import app
from datakit.io.video import probe, read_frames
from generate import chunked
from generate.backbone import Backbone
from generate.chunked import (
    ChunkedGenerator,
    ChunkSettings,
    derive_seed,
    make_noise,
    pinned_steps,
    plan_chunks,
)
from generate.loading import load_backbone
from generate.prompts import Story
from generate.search import ContinuityScorer, search_noise
from generate.tiny import build_tiny_pipeline

BASE = ["--steps", "2", "--height", "32", "--width", "32", "--no-checks"]
TINY = [*BASE, "--search-k", "1"]


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """Build each tiny pipeline once per session: tiny('wan') -> its folder."""
    root = tmp_path_factory.mktemp("tiny")
    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            built[family] = build_tiny_pipeline(root / family, family)
        return built[family]

    return get


def generate(*args: str):
    result = CliRunner().invoke(app, ["generate", *map(str, args)])
    return result


def prompts_file(folder: Path, text: str = "a cat running\n# skipped\n\na dog in the sea\n",
                 name: str = "prompts.txt") -> Path:
    path = folder / name
    path.write_text(text)
    return path


# -- chunk arithmetic -------------------------------------------------------------------------

@pytest.mark.parametrize(("frames", "chunk", "drop", "chunks", "trimmed"), [
    (33, 33, 0, 1, 0), (20, 33, 0, 1, 13), (66, 33, 0, 2, 0), (67, 33, 0, 3, 32),
    (241, 33, 0, 8, 23), (49, 17, 1, 3, 0), (50, 17, 1, 4, 15), (1, 9, 1, 1, 8),
])
def test_plan_chunks(frames, chunk, drop, chunks, trimmed):
    plan = plan_chunks(frames, chunk, drop)
    assert (plan.chunks, plan.trimmed) == (chunks, trimmed)
    assert plan.generated - plan.trimmed == frames
    assert plan.chunk_starts[0] == 0
    steps = [chunk] + [chunk - drop] * (chunks - 2)
    assert list(np.diff(plan.chunk_starts)) == steps[:chunks - 1]


@pytest.mark.parametrize(("family", "frames", "chunk", "overlap", "mode", "drop"), [
    ("wan", 20, 9, 4, "reuse", 1), ("wan", 9, 9, 4, "reuse", 1), ("wan", 23, 13, 8, "none", 0),
    ("wan", 20, 9, 5, "auto", 5), ("modelscope", 11, 4, 2, "reuse", 2),
    ("modelscope", 11, 4, 2, "auto", 2), ("cogvideox", 14, 9, 4, "reuse", 1),
    ("cogvideox", 14, 9, 1, "anchor", 1), ("ltx", 10, 9, 4, "reuse", 1),
])
def test_exact_frame_count(tiny, tmp_path, family, frames, chunk, overlap, mode, drop):
    out = tmp_path / "out"
    result = generate("--prompts", prompts_file(tmp_path, "a red car\n"), "--model", tiny(family),
                      "--out", out, "--frames", frames, "--chunk-frames", chunk, "--overlap",
                      overlap, "--continue", mode, *TINY)
    assert result.exit_code == 0, result.output
    (mp4,) = out.glob("*.mp4")
    info = json.loads(mp4.with_suffix(".json").read_text())
    plan = plan_chunks(frames, chunk, drop)  # the bridge frames each later chunk drops
    assert info["dropped_per_chunk"] == drop
    assert probe(mp4).frames == frames == info["frames"]
    assert info["chunk_starts"] == list(plan.chunk_starts)
    assert info["trimmed_frames"] == plan.trimmed
    assert len(info["chunk_details"]) == plan.chunks
    assert read_frames(mp4).shape == (frames, 32, 32, 3)
    row = pd.read_parquet(out / "manifest.parquet").iloc[0]
    assert (row.status, row.frames, row.caption) == ("ok", frames, "a red car")


# -- VidRD reuse on captured tensors ----------------------------------------------------------

def spy_runs(monkeypatch) -> list[dict]:
    """Record every Backbone.run: its initial latents and the state before each step."""
    calls: list[dict] = []
    original = Backbone.run

    def run(self, prompt, latents, steps, *args, on_step=None, **kwargs):
        record = {"steps": steps, "initial": latents.clone(), "states": [latents.clone()]}

        def wrapped(step, current):
            replaced = on_step(step, current) if on_step else None
            record["states"].append((current if replaced is None else replaced).clone())
            return replaced

        calls.append(record)
        return original(self, prompt, latents, steps, *args, on_step=wrapped, **kwargs)

    monkeypatch.setattr(Backbone, "run", run)
    return calls


@pytest.mark.parametrize(("family", "chunk", "overlap"), [("wan", 17, 8), ("modelscope", 8, 3)])
def test_reuse_reverses_noise_and_pins_overlap(tiny, tmp_path, monkeypatch, family, chunk,
                                               overlap):
    """Flow matching (Wan, 4x temporal compression) and DDIM (ModelScope, none)."""
    backbone = load_backbone(str(tiny(family)))
    steps, beta, alpha = 6, 0.8, 4.0
    bridge = backbone.pixel_frames(overlap // backbone.temporal)  # dropped: it mirrors
    total = chunk + 2 * (chunk - bridge)
    settings = ChunkSettings(frames=total, chunk_frames=chunk, overlap=overlap,
                             continue_mode="reuse", steps=steps, guidance=3.0, height=32,
                             width=32, noise_recycle=alpha, reuse_guidance=beta, search_k=1)
    generator = ChunkedGenerator(backbone, settings, scorer=ContinuityScorer())
    calls = spy_runs(monkeypatch)
    story = Story("s1", ("a cat running",), None, "test")
    info = generator(story, 7, tmp_path / "s1.mp4", tmp_path / "state")

    o = overlap // backbone.temporal
    pins = pinned_steps(o, steps, beta)
    assert pins == [math.ceil((o - m) * steps / o * beta - 1e-9) for m in range(o)]
    assert info["chunk_details"][1]["pinned_steps"] == pins
    assert len(calls) == 3 and all(len(c["states"]) == steps + 1 for c in calls)
    for previous, current, index in ((calls[0], calls[1], 1), (calls[1], calls[2], 2)):
        past = previous["initial"].flip(2)
        # frame-level noise reversion: the first O frames are the last O frames reversed
        assert torch.equal(current["initial"][:, :, :o], past[:, :, :o])
        # past-dependent noise for the rest, with the chunk's own fresh noise
        fresh = make_noise(tuple(past.shape), derive_seed(7, "s1", index, 0))
        expected = alpha / math.sqrt(1 + alpha**2) * past + fresh / math.sqrt(1 + alpha**2)
        assert torch.allclose(current["initial"][:, :, o:], expected[:, :, o:], atol=1e-6)
        # staged guidance: frame m equals the reversed stored trajectory exactly while i < pin
        frames = current["states"][0].shape[2]
        for step in range(1, steps):
            for m in range(o):
                mine = current["states"][step][:, :, m]
                theirs = previous["states"][step][:, :, frames - 1 - m].to(mine)
                assert torch.equal(mine, theirs) == (step < pins[m]), (step, m)
    assert probe(tmp_path / "s1.mp4").frames == total
    assert info["chunk_starts"] == [0, chunk, 2 * chunk - bridge]


def test_pinned_steps_match_vidrd_defaults():
    assert pinned_steps(4, 50, 0.4) == [20, 15, 10, 5]
    assert pinned_steps(2, 50, 0.0) == [0, 0]


# -- k-step search ----------------------------------------------------------------------------

def test_search_noise_keeps_best():
    previews = {0: 0.2, 1: 0.9, 2: 0.9, 3: 0.1}
    best, scores = search_noise([0, 1, 2, 3], lambda i, n: np.full((1, 4, 4, 3), n),
                                lambda preview, cond, prompt: previews[int(preview.flat[0])], None)
    assert (best, scores) == (1, [0.2, 0.9, 0.9, 0.1])


def test_continuity_score_prefers_matching_frames():
    rng = np.random.default_rng(0)
    cond = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    near = np.stack([np.clip(cond.astype(int) + 5, 0, 255).astype(np.uint8), cond])
    far = np.stack([255 - cond, cond])
    scorer = ContinuityScorer()
    assert scorer(near, cond) > scorer(far, cond)
    assert scorer(cond[None], cond) == pytest.approx(1.0)


def test_search_reruns_best_candidate_and_records_scores(tiny, tmp_path, monkeypatch):
    backbone = load_backbone(str(tiny("wan")))
    settings = ChunkSettings(frames=18, chunk_frames=9, continue_mode="none", steps=4,
                             guidance=3.0, height=32, width=32, search_k=4, search_steps=2)
    fake = iter([0.3, 0.8, 0.5, 0.1])

    class Scorer:
        name = "fake"

        def __call__(self, preview, condition, prompt=""):
            assert preview.shape == (9, 32, 32, 3) and condition.shape == (32, 32, 3)
            return next(fake)

    generator = ChunkedGenerator(backbone, settings, scorer=Scorer())
    calls = spy_runs(monkeypatch)
    story = Story("s", ("a dog",), None, "test")
    info = generator(story, 3, tmp_path / "s.mp4", tmp_path / "state")
    search = info["chunk_details"][1]["search"]
    assert search["scores"] == [0.3, 0.8, 0.5, 0.1] and search["winner"] == 1
    assert "skipped" in info["chunk_details"][0]["search"]
    # chunk 0 full run, then 4 previews of 2 steps, then the winner with all 4 steps
    assert [c["steps"] for c in calls] == [4, 2, 2, 2, 2, 4]
    winner = make_noise(tuple(calls[5]["initial"].shape), derive_seed(3, "s", 1, 1))
    assert torch.equal(calls[5]["initial"], winner)
    assert torch.equal(calls[2]["initial"], winner)


def test_search_json_via_cli(tiny, tmp_path):
    out = tmp_path / "out"
    result = generate("--prompts", prompts_file(tmp_path, "a cat\n"), "--model", tiny("wan"),
                      "--out", out, "--frames", "18", "--chunk-frames", "9", "--continue",
                      "none", *BASE, "--search-k", "3", "--search-steps", "1")
    assert result.exit_code == 0, result.output
    (mp4,) = out.glob("*.mp4")
    search = json.loads(mp4.with_suffix(".json").read_text())["chunk_details"][1]["search"]
    assert len(search["scores"]) == 3 and search["scorer"] == "continuity"
    assert search["winner"] == int(np.argmax(search["scores"]))


# -- determinism and resume -------------------------------------------------------------------

def test_same_seed_same_bytes(tiny, tmp_path):
    prompts = prompts_file(tmp_path)
    common = ["--prompts", prompts, "--model", tiny("wan"), "--frames", "17", "--chunk-frames",
              "9", "--overlap", "5", *BASE, "--search-k", "2", "--search-steps", "1"]
    # b differs from a only in how glibc is told to manage the heap: the bytes must not
    for name, seed, heap in (("a", 5, "--bounded-heap"), ("b", 5, "--fast-heap"),
                             ("c", 6, "--bounded-heap")):
        assert generate(*common, "--out", tmp_path / name, "--seed", seed, heap).exit_code == 0
    names = sorted(p.name for p in (tmp_path / "a").glob("*.mp4"))
    assert len(names) == 2
    for name in names:
        a, b, c = ((tmp_path / d / name).read_bytes() for d in "abc")
        assert a == b and a != c


def test_resume_after_kill_gives_same_bytes(tiny, tmp_path):
    prompts = prompts_file(tmp_path, "a bird flying over the sea\n")
    args = [sys.executable, "-m", "datakit.cli", "generate", "--prompts", str(prompts),
            "--model", str(tiny("wan")), "--frames", "50", "--chunk-frames", "9", "--overlap",
            "5", "--steps", "3", "--height", "32", "--width", "32", "--search-k", "2",
            "--search-steps", "1", "--no-checks"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    clean = tmp_path / "clean"
    subprocess.run([*args, "--out", str(clean)], check=True, env=env, capture_output=True)

    out = tmp_path / "killed"
    process = subprocess.Popen([*args, "--out", str(out)], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    state = out / ".datakit" / "generate"
    while time.time() < deadline and not list(state.glob("*/chunk_00002.safetensors")):
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    (name,) = [p.name for p in clean.glob("*.mp4")]
    assert not (out / name).exists(), "the run finished before it was killed"
    saved = len(list(state.glob("*/chunk_*.safetensors")))
    assert 3 <= saved < 12  # 50 frames = 12 chunks of 9 that drop 5

    subprocess.run([*args, "--out", str(out), "--resume"], check=True, env=env,
                   capture_output=True)
    assert (out / name).read_bytes() == (clean / name).read_bytes()
    info = json.loads((out / name).with_suffix(".json").read_text())
    assert info["resumed_from_chunk"] == saved
    assert not list(state.glob("*/chunk_*"))  # state is removed once the video is done


def test_ctrl_c_says_how_to_resume_and_resume_continues(tiny, tmp_path):
    prompts = prompts_file(tmp_path, "a bird flying over the sea\n")
    args = [sys.executable, "-m", "datakit.cli", "generate", "--prompts", str(prompts),
            "--model", str(tiny("wan")), "--frames", "200", "--chunk-frames", "9", "--overlap",
            "5", "--steps", "3", "--height", "32", "--width", "32", "--search-k", "1",
            "--no-checks", "--out", str(tmp_path / "out")]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, preexec_fn=lambda: signal.signal(signal.SIGINT,
                                                                            signal.SIG_DFL))
    state = tmp_path / "out" / ".datakit" / "generate"
    deadline = time.time() + 120
    while time.time() < deadline and not list(state.glob("*/chunk_00001.safetensors")):
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert stderr.strip().splitlines()[-1].startswith(
        "generate: stopped by Ctrl-C; finished videos are in"), stderr
    assert "--resume" in stderr and "Traceback" not in stderr
    assert not [p for p in (tmp_path / "out").rglob("*") if p.name.endswith(".partial")]
    assert (tmp_path / "out" / "manifest.parquet").is_file()
    saved = len(list(state.glob("*/chunk_*.safetensors")))
    assert saved >= 2
    subprocess.run([*args, "--resume"], check=True, env=env, capture_output=True)
    (mp4,) = (tmp_path / "out").glob("*.mp4")
    assert json.loads(mp4.with_suffix(".json").read_text())["resumed_from_chunk"] == saved


# -- i2v and other backbones ------------------------------------------------------------------

@pytest.mark.parametrize("family", ["cogvideox", "wan"])
def test_i2v_continuation(tiny, tmp_path, family):
    out = tmp_path / "out"
    result = generate("--prompts", prompts_file(tmp_path, "a horse\n"), "--model", tiny(family),
                      "--i2v-model", tiny(f"{family}-i2v"), "--continue", "i2v", "--out", out,
                      "--frames", "20", "--chunk-frames", "9", *BASE, "--search-k", "2",
                      "--search-steps", "1")
    assert result.exit_code == 0, result.output
    (mp4,) = out.glob("*.mp4")
    info = json.loads(mp4.with_suffix(".json").read_text())
    assert probe(mp4).frames == 20
    assert info["dropped_per_chunk"] == 1 and info["chunk_starts"] == [0, 9, 17]
    assert [c["backbone"] for c in info["chunk_details"]] == ["t2v", "i2v", "i2v"]


# -- stories and failures ---------------------------------------------------------------------

def test_jsonl_stories_and_one_failure_does_not_stop_others(tiny, tmp_path):
    stories = [
        {"id": "story-a", "prompts": ["a cat sitting", "a cat running"], "seed": 3},
        {"id": "too-many", "prompts": ["a", "b", "c", "d", "e"]},
        {"id": "story-b", "prompts": ["a dog"]},
    ]
    path = prompts_file(tmp_path, "\n".join(map(json.dumps, stories)) + "\n", "story.jsonl")
    out = tmp_path / "out"
    result = generate("--prompts", path, "--model", tiny("wan"), "--out", out, "--frames", "18",
                      "--chunk-frames", "9", "--overlap", "5", *TINY)
    assert result.exit_code == 1
    manifest = pd.read_parquet(out / "manifest.parquet").set_index("key")
    assert manifest.loc["story-a", "status"] == "ok" and manifest.loc["story-b", "status"] == "ok"
    assert manifest.loc["too-many", "status"] == "failed"
    assert "5 prompts" in manifest.loc["too-many", "error"]
    info = json.loads((out / "story-a.json").read_text())
    assert info["seed"] == 3
    # 18 frames = 4 chunks of 9 that drop the 5 anchor frames; the last prompt carries on
    assert [c["prompt"] for c in info["chunk_details"]] == ["a cat sitting"] + [
        "a cat running"] * 3
    # a rerun skips the stories already done
    again = generate("--prompts", path, "--model", tiny("wan"), "--out", out, "--frames", "18",
                     "--chunk-frames", "9", "--overlap", "5", *TINY)
    assert again.exit_code == 1
    assert json.loads((out / "stats.json").read_text())["run"]["processed"] == 1


def test_runtime_failure_is_recorded(tiny, tmp_path, monkeypatch):
    original = ChunkedGenerator.__call__

    def flaky(self, story, *args, **kwargs):
        if "dog" in story.prompts[0]:
            raise RuntimeError("out of memory (simulated)")
        return original(self, story, *args, **kwargs)

    monkeypatch.setattr(ChunkedGenerator, "__call__", flaky)
    out = tmp_path / "out"
    result = generate("--prompts", prompts_file(tmp_path), "--model", tiny("wan"), "--out", out,
                      "--frames", "9", "--chunk-frames", "9", *TINY)
    assert result.exit_code == 1
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert sorted(manifest.status) == ["failed", "ok"]
    assert "simulated" in manifest.set_index("status").loc["failed", "error"]


# -- bad input: one line, no traceback --------------------------------------------------------

def _bad(tmp_path, tiny, prompts_text, *extra, name="prompts.txt", model=None):
    prompts = prompts_file(tmp_path, prompts_text, name)
    result = generate("--prompts", prompts, "--model", model or tiny("wan"), "--out",
                      tmp_path / "out", *TINY, *extra)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_bad_inputs(tiny, tmp_path):
    assert "no prompts" in _bad(tmp_path, tiny, "\n# only a comment\n")
    line = _bad(tmp_path, tiny, '{"prompts": ["ok"]}\n{"prompts": [\n', name="s.jsonl")
    assert "s.jsonl:2" in line and "JSON" in line
    assert "blank prompt" in _bad(tmp_path, tiny, '{"prompts": ["  "]}\n', name="b.jsonl")
    assert "longer than the model's limit of 512" in _bad(tmp_path, tiny, "cat " * 600 + "\n")
    line = _bad(tmp_path, tiny, "a cat\n", "--chunk-frames", "32")
    assert line == "error: --chunk-frames 32 does not fit Wan's 4k+1 rule: use 29 or 33"
    assert "multiple of Wan's temporal compression 4" in _bad(tmp_path, tiny, "a cat\n",
                                                               "--chunk-frames", "9",
                                                               "--overlap", "3")
    assert "multiple of 16" in _bad(tmp_path, tiny, "a cat\n", "--height", "40")
    assert "no CUDA device" in _bad(tmp_path, tiny, "a cat\n", "--device", "cuda")
    empty = tmp_path / "empty_model"
    empty.mkdir()
    assert "no model_index.json" in _bad(tmp_path, tiny, "a cat\n", model=empty)
    image_model = tmp_path / "sd"
    image_model.mkdir()
    (image_model / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    assert "not a supported video pipeline" in _bad(tmp_path, tiny, "a cat\n", model=image_model)
    svd = tmp_path / "svd"
    svd.mkdir()
    (svd / "model_index.json").write_text('{"_class_name": "StableVideoDiffusionPipeline"}')
    assert "image-only" in _bad(tmp_path, tiny, "a cat\n", model=svd)
    assert "needs --i2v-model" in _bad(tmp_path, tiny, "a cat\n", "--continue", "i2v")
    assert "a i2v pipeline is needed" in _bad(tmp_path, tiny, "a cat\n", "--continue", "i2v",
                                              "--i2v-model", tiny("wan"))
    assert "not a CLIP model folder" in _bad(tmp_path, tiny, "a cat\n", "--search-k", "2",
                                             "--search-clip", empty)


def test_prompt_files_saved_with_a_byte_order_mark_read_as_without(tmp_path):
    """Windows editors start UTF-8 files with a BOM: it was the first prompt's first
    character, and the first jsonl line did not parse."""
    from generate.prompts import load_prompts

    text, stories = tmp_path / "p.txt", tmp_path / "s.jsonl"
    text.write_bytes("\ufeffa cat on a beach\n".encode())
    stories.write_bytes('\ufeff{"id": "cat", "prompts": ["a cat"]}\n'.encode())
    (plain,) = load_prompts(text)
    assert plain.prompts == ("a cat on a beach",) and plain.id.startswith("00000_a-cat-on")
    (story,) = load_prompts(stories)
    assert (story.id, story.prompts) == ("cat", ("a cat",))


def test_derive_seed_is_stable_and_distinct():
    assert derive_seed(0, "a", 1, 2) == derive_seed(0, "a", 1, 2)
    seeds = {derive_seed(s, i, c, k) for s in (0, 1) for i in "ab" for c in range(3)
             for k in range(3)}
    assert len(seeds) == 36
    assert chunked.make_noise((2, 3), 5).equal(make_noise((2, 3), 5))


# -- CLIP scoring and the checks --------------------------------------------------------------

def test_clip_scorer_and_cli(tiny, tmp_path):
    from datakit.models.tiny import build_tiny_clip
    from generate.search import TEXT_WEIGHT, ClipScorer

    clip = build_tiny_clip(tmp_path / "clip")
    scorer = ClipScorer(clip)
    rng = np.random.default_rng(0)
    cond = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    text = scorer.embed_text("a cat")[0]

    def to_text(frame):
        return float(scorer._embed(frame[None])[0] @ text)

    # the join (first kept frame against the condition: 1.0 when it is the condition) plus
    # TEXT_WEIGHT times the frames' mean similarity to the prompt
    assert scorer(np.stack([cond, cond]), cond, "a cat") == pytest.approx(
        1.0 + TEXT_WEIGHT * to_text(cond), abs=1e-5)
    other = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    # a later frame moves only the text term (the paper's min over frames let it set the score)
    assert scorer(np.stack([cond, other]), cond, "a cat") == pytest.approx(
        1.0 + TEXT_WEIGHT * (to_text(cond) + to_text(other)) / 2, abs=1e-5)
    # the same frames joining worse score lower
    assert scorer(np.stack([other, cond]), cond, "a cat") < \
        scorer(np.stack([cond, other]), cond, "a cat")
    out = tmp_path / "out"
    result = generate("--prompts", prompts_file(tmp_path, "a cat\n"), "--model", tiny("wan"),
                      "--out", out, "--frames", "18", "--chunk-frames", "9", *BASE,
                      "--search-k", "2", "--search-steps", "1", "--search-clip", clip)
    assert result.exit_code == 0, result.output
    (mp4,) = out.glob("*.mp4")
    search = json.loads(mp4.with_suffix(".json").read_text())["chunk_details"][1]["search"]
    assert search["scorer"] == "clip" and len(search["scores"]) == 2


def test_generate_runs_checks_into_report(tiny, tmp_path):
    out = tmp_path / "out"
    result = generate("--prompts", prompts_file(tmp_path, "a cat\n"), "--model", tiny("wan"),
                      "--out", out, "--frames", "18", "--chunk-frames", "9", "--steps", "2",
                      "--height", "32", "--width", "32", "--search-k", "1")
    assert result.exit_code == 0, result.output
    (mp4,) = out.glob("*.mp4")
    chunk_starts = json.loads(mp4.with_suffix(".json").read_text())["chunk_starts"]
    assert len(chunk_starts) > 1
    # the video was checked (an error json would also fill the folder): its seams are the
    # chunk loop's, and the report lists it among the checked videos
    checked = json.loads((out / "report" / f"{mp4.stem}.checks.json").read_text())
    assert "error" not in checked and checked["frames"] == 18
    assert [s["frame"] for s in checked["seams"]] == chunk_starts[1:]
    assert set(checked["metrics"]) >= {"seam_jump_max", "seam_warp_jump_max", "flicker"}
    (summary,) = json.loads((out / "report" / "summary.json").read_text())
    assert "error" not in summary and summary["flicker"] == checked["metrics"]["flicker"]
    page = (out / "report" / "index.html").read_text()
    assert "could not be checked" not in page and f"{mp4.stem}_metrics.png" in page


# -- the conditioning comes from the end of the previous chunk --------------------------------

def spy_decodes(monkeypatch) -> list[np.ndarray]:
    decoded: list[np.ndarray] = []
    original = Backbone.decode

    def decode(self, latents):
        frames = original(self, latents)
        decoded.append(frames)
        return frames

    monkeypatch.setattr(Backbone, "decode", decode)
    return decoded


def test_search_and_anchor_condition_on_the_last_frames(tiny, tmp_path, monkeypatch):
    backbone = load_backbone(str(tiny("wan")))
    settings = ChunkSettings(frames=13, chunk_frames=9, overlap=5, steps=3, guidance=2.0,
                             height=32, width=32, search_k=2, search_steps=1)
    conditions, previews = [], []

    class Scorer:
        name = "spy"

        def __call__(self, preview, condition, prompt=""):
            conditions.append(condition.copy())
            previews.append(preview.shape)
            return 0.0

    decoded = spy_decodes(monkeypatch)
    encoded = []
    original_encode = Backbone.encode
    monkeypatch.setattr(Backbone, "encode",
                        lambda self, f: encoded.append(f.copy()) or original_encode(self, f))
    generator = ChunkedGenerator(backbone, settings, scorer=Scorer())
    generator(Story("s", ("a cat",), None, "t"), 4, tmp_path / "s.mp4", tmp_path / "st")
    chunk0 = decoded[0]
    assert len(conditions) == 2 and all(np.array_equal(c, chunk0[8]) for c in conditions)
    assert not np.array_equal(chunk0[0], chunk0[8])  # the test can tell start from end
    assert np.array_equal(encoded[0], chunk0[4:9])  # the anchor: chunk 0's last 5 frames
    assert previews == [(4, 32, 32, 3)] * 2  # scored on the 9 - 5 frames that are kept


def test_i2v_conditions_on_the_last_frame(tiny, tmp_path, monkeypatch):
    backbone = load_backbone(str(tiny("wan")))
    i2v = load_backbone(str(tiny("wan-i2v")), "i2v")
    settings = ChunkSettings(frames=17, chunk_frames=9, continue_mode="i2v", steps=2,
                             guidance=2.0, height=32, width=32, search_k=1)
    decoded = spy_decodes(monkeypatch)
    images = []
    original = Backbone.run

    def run(self, *args, image=None, **kwargs):
        images.append(image)
        return original(self, *args, image=image, **kwargs)

    monkeypatch.setattr(Backbone, "run", run)
    ChunkedGenerator(backbone, settings, i2v=i2v)(Story("s", ("a cat",), None, "t"), 1,
                                                   tmp_path / "s.mp4", tmp_path / "st")
    assert images[0] is None and np.array_equal(images[1], decoded[0][-1])
    assert not np.array_equal(decoded[0][0], decoded[0][-1])


def test_continuity_scorer_judges_the_join_not_stillness():
    condition = np.full((32, 32, 3), 100, np.uint8)
    still = np.stack([condition] * 3)
    moving = np.stack([condition, np.full((32, 32, 3), 160, np.uint8),
                       np.full((32, 32, 3), 220, np.uint8)])
    jumps = np.stack([np.full((32, 32, 3), 200, np.uint8), condition, condition])
    scorer = ContinuityScorer()
    assert scorer(still, condition) == scorer(moving, condition) == pytest.approx(1.0)
    assert scorer(jumps, condition) == pytest.approx(1 - 100 / 255, abs=1e-6)


# -- smaller defects --------------------------------------------------------------------------

def test_steps_2_runs_with_default_search_and_shows_progress(tiny, tmp_path, caplog):
    from generate.search import default_search_steps

    assert [default_search_steps(s) for s in (50, 6, 4, 3, 2, 1)] == [3, 3, 2, 1, 1, 1]
    out = tmp_path / "out"
    result = generate("--prompts", prompts_file(tmp_path, "a cat running\n"), "--model",
                      tiny("wan"), "--out", out, "--frames", "13", "--chunk-frames", "9",
                      "--steps", "2", "--height", "32", "--width", "32", "--no-checks")
    assert result.exit_code == 0, result.output
    (mp4,) = out.glob("*.mp4")
    assert mp4.stem.startswith("00000_a-cat-running_")
    info = json.loads(mp4.with_suffix(".json").read_text())
    assert info["chunk_details"][1]["search"]["steps"] == 1
    assert len(info["chunk_details"][1]["search"]["scores"]) == 5
    assert info["continue_mode"] == "anchor" and info["overlap_frames"] == 5
    # 2 chunks of 2 steps + 5 previews of 1 step
    assert "9/9" in result.stderr and "ETA" in result.stderr
    assert info["chunk_details"][1]["search"]["scorer"] == "continuity"  # no CLIP offline
    assert "CLIP scorer openai/clip-vit-base-patch32 is not available" in caplog.text
    # anchor candidates are fresh noise: they differ everywhere
    assert abs(info["chunk_details"][1]["search"]["candidate_correlation"]) < 0.05


def test_ignored_options_warn(tiny, tmp_path, caplog):
    from generate.runner import GenerateOptions, warn_ignored

    options = GenerateOptions(prompts=tmp_path, model="m", out=tmp_path, refine_chunk=13,
                              refine_strength=0.5, i2v_model="x", search_k=1, search_steps=2,
                              overlap=4)
    assert warn_ignored(options, "none") == [
        "--refine-chunk is ignored: no --refine", "--refine-strength is ignored: no --refine",
        "--i2v-model is ignored: --continue is none", "--search-steps is ignored: --search-k 1",
        "--overlap is ignored: --continue is none"]
    assert warn_ignored(GenerateOptions(prompts=tmp_path, model="m", out=tmp_path), "anchor") \
        == []
    result = generate("--prompts", prompts_file(tmp_path, "a cat\n"), "--model", tiny("wan"),
                      "--out", tmp_path / "o", "--frames", "9", "--chunk-frames", "9", *TINY,
                      "--refine-overlap", "4")
    assert result.exit_code == 0 and "--refine-overlap is ignored: no --refine" in caplog.text


def test_model_not_found_is_one_line(tiny, tmp_path, monkeypatch):
    from huggingface_hub import constants

    line = _bad(tmp_path, tiny, "a cat\n", model=tmp_path / "missing" / "wan")
    assert line.endswith("missing/wan: no such folder (and not a hub id like org/name)")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    line = _bad(tmp_path, tiny, "a cat\n", model="someone/not-cached-video-model")
    assert "not in the hub cache (HF_HUB_OFFLINE is set" in line


def test_peak_rss_is_per_video():
    from generate.runner import peak_memory, reset_peak_memory

    block = np.ones(600 * 2**20 // 8)  # 600 MiB touched, then freed
    before = peak_memory()["peak_rss_mb"]
    del block
    reset_peak_memory()
    peak = peak_memory()
    assert peak["peak_rss_of"] == "video" and peak["peak_rss_mb"] < before - 500


# -- memory: shared components, per-component dtype -------------------------------------------

def test_refine_shares_the_t2v_components_and_wan_vae_stays_float32(tiny):
    from generate.loading import share_backbone

    backbone = load_backbone(str(tiny("wan")), dtype="bfloat16")
    assert backbone.pipe.transformer.dtype == torch.bfloat16
    assert backbone.pipe.text_encoder.dtype == torch.bfloat16
    assert backbone.pipe.vae.dtype == torch.float32
    v2v = share_backbone(backbone, "v2v")
    assert type(v2v.pipe).__name__ == "WanVideoToVideoPipeline" and v2v.role == "v2v"
    for name in ("transformer", "vae", "text_encoder"):
        assert getattr(v2v.pipe, name) is getattr(backbone.pipe, name)
    # sharing leaves each model in its dtype (diffusers' from_pipe casts them all to float32)
    assert backbone.pipe.transformer.dtype == torch.bfloat16
    assert backbone.pipe.text_encoder.dtype == torch.bfloat16
    assert backbone.pipe.vae.dtype == torch.float32
    assert load_backbone(str(tiny("wan"))).pipe.transformer.dtype == torch.float32  # CPU default


def test_reuse_candidates_correlate_as_vidrd_defines():
    from generate.search import candidate_correlation

    previous = make_noise((1, 4, 6, 8, 8), 0)
    candidates = [chunked.reuse_noise(previous, make_noise((1, 4, 6, 8, 8), k), 2, 4.0)
                  for k in range(1, 4)]
    # 4 of 6 frames mix the shared past with weight 4/sqrt(17): correlation 16/17 there
    assert candidate_correlation(candidates) == pytest.approx((2 + 4 * 16 / 17) / 6, abs=0.03)
    fresh = [make_noise((1, 4, 6, 8, 8), k) for k in range(3)]
    assert abs(candidate_correlation(fresh)) < 0.05
