"""`datakit demo`: every pipeline on the embedded samples, offline, in about a minute."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from datakit.cli.options import (
    WorkersOption,
    command,
    default_workers,
)


@command("demo")
def demo_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Where the demo writes.")]
    = Path("datakit-demo"),
    workers: WorkersOption = 0,
) -> None:
    """Run the toolkit on embedded sample photos (no arguments, no downloads) and show
    where to look."""
    run_demo(out, workers=workers or default_workers())




def _installed(*modules: str) -> bool:
    return all(importlib.util.find_spec(name) is not None for name in modules)


def run_demo(out: str | Path, workers: int = 1) -> dict[str, Path]:
    """Run the demo into `out` and return the folders it wrote, by step.

    Steps: write the sample photos; pan-zoom them into shards; verify the shards; caption
    clips of the photos laid out as a class tree, with the label captioner and with a tiny
    random BLIP-2; generate two chunked videos on a tiny random pipeline and check them;
    write a report of each dataset. Steps whose optional dependencies are missing (the
    `caption` and `generate` extras) are skipped with a note.
    """
    from captioners.base import CaptionerConfig
    from captioners.pipeline import CaptionConfig, caption
    from datakit.cli.samples import write_sample_images, write_sample_videos
    from datakit.run.dataset_report import write_dataset_report
    from datakit.run.pipeline import RunOptions
    from datakit.run.shards import verify_shards
    from synthesize.pan_zoom import PanZoomConfig, pan_zoom

    console = Console(stderr=True)
    out = Path(out)
    folders: dict[str, Path] = {}
    images = out / "inputs" / "images"
    # 1. Inputs: real photos shipped with scikit-image, plus one broken file.
    written = write_sample_images(images)
    console.print(f"[bold]1. inputs[/]: {len(written)} files in {images} "
                  "(one is a truncated JPEG, to show failure accounting)")
    # 2. Pan-and-zoom clips into WebDataset shards.
    clips = folders["pan-zoom"] = out / "pan-zoom"
    config = PanZoomConfig(width=384, height=240, frames=16, fps=8, clips_per_image=2, seed=0)
    stats = pan_zoom(images, clips, config, RunOptions(workers=workers, shard_size=8,
                                                       progress=False))
    console.print(f"[bold]2. pan-zoom[/]: {stats['status']['ok']} clips, "
                  f"{stats['status']['failed']} failed -> {clips / 'shards'}")
    # 3. Read everything back as a trainer would.
    report = verify_shards(clips)
    verdict = "[green]ok[/]" if report.ok else "[red]FAILED[/]"
    console.print(f"[bold]3. verify[/]: {report.samples} samples in {len(report.shards)} "
                  f"shards {verdict}")
    if not report.ok:
        for problem in report.problems + [p for s in report.shards for p in s.problems]:
            console.print(f"   [red]{problem}[/]")
        raise RuntimeError("the demo's shards did not verify; this is a bug")
    # 4. Captions for a class tree of videos: the label captioner, then a tiny random BLIP-2.
    videos = out / "inputs" / "videos"
    write_sample_videos(videos)
    label_out = folders["caption"] = out / "caption"
    options = RunOptions(workers=workers, shard_size=8, progress=False)
    stats = caption(videos, label_out, CaptionConfig(), CaptionerConfig(captioner="label"),
                    options)
    console.print(f"[bold]4. caption[/] (label): {stats['status']['ok']} clips captioned, "
                  f"{stats['status']['failed']} bad files recorded -> {label_out / 'shards'}")
    if _installed("torch", "transformers"):
        from transformers.utils import logging as transformers_logging

        from captioners.tiny import build_tiny_blip2

        transformers_logging.set_verbosity_error()  # the demo's tiny model: no load chatter
        transformers_logging.disable_progress_bar()
        model = build_tiny_blip2(out / "models" / "tiny-blip2")
        blip_out = folders["caption-blip2"] = out / "caption-blip2"
        stats = caption(videos, blip_out, CaptionConfig(),
                        CaptionerConfig(captioner="blip2", model=str(model), device="cpu",
                                        max_new_tokens=8), options)
        console.print(f"   caption (blip2, tiny random weights from {model}): "
                      f"{stats['status']['ok']} clips -> {blip_out / 'shards'} (the words are "
                      "random: the path is real, the weights are not)")
    else:
        console.print("   caption (blip2): skipped, needs pip install 'datakit[caption]'")
    # 5. Long videos chunk by chunk, checked into an HTML report.
    if _installed("torch", "diffusers", "transformers"):
        from generate.demo import demo_generate

        generated = folders["generate"] = out / "generate"
        stats = demo_generate(out)
        if stats["status"].get("failed"):
            raise RuntimeError("the demo's generate step failed; this is a bug")
        console.print(f"[bold]5. generate[/]: {stats['status']['ok']} videos -> {generated} "
                      "(a tiny random Wan pipeline: the videos are noise, built to show the "
                      "path offline; use a real --model for real videos); checks in "
                      f"{generated / 'report' / 'index.html'}")
    else:
        console.print("[bold]5. generate[/]: skipped, needs pip install 'datakit[generate]'")
    # 6. A report of each dataset: statistics, a contact sheet, playable clips.
    pages = [write_dataset_report(folders[name], samples=24)
             for name in ("pan-zoom", "caption") if name in folders]
    console.print("[bold]6. report[/]: " + ", ".join(str(page) for page in pages))
    console.print(
        f"\nLook at: {pages[0]} (open it in a browser: clips, captions, failures, plots); "
        f"{clips / 'shards'} (KEY.mp4 / .txt / .json per sample) and "
        f"{clips / 'manifest.parquet'} (a row per input, with status and error)."
    )
    return folders
