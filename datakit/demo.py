"""`datakit demo`: every pipeline on the embedded samples, offline, in under a minute."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console


def run_demo(out: str | Path, workers: int = 1) -> dict[str, Path]:
    """Run the demo into `out` and return the folders it wrote, by step.

    Steps: write the sample photos; pan-zoom them into shards; verify the shards; generate
    two chunked videos on a tiny random pipeline and check them.
    """
    from datakit.pipeline import RunOptions
    from datakit.samples import write_sample_images
    from datakit.shards import verify_shards
    from generate.demo import demo_generate
    from synthesize.pan_zoom import PanZoomConfig, pan_zoom

    console = Console(stderr=True)
    out = Path(out)
    images = out / "inputs" / "images"
    # 1. Inputs: real photos shipped with scikit-image, plus one broken file.
    written = write_sample_images(images)
    console.print(f"[bold]1. inputs[/]: {len(written)} files in {images} "
                  "(one is a truncated JPEG, to show failure accounting)")
    # 2. Pan-and-zoom clips into WebDataset shards.
    clips = out / "pan-zoom"
    config = PanZoomConfig(width=384, height=240, frames=16, fps=8, clips_per_image=2, seed=0)
    stats = pan_zoom(images, clips, config, RunOptions(workers=workers, shard_size=8))
    console.print(f"[bold]2. pan-zoom[/]: {stats['status']} -> {clips / 'shards'}")
    # 3. Read everything back as a trainer would.
    report = verify_shards(clips)
    verdict = "[green]ok[/]" if report.ok else "[red]FAILED[/]"
    console.print(f"[bold]3. verify[/]: {report.samples} samples in {len(report.shards)} "
                  f"shards {verdict}")
    if not report.ok:
        for problem in report.problems + [p for s in report.shards for p in s.problems]:
            console.print(f"   [red]{problem}[/]")
        raise RuntimeError("the demo's shards did not verify; this is a bug")
    # 4. Long videos chunk by chunk, checked into an HTML report.
    generated = out / "generate"
    stats = demo_generate(out)
    if stats["status"].get("failed"):
        raise RuntimeError("the demo's generate step failed; this is a bug")
    console.print(f"[bold]4. generate[/]: {stats['status']} -> {generated} (a tiny random Wan "
                  "pipeline: the videos are noise, built to show the path offline; use a real "
                  "--model for real videos)")
    console.print(
        f"\nLook at: {clips / 'shards'} (KEY.mp4 / .txt / .json per sample), "
        f"{clips / 'manifest.parquet'} (a row per input, with status and error), "
        f"{clips / 'stats.json'}; {generated} (ID.mp4 + ID.json per video) and "
        f"{generated / 'report' / 'index.html'} (the checks)."
    )
    return {"inputs": images, "pan-zoom": clips, "generate": generated}
