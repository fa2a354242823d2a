"""The `datakit` command line: thin adapters over library functions.

Heavy libraries (torch, diffusers, cv2, av) are imported inside the commands, so `--help`
starts fast.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from datakit.errors import UserError, require_extra

app = typer.Typer(
    name="datakit",
    help="Build text-to-video training data as WebDataset shards, and generate long videos.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # click's plain help: option names never cut at 80 columns
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"datakit {version('datakit')}")
        except PackageNotFoundError:
            typer.echo("datakit (not installed as a package)")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Build text-to-video training data as WebDataset shards, and generate long videos."""


def command(name: str, **kwargs) -> Callable[[Callable], Callable]:
    """Register a command whose `UserError`s end as one line on stderr and their exit code."""

    def register(function: Callable) -> Callable:
        @functools.wraps(function)
        def run(*args, **kw):
            try:
                return function(*args, **kw)
            except UserError as error:
                typer.echo(f"error: {error}", err=True)
                raise typer.Exit(error.exit_code) from None

        app.command(name, **kwargs)(run)
        return function

    return register

# Options shared by the shard-writing pipelines.
OutOption = Annotated[Path, typer.Option("--out", "-o", help="Output folder (created; a rerun "
                                         "on the same folder resumes).")]
WorkersOption = Annotated[int, typer.Option(help="Worker processes (default: the number of "
                                            "cores; 1 runs everything in this process).",
                                            min=0)]
ShardSizeOption = Annotated[int, typer.Option(help="Samples per shard.", min=1)]
ShardBytesOption = Annotated[str, typer.Option(
    help="Also start a new shard once a shard reaches this size, e.g. 256MB or 1GB.")]
RetryOption = Annotated[bool, typer.Option(help="Redo inputs an earlier run recorded as failed.")]
OverwriteOption = Annotated[bool, typer.Option(
    help="Delete datakit's earlier outputs in --out first instead of resuming.")]
class Engine(str, Enum):
    local = "local"
    ray = "ray"


EngineOption = Annotated[Engine, typer.Option(
    help="local (a process pool on this machine) or ray (Ray Data: this machine, or a "
    "cluster with --ray-address; pip install 'datakit[ray]').")]
RayAddressOption = Annotated[str | None, typer.Option(
    help="--engine ray: the cluster to join ('auto' for the one this machine belongs to); "
    "default: start Ray here with --workers CPUs.")]
SampleTimeoutOption = Annotated[float | None, typer.Option(
    help="Seconds one input may take (a decoder that hangs): past it the input is failed "
    "as timed out, its worker killed, and the run goes on. Local engine.", min=0.1)]
AppendOption = Annotated[bool, typer.Option(
    help="Add this SRC's inputs to an --out made from another SRC (refused without it).")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
SeedOption = Annotated[int, typer.Option(help="Seed for every random choice (with the key).",
                                          min=0)]


class Watermarks(str, Enum):
    keep = "keep"
    flag = "flag"
    strip = "strip"
    drop = "drop"


# Options shared by every pipeline that checks for watermarks.
WatermarksOption = Annotated[Watermarks, typer.Option(
    help="What to do with watermarks: keep (do not check), flag (record watermark_score and "
    "watermark_box in the json and manifest), strip (remove the mark), drop (skip the sample "
    "with status watermarked).")]
WatermarkModelOption = Annotated[str | None, typer.Option(
    help="LAION watermark classifier (efficientnet_b3a weights: .safetensors, or .pt read "
    "with weights_only; a file or a folder holding one); without it, weights-free "
    "heuristics only.")]
WatermarkThresholdOption = Annotated[float, typer.Option(
    help="Heuristic score (0..1) at which a mark counts as found.", min=0.0, max=1.0)]
WatermarkClassifierThresholdOption = Annotated[float, typer.Option(
    help="Classifier pwatermark at which an image counts as watermarked (LAION used 0.8; "
    "0.5 flags ordinary text).", min=0.0, max=1.0)]
WatermarkDeviceOption = Annotated[str, typer.Option(
    metavar="DEVICE", help="Where the watermark classifier runs: auto (CUDA when there is "
    "one), cpu, cuda, cuda:N. Only used with --watermark-model.")]


def watermark_config(action: Watermarks, model: str | None, threshold: float,
                     classifier_threshold: float, device: str = "auto"):
    """The `WatermarkConfig` for the shared watermark options; bad values are UserErrors."""
    from synthesize.watermark import WatermarkConfig

    if model is not None:
        require_extra("caption", "--watermark-model", "torch")
    try:
        return WatermarkConfig(action=action.value, model=model, threshold=threshold,
                               classifier_threshold=classifier_threshold, device=device)
    except ValueError as error:
        raise UserError(str(error)) from None


def parse_colour(text: str, option: str = "--background") -> tuple[int, int, int]:
    """'grey', '#808080' or '128,128,128' -> (128, 128, 128)."""
    names = {"grey": (128, 128, 128), "gray": (128, 128, 128), "black": (0, 0, 0),
             "white": (255, 255, 255)}
    value = text.strip().lower()
    if value in names:
        return names[value]
    if re.fullmatch(r"#[0-9a-f]{6}", value):
        return tuple(int(value[i:i + 2], 16) for i in (1, 3, 5))
    parts = value.split(",")
    if len(parts) == 3 and all(p.strip().isdigit() and int(p) <= 255 for p in parts):
        return tuple(int(p) for p in parts)
    raise UserError(f"{option}: expected grey, black, white, #RRGGBB or R,G,B (0..255), "
                    f"got {text!r}")


def parse_size(text: str, option: str = "--size") -> tuple[int, int]:
    """'512x320' -> (512, 320); both even and at least 16."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise UserError(f"{option}: expected WIDTHxHEIGHT such as 512x320, got {text!r}")
    width, height = int(match[1]), int(match[2])
    if width < 16 or height < 16 or width % 2 or height % 2:
        raise UserError(f"{option}: width and height must be even and at least 16, got {text!r}")
    return width, height


def parse_bytes(text: str | None, option: str = "--shard-bytes") -> int | None:
    """'256MB' -> 256000000, '1GiB' -> 1073741824; empty -> None."""
    if not text:
        return None
    units = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
             "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = units.get(match[2].lower()) if match else None
    size = int(float(match[1]) * unit) if unit else 0
    if size < 1:
        raise UserError(f"{option}: expected a size such as 256MB or 1GiB, got {text!r}")
    return size


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def engine_options(options, engine: Engine, address: str | None, gpus: float = 0.0,
                   model_workers: int = 1):
    """`RunOptions` with the engine settings; Ray's options need Ray installed."""
    import dataclasses

    if engine is Engine.ray:
        require_extra("ray", "--engine ray", "ray")
        if options.sample_timeout is not None:
            raise UserError("--sample-timeout works with the local engine (Ray retries and "
                            "times out tasks with its own settings)")
    elif address or gpus or model_workers != 1:
        raise UserError("--ray-address, --gpus-per-worker and --model-workers need --engine ray")
    return dataclasses.replace(options, engine=engine.value, ray_address=address,
                               gpus_per_worker=gpus, model_workers=model_workers)


def check_source(src: Path) -> None:
    if not src.exists():
        raise UserError(f"{src}: no such file or folder")


def print_summary(stats: dict, out: Path, title: str) -> None:
    """Counts by status, the commonest errors and where the outputs are."""
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    table = Table(title=title, show_header=True)
    table.add_column("status")
    table.add_column("rows", justify="right")
    for status, count in stats["status"].items():
        table.add_row(status, str(count))
    console.print(table)
    errors = list(stats["errors"].items())
    shown = errors[:10]
    kinds = stats.get("error_kinds", len(errors))
    if errors:
        which = f"the {len(shown)} most common of {kinds} kinds" if kinds > len(shown) else \
            "by kind"
        console.print(f"reasons ({which}; every row's reason is in the manifest's error "
                      "column):")
    for error, count in shown:
        console.print(f"  {count} x {error}")
    run = stats["run"]
    console.print(
        f"this run: {run['processed']} inputs in {run['seconds']:.1f} s, start-up included "
        f"({run['per_second'] or 0:.2f}/s); {stats.get('resumed_keys', 0)} keys were already "
        "done"
    )
    for note, count in (stats.get("notes") or {}).items():
        console.print(f"  note: {count} x {note} (the manifest's notes column says which)")
    changed = stats.get("changed_inputs")
    if changed:
        console.print(f"[yellow]{changed['count']} input(s) changed since they were written "
                      f"(e.g. {changed['examples'][0]}); they were not redone: --overwrite "
                      "redoes everything[/]")
    if stats.get("redone_from_damaged_shards"):
        console.print(f"[yellow]{stats['redone_from_damaged_shards']} sample(s) of damaged "
                      "shards were redone[/]")
    if stats.get("interrupted"):
        console.print(f"[yellow]stopped by {stats.get('stopped_by', 'a signal')}: rerun the "
                      "same command to resume[/]")
    console.print(f"shards: {out / 'shards'}  manifest: {out / 'manifest.parquet'}  "
                  f"stats: {out / 'stats.json'}")


def exit_if_stopped(stats: dict) -> None:
    """A run stopped by SIGINT or SIGTERM exits 128 + the signal (130, 143), as shells expect."""
    import signal

    name = stats.get("stopped_by")
    if stats.get("interrupted") and name:
        _ignore_signals_while_exiting()  # the user's second Ctrl-C has nothing left to stop
        raise typer.Exit(128 + signal.Signals[name].value)


@command("pan-zoom")
def pan_zoom_command(
    src: Annotated[Path, typer.Argument(help="Image folder (recursive; NAME.txt beside an "
                                        "image is its caption), img2dataset/LAION .tar shards, "
                                        "or a CSV/parquet list with a path column.")],
    out: OutOption,
    frames: Annotated[int, typer.Option(help="Frames per clip.", min=2)] = 16,
    fps: Annotated[float, typer.Option(help="Frames per second.", min=0.1)] = 8.0,
    size: Annotated[str, typer.Option(help="Output size WIDTHxHEIGHT (even numbers).")]
    = "512x320",
    clips_per_image: Annotated[int, typer.Option(
        help="Clips per image, the motions spread over them (repeating once all are used); "
        "keys get a _c0, _c1 ... suffix when more than 1.", min=1)] = 1,
    motions: Annotated[str, typer.Option(
        help="Comma-separated motions or groups: pan-left, pan-right, pan-up, pan-down, "
        "zoom-in, zoom-out, diagonal-up-left, diagonal-up-right, diagonal-down-left, "
        "diagonal-down-right, pan-zoom; groups pan, zoom, diagonal, combined, all.")] = "all",
    zoom_range: Annotated[tuple[float, float], typer.Option(
        metavar="MIN,MAX", help="Zoom reached at the close end of a zoom, drawn per clip "
        "(1.0 = the whole image's width or height); '1.1,1.25' or '1.1 1.25'.")]
    = (1.1, 1.25),
    speed_range: Annotated[tuple[float, float], typer.Option(
        metavar="MIN,MAX", help="Pan speed in frame widths per second, drawn per clip; "
        "'0.05,0.15' or '0.05 0.15'. Capped where the image leaves less room (the summary "
        "says how often; the json has the speed used).")] = (0.05, 0.15),
    easing: Annotated[str, typer.Option(
        help="Camera acceleration: linear, ease-in-out, ease-in, ease-out.")] = "ease-in-out",
    max_upscale: Annotated[float, typer.Option(
        help="Largest upscale allowed; smaller images are recorded as skipped.")] = 2.0,
    max_pixels: Annotated[int, typer.Option(
        help="Images with more pixels are refused as decompression bombs (raise it for "
        "large scans and panoramas).", min=1)] = 100_000_000,
    background: Annotated[str, typer.Option(
        help="Colour under transparent images: a name (grey, black, white), #RRGGBB or "
        "R,G,B.")] = "grey",
    motion_caption: Annotated[bool, typer.Option(
        help="Append the camera motion to the caption, e.g. 'The camera pans left.'")] = True,
    crf: Annotated[int, typer.Option(help="x264 quality: 0 lossless .. 51 worst.",
                                     min=0, max=51)] = 18,
    preset: Annotated[str, typer.Option(help="x264 preset, ultrafast .. veryslow.")]
    = "medium",
    seed: SeedOption = 0,
    watermarks: WatermarksOption = Watermarks.flag,
    watermark_model: WatermarkModelOption = None,
    watermark_threshold: WatermarkThresholdOption = 0.5,
    watermark_classifier_threshold: WatermarkClassifierThresholdOption = 0.8,
    watermark_device: WatermarkDeviceOption = "auto",
    workers: WorkersOption = 0,
    shard_size: ShardSizeOption = 1000,
    shard_bytes: ShardBytesOption = "",
    retry_failed: RetryOption = False,
    overwrite: OverwriteOption = False,
    append: AppendOption = False,
    sample_timeout: SampleTimeoutOption = None,
    engine: EngineOption = Engine.local,
    ray_address: RayAddressOption = None,
    quiet: QuietOption = False,
) -> None:
    """Turn still images into short clips with a smooth simulated camera.

    Each clip follows a camera path (pan, zoom, diagonal or pan+zoom) drawn per clip from
    --seed, rendered with sub-pixel precision and written as H.264 MP4 into WebDataset
    shards (OUT/shards/NNNNN.tar: KEY.mp4, KEY.txt, KEY.json), with OUT/manifest.parquet (a
    row per input, failures included) and OUT/stats.json.

    Example: datakit pan-zoom laion/ --out out/ --frames 16 --fps 8 --size 512x320 --seed 0
    """
    from datakit.pipeline import RunOptions
    from synthesize.pan_zoom import PanZoomConfig, pan_zoom, parse_motions

    check_source(src)
    width, height = parse_size(size)
    marks = watermark_config(watermarks, watermark_model, watermark_threshold,
                             watermark_classifier_threshold, watermark_device)
    if watermarks in (Watermarks.strip, Watermarks.drop) and watermark_model is None:
        typer.echo(f"warning: --watermarks {watermarks.value} on stills without "
                   "--watermark-model acts on the weights-free still heuristic, which flags "
                   "many clean, busy photos (precision 0.625 on bench/watermark.py): try "
                   "--watermarks flag first, or pass LAION's classifier", err=True)
    try:
        config = PanZoomConfig(
            width=width, height=height, frames=frames, fps=fps,
            clips_per_image=clips_per_image, motions=parse_motions(motions),
            zoom_range=zoom_range, speed_range=speed_range, easing=easing,
            max_upscale=max_upscale, max_pixels=max_pixels,
            background=parse_colour(background), motion_caption=motion_caption,
            seed=seed, crf=crf,
            preset=preset, watermark=marks,
        )
    except ValueError as error:
        raise UserError(str(error)) from None
    options = RunOptions(
        workers=workers or default_workers(), shard_size=shard_size,
        shard_bytes=parse_bytes(shard_bytes), retry_failed=retry_failed, overwrite=overwrite,
        append=append, progress=not quiet, sample_timeout=sample_timeout,
    )
    options = engine_options(options, engine, ray_address)
    stats = pan_zoom(src, out, config, options)
    print_summary(stats, out, "pan-zoom")
    exit_if_stopped(stats)


class CaptionerName(str, Enum):
    label = "label"
    blip2 = "blip2"
    instructblip = "instructblip"
    minigpt4 = "minigpt4"
    vlm = "vlm"


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
    captioner: Annotated[CaptionerName, typer.Option(
        help="label (no weights, the offline default), blip2, instructblip, minigpt4, or vlm "
        "(any transformers image-text-to-text chat model: Qwen2.5-VL, LLaVA ...).")]
    = CaptionerName.label,
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
    max_new_tokens: Annotated[int, typer.Option(help="Longest caption, in tokens.", min=1)]
    = 40,
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

    Example: datakit caption kinetics/ --out out/ --captioner blip2 --model
    Salesforce/blip2-opt-2.7b --keyframes 3 --batch-size 16 --device cuda --dtype float16
    """
    from captioners.base import CaptionerConfig
    from captioners.pipeline import CaptionConfig, caption
    from datakit.pipeline import RunOptions

    check_source(src)
    try:
        config = CaptionConfig(
            keyframes=keyframes, keyframe_mode=keyframe_mode, split=split,
            clip_seconds=clip_seconds, min_clip_seconds=min_clip_seconds, max_size=max_size,
            size=parse_size(size) if size else None, fps=fps, crf=crf, preset=preset,
            watermark=watermark_config(watermarks, watermark_model, watermark_threshold,
                                       watermark_classifier_threshold, watermark_device),
        )
        captioner_config = CaptionerConfig(
            captioner=captioner.value, model=model, revision=revision, device=device,
            dtype=dtype.value, batch_size=batch_size, prompt=prompt, fuse=fuse,
            fuse_prompt=fuse_prompt, max_new_tokens=max_new_tokens,
            trust_remote_code=trust_remote_code, backend=backend, seed=seed,
        )
    except ValueError as error:
        raise UserError(str(error)) from None
    if captioner_config.captioner != "label" or score_clip:
        require_extra("caption", f"--captioner {captioner.value}" if captioner.value != "label"
                      else "--score-clip", "torch", "transformers")
    if captioner_config.captioner != "label":
        from captioners.base import model_location

        if not model:
            raise UserError(f"--captioner {captioner.value} needs --model (a hub id or a "
                            "local folder)")
        model_location(model)  # a missing folder fails now, not at the first batch
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


@command("watermark")
def watermark_command(
    src: Annotated[Path, typer.Argument(help="A .tar shard or a folder of shards (KEY.mp4 "
                                        "samples) to re-process; with --show, one video or "
                                        "image file.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder for the "
                                             "re-processed shards (same keys).")] = None,
    show: Annotated[Path | None, typer.Option(help="Write a PNG of what the detector found "
                                              "in the one file SRC (mask in red, box) and "
                                              "print the score; writes no shards.")] = None,
    watermarks: WatermarksOption = Watermarks.strip,
    watermark_model: WatermarkModelOption = None,
    watermark_threshold: WatermarkThresholdOption = 0.5,
    watermark_classifier_threshold: WatermarkClassifierThresholdOption = 0.8,
    watermark_device: WatermarkDeviceOption = "auto",
    crf: Annotated[int, typer.Option(help="x264 quality for clips whose pixels change.",
                                     min=0, max=51)] = 18,
    preset: Annotated[str, typer.Option(help="x264 preset for clips whose pixels change.")]
    = "medium",
    workers: WorkersOption = 0,
    shard_size: ShardSizeOption = 1000,
    shard_bytes: ShardBytesOption = "",
    retry_failed: RetryOption = False,
    overwrite: OverwriteOption = False,
    quiet: QuietOption = False,
) -> None:
    """Find watermarks in existing shards and flag, strip or drop them into new shards.

    Each sample keeps its key and files; the json gains watermark_score, watermark_box and
    watermark_action, and OUT/manifest.parquet gets the same columns. Clips whose pixels
    change (strip) are re-encoded; the others keep their mp4 bytes.

    Examples: datakit watermark out/shards/ --out clean/ --watermarks strip;
    datakit watermark clip.mp4 --show mask.png
    """
    from datakit.pipeline import RunOptions
    from datakit.video import X264_PRESETS

    check_source(src)
    config = watermark_config(watermarks, watermark_model, watermark_threshold,
                              watermark_classifier_threshold, watermark_device)
    if show is not None:
        _show_watermark(src, show, config)
        return
    if out is None:
        raise UserError("--out is required to re-process shards (or use --show FILE.png)")
    if preset not in X264_PRESETS:
        raise UserError(f"--preset must be one of {', '.join(X264_PRESETS)}, got {preset!r}")
    from synthesize.watermark import watermark_shards

    options = RunOptions(
        workers=workers or default_workers(), shard_size=shard_size,
        shard_bytes=parse_bytes(shard_bytes), retry_failed=retry_failed, overwrite=overwrite,
        progress=not quiet,
    )
    stats = watermark_shards(src, out, config, options, crf=crf, preset=preset)
    print_summary(stats, out, "watermark")
    exit_if_stopped(stats)


def _show_watermark(src: Path, show: Path, config) -> None:
    """Detect in one video or image file, write the picture, print the finding."""
    import io
    import json

    from PIL import Image

    from datakit.atomic import atomic_write
    from datakit.images import ImageError, load_image
    from datakit.video import VideoError, read_frames
    from manifests.sources import IMAGE_EXTENSIONS
    from synthesize.watermark import describe, detect_video, load_classifier, show_detection

    if not src.is_file():
        raise UserError(f"{src}: --show needs one video or image file")
    try:
        if src.suffix.lower() in IMAGE_EXTENSIONS:
            frames = load_image(src)[None]
        else:
            frames = read_frames(src)
    except (ImageError, VideoError) as error:
        raise UserError(f"{src}: {error}") from None
    if not len(frames):
        raise UserError(f"{src}: no frames")
    detection = detect_video(frames, config, load_classifier(config))
    buffer = io.BytesIO()
    Image.fromarray(show_detection(frames, detection)).save(buffer, format="PNG")
    try:
        atomic_write(show, buffer.getvalue())
    except OSError as error:
        raise UserError(f"{show}: cannot write ({error.strerror or error})") from None
    typer.echo(json.dumps({"file": str(src), **describe(detection), "picture": str(show)},
                          default=str))


shards_app = typer.Typer(help="Inspect and check WebDataset shards.", no_args_is_help=True)
app.add_typer(shards_app, name="shards")


@shards_app.command("verify")
def shards_verify_command(
    out: Annotated[Path, typer.Argument(help="A datakit output folder (holds shards/ and "
                                        "manifest.parquet).")],
    decode: Annotated[bool, typer.Option(help="Decode every mp4 (slower, thorough).")] = True,
    repair: Annotated[bool, typer.Option(
        help="Delete shards that do not read back and mark their samples lost, so that "
        "rerunning the command that made OUT redoes them.")] = False,
) -> None:
    """Read every shard with webdataset, decode every mp4 with decord, check frame counts,
    that shards and manifest agree and that the run finished. Exits 1 on any problem."""
    from rich.console import Console
    from rich.table import Table

    from datakit.shards import ShardWriter, verify_shards
    from manifests.store import ManifestStore

    if not (out / "shards").is_dir():
        typer.echo(f"error: {out}: no shards/ folder (not a datakit output?)", err=True)
        raise typer.Exit(2)
    if repair:
        store = ManifestStore(out)
        lost = ShardWriter(out, store).lost_keys
        store.write_manifest()
        typer.echo(f"repair: {len(lost)} sample(s) of damaged shards marked lost; rerun the "
                   "command that made this output to redo them" if lost
                   else "repair: every committed shard reads back", err=True)
    report = verify_shards(out, decode=decode)
    console = Console()
    table = Table(title=f"shards in {out}")
    for column in ("shard", "samples", "frames", "MB", "problems"):
        table.add_column(column, justify="left" if column in ("shard", "problems") else "right")
    for shard in report.shards:
        table.add_row(shard.name, str(shard.samples), str(shard.frames),
                      f"{shard.bytes / 1e6:.2f}",
                      "; ".join(shard.problems[:3]) + (" ..." if len(shard.problems) > 3 else "")
                      or "[green]ok[/]")
    console.print(table)
    for problem in report.problems:
        console.print(f"[red]{problem}[/]")
    if not report.ok:
        console.print("[red]verification failed[/]")
        raise typer.Exit(1)
    console.print(f"[green]ok[/]: {report.samples} samples in {len(report.shards)} shards")


@command("report")
def report_command(
    src: Annotated[Path, typer.Argument(help="A datakit output folder (manifest.parquet, "
                                        "shards/, stats.json) or a folder of WebDataset "
                                        "shards with mp4 members.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Report folder (default: "
                                             "SRC/report).")] = None,
    samples: Annotated[int, typer.Option(help="Clips on the contact sheet.", min=0)] = 64,
    seed: Annotated[int, typer.Option(help="Seed of the clip choice.", min=0)] = 0,
    quiet: QuietOption = False,
) -> None:
    """Write a static HTML report of a dataset: summary, contact sheet, plots, failures.

    Statistics come from the manifest (the shards are scanned only when there is none);
    only the chosen clips are read from the shards. The page works from file:// offline.
    Prints the path of index.html.

    Example: datakit report out/ --samples 64 --seed 0
    """
    from datakit.dataset_report import write_dataset_report

    index = write_dataset_report(src, out, samples=samples, seed=seed, progress=not quiet)
    typer.echo(str(index))


@command("demo")
def demo_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Where the demo writes.")]
    = Path("datakit-demo"),
    workers: WorkersOption = 0,
) -> None:
    """Run the toolkit on embedded sample photos (no arguments, no downloads) and show
    where to look."""
    from datakit.demo import run_demo

    run_demo(out, workers=workers or default_workers())



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
    model: Annotated[str, typer.Option(help="Text-to-video diffusers pipeline: hub id or "
                                       "local folder (Wan, CogVideoX, LTX-Video, ModelScope).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: ID.mp4, ID.json, "
                                      "report/, manifest.parquet (a rerun skips done IDs).")],
    frames: Annotated[int, typer.Option(help="Exact frames per video (chunks are generated "
                                        "whole and the last one trimmed).", min=1)] = 49,
    chunk_frames: Annotated[int | None, typer.Option(
        help="Frames per chunk; must fit the model's rule. Recommended: Wan 2.1/2.2 33 or 81 "
        "(4k+1), CogVideoX 1.0 49 (4k+1; 1.5 is not supported as --model yet), LTX-Video 97 "
        "or 121 (8k+1), ModelScope 16. Default: the model family's.")] = None,
    overlap: Annotated[int | None, typer.Option(
        help="Pixel frames that continue the previous chunk. anchor: its last O frames, "
        "re-encoded (1 + a multiple of the temporal compression: Wan/CogVideoX 5, 9; LTX 9); "
        "reuse: a multiple of the temporal compression. Default: 2 latent frames (Wan 5 "
        "frames, ModelScope 4).")] = None,
    continue_mode: Annotated[ContinueMode, typer.Option(
        "--continue", help="How chunk i+1 continues chunk i: anchor (pin its first latents to "
        "the re-encoded end of chunk i; right for causal VAEs), reuse (VidRD latent reuse, "
        "exact on ModelScope), i2v (image-to-video from the last frame, needs --i2v-model), "
        "none (independent); auto = anchor on Wan/CogVideoX/LTX, reuse on ModelScope.")]
    = ContinueMode.auto,
    i2v_model: Annotated[str | None, typer.Option(
        help="Image-to-video pipeline for --continue i2v.")] = None,
    steps: Annotated[int, typer.Option(help="Denoising steps per chunk.", min=1)] = 50,
    guidance: Annotated[float | None, typer.Option(
        help="Classifier-free guidance scale (default: the family's).")] = None,
    negative_prompt: Annotated[str, typer.Option(help="Negative prompt.")] = "",
    height: Annotated[int | None, typer.Option(help="Height in pixels.")] = None,
    width: Annotated[int | None, typer.Option(help="Width in pixels.")] = None,
    fps: Annotated[int | None, typer.Option(help="Frame rate of the MP4.", min=1)] = None,
    seed: Annotated[int, typer.Option(help="Seed; fixes every frame (a story's own seed "
                                      "wins).", min=0)] = 0,
    noise_recycle: Annotated[float, typer.Option(
        help="VidRD alpha: weight of the past noise in past-dependent noise.")] = 4.0,
    reuse_guidance: Annotated[float, typer.Option(
        help="VidRD beta: overlap frame m is pinned for (O-m)*(T/O)*beta steps (anchor: the "
        "same staging unless --anchor-steps is given).")] = 0.4,
    anchor_steps: Annotated[int | None, typer.Option(
        help="anchor: steps (of --steps) the anchor latent next to the new frames is pinned; "
        "the others are staged below it (default: --reuse-guidance's beta * --steps).",
        min=0)] = None,
    search_k: Annotated[int, typer.Option(help="Candidate noises per chunk for k-step search "
                                          "(1 = off).", min=1)] = 5,
    search_steps: Annotated[int | None, typer.Option(
        help="Steps of each candidate's preview (default: 3, or half of --steps when that is "
        "fewer).", min=1)] = None,
    search_scorer: Annotated[SearchScorer, typer.Option(
        help="clip: min over frames of CLIP image similarity to the previous chunk's last "
        "frame (the paper's; offline without the model it falls back to continuity, with a "
        "notice); continuity: weights-free, how the chunk's first kept frame joins it.")]
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
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or mps.")] = "cpu",
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

    Example: datakit generate --prompts prompts.txt --model Wan-AI/Wan2.1-T2V-1.3B-Diffusers
    --frames 241 --chunk-frames 33 --overlap 5 --steps 50 --search-k 5 --search-steps 3
    --height 480 --width 832 --seed 0 --out samples/
    """
    from generate.runner import GenerateOptions, generate_videos

    require_extra("generate", "datakit generate", "torch", "diffusers", "transformers")
    if not prompts.is_file():
        raise UserError(f"{prompts}: no such prompts file")
    options = GenerateOptions(
        prompts=prompts, model=model, out=out, frames=frames, chunk_frames=chunk_frames,
        overlap=overlap, continue_mode=continue_mode.value, i2v_model=i2v_model, steps=steps,
        guidance=guidance, negative_prompt=negative_prompt, height=height, width=width,
        fps=fps, seed=seed, noise_recycle=noise_recycle, reuse_guidance=reuse_guidance,
        anchor_steps=anchor_steps, search_k=search_k, search_steps=search_steps,
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
        _ignore_signals_while_exiting()
        typer.echo(f"generate: stopped by Ctrl-C; finished videos are in {out}. Rerun the "
                   "same command with --resume to continue the interrupted video from its "
                   "last saved chunk (without --resume it starts over).", err=True)
        raise typer.Exit(130) from None
    status = stats["status"]
    typer.echo(f"generate: {status['ok']} ok, {status['failed']} failed; videos, json and "
               f"manifest.parquet in {out}", err=True)
    if status["failed"]:
        raise typer.Exit(1)


class Flow(str, Enum):
    farneback = "farneback"
    dis = "dis"


@command("check")
def check_command(
    videos: Annotated[list[Path], typer.Argument(
        help="MP4 files, WebDataset shards (.tar, every sample's mp4), or folders (every .mp4 "
        "and .tar inside, not recursive; other files are listed as skipped).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Report folder: index.html, "
                                      "NAME.checks.json, contact sheets and plots.")],
    chunk_frames: Annotated[int | None, typer.Option(
        help="Chunk length to assume for videos without a generate json beside them (that "
        "json's chunk_starts wins). Without either, no seam metrics.", min=2)] = None,
    flow: Annotated[Flow, typer.Option(help="OpenCV optical flow: dis (default; within 3% of "
                                       "the true speed on pans) or farneback (reads pans "
                                       "about 20% slow).")] = Flow.dis,
    max_side: Annotated[int, typer.Option(help="Analyse at most this many pixels on the "
                                          "longer side (area-downscaled).", min=16)] = 512,
    min_scene_frames: Annotated[int, typer.Option(
        help="Shortest scene the cut detector may report.", min=1)] = 8,
    quiet: QuietOption = False,
) -> None:
    """Check videos for seams, warp error, MAWE, flicker, motion, scene cuts and drift.

    Writes NAME.checks.json per video and an HTML report (contact sheet with a row per
    chunk, a plot per metric) into --out. A video that cannot be read is listed as failed
    and the others go on; the exit code is then 1. Definitions: generate/checks.py.

    Example: datakit check samples/*.mp4 --out report/
    """
    from generate.checks import CheckSettings, check_videos
    from generate.report import write_report

    paths: list[Path] = []
    shards: list[Path] = []
    for path in videos:
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file())
            found = [p for p in files if p.suffix.lower() == ".mp4"]
            tars = [p for p in files if p.suffix.lower() == ".tar"]
            skipped = [p.name for p in files if p.suffix.lower() not in (".mp4", ".json", ".tar")]
            if skipped:
                typer.echo(f"{path}: skipped {len(skipped)} file(s) that are not .mp4 or .tar: "
                           f"{', '.join(skipped[:10])}{' ...' if len(skipped) > 10 else ''}",
                           err=True)
            if not found and not tars:
                raise UserError(f"{path}: no .mp4 files or .tar shards in this folder")
            paths.extend(found)
            shards.extend(tars)
        elif path.is_file() and path.suffix.lower() == ".tar":
            shards.append(path)
        elif path.is_file():
            paths.append(path)
        else:
            raise UserError(f"{path}: no such file or folder")
    if shards:  # the toolkit's own shards: their videos, unpacked next to the report
        from generate.checks import videos_from_shards

        paths.extend(videos_from_shards(shards, out / "from_shards"))
    names = [p.stem for p in paths]
    clash = next((n for n in names if names.count(n) > 1), None)
    if clash:
        raise UserError(f"two videos are named {clash!r}; check them into separate --out folders")
    settings = CheckSettings(flow=flow.value, max_side=max_side,
                             min_scene_frames=min_scene_frames)
    results = check_videos(paths, out, settings, chunk_frames=chunk_frames, progress=not quiet)
    index = write_report(results, out)
    failed = [r for r in results if "error" in r]
    for result in results:
        if "error" in result:
            typer.echo(f"failed: {result['error']}", err=True)
        else:
            m = result["metrics"]
            jump = "-" if m["seam_jump_max"] is None else f"{m['seam_jump_max']:.2f}"
            typer.echo(f"{result['name']}: seam jump {jump}, {m['seam_reversals']} seam "
                       f"reversal(s), warp error {m['warp_error']}, "
                       f"flicker {m['flicker']:.4f}, motion {m['motion']:.2f} px/frame, "
                       f"{m['scene_cuts']} cut(s), colour drift {m['colour_drift_max']:.2f}")
    typer.echo(f"report: {index}", err=True)
    if failed:
        raise typer.Exit(1)


def _exit_on_sigterm(signum, frame) -> None:
    _ignore_signals_while_exiting()
    raise SystemExit(128 + signum)


def _ignore_signals_while_exiting() -> None:
    """Once the command is on its way out, a further Ctrl-C or SIGTERM (a scheduler that
    signals twice) must not interrupt the interpreter's own clean-up."""
    import signal

    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.SIG_IGN)


PAIR_OPTIONS = ("--zoom-range", "--speed-range")


def split_pairs(argv: list[str]) -> list[str]:
    """`--zoom-range 1.1,1.25` (as the help and defaults show a pair) becomes the two values
    the option takes, `--zoom-range 1.1 1.25`, which keeps working as it is."""
    out: list[str] = []
    for index, token in enumerate(argv):
        name, equals, value = token.partition("=")
        previous = argv[index - 1] if index else ""
        if name in PAIR_OPTIONS and equals and "," in value:
            out += [name, *value.split(",", 1)]
        elif previous in PAIR_OPTIONS and "," in token:
            out += token.split(",", 1)
        else:
            out.append(token)
    return out


def main() -> None:
    """Console entry point: user errors become one line on stderr, never a traceback."""
    # A run stopped at once (a second Ctrl-C) leaves its worker pool's semaphores to
    # multiprocessing's resource tracker, which cleans them up and warns about it; the
    # tracker is started with these options (`-W`), so the warning stays out of the output.
    sys.warnoptions.append("ignore:resource_tracker:UserWarning")
    # SIGTERM outside a run's own handling (before it starts, while the summary prints) ends
    # the command as SIGINT does: no traceback, exit 143, atomic writes cleaned up.
    import signal

    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        app(args=split_pairs(sys.argv[1:]))
    except KeyboardInterrupt:
        _ignore_signals_while_exiting()
        typer.echo("interrupted", err=True)
        sys.exit(130)
    finally:
        # The work is done: a signal arriving during the interpreter's finalization (which
        # restores the default action of handlers set from Python, but not of ignored
        # signals) must not turn a finished run into "killed by SIGTERM".
        _ignore_signals_while_exiting()


if __name__ == "__main__":
    main()
