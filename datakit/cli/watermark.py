"""`datakit watermark`: find and strip watermarks in existing shards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from datakit.cli.options import (
    Engine,
    EngineOption,
    OverwriteOption,
    QuietOption,
    RayAddressOption,
    RetryOption,
    SampleTimeoutOption,
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
    print_summary,
    watermark_config,
)
from datakit.io.errors import UserError


@command("watermark")
def watermark_command(
    src: Annotated[Path, typer.Argument(help="A .tar shard or a folder of shards (samples "
                                        "with a video member: KEY.mp4, KEY.webm, ...) to "
                                        "re-process; with --show, one video or image "
                                        "file.")],
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
    sample_timeout: SampleTimeoutOption = None,
    engine: EngineOption = Engine.local,
    ray_address: RayAddressOption = None,
    quiet: QuietOption = False,
) -> None:
    """Find watermarks in existing shards and flag, strip or drop them into new shards.

    Each sample keeps its key and files; the json gains watermark_score, watermark_box and
    watermark_action, and OUT/manifest.parquet gets the same columns. Clips whose pixels
    change (strip) are re-encoded as KEY.mp4; the others keep their member and bytes (a
    KEY.webm from another tool's shard stays one). A long clip (over 512 MB
    decoded) is judged on the frames the detector samples and stripped in segments, so
    memory stays bounded (docs/watermarks.md).

    Examples: datakit watermark out/shards/ --out clean/ --watermarks strip;
    datakit watermark clip.mp4 --show mask.png
    """
    from datakit.io.video import X264_PRESETS
    from datakit.run.pipeline import RunOptions

    check_source(src)
    config = watermark_config(watermarks, watermark_model, watermark_threshold,
                              watermark_classifier_threshold, watermark_device)
    if show is not None:
        from synthesize.watermark import show_watermark

        typer.echo(json.dumps(show_watermark(src, show, config), default=str))
        return
    if out is None:
        raise UserError("--out is required to re-process shards (or use --show FILE.png)")
    if preset not in X264_PRESETS:
        raise UserError(f"--preset must be one of {', '.join(X264_PRESETS)}, got {preset!r}")
    from synthesize.watermark import watermark_shards

    options = RunOptions(
        workers=workers or default_workers(), shard_size=shard_size,
        shard_bytes=parse_bytes(shard_bytes), retry_failed=retry_failed, overwrite=overwrite,
        progress=not quiet, sample_timeout=sample_timeout,
    )
    options = engine_options(options, engine, ray_address)
    stats = watermark_shards(src, out, config, options, crf=crf, preset=preset)
    print_summary(stats, out, "watermark")
    exit_if_stopped(stats)
    exit_if_every_input_failed(stats)
