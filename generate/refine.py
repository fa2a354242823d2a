"""SDEdit refinement of a whole long video with StreamingT2V's randomized blending.

After the chunk loop, windows of `--refine-chunk` pixel frames, neighbours sharing
`--refine-overlap` frames' worth of latents, are each encoded from their own pixels, noised
to the timestep `--refine-strength` selects and denoised together, step by step; after every
timestep each window's result is written into the shared latents from a random offset r
inside its overlap with the previous window, so no seam stays in one place.

Causal windows. A causal VAE (Wan, CogVideoX) encodes frame 0 of a sequence alone into
latent slot 0 and each later group of t frames into one latent. Windows therefore start on
multiples of t and are encoded from pixels, each on its own: window k starting at frame P_k
has slot 0 = frame P_k alone and slot j >= 1 = frames P_k + (j-1)t + 1 .. P_k + jt, which is
global latent g = P_k/t + j of the whole video. Neighbours share these aligned latents (the
blend takes them from one window or the other, `new[g_k + 1 + r:] = window_k[1 + r:]`, r = 0
for the first window); a window's slot 0 is its own (it is one frame where the previous
window has a group of t) and is shown only for frame 0. Noise is drawn per global latent
index from the seed, so overlapping windows share it exactly and a window's slot 0 gets the
noise of the group it ends. A window's length must decode back whole (`Backbone.writable`:
4k+1 on Wan, 8k+1 on CogVideoX, whose VAE decodes an even latent count into 4L frames);
anything else is refused before any compute. The last window starts on the first multiple
of t that reaches the end (at most t - 1 repeated last frames of padding).

Memory: frames stream from the chunk loop's state into each window's encode and from each
window's decode into the MP4, so pixels in memory are those of one or two windows whatever
the length (the earlier version encoded and decoded the whole video at once: 4.6 GB per float
copy for 960 frames at 480x832). The windows' latents (t*8*8*3/C times smaller than their
float frames: 48x on Wan) stay for the whole video, since every window steps at every
timestep.

Interleaving through public APIs only: each window is an ordinary pipeline call (`latents=`
its noisy latents, `callback_on_step_end` to hand the stepped latents over and take the
blended ones back) on its own pipeline object with a deep-copied scheduler. The calls run as
greenlets in the calling thread and take strict turns (window 0, 1, ..., then the next step),
each suspended in its step callback until its turn comes again: deterministic, activation
memory of one window, torch in one thread.

Wan 2.2 A14B (two experts): `WanVideoToVideoPipeline` has no `transformer_2`, so each window
runs its high-noise steps (t >= boundary_ratio * num_train_timesteps) in one call on
`transformer`, stopped at the boundary (`pipe._interrupt`, diffusers' documented way to end a
call from its step callback), and the rest in a second call on a V2V pipeline built around
`transformer_2` with `guidance_2`, as `WanPipeline` switches. The second call's multistep
scheduler starts its history afresh at the switch (WanPipeline's keeps it).
Supported: Wan and CogVideoX 1.0 video-to-video pipelines.
"""

from __future__ import annotations

import copy
import functools
import math
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from datakit.io.atomic import atomic_file
from datakit.io.errors import UserError
from datakit.io.video import VideoWriter
from generate.backbone import Backbone
from generate.chunked import ChunkedGenerator, check_overlap, derive_seed, make_noise
from generate.families import keep_step_overwrites
from generate.prompts import Story


class _Windows:
    """Run the windows' pipeline calls as greenlets that take strict turns.

    Each call is suspended in its step callback (`stepped`) and resumed by `step_all` with
    the blended latents, so every window runs in this thread, one at a time: torch never runs
    in two threads, Ctrl-C raises here like anywhere else, and nothing is left running at
    exit. A window whose pipeline calls back fewer or more times than planned fails the video.
    """

    def __init__(self, count: int, steps: int, run_window):
        from greenlet import greenlet

        self.steps = steps
        self.taken = [0] * count
        self.windows = [greenlet(functools.partial(run_window, k)) for k in range(count)]

    def stepped(self, window: int, step: int, latents):
        """Called from window `window`'s step callback: hand `latents` over, get the blended
        latents back (None after the last step)."""
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
    """SDEdit a finished video in overlapping causal windows with randomized blending.

    Args:
        backbone: a video-to-video `Backbone` (Wan, CogVideoX 1.0).
        chunk_frames: window length in pixel frames; its latents must decode back whole
            (`Backbone.writable`: 4k+1 on Wan, 8k+1 on CogVideoX).
        overlap: pixel frames of latents neighbouring windows share (a positive multiple of
            the temporal compression t; StreamingT2V uses 12 of 38): the next window's slot 0
            sits in the previous one's last shared group, and overlap / t - 1 aligned latents
            are blended. Windows start every `chunk_frames - 1 - overlap + t` frames.
        strength: fraction of the schedule re-run (SDEdit strength, 0 < strength <= 1).
        steps: steps of the full schedule (`strength * steps` are run).
        guidance: classifier-free guidance scale.
        negative_prompt: text to steer away from.
        guidance_2: Wan 2.2 A14B: the low-noise expert's guidance scale; None: the chunk
            loop's `guidance_2`, else `guidance`.
    """

    def __init__(self, backbone: Backbone, chunk_frames: int, overlap: int, strength: float = 0.4,
                 steps: int = 50, guidance: float = 5.0, negative_prompt: str = "",
                 guidance_2: float | None = None):
        self.backbone = backbone
        self.chunk_frames = chunk_frames
        self.overlap = overlap
        self.strength = strength
        self.steps = steps
        self.guidance = guidance
        self.negative_prompt = negative_prompt
        self.guidance_2 = guidance_2
        self.check_inputs()

    def check_inputs(self) -> None:
        backbone = self.backbone
        if backbone.family.name not in ("wan", "cogvideox"):
            raise UserError(f"--refine is not supported for {backbone.family.label}")
        # (decoded=True: a window whose latents decode into more frames would shift every frame)
        backbone.check_frames(self.chunk_frames, "--refine-chunk")
        keep_step_overwrites(backbone.pipe.scheduler)  # refuses second-order schedulers
        check_overlap(backbone, self.overlap, self.chunk_frames, "--refine-overlap",
                      "--refine-chunk")
        if not 0 < self.strength <= 1 or int(self.steps * self.strength) < 1:
            raise UserError(f"--refine-strength {self.strength} runs no step of {self.steps}: "
                            f"use a value in (1/steps, 1]")

    def prepare_windows(self, frames: int) -> tuple[int, list[int]]:
        """Window length and starts in pixel frames (multiples of t) covering `frames`.

        A video shorter than one window is one window of the shortest length that decodes
        back whole; otherwise windows advance by `chunk_frames - 1 - overlap + t` and the last
        starts on the first multiple of t from which it reaches the end."""
        t = self.backbone.temporal
        if frames <= self.chunk_frames:
            return next(n for n in range(frames, frames + 16 * t) if self.backbone.writable(n)), [0]
        window, stride = self.chunk_frames, self.chunk_frames - 1 - self.overlap + t
        last = math.ceil((frames - window) / t) * t
        starts = [0]
        while starts[-1] + window < frames:
            starts.append(min(starts[-1] + stride, last))
        return window, starts

    def experts(self, generator: ChunkedGenerator):
        """(low-noise transformer, boundary timestep) of a Wan 2.2 A14B refinement, else None.

        The V2V pipeline shares the text-to-video backbone's `transformer` but cannot hold
        its `transformer_2`, which is taken from there."""
        source = generator.backbone
        if not source.two_experts or source.pipe.transformer is not self.backbone.pipe.transformer:
            return None
        boundary = source.pipe.config.boundary_ratio
        return (source.pipe.transformer_2,
                boundary * source.pipe.scheduler.config.num_train_timesteps)

    def window_frames(self, frames: Iterator[np.ndarray], window: int,
                      starts: list[int]) -> Iterator[np.ndarray]:
        """Each window's pixel frames from the stream `frames`, the last padded with copies of
        the video's last frame; only the frames a later window still needs are kept."""
        held: list[np.ndarray] = []
        first = 0  # index of held[0]
        for start in starts:
            held = held[start - first:]
            first = start
            while len(held) < window:
                frame = next(frames, None)
                if frame is None:
                    break
                held.append(frame)
            yield np.stack(held + [held[-1]] * (window - len(held)))

    def __call__(self, generator: ChunkedGenerator, state_dir: Path, story: Story, seed: int,
                 mp4_path: Path) -> dict:
        """Refine the video the chunk loop saved in `state_dir`; rewrite `mp4_path`."""
        import torch

        backbone, pipe = self.backbone, self.backbone.pipe
        settings = generator.settings
        t = backbone.temporal
        if backbone.prompt_cache is not generator.backbone.prompt_cache:  # its own encoder
            backbone.prompt_cache.clear()
        started = time.perf_counter()
        # 1. Windows over the frames, and the steps each expert runs
        count = generator.plan.frames
        window, starts = self.prepare_windows(count)
        latent_window = backbone.latent_frames(window)
        firsts = [start // t for start in starts]  # global latent index of each slot 0
        scheduler = copy.deepcopy(pipe.scheduler)
        scheduler.set_timesteps(self.steps)
        run_steps = min(int(self.steps * self.strength), self.steps)
        timesteps = scheduler.timesteps[self.steps - run_steps:]
        experts = self.experts(generator)
        high = run_steps if experts is None else int((timesteps >= experts[1]).sum())
        guidance_2 = self.guidance_2 if self.guidance_2 is not None else settings.guidance_2
        # 2. Encode each window from its own pixels and noise it with the shared noise
        name = f"{story.id}/refine"
        noisy = []
        for first, frames in zip(firsts, self.window_frames(generator.replay(state_dir), window,
                                                             starts), strict=True):
            clean = backbone.encode(frames).float().cpu()
            noise = torch.cat([make_noise((*clean.shape[:2], 1, *clean.shape[3:]),
                                          derive_seed(seed, name, g, 0))
                               for g in range(first, first + latent_window)], dim=2)
            noisy.append(backbone.scheduler_noise(scheduler, clean, noise, timesteps[0]))
        # 3. The shared latents: global latent g >= 1 (and 0), plus each later window's slot 0
        shared = torch.zeros((*noisy[0].shape[:2], firsts[-1] + latent_window,
                              *noisy[0].shape[3:]))
        heads = [latents[:, :, :1] for latents in noisy]
        offsets = torch.Generator("cpu").manual_seed(derive_seed(seed, name, -1, 0))
        picked: list[list[int]] = []

        def blend(outputs: list) -> None:
            cuts = []
            for k, (first, latents) in enumerate(zip(firsts, outputs, strict=True)):
                latents = latents.float().cpu()
                overlap = firsts[k - 1] + latent_window - 1 - first if k else 0
                cut = int(torch.randint(0, overlap + 1, (1,), generator=offsets)) if k else 0
                begin = 0 if k == 0 else 1 + cut
                shared[:, :, first + begin:first + latent_window] = latents[:, :, begin:]
                heads[k] = latents[:, :, :1]
                cuts.append(cut)
            picked.append(cuts)

        def window_latents(k: int):
            first = firsts[k]
            aligned = shared[:, :, first + 1:first + latent_window]
            return torch.cat([heads[k], aligned], dim=2) if k else shared[:, :, :latent_window]

        # (one scheduler per window, shared by its two experts' calls, which run in turn)
        window_pipes = []
        for _ in starts:
            own = {**pipe.components, "scheduler": copy.deepcopy(pipe.scheduler)}
            low = None if experts is None else type(pipe)(**{**own, "transformer": experts[0]})
            window_pipes.append((type(pipe)(**own), low))

        def run_window(k: int):
            high_pipe, low_pipe = window_pipes[k]
            middle = min(starts[k] + window // 2, count - 1)
            chunk = max(c for c, s in enumerate(generator.plan.chunk_starts) if s <= middle)
            common = dict(height=settings.height, width=settings.width,
                          negative_prompt=self.negative_prompt)
            latents = noisy[k]
            if high:
                def stepped(step, current, pipe=high_pipe):
                    if step == high - 1 and high < run_steps:  # hand over at the boundary
                        pipe._interrupt = True
                    return windows.stepped(k, step, current.clone())

                latents = backbone.run(
                    story.prompt_for(chunk), latents, self.steps, self.guidance,
                    torch.Generator("cpu").manual_seed(seed), on_step=stepped,
                    strength=self.strength, pipe=high_pipe,
                    overwrite_steps=range(min(high, run_steps - 1)), **common)
            if high < run_steps:
                low_steps = run_steps - high
                latents = backbone.run(
                    story.prompt_for(chunk), latents, self.steps,
                    self.guidance if guidance_2 is None else guidance_2,
                    torch.Generator("cpu").manual_seed(seed),
                    on_step=lambda step, current: windows.stepped(k, high + step,
                                                                  current.clone()),
                    strength=min(1.0, (low_steps + 0.5) / self.steps), pipe=low_pipe,
                    overwrite_steps=range(low_steps - 1), **common)
            return latents

        for high_pipe, low_pipe in window_pipes:
            for each in (high_pipe, low_pipe):
                if each is not None:
                    each.set_progress_bar_config(disable=True)
        windows = _Windows(len(starts), run_steps, run_window)
        # (no_grad around all windows: grad mode is per thread, and the greenlets share one)
        with torch.no_grad():
            try:
                for _ in range(run_steps):
                    blend(windows.step_all(lambda k: window_latents(k).clone()))
                windows.finish()
            finally:
                windows.close()
            # 4. Decode window by window; each frame from the window that owns its latent
            # (window k owns the frames from its cut on, up to where a later one's begin)
            owned_from = [0] + [start + t * cut + 1
                                for start, cut in zip(starts[1:], picked[-1][1:], strict=True)]
            ends = [min([*owned_from[k + 1:], count]) for k in range(len(starts))]
            with atomic_file(mp4_path) as handle, \
                    VideoWriter(handle, settings.width, settings.height, settings.fps,
                                crf=settings.crf) as writer:
                for k, start in enumerate(starts):
                    if ends[k] > owned_from[k]:
                        decoded = backbone.decode(window_latents(k))
                        writer.write_many(decoded[owned_from[k] - start:ends[k] - start])
        return {
            "model": backbone.source,
            "strength": self.strength,
            "steps_run": run_steps,
            "window_frames": window,
            "window_latent_frames": latent_window,
            "overlap_frames": self.overlap,
            "window_starts": starts,
            "blend_offsets": picked,
            "padded_frames": starts[-1] + window - count,
            "experts": None if experts is None else {"transformer": high,
                                                     "transformer_2": run_steps - high},
            "seconds": round(time.perf_counter() - started, 3),
        }
