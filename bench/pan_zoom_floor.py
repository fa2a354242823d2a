"""The x264 floor for bench/pan_zoom.py and bench/scale.py: the very yuv420p frames
datakit encodes, rendered once up front, encoded by x264 alone in forked processes (and the
physical floor: also decoding and pre-shrinking each photo, the steps the renderer keeps
exactly as before); and the CPU time per clip in one process, interleaved clip by clip.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def parse_size(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height




def clip_paths(src: Path, args) -> list[tuple[np.ndarray, object]]:
    """(photo, image, camera path) of each photo's clip, chosen as PanZoomStage chooses."""
    from datakit.io.images import load_image
    from manifests.sources import read_records
    from synthesize.pan_zoom import plan_path, rng_for

    config = bench_config(args)
    clips = []
    for record in read_records(src):
        image = load_image(record.image_input(), max_pixels=config.max_pixels,
                           min_size=config.min_source_size())
        order = rng_for(config.seed, record.key).permutation(len(config.motions))
        path = plan_path(config.motions[order[0]], (image.shape[1], image.shape[0]), config,
                         rng_for(config.seed, record.key, 0))
        clips.append((record.image_input(), image, path))
    return clips


def bench_config(args):
    from synthesize.pan_zoom import PanZoomConfig

    width, height = parse_size(args.size)
    return PanZoomConfig(width=width, height=height, frames=args.frames, fps=args.fps, seed=0)


FLOOR: dict = {"frames": [], "photos": [], "levels": [], "fps": 8.0}  # set before forking


def _floor_clip(job: tuple[int, bool]) -> int:
    """Encode one clip's pre-rendered frames; with `decode`, first also decode its photo and
    area-shrink it to the clip's first pyramid level, the two steps the renderer keeps
    exactly as before (the physical floor of a renderer that keeps the picture)."""
    import cv2

    from datakit.io.images import load_image
    from datakit.io.video import encode_video

    index, decode = job
    if decode:
        image = load_image(FLOOR["photos"][index], min_size=FLOOR["min_size"])
        level = FLOOR["levels"][index]
        if level != image.shape[1::-1]:
            cv2.resize(image, level, interpolation=cv2.INTER_AREA)
    return len(encode_video(FLOOR["frames"][index], FLOOR["fps"], crf=18, preset="medium",
                            threads=1, pixel_format="yuv420p"))


def prepare_floor(clips, args) -> None:
    """Render every clip's yuv420p frames once, as datakit renders them, for the floor."""
    from synthesize.render import PyramidPlan, render_clip_yuv420p

    width, height = parse_size(args.size)
    config = bench_config(args)
    FLOOR["frames"] = [np.stack(list(render_clip_yuv420p(image, path, width, height,
                                                         args.frames)))
                       for _, image, path in clips]
    FLOOR["photos"] = [photo for photo, _, _ in clips]
    FLOOR["levels"] = [PyramidPlan.of(image.shape[1::-1], path, width, args.frames).sizes[0]
                       for _, image, path in clips]  # the level the renderer starts from
    FLOOR["fps"], FLOOR["min_size"] = args.fps, config.min_source_size()


def run_floor(workers: int, decode: bool = False) -> dict:
    """x264 alone on the pre-rendered frames in `workers` forked processes (started before
    the clock); the frames reach the workers by fork, so nothing but encoding is timed (with
    `decode`: also decoding and shrinking each photo, see `_floor_clip`)."""
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(workers) as pool:
        pool.map(abs, range(workers))  # every worker up
        started = time.perf_counter()
        jobs = [(index, decode) for index in range(len(FLOOR["frames"]))]
        sizes = pool.map(_floor_clip, jobs, chunksize=1)
        seconds = time.perf_counter() - started
    what = "decode + shrink + x264" if decode else "x264 alone"
    return {"seconds": seconds, "clips": len(sizes), "mean_kb": float(np.mean(sizes)) / 1000,
            "command": f"{what} (PyAV, yuv420p in), {workers} processes"}


def cpu_per_clip(src: Path, args, repeats: int = 2) -> dict:
    """CPU time per clip in this process (`time.process_time`, which a loaded machine
    inflates far less than wall time), interleaved clip by clip: the x264 floor, the physical
    floor (decode, pre-shrink, x264), and the pan-zoom stage with `keep` and with `flag`."""
    from manifests.sources import read_records
    from synthesize.pan_zoom import PanZoomConfig, PanZoomStage
    from synthesize.watermark import WatermarkAction, WatermarkConfig

    config = bench_config(args)
    stages = {mode: PanZoomStage(PanZoomConfig(
        **{**config.__dict__, "watermark": WatermarkConfig(action=WatermarkAction(mode))}))
        for mode in ("keep", "flag")}
    records = list(read_records(src))
    for stage in stages.values():
        stage(records[0])  # first-call costs (imports, x264 and OpenCV start) not counted
    seconds = {"floor": 0.0, "floor_decode": 0.0, "stage_keep": 0.0, "stage_flag": 0.0}
    clock = time.process_time
    for _ in range(repeats):
        for index, record in enumerate(records):
            for name, work, argument in (("floor", _floor_clip, (index, False)),
                                         ("floor_decode", _floor_clip, (index, True)),
                                         ("stage_keep", stages["keep"], record),
                                         ("stage_flag", stages["flag"], record)):
                started = clock()
                work(argument)
                seconds[name] += clock() - started
    clips = repeats * len(records)
    per_clip = {name: 1000 * value / clips for name, value in seconds.items()}
    return {"ms_per_clip": per_clip,
            "keep_over_floor": per_clip["floor"] / per_clip["stage_keep"],
            "flag_over_floor": per_clip["floor"] / per_clip["stage_flag"],
            "keep_over_floor_decode": per_clip["floor_decode"] / per_clip["stage_keep"],
            "flag_over_floor_decode": per_clip["floor_decode"] / per_clip["stage_flag"],
            "floor_decode_over_floor": per_clip["floor"] / per_clip["floor_decode"]}


def print_cpu(cpu: dict) -> None:
    print("\n1b. CPU per clip in one process (process_time, interleaved clip by clip): " +
          ", ".join(f"{k} {v:.1f} ms" for k, v in cpu["ms_per_clip"].items()))
    print("  " + ", ".join(f"{k} {v:.3f}" for k, v in cpu.items() if k != "ms_per_clip"))
