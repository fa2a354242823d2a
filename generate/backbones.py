"""Load diffusers video pipelines and know what each one supports.

A `Backbone` wraps one loaded pipeline and gives the chunk loop a single view of it: latents
in a canonical (B, C, F, H, W) layout whatever the pipeline uses natively, the frames rule
(`4k+1` for Wan and CogVideoX, `8k+1` for LTX-Video, any count for ModelScope), one `run`
that drives the pipeline only through its public arguments (`latents=`,
`callback_on_step_end` or ModelScope's older `callback`, `output_type="latent"`), and
`decode`/`encode` between latents and RGB frames.

`model_index.json`'s `_class_name` decides the family. Supported: see `FAMILIES` and
docs/generate.md; `UNSUPPORTED` says why the other video pipelines in diffusers are refused.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datakit.errors import UserError


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


FAMILIES = {
    "wan": Family("wan", "Wan", "WanPipeline", "WanImageToVideoPipeline",
                  "WanVideoToVideoPipeline", "BCFHW", "on_step_end", 33, 2, 480, 832, 16, 5.0, 2),
    "cogvideox": Family("cogvideox", "CogVideoX", "CogVideoXPipeline",
                        "CogVideoXImageToVideoPipeline", "CogVideoXVideoToVideoPipeline",
                        "BFCHW", "on_step_end", 49, 2, 480, 720, 8, 6.0, 2),
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

DTYPES = ("float32", "bfloat16", "float16")
OFFLOADS = ("none", "model", "sequential", "group")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def hub_reachable(timeout: float = 3.0) -> str | None:
    """None when the hub's host accepts a connection within `timeout`, else why not (so a
    missing network fails in seconds instead of the hub client's retries)."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError as error:
        return f"{host} is not reachable ({error.strerror or type(error).__name__})"
    return None


def _class_of(model: str) -> str:
    """The `_class_name` in `model_index.json` of a local folder or hub id.

    A folder is read directly. Anything that is not an existing folder must look like a hub
    id (`name` or `org/name`); its `model_index.json` comes from the local hub cache, else
    from the hub (if the hub's host answers within seconds). Every failure is one line
    saying what was tried.
    """
    path = Path(model).expanduser()
    if path.exists():
        index = path / "model_index.json"
        if not index.is_file():
            raise UserError(f"{model}: not a diffusers pipeline folder (no model_index.json)")
        try:
            return json.loads(index.read_text())["_class_name"]
        except (ValueError, KeyError) as error:
            raise UserError(f"{index}: unreadable model_index.json ({error})") from None
    if not HUB_ID.match(model) or model.startswith((".", "~")):
        raise UserError(f"{model}: no such folder (and not a hub id like org/name)")
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(model, "model_index.json")
    if not isinstance(cached, str):
        if constants.HF_HUB_OFFLINE:
            raise UserError(f"{model}: no such folder, and not in the hub cache "
                            "(HF_HUB_OFFLINE is set, so the hub was not asked)")
        unreachable = hub_reachable()
        if unreachable:
            raise UserError(f"{model}: no such folder, not in the hub cache, and {unreachable}")
        try:
            cached = hf_hub_download(model, "model_index.json")
        except Exception as error:  # hub errors come in many types; all mean "cannot load"
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise UserError(f"{model}: no such folder, and the hub has no model_index.json "
                            f"for it ({type(error).__name__}: {first})") from None
    try:
        return json.loads(Path(cached).read_text())["_class_name"]
    except (ValueError, KeyError) as error:
        raise UserError(f"{model}: unreadable model_index.json ({error})") from None


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


def resolve_device(device: str) -> str:
    """Check that `device` exists here; `cuda` without a GPU is a user error."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA device is available on this machine")
    if device.startswith("cuda:"):
        index = device.removeprefix("cuda:")
        if not index.isdigit() or int(index) >= torch.cuda.device_count():
            raise UserError(f"--device {device}: this machine has CUDA devices "
                            f"0..{torch.cuda.device_count() - 1}")
    if device == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps: MPS is not available on this machine")
    if device != "cpu" and not device.startswith(("cuda", "mps")):
        raise UserError(f"--device must be cpu, cuda, cuda:N or mps, got {device!r}")
    return device


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


class PromptCache:
    """Text embeddings computed once and handed to every pipeline call that needs them.

    A chunk makes k preview calls and one full call, refinement one call per window, and each
    pipeline call would run the text encoder on its prompt and negative prompt again. The
    chunk loop clears the cache at the start of each video (`ChunkedGenerator.__call__`), so
    each distinct text (a prompt, the negative prompt) is encoded once per video. Refinement through
    `share_backbone` shares the cache (the same text encoder). Thread-safe: refinement windows
    run in threads.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._embeds: dict[tuple, dict] = {}

    def get(self, key: tuple, encode: Callable[[], dict]) -> dict:
        with self._lock:
            if key not in self._embeds:
                self._embeds[key] = encode()
            return self._embeds[key]

    def clear(self) -> None:
        with self._lock:
            self._embeds.clear()

    def __len__(self) -> int:
        return len(self._embeds)


class Backbone:
    """One loaded video pipeline, seen through the public arguments the chunk loop needs.

    Args:
        pipe: the diffusers pipeline.
        family: its `Family`.
        role: `t2v`, `i2v` or `v2v`.
        source: the hub id or folder it came from (recorded in sample json).
        prompt_cache: the `PromptCache` to use (shared by backbones that share a text
            encoder); None: a new one.
    """

    def __init__(self, pipe: Any, family: Family, role: str, source: str,
                 prompt_cache: PromptCache | None = None):
        self.pipe = pipe
        self.family = family
        self.role = role
        self.source = source
        self.prompt_cache = prompt_cache if prompt_cache is not None else PromptCache()
        self.device = str(pipe._execution_device)
        if family.name == "ltx":
            self.temporal = pipe.vae_temporal_compression_ratio
            self.spatial = pipe.vae_spatial_compression_ratio
            self.channels = pipe.transformer.config.in_channels
        elif family.name == "modelscope":
            self.temporal = 1
            self.spatial = pipe.vae_scale_factor
            self.channels = pipe.unet.config.in_channels
        else:
            self.temporal = pipe.vae_scale_factor_temporal
            self.spatial = pipe.vae_scale_factor_spatial
            self.channels = (pipe.vae.config.z_dim if family.name == "wan"
                             else pipe.vae.config.latent_channels)
        # Wan and LTX keep float32 latents and cast inside; CogVideoX and ModelScope use the
        # latents they are given as is, so those get the denoiser's dtype.
        denoiser = pipe.unet if family.name == "modelscope" else pipe.transformer
        self.latent_dtype = denoiser.dtype if family.name in ("cogvideox", "modelscope") else None
        self.offload = "none"  # set by `load_backbone`: how the weights are placed
        self.loras: list[dict] = []
        self.shared: list[str] = []  # components taken from another loaded pipeline
        self.patch_t = 1
        if family.name == "cogvideox":
            self.patch_t = pipe.transformer.config.patch_size_t or 1
        pipe.set_progress_bar_config(disable=True)

    # -- what it supports ------------------------------------------------------------------

    @property
    def frames_rule(self) -> str:
        return f"{self.temporal}k+1" if self.temporal > 1 else "any count"

    def latent_frames(self, frames: int) -> int:
        """Latent frames for `frames` pixel frames (which must satisfy the frames rule)."""
        return (frames - 1) // self.temporal + 1 if self.temporal > 1 else frames

    def pixel_frames(self, latent_frames: int) -> int:
        return (latent_frames - 1) * self.temporal + 1 if self.temporal > 1 else latent_frames

    def pixel_start(self, latent: int) -> int:
        """Index of the first pixel frame that latent frame `latent` covers (causal VAEs: the
        first latent is frame 0 alone, latent j >= 1 covers frames (j-1)*t+1 .. j*t)."""
        return 0 if latent == 0 or self.temporal == 1 else (latent - 1) * self.temporal + 1

    def fits(self, frames: int) -> bool:
        if frames < 1:
            return False
        if self.temporal > 1 and (frames - 1) % self.temporal:
            return False
        return self.latent_frames(frames) % self.patch_t == 0

    def check_frames(self, frames: int, option: str) -> None:
        """Raise a one-line `UserError` unless `frames` satisfies this backbone's frames rule."""
        if self.fits(frames):
            return
        lower = next((n for n in range(frames - 1, 0, -1) if self.fits(n)), None)
        search_to = frames + 8 * self.temporal * self.patch_t + 2
        upper = next(n for n in range(max(frames + 1, 1), search_to) if self.fits(n))
        options = f"{lower} or {upper}" if lower else str(upper)
        rule = self.frames_rule + (f" with latent frames a multiple of {self.patch_t}"
                                   if self.patch_t > 1 else "")
        raise UserError(f"{option} {frames} does not fit {self.family.label}'s {rule} rule: "
                        f"use {options}")

    def check_size(self, height: int, width: int) -> None:
        multiple = self.spatial * self.family.patch
        for option, value in (("--height", height), ("--width", width)):
            if value <= 0 or value % multiple or value % 2:
                raise UserError(f"{option} {value} must be a positive multiple of {multiple} "
                                f"for {self.family.label}")

    @property
    def max_prompt_tokens(self) -> int:
        config = getattr(self.pipe, "transformer", None)
        if self.family.name == "cogvideox":
            return config.config.max_text_seq_length
        if self.family.name == "ltx":
            return 128
        if self.family.name == "wan":
            return 512
        return self.pipe.tokenizer.model_max_length

    def prompt_tokens(self, text: str) -> int:
        return len(self.pipe.tokenizer(text).input_ids)

    @property
    def sequence_length(self) -> int:
        """`max_sequence_length` as the pipeline's own call uses it (its default; CogVideoX's
        from the transformer's config, which `run` passes)."""
        return {"wan": 512, "ltx": 128}.get(self.family.name, self.max_prompt_tokens)

    def prompt_embeds(self, prompt: str, negative_prompt: str, guidance: float,
                      pipe: Any = None) -> dict:
        """The pipeline-call arguments that replace `prompt=`/`negative_prompt=`: the text
        embeddings (and LTX's attention masks), each text encoded once per `prompt_cache`
        lifetime by the pipeline's own `encode_prompt` with the arguments its `__call__` uses.

        Every supported pipeline encodes the prompt and the negative prompt with the same
        function (the negative defaults to ""), so each text is encoded on its own and the
        negative's embeddings are reused for every prompt. The negative embeddings exist only
        with classifier-free guidance (scale > 1, as every supported pipeline decides it).
        """
        prompt_args = self._text_embeds(prompt, pipe or self.pipe)
        if guidance <= 1.0:
            return prompt_args
        negative_args = self._text_embeds(negative_prompt or "", pipe or self.pipe)
        return {**prompt_args, **{f"negative_{name}": value
                                  for name, value in negative_args.items()}}

    def _text_embeds(self, text: str, pipe: Any) -> dict:
        """`{"prompt_embeds": ...}` (LTX: and `prompt_attention_mask`) of one text, cached."""
        import torch

        def encode() -> dict:
            device = pipe._execution_device
            with torch.no_grad():
                if self.family.name == "modelscope":
                    return {"prompt_embeds": pipe.encode_prompt(text, device, 1, False)[0]}
                out = pipe.encode_prompt(prompt=text, do_classifier_free_guidance=False,
                                         num_videos_per_prompt=1,
                                         max_sequence_length=self.sequence_length,
                                         device=device)
            if self.family.name == "ltx":
                return {"prompt_embeds": out[0], "prompt_attention_mask": out[1]}
            return {"prompt_embeds": out[0]}

        return self.prompt_cache.get((text,), encode)

    # -- latents ---------------------------------------------------------------------------

    def noise_shape(self, frames: int, height: int, width: int) -> tuple[int, ...]:
        """Canonical (1, C, F, H, W) shape of the latents of `frames` pixel frames."""
        return (1, self.channels, self.latent_frames(frames), height // self.spatial,
                width // self.spatial)

    def to_native(self, latents):
        if self.family.layout == "BFCHW":
            return latents.permute(0, 2, 1, 3, 4).contiguous()
        if self.family.layout == "packed":
            return self.pipe._pack_latents(latents, self.pipe.transformer_spatial_patch_size,
                                           self.pipe.transformer_temporal_patch_size)
        return latents

    def from_native(self, latents, shape: tuple[int, ...]):
        """Back to canonical layout; `shape` is the canonical shape (needed to unpack LTX)."""
        if self.family.layout == "BFCHW":
            return latents.permute(0, 2, 1, 3, 4)
        if self.family.layout == "packed":
            return self.pipe._unpack_latents(latents, shape[2], shape[3], shape[4],
                                             self.pipe.transformer_spatial_patch_size,
                                             self.pipe.transformer_temporal_patch_size)
        return latents

    # -- running ---------------------------------------------------------------------------

    def run(
        self,
        prompt: str,
        latents,
        steps: int,
        guidance: float,
        generator,
        height: int,
        width: int,
        negative_prompt: str = "",
        on_step: Callable[[int, Any], Any] | None = None,
        image: np.ndarray | None = None,
        strength: float = 1.0,
        fps: int | None = None,
        pipe: Any = None,
        overwrite_steps: list[int] | range = (),
    ):
        """Denoise canonical `latents` (the initial noise) and return canonical final latents.

        Args:
            prompt, negative_prompt: the text conditioning.
            latents: canonical (1, C, F, H, W) initial latents, passed as `latents=`.
            steps, guidance: `num_inference_steps` and `guidance_scale`.
            generator: a torch.Generator for any randomness inside the scheduler.
            height, width: pixel size.
            on_step: called after every denoising step `i` with the canonical latents (the
                state before step i+1); a tensor it returns replaces them.
            image: the conditioning RGB frame (i2v role).
            strength: SDEdit strength (v2v role).
            fps: frame rate, for pipelines that condition on it (LTX).
            pipe: run this pipeline object instead of `self.pipe` (a copy with its own
                scheduler, for refinement windows).
            overwrite_steps: the steps `i` after which `on_step` replaces the latents; for
                this call the scheduler keeps those overwrites (`keep_step_overwrites`).
        """
        from PIL import Image

        pipe = pipe or self.pipe
        shape = tuple(latents.shape)
        frames = self.pixel_frames(shape[2])
        kwargs: dict[str, Any] = dict(
            **self.prompt_embeds(prompt, negative_prompt, guidance, pipe),
            num_inference_steps=steps, guidance_scale=guidance, generator=generator,
            output_type="latent",
            latents=self.to_native(latents).to(self.device, self.latent_dtype),
        )
        if self.role == "v2v":
            kwargs.update(strength=strength, height=height, width=width)
        else:
            kwargs.update(height=height, width=width, num_frames=frames)
        if self.role == "i2v":
            kwargs["image"] = Image.fromarray(image)
        if self.family.name == "cogvideox":
            kwargs["max_sequence_length"] = self.max_prompt_tokens
        if self.family.name == "ltx" and fps:
            kwargs["frame_rate"] = fps
        if on_step is not None and self.family.callback == "legacy":

            def legacy(step: int, timestep, native) -> None:
                replaced = on_step(step, self.from_native(native, shape))
                if replaced is not None:
                    native.copy_(self.to_native(replaced.to(native.device, native.dtype)))

            kwargs.update(callback=legacy, callback_steps=1)
        elif on_step is not None:

            def on_step_end(_pipe, step: int, timestep, tensors: dict) -> dict:
                native = tensors["latents"]
                replaced = on_step(step, self.from_native(native, shape))
                if replaced is None:
                    return {}
                return {"latents": self.to_native(replaced.to(native.device, native.dtype))}

            kwargs["callback_on_step_end"] = on_step_end
        shipped = pipe.scheduler
        if overwrite_steps:  # v2v: the scheduler counts from the first step it runs
            first = steps - min(int(steps * strength), steps) if self.role == "v2v" else 0
            pipe.scheduler = keep_step_overwrites(shipped, [first + i for i in overwrite_steps])
        try:
            output = pipe(**kwargs).frames
        finally:
            pipe.scheduler = shipped
        return self.from_native(output, shape)

    def scheduler_noise(self, scheduler, clean, noise, timestep):
        """Noise clean latents to `timestep` as the pipeline's V2V preparation would."""
        if hasattr(scheduler, "add_noise"):
            return scheduler.add_noise(clean, noise, timestep.reshape(1))
        return scheduler.scale_noise(clean, timestep.reshape(1), noise)

    # -- pixels ----------------------------------------------------------------------------

    def decode(self, latents) -> np.ndarray:
        """Canonical latents -> RGB uint8 frames (F, H, W, 3)."""
        import torch

        pipe, vae = self.pipe, self.pipe.vae
        latents = latents.contiguous().to(self.device)
        with torch.no_grad():
            if self.family.name == "wan":
                mean, std = self._wan_latent_stats(latents)
                latents = latents * std + mean
                video = vae.decode(latents.to(vae.dtype), return_dict=False)[0]
            elif self.family.name == "cogvideox":
                video = pipe.decode_latents(latents.permute(0, 2, 1, 3, 4).to(vae.dtype))
            elif self.family.name == "ltx":
                latents = pipe._denormalize_latents(latents, vae.latents_mean, vae.latents_std,
                                                    vae.config.scaling_factor)
                timestep = None
                if vae.config.timestep_conditioning:
                    timestep = torch.zeros(1, device=latents.device, dtype=latents.dtype)
                video = vae.decode(latents.to(vae.dtype), timestep, return_dict=False)[0]
            else:
                video = pipe.decode_latents(latents.to(vae.dtype))
        video = (video.float().clamp(-1, 1) + 1) * 127.5
        return video[0].permute(1, 2, 3, 0).round().to(torch.uint8).cpu().numpy()

    def _wan_latent_stats(self, like):
        """Wan's per-channel latent mean and std, shaped and placed like `like`."""
        import torch

        config = self.pipe.vae.config
        return (torch.tensor(config.latents_mean).view(1, -1, 1, 1, 1).to(like),
                torch.tensor(config.latents_std).view(1, -1, 1, 1, 1).to(like))

    def encode(self, frames: np.ndarray):
        """RGB uint8 frames (F, H, W, 3) -> canonical latents (deterministic: the mode)."""
        import torch

        vae = self.pipe.vae
        video = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)[None]
        video = (video.float() / 127.5 - 1).to(self.device, vae.dtype)
        with torch.no_grad():
            if self.family.name == "wan":
                latents = vae.encode(video).latent_dist.mode().float()
                mean, std = self._wan_latent_stats(latents)
                return (latents - mean) / std
            if self.family.name == "cogvideox":
                latents = vae.encode(video).latent_dist.mode().float()
                return latents * self.pipe.vae_scaling_factor_image
            if self.family.name == "ltx":
                latents = vae.encode(video).latent_dist.mode().float()
                return self.pipe._normalize_latents(latents, vae.latents_mean.to(latents),
                                                    vae.latents_std.to(latents),
                                                    vae.config.scaling_factor)
            # ModelScope: an image VAE, frame by frame
            images = video[0].permute(1, 0, 2, 3)
            latents = vae.encode(images).latent_dist.mode().float() * vae.config.scaling_factor
            return latents.permute(1, 0, 2, 3)[None]


def share_backbone(backbone: Backbone, role: str) -> Backbone:
    """`backbone`'s pipeline as its family's `role` class, sharing every component (text
    encoder, VAE, transformer: no second copy in memory, each in the dtype it was loaded in)."""
    import diffusers

    cls_name = getattr(backbone.family, role)
    if cls_name is None:
        raise UserError(f"{backbone.family.label} has no {role} pipeline in diffusers that we "
                        "can drive")
    cls = getattr(diffusers, cls_name)
    # the class's own constructor, not `from_pipe`: diffusers 0.42's `from_pipe` casts every
    # shared model to one dtype (float32 unless told), which turned a bfloat16 transformer
    # into float32 in place (twice the memory) and would put Wan's VAE in bfloat16
    accepted = inspect.signature(cls.__init__).parameters
    pipe = cls(**{name: component for name, component in backbone.pipe.components.items()
                  if name in accepted})
    pipe.set_progress_bar_config(disable=True)
    shared = Backbone(pipe, backbone.family, role, backbone.source,
                      prompt_cache=backbone.prompt_cache)
    shared.offload, shared.loras = backbone.offload, backbone.loras
    return shared


SHAREABLE = ("text_encoder", "tokenizer", "vae")
HASH_CACHE = "file_hashes.json"


def _hash_cache_path() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "datakit" / HASH_CACHE


def file_sha256(path: Path) -> str:
    """The sha256 of a file, cached by (real path, size, mtime) in
    ~/.cache/datakit/file_hashes.json. A hub cache file is a link to `blobs/<sha256>`: that
    name is used as is (the hub names large files by their sha256), without reading it."""
    import hashlib

    real = Path(os.path.realpath(path))
    if real.parent.name == "blobs" and re.fullmatch(r"[0-9a-f]{64}", real.name):
        return real.name
    stat = real.stat()
    key = f"{real}|{stat.st_size}|{stat.st_mtime_ns}"
    cache_path = _hash_cache_path()
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return cache[key]
    digest = hashlib.sha256()
    with open(real, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)
    cache[key] = digest.hexdigest()
    try:
        from datakit.atomic import atomic_write

        cache_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cache_path, json.dumps(cache, indent=0))
    except OSError:  # a read-only home: the hash is still right, only not remembered
        pass
    return cache[key]


def _local_folder(model: str) -> Path | None:
    """The folder of a pipeline: a local folder, or a hub id's snapshot already in the hub
    cache (None when it is not there: nothing is downloaded to compare)."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, local_files_only=True))
    except Exception:  # not cached (or not a hub id): no comparison, no sharing
        return None


def component_fingerprint(folder: Path, name: str) -> tuple | None:
    """What makes a pipeline component the same as another: its class (model_index.json),
    its config (without the `_`-prefixed bookkeeping keys such as `_diffusers_version`) and
    the sha256 of every other file in its folder (weights, tokenizer files). None when the
    component is missing."""
    try:
        entry = json.loads((folder / "model_index.json").read_text()).get(name)
    except (OSError, ValueError):
        return None
    sub = folder / name
    if not entry or not entry[0] or not sub.is_dir():
        return None
    files = []
    for path in sorted(p for p in sub.rglob("*") if p.is_file()):
        relative = path.relative_to(sub).as_posix()
        if path.name == "config.json":
            config = json.loads(path.read_text())
            files.append((relative, json.dumps({k: v for k, v in config.items()
                                                if not k.startswith("_")}, sort_keys=True)))
        else:
            files.append((relative, file_sha256(path)))
    return (tuple(entry), tuple(files))


def shared_components(model: str, other: str, pipe: Any,
                      names: tuple[str, ...] = SHAREABLE) -> dict[str, Any]:
    """The components of the loaded `pipe` (from `model`) that pipeline `other` has too,
    identical (same class, config and weight files; see `component_fingerprint`), to pass as
    `from_pretrained` keyword arguments so that they are not loaded a second time. Empty
    where either pipeline is not on disk here."""
    mine, theirs = _local_folder(model), _local_folder(other)
    if mine is None or theirs is None:
        return {}
    shared = {}
    for name in names:
        fingerprint = component_fingerprint(mine, name)
        if fingerprint is not None and fingerprint == component_fingerprint(theirs, name) \
                and getattr(pipe, name, None) is not None:
            shared[name] = getattr(pipe, name)
    return shared


def attention_backends() -> list[str]:
    """The names diffusers' `set_attention_backend` accepts (`AttentionBackendName`)."""
    from diffusers.models.attention_dispatch import AttentionBackendName

    return [name.value for name in AttentionBackendName]


def denoiser_of(pipe: Any):
    """The pipeline's denoising network: the transformer (ModelScope: the UNet)."""
    return getattr(pipe, "transformer", None) or pipe.unet


def set_attention_backend(pipe: Any, backend: str, label: str) -> int:
    """Route the denoiser's attention through diffusers' backend `backend` (`native` is
    PyTorch's scaled_dot_product_attention; `flash`, `sage`, `xformers`, ... need their
    packages). Returns how many attention processors now use it; a one-line `UserError` for an
    unknown name, a backend whose package is missing, or a denoiser whose attention does not go
    through diffusers' dispatcher (CogVideoX's and ModelScope's processors call PyTorch
    directly, so a backend would silently do nothing there)."""
    valid = attention_backends()
    if backend.lower() not in valid:
        raise UserError(f"--attention-backend {backend}: unknown; one of {', '.join(valid)}")
    denoiser = denoiser_of(pipe)
    processors = [m.processor for m in denoiser.modules()
                  if hasattr(getattr(m, "processor", None), "_attention_backend")]
    if not processors:
        raise UserError(f"--attention-backend {backend}: {label}'s {type(denoiser).__name__} "
                        "does not dispatch attention through diffusers' backends")
    try:
        denoiser.set_attention_backend(backend.lower())
    except (RuntimeError, ValueError, ImportError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"--attention-backend {backend}: {first}") from None
    return len(processors)


def parse_lora(spec: str) -> tuple[str, float]:
    """`PATH_OR_ID[:SCALE]` -> (source, scale); the scale defaults to 1.0."""
    source, _, scale = spec.rpartition(":")
    if source:
        try:
            return source, float(scale)
        except ValueError:
            pass
    return spec, 1.0


def load_loras(pipe: Any, specs: list[str], label: str) -> list[dict]:
    """Load each LoRA (`PATH_OR_ID[:SCALE]`: a `.safetensors` file, a folder holding
    `pytorch_lora_weights.safetensors`, or a hub id) as its own adapter (`lora0`, `lora1`, ...)
    with `pipe.load_lora_weights`, then make them all active at their scales with
    `pipe.set_adapters` (unfused: the weights stay as loaded and each adapter's scale
    applies). Needs `peft`. Returns what was loaded, for the sample json."""
    if not specs:
        return []
    if not hasattr(pipe, "load_lora_weights"):
        raise UserError(f"--lora: {label}'s {type(pipe).__name__} cannot load LoRA weights")
    try:
        import peft  # noqa: F401 - diffusers needs it for adapters
    except ImportError:
        raise UserError("--lora needs the peft package: pip install 'datakit[generate]'") \
            from None
    loaded = []
    for index, spec in enumerate(specs):
        source, scale = parse_lora(spec)
        name = f"lora{index}"
        path = Path(source).expanduser()
        kwargs: dict[str, Any] = {"adapter_name": name}
        if path.is_file():
            kwargs["weight_name"] = path.name
            where: str = os.fspath(path.parent)
        elif path.exists() or not HUB_ID.match(source):
            if not path.is_dir():
                raise UserError(f"--lora {spec}: no such file or folder")
            where = os.fspath(path)
        else:
            where = source
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pipe.load_lora_weights(where, **kwargs)
        except Exception as error:  # loader errors come in many types; all mean "cannot load"
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise UserError(f"--lora {spec}: cannot load it as a LoRA for {label} "
                            f"({type(error).__name__}: {first})") from None
        loaded.append({"source": source, "scale": scale, "adapter": name})
    pipe.set_adapters([x["adapter"] for x in loaded], [x["scale"] for x in loaded])
    return loaded


def apply_offload(pipe: Any, offload: str, device: str) -> None:
    """Place the pipeline's weights for `offload`:

    - `none`: everything on `device` (`pipe.to`).
    - `model`: `enable_model_cpu_offload`: each model (text encoder, transformer, VAE) moves
      to the GPU whole when it runs and back after; peak = the largest model.
    - `sequential`: `enable_sequential_cpu_offload`: every leaf module's weights move to the
      GPU only for its own forward; the lowest memory and by far the slowest.
    - `group`: `enable_group_offload` at `leaf_level` with a CUDA stream, so the next
      layers' weights are copied while the current ones compute (block_level would need a
      blocks-per-group count tuned per model; leaf_level with a stream is diffusers'
      recommended setting and is close to `none` in speed where PCIe keeps up).
    """
    import torch

    if offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    elif offload == "group":
        onload = torch.device(device)
        pipe.enable_group_offload(onload_device=onload, offload_device=torch.device("cpu"),
                                  offload_type="leaf_level", use_stream=onload.type == "cuda")
    elif offload == "none":
        pipe.to(device)
    else:
        raise UserError(f"--offload must be one of {', '.join(OFFLOADS)}, got {offload!r}")


def compile_denoiser(pipe: Any, mode: str = "default") -> None:
    """`torch.compile` the transformer (ModelScope: the UNet) in place (`nn.Module.compile`,
    so the pipeline still sees the same module, its config and dtype). The first call of each
    new shape compiles (minutes on a real model); chunks after that run the compiled code."""
    if mode not in COMPILE_MODES:
        raise UserError(f"--compile-mode must be one of {', '.join(COMPILE_MODES)}, "
                        f"got {mode!r}")
    denoiser_of(pipe).compile(mode=None if mode == "default" else mode)


def load_backbone(
    model: str,
    role: str = "t2v",
    device: str = "cpu",
    dtype: str | None = None,
    cpu_offload: bool = False,
    vae_tiling: bool = False,
    vae_slicing: bool = False,
    offload: str = "none",
    attention_backend: str | None = None,
    loras: list[str] | tuple[str, ...] = (),
    compile_mode: str | None = None,
    components: dict[str, Any] | None = None,
) -> Backbone:
    """Load a pipeline from a hub id or local folder as a `Backbone` in `role`.

    Args:
        model: hub id or folder with a `model_index.json`.
        role: `t2v`, `i2v` or `v2v`. A text-to-video folder asked for `v2v` is loaded as
            its family's video-to-video class (they share every component).
        device: `cpu`, `cuda`, `cuda:N` or `mps`.
        dtype: `float32`, `bfloat16` or `float16` for the weights; None: bfloat16 on CUDA,
            float32 elsewhere. Wan's VAE and image encoder stay in float32 (their outputs
            degrade in half precision; diffusers' Wan examples load them so).
        cpu_offload: the same as `offload="model"` (kept for `--cpu-offload`).
        vae_tiling, vae_slicing: decode/encode in spatial tiles / one sample at a time.
        offload: `none`, `model`, `sequential` or `group` (see `apply_offload`); all but
            `none` need a CUDA device.
        attention_backend: a diffusers attention backend for the denoiser (see
            `set_attention_backend`); None leaves diffusers' default.
        loras: `PATH_OR_ID[:SCALE]` LoRAs to load (see `load_loras`).
        compile_mode: `torch.compile` the denoiser with this mode (see `compile_denoiser`);
            None: no compile.
        components: already loaded components to use instead of loading them (see
            `shared_components`); they are used as they are (dtype, device, offload).
    """
    import diffusers
    import torch
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    device = resolve_device(device)
    if dtype is None:
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    if dtype not in DTYPES:
        raise UserError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if cpu_offload and offload not in ("none", "model"):
        raise UserError(f"--cpu-offload is --offload model; it cannot go with --offload {offload}")
    offload = "model" if cpu_offload else offload
    if offload not in OFFLOADS:
        raise UserError(f"--offload must be one of {', '.join(OFFLOADS)}, got {offload!r}")
    if offload != "none" and not device.startswith("cuda"):
        option = "--cpu-offload" if cpu_offload else f"--offload {offload}"
        raise UserError(f"{option} needs --device cuda (it keeps weights on the CPU and moves "
                        f"them to the GPU as they run; on {device} they are already there)")
    if attention_backend is not None and attention_backend.lower() not in attention_backends():
        raise UserError(f"--attention-backend {attention_backend}: unknown; one of "
                        f"{', '.join(attention_backends())}")
    if compile_mode is not None and compile_mode not in COMPILE_MODES:
        raise UserError(f"--compile-mode must be one of {', '.join(COMPILE_MODES)}, "
                        f"got {compile_mode!r}")
    class_name = _class_of(model)
    family, found = find_family(class_name)
    if found != role and not (role == "v2v" and found == "t2v" and family.v2v):
        wanted = ", ".join(getattr(f, role) for f in FAMILIES.values() if getattr(f, role))
        raise UserError(f"{model} is a {class_name}; a {role} pipeline is needed here ({wanted})")
    cls_name = getattr(family, role)
    if cls_name is None:
        raise UserError(f"{family.label} has no {role} pipeline in diffusers that we can drive")
    torch_dtype: Any = getattr(torch, dtype)
    if family.name == "wan" and dtype != "float32":  # as diffusers' own Wan examples do
        torch_dtype = {"default": torch_dtype, "vae": torch.float32,
                       "image_encoder": torch.float32}
    with warnings.catch_warnings():  # newer diffusers call it `dtype`; older ones only know this
        warnings.filterwarnings("ignore", "`torch_dtype` is deprecated", FutureWarning)
        pipe = getattr(diffusers, cls_name).from_pretrained(model, torch_dtype=torch_dtype,
                                                            **(components or {}))
    lora = load_loras(pipe, list(loras), family.label)
    if attention_backend is not None:
        set_attention_backend(pipe, attention_backend, family.label)
    apply_offload(pipe, offload, device)
    if compile_mode is not None:
        compile_denoiser(pipe, compile_mode)
    if vae_tiling:
        pipe.vae.enable_tiling()
    if vae_slicing:
        pipe.vae.enable_slicing()
    backbone = Backbone(pipe, family, role, os.fspath(model))
    backbone.offload = offload
    backbone.loras = lora
    backbone.shared = sorted(components or {})
    return backbone
