"""The chunk loop on the samplers the real checkpoints ship with, read where the scheduler steps.

Each tiny pipeline gets its family's shipped scheduler config, written here with its source:
- Wan 2.1 T2V 1.3B (`Wan-AI/Wan2.1-T2V-1.3B-Diffusers`, scheduler/scheduler_config.json):
  UniPC, flow prediction, flow_shift 3.0, order 2, bh2.
- CogVideoX-2b (`THUDM/CogVideoX-2b`, scheduler/scheduler_config.json): v-prediction
  zero-SNR DDIM with snr_shift_scale 3.0, trailing timesteps; CogVideoX-5b uses the same with
  snr_shift_scale 1.0 and its model card recommends `CogVideoXDPMScheduler` on that config.
- LTX-Video (`Lightricks/LTX-Video`, scheduler/scheduler_config.json): FlowMatchEuler with
  dynamic (resolution-dependent) shift, base 0.95, max 2.05, shift_terminal 0.1.

What a test reads is the `sample` argument of every `scheduler.step` call: the latents the
scheduler really continues from, not what a callback returned. The test VAE of the anchor test
is readable: latent j is the mean of the pixel frames of its causal group, so a test can say
which pixel frames were pinned where, for 1x, 4x and 8x temporal compression.
"""

import inspect
import json
import math

import numpy as np
import pytest
import torch

from generate.backbone import Backbone
from generate.chunked import ChunkedGenerator, ChunkSettings
from generate.continuation import ANCHOR_RELEASE, release_index
from generate.families import keep_step_overwrites
from generate.loading import load_backbone
from generate.prompts import Story
from generate.tiny import build_tiny_pipeline

WAN_UNIPC = {
    "_class_name": "UniPCMultistepScheduler", "beta_end": 0.02, "beta_schedule": "linear",
    "beta_start": 0.0001, "disable_corrector": [], "dynamic_thresholding_ratio": 0.995,
    "final_sigmas_type": "zero", "flow_shift": 3.0, "lower_order_final": True,
    "num_train_timesteps": 1000, "predict_x0": True, "prediction_type": "flow_prediction",
    "rescale_betas_zero_snr": False, "sample_max_value": 1.0, "solver_order": 2,
    "solver_p": None, "solver_type": "bh2", "steps_offset": 0, "thresholding": False,
    "timestep_spacing": "linspace", "trained_betas": None, "use_beta_sigmas": False,
    "use_exponential_sigmas": False, "use_flow_sigmas": True, "use_karras_sigmas": False,
}
COGVIDEOX_DDIM = {
    "_class_name": "CogVideoXDDIMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "beta_start": 0.00085, "clip_sample": False, "clip_sample_range": 1.0,
    "num_train_timesteps": 1000, "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True, "sample_max_value": 1.0, "set_alpha_to_one": True,
    "snr_shift_scale": 3.0, "steps_offset": 0, "timestep_spacing": "trailing",
    "trained_betas": None,
}
COGVIDEOX_DPM = {**COGVIDEOX_DDIM, "_class_name": "CogVideoXDPMScheduler", "snr_shift_scale": 1.0}
LTX_FLOW = {
    "_class_name": "FlowMatchEulerDiscreteScheduler", "base_image_seq_len": 1024,
    "base_shift": 0.95, "invert_sigmas": False, "max_image_seq_len": 4096, "max_shift": 2.05,
    "num_train_timesteps": 1000, "shift": 1.0, "shift_terminal": 0.1, "use_beta_sigmas": False,
    "use_dynamic_shifting": True, "use_exponential_sigmas": False, "use_karras_sigmas": False,
}
SHIPPED = {"wan-unipc": ("wan", WAN_UNIPC), "cogvideox-ddim": ("cogvideox", COGVIDEOX_DDIM),
           "cogvideox-dpm": ("cogvideox", COGVIDEOX_DPM), "ltx-flow": ("ltx", LTX_FLOW)}


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """shipped('wan-unipc') -> a tiny pipeline folder saved with that scheduler config."""
    import diffusers

    root = tmp_path_factory.mktemp("shipped")
    built = {}

    def get(name: str, kind: str = ""):
        key = name + kind
        if key not in built:
            family, config = SHIPPED[name]
            folder = build_tiny_pipeline(root / key, family + kind)
            cls = getattr(diffusers, config["_class_name"])
            cls.from_config({k: v for k, v in config.items() if k != "_class_name"}) \
                .save_pretrained(folder / "scheduler")
            index = json.loads((folder / "model_index.json").read_text())
            index["scheduler"] = ["diffusers", config["_class_name"]]
            (folder / "model_index.json").write_text(json.dumps(index))
            built[key] = folder
        return built[key]

    return get


def spy_steps(monkeypatch, scheduler_cls) -> list[dict]:
    """Record every `scheduler.step`: the scheduler, the sample it steps from, its output and
    the noise level (sigma, or alpha_bar at the timestep) of that sample."""
    calls: list[dict] = []
    original = scheduler_cls.step
    signature = inspect.signature(original)

    def step(self, *args, **kwargs):
        arguments = signature.bind(self, *args, **kwargs).arguments
        index = self.step_index if getattr(self, "step_index", None) is not None else None
        output = original(self, *args, **kwargs)
        prev = output[0] if isinstance(output, tuple) else output.prev_sample
        calls.append({"scheduler": self, "sample": arguments["sample"].clone(),
                      "out": prev.clone(), "timestep": arguments["timestep"], "index": index})
        return output

    monkeypatch.setattr(scheduler_cls, "step", step)
    return calls


def level(scheduler, call_index: int, timestep) -> tuple[float, float]:
    """x = a * clean + b * noise at the state a step starts from, read from the scheduler's
    own tables (flow: sigma; diffusion: alpha_bar of the timestep)."""
    if hasattr(scheduler, "sigmas") and (scheduler.config.get("use_flow_sigmas")
                                         or type(scheduler).__name__.startswith("FlowMatch")):
        sigma = float(scheduler.sigmas[call_index])
        return 1 - sigma, sigma
    alpha_bar = float(scheduler.alphas_cumprod[int(timestep)])
    return math.sqrt(alpha_bar), math.sqrt(1 - alpha_bar)


def canonical(backbone, native, frames: int):
    shape = backbone.noise_shape(frames, 32, 32)
    return backbone.from_native(native, shape).float()


def split_calls(calls: list[dict], steps: list[int]) -> list[list[dict]]:
    """Cut the flat list of step calls into pipeline calls of the given step counts."""
    out, at = [], 0
    for count in steps:
        out.append(calls[at:at + count])
        at += count
    assert at == len(calls)
    return out


# -- anchor: which pixel frames are pinned where (1x, 4x, 8x) --------------------------------

class ReadableVAE:
    """decode: chunk c's pixel frame p has grey value 20*c + p; encode: latent j = mean of the
    frames of its causal group (0: frame 0; j >= 1: frames (j-1)*t+1 .. j*t)."""

    def __init__(self, backbone):
        self.backbone = backbone
        self.decoded = 0
        self.encoded: list[np.ndarray] = []

    def decode(self, latents):
        frames = self.backbone.pixel_frames(latents.shape[2])
        values = 20 * self.decoded + np.arange(frames)
        self.decoded += 1
        return np.broadcast_to(values[:, None, None, None], (frames, 32, 32, 3)).astype(np.uint8)

    def encode(self, frames):
        self.encoded.append(frames.copy())
        t = self.backbone.temporal
        groups = [frames[:1]] + [frames[1 + j * t:1 + (j + 1) * t]
                                 for j in range((len(frames) - 1) // t)]
        means = torch.tensor([float(g.astype(np.float64).mean()) for g in groups])
        return means.view(1, 1, -1, 1, 1).expand(1, self.backbone.channels, -1, 4, 4).clone()


@pytest.mark.parametrize(("temporal", "chunk", "overlap", "anchors"), [
    (1, 6, 3, [3.0, 4.0, 5.0]),             # per-frame latents: frames 3, 4, 5 of 0..5
    (4, 13, 5, [8.0, 10.5]),                # Wan/CogVideoX: frame 8, then mean of 9..12
    (8, 17, 9, [8.0, 12.5]),                # LTX: frame 8, then mean of 9..16
])
def test_anchor_pins_reencoded_tail_in_forward_order(shipped, tmp_path, monkeypatch, temporal,
                                                     chunk, overlap, anchors):
    from diffusers import UniPCMultistepScheduler

    backbone = load_backbone(str(shipped("wan-unipc")))
    backbone.temporal = temporal  # the readable VAE below stands in for the real one
    vae = ReadableVAE(backbone)
    monkeypatch.setattr(backbone, "decode", vae.decode)
    monkeypatch.setattr(backbone, "encode", vae.encode)
    steps, beta = 6, 0.8
    settings = ChunkSettings(frames=2 * chunk - overlap, chunk_frames=chunk, overlap=overlap,
                             continue_mode="anchor", steps=steps, guidance=1.0, height=32,
                             width=32, reuse_guidance=beta, anchor_release=None, search_k=1)
    generator = ChunkedGenerator(backbone, settings)
    calls = spy_steps(monkeypatch, UniPCMultistepScheduler)
    info = generator(Story("s", ("a cat",), None, "t"), 3, tmp_path / "s.mp4", tmp_path / "st")

    # the previous chunk's last O pixel frames were encoded, as one fresh sequence
    assert [f[0, 0, 0] for f in vae.encoded[0]] == list(range(chunk - overlap, chunk))
    # no frame twice: chunk 1 drops the O frames that re-render them
    assert info["dropped_per_chunk"] == overlap and info["chunk_starts"] == [0, chunk]
    assert info["continue_mode"] == "anchor"
    count = len(anchors)
    pins = [math.ceil((count - m) * steps / count * beta - 1e-9) for m in range(count)][::-1]
    assert info["chunk_details"][1]["pinned_steps"] == pins
    _, second = split_calls(calls, [steps, steps])
    noise = generator._load(tmp_path / "st", 1)[0]["initial"]
    assert torch.equal(second[0]["sample"].float(), noise)
    for i, call in enumerate(second[1:], 1):
        sample = call["sample"].float()
        a, b = level(call["scheduler"], i, call["timestep"])
        for m, value in enumerate(anchors):
            expected = a * value + b * noise[:, :, m]
            pinned = torch.allclose(sample[:, :, m], expected, atol=1e-5)
            assert pinned == (1 <= i < pins[m]), (i, m)


# -- the shipped samplers: pinning read where the scheduler steps -----------------------------

@pytest.mark.parametrize("name", ["wan-unipc", "cogvideox-ddim", "cogvideox-dpm", "ltx-flow"])
def test_anchor_on_shipped_sampler(shipped, tmp_path, monkeypatch, name):
    backbone = load_backbone(str(shipped(name)))
    t = backbone.temporal
    chunk, overlap, steps, beta = 1 + 2 * t, 1 + t, 5, 0.8
    settings = ChunkSettings(frames=2 * chunk - overlap, chunk_frames=chunk, overlap=overlap,
                             steps=steps, guidance=2.0, height=32, width=32,
                             reuse_guidance=beta, anchor_release=None, search_k=1)
    generator = ChunkedGenerator(backbone, settings)
    assert generator.mode == "anchor"  # auto on a time-compressing VAE
    calls = spy_steps(monkeypatch, type(backbone.pipe.scheduler))
    encoded = []
    original_encode = Backbone.encode
    monkeypatch.setattr(Backbone, "encode",
                        lambda self, frames: encoded.append(frames) or original_encode(self,
                                                                                       frames))
    info = generator(Story("s", ("a cat",), None, "t"), 1, tmp_path / "s.mp4", tmp_path / "st")
    first, second = split_calls(calls, [steps, steps])
    saved = generator._load(tmp_path / "st", 1)[0]
    # the clean anchors: the real VAE's encoding of chunk 0's last O decoded frames
    chunk0 = backbone.decode(generator._load(tmp_path / "st", 0)[0]["latents"])
    assert np.array_equal(encoded[0], chunk0[-overlap:])
    clean = original_encode(backbone, chunk0[-overlap:]).float()
    pins = info["chunk_details"][1]["pinned_steps"]
    assert pins == [2, 4]
    for i, call in enumerate(second[1:], 1):
        sample = canonical(backbone, call["sample"], chunk)
        a, b = level(call["scheduler"], i, call["timestep"])
        for m in range(2):
            expected = a * clean[:, :, m] + b * saved["initial"][:, :, m]
            assert torch.allclose(sample[:, :, m], expected, atol=1e-4) == (1 <= i < pins[m])
    # chunk 0 is untouched: each step continues from the previous step's output
    for before, after in zip(first, first[1:], strict=False):
        assert torch.equal(before["out"], after["sample"])


@pytest.mark.parametrize("name", ["wan-unipc", "cogvideox-ddim", "cogvideox-dpm", "ltx-flow"])
def test_reuse_pins_stored_states_on_shipped_sampler(shipped, tmp_path, monkeypatch, name):
    """VidRD's staged guidance: the state the scheduler steps from holds the previous chunk's
    state at the same step, frame order reversed, while pinned; the stepped output is used."""
    backbone = load_backbone(str(shipped(name)))
    t = backbone.temporal
    chunk, overlap, steps, beta = 1 + 2 * t, 2 * t, 5, 0.8
    settings = ChunkSettings(frames=2 * chunk - 1 - t, chunk_frames=chunk, overlap=overlap,
                             continue_mode="reuse", steps=steps, guidance=2.0, height=32,
                             width=32, reuse_guidance=beta, search_k=1)
    generator = ChunkedGenerator(backbone, settings)
    calls = spy_steps(monkeypatch, type(backbone.pipe.scheduler))
    info = generator(Story("s", ("a dog",), None, "t"), 2, tmp_path / "s.mp4", tmp_path / "st")
    first, second = split_calls(calls, [steps, steps])
    pins = info["chunk_details"][1]["pinned_steps"]
    assert pins == [4, 2]
    assert info["dropped_per_chunk"] == backbone.pixel_frames(2)  # the mirrored bridge
    latent = backbone.latent_frames(chunk)
    for i in range(1, steps):
        mine = canonical(backbone, second[i]["sample"], chunk)
        theirs = canonical(backbone, first[i]["sample"], chunk)
        for m in range(2):
            same = torch.allclose(mine[:, :, m], theirs[:, :, latent - 1 - m], atol=1e-6)
            assert same == (i < pins[m]), (i, m)


def test_unipc_corrector_off_only_after_overwrites(shipped, tmp_path, monkeypatch):
    """Wan's UniPC: the corrector runs at every step of chunk 0 and of the previews, and in an
    anchored chunk only on the steps that do not follow an overwrite."""
    from diffusers import UniPCMultistepScheduler

    backbone = load_backbone(str(shipped("wan-unipc")))
    runs: list[list[int]] = []
    set_timesteps = UniPCMultistepScheduler.set_timesteps
    corrector = UniPCMultistepScheduler.multistep_uni_c_bh_update

    def mark(self, *args, **kwargs):
        runs.append([])
        return set_timesteps(self, *args, **kwargs)

    def corrected(self, *args, **kwargs):
        runs[-1].append(self.step_index)
        return corrector(self, *args, **kwargs)

    monkeypatch.setattr(UniPCMultistepScheduler, "set_timesteps", mark)
    monkeypatch.setattr(UniPCMultistepScheduler, "multistep_uni_c_bh_update", corrected)
    settings = ChunkSettings(frames=13, chunk_frames=9, overlap=5, steps=6, guidance=2.0,
                             height=32, width=32, reuse_guidance=0.4, anchor_release=None,
                             search_k=2, search_steps=3)

    class Scorer:
        name = "fixed"

        def __call__(self, preview, condition, prompt=""):
            return 0.0

    generator = ChunkedGenerator(backbone, settings, scorer=Scorer())
    generator(Story("s", ("a cat",), None, "t"), 1, tmp_path / "s.mp4", tmp_path / "st")
    # anchored latents pinned [2, 3] steps (final) and [1, 2] (previews): overwrites after
    # callback steps 0..1 (final) and 0 (previews), so no corrector at step 1..2 and 1
    # (the empty runs are `planned_signal`'s copies: set, never stepped)
    assert [run for run in runs if run] == [[1, 2, 3, 4, 5], [2], [2], [3, 4, 5]]
    assert backbone.pipe.scheduler.config.disable_corrector == []  # the shipped one is back


def test_step_overwrites_survive_unipc_and_history_is_kept():
    """After an overwrite of +100, UniPC with its corrector on at that step undoes most of it;
    off (keep_step_overwrites) the next state starts from it. The order-2 predictor keeps the
    x0 prediction made before the overwrite, which pulls the step back by a bounded amount."""
    from diffusers import HeunDiscreteScheduler, UniPCMultistepScheduler

    from datakit.io.errors import UserError

    unipc = UniPCMultistepScheduler.from_config(
        {k: v for k, v in WAN_UNIPC.items() if k != "_class_name"})

    def after_overwrite(scheduler):
        scheduler.set_timesteps(4)
        sample, output = torch.zeros(1, 2, 3, 4, 4), torch.zeros(1, 2, 3, 4, 4)
        sample = scheduler.step(output, scheduler.timesteps[0], sample).prev_sample
        sample = sample + 100  # what the callback writes
        return scheduler.step(output, scheduler.timesteps[1], sample).prev_sample.mean().item()

    assert after_overwrite(unipc) < 50  # the corrector undid most of it
    kept = after_overwrite(keep_step_overwrites(unipc, [0]))
    # zero velocity: a first-order step would keep 100 exactly; the order-2 history (x0 = 0
    # before the overwrite) extrapolates past the jump by under 1% of it (0.79 here)
    assert 100 < kept < 101
    assert after_overwrite(keep_step_overwrites(unipc, [1])) < 50  # wrong step: undone
    with pytest.raises(UserError, match="second-order"):
        keep_step_overwrites(HeunDiscreteScheduler())


# -- refine's randomized blend, read where each window's scheduler steps ----------------------

@pytest.mark.parametrize("name, chunk, overlap, expected_starts", [
    ("wan-unipc", "13", "8", [0, 2, 4, 5]), ("cogvideox-dpm", "17", "12", [0, 2, 4])])
def test_refine_blend_writes_only_after_the_cut(shipped, tmp_path, monkeypatch, name, chunk,
                                                overlap, expected_starts):
    from typer.testing import CliRunner

    from datakit.cli import app

    family = SHIPPED[name][0]
    model = shipped(name)
    v2v = shipped(name, "-v2v")
    backbone = load_backbone(str(v2v), "v2v")
    calls = spy_steps(monkeypatch, type(backbone.pipe.scheduler))
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat running\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [
        "generate", "--prompts", str(prompts), "--model", str(model), "--out", str(out),
        "--frames", "30", "--chunk-frames", "9", "--steps", "10", "--search-k", "1",
        "--height", "32", "--width", "32", "--no-checks", "--refine", "--refine-model",
        str(v2v), "--refine-chunk", chunk, "--refine-overlap", overlap, "--refine-strength", "0.6",
    ])
    assert result.exit_code == 0, result.output
    info = json.loads(next(out.glob("00000_*.json")).read_text())
    refine = info["refine"]
    window = refine["window_latent_frames"]
    # 30 frames padded to 33 = 9 latents. Each window is encoded from its own pixels starting
    # at frame 4s, so its slot j is the video's latent s + j (slot 0 the single frame 4s).
    # Wan: windows of 13 frames (4 latents) overlapping by 8 start at latents 0, 2, 4, 5;
    # CogVideoX (8k+1 windows): 17 frames (5 latents) overlapping by 12 start at 0, 2, 4.
    starts = expected_starts
    assert window == (4 if family == "wan" else 5)
    assert refine["window_starts"] == [4 * s for s in starts]
    # the refine calls are the last ones; group them by scheduler object (one per window)
    refine_calls = calls[-len(starts) * refine["steps_run"]:]
    order: list = []
    for call in refine_calls:
        if call["scheduler"] not in order:
            order.append(call["scheduler"])
    per_window = [[c for c in refine_calls if c["scheduler"] is s] for s in order]
    assert len(per_window) == len(starts)
    frames_of = (lambda x: x) if family == "wan" else (lambda x: x.permute(0, 2, 1, 3, 4))
    cuts_seen = 0
    for step, cuts in enumerate(refine["blend_offsets"][:-1]):
        outputs = [frames_of(w[step]["out"]).float() for w in per_window]
        total = starts[-1] + window
        blended = torch.full((1, outputs[0].shape[1], total, *outputs[0].shape[3:]), float("nan"))
        # window k > 0 writes the shared latents from 1 + its cut on (its slot 0, one frame
        # where the previous window has a group, stays its own)
        for k, (start, cut) in enumerate(zip(starts, cuts, strict=True)):
            begin = 1 + cut if k else 0
            blended[:, :, start + begin:start + window] = outputs[k][:, :, begin:]
        for k, start in enumerate(starts):
            received = frames_of(per_window[k][step + 1]["sample"]).float()
            expected = blended[:, :, start:start + window].clone()
            if k:
                expected[:, :, :1] = outputs[k][:, :, :1]
            assert torch.allclose(received, expected, atol=1e-6)
            if k and cuts[k]:
                cuts_seen += 1  # latents before the cut came from window k-1, not from k
                assert not torch.allclose(received[:, :, 1:1 + cuts[k]],
                                          outputs[k][:, :, 1:1 + cuts[k]])
    assert cuts_seen


@pytest.mark.parametrize("name", ["wan-unipc", "cogvideox-ddim", "cogvideox-dpm", "ltx-flow"])
def test_search_chooses_on_shipped_sampler(shipped, tmp_path, monkeypatch, name):
    """k-step search read where the scheduler steps: each preview is a full short trajectory
    from its own candidate noise, the scorer sees that trajectory's decoded end, and the
    chunk's full run starts from the best-scoring candidate."""
    backbone = load_backbone(str(shipped(name)))
    t = backbone.temporal
    chunk, overlap, steps, k, preview_steps = 1 + 2 * t, 1 + t, 4, 3, 2
    seen: list[np.ndarray] = []

    class Scorer:  # how close the preview's mean grey is to the conditioning frame's
        name = "grey"

        def __call__(self, preview, condition, prompt=""):
            seen.append(preview.copy())
            return -abs(float(preview.mean()) - float(condition.mean()))

    settings = ChunkSettings(frames=2 * chunk - overlap, chunk_frames=chunk, overlap=overlap,
                             steps=steps, guidance=2.0, height=32, width=32, search_k=k,
                             search_steps=preview_steps)
    generator = ChunkedGenerator(backbone, settings, scorer=Scorer())
    calls = spy_steps(monkeypatch, type(backbone.pipe.scheduler))
    info = generator(Story("s", ("a cat",), None, "t"), 2, tmp_path / "s.mp4", tmp_path / "st")
    _, *previews, final = split_calls(calls, [steps] + [preview_steps] * k + [steps])
    search = info["chunk_details"][1]["search"]
    scores, winner = search["scores"], search["winner"]
    assert len(set(scores)) == k and winner == int(np.argmax(scores))
    # the scorer saw each preview trajectory's own final latents, decoded (bridge dropped)
    for preview, frames in zip(previews, seen, strict=True):
        decoded = backbone.decode(canonical(backbone, preview[-1]["out"], chunk))
        assert np.array_equal(decoded[generator.plan.drop:], frames)
    # each preview starts from a different noise; the full run from the winner's
    initial = generator._load(tmp_path / "st", 1)[0]["initial"]
    starts = [canonical(backbone, preview[0]["sample"], chunk) for preview in previews]
    assert [torch.allclose(start, initial, atol=1e-6) for start in starts] == \
        [j == winner for j in range(k)]
    assert torch.allclose(canonical(backbone, final[0]["sample"], chunk), initial, atol=1e-6)


# -- the anchor released by noise level, previews conditioned like the full run ---------------

@pytest.mark.parametrize("name", ["wan-unipc", "cogvideox-ddim", "ltx-flow"])
def test_anchor_released_by_noise_level_in_previews_and_full_run(shipped, tmp_path, monkeypatch,
                                                                 name):
    """Every anchor latent (0 included) holds `a_i * clean + b_i * noise` in the state the
    scheduler steps from while that state's signal fraction a_i is below the release level,
    and not after: in the 6-step run and in each 3-step preview (where a step count used to
    leave latent 0 unpinned)."""
    backbone = load_backbone(str(shipped(name)))
    t = backbone.temporal
    chunk, overlap, steps, release = 1 + 2 * t, 1 + t, 6, 0.3
    settings = ChunkSettings(frames=2 * chunk - overlap, chunk_frames=chunk, overlap=overlap,
                             steps=steps, guidance=2.0, height=32, width=32, search_k=2,
                             search_steps=3, anchor_release=release)

    class Scorer:
        name = "fixed"

        def __call__(self, preview, condition, prompt=""):
            return 0.0

    generator = ChunkedGenerator(backbone, settings, scorer=Scorer())
    encoded = []
    original_encode = Backbone.encode
    monkeypatch.setattr(Backbone, "encode", lambda self, frames: encoded.append(
        original_encode(self, frames).float()) or encoded[-1])
    calls = spy_steps(monkeypatch, type(backbone.pipe.scheduler))
    info = generator(Story("s", ("a cat",), None, "t"), 1, tmp_path / "s.mp4", tmp_path / "st")
    _, *previews, final = split_calls(calls, [steps, 3, 3, steps])
    clean = encoded[0]
    released = []
    for run in (*previews, final):
        noise = canonical(backbone, run[0]["sample"], chunk)  # step 0: the initial noise
        for i, call in enumerate(run[1:], 1):
            sample = canonical(backbone, call["sample"], chunk)
            a, b = level(call["scheduler"], i, call["timestep"])
            if name == "ltx-flow":  # one scheduler object for every call: read the timestep
                a, b = 1 - float(call["timestep"]) / 1000, float(call["timestep"]) / 1000
            for m in range(2):
                expected = a * clean[:, :, m] + b * noise[:, :, m]
                pinned = torch.allclose(sample[:, :, m], expected, atol=1e-4)
                assert pinned == (a < release), (len(run), i, m, a)
            released.append(a >= release)
    assert any(released) and not all(released)  # the release happens inside the runs
    record = info["chunk_details"][1]
    signal = generator.planned_signal(steps)
    pins = [release_index(signal, release)] * 2
    assert record["pinned_steps"] == pins
    assert record["released_at_signal"] == [round(signal[pins[0]], 4)] * 2
    assert min(record["released_at_signal"]) >= release


def test_default_anchor_release_keeps_the_anchor_to_a_low_noise_level(shipped):
    """On Wan's UniPC (shift 3) with 50 steps the default releases the anchor at a >= 0.9,
    after 49 steps; --reuse-guidance 0.4's step count released it at a = 0.18 (latent 1)
    and 0.08 (latent 0)."""
    backbone = load_backbone(str(shipped("wan-unipc")))
    settings = ChunkSettings(frames=17, chunk_frames=9, overlap=5, steps=50, height=32,
                             width=32, search_k=1)
    assert settings.anchor_release == ANCHOR_RELEASE == 0.9
    generator = ChunkedGenerator(backbone, settings)
    signal = generator.planned_signal(50)
    assert generator.pins == [49, 49] and signal[49] >= 0.9 > signal[48]
    by_steps = ChunkedGenerator(backbone, ChunkSettings(
        frames=17, chunk_frames=9, overlap=5, steps=50, height=32, width=32, search_k=1,
        anchor_release=None, reuse_guidance=0.4))
    assert by_steps.pins == [10, 20]
    assert [round(signal[p], 2) for p in by_steps.pins] == [0.08, 0.18]


@pytest.mark.parametrize("name", ["wan-unipc", "cogvideox-ddim", "ltx-flow"])
def test_planned_signal_is_the_schedule_the_pipeline_runs(shipped, monkeypatch, name):
    """The pins are decided before the call from `planned_signal`; it must be the schedule the
    pipeline then sets (LTX's shift depends on the latent size)."""
    backbone = load_backbone(str(shipped(name)))
    t = backbone.temporal
    settings = ChunkSettings(frames=1 + 2 * t, chunk_frames=1 + 2 * t, overlap=1 + t, steps=5,
                             guidance=2.0, height=32, width=32, search_k=1)
    generator = ChunkedGenerator(backbone, settings)
    calls = spy_steps(monkeypatch, type(backbone.pipe.scheduler))
    generator(Story("s", ("a cat",), None, "t"), 1, "/dev/null", "/tmp/planned-" + name)
    ran = [level(call["scheduler"], i, call["timestep"])[0] for i, call in enumerate(calls)]
    assert generator.planned_signal(5) == pytest.approx(ran, abs=1e-6)
