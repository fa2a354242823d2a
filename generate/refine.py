"""SDEdit refinement of a whole long video with StreamingT2V's randomized blending.

After the chunk loop, the whole video is encoded once by a video-to-video backbone, one
global noise tensor noises it to the timestep `--refine-strength` selects (so overlapping
windows share their noise), and windows of `--refine-chunk` frames overlapping by
`--refine-overlap` are denoised together, step by step: after every timestep each window's
result is written back into the global latents from a random offset r inside its overlap with
the previous window (`new[s_k + r : s_k + W] = window_k[r:]`, r = 0 for the first window), so
no seam stays in one place. The result is decoded once and replaces `OUT/{id}.mp4`.

Interleaving through public APIs only: each window is an ordinary pipeline call (`latents=`
the window's slice of the global noisy latents, `callback_on_step_end` to hand the stepped
latents over and take the blended slice back) on its own shallow copy of the pipeline with a
deep-copied scheduler (stateful schedulers stay correct). The calls run as greenlets in the
calling thread and take strict turns (window 0, 1, ..., then the next step), each suspended in
its step callback until its turn comes again: the result is deterministic, activation memory
is that of one window, and torch never runs in two threads.
Supported: Wan and CogVideoX video-to-video pipelines (ModelScope's draws its own noise; see
families.UNSUPPORTED). Windows are counted in pixel frames and converted to latent frames.
"""

from __future__ import annotations

import copy
import functools
import time
from pathlib import Path

import numpy as np

from datakit.io.atomic import atomic_write
from datakit.io.errors import UserError
from datakit.io.video import encode_video
from generate.backbone import Backbone
from generate.chunked import ChunkedGenerator, check_overlap, derive_seed, make_noise
from generate.families import keep_step_overwrites
from generate.prompts import Story


class _Windows:
    """Run the windows' pipeline calls as greenlets that take strict turns.

    Each call is suspended in its step callback (`stepped`) and resumed by `step_all` with
    the blended slice, so every window runs in this thread, one at a time: torch never runs in
    two threads, Ctrl-C raises here like anywhere else, and nothing is left running at exit.
    A window whose pipeline calls back fewer or more times than planned fails the video.
    """

    def __init__(self, count: int, steps: int, run_window):
        from greenlet import greenlet

        self.steps = steps
        self.taken = [0] * count
        self.windows = [greenlet(functools.partial(run_window, k)) for k in range(count)]

    def stepped(self, window: int, step: int, latents):
        """Called from window `window`'s step callback: hand `latents` over, get the blended
        slice back (None after the last step)."""
        from greenlet import getcurrent

        if step >= self.steps:
            raise RuntimeError(f"refinement window {window}: the pipeline ran step "
                               f"{step + 1} of a planned {self.steps}")
        if step != self.taken[window]:
            raise RuntimeError(f"refinement window {window}: the pipeline ran step "
                               f"{step + 1} where step {self.taken[window] + 1} was due")
        self.taken[window] += 1
        return getcurrent().parent.switch(latents)

    def step_all(self, blended) -> list:
        """Run every window to its next step callback; return their stepped latents.

        `blended(k)` is what window k's callback returns (nothing on the first call)."""
        outputs = []
        for k, window in enumerate(self.windows):
            latents = window.switch(blended(k)) if window else window.switch()
            if window.dead:  # the pipeline call returned before this step
                raise RuntimeError(f"refinement window {k}: the pipeline stopped after "
                                   f"{self.taken[k]} of {self.steps} steps")
            outputs.append(latents)
        return outputs

    def finish(self) -> None:
        """Let every window's pipeline call return after its last step."""
        for window in self.windows:
            window.switch(None)

    def close(self) -> None:
        """Unwind the windows still suspended (after an error or Ctrl-C), here and now."""
        for window in self.windows:
            if window and not window.dead:
                window.throw()


class Refiner:
    """SDEdit a finished video in overlapping windows with randomized blending.

    Args:
        backbone: a video-to-video `Backbone` (Wan or CogVideoX).
        chunk_frames: window length in pixel frames (the backbone's frames rule).
        overlap: overlap of neighbouring windows in pixel frames (multiple of the temporal
            compression; StreamingT2V uses 12 of 38).
        strength: fraction of the schedule re-run (SDEdit strength, 0 < strength <= 1).
        steps: steps of the full schedule (`strength * steps` are run).
        guidance: classifier-free guidance scale.
        negative_prompt: text to steer away from.
    """

    def __init__(self, backbone: Backbone, chunk_frames: int, overlap: int, strength: float = 0.4,
                 steps: int = 50, guidance: float = 5.0, negative_prompt: str = ""):
        self.backbone = backbone
        self.chunk_frames = chunk_frames
        self.overlap = overlap
        self.strength = strength
        self.steps = steps
        self.guidance = guidance
        self.negative_prompt = negative_prompt
        self.check_inputs()

    def check_inputs(self) -> None:
        backbone = self.backbone
        if backbone.family.name not in ("wan", "cogvideox"):
            raise UserError(f"--refine is not supported for {backbone.family.label}")
        backbone.check_frames(self.chunk_frames, "--refine-chunk")
        keep_step_overwrites(backbone.pipe.scheduler)  # refuses second-order schedulers
        if not self.window_fits(backbone.latent_frames(self.chunk_frames)):
            fitting = [n for n in range(1, self.chunk_frames + 64 * backbone.temporal)
                       if backbone.fits(n) and self.window_fits(backbone.latent_frames(n))]
            lower = max((n for n in fitting if n < self.chunk_frames), default=None)
            upper = min(n for n in fitting if n > self.chunk_frames)
            hint = f"{lower} or {upper}" if lower else str(upper)
            raise UserError(f"--refine-chunk {self.chunk_frames}: {backbone.family.label}'s "
                            f"video-to-video pipeline with patch_size_t {backbone.patch_t} "
                            f"needs windows whose (latent frames - 1) // "
                            f"{backbone.temporal} + 1 is a multiple of {backbone.patch_t} "
                            f"too (diffusers checks latents= that way): use {hint}")
        check_overlap(backbone, self.overlap, self.chunk_frames, "--refine-overlap",
                      "--refine-chunk")
        if not 0 < self.strength <= 1 or int(self.steps * self.strength) < 1:
            raise UserError(f"--refine-strength {self.strength} runs no step of {self.steps}: "
                            f"use a value in (1/steps, 1]")

    def window_fits(self, latent_frames: int) -> bool:
        """Whether a window of `latent_frames` passes the V2V pipeline's own frame check.

        CogVideoX 1.5 (`patch_size_t` 2): given `latents=`, diffusers' CogVideoX V2V pipeline
        takes their frame count for a pixel count and requires (L - 1) // 4 + 1 to be a
        multiple of `patch_size_t`, besides L itself; windows of 6, 8, 14, 16, ... latent
        frames pass both. Other backbones: always True.
        """
        p, t = self.backbone.patch_t, self.backbone.temporal
        return p == 1 or (latent_frames % p == 0 and ((latent_frames - 1) // t + 1) % p == 0)

    def prepare_windows(self, latent_frames: int) -> tuple[int, list[int]]:
        """Window length and starts, in latent frames, covering `latent_frames`."""
        window = min(self.backbone.latent_frames(self.chunk_frames), latent_frames)
        # a video shorter than one window is one window: the overlap cannot exceed it
        stride = max(1, window - self.overlap // self.backbone.temporal)
        starts = list(range(0, max(latent_frames - window, 0) + 1, stride))
        if starts[-1] + window < latent_frames:
            starts.append(latent_frames - window)
        return window, starts

    def __call__(self, generator: ChunkedGenerator, state_dir: Path, story: Story, seed: int,
                 mp4_path: Path) -> dict:
        """Refine the video the chunk loop saved in `state_dir`; rewrite `mp4_path`."""
        import torch

        backbone, pipe = self.backbone, self.backbone.pipe
        settings = generator.settings
        if backbone.prompt_cache is not generator.backbone.prompt_cache:  # its own encoder
            backbone.prompt_cache.clear()
        started = time.perf_counter()
        # 1. The finished video, padded (repeating its last frame) to the frames rule
        frames = np.stack(list(generator.replay(state_dir)))
        count = len(frames)
        # (a window must keep its full size where the V2V pipeline's frame check needs it)
        shortest = count if backbone.patch_t == 1 else max(count, self.chunk_frames)
        padded = next(n for n in range(shortest, shortest + 64) if backbone.fits(n))
        frames = np.concatenate([frames, np.repeat(frames[-1:], padded - count, axis=0)])
        # 2. Encode it once and add one global noise tensor at the starting timestep
        clean = backbone.encode(frames).float().cpu()
        scheduler = copy.deepcopy(pipe.scheduler)
        scheduler.set_timesteps(self.steps)
        run_steps = min(int(self.steps * self.strength), self.steps)
        start_timestep = scheduler.timesteps[self.steps - run_steps]
        noise = make_noise(tuple(clean.shape), derive_seed(seed, f"{story.id}/refine", 0, 0))
        state = {"latents": backbone.scheduler_noise(scheduler, clean, noise, start_timestep)}
        del clean, noise
        # 3. Windows over the latent frames, each with its own pipeline copy and scheduler
        window, starts = self.prepare_windows(state["latents"].shape[2])
        offsets = torch.Generator("cpu").manual_seed(derive_seed(seed, f"{story.id}/refine", 1, 0))
        picked: list[list[int]] = []

        def blend(step: int, outputs: list) -> None:
            new = state["latents"].clone()
            cuts = []
            for k, (start, latents) in enumerate(zip(starts, outputs, strict=True)):
                shared = starts[k - 1] + window - start if k else 0
                cut = int(torch.randint(0, shared + 1, (1,), generator=offsets)) if k else 0
                new[:, :, start + cut:start + window] = latents[:, :, cut:].float().cpu()
                cuts.append(cut)
            state["latents"] = new
            picked.append(cuts)

        pixel_window = backbone.pixel_frames(window)
        window_pipes = [type(pipe)(**{**pipe.components,
                                      "scheduler": copy.deepcopy(pipe.scheduler)})
                        for _ in starts]

        def run_window(k: int) -> None:
            start = starts[k]
            window_pipe = window_pipes[k]
            window_pipe.set_progress_bar_config(disable=True)
            middle = min(backbone.pixel_start(start) + pixel_window // 2, count - 1)
            chunk = max(c for c, s in enumerate(generator.plan.chunk_starts) if s <= middle)
            backbone.run(story.prompt_for(chunk), state["latents"][:, :, start:start + window],
                         self.steps, self.guidance, torch.Generator("cpu").manual_seed(seed),
                         settings.height, settings.width, self.negative_prompt,
                         on_step=lambda step, latents: windows.stepped(k, step, latents.clone()),
                         strength=self.strength, pipe=window_pipe,
                         overwrite_steps=range(run_steps - 1))

        windows = _Windows(len(starts), run_steps, run_window)
        # (no_grad around all windows: grad mode is per thread, and the greenlets share one)
        with torch.no_grad():
            try:
                for step in range(run_steps):
                    blend(step, windows.step_all(
                        lambda k: state["latents"][:, :, starts[k]:starts[k] + window].clone()))
                windows.finish()
            finally:
                windows.close()
        # 4. Decode the blended latents once, trim the padding, replace the MP4
        refined = backbone.decode(state["latents"])[:count]
        atomic_write(mp4_path, encode_video(refined, settings.fps, crf=settings.crf))
        return {
            "model": backbone.source,
            "strength": self.strength,
            "steps_run": run_steps,
            "window_frames": backbone.pixel_frames(window),
            "window_latent_frames": window,
            "overlap_frames": self.overlap,
            "window_starts": [backbone.pixel_start(s) for s in starts],
            "blend_offsets": picked,
            "padded_frames": padded - count,
            "seconds": round(time.perf_counter() - started, 3),
        }
