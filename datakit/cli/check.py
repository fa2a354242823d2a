"""`datakit check`: seams, warp error, flicker, motion and drift of videos, with a report."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from datakit.cli.options import (
    QuietOption,
    command,
)


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
    from generate.checks import CheckSettings, check_videos, collect_videos
    from generate.report import write_report

    paths, notes = collect_videos(videos, out / "from_shards")
    for note in notes:
        typer.echo(note, err=True)
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
