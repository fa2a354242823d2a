"""How chunks hold together: the colour-drift correction against the first chunk, the search
score (the join and the chunk's prompt), the options that say when the anchor is released,
and what VidRD's `reuse` does to motion at a seam."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from datakit.cli import app
from datakit.models.tiny import build_tiny_clip
from generate.backbone import Backbone
from generate.checks import check_video
from generate.chunked import ChunkedGenerator, ChunkSettings
from generate.continuation import channel_stats
from generate.loading import load_backbone
from generate.prompts import Story
from generate.search import TEXT_WEIGHT, ClipScorer
from generate.tiny import build_tiny_pipeline


@pytest.fixture(scope="module")
def wan(tmp_path_factory):
    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny") / "wan", "wan")


# -- colour drift: AdaIN toward the first chunk -----------------------------------------------

def drifting(monkeypatch, step: float = 0.8):
    """Every pipeline call adds `step` more to every latent channel than the one before (a
    colour that creeps chunk after chunk), and frames are decoded readably: a fixed texture
    brightened by 40 grey levels per unit of its latent's mean (the random tiny VAE saturates,
    so its colours would not show the drift)."""
    original, calls = Backbone.run, []
    texture = np.random.default_rng(1).integers(60, 120, (32, 32, 3))

    def run(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs) + step * (len(calls) - 1)

    def decode(self, latents):
        t, count = self.temporal, self.decoded_frames(latents.shape[2])
        means = latents.float().mean(dim=(0, 1, 3, 4)).numpy()
        values = [means[0 if p == 0 else (p - 1) // t + 1] for p in range(count)]
        return np.stack([np.clip(texture + 40 * v, 0, 255) for v in values]).astype(np.uint8)

    monkeypatch.setattr(Backbone, "run", run)
    monkeypatch.setattr(Backbone, "decode", decode)
    return calls


def colour_run(wan, tmp_path, prompts, name, drift, **extra):
    drift.clear()  # each video creeps from its own first chunk
    backbone = load_backbone(str(wan))
    settings = ChunkSettings(frames=25, chunk_frames=9, continue_mode="none", steps=2,
                             guidance=1.0, height=32, width=32, search_k=1, **extra)
    generator = ChunkedGenerator(backbone, settings)
    info = generator(Story("s", prompts, None, "t"), 3, tmp_path / f"{name}.mp4",
                     tmp_path / name)
    (tmp_path / f"{name}.json").write_text(json.dumps(info))  # the seams, for the checks
    latents = [generator._load(tmp_path / name, c)[0]["latents"] for c in range(3)]
    return info, latents, check_video(tmp_path / f"{name}.mp4")[0]["metrics"]


def test_colour_correction_pulls_chunks_to_the_first_and_lowers_colour_drift(
        wan, tmp_path, monkeypatch):
    drift = drifting(monkeypatch)
    off, raw, off_checks = colour_run(wan, tmp_path, ("a red car",), "off", drift,
                                      colour_correction=0.0)
    full, matched, full_checks = colour_run(wan, tmp_path, ("a red car",), "full", drift,
                                            colour_correction=1.0)
    first_mean, first_std = channel_stats(matched[0])
    for chunk in matched[1:]:  # factor 1: each channel's mean and std are the first chunk's
        mean, std = channel_stats(chunk)
        assert torch.allclose(mean, first_mean, atol=1e-4)
        assert torch.allclose(std, first_std, atol=1e-3)
    assert float((channel_stats(raw[2])[0] - channel_stats(raw[0])[0]).mean()) > 1.5
    assert (off["colour_correction"], full["colour_correction"]) == (0.0, 1.0)
    assert full["chunk_details"][2]["colour_correction"] == 1.0
    assert full_checks["colour_drift_max"] < \
        0.5 * off_checks["colour_drift_max"]


def test_colour_correction_is_on_by_default_for_one_prompt_only(wan, tmp_path, monkeypatch):
    drift = drifting(monkeypatch)
    one, latents, _ = colour_run(wan, tmp_path, ("a red car",), "one", drift)
    story, _, _ = colour_run(wan, tmp_path, ("a red car", "a blue boat"), "story", drift)
    assert one["colour_correction"] == 0.25
    assert story["colour_correction"] == 0.0
    assert "colour_correction" not in story["chunk_details"][1]
    # 0.25 of the way: each channel's gap to the first chunk's mean is 3/4 of what it is
    # uncorrected (the same run with the correction off)
    _, raw, _ = colour_run(wan, tmp_path, ("a red car",), "raw", drift, colour_correction=0.0)
    gap = channel_stats(latents[1])[0] - channel_stats(latents[0])[0]
    raw_gap = channel_stats(raw[1])[0] - channel_stats(raw[0])[0]
    assert torch.allclose(gap, 0.75 * raw_gap, atol=1e-4)
    assert float(raw_gap.mean()) > 0.5


# -- search: the join and the prompt together -------------------------------------------------

def test_clip_score_rewards_the_prompt_not_stillness(tmp_path):
    """The paper's min over frames of the similarity to the last frame scores a still preview
    1.0, the best possible; the score now is the join (first kept frame) plus the prompt."""
    scorer = ClipScorer(build_tiny_clip(tmp_path / "clip"))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    embedded = scorer._embed(images)
    text = scorer.embed_text("a dog running on the beach")[0]
    towards = (embedded @ text).numpy()
    condition = images[int(np.argmin(towards))]
    matching = images[int(np.argmax(towards))]
    still = np.stack([condition] * 4)
    moving = np.stack([condition] + [matching] * 3)
    assert scorer(still, condition, "a dog running on the beach") < \
        scorer(moving, condition, "a dog running on the beach")
    # the score is the join plus TEXT_WEIGHT times the mean text similarity, values read here
    join = float(embedded[int(np.argmin(towards))] @ embedded[int(np.argmin(towards))])
    mean_text = (towards.min() + 3 * towards.max()) / 4
    assert scorer(moving, condition, "a dog running on the beach") == pytest.approx(
        join + TEXT_WEIGHT * mean_text, abs=1e-4)
    # a new chunk prompt changes the ranking input: the text term follows the prompt
    assert scorer(moving, condition, "a red car") != pytest.approx(
        scorer(moving, condition, "a dog running on the beach"), abs=1e-6)


# -- when the anchor is released: one option of three ------------------------------------------

def cli(wan, tmp_path, *extra):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat running\n")
    return CliRunner().invoke(app, [
        "generate", "--prompts", str(prompts), "--model", str(wan), "--out", str(tmp_path / "o"),
        "--steps", "4", "--height", "32", "--width", "32", "--no-checks", "--search-k", "1",
        "--frames", "13", "--chunk-frames", "9", "--overlap", "5", *extra])


def test_anchor_release_options_and_how_they_relate(wan, tmp_path):
    result = cli(wan, tmp_path, "--anchor-release", "0.5", "--anchor-steps", "2")
    assert result.exit_code == 2
    assert "--anchor-release and --anchor-steps all say when the anchor is released: give one" \
        in result.output.strip().splitlines()[-1]
    result = cli(wan, tmp_path, "--reuse-guidance", "0.5")  # by step count, as before
    assert result.exit_code == 0, result.output
    info = json.loads(next((tmp_path / "o").glob("00000_*.json")).read_text())
    assert info["settings"]["anchor_release"] is None
    assert info["chunk_details"][1]["pinned_steps"] == [1, 2]  # 0.5 of 4 steps, staged
    help_text = CliRunner().invoke(app, ["generate", "--help"], terminal_width=200).output
    assert "--anchor-steps or --reuse-guidance release by step count instead" in \
        " ".join(help_text.split())


# -- reuse: what VidRD's reversed seeding does to motion, read by the reversal check ----------

def test_reuse_seeds_each_chunk_as_a_rewind_of_the_previous(tmp_path, monkeypatch):
    """A model that keeps whatever its latents hold (so a chunk shows what it was seeded with)
    and a readable decoder (a smooth texture shifted 2 px right per unit of the frame
    latent's mean): chunk 0 is seeded as a steady pan. `reuse` seeds chunk 1's free frame j
    with the previous chunk's noise at frame N-1-j (and pins latent m to its state at N-1-m),
    so the pan plays backwards after the seam: the checks' seam direction is about -1."""
    import cv2

    backbone = load_backbone(str(build_tiny_pipeline(tmp_path / "ms", "modelscope")))
    texture = cv2.GaussianBlur(np.random.default_rng(2).integers(0, 255, (64, 160, 3))
                               .astype(np.float32), (0, 0), 4)
    texture = cv2.normalize(texture, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)

    def keep(self, prompt, latents, steps, *args, on_step=None, **kwargs):
        state = latents
        for step in range(steps):
            replaced = on_step(step, state) if on_step else None
            state = state if replaced is None else replaced
        return state.clone()

    def decode(self, latents):
        shifts = (2 * latents.float().mean(dim=(0, 1, 3, 4))).round().int().tolist()
        return np.stack([texture[:32, 40 + s:72 + s] for s in shifts])

    original = ChunkedGenerator.prepare_noise

    def pan_first(self, story_id, seed, chunk, candidate, shape, previous):
        noise = original(self, story_id, seed, chunk, candidate, shape, previous)
        if chunk == 0:  # chunk 0 holds a steady pan: frame f's latents have mean f
            noise = noise * 0 + torch.arange(shape[2]).float().view(1, 1, -1, 1, 1)
        return noise

    monkeypatch.setattr(Backbone, "run", keep)
    monkeypatch.setattr(Backbone, "decode", decode)
    monkeypatch.setattr(ChunkedGenerator, "prepare_noise", pan_first)
    settings = ChunkSettings(frames=28, chunk_frames=16, overlap=4, continue_mode="reuse",
                             steps=4, guidance=1.0, height=32, width=32, search_k=1)
    info = ChunkedGenerator(backbone, settings)(Story("r", ("a car",), None, "t"), 1,
                                                tmp_path / "r.mp4", tmp_path / "st")
    checks = check_video(tmp_path / "r.mp4", chunk_starts=info["chunk_starts"])[0]
    (seam,) = checks["seams"]
    assert seam["direction"] < -0.9 and seam["reversal"]
    assert checks["metrics"]["seam_reversals"] == 1
