"""Engines side by side: the local pool with 1 and 2 workers, and Ray Data on a local cluster.

    python bench/scale.py              # pan-zoom on 48 photos, caption (label) on 48 clips

For each pipeline, the same inputs run on: the local engine with 1 worker, with 2 workers
(scaling efficiency = rate(2) / (2 * rate(1))), and the Ray engine on a local 2-CPU Ray
(overhead = rate(local, 2) / rate(ray)). Rates are samples per second of the whole run,
start-up included (Ray's own start is reported apart). Every run writes to a fresh folder;
the Ray output is checked to be byte-identical to the local one.
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


def _run(pipeline: str, src: Path, out: Path, workers: int, engine: str) -> float:
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
    return stats["status"]["ok"] / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=48)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import ray

    work = Path(tempfile.mkdtemp(prefix="datakit-bench-scale-"))
    figures = {}
    try:
        inputs = {"pan-zoom": _photos(work / "photos", args.count),
                  "caption": _videos(work / "videos", args.count)}
        started = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
        ray_start = time.perf_counter() - started
        print(f"Ray start (local, 2 CPUs): {ray_start:.1f} s, not counted below")
        for pipeline, src in inputs.items():
            rates = {}
            for label, workers, engine in (("local, 1 worker", 1, "local"),
                                           ("local, 2 workers", 2, "local"),
                                           ("ray, 2 CPUs", 2, "ray")):
                out = work / f"{pipeline}-{engine}-{workers}"
                rates[label] = _run(pipeline, src, out, workers, engine)
            same = all((work / f"{pipeline}-ray-2" / "shards" / p.name).read_bytes()
                       == p.read_bytes()
                       for p in (work / f"{pipeline}-local-2" / "shards").glob("*.tar"))
            efficiency = rates["local, 2 workers"] / (2 * rates["local, 1 worker"])
            overhead = rates["local, 2 workers"] / rates["ray, 2 CPUs"]
            print(f"{pipeline} ({args.count} inputs):")
            for label, rate in rates.items():
                print(f"  {label:18s} {rate:6.2f} samples/s")
            print(f"  scaling efficiency 1->2 workers: {100 * efficiency:.0f}%; "
                  f"local(2) / ray(2): {overhead:.2f}x; ray output byte-identical: {same}")
            figures[pipeline] = {"rates": rates, "efficiency": efficiency,
                                 "local_over_ray": overhead, "identical": same}
        figures["ray_start_seconds"] = ray_start
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
