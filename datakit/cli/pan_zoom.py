"""`datakit pan-zoom`: still images to short clips with a simulated camera."""

from __future__ import annotations

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
    parse_colour,
    parse_size,
    print_summary,
    watermark_config,
)
from datakit.io.errors import UserError


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
    from datakit.run.pipeline import RunOptions
    from synthesize.pan_zoom import PanZoomConfig, pan_zoom, parse_motions

    check_source(src)
    width, height = parse_size(size)
    marks = watermark_config(watermarks, watermark_model, watermark_threshold,
                             watermark_classifier_threshold, watermark_device)
    if watermarks in (Watermarks.strip, Watermarks.drop) and watermark_model is None:
        typer.echo(f"warning: --watermarks {watermarks.value} on stills without "
                   "--watermark-model acts on text evidence alone (a text detector: logos "
                   "are not found, and text that looks like a mark's is): try --watermarks "
                   "flag first and read watermark_reason, or pass LAION's classifier",
                   err=True)
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
    exit_if_every_input_failed(stats)
