"""What each diffusers video family is: its pipeline classes by role, latent layout, frames
rule, VAE scaling and scheduler facts (`noise_level`), and why the other video pipelines
in diffusers are refused (`UNSUPPORTED`). Knows nothing of loading."""

from __future__ import annotations

from dataclasses import dataclass

from datakit.io.errors import UserError


@dataclass(frozen=True)
class Family:
    """What one backbone family supports.

    Args:
        name: short name shown to users (`wan`, `cogvideox`, `ltx`, `modelscope`).
        label: the name used in messages ("Wan", "CogVideoX", ...).
        t2v, i2v, v2v: diffusers class names of the text-, image- and video-to-video
            pipelines (None where diffusers has none we can drive).
        layout: native latent layout: `BCFHW`, `BFCHW` or `packed` (B, F*H*W, C).
        callback: `on_step_end` (returns replaced latents) or `legacy` (ModelScope's
            `callback(step, t, latents)`, latents replaced in place).
        chunk_frames, overlap_latent_frames: defaults for `--chunk-frames` and `--overlap`
            (the overlap default is counted in latent frames and shown in pixel frames).
        height, width, fps, guidance: defaults for the pipeline's size, frame rate, CFG scale.
        patch: transformer spatial patch size (height/width must be multiples of
            spatial compression * patch).
        decodes_in_pairs: the VAE decodes latents two at a time and keeps the first latent
            as one frame only when the latent count is odd (CogVideoX; see `decoded_frames`).
        negative_prompt: the negative prompt the family's authors publish (`--negative-prompt`
            default).
    """

    name: str
    label: str
    t2v: str | None
    i2v: str | None
    v2v: str | None
    layout: str
    callback: str
    chunk_frames: int
    overlap_latent_frames: int
    height: int
    width: int
    fps: int
    guidance: float
    patch: int
    decodes_in_pairs: bool = False
    negative_prompt: str = ""


# Wan's published negative prompt (Wan-Video/Wan2.1, wan/configs/shared_config.py,
# `sample_neg_prompt`): vivid colours, overexposed, static, blurred details, subtitles, style,
# artwork, painting, frame, still, greyish, worst quality, low quality, JPEG artefacts, ugly,
# mutilated, extra fingers, badly drawn hands, badly drawn face, deformed, disfigured,
# malformed limbs, fused fingers, still picture, cluttered background, three legs, many
# people in the background, walking backwards.
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，"
    "低质量，JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，"
    "毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)

# `--model` when none is given: the smallest current backbone, which fits one 24 GB GPU
DEFAULT_MODEL = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"

FAMILIES = {
    "wan": Family("wan", "Wan", "WanPipeline", "WanImageToVideoPipeline",
                  "WanVideoToVideoPipeline", "BCFHW", "on_step_end", 33, 2, 480, 832, 16, 5.0, 2,
                  negative_prompt=WAN_NEGATIVE_PROMPT),
    "cogvideox": Family("cogvideox", "CogVideoX", "CogVideoXPipeline",
                        "CogVideoXImageToVideoPipeline", "CogVideoXVideoToVideoPipeline",
                        "BFCHW", "on_step_end", 49, 2, 480, 720, 8, 6.0, 2,
                        decodes_in_pairs=True),
    "ltx": Family("ltx", "LTX-Video", "LTXPipeline", None, None, "packed", "on_step_end",
                  97, 2, 512, 704, 24, 3.0, 1),
    "modelscope": Family("modelscope", "ModelScope", "TextToVideoSDPipeline", None, None,
                         "BCFHW", "legacy", 16, 4, 256, 256, 8, 9.0, 1),
}

ROLES = ("t2v", "i2v", "v2v")

UNSUPPORTED = {
    "LTXImageToVideoPipeline": "it takes the conditioning image through the first frame of "
    "`latents=`, so the chunk loop's own noise would replace the image",
    "LTXConditionPipeline": "its conditions are not reachable through `latents=` without "
    "re-implementing its latent preparation",
    "LTXI2VLongMultiPromptPipeline": "it is itself a long-video loop (temporal tiles); run it "
    "directly",
    "VideoToVideoSDPipeline": "it draws its own noise and has no `latents=` argument, so "
    "--refine cannot give it one global noise tensor",
    "I2VGenXLPipeline": "it has no `callback_on_step_end` and conditions through a CLIP image "
    "embedding only",
    "StableVideoDiffusionPipeline": "it is image-only (no text prompt)",
    "HunyuanVideoPipeline": "not tested here (its Llama text encoder cannot be built offline "
    "for the tiny test pipeline), so not enabled",
    "MochiPipeline": "not tested here, so not enabled",
    "AllegroPipeline": "not tested here, so not enabled",
    "LattePipeline": "not tested here, so not enabled",
    "AnimateDiffPipeline": "it needs a separate motion adapter and an image UNet; use its own "
    "`enable_free_noise` for long videos",
    "SkyReelsV2DiffusionForcingPipeline": "it is itself a long-video loop (diffusion forcing); "
    "run it directly",
    "TextToVideoZeroPipeline": "it animates an image model by warping latents, not a video "
    "diffusion model",
}


def find_family(class_name: str) -> tuple[Family, str]:
    """The family and role (`t2v`, `i2v`, `v2v`) of a diffusers pipeline class name."""
    for family in FAMILIES.values():
        for role in ROLES:
            if getattr(family, role) == class_name:
                return family, role
    if class_name in UNSUPPORTED:
        raise UserError(f"{class_name} is not supported: {UNSUPPORTED[class_name]}")
    supported = ", ".join(getattr(f, r) for f in FAMILIES.values() for r in ROLES if getattr(f, r))
    raise UserError(f"{class_name} is not a supported video pipeline (supported: {supported})")


def keep_step_overwrites(scheduler, steps: list[int] | range = ()):
    """The scheduler for one pipeline call in which a step callback overwrites latents.

    VidRD's pinning, the anchor continuation and the refine blend overwrite the latents
    between steps. A first-order scheduler (Euler, DDIM, CogVideoX's DPM) continues from what
    it is given. UniPC (the scheduler Wan's checkpoints ship with) runs a corrector at the
    start of every step that rebuilds the current sample from the previous one, which would
    undo an overwrite: its corrector is turned off on exactly the steps that follow an
    overwrite (`disable_corrector` takes the callback's step indices) and stays on elsewhere,
    so chunk 0, search previews and the steps after the pinning ends are UniPC as shipped. Its
    multistep predictor keeps its history (the previous step's x0 prediction, made from the
    latents before the overwrite); see docs/generate.md. Second-order schedulers (Heun, DPM2)
    call the model twice per step and are refused.

    Args:
        scheduler: the pipeline's scheduler.
        steps: callback step indices after which the latents are overwritten.
    """
    if getattr(scheduler, "order", 1) != 1:
        raise UserError(f"{type(scheduler).__name__} is a second-order scheduler; --continue "
                        "reuse/anchor and --refine need a first-order one (Euler, DDIM, UniPC, "
                        "DPM++)")
    if "disable_corrector" in scheduler.config:
        return type(scheduler).from_config(scheduler.config, disable_corrector=sorted(steps))
    return scheduler


def noise_level(scheduler, index: int) -> tuple[float, float]:
    """(a, b) with x = a * clean + b * noise the state before step `index` of a set schedule.

    Flow-matching schedulers (FlowMatchEuler, UniPC with flow sigmas): a = 1 - sigma,
    b = sigma. Diffusion schedulers (DDIM, DPM, CogVideoX's v-prediction ones): a =
    sqrt(alpha_bar(t)), b = sqrt(1 - alpha_bar(t)); with zero-SNR betas the first step is pure
    noise (a = 0).
    """
    flow = hasattr(scheduler, "scale_noise") or scheduler.config.get("use_flow_sigmas", False)
    if flow:
        sigma = float(scheduler.sigmas[index])
        return 1.0 - sigma, sigma
    alpha_bar = float(scheduler.alphas_cumprod[int(scheduler.timesteps[index])])
    return alpha_bar**0.5, (1.0 - alpha_bar) ** 0.5


def decoded_frames(family: Family, latent_frames: int, temporal: int) -> int:
    """Pixel frames the family's VAE decodes `latent_frames` latents into.

    A causal VAE decodes the first latent into one frame and each later one into `temporal`
    frames: (L - 1) * t + 1. CogVideoX's VAE (`AutoencoderKLCogVideoX._decode`) decodes
    latents two at a time, the first batch taking the odd one out; its temporal upsampler keeps
    the first frame single only in a batch of odd length, so an even count L decodes into
    L * t frames (45 frames encode to 12 latents, which decode to 48). Frame counts whose
    latent count is odd (8k+1 frames) come back whole.
    """
    if temporal == 1:
        return latent_frames
    if family.decodes_in_pairs and latent_frames % 2 == 0:
        return latent_frames * temporal
    return (latent_frames - 1) * temporal + 1


def default_flow_shift(family: Family, height: int, width: int) -> float | None:
    """Wan's flow shift for a resolution, as diffusers' Wan example sets it: 5.0 at 720p
    (the shorter side 720 or more), 3.0 below (480p); None for the other families (their
    schedulers are used as shipped)."""
    if family.name != "wan":
        return None
    return 5.0 if min(height, width) >= 720 else 3.0


def set_flow_shift(scheduler, shift: float):
    """`scheduler` rebuilt with flow shift `shift`: UniPC's `flow_shift` (Wan's checkpoints),
    FlowMatchEuler's `shift`; a `UserError` for a scheduler that has neither, or whose shift
    is set per call from the resolution (LTX-Video's dynamic shifting ignores `shift`)."""
    if scheduler.config.get("use_dynamic_shifting"):
        raise UserError(f"--flow-shift: {type(scheduler).__name__} shifts its schedule by the "
                        "video's size (dynamic shifting); a fixed shift would be ignored")
    for key in ("flow_shift", "shift"):
        if key in scheduler.config and (key == "shift" or scheduler.config.get(
                "use_flow_sigmas")):
            return type(scheduler).from_config(scheduler.config, **{key: shift})
    raise UserError(f"--flow-shift: {type(scheduler).__name__} is not a flow-matching "
                    "scheduler")


def planned_signal(scheduler, steps: int, sequence_length: int) -> list[float]:
    """The signal fraction a_i (`noise_level`) of the state before each step i of a
    `steps`-step run, set on a copy of `scheduler` as the pipeline sets its own: with
    `set_timesteps(steps)`, and for a dynamically shifted schedule (LTX-Video) with the
    pipeline's sigmas `linspace(1, 1/steps)` and the shift `mu` its `calculate_shift` gives
    for `sequence_length` latent tokens (latent frames * height * width)."""
    import numpy as np

    planned = type(scheduler).from_config(scheduler.config)
    if planned.config.get("use_dynamic_shifting"):
        from diffusers.pipelines.ltx.pipeline_ltx import calculate_shift

        config = planned.config
        mu = calculate_shift(sequence_length, config.get("base_image_seq_len", 256),
                             config.get("max_image_seq_len", 4096),
                             config.get("base_shift", 0.5), config.get("max_shift", 1.15))
        planned.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
    else:
        planned.set_timesteps(steps)
    return [noise_level(planned, index)[0] for index in range(steps)]
