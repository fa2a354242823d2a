"""Benchmark `datakit report` on a large dataset: a 100,000-row manifest and its shards.

The dataset is built here, the way a captioning run over a long-tailed video set would leave
it: 700 labels with Zipf-like counts (rank r gets about r^-1.1 of the clips, as in VideoLT),
label-template captions (so near-duplicate groups are many), 93% ok, 4% failed, 2% skipped
and 1% watermarked rows with errors of several kinds, CLIP and watermark scores, pan-zoom
style motions in `meta`, and every ok clip in a shard of 1000 (each a real 8-frame H.264
clip, 96x64, cycled from 12 clips of scikit-image photos so the shards stay small).

Prints the wall time of the whole command (`python -m datakit.cli report OUT --samples 64`,
start-up included; best of --repeats) and where the time goes, measured in this process:
reading the manifest, the statistics, the sample choice, extracting the chosen clips, the
plots and the page. Example: python bench/report.py --rows 100000 --json /tmp/report.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina",
          "stereo_motorcycle", "immunohistochemistry", "moon", "brick", "gravel", "cat")
TEMPLATES = ("This is a video of {label}.", "A person is {label} outdoors.",
             "Someone is {label} in a room.", "A close-up of {label}.",
             "A group of people {label} together.", "A short clip of {label} at night.")
FAILURES = ("truncated video: moov atom not found", "unreadable: invalid data found",
            "decode error: corrupt frame {n}")
SKIPS = ("too short: {n} frames", "no label: not in the class list")


def _clips(count: int) -> list[bytes]:
    """Real 8-frame H.264 clips (96x64 at 8 fps) panning across scikit-image photos."""
    import cv2
    import skimage.data

    from datakit.io.video import encode_video

    clips = []
    for name in PHOTOS[:count]:
        image = getattr(skimage.data, name)()
        image = image[0] if isinstance(image, tuple) else image
        image = np.dstack([image] * 3) if image.ndim == 2 else image[..., :3]
        image = cv2.resize(image, (96 + 8 * 4, 64), interpolation=cv2.INTER_AREA)
        frames = [np.ascontiguousarray(image[:, 4 * i:4 * i + 96]) for i in range(8)]
        clips.append(encode_video(frames, 8.0, crf=28, preset="ultrafast"))
    return clips


def make_dataset(out: Path, rows: int, seed: int = 0, labels: int = 700) -> dict:
    """Write OUT/manifest.parquet, OUT/stats.json and OUT/shards/*.tar; return the counts."""
    import pyarrow.parquet as pq

    from datakit.run.shards import write_tar_sample
    from manifests.schema import make_row, rows_to_table

    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, labels + 1) ** 1.1
    names = [f"class_{i:03d}" for i in range(labels)]
    chosen_labels = rng.choice(labels, size=rows, p=weights / weights.sum())
    statuses = rng.choice(["ok", "failed", "skipped", "watermarked"], size=rows,
                          p=[0.93, 0.04, 0.02, 0.01])
    clips = _clips(len(PHOTOS))
    (out / "shards").mkdir(parents=True, exist_ok=True)
    table_rows, ok = [], 0
    tar = None
    for i in range(rows):
        key, label = f"video_{i:07d}", names[chosen_labels[i]]
        source = f"videos/{label}/{key}.mp4"
        status = str(statuses[i])
        if status != "ok":
            kinds = {"failed": FAILURES, "skipped": SKIPS}.get(
                status, ("watermark: static overlay at the top left",))
            error = kinds[i % len(kinds)]
            table_rows.append(make_row(key, status, source=source, label=label,
                                       error=error.format(n=i % 97),
                                       watermark_score=0.9 if status == "watermarked" else None))
            continue
        if ok % 1000 == 0:
            if tar is not None:
                tar.close()
            tar = tarfile.open(out / "shards" / f"{ok // 1000:05d}.tar", "w")  # noqa: SIM115
        caption = TEMPLATES[rng.integers(len(TEMPLATES))].format(label=label.replace("_", " "))
        mp4 = clips[i % len(clips)]
        write_tar_sample(tar, key, {"mp4": mp4, "txt": caption.encode()})
        table_rows.append(make_row(
            key, "ok", source=source, label=label, caption=caption, shard=f"{ok // 1000:05d}",
            width=96, height=64, frames=8, fps=8.0, bytes=len(mp4) + len(caption),
            clip_score=float(rng.normal(0.3, 0.03)), watermark_score=float(rng.beta(1, 12)),
            watermark_action="kept", seconds=0.5,
            meta={"motion": ("pan-left", "zoom-in", "diagonal-up-right")[i % 3]}))
        ok += 1
    if tar is not None:
        tar.close()
    pq.write_table(rows_to_table(table_rows), out / "manifest.parquet")
    stats = {"rows": rows, "run": {"processed": rows, "seconds": 3600.0,
                                   "per_second": rows / 3600.0, "finished_at": "bench"},
             "config": {"pipeline": "caption (benchmark)"}}
    (out / "stats.json").write_text(json.dumps(stats))
    return {"rows": rows, "ok": ok, "shards": -(-ok // 1000)}


def time_command(out: Path, report: Path, samples: int, repeats: int) -> list[float]:
    """Wall seconds of the whole `datakit report` command, per repeat."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "datakit.cli", "report", str(out), "--out",
                        str(report), "--samples", str(samples), "--quiet"], check=True,
                       env=env, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return times


def time_phases(out: Path, report: Path, samples: int) -> dict[str, float]:
    """Seconds of each step of `write_dataset_report`, run one by one in this process."""
    from datakit.run.dataset_report import (
        MEDIA,
        extract_samples,
        open_dataset,
        render_page,
        write_plots,
    )
    from manifests.report import choose_samples, dataset_statistics

    phases = {}
    started = time.perf_counter()
    dataset = open_dataset(out)
    phases["read manifest"] = time.perf_counter() - started
    started = time.perf_counter()
    stats = dataset_statistics(dataset.manifest)
    phases["statistics"] = time.perf_counter() - started
    started = time.perf_counter()
    chosen = choose_samples(dataset.manifest, samples, 0)
    phases["choose samples"] = time.perf_counter() - started
    started = time.perf_counter()
    clips = extract_samples(dataset, chosen, report / MEDIA)
    phases[f"extract {len(clips)} clips"] = time.perf_counter() - started
    started = time.perf_counter()
    plots = write_plots(dataset.manifest, report / MEDIA / "plots")
    phases["plots"] = time.perf_counter() - started
    started = time.perf_counter()
    page = render_page(dataset, stats, clips, plots, [], samples, 0)
    (report / "index.html").write_text(page)
    phases["page"] = time.perf_counter() - started
    phases["page MB"] = len(page.encode()) / 1e6
    return phases


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="manifest rows (100000)")
    parser.add_argument("--samples", type=int, default=64, help="--samples (64)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of the command (3)")
    parser.add_argument("--workdir", type=Path, help="keep the dataset and report here")
    parser.add_argument("--json", type=Path, help="also save the figures here")
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="datakit-bench-report-"))
    out = workdir / "dataset"
    started = time.perf_counter()
    counts = make_dataset(out, args.rows)
    built = time.perf_counter() - started
    size = sum(p.stat().st_size for p in (out / "shards").glob("*.tar"))
    print(f"dataset: {counts['rows']:,} rows, {counts['ok']:,} ok clips in {counts['shards']} "
          f"shards ({size / 1e6:.0f} MB), manifest "
          f"{(out / 'manifest.parquet').stat().st_size / 1e6:.1f} MB; built in {built:.1f} s")
    times = time_command(out, workdir / "report", args.samples, args.repeats)
    print(f"datakit report --samples {args.samples}: best {min(times):.2f} s, runs "
          + ", ".join(f"{t:.2f}" for t in times))
    phases = time_phases(out, workdir / "phases", args.samples)
    for name, value in phases.items():
        print(f"  {name:<20} {value:7.3f}" + ("" if name.endswith("MB") else " s"))
    figures = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} "
               f"cores, Python {platform.python_version()}", **counts, "shard_mb": size / 1e6,
               "command_seconds": times, "phases": phases, "workdir": str(workdir)}
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return figures


if __name__ == "__main__":
    main()
