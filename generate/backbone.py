"""A `Backbone` wraps one loaded pipeline and gives the chunk loop a single view of it: latents
in a canonical (B, C, F, H, W) layout whatever the pipeline uses natively, the frames rule
(`4k+1` for Wan, `8k+1` for LTX-Video and CogVideoX, any count for ModelScope), one `run`
that drives the pipeline only through its public arguments (`latents=`,
`callback_on_step_end` or ModelScope's older `callback`, `output_type="latent"`), and
`decode`/`encode` between latents and RGB frames."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from datakit.io.errors import UserError
from generate.families import Family, decoded_frames, keep_step_overwrites


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
    def two_experts(self) -> bool:
        """Wan 2.2 A14B: a high-noise `transformer` and a low-noise `transformer_2`, switched
        at `boundary_ratio` of the training timesteps."""
        return (getattr(self.pipe, "transformer_2", None) is not None
                and self.pipe.config.get("boundary_ratio") is not None)

    @property
    def frames_rule(self) -> str:
        """`4k+1` (Wan), `8k+1` (LTX-Video; CogVideoX, whose VAE decodes latents in pairs),
        `any count` (ModelScope)."""
        step = self.temporal * (2 if self.family.decodes_in_pairs else 1)
        return f"{step}k+1" if self.temporal > 1 else "any count"

    def latent_frames(self, frames: int) -> int:
        """Latent frames for `frames` pixel frames (which must satisfy the frames rule)."""
        return (frames - 1) // self.temporal + 1 if self.temporal > 1 else frames

    def pixel_frames(self, latent_frames: int) -> int:
        return (latent_frames - 1) * self.temporal + 1 if self.temporal > 1 else latent_frames

    def decoded_frames(self, latent_frames: int) -> int:
        """Pixel frames `decode` returns for `latent_frames` latents (`families.decoded_frames`:
        CogVideoX decodes an even latent count L into 4L frames, not 4L - 3)."""
        return decoded_frames(self.family, latent_frames, self.temporal)

    def pixel_start(self, latent: int) -> int:
        """Index of the first pixel frame that latent frame `latent` covers (causal VAEs: the
        first latent is frame 0 alone, latent j >= 1 covers frames (j-1)*t+1 .. j*t)."""
        return 0 if latent == 0 or self.temporal == 1 else (latent - 1) * self.temporal + 1

    def fits(self, frames: int) -> bool:
        """Whether the pipeline accepts `frames` (t k + 1 frames, latent count a multiple of the
        transformer's temporal patch); see `writable` for what also decodes back whole."""
        if frames < 1:
            return False
        if self.temporal > 1 and (frames - 1) % self.temporal:
            return False
        return self.latent_frames(frames) % self.patch_t == 0

    def writable(self, frames: int) -> bool:
        """Whether `frames` fits and its latents decode back into exactly `frames` frames
        (on CogVideoX: 8k+1 frames; padding a video for the VAE must pick such a count)."""
        return self.fits(frames) and self.decoded_frames(self.latent_frames(frames)) == frames

    def check_frames(self, frames: int, option: str, decoded: bool = True) -> None:
        """Raise a one-line `UserError` unless `frames` satisfies this backbone's frames rule.

        Args:
            frames: the pixel frame count asked for.
            option: the option named in the message.
            decoded: also require that its latents decode back into `frames` frames
                (`writable`); False checks only what the pipeline accepts (`fits`).
        """
        ok = self.writable if decoded else self.fits
        if ok(frames):
            return
        search_to = frames + 16 * self.temporal * self.patch_t + 2
        lower = next((n for n in range(frames - 1, 0, -1) if ok(n)), None)
        upper = next((n for n in range(max(frames + 1, 1), search_to) if ok(n)), None)
        rule = self.frames_rule + (f" with latent frames a multiple of {self.patch_t}"
                                   if self.patch_t > 1 else "")
        why = ""
        if self.family.decodes_in_pairs and self.fits(frames):
            latents = self.latent_frames(frames)
            why = (f" ({self.family.label}'s VAE decodes latents in pairs: {frames} frames are "
                   f"{latents} latents, which decode into {self.decoded_frames(latents)})")
        if lower is None and upper is None:
            raise UserError(f"{option} {frames}: no frame count fits {self.family.label}'s "
                            f"{rule} rule and decodes back whole{why}")
        options = " or ".join(str(n) for n in (lower, upper) if n is not None)
        raise UserError(f"{option} {frames} does not fit {self.family.label}'s {rule} rule"
                        f"{why}: use {options}")

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
        guidance_2: float | None = None,
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
            guidance_2: `guidance_scale_2`, the CFG scale of Wan 2.2 A14B's low-noise expert
                (`transformer_2`); None: the pipeline's default (`guidance`).
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
        if guidance_2 is not None:
            kwargs["guidance_scale_2"] = guidance_2
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
