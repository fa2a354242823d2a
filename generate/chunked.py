"""The chunk loop: a long video as a chain of short chunks with strong links between them.

The loop owns the latents and drives a `Backbone` only through the pipeline's public
arguments: the initial noise goes in through `latents=`, per-step overwrites through
`callback_on_step_end` (ModelScope: its `callback`), and `output_type="latent"` brings the
final latents back, which the loop decodes itself. Latents are handled in the canonical
(B, C, F, H, W) layout; F counts latent frames (1 + (pixel frames - 1) / 4 for Wan/CogVideoX).

Continuation (`--continue`; `auto`, the default, is `anchor` on backbones whose VAE
compresses time (Wan, CogVideoX, LTX) and `reuse` where one latent is one frame (ModelScope)):
- `anchor`, right for causal video VAEs. `--overlap` O is a count of pixel frames that map to
  whole latents of a fresh causal sequence: 1 + k*t (Wan/CogVideoX 1, 5, 9, ...; LTX 1, 9,
  17; any count when t = 1), L = 1 + (O-1)/t latents. After chunk c is decoded, its last O
  frames are encoded by the VAE as a sequence of their own (so the first of them gets the
  single-frame first latent, as at the start of any chunk). Chunk c+1's first L latents are
  pinned, in forward order, to those clean latents re-noised to each step's noise level
  (`a_i * clean + b_i * noise`, `noise_level`, with the chunk's own initial noise) until the
  state's signal fraction a_i reaches `--anchor-release` (0.9), or for a staged step count
  (`--anchor-steps`, `--reuse-guidance`; `continuation.anchor_pins`). The new chunk's first
  O frames re-render the previous chunk's last O frames and are dropped.
- `reuse` (VidRD, "Reuse and Diffuse"), exact on per-frame latents (ModelScope), explicit
  elsewhere. With O overlap latents, T steps, `past[i]` = the previous chunk's state before
  step i, frame order reversed (its last O frames, for the pinned steps only): the first O
  frames start from `past[0][:O]`; the others from past-dependent noise
  `a/sqrt(1+a^2) * past0[O:] + 1/sqrt(1+a^2) * fresh` (`--noise-recycle a`, past0 the whole
  previous initial noise reversed); overlap frame m is overwritten with `past[i][m]` before
  step i while `i < (O-m) * (T/O) * beta` (`--reuse-guidance beta`; stored noisy states at the
  same step, so nothing is re-noised).
  The bridge (the new chunk's first O latents) is dropped: `pixel_frames(O)` frames. The
  whole chunk is still seeded as a time-reversed copy of the previous one, so motion tends
  to rewind after each seam (measured by the checks' seam direction, docs/generate.md); on
  causal VAEs the flip also reverses t-frame groups, not the frames in them.
- `i2v`: chunks after the first come from an image-to-video backbone conditioned on the last
  frame of the previous chunk; the new chunk's first frame re-renders that frame and is
  dropped.
- `none`: independent chunks, concatenated.

Overwriting latents between steps needs a scheduler that continues from what it is given:
UniPC's corrector is turned off on exactly the overwritten steps (`keep_step_overwrites`).

Before each chunk after the first, `--search-k` candidate noises are tried (`search.py`).
Chunk 0 has nothing to continue from, so it is not searched: it uses candidate 0.

Exact length: the loop generates whole chunks, then trims the end of the last one to exactly
`--frames`; the plan (and the sample json) says how many frames were generated and trimmed.

Colour: each later chunk's latents are pulled toward the first chunk's channel statistics
(`--colour-correction`, AdaIN; on for one-prompt videos) before they are decoded and saved.

Memory and resume: frames stream into the MP4 as each chunk is decoded; only the current
chunk, the previous chunk's initial noise, the overlap trajectory (`reuse`) or last O frames
(`anchor`) and the last frame stay in memory. After each chunk its final latents are written
atomically to `state_dir`; a resumed run re-decodes the finished chunks (a byte-identical
MP4) and continues from the next one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datakit.io.atomic import atomic_file, atomic_write
from datakit.io.errors import UserError
from datakit.io.video import VideoWriter
from generate.backbone import Backbone
from generate.continuation import (
    ANCHOR_RELEASE,
    COLOUR_CORRECTION,
    anchor_pins,
    channel_stats,
    match_colour,
    pinned_steps,
    released_at,
    reuse_noise,
)
from generate.families import noise_level, planned_signal
from generate.memory import bound_heap_growth, release_freed_memory
from generate.prompts import Story
from generate.search import candidate_correlation, search_noise

logger = logging.getLogger(__name__)

CONTINUE_MODES = ("auto", "anchor", "reuse", "i2v", "none")
SETTINGS_FILE = "settings.json"


def derive_seed(seed: int, story_id: str, chunk: int, candidate: int) -> int:
    """A 63-bit seed for one (video, chunk, candidate): fixed by `seed`, independent of order."""
    digest = hashlib.sha256(f"{seed}/{story_id}/{chunk}/{candidate}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def make_noise(shape: tuple[int, ...], seed: int):
    """Standard normal noise from its own CPU generator (the same on every device)."""
    import torch

    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))


def record_steps(record: dict, steps: int) -> int:
    """Denoising steps a saved chunk record stands for (for progress on resume)."""
    search = record.get("search", {})
    return steps + len(search.get("scores", ())) * search.get("steps", 0)


@dataclass(frozen=True)
class ChunkPlan:
    """How `frames` frames are cut into chunks.

    Args:
        frames: frames in the final video.
        chunk_frames: frames each chunk generates.
        drop: frames dropped at the start of every chunk after the first.
        chunks: number of chunks.
        generated: frames kept from all chunks before trimming.
        trimmed: frames cut from the end of the last chunk to reach exactly `frames`.
        chunk_starts: index in the final video where each chunk's kept frames begin.
    """

    frames: int
    chunk_frames: int
    drop: int
    chunks: int
    generated: int
    trimmed: int
    chunk_starts: tuple[int, ...]


def plan_chunks(frames: int, chunk_frames: int, drop: int = 0) -> ChunkPlan:
    """Cut `frames` into chunks of `chunk_frames`, each after the first losing `drop` frames."""
    if frames < 1:
        raise UserError(f"--frames must be at least 1, got {frames}")
    if not 0 <= drop < chunk_frames:
        raise ValueError(f"drop must be in [0, chunk_frames), got {drop}")
    stride = chunk_frames - drop
    chunks = 1 + max(0, math.ceil((frames - chunk_frames) / stride))
    generated = chunk_frames + (chunks - 1) * stride
    starts = tuple(0 if c == 0 else chunk_frames + (c - 1) * stride for c in range(chunks))
    return ChunkPlan(frames, chunk_frames, drop, chunks, generated, generated - frames, starts)


@dataclass(frozen=True)
class ChunkSettings:
    """Everything that decides the frames of a chunked video (and so its resume state).

    Args:
        frames: exact length of the output video.
        chunk_frames: frames per chunk (must fit the backbone's frames rule).
        overlap: `anchor`: pixel frames re-encoded from the end of the previous chunk (1 + k *
            the temporal compression); `reuse`: pixel frames at the end of the previous chunk
            whose latents are reused (a multiple of the temporal compression).
        continue_mode: `auto`, `anchor`, `reuse`, `i2v` or `none`.
        steps: denoising steps per chunk.
        guidance: classifier-free guidance scale.
        negative_prompt: text to steer away from ("" for none).
        height, width, fps: output size and frame rate.
        guidance_2: Wan 2.2 A14B: CFG scale of the low-noise expert (`guidance_scale_2`);
            None: `guidance`.
        noise_recycle: VidRD's alpha for past-dependent noise.
        reuse_guidance: beta for staged pinning by step count (`reuse`; `anchor` when
            `anchor_release` is None and `anchor_steps` is not set; 0 disables pinning).
        anchor_release: `anchor`: every anchor latent is pinned until the state's signal
            fraction a_i reaches this (`continuation.ANCHOR_RELEASE`, 0.9: to a low noise
            level; 1.0: through the last step; 0: never). None: pinned by step count
            (`anchor_steps`, else `reuse_guidance`'s staging); the previews are then released
            at the noise levels where the full run releases each latent.
        anchor_steps: `anchor`, with `anchor_release` None: the anchor latent next to the new
            frames is pinned for this many of `steps` (the others staged below it as
            `reuse_guidance` stages them, with beta = anchor_steps / steps); None: beta =
            `reuse_guidance`.
        colour_correction: AdaIN factor pulling each later chunk's per-channel latent mean and
            std toward the first chunk's (`continuation.match_colour`; 0: off); None:
            `continuation.COLOUR_CORRECTION` (0.25) for a one-prompt video, 0 for a story
            of several prompts (its chunks may change scene on purpose).
        search_k: candidate noises per chunk; 1 disables the search.
        search_steps: steps of each candidate's preview trajectory.
        crf: x264 quality of the MP4.
    """

    frames: int = 49
    chunk_frames: int = 33
    overlap: int = 5
    continue_mode: str = "auto"
    steps: int = 50
    guidance: float = 5.0
    negative_prompt: str = ""
    height: int = 480
    width: int = 832
    fps: int = 16
    guidance_2: float | None = None
    noise_recycle: float = 4.0
    reuse_guidance: float = 0.4
    anchor_release: float | None = ANCHOR_RELEASE
    anchor_steps: int | None = None
    colour_correction: float | None = None
    search_k: int = 5
    search_steps: int = 3
    crf: int = 18


def resolve_mode(mode: str, temporal: int) -> str:
    """`auto` -> `anchor` on a VAE that compresses time, `reuse` on per-frame latents."""
    if mode != "auto":
        return mode
    return "anchor" if temporal > 1 else "reuse"


def check_overlap(backbone: Backbone, overlap: int, frames: int, option: str, chunk_option: str,
                  causal: bool = False) -> int:
    """Latent frames of a pixel-frame overlap, or a one-line `UserError`.

    Args:
        backbone: the backbone whose temporal compression t counts.
        overlap: the overlap in pixel frames.
        frames: the window/chunk it must be shorter than, in pixel frames.
        option, chunk_option: the options named in messages.
        causal: the overlap starts a fresh causal sequence (1 + k*t frames, `anchor`);
            otherwise it is a run of whole latents inside a sequence (k*t frames).
    """
    t, label = backbone.temporal, backbone.family.label
    if causal:
        fits = overlap >= 1 and (overlap - 1) % t == 0
        latent = backbone.latent_frames(overlap) if fits else 0
        lower, upper = (max(overlap - 1, 0) // t * t + 1, (max(overlap - 1, 0) // t + 1) * t + 1)
        rule = f"1 + a multiple of {label}'s temporal compression {t} (a fresh causal sequence)"
    else:
        fits = overlap >= 1 and overlap % t == 0
        latent = overlap // t if fits else 0
        lower, upper = max(t, overlap // t * t), (overlap // t + 1) * t
        rule = f"a positive multiple of {label}'s temporal compression {t} (one latent frame " \
               f"= {t} pixel frames)"
    if not fits:
        hint = f"use {lower} or {upper}" if lower != upper else f"use {lower}"
        raise UserError(f"{option} {overlap} must be {rule}: {hint}")
    if latent >= backbone.latent_frames(frames):
        raise UserError(f"{option} {overlap} must be shorter than {chunk_option} {frames} "
                        f"({backbone.latent_frames(frames)} latent frames)")
    return latent


class ChunkedGenerator:
    """Generate long videos chunk by chunk on a text-to-video backbone.

    Args:
        backbone: the text-to-video backbone (every chunk in `anchor`/`reuse`/`none`, chunk 0
            in `i2v`).
        settings: the `ChunkSettings`.
        i2v: the image-to-video backbone for `--continue i2v`.
        scorer: the search scorer (see `search.py`); needed when `settings.search_k > 1`.
        bounded_heap: keep host memory flat over chunks (glibc only, see
            `bound_heap_growth`); False trades that for speed when the model runs on the CPU.
        progress: called with the number of denoising steps just done (after every step of
            every pipeline call, previews included; finished chunks of a resumed run at once).
    """

    def __init__(
        self,
        backbone: Backbone,
        settings: ChunkSettings,
        i2v: Backbone | None = None,
        scorer: Callable[[np.ndarray, np.ndarray, str], float] | None = None,
        bounded_heap: bool = True,
        progress: Callable[[int], None] | None = None,
    ):
        self.backbone = backbone
        self.settings = settings
        self.i2v = i2v
        self.scorer = scorer
        self.progress = progress
        self.mode = resolve_mode(settings.continue_mode, backbone.temporal)
        self.overlap_latent = 0
        self.check_inputs()
        self.bounded_heap = bounded_heap
        if bounded_heap:
            bound_heap_growth()
        self.plan = plan_chunks(settings.frames, settings.chunk_frames, self.bridge_frames)
        self.pins: list[int] = []
        if self.mode == "reuse":
            self.pins = pinned_steps(self.overlap_latent, settings.steps, settings.reuse_guidance)
        elif self.mode == "anchor":
            self.pins = self.anchor_pins(settings.steps)

    @property
    def bridge_frames(self) -> int:
        """Frames dropped at the start of every chunk after the first (they re-render or
        mirror frames the previous chunk already showed)."""
        if self.mode == "i2v":
            return 1
        if self.mode == "anchor":
            return self.settings.overlap
        if self.mode == "reuse":
            return self.backbone.pixel_frames(self.overlap_latent)
        return 0

    @property
    def steps_per_video(self) -> int:
        """Denoising steps of one video (for progress): every chunk, plus the previews."""
        s = self.settings
        previews = s.search_k * s.search_steps if s.search_k > 1 else 0
        return self.plan.chunks * s.steps + (self.plan.chunks - 1) * previews

    def planned_signal(self, steps: int) -> list[float]:
        """Signal fraction a_i before each step of a `steps`-step chunk on this backbone's
        scheduler (`families.planned_signal`)."""
        _, _, frames, height, width = self.backbone.noise_shape(
            self.settings.chunk_frames, self.settings.height, self.settings.width)
        return planned_signal(self.backbone.pipe.scheduler, steps, frames * height * width)

    def anchor_pins(self, steps: int) -> list[int]:
        """`anchor`: steps each anchor latent 0..L-1 is pinned in a run of `steps` steps
        (`continuation.anchor_pins`: by noise level, or by step count with previews released
        at the full run's noise levels)."""
        s = self.settings
        beta = s.reuse_guidance if s.anchor_steps is None else s.anchor_steps / s.steps
        full = self.planned_signal(s.steps) if steps != s.steps else None
        return anchor_pins(self.overlap_latent, self.planned_signal(steps), s.anchor_release,
                           beta, full)

    def check_inputs(self) -> None:
        s, backbone = self.settings, self.backbone
        if s.continue_mode not in CONTINUE_MODES:
            raise UserError(f"--continue must be one of {', '.join(CONTINUE_MODES)}, "
                            f"got {s.continue_mode!r}")
        if backbone.patch_t > 1:
            raise UserError(f"{backbone.source}: {backbone.family.label} with patch_size_t "
                            f"{backbone.patch_t} (CogVideoX 1.5) is not supported for chunks "
                            "yet: its transformer needs an even latent count and its VAE an odd "
                            "one (diffusers pads one latent and drops it before decoding; the "
                            "chunk loop does not)")
        backbone.check_frames(s.chunk_frames, "--chunk-frames")
        backbone.check_size(s.height, s.width)
        if s.steps < 1:
            raise UserError(f"--steps must be at least 1, got {s.steps}")
        if s.search_k < 1:
            raise UserError(f"--search-k must be at least 1 (1 = no search), got {s.search_k}")
        if s.search_k > 1 and not 1 <= s.search_steps <= s.steps:
            raise UserError(f"--search-steps must be in 1..--steps ({s.steps}), "
                            f"got {s.search_steps}")
        if s.search_k > 1 and self.scorer is None:
            raise ValueError("a scorer is needed when search_k > 1")
        if not 0 <= s.reuse_guidance <= 1:
            raise UserError(f"--reuse-guidance must be in [0, 1], got {s.reuse_guidance}")
        if s.anchor_steps is not None and not 0 <= s.anchor_steps <= s.steps:
            raise UserError(f"--anchor-steps must be in 0..--steps ({s.steps}), "
                            f"got {s.anchor_steps}")
        if s.anchor_release is not None and not 0 <= s.anchor_release <= 1:
            raise UserError(f"--anchor-release must be in [0, 1], got {s.anchor_release}")
        if self.mode == "anchor" and None not in (s.anchor_release, s.anchor_steps):
            raise UserError("--anchor-release and --anchor-steps both set when the anchor is "
                            "released: give one")
        if s.colour_correction is not None and not 0 <= s.colour_correction <= 1:
            raise UserError(f"--colour-correction must be in [0, 1], got {s.colour_correction}")
        if s.guidance_2 is not None and not backbone.two_experts:
            raise UserError(f"--guidance-2 is for two-expert pipelines (Wan 2.2 A14B); "
                            f"{backbone.source} has one denoiser")
        if s.noise_recycle < 0:
            raise UserError(f"--noise-recycle must be >= 0, got {s.noise_recycle}")
        if self.mode == "i2v":
            if self.i2v is None:
                raise UserError("--continue i2v needs --i2v-model (an image-to-video pipeline)")
            if s.chunk_frames < 2:
                raise UserError(f"--continue i2v needs --chunk-frames of at least 2, got "
                                f"{s.chunk_frames}")
            self.i2v.check_frames(s.chunk_frames, "--chunk-frames")
            self.i2v.check_size(s.height, s.width)
        if self.mode in ("anchor", "reuse"):
            self.overlap_latent = check_overlap(backbone, s.overlap, s.chunk_frames, "--overlap",
                                                "--chunk-frames", causal=self.mode == "anchor")

    # -- one chunk ---------------------------------------------------------------------------

    def prepare_noise(self, story_id: str, seed: int, chunk: int, candidate: int,
                      shape: tuple[int, ...], previous_initial):
        fresh = make_noise(shape, derive_seed(seed, story_id, chunk, candidate))
        if previous_initial is None:
            return fresh
        return reuse_noise(previous_initial, fresh, self.overlap_latent,
                           self.settings.noise_recycle)

    def _generator(self, seed: int, story_id: str, chunk: int, candidate: int):
        import torch

        seed = derive_seed(seed, story_id, chunk, -1 - candidate)
        return torch.Generator("cpu").manual_seed(seed)

    def _anchor(self, backbone: Backbone, clean, noise, pins: list[int]):
        """`anchor`: the step callback pinning latents 0..L-1 to `clean` re-noised to each
        step's level, and the callback steps after which it overwrites."""

        last = max(pins)

        def on_step(step: int, latents):
            index = step + 1  # the callback sees the state before step `index`
            if index >= last:
                return None
            a, b = noise_level(backbone.pipe.scheduler, index)
            replaced = latents.clone()
            for m, pinned in enumerate(pins):
                if index < pinned:
                    replaced[:, :, m] = (a * clean[:, :, m] + b * noise[:, :, m]).to(latents)
            return replaced

        return on_step, range(max(last - 1, 0))

    def _count(self, on_step):
        """`on_step` that also reports each step to `progress`."""
        if self.progress is None:
            return on_step

        def counted(step: int, latents):
            self.progress(1)
            return on_step(step, latents) if on_step is not None else None

        return counted

    def _chunk(self, story: Story, seed: int, chunk: int, state: dict) -> tuple[dict, dict]:
        """Generate chunk `chunk`; return its tensors to save and its json record."""

        s = self.settings
        i2v_chunk = self.mode == "i2v" and chunk > 0
        reuse_chunk = self.mode == "reuse" and chunk > 0
        backbone = self.i2v if i2v_chunk else self.backbone
        shape = backbone.noise_shape(s.chunk_frames, s.height, s.width)
        prompt = story.prompt_for(chunk)
        image = state["last_frame"] if i2v_chunk else None
        record: dict[str, Any] = {"chunk": chunk, "prompt": prompt,
                                  "backbone": "i2v" if i2v_chunk else "t2v"}
        started = time.perf_counter()
        # the clean latents of the previous chunk's last O frames, a causal sequence of its own
        anchor = None
        if self.mode == "anchor" and chunk > 0:
            anchor = backbone.encode(state["tail"]).float().cpu()

        # 1. Candidate initial noises and the k-step search (not for chunk 0: no condition)
        previous_initial = state["initial"] if reuse_chunk else None
        if chunk > 0 and s.search_k > 1:
            candidates = [self.prepare_noise(story.id, seed, chunk, j, shape, previous_initial)
                          for j in range(s.search_k)]

            def preview(candidate: int, noise) -> np.ndarray:
                on_step, overwrites = None, ()
                if anchor is not None:
                    on_step, overwrites = self._anchor(backbone, anchor, noise,
                                                       self.anchor_pins(s.search_steps))
                latents = backbone.run(prompt, noise, s.search_steps, s.guidance,
                                       self._generator(seed, story.id, chunk, candidate),
                                       s.height, s.width, s.negative_prompt,
                                       on_step=self._count(on_step), image=image, fps=s.fps,
                                       overwrite_steps=overwrites, guidance_2=s.guidance_2)
                return backbone.decode(latents)[self.plan.drop:]  # the frames that are kept

            best, scores = search_noise(candidates, preview, self.scorer, state["last_frame"],
                                        prompt)
            initial = candidates[best]
            record["search"] = {"scorer": self.scorer.name, "steps": s.search_steps,
                                "scores": [round(x, 6) for x in scores], "winner": best,
                                "candidate_correlation": round(candidate_correlation(
                                    candidates), 4),
                                "seconds": round(time.perf_counter() - started, 3)}
            del candidates
        else:
            best = 0
            initial = self.prepare_noise(story.id, seed, chunk, 0, shape, previous_initial)
            record["search"] = {"skipped": "chunk 0 has no conditioning frame" if chunk == 0
                                else "--search-k 1"}

        # 2. Denoise with the full schedule, pinning (anchor/reuse) and recording (reuse)
        on_step, overwrites, trajectory = None, (), None
        if anchor is not None:
            on_step, overwrites = self._anchor(backbone, anchor, initial, self.pins)
        elif self.mode == "reuse" and self.pins and self.pins[0]:
            on_step, overwrites, trajectory = self._reuse(initial, state["trajectory"]
                                                          if reuse_chunk else None)
        denoise_started = time.perf_counter()
        final = backbone.run(prompt, initial, s.steps, s.guidance,
                             self._generator(seed, story.id, chunk, best), s.height, s.width,
                             s.negative_prompt, on_step=self._count(on_step), image=image,
                             fps=s.fps, overwrite_steps=overwrites, guidance_2=s.guidance_2)
        record["denoise_seconds"] = round(time.perf_counter() - denoise_started, 3)
        if chunk > 0 and self.mode in ("anchor", "reuse"):
            record["pinned_steps"] = self.pins
        if anchor is not None:
            record["released_at_signal"] = released_at(self.planned_signal(s.steps), self.pins)
        if chunk > 0 and state["colour_factor"] > 0:
            final = match_colour(final.float(), state["colour_reference"],
                                 state["colour_factor"])
            record["colour_correction"] = state["colour_factor"]
        tensors = {"latents": final.float().cpu().contiguous(),
                   "initial": initial.float().contiguous()}
        if trajectory is not None:
            tensors["trajectory"] = trajectory.contiguous()
        record["seconds"] = round(time.perf_counter() - started, 3)
        return tensors, record

    def _reuse(self, initial, past):
        """`reuse`: the step callback that pins the overlap to the reversed past trajectory
        (`past`, None for chunk 0) and records this chunk's; the overwritten steps; the
        trajectory tensor it fills."""
        import torch

        overlap, pins = self.overlap_latent, self.pins
        keep_steps = pins[0]
        trajectory = torch.empty((keep_steps,) + initial[:, :, -overlap:].shape)
        trajectory[0] = initial[:, :, -overlap:].flip(2)

        def on_step(step: int, latents):
            index = step + 1  # the callback sees the state before step `index`
            replaced = None
            if past is not None:
                for m in range(overlap):
                    if index < pins[m]:
                        replaced = latents.clone() if replaced is None else replaced
                        replaced[:, :, m] = past[index][:, :, m].to(latents)
            current = latents if replaced is None else replaced
            if index < keep_steps:
                trajectory[index] = current[:, :, -overlap:].flip(2).float().cpu()
            return replaced

        overwrites = range(max(keep_steps - 1, 0)) if past is not None else ()
        return on_step, overwrites, trajectory

    # -- state on disk ----------------------------------------------------------------------

    def _fingerprint(self, story: Story, seed: int) -> dict:
        return {"settings": asdict(self.settings), "prompts": list(story.prompts), "seed": seed,
                "model": self.backbone.source, "i2v": self.i2v.source if self.i2v else None,
                "loras": self.backbone.loras,
                "device": self.backbone.device, "dtype": str(self.backbone.pipe.dtype),
                "scheduler": type(self.backbone.pipe.scheduler).__name__,
                "scheduler_config": dict(self.backbone.pipe.scheduler.config),
                "scorer": getattr(self.scorer, "source", getattr(self.scorer, "name", None))}

    @staticmethod
    def _chunk_path(state_dir: Path, chunk: int) -> Path:
        return state_dir / f"chunk_{chunk:05d}.safetensors"

    def _save(self, state_dir: Path, chunk: int, tensors: dict, record: dict) -> None:
        from safetensors.torch import save

        data = save(tensors, metadata={"record": json.dumps(record)})
        atomic_write(self._chunk_path(state_dir, chunk), data)

    def _load(self, state_dir: Path, chunk: int) -> tuple[dict, dict]:
        from safetensors import safe_open

        tensors = {}
        with safe_open(self._chunk_path(state_dir, chunk), "pt") as handle:
            for name in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                tensors[name] = handle.get_tensor(name)
            record = json.loads(handle.metadata()["record"])
        return tensors, record

    def finished_chunks(self, state_dir: Path, story: Story, seed: int) -> int:
        """How many leading chunks of this exact run are saved in `state_dir` (0 if none)."""
        settings = state_dir / SETTINGS_FILE
        if not settings.is_file():
            return 0
        expected = json.loads(json.dumps(self._fingerprint(story, seed)))
        if json.loads(settings.read_text()) != expected:
            logger.warning("%s: saved state is from different settings; starting over", state_dir)
            return 0
        done = 0
        while done < self.plan.chunks and self._chunk_path(state_dir, done).is_file():
            done += 1
        return done

    def kept_frames(self, chunk: int, frames: np.ndarray) -> np.ndarray:
        """The frames of `chunk` that go in the video (drop at the start, trim at the end)."""
        start = self.plan.drop if chunk > 0 else 0
        room = self.plan.frames - self.plan.chunk_starts[chunk]
        return frames[start:start + room]

    def _decode(self, chunk: int, latents) -> np.ndarray:
        uses_i2v = self.mode == "i2v" and chunk > 0
        return (self.i2v if uses_i2v else self.backbone).decode(latents)

    def replay(self, state_dir: Path) -> Iterator[np.ndarray]:
        """Yield the kept frames of every saved chunk, re-decoded from their latents."""
        for chunk in range(self.plan.chunks):
            tensors, _ = self._load(state_dir, chunk)
            yield from self.kept_frames(chunk, self._decode(chunk, tensors["latents"]))

    def colour_factor(self, story: Story) -> float:
        """The colour-drift correction of this video (`ChunkSettings.colour_correction`)."""
        factor = self.settings.colour_correction
        if factor is None:
            return COLOUR_CORRECTION if len(story.prompts) == 1 else 0.0
        return factor

    def _next_state(self, tensors: dict, frames: np.ndarray, state: dict) -> dict:
        """What the next chunk continues from (the colour reference: the first chunk's)."""
        reference = state["colour_reference"]
        if reference is None:
            reference = channel_stats(tensors["latents"])
        return {"initial": tensors["initial"], "trajectory": tensors.get("trajectory"),
                "last_frame": frames[-1],
                "tail": frames[-self.settings.overlap:] if self.mode == "anchor" else None,
                "colour_reference": reference, "colour_factor": state["colour_factor"]}

    # -- the loop ---------------------------------------------------------------------------

    def __call__(
        self,
        story: Story,
        seed: int,
        mp4_path: str | os.PathLike,
        state_dir: str | os.PathLike,
        resume: bool = False,
    ) -> dict:
        """Generate `story` into `mp4_path`; return the sample's json details.

        Args:
            story: the prompts (one per chunk, the last repeating) and id.
            seed: the video's seed; with the same settings it fixes every frame.
            mp4_path: the output MP4 (appears only when complete).
            state_dir: where chunk latents and loop state are saved after each chunk.
            resume: continue from the chunks saved in `state_dir` by an interrupted run with
                the same settings; otherwise any saved state is discarded.
        """
        s, plan = self.settings, self.plan
        state_dir = Path(state_dir)
        # 1. Check inputs
        if len(story.prompts) > plan.chunks:
            raise ValueError(f"{len(story.prompts)} prompts but --frames {s.frames} makes only "
                             f"{plan.chunks} chunks of {s.chunk_frames}")
        # each distinct prompt is encoded once per video (see `PromptCache`)
        for backbone in (self.backbone, self.i2v):
            if backbone is not None:
                backbone.prompt_cache.clear()
        # 2. Prepare the state folder (resume from it, or start it over)
        state_dir.mkdir(parents=True, exist_ok=True)
        done = self.finished_chunks(state_dir, story, seed) if resume else 0
        if not done:
            for stale in state_dir.glob("chunk_*.safetensors"):
                stale.unlink()
        atomic_write(state_dir / SETTINGS_FILE,
                     json.dumps(self._fingerprint(story, seed), sort_keys=True))
        started = time.perf_counter()
        records: list[dict] = []
        state: dict[str, Any] = {"initial": None, "trajectory": None, "last_frame": None,
                                 "tail": None, "colour_reference": None,
                                 "colour_factor": self.colour_factor(story)}
        with atomic_file(mp4_path) as handle:
            with VideoWriter(handle, s.width, s.height, s.fps, crf=s.crf) as writer:
                # 3. Replay the chunks an interrupted run finished
                for chunk in range(done):
                    tensors, record = self._load(state_dir, chunk)
                    frames = self._decode(chunk, tensors["latents"])
                    writer.write_many(self.kept_frames(chunk, frames))
                    state = self._next_state(tensors, frames, state)
                    records.append(record)
                    if self.progress is not None:
                        self.progress(record_steps(record, s.steps))
                # 4. Generate the rest, one chunk at a time
                for chunk in range(done, plan.chunks):
                    tensors, record = self._chunk(story, seed, chunk, state)
                    if self.bounded_heap:  # the denoiser's activations, before the decoder's
                        release_freed_memory()
                    decode_started = time.perf_counter()
                    frames = self._decode(chunk, tensors["latents"])
                    writer.write_many(self.kept_frames(chunk, frames))
                    record["decode_seconds"] = round(time.perf_counter() - decode_started, 3)
                    self._save(state_dir, chunk, tensors, record)
                    state = self._next_state(tensors, frames, state)
                    records.append(record)
                    del tensors, frames
                    if self.bounded_heap:
                        release_freed_memory()
            if writer.frames_written != plan.frames:
                raise RuntimeError(f"wrote {writer.frames_written} frames, planned {plan.frames}")
        # 5. Describe what was made
        return {
            "chunks": plan.chunks,
            "chunk_frames": s.chunk_frames,
            "chunk_starts": list(plan.chunk_starts),
            "generated_frames": plan.generated,
            "trimmed_frames": plan.trimmed,
            "trimmed_from": "end of the last chunk",
            "dropped_per_chunk": plan.drop,
            "continue_mode": self.mode,
            "overlap_frames": s.overlap if self.mode in ("anchor", "reuse") else 0,
            "overlap_latent_frames": self.overlap_latent,
            "colour_correction": state["colour_factor"],
            "resumed_from_chunk": done,
            "chunk_details": records,
            "seconds": round(time.perf_counter() - started, 3),
        }

