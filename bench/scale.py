"""Engines side by side: the local pool with 1, 2 and 4 workers, and Ray Data on a local
cluster.

    python bench/scale.py              # pan-zoom on 48 photos, caption (label) on 48 clips

For each pipeline, the same inputs run on: the local engine with 1, 2 and 4 workers
(scaling efficiency = rate(n) / (n * rate(1))), and the Ray engine on a local 2-CPU Ray
(overhead = rate(local, 2) / rate(ray)). Rates are samples per second of the whole run,
start-up included (Ray's own start is reported apart); for pan-zoom also the steady rate,
(count - 1) / (run time - a one-photo run's time), the rate beyond the run's fixed cost (as
bench/pan_zoom.py reports it). For pan-zoom, the x264 floor is measured at each worker
count (bench/pan_zoom.py's: the very yuv420p frames, pre-rendered, encoded by x264 alone
in that many processes), with the local runs interleaved over --repeats (median
reported). Every run writes to a fresh folder; the outputs of all worker
counts and of Ray are checked to be byte-identical.
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
sys.path.insert(0, str(ROOT / "bench"))

WORKERS = (1, 2, 4)


def _photos(folder: Path, count: int) -> Path:
    from PIL import Image
    from skimage import data

    folder.mkdir(parents=True)
    names = ["astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina"]
    for i in range(count):
        image = getattr(data, names[i % len(names)])()
        Image.fromarray(image if image.ndim == 3 else np.stack([image] * 3, -1)).save(
            folder / f"p{i:03d}.jpg", quality=90)
    return folder


def _videos(folder: Path, count: int) -> Path:
    from datakit.cli.samples import write_sample_videos

    seed = write_sample_videos(folder / "seed", seconds=4, fps=15, size=(320, 192),
                               broken=False)
    for i in range(count):
        source = seed[i % len(seed)]
        target = folder / source.parent.name / f"{source.stem}_{i:03d}.mp4"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    shutil.rmtree(folder / "seed")
    return folder


def _run(pipeline: str, src: Path, out: Path, workers: int, engine: str) -> tuple[int, float]:
    """(samples written, seconds) of one whole run."""
    from captioners.base import CaptionerConfig
    from captioners.pipeline import CaptionConfig, caption
    from datakit.run.pipeline import RunOptions
    from synthesize.pan_zoom import PanZoomConfig, pan_zoom

    options = RunOptions(workers=workers, progress=False, engine=engine, shard_size=1000)
    started = time.perf_counter()
    if pipeline == "pan-zoom":
        stats = pan_zoom(src, out, PanZoomConfig(width=384, height=240, frames=16, seed=0),
                         options)
    else:
        stats = caption(src, out, CaptionConfig(), CaptionerConfig(captioner="label"), options)
    return stats["status"]["ok"], time.perf_counter() - started


def _same(a: Path, b: Path) -> bool:
    shards = sorted((a / "shards").glob("*.tar"))
    return bool(shards) and all((b / "shards" / p.name).read_bytes() == p.read_bytes()
                                for p in shards)


def _floor(src: Path, workers: int) -> float:
    """Clips per second of x264 alone on pan-zoom's frames in `workers` processes (the
    frames are rendered at the first call)."""
    from pan_zoom_floor import FLOOR, clip_paths, prepare_floor, run_floor

    if not FLOOR["frames"]:
        settings = argparse.Namespace(size="384x240", frames=16, fps=8.0)
        prepare_floor(clip_paths(src, settings), settings)
    run = run_floor(workers)
    return run["clips"] / run["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import cv2

    cv2.setNumThreads(1)  # no OpenCV thread pool across the floor's fork
    work = Path(tempfile.mkdtemp(prefix="datakit-bench-scale-"))
    figures = {}
    try:
        inputs = {"pan-zoom": _photos(work / "photos", args.count),
                  "caption": _videos(work / "videos", args.count)}
        one_photo = work / "one-photo"
        one_photo.mkdir()
        shutil.copyfile(inputs["pan-zoom"] / "p000.jpg", one_photo / "p000.jpg")
        # Local runs first, each pan-zoom run next to the floor at its worker count; the
        # floor forks, so Ray (and its threads) starts only after.
        all_runs: dict[str, dict[str, list[float]]] = {p: {} for p in inputs}
        floors: dict[int, list[float]] = {w: [] for w in WORKERS}
        steady: dict[int, list[float]] = {w: [] for w in WORKERS}
        for pipeline, src in inputs.items():
            for repeat in range(args.repeats if pipeline == "pan-zoom" else 1):
                for workers in WORKERS:
                    out = work / f"{pipeline}-local-{workers}-{repeat}"
                    samples, seconds = _run(pipeline, src, out, workers, "local")
                    all_runs[pipeline].setdefault(f"local, {workers}", []).append(
                        samples / seconds)
                    if pipeline == "pan-zoom":
                        _, fixed = _run(pipeline, one_photo, work / f"one-{workers}-{repeat}",
                                        workers, "local")
                        steady[workers].append((samples - 1) / (seconds - fixed))
                        floors[workers].append(_floor(src, workers))
        import ray

        started = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
        ray_start = time.perf_counter() - started
        print(f"Ray start (local, 2 CPUs): {ray_start:.1f} s, not counted below")
        for pipeline, src in inputs.items():
            runs = all_runs[pipeline]
            samples, seconds = _run(pipeline, src, work / f"{pipeline}-ray", 2, "ray")
            runs["ray, 2 CPUs"] = [samples / seconds]
            rates = {label: float(np.median(values)) for label, values in runs.items()}
            local_2 = work / f"{pipeline}-local-2-0"
            same = all(_same(local_2, work / f"{pipeline}-local-{w}-{r}") for w in WORKERS
                       for r in range(args.repeats if pipeline == "pan-zoom" else 1))
            same_ray = _same(local_2, work / f"{pipeline}-ray")
            efficiency = {w: rates[f"local, {w}"] / (w * rates["local, 1"]) for w in WORKERS}
            overhead = rates["local, 2"] / rates["ray, 2 CPUs"]
            print(f"{pipeline} ({args.count} inputs; median of {len(runs['local, 1'])}):")
            for label, rate in rates.items():
                line = f"  {label:18s} {rate:6.2f} samples/s"
                workers = int(label.split(", ")[1]) if label.startswith("local") else 0
                if pipeline == "pan-zoom" and workers:
                    floor = float(np.median(floors[workers]))
                    each = ", ".join(f"{r / f:.2f}" for r, f in
                                     zip(runs[label], floors[workers], strict=True))
                    rest = float(np.median(steady[workers]))
                    line += (f"   x264 floor {floor:6.2f} clips/s, whole run / floor "
                             f"{rate / floor:.2f} (repeats: {each}); steady {rest:6.2f}/s, "
                             f"steady / floor {rest / floor:.2f}")
                print(line)
            print("  scaling efficiency: " + ", ".join(f"1->{w} {100 * e:.0f}%"
                                                       for w, e in efficiency.items() if w > 1)
                  + f"; local(2) / ray(2): {overhead:.2f}x; all worker counts byte-identical: "
                  f"{same}; ray byte-identical: {same_ray}")
            figures[pipeline] = {"rates": rates, "runs": runs, "efficiency": efficiency,
                                 "local_over_ray": overhead, "identical_workers": same,
                                 "identical_ray": same_ray}
        figures["pan-zoom"]["floors"] = floors
        figures["pan-zoom"]["steady"] = steady
        figures["ray_start_seconds"] = ray_start
    finally:
        import ray

        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
