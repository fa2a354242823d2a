"""`datakit caption`: classification videos to captioned clips."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from datakit.cli.options import (
    AppendOption,
    Engine,
    EngineOption,
    OutOption,
    OverwriteOption,
    QuietOption,
    RayAddressOption,
    RetryOption,
    SampleTimeoutOption,
    SeedOption,
    ShardBytesOption,
    ShardSizeOption,
    WatermarkClassifierThresholdOption,
    WatermarkDeviceOption,
    WatermarkModelOption,
    Watermarks,
    WatermarksOption,
    WatermarkThresholdOption,
    WorkersOption,
    check_source,
    command,
    default_workers,
    engine_options,
    exit_if_every_input_failed,
    exit_if_stopped,
    parse_bytes,
    parse_size,
    print_summary,
    watermark_config,
)
from datakit.io.errors import UserError, require_extra


class CaptionerName(str, Enum):
    label = "label"
    blip2 = "blip2"
    instructblip = "instructblip"
    minigpt4 = "minigpt4"
    vlm = "vlm"


class Decoding(str, Enum):
    reference = "reference"
    greedy = "greedy"
    beam = "beam"


WEIGHTS_FREE = "pass --captioner label for weights-free captions (the label in a sentence)"


class CaptionDtype(str, Enum):
    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


@command("caption")
def caption_command(
    src: Annotated[Path, typer.Argument(help="Videos: a class-folder tree ROOT/[split/]LABEL/"
                                        "CLIP.mp4 (Kinetics, Moments in Time), a folder with "
                                        "--annotations, one video file, or .tar shards with "
                                        "video members (re-caption).")],
    out: OutOption,
    captioner: Annotated[CaptionerName | None, typer.Option(
        help="blip2 (the default; Salesforce/blip2-opt-2.7b unless --model), instructblip, "
        "minigpt4, vlm (any transformers image-text-to-text chat model: Qwen2.5-VL, LLaVA "
        "...), or label (no weights: the label in a sentence, offline).",
        show_default=False)] = None,
    model: Annotated[str | None, typer.Option(
        help="Weights: a hub id or a local folder (for minigpt4, the folder described in "
        "docs/captioners.md).")] = None,
    revision: Annotated[str | None, typer.Option(help="Hub revision of --model.")] = None,
    keyframes: Annotated[int, typer.Option(help="Key frames captioned per clip.", min=1)] = 3,
    keyframe_mode: Annotated[str, typer.Option(
        help="uniform (at 0.1/0.5/0.9 of the clip), iframes (coded key frames only, fastest) "
        "or scene (one per segment between the largest content changes).")] = "uniform",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    dtype: Annotated[CaptionDtype, typer.Option(
        help="Weights dtype; auto = bf16 (or fp16) on CUDA, fp32 on CPU.")] = CaptionDtype.auto,
    batch_size: Annotated[int, typer.Option(
        help="Clips per model call (halved automatically on CUDA out-of-memory).", min=1)] = 8,
    workers: WorkersOption = 0,
    annotations: Annotated[list[Path] | None, typer.Option(
        help="Labels and clip times: a Kinetics CSV (label,youtube_id,time_start,time_end), "
        "a CSV with path and label columns, Moments in Time's csv, or VideoLT's video list and "
        "label list (repeat the option).")] = None,
    split: Annotated[str, typer.Option(
        help="Long videos: none (one sample per video), scenes (cut at shot boundaries) or "
        "fixed (pieces of --clip-seconds); each clip is a sample KEY__0000, KEY__0001 ...")]
    = "none",
    clip_seconds: Annotated[float, typer.Option(help="Longest clip when splitting.")] = 10.0,
    min_clip_seconds: Annotated[float, typer.Option(
        help="Shortest clip kept when splitting.")] = 2.0,
    fuse: Annotated[str, typer.Option(
        help="template (label + de-duplicated frame captions in one sentence) or llm (the "
        "captioner's language model summarises them).")] = "template",
    prompt: Annotated[str | None, typer.Option(
        help="Prompt for each key frame (vlm: for the clip), with {label}; default: the "
        "captioner's.")] = None,
    fuse_prompt: Annotated[str | None, typer.Option(
        help="Prompt for --fuse llm, with {label} and {captions}.")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(
        help="Longest caption, in tokens; default: the captioner's reference length (blip2 30, "
        "instructblip 256, minigpt4 300, vlm the model's or 128).", min=1)] = None,
    decoding: Annotated[Decoding, typer.Option(
        help="reference (each captioner's reference settings: LAVIS's beams for BLIP-2 and "
        "InstructBLIP, the MiniGPT-4 demo's sampling, the VLM's generation_config; sampling is "
        "seeded per clip), greedy, or beam (5 beams).")] = Decoding.reference,
    questions: Annotated[bool, typer.Option(
        "--questions", help="Ask every key frame several questions (the action, naming the "
        "label; the scene; the subjects; the camera) and fuse the answers (docs/caption.md).")]
    = False,
    question: Annotated[list[str] | None, typer.Option(
        metavar="TEXT",
        help="Your own question, with {label} (repeat the option; implies --questions).")]
    = None,
    trust_remote_code: Annotated[bool, typer.Option(
        help="Allow the checkpoint's own Python code (off: only transformers' classes).")]
    = False,
    backend: Annotated[str, typer.Option(help="transformers, or vllm (vlm only, when "
                                         "installed).")] = "transformers",
    max_size: Annotated[int | None, typer.Option(
        help="Longest side in pixels; larger videos are re-encoded down to it. H.264 MP4 "
        "inputs within it are stream-copied unchanged.", min=16)] = None,
    size: Annotated[str | None, typer.Option(
        help="Re-encode every clip to WIDTHxHEIGHT (centre crop).")] = None,
    fps: Annotated[float | None, typer.Option(help="Re-encode every clip to this frame rate.",
                                              min=0.1)] = None,
    crf: Annotated[int, typer.Option(help="x264 quality for re-encoded clips.", min=0, max=51)]
    = 18,
    preset: Annotated[str, typer.Option(help="x264 preset for re-encoded clips.")] = "medium",
    score_clip: Annotated[str | None, typer.Option(
        help="CLIP model (folder or hub id): add a caption-to-frames similarity column "
        "(clip_score) for filtering.")] = None,
    watermarks: WatermarksOption = Watermarks.flag,
    watermark_model: WatermarkModelOption = None,
    watermark_threshold: WatermarkThresholdOption = 0.5,
    watermark_classifier_threshold: WatermarkClassifierThresholdOption = 0.8,
    watermark_device: WatermarkDeviceOption = "auto",
    seed: SeedOption = 0,
    shard_size: ShardSizeOption = 1000,
    shard_bytes: ShardBytesOption = "",
    retry_failed: RetryOption = False,
    overwrite: OverwriteOption = False,
    append: AppendOption = False,
    sample_timeout: SampleTimeoutOption = None,
    engine: EngineOption = Engine.local,
    ray_address: RayAddressOption = None,
    gpus_per_worker: Annotated[float, typer.Option(
        help="--engine ray: GPUs each model actor asks for (e.g. 1, or 0.5 to share).",
        min=0)] = 0.0,
    model_workers: Annotated[int, typer.Option(
        help="--engine ray: model actors (each loads the model once); default 1.", min=1)]
    = 1,
    quiet: QuietOption = False,
) -> None:
    """Caption classification videos (Kinetics, Moments in Time, VideoLT) with the label
    fused into the prompt, into WebDataset shards.

    Key frames of each clip are captioned by a vision-language model whose prompt names the
    clip's class label, then fused with the label into one caption (the VidRD recipe). Writes
    OUT/shards/NNNNN.tar (KEY.mp4, KEY.txt, KEY.json), OUT/manifest.parquet (a row per input,
    failures included) and OUT/stats.json; a rerun resumes.

    With no --captioner, BLIP-2 (Salesforce/blip2-opt-2.7b) captions on --device auto;
    --captioner label needs no weights.

    Example: datakit caption kinetics/ --out out/ --keyframes 3 --batch-size 16 --dtype float16
    """
    from captioners.base import CaptionerConfig, captioner_class
    from captioners.pipeline import CaptionConfig, caption
    from captioners.questions import default_questions
    from datakit.run.pipeline import RunOptions

    check_source(src)
    name = (captioner or CaptionerName.blip2).value
    asked = tuple(question) if question else (
        default_questions(captioner_class(name).per_frame) if questions else None)
    try:
        config = CaptionConfig(
            keyframes=keyframes, keyframe_mode=keyframe_mode, split=split,
            clip_seconds=clip_seconds, min_clip_seconds=min_clip_seconds, max_size=max_size,
            size=parse_size(size) if size else None, fps=fps, crf=crf, preset=preset,
            watermark=watermark_config(watermarks, watermark_model, watermark_threshold,
                                       watermark_classifier_threshold, watermark_device),
        )
        captioner_config = CaptionerConfig(
            captioner=name, model=model, revision=revision, device=device,
            dtype=dtype.value, batch_size=batch_size, prompt=prompt, fuse=fuse,
            fuse_prompt=fuse_prompt, max_new_tokens=max_new_tokens,
            trust_remote_code=trust_remote_code, backend=backend, seed=seed,
            decoding=decoding.value, questions=asked,
        )
    except ValueError as error:
        raise UserError(str(error)) from None
    if name != "label" or score_clip:
        try:
            require_extra("caption", f"--captioner {name}" if name != "label"
                          else "--score-clip", "torch", "transformers")
        except UserError as error:
            if captioner is None:
                raise UserError(f"no --captioner: the default, {error}; or {WEIGHTS_FREE}") \
                    from None
            raise
    if name != "label":
        check_weights(name, model, revision, defaulted=captioner is None)
    options = RunOptions(
        workers=workers or default_workers(), shard_size=shard_size,
        shard_bytes=parse_bytes(shard_bytes), retry_failed=retry_failed, overwrite=overwrite,
        append=append, progress=not quiet, sample_timeout=sample_timeout,
    )
    options = engine_options(options, engine, ray_address, gpus_per_worker, model_workers)
    stats = caption(src, out, config, captioner_config, options,
                    annotations=[str(a) for a in annotations or []], score_clip=score_clip)
    print_summary(stats, out, "caption")
    exit_if_stopped(stats)
    exit_if_every_input_failed(stats)


def check_weights(name: str, model: str | None, revision: str | None, defaulted: bool) -> None:
    """Fail now, in one line, when the weights cannot load: a missing folder, or (no --model)
    a default hub id that is neither cached nor reachable, naming the weights-free mode."""
    from captioners.base import captioner_class, model_location
    from captioners.blip2 import hub_availability

    if model:
        model_location(model)
        return
    default = getattr(captioner_class(name), "default_model", None)
    if default is None:
        raise UserError(f"--captioner {name} needs --model (a hub id or a local folder)")
    reason = hub_availability(default, revision)
    if reason:
        which = "no --captioner: the default, blip2," if defaulted else f"--captioner {name}"
        raise UserError(f"{which} loads {default} when no --model is given, and it is "
                        f"{reason}; {WEIGHTS_FREE}, or give --model a local folder")
