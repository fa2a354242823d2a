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

from datakit.errors import UserError

app = typer.Typer(
    name="datakit",
    help="Build text-to-video training data as WebDataset shards, and generate long videos.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)


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
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
SeedOption = Annotated[int, typer.Option(help="Seed for every random choice (with the key).",
                                          min=0)]


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
    for error, count in list(stats["errors"].items())[:5]:
        console.print(f"  {count} x {error}")
    run = stats["run"]
    console.print(
        f"this run: {run['processed']} inputs in {run['seconds']:.1f} s "
        f"({run['per_second'] or 0:.2f}/s); {stats.get('resumed_keys', 0)} keys were already done"
    )
    if stats.get("interrupted"):
        console.print("[yellow]interrupted: rerun the same command to resume[/]")
    console.print(f"shards: {out / 'shards'}  manifest: {out / 'manifest.parquet'}  "
                  f"stats: {out / 'stats.json'}")


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
        help="Zoom reached at the close end of a zoom, drawn per clip (1.0 = the whole "
        "image's width or height).")] = (1.1, 1.25),
    speed_range: Annotated[tuple[float, float], typer.Option(
        help="Pan speed in frame widths per second, drawn per clip.")] = (0.05, 0.15),
    easing: Annotated[str, typer.Option(
        help="Camera acceleration: linear, ease-in-out, ease-in, ease-out.")] = "ease-in-out",
    max_upscale: Annotated[float, typer.Option(
        help="Largest upscale allowed; smaller images are recorded as skipped.")] = 2.0,
    motion_caption: Annotated[bool, typer.Option(
        help="Append the camera motion to the caption, e.g. 'The camera pans left.'")] = True,
    crf: Annotated[int, typer.Option(help="x264 quality: 0 lossless .. 51 worst.",
                                     min=0, max=51)] = 18,
    preset: Annotated[str, typer.Option(help="x264 preset, ultrafast .. veryslow.")]
    = "medium",
    seed: SeedOption = 0,
    workers: WorkersOption = 0,
    shard_size: ShardSizeOption = 1000,
    shard_bytes: ShardBytesOption = "",
    retry_failed: RetryOption = False,
    overwrite: OverwriteOption = False,
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
    try:
        config = PanZoomConfig(
            width=width, height=height, frames=frames, fps=fps,
            clips_per_image=clips_per_image, motions=parse_motions(motions),
            zoom_range=zoom_range, speed_range=speed_range, easing=easing,
            max_upscale=max_upscale, motion_caption=motion_caption, seed=seed, crf=crf,
            preset=preset,
        )
    except ValueError as error:
        raise UserError(str(error)) from None
    options = RunOptions(
        workers=workers or default_workers(), shard_size=shard_size,
        shard_bytes=parse_bytes(shard_bytes), retry_failed=retry_failed, overwrite=overwrite,
        progress=not quiet,
    )
    stats = pan_zoom(src, out, config, options)
    print_summary(stats, out, "pan-zoom")


shards_app = typer.Typer(help="Inspect and check WebDataset shards.", no_args_is_help=True)
app.add_typer(shards_app, name="shards")


@shards_app.command("verify")
def shards_verify_command(
    out: Annotated[Path, typer.Argument(help="A datakit output folder (holds shards/ and "
                                        "manifest.parquet).")],
    decode: Annotated[bool, typer.Option(help="Decode every mp4 (slower, thorough).")] = True,
) -> None:
    """Read every shard with webdataset, decode every mp4 with decord, check frame counts
    and that shards and manifest agree. Exits 1 on any mismatch."""
    from rich.console import Console
    from rich.table import Table

    from datakit.shards import verify_shards

    if not (out / "shards").is_dir():
        typer.echo(f"error: {out}: no shards/ folder (not a datakit output?)", err=True)
        raise typer.Exit(2)
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
        help="VidRD beta: overlap frame m is pinned for (O-m)*(T/O)*beta steps.")] = 0.4,
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
    cpu_offload: Annotated[bool, typer.Option(help="Model CPU offload (less GPU memory).")]
    = False,
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

    if not prompts.is_file():
        raise UserError(f"{prompts}: no such prompts file")
    stats = generate_videos(GenerateOptions(
        prompts=prompts, model=model, out=out, frames=frames, chunk_frames=chunk_frames,
        overlap=overlap, continue_mode=continue_mode.value, i2v_model=i2v_model, steps=steps,
        guidance=guidance, negative_prompt=negative_prompt, height=height, width=width,
        fps=fps, seed=seed, noise_recycle=noise_recycle, reuse_guidance=reuse_guidance,
        search_k=search_k, search_steps=search_steps, search_scorer=search_scorer.value,
        search_clip=search_clip, refine=refine,
        refine_model=refine_model, refine_chunk=refine_chunk, refine_overlap=refine_overlap,
        refine_strength=refine_strength, device=device,
        dtype=dtype.value if dtype else None,
        cpu_offload=cpu_offload, vae_tiling=vae_tiling, vae_slicing=vae_slicing,
        bounded_heap=bounded_heap, resume=resume, crf=crf, checks=checks,
    ))
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


def main() -> None:
    """Console entry point: user errors become one line on stderr, never a traceback."""
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
