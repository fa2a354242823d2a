"""`datakit generate`: long videos chunk by chunk on diffusers backbones."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from datakit.cli.options import (
    command,
    ignore_signals_while_exiting,
)
from datakit.io.errors import UserError, require_extra


class ContinueMode(str, Enum):
    auto = "auto"
    anchor = "anchor"
    reuse = "reuse"
    i2v = "i2v"
    none = "none"


class SearchScorer(str, Enum):
    clip = "clip"
    continuity = "continuity"


class Dtype(str, Enum):
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class Offload(str, Enum):
    none = "none"
    model = "model"
    sequential = "sequential"
    group = "group"


@command("generate")
def generate_command(
    prompts: Annotated[Path, typer.Option(help="prompts.txt (one prompt per line; blank and # "
                                          "lines skipped) or story.jsonl ({\"id\", \"prompts\": "
                                          "[one per chunk], \"seed\"} per line).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: ID.mp4, ID.json, "
                                      "report/, manifest.parquet (a rerun skips done IDs).")],
    model: Annotated[str | None, typer.Option(
        help="Text-to-video diffusers pipeline: hub id or local folder (Wan, CogVideoX, "
        "LTX-Video, ModelScope). Default: Wan-AI/Wan2.1-T2V-1.3B-Diffusers (fits one 24 GB "
        "GPU).")] = None,
    frames: Annotated[int, typer.Option(help="Exact frames per video (chunks are generated "
                                        "whole and the last one trimmed).", min=1)] = 49,
    chunk_frames: Annotated[int | None, typer.Option(
        help="Frames per chunk; must fit the model's rule. Recommended: Wan 2.1/2.2 33 or 81 "
        "(4k+1), CogVideoX 1.0 49 (8k+1: its VAE decodes latents in pairs; 1.5 is not "
        "supported as --model yet), LTX-Video 97 or 121 (8k+1), ModelScope 16. Default: the "
        "model family's.")] = None,
    overlap: Annotated[int | None, typer.Option(
        help="Pixel frames that continue the previous chunk. anchor: its last O frames, "
        "re-encoded (1 + a multiple of the temporal compression: Wan/CogVideoX 5, 9; LTX 9); "
        "reuse: a multiple of the temporal compression (Wan 4, 8). Default: 2 latent frames "
        "(Wan 5 frames, ModelScope 4).")] = None,
    continue_mode: Annotated[ContinueMode, typer.Option(
        "--continue", help="How chunk i+1 continues chunk i: anchor (pin its first latents to "
        "the re-encoded end of chunk i; right for causal VAEs), reuse (VidRD latent reuse, "
        "exact on ModelScope; it seeds each chunk with the previous one's noise and latents "
        "in reversed frame order, so motion tends to rewind after a seam), i2v "
        "(image-to-video from the last frame, needs --i2v-model), "
        "none (independent); auto = anchor on Wan/CogVideoX/LTX, reuse on ModelScope.")]
    = ContinueMode.auto,
    i2v_model: Annotated[str | None, typer.Option(
        help="Image-to-video pipeline for --continue i2v.")] = None,
    steps: Annotated[int, typer.Option(help="Denoising steps per chunk.", min=1)] = 50,
    guidance: Annotated[float | None, typer.Option(
        help="Classifier-free guidance scale (default: the family's).")] = None,
    negative_prompt: Annotated[str | None, typer.Option(
        help="Negative prompt (default: Wan's published one on Wan, which names static, still "
        "picture, walking backwards, ...; none elsewhere; \"\" for none).")] = None,
    guidance_2: Annotated[float | None, typer.Option(
        help="Wan 2.2 A14B: guidance scale of the low-noise expert, transformer_2 "
        "(diffusers' guidance_scale_2; default: --guidance).")] = None,
    flow_shift: Annotated[float | None, typer.Option(
        help="Wan: the scheduler's flow shift (default: 3.0 at 480p, 5.0 at 720p, as "
        "diffusers' Wan example).")] = None,
    height: Annotated[int | None, typer.Option(help="Height in pixels.")] = None,
    width: Annotated[int | None, typer.Option(help="Width in pixels.")] = None,
    fps: Annotated[int | None, typer.Option(help="Frame rate of the MP4.", min=1)] = None,
    seed: Annotated[int, typer.Option(help="Seed; fixes every frame (a story's own seed "
                                      "wins).", min=0)] = 0,
    noise_recycle: Annotated[float, typer.Option(
        help="VidRD alpha: weight of the past noise in past-dependent noise.")] = 4.0,
    reuse_guidance: Annotated[float | None, typer.Option(
        help="VidRD beta: overlap frame m is pinned for (O-m)*(T/O)*beta steps (default "
        "0.4). anchor: given instead of --anchor-release, it stages the anchor by step count "
        "the same way.")] = None,
    anchor_release: Annotated[float | None, typer.Option(
        help="anchor: keep the anchor latents pinned until the latents' signal fraction a "
        "(x = a*clean + b*noise: 1 - sigma on flow matching, sqrt(alpha_bar) on DDIM/DPM) "
        "reaches this (default 0.9, a low noise level; 1 = to the end). --anchor-steps or "
        "--reuse-guidance release by step count instead: give one of the three.")] = None,
    anchor_steps: Annotated[int | None, typer.Option(
        help="anchor: release by step count: the anchor latent next to the new frames is "
        "pinned this many of --steps, the others staged below it (instead of "
        "--anchor-release).", min=0)] = None,
    colour_correction: Annotated[float | None, typer.Option(
        help="AdaIN factor pulling each chunk's latent colour statistics toward the first "
        "chunk's (0 = off; default 0.25 for one-prompt videos, 0 for multi-prompt stories, "
        "whose chunks may change scene).")] = None,
    search_k: Annotated[int, typer.Option(help="Candidate noises per chunk for k-step search "
                                          "(1 = off).", min=1)] = 5,
    search_steps: Annotated[int | None, typer.Option(
        help="Steps of each candidate's preview (default: 3, or half of --steps when that is "
        "fewer).", min=1)] = None,
    search_scorer: Annotated[SearchScorer, typer.Option(
        help="clip: CLIP similarity of the chunk's first kept frame to the previous chunk's "
        "last frame plus 2.5 x the frames' similarity to the chunk's prompt (offline without "
        "the model it falls back to continuity, with a notice); continuity: weights-free, how "
        "the chunk's first kept frame joins it.")]
    = SearchScorer.clip,
    search_clip: Annotated[str | None, typer.Option(
        help="CLIP model for --search-scorer clip: hub id or folder (default "
        "openai/clip-vit-base-patch32).")] = None,
    refine: Annotated[bool, typer.Option(help="SDEdit the whole video in overlapping windows "
                                         "with randomized blending (Wan, CogVideoX).")] = False,
    refine_model: Annotated[str | None, typer.Option(
        help="Video-to-video pipeline for --refine (default: --model's V2V class).")] = None,
    refine_chunk: Annotated[int | None, typer.Option(
        help="Refinement window in frames (default: --chunk-frames).")] = None,
    refine_overlap: Annotated[int | None, typer.Option(
        help="Refinement window overlap in frames (default: --overlap).")] = None,
    refine_strength: Annotated[float | None, typer.Option(
        help="SDEdit strength: fraction of the schedule re-run (default 0.4).")] = None,
    device: Annotated[str, typer.Option(help="auto (CUDA when available, else cpu), cpu, "
                                        "cuda, cuda:N or mps.")] = "auto",
    dtype: Annotated[Dtype | None, typer.Option(
        help="Weights dtype (default: bfloat16 on CUDA, float32 elsewhere; Wan's VAE and "
        "image encoder stay float32).")] = None,
    cpu_offload: Annotated[bool, typer.Option(help="The same as --offload model.")] = False,
    offload: Annotated[Offload, typer.Option(
        help="Keep weights on the CPU and move them to the GPU as they run (needs --device "
        "cuda): model = one whole model at a time; sequential = one layer at a time (least "
        "memory, slowest); group = layers with the next ones copied on a CUDA stream while "
        "the current ones compute.")] = Offload.none,
    attention_backend: Annotated[str | None, typer.Option(
        metavar="NAME", help="diffusers attention backend for the transformer (Wan, LTX): "
        "native (PyTorch SDPA), flash, sage, xformers, ... (those need their packages).")] = None,
    lora: Annotated[list[str] | None, typer.Option(
        metavar="PATH[:SCALE]", help="LoRA for --model: a .safetensors file, a folder or a hub "
        "id, with an optional :SCALE (default 1.0); repeat for several.")] = None,
    compile: Annotated[bool, typer.Option(
        help="torch.compile the transformer (the first chunk compiles: minutes on a real "
        "model).")] = False,
    compile_mode: Annotated[str, typer.Option(
        metavar="MODE", help="torch.compile mode for --compile: default, reduce-overhead, "
        "max-autotune or max-autotune-no-cudagraphs.")] = "default",
    vae_tiling: Annotated[bool, typer.Option(help="Decode in spatial tiles.")] = False,
    vae_slicing: Annotated[bool, typer.Option(help="Decode one sample at a time.")] = False,
    bounded_heap: Annotated[bool, typer.Option(
        "--bounded-heap/--fast-heap", help="Keep host memory flat over chunks (glibc); "
        "--fast-heap is about 25% faster when the model runs on the CPU but its memory creeps "
        "up over the first chunks.")] = True,
    resume: Annotated[bool, typer.Option(help="Continue interrupted videos from their last "
                                         "finished chunk (bit-identical result).")] = False,
    crf: Annotated[int, typer.Option(help="x264 quality: 0 lossless .. 51 worst.",
                                     min=0, max=51)] = 18,
    checks: Annotated[bool, typer.Option(help="Run the checks on every video into "
                                         "OUT/report/.")] = True,
) -> None:
    """Generate long videos chunk by chunk on a diffusers video pipeline.

    Example: datakit generate --prompts prompts.txt --frames 241 --out samples/
    (Wan 2.1 T2V 1.3B, 33-frame chunks anchored on 5 frames, 480x832, on the GPU when there
    is one; --model, --chunk-frames, --overlap, --height, --width, --device change them)
    """
    from generate.runner import GenerateOptions, generate_videos

    require_extra("generate", "datakit generate", "torch", "diffusers", "transformers")
    if not prompts.is_file():
        raise UserError(f"{prompts}: no such prompts file")
    options = GenerateOptions(
        prompts=prompts, model=model, out=out, frames=frames, chunk_frames=chunk_frames,
        overlap=overlap, continue_mode=continue_mode.value, i2v_model=i2v_model, steps=steps,
        guidance=guidance, negative_prompt=negative_prompt, guidance_2=guidance_2,
        flow_shift=flow_shift, height=height, width=width,
        fps=fps, seed=seed, noise_recycle=noise_recycle, reuse_guidance=reuse_guidance,
        anchor_release=anchor_release, anchor_steps=anchor_steps,
        colour_correction=colour_correction, search_k=search_k, search_steps=search_steps,
        search_scorer=search_scorer.value,
        search_clip=search_clip, refine=refine,
        refine_model=refine_model, refine_chunk=refine_chunk, refine_overlap=refine_overlap,
        refine_strength=refine_strength, device=device,
        dtype=dtype.value if dtype else None,
        cpu_offload=cpu_offload, vae_tiling=vae_tiling, vae_slicing=vae_slicing,
        offload=offload.value, attention_backend=attention_backend, lora=tuple(lora or ()),
        compile=compile, compile_mode=compile_mode, bounded_heap=bounded_heap,
        resume=resume, crf=crf, checks=checks,
    )
    try:
        stats = generate_videos(options)
    except KeyboardInterrupt:  # (typer would end the command silently with 130)
        ignore_signals_while_exiting()
        typer.echo(f"generate: stopped by Ctrl-C; finished videos are in {out}. Rerun the "
                   "same command with --resume to continue the interrupted video from its "
                   "last saved chunk (without --resume it starts over).", err=True)
        raise typer.Exit(130) from None
    status = stats["status"]
    typer.echo(f"generate: {status['ok']} ok, {status['failed']} failed; videos, json and "
               f"manifest.parquet in {out}", err=True)
    if status["failed"]:
        raise typer.Exit(1)
