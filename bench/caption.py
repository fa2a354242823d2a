"""Caption pipeline benchmarks: key-frame decoding, and how busy the model stage is.

    python bench/caption.py                 # both parts
    python bench/caption.py --part keyframes
    python bench/caption.py --part overlap

1. Key frames: the same 10-second clips (640x360, 30 fps, x264 defaults: preset medium,
   key frame interval 250) read three ways, side by side in one run: 3 uniform key frames
   (decord `get_batch` of those frames), 3 I-frames (`--keyframe-mode iframes`, PyAV decodes
   key frames only) and the whole clip decoded to RGB with decord (what a naive pipeline does).
2. Pipeline overlap: `datakit caption` with a tiny random BLIP-2 on the CPU (2 workers decode
   while the main process runs the model): clips/s at batch 1, 8 and 32, and the share of the
   wall time the model stage is busy (from stats.json), for clips that need re-encoding
   (decode-heavy), clips that are stream-copied, and a model-bound case (90-token captions,
   the model slower than decoding: where the busy share shows whether decoding hides behind
   the model).

Figures go to docs/benchmarks.md by hand; the script prints them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CACHE = ROOT / ".bench" / "caption"


def _ten_second_clips(count: int = 6) -> list[Path]:
    """Camera moves over the sample photos, 10 s at 30 fps, 640x360, x264 defaults."""
    from skimage import data

    from datakit.io.video import encode_video
    from synthesize.pan_zoom import Motion, PanZoomConfig, plan_path, rng_for
    from synthesize.render import render_clip

    CACHE.mkdir(parents=True, exist_ok=True)
    names = ["astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina"]
    config = PanZoomConfig(width=640, height=360, frames=300, fps=30, seed=0, max_upscale=4)
    paths = []
    for index, name in enumerate(names[:count]):
        path = CACHE / f"{name}_10s.mp4"
        if not path.exists():
            image = getattr(data, name)()
            image = np.stack([image] * 3, -1) if image.ndim == 2 else image[..., :3]
            motion = list(Motion)[index % len(Motion)]
            plan = plan_path(motion, (image.shape[1], image.shape[0]), config, rng_for(0, name))
            path.write_bytes(encode_video(render_clip(image, plan, 640, 360, 300), 30))
        paths.append(path)
    return paths


def bench_keyframes(repeats: int = 2) -> dict:
    import decord

    from captioners.keyframes import read_keyframes
    from datakit.io.video import probe

    clips = _ten_second_clips()
    infos = [probe(p) for p in clips]

    def whole(path, info):
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
        return reader.get_batch(list(range(len(reader)))).asnumpy()

    ways = {
        "3 key frames (uniform)": lambda p, i: read_keyframes(p, i.frames, i.fps, 3).frames,
        "3 I-frames (iframes)": lambda p, i: read_keyframes(p, i.frames, i.fps, 3,
                                                            "iframes").frames,
        "whole clip to RGB (decord)": whole,
    }
    seconds = {name: [] for name in ways}
    for _ in range(repeats):  # interleaved, so load on the machine hits every way alike
        for name, read in ways.items():
            started = time.perf_counter()
            for path, info in zip(clips, infos, strict=True):
                read(path, info)
            seconds[name].append(time.perf_counter() - started)
    rates = {name: len(clips) / min(values) for name, values in seconds.items()}
    whole_rate = rates["whole clip to RGB (decord)"]
    print(f"key frames: {len(clips)} clips of 10 s, 640x360, 30 fps, x264 defaults")
    for name, rate in rates.items():
        print(f"  {name:30s} {rate:7.2f} clips/s  ({rate / whole_rate:5.2f}x the whole decode)")
    return {"clips_per_second": rates}


def bench_overlap(clips: int = 48, workers: int = 2) -> dict:
    from captioners.base import CaptionerConfig
    from captioners.pipeline import CaptionConfig, caption
    from captioners.tiny import build_tiny_blip2
    from datakit.cli.samples import write_sample_videos
    from datakit.run.pipeline import RunOptions

    work = Path(tempfile.mkdtemp(prefix="datakit-bench-caption-"))
    try:
        model = build_tiny_blip2(work / "blip2")
        tree = work / "videos"
        sources = write_sample_videos(tree / "seed", seconds=4, fps=15, size=(320, 192),
                                      broken=False)
        for i in range(clips):  # a class tree of `clips` 4-second clips
            source = sources[i % len(sources)]
            target = tree / source.parent.name / f"{source.stem}_{i:03d}.mp4"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        shutil.rmtree(tree / "seed")
        results = {}
        cases = (("re-encoded (--fps 8)", CaptionConfig(fps=8.0, preset="veryfast"), 20),
                 ("stream-copied", CaptionConfig(), 20),
                 ("model-bound (90 tokens)", CaptionConfig(), 90))
        for label, config, tokens in cases:
            for batch in (1, 8, 32):
                out = work / f"out_{batch}_{len(results)}"
                captioner = CaptionerConfig(captioner="blip2", model=str(model),
                                            batch_size=batch, device="cpu",
                                            max_new_tokens=tokens,
                                            decoding="greedy")  # as the figures were measured
                started = time.perf_counter()
                stats = caption(tree, out, config, captioner,
                                RunOptions(workers=workers, progress=False, shard_size=1000))
                wall = time.perf_counter() - started
                ok = stats["status"]["ok"]
                busy = stats["model"]["busy_share"]
                results[(label, batch)] = {"clips_per_second": ok / wall, "busy_share": busy,
                                           "load_seconds": stats["model"]["load_seconds"]}
                print(f"  {label:26s} batch {batch:2d}: {ok / wall:6.2f} clips/s, model busy "
                      f"{100 * busy:5.1f}% of the run (after a {stats['model']['load_seconds']:.1f}"
                      " s load)")
        return {f"{k[0]} batch {k[1]}": v for k, v in results.items()}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("keyframes", "overlap", "all"), default="all")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    figures = {}
    if args.part in ("keyframes", "all"):
        figures["keyframes"] = bench_keyframes()
    if args.part in ("overlap", "all"):
        print("pipeline overlap: tiny random BLIP-2 on the CPU, 2 decode workers")
        figures["overlap"] = bench_overlap()
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
