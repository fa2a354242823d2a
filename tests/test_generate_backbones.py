"""What each backbone family really does, read from the real diffusers classes on tiny builds:
how many frames its VAE decodes, the defaults a Wan user expects, the default model and
device, ModelScope's in-place step callback, and which GPU the peak memory is read from."""

import json

import pytest
import torch
from typer.testing import CliRunner

from datakit.cli import app
from generate.families import WAN_NEGATIVE_PROMPT, default_flow_shift, set_flow_shift
from generate.loading import load_backbone, resolve_device

TINY = ["--steps", "2", "--height", "32", "--width", "32", "--no-checks", "--search-k", "1"]


def generate(tmp_path, *args):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat running\n")
    return CliRunner().invoke(app, ["generate", "--prompts", str(prompts), "--out",
                                    str(tmp_path / "out"), *map(str, args)])


# -- how many frames each VAE decodes ---------------------------------------------------------

@pytest.mark.parametrize("family", ["wan", "cogvideox", "ltx"])
def test_decoded_frames_match_the_real_vae(tiny, family):
    """CogVideoX's VAE decodes latents in pairs: an even latent count L gives 4L frames (2 -> 8,
    4 -> 16), an odd one 4L - 3; Wan and LTX always (L - 1) t + 1."""
    backbone = load_backbone(str(tiny(family)))
    t = backbone.temporal
    expected = {"cogvideox": {1: 1, 2: 8, 3: 9, 4: 16}}.get(
        family, {n: (n - 1) * t + 1 for n in range(1, 5)})
    for latents, frames in expected.items():
        shape = (1, backbone.channels, latents, 32 // backbone.spatial, 32 // backbone.spatial)
        assert len(backbone.decode(torch.zeros(shape))) == frames
        assert backbone.decoded_frames(latents) == frames
    assert backbone.frames_rule == f"{2 * t if family == 'cogvideox' else t}k+1"


def test_cogvideox_chunks_that_cannot_be_written_are_refused_before_any_compute(
        tiny, tmp_path, monkeypatch):
    """--chunk-frames 29 is 8 latents, which decode into 32 frames: the run used to generate
    every chunk and then fail with "wrote 67 frames, planned 61"."""
    from diffusers import CogVideoXTransformer3DModel

    def never(*args, **kwargs):
        raise AssertionError("the transformer ran")

    monkeypatch.setattr(CogVideoXTransformer3DModel, "forward", never)
    result = generate(tmp_path, "--model", tiny("cogvideox"), "--frames", 61,
                      "--chunk-frames", 29, *TINY)
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()[-1]
    assert "--chunk-frames 29 does not fit CogVideoX's 8k+1 rule" in line
    assert "29 frames are 8 latents, which decode into 32" in line and "use 25 or 33" in line
    assert not (tmp_path / "out" / "manifest.parquet").exists()


# -- Wan's settings: flow shift by resolution, its published negative prompt ------------------

def test_wan_flow_shift_follows_the_resolution_and_negative_prompt_is_wans(tiny, tmp_path):
    """diffusers' Wan example: flow_shift 3.0 at 480p, 5.0 at 720p. The tiny Wan ships
    FlowMatchEuler with shift 7; a 32x32 run is below 720p, so it runs at 3.0."""
    from generate.families import FAMILIES

    wan, ltx = FAMILIES["wan"], FAMILIES["ltx"]
    assert (default_flow_shift(wan, 480, 832), default_flow_shift(wan, 720, 1280)) == (3.0, 5.0)
    assert default_flow_shift(ltx, 720, 1280) is None  # other families: as shipped
    backbone = load_backbone(str(tiny("wan")))
    shifted = set_flow_shift(backbone.pipe.scheduler, 5.0)
    shifted.set_timesteps(4)
    raw = torch.tensor([1, 2 / 3, 1 / 3])
    # FlowMatchEuler's sigmas: shift * s / (1 + (shift - 1) * s) of the raw schedule
    assert torch.allclose(shifted.sigmas[:3], 5 * raw / (1 + 4 * raw), atol=5e-3)

    result = generate(tmp_path, "--model", tiny("wan"), "--frames", 9, *TINY)
    assert result.exit_code == 0, result.output
    info = json.loads(next((tmp_path / "out").glob("00000_*.json")).read_text())
    assert info["scheduler"] == {"class": "FlowMatchEulerDiscreteScheduler", "flow_shift": 3.0}
    negative = info["settings"]["negative_prompt"]
    assert negative == WAN_NEGATIVE_PROMPT
    for words in ("静态", "静止不动的画面", "倒着走"):  # static, still picture, walking backwards
        assert words in negative


def test_other_families_keep_an_empty_negative_prompt_and_their_scheduler(tiny, tmp_path):
    result = generate(tmp_path, "--model", tiny("ltx"), "--frames", 9, *TINY)
    assert result.exit_code == 0, result.output
    info = json.loads(next((tmp_path / "out").glob("00000_*.json")).read_text())
    assert info["settings"]["negative_prompt"] == ""
    assert info["scheduler"]["flow_shift"] == 1.0  # the tiny LTX's own FlowMatchEuler


# -- the default model and device -------------------------------------------------------------

def test_no_model_uses_wan_2_1_1_3b_and_says_in_one_line_when_it_cannot_be_had(
        tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    result = generate(tmp_path, *TINY)
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()[-1]
    assert "no --model given, and the default Wan-AI/Wan2.1-T2V-1.3B-Diffusers" in line
    assert "not in the hub cache" in line


def test_model_index_cached_without_weights_is_one_line(tiny, tmp_path, monkeypatch):
    """The hub cache holds the model index but no weights, and the hub is not asked."""
    import shutil

    snapshot = tmp_path / "hub" / "models--org--wan" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    shutil.copy(tiny("wan") / "model_index.json", snapshot / "model_index.json")
    (tmp_path / "hub" / "models--org--wan" / "refs").mkdir()
    (tmp_path / "hub" / "models--org--wan" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    result = generate(tmp_path, "--model", "org/wan", *TINY)
    assert result.exit_code == 2, result.output
    assert "org/wan: its weights are not in the hub cache and could not be downloaded" in \
        result.output.strip().splitlines()[-1]


def test_device_auto_picks_cuda_when_there_is_one(monkeypatch):
    from generate.runner import GenerateOptions

    assert GenerateOptions(prompts="p", model=None, out="o").device == "auto"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"


# -- ModelScope: the legacy callback's in-place overwrite -------------------------------------

def test_modelscope_overwrite_reaches_the_latents_the_scheduler_steps_from(tiny, monkeypatch):
    """ModelScope's `callback(step, t, latents)` returns nothing: the overwrite must be copied
    into the tensor the pipeline goes on with. Read the `sample` of the next scheduler step."""
    from diffusers import DDIMScheduler

    backbone = load_backbone(str(tiny("modelscope")))
    samples = []
    step = DDIMScheduler.step

    def spy(self, model_output, timestep, sample, *args, **kwargs):
        samples.append(sample.clone())
        return step(self, model_output, timestep, sample, *args, **kwargs)

    monkeypatch.setattr(DDIMScheduler, "step", spy)
    written = {}

    def on_step(index, latents):
        if index == 0:
            written["value"] = latents.clone()
            written["value"][:, :, 1] = 7.0
            return written["value"]
        return None

    backbone.run("a cat", torch.randn(1, 4, 3, 4, 4), 3, 1.0,
                 torch.Generator().manual_seed(0), 32, 32, on_step=on_step)
    # the pipeline steps frame by frame: (B, C, F, H, W) -> (B * F, C, H, W)
    expected = written["value"].permute(0, 2, 1, 3, 4).reshape(samples[1].shape)
    assert torch.equal(samples[1], expected.to(samples[1]))
    assert torch.all(samples[1][1] == 7.0)


# -- peak GPU memory of the device the models are on ------------------------------------------

def test_peak_gpu_memory_is_read_on_the_models_device(monkeypatch):
    from generate.runner import peak_memory, reset_peak_memory

    asked = []
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: asked.append(
        ("reset", device)))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: asked.append(
        ("peak", device)) or 3 * 2**20)
    reset_peak_memory("cuda:1")
    assert peak_memory("cuda:1")["peak_gpu_mb"] == 3.0
    assert asked == [("reset", "cuda:1"), ("peak", "cuda:1")]
    assert peak_memory("cpu")["peak_gpu_mb"] is None and len(asked) == 2
