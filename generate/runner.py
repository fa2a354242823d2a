"""`datakit generate` as one library function: prompts file in, videos + json + manifest out.

For every story in the prompts file: the chunk loop (`chunked.py`) writes `OUT/{id}.mp4`,
the optional refinement pass (`refine.py`) rewrites it, `OUT/{id}.json` records what was
made, the checks (`checks.py`) run on it into `OUT/report/`, and one manifest row (ok or
failed, with the error) goes to `OUT/manifest.parquet`. A failure on one story is recorded
and the others go on. A rerun on the same OUT skips stories already done; `--resume` also
continues a story that was interrupted, from its last finished chunk.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import resource
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datakit.io.atomic import atomic_write
from datakit.io.errors import UserError
from manifests.schema import Status, make_row
from manifests.store import STATE_DIR, ManifestStore, write_stats

logger = logging.getLogger(__name__)


@dataclass
class GenerateOptions:
    """The resolved options of one `datakit generate` run (None = the backbone's default).

    Args:
        prompts: `.txt` (one prompt per line) or `.jsonl` stories (see `prompts.py`).
        model: text-to-video pipeline (hub id or folder); None: `families.DEFAULT_MODEL`
            (Wan 2.1 T2V 1.3B).
        out: output folder.
        frames: exact frames per video.
        chunk_frames: frames per chunk (frames rule of the backbone).
        overlap: `anchor`/`reuse` overlap in pixel frames (see `ChunkSettings.overlap`).
        continue_mode: `auto` (`anchor` on time-compressing VAEs, else `reuse`), `anchor`,
            `reuse`, `i2v` or `none`.
        i2v_model: image-to-video pipeline for `--continue i2v`.
        steps, guidance, negative_prompt: denoising steps, CFG scale, negative text (None:
            the family's published one, Wan's `families.WAN_NEGATIVE_PROMPT`, else "").
        guidance_2: Wan 2.2 A14B: CFG scale of the low-noise expert (None: `guidance`).
        flow_shift: Wan's flow shift (None: `families.default_flow_shift`, 3.0 at 480p, 5.0
            at 720p; other families keep their scheduler as shipped).
        height, width, fps: output size and frame rate.
        seed: the run's seed (a JSONL story may carry its own).
        noise_recycle, reuse_guidance: VidRD's alpha and beta (None: 0.4).
        anchor_release, anchor_steps: `anchor`: release the anchor at this signal fraction,
            or after this many steps (`ChunkSettings`); with neither, a `reuse_guidance` that
            is given stages it by step count, else `continuation.ANCHOR_RELEASE`.
        colour_correction: AdaIN factor toward the first chunk (None: on for one-prompt
            videos only, `ChunkSettings.colour_correction`).
        search_k, search_steps: k-step search candidates (1 = off) and their preview steps
            (None: `search.default_search_steps(steps)`).
        search_scorer: `clip` (default; falls back to `continuity` with a warning where no
            CLIP model can be had) or `continuity` (weights-free).
        search_clip: CLIP hub id or folder (default: `search.DEFAULT_CLIP`, ViT-B/32).
        refine: run the SDEdit refinement pass over each finished video.
        refine_model: video-to-video pipeline for it (default: `model`'s V2V class).
        refine_chunk, refine_overlap: refinement window and overlap, in pixel frames.
        refine_strength: SDEdit strength (fraction of the schedule that is re-run; None: 0.4).
        device, dtype, cpu_offload, vae_tiling, vae_slicing: where and how models run (device
            `auto`: CUDA when available, else the CPU; dtype None: bfloat16 on CUDA, float32
            elsewhere; cpu_offload is offload `model`).
        offload: `none`, `model`, `sequential` or `group` (`loading.apply_offload`).
        attention_backend: diffusers attention backend for the denoiser (None: default).
        lora: `PATH_OR_ID[:SCALE]` LoRAs for `model` (`loading.load_loras`).
        compile: `torch.compile` the denoiser(s), with `compile_mode`.
        bounded_heap: keep host memory flat over chunks (see `chunked.bound_heap_growth`).
        resume: continue interrupted videos from their saved chunks.
        crf: x264 quality of the MP4s.
        checks: run the checks and write the report.
    """

    prompts: Path
    model: str | None
    out: Path
    frames: int = 49
    chunk_frames: int | None = None
    overlap: int | None = None
    continue_mode: str = "auto"
    i2v_model: str | None = None
    steps: int = 50
    guidance: float | None = None
    negative_prompt: str | None = None
    guidance_2: float | None = None
    flow_shift: float | None = None
    height: int | None = None
    width: int | None = None
    fps: int | None = None
    seed: int = 0
    noise_recycle: float = 4.0
    reuse_guidance: float | None = None
    anchor_release: float | None = None
    anchor_steps: int | None = None
    colour_correction: float | None = None
    search_k: int = 5
    search_steps: int | None = None
    search_scorer: str = "clip"
    search_clip: str | None = None
    refine: bool = False
    refine_model: str | None = None
    refine_chunk: int | None = None
    refine_overlap: int | None = None
    refine_strength: float | None = None
    device: str = "auto"
    dtype: str | None = None
    cpu_offload: bool = False
    vae_tiling: bool = False
    vae_slicing: bool = False
    offload: str = "none"
    attention_backend: str | None = None
    lora: tuple[str, ...] = ()
    compile: bool = False
    compile_mode: str = "default"
    bounded_heap: bool = True
    resume: bool = False
    crf: int = 18
    checks: bool = True


def reset_peak_memory(device: str = "cpu") -> None:
    """Start a new peak for `peak_memory`: Linux resets the process's high-water mark
    (VmHWM) when 5 is written to /proc/self/clear_refs; CUDA resets the peak of `device`
    (the models' device, `cuda:N`: not GPU 0 whatever `--device` says)."""
    import torch

    with contextlib.suppress(OSError):  # not Linux: the peak stays the lifetime peak
        Path("/proc/self/clear_refs").write_text("5")
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: str = "cpu") -> dict[str, float | str | None]:
    """Peak resident memory since `reset_peak_memory` (per video), and peak GPU memory of
    `device` when it is a CUDA device.

    `peak_rss_of` says what the RSS figure covers: `video` where the kernel's high-water mark
    could be reset (Linux), `process` (the lifetime peak) elsewhere.
    """
    import torch

    try:
        status = Path("/proc/self/status").read_text()
        rss = int(status.split("VmHWM:")[1].split()[0]) / 1024
        scope = "video"
    except (OSError, IndexError):
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        scope = "process"
    gpu = torch.cuda.max_memory_allocated(device) / 2**20 if device.startswith("cuda") else None
    return {"peak_rss_mb": round(rss, 1), "peak_rss_of": scope,
            "peak_gpu_mb": round(gpu, 1) if gpu else None}


def warn_ignored(options: GenerateOptions, mode: str) -> list[str]:
    """Log (and return) one warning per option that the resolved run does not use."""
    ignored = []
    if not options.refine:
        ignored += [f"--{name.replace('_', '-')}" for name in
                    ("refine_model", "refine_chunk", "refine_overlap", "refine_strength")
                    if getattr(options, name) is not None]
    if mode != "i2v" and options.i2v_model:
        ignored.append("--i2v-model")
    if options.search_k == 1:
        ignored += [f"--{name.replace('_', '-')}" for name in ("search_steps", "search_clip")
                    if getattr(options, name) is not None]
    if mode not in ("anchor", "reuse") and options.overlap is not None:
        ignored.append("--overlap")
    ignored += [f"--{name.replace('_', '-')}" for name in ("anchor_steps", "anchor_release")
                if mode != "anchor" and getattr(options, name) is not None]
    if not options.compile and options.compile_mode != "default":
        ignored.append("--compile-mode")
    messages = [f"{option} is ignored: " + (
        "no --refine" if option.startswith("--refine") else
        f"--continue is {mode}" if option in ("--i2v-model", "--overlap", "--anchor-steps",
                                              "--anchor-release")
        else "no --compile" if option == "--compile-mode" else "--search-k 1")
        for option in ignored]
    for message in messages:
        logger.warning(message)
    return messages


def anchor_release(options: GenerateOptions, mode: str) -> float | None:
    """`ChunkSettings.anchor_release` for the options: `--anchor-release` when given; None
    (release by step count) when `--anchor-steps`, or in `anchor` mode `--reuse-guidance`, is
    given instead; else `continuation.ANCHOR_RELEASE`. Two of the three is a `UserError`."""
    from generate.continuation import ANCHOR_RELEASE

    given = [f"--{name.replace('_', '-')}" for name in
             ("anchor_release", "anchor_steps", "reuse_guidance")
             if getattr(options, name) is not None]
    if mode == "anchor" and len(given) > 1:
        raise UserError(f"{' and '.join(given)} all say when the anchor is released: give one "
                        "(--anchor-release by noise level, --anchor-steps or --reuse-guidance "
                        "by step count)")
    if options.anchor_release is not None:
        return options.anchor_release
    return None if given else ANCHOR_RELEASE


def _load(options: GenerateOptions):
    """Load the backbones and build the chunk generator and refiner the options ask for."""
    from generate.chunked import ChunkedGenerator, ChunkSettings, resolve_mode
    from generate.families import DEFAULT_MODEL, default_flow_shift, set_flow_shift
    from generate.loading import load_backbone, share_backbone, shared_components
    from generate.refine import Refiner
    from generate.search import default_search_steps, load_scorer

    load = dict(device=options.device, dtype=options.dtype, cpu_offload=options.cpu_offload,
                vae_tiling=options.vae_tiling, vae_slicing=options.vae_slicing,
                offload=options.offload, attention_backend=options.attention_backend,
                compile_mode=options.compile_mode if options.compile else None)
    model = options.model or DEFAULT_MODEL
    try:
        backbone = load_backbone(model, "t2v", loras=list(options.lora), **load)
    except UserError as error:
        if options.model:
            raise
        raise UserError(f"no --model given, and the default {error} (pass --model, or put "
                        f"{DEFAULT_MODEL} in the hub cache)") from None
    family = backbone.family
    i2v = None
    if options.continue_mode == "i2v":
        if not options.i2v_model:
            raise UserError("--continue i2v needs --i2v-model (an image-to-video pipeline)")
        # the text encoder, tokenizer and VAE are taken from the t2v pipeline where they are
        # the same files (not with offloading: each pipeline would hook the shared models)
        shared = {}
        if backbone.offload == "none":
            shared = shared_components(model, options.i2v_model, backbone.pipe)
        i2v = load_backbone(options.i2v_model, "i2v", components=shared, **load)
        if {"text_encoder", "tokenizer"} <= set(shared) and i2v.family is family:
            i2v.prompt_cache = backbone.prompt_cache  # the same encoder: the same embeddings
    mode = resolve_mode(options.continue_mode, backbone.temporal)
    warn_ignored(options, mode)
    overlap = options.overlap
    if overlap is None and mode == "anchor":  # L latents of a fresh causal sequence
        overlap = backbone.pixel_frames(family.overlap_latent_frames)
    elif overlap is None:
        overlap = family.overlap_latent_frames * backbone.temporal
    search_steps = options.search_steps
    if search_steps is None:
        search_steps = default_search_steps(options.steps)
    height, width = options.height or family.height, options.width or family.width
    flow_shift = options.flow_shift
    if flow_shift is None:
        flow_shift = default_flow_shift(family, height, width)
    for loaded in (backbone, i2v):
        if flow_shift is not None and loaded is not None:
            loaded.pipe.scheduler = set_flow_shift(loaded.pipe.scheduler, flow_shift)
    settings = ChunkSettings(
        frames=options.frames, chunk_frames=options.chunk_frames or family.chunk_frames,
        overlap=overlap, continue_mode=options.continue_mode, steps=options.steps,
        guidance=family.guidance if options.guidance is None else options.guidance,
        guidance_2=options.guidance_2,
        negative_prompt=(family.negative_prompt if options.negative_prompt is None
                         else options.negative_prompt),
        height=height, width=width, fps=options.fps or family.fps,
        noise_recycle=options.noise_recycle,
        reuse_guidance=0.4 if options.reuse_guidance is None else options.reuse_guidance,
        anchor_release=anchor_release(options, mode), anchor_steps=options.anchor_steps,
        colour_correction=options.colour_correction, search_k=options.search_k,
        search_steps=search_steps, crf=options.crf,
    )
    scorer = None
    if options.search_k > 1:  # loaded only when searching
        scorer = load_scorer(options.search_scorer, options.search_clip, backbone.device)
    generator = ChunkedGenerator(backbone, settings, i2v=i2v, scorer=scorer,
                                 bounded_heap=options.bounded_heap)
    refiner = None
    if options.refine:
        if options.refine_model in (None, model):  # no second copy of the weights
            v2v = share_backbone(backbone, "v2v")
        else:
            v2v = load_backbone(options.refine_model, "v2v", **load)
        refiner = Refiner(
            v2v, chunk_frames=options.refine_chunk or settings.chunk_frames,
            overlap=options.refine_overlap if options.refine_overlap is not None
            else (generator.overlap_latent or family.overlap_latent_frames) * backbone.temporal,
            steps=options.steps,
            strength=0.4 if options.refine_strength is None else options.refine_strength,
            guidance=settings.guidance, negative_prompt=settings.negative_prompt,
        )
    return backbone, generator, refiner


def memory_estimate(generator, refiner) -> dict[str, Any]:
    """The pre-run peak memory estimate of one chunk (see `generate/memory.py`)."""
    from generate.memory import estimate_peak

    backbones = [b for b in (generator.backbone, generator.i2v,
                             refiner.backbone if refiner else None) if b is not None]
    s = generator.settings
    return estimate_peak(backbones, generator.backbone.offload, s.chunk_frames, s.height,
                         s.width, s.guidance)


def scheduler_summary(scheduler) -> dict[str, Any]:
    """The scheduler a video was made with: its class and flow shift (None where it has
    none)."""
    config = scheduler.config
    shift = config.get("flow_shift") if config.get("use_flow_sigmas") else config.get("shift")
    return {"class": type(scheduler).__name__, "flow_shift": shift}


def _one_video(options, story, generator, refiner, state_dir: Path,
               estimate: dict | None = None) -> dict[str, Any]:
    """Generate (and refine) one story; return its json details."""
    out = Path(options.out)
    seed = options.seed if story.seed is None else story.seed
    mp4 = out / f"{story.id}.mp4"
    device = generator.backbone.device
    reset_peak_memory(device)
    started = time.perf_counter()
    # (refined, the chunk loop's MP4 is a step: OUT only ever holds the finished video)
    looped = state_dir / "unrefined.mp4" if refiner is not None else mp4
    details = generator(story, seed, looped, state_dir, resume=options.resume)
    if refiner is not None:
        details["refine"] = refiner(generator, state_dir, story, seed, mp4)
    seconds = time.perf_counter() - started
    settings = generator.settings
    info = {
        "id": story.id,
        "prompts": list(story.prompts),
        "seed": seed,
        "model": generator.backbone.source,
        "family": generator.backbone.family.name,
        "scheduler": scheduler_summary(generator.backbone.pipe.scheduler),
        "i2v_model": options.i2v_model,
        "settings": dataclasses.asdict(settings),
        "loras": generator.backbone.loras,
        "i2v_shared": generator.i2v.shared if generator.i2v else None,
        "offload": generator.backbone.offload,
        "memory_estimate": estimate,
        "frames": settings.frames,
        "width": settings.width,
        "height": settings.height,
        "fps": settings.fps,
        **details,
        "timings": {"total_seconds": round(seconds, 3),
                    "seconds_per_frame": round(seconds / settings.frames, 4)},
        **peak_memory(device),
    }
    atomic_write(out / f"{story.id}.json", json.dumps(info, indent=2, default=str) + "\n")
    return info


def _progress(total: int):
    """A rich progress bar over every denoising step of the run (previews included), with
    elapsed time and ETA, on stderr."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("steps"), TimeElapsedColumn(), TextColumn("ETA"),
                        TimeRemainingColumn(), console=Console(stderr=True),
                        disable=not total)  # (nothing left to do: no empty 0/0 bar)
    progress.add_task("generate", total=total)
    return progress


def generate_videos(options: GenerateOptions) -> dict[str, Any]:
    """Run `datakit generate`; return the run's stats (also written to `OUT/stats.json`)."""
    from generate.prompts import check_prompt_lengths, load_prompts

    run_started = time.time()
    # 1. Check inputs and load the models
    stories = load_prompts(options.prompts)
    backbone, generator, refiner = _load(options)
    check_prompt_lengths(stories, backbone.prompt_tokens, backbone.max_prompt_tokens)
    from generate.memory import describe

    estimate = memory_estimate(generator, refiner)
    print(describe(estimate, backbone.device), file=sys.stderr)
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    store = ManifestStore(out)
    done = store.recorded_keys((Status.OK.value,))
    state_root = out / STATE_DIR / "generate"
    processed = 0
    todo = [story for story in stories if story.id not in done]
    progress = _progress(len(todo) * generator.steps_per_video)
    generator.progress = lambda steps: progress.advance(0, steps)
    # 2. One video per story; a failure is recorded and the others go on
    with progress:
        for number, story in enumerate(todo, 1):
            processed += 1
            state_dir = state_root / story.id
            started = time.perf_counter()
            progress.update(0, description=f"video {number}/{len(todo)} {story.id}")
            try:
                info = _one_video(options, story, generator, refiner, state_dir, estimate)
            except KeyboardInterrupt:
                store.write_manifest()  # the videos finished so far, for whoever looks now
                raise
            except UserError:
                raise
            except Exception as error:  # one story's failure must not stop the others
                logger.warning("%s failed: %s: %s", story.id, type(error).__name__, error)
                logger.debug("%s failed", story.id, exc_info=True)
                store.commit([make_row(
                    story.id, Status.FAILED, source=story.where,
                    error=f"{type(error).__name__}: {error}", caption=" | ".join(story.prompts),
                    seconds=time.perf_counter() - started,
                )])
                continue
            mp4 = out / f"{story.id}.mp4"
            # 3. Check the video as soon as it is written
            if options.checks:
                from generate.checks import check_videos

                check_videos([mp4], out / "report")
            store.commit([make_row(
                story.id, Status.OK, source=story.where, caption=" | ".join(story.prompts),
                width=info["width"], height=info["height"], frames=info["frames"],
                fps=info["fps"],
                bytes=os.path.getsize(mp4), seconds=info["timings"]["total_seconds"],
                meta={k: info[k] for k in ("seed", "chunks", "chunk_starts", "trimmed_frames",
                                           "family", "peak_rss_mb")},
            )])
            shutil.rmtree(state_dir, ignore_errors=True)
    # 4. Manifest, stats and the report (every video checked in OUT, earlier runs' too)
    store.write_manifest()
    if options.checks:
        from generate.checks import load_results
        from generate.report import write_report

        results = load_results(out / "report")
        if results:
            write_report(results, out / "report")
    config = {k: str(v) if isinstance(v, Path) else v
              for k, v in dataclasses.asdict(options).items()}
    return write_stats(store, config, run_started, processed)
