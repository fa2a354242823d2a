"""Benchmark watermark detection and removal: real footage, and three synthetic generators.

Parts (`--parts`, comma-separated; default `real,fresh`):
- `real` (bench/watermark_real.py): clean real camera clips and real photos that registry
  packages ship (bench/watermark_media.py lists them, with the held-out ones), then the same
  with realistic marks (bench/watermark_marks.py: TrueType text at several opacities, a
  URL, a channel bug, a logo, a large centre word). False flags on clean clips and photos,
  recall and precision on marked clips at opacity >= 0.3, the strip against ffmpeg `delogo`
  inside the mark and the strip outside it, what `--watermarks strip` does to clean clips
  (in memory and through `datakit watermark` on a shard: bytes kept), detection cost against
  encoding each clip.
- `fresh` (bench/watermark_fresh.py): detection on a second, independent synthetic
  generator (`--fresh-seeds`, `--fresh-clips` per seed), never used to tune the detector.
- `third` (bench/watermark_third.py): detection on a third generator, written after the
  second had screened changes (`--third-seeds`, `--third-clips` per seed).
- `synthetic`: the first generator (below), with removal and cost; `--detect-sets N` runs
  detection alone on N of its sets instead of any part.

The first generator: clean clips made from scikit-image's sample photos, either a camera move
over the photo (`plan_path` + `render_clip`) or real content motion (the
photo stays put while a second photo, cut out as a disc, travels across it and the scene
breathes with a slow non-rigid warp). Each clean clip gets a static overlay whose mask is
known: text drawn with cv2.putText or a logo shape (ring, filled disc with a bar), white or
black, opacity 0.2 to 1.0, in one of the four corners or the centre, 3-15% of the frame's
area; a share of the clips keep no mark (false positives). Reported for it (and written with
--json):
1. detection precision and recall at the default threshold, overall and per opacity band,
   and the IoU of the found mask with the true one (and of the boxes);
2. removal inside the true mask, against the clean clip: PSNR and SSIM for datakit, for no
   action, a Gaussian blur of the box, and ffmpeg's `delogo` on the same box (the
   imageio-ffmpeg binary); temporal stability: mean absolute frame-to-frame difference
   inside the mask, minus the clean clip's (0 = as steady as the truth);
3. cost: detection and removal seconds per clip against encoding the clip (x264 medium);
4. the still-image detector (no classifier) on marked and clean photos.

Removal is measured on the filling path (`crop_band=0`, so no clip is cropped, since a crop
changes the geometry and has no pixel truth); how many marks would have been cropped is
counted separately. Examples: python bench/watermark.py (real footage and the second
generator); python bench/watermark.py --parts synthetic --clips 60 --json /tmp/wm.json;
detection alone on 18 sets of the first generator (seeds 0-17):
python bench/watermark.py --detect-sets 18 --json /tmp/wm-sets.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from watermark_metrics import (  # noqa: E402 (after the path set-up)
    blur_box,
    box_mask,
    counts,
    delogo,
    detection_counts,
    instability,
    iou,
    masked_psnr,
    masked_ssim,
)

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle",
          "immunohistochemistry", "hubble_deep_field", "retina")
PLACES = ("top-left", "top-right", "bottom-left", "bottom-right", "centre")
WORDS = ("stockclip", "(c) FILMS", "PREVIEW", "getvideo.com", "NEWS 24", "sample")


@dataclass
class Case:
    """One labelled clip: the clean frames, the marked frames and the true mask."""

    name: str
    clean: np.ndarray  # (T, H, W, 3) uint8
    marked: np.ndarray
    mask: np.ndarray | None  # bool (H, W): where alpha > 0
    opacity: float
    kind: str  # text, logo or none
    place: str
    motion: str  # camera or content


def photo(name: str) -> np.ndarray:
    import skimage.data

    image = getattr(skimage.data, name)()
    if isinstance(image, tuple):
        image = image[0]
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


def camera_clip(image: np.ndarray, width: int, height: int, frames: int,
                rng: np.random.Generator) -> np.ndarray:
    from synthesize.pan_zoom import Motion, PanZoomConfig, plan_path
    from synthesize.render import render_clip

    config = PanZoomConfig(width=width, height=height, frames=frames, fps=8.0,
                           speed_range=(0.08, 0.2), zoom_range=(1.15, 1.4))
    motions = [m for m in Motion]
    motion = motions[int(rng.integers(len(motions)))]
    path = plan_path(motion, (image.shape[1], image.shape[0]), config, rng)
    return np.stack(list(render_clip(image, path, width, height, frames)))


def content_clip(image: np.ndarray, sprite: np.ndarray, width: int, height: int, frames: int,
                 rng: np.random.Generator) -> np.ndarray:
    """A fixed camera: the scene sways (smooth non-rigid warp) and a disc cut from another
    photo crosses it."""
    import cv2

    base = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32)
    radius = int(min(width, height) * rng.uniform(0.18, 0.3))
    disc = cv2.resize(sprite, (2 * radius, 2 * radius), interpolation=cv2.INTER_AREA)
    yy, xx = np.mgrid[:2 * radius, :2 * radius]
    inside = (xx - radius + 0.5) ** 2 + (yy - radius + 0.5) ** 2 < radius ** 2
    start = np.array([rng.uniform(0, width), rng.uniform(0, height)])
    velocity = rng.uniform(-1, 1, 2)
    velocity = velocity / np.linalg.norm(velocity) * rng.uniform(0.6, 1.2) * width / frames
    grid_y, grid_x = np.mgrid[:height, :width].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, 2)
    out = []
    for t in range(frames):
        amplitude = 6.0 * np.sin(2 * np.pi * t / frames + phase[0])
        map_x = (grid_x + amplitude * np.sin(grid_y / 23.0 + t * 0.4 + phase[1]))
        map_y = (grid_y + amplitude * np.cos(grid_x / 31.0 + t * 0.3))
        map_x, map_y = map_x.astype(np.float32), map_y.astype(np.float32)
        frame = cv2.remap(base, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        cx, cy = (start + velocity * t) % (width, height)
        x0, y0 = int(cx) - radius, int(cy) - radius
        ys, xs = np.nonzero(inside)
        keep = (ys + y0 >= 0) & (ys + y0 < height) & (xs + x0 >= 0) & (xs + x0 < width)
        frame[ys[keep] + y0, xs[keep] + x0] = disc[ys[keep], xs[keep]]
        out.append(np.clip(frame, 0, 255).astype(np.uint8))
    return np.stack(out)


def overlay(width: int, height: int, kind: str, place: str, area: float,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A mark's alpha (float 0..1, antialiased) and colour image, covering about `area` of
    the frame with its bounding box."""
    import cv2

    box_w = int(np.sqrt(area * width * height * (3.0 if kind == "text" else 1.0)))
    box_h = int(area * width * height / max(1, box_w))
    box_w, box_h = min(box_w, width - 8), min(box_h, height - 8)
    layer = np.zeros((box_h, box_w), np.uint8)
    if kind == "text":
        word = WORDS[int(rng.integers(len(WORDS)))]
        scale = 1.0
        (tw, th), base = cv2.getTextSize(word, cv2.FONT_HERSHEY_SIMPLEX, scale, 2)
        scale = min(box_w / tw, box_h / (th + base)) * 0.95
        thick = max(1, int(round(scale * 2.2)))
        (tw, th), base = cv2.getTextSize(word, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        cv2.putText(layer, word, ((box_w - tw) // 2, (box_h + th) // 2 - base // 2),
                    cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thick, cv2.LINE_AA)
    else:
        r = min(box_w, box_h) // 2 - 1
        centre = (box_w // 2, box_h // 2)
        cv2.circle(layer, centre, r, 255, max(2, r // 4), cv2.LINE_AA)
        cv2.rectangle(layer, (centre[0] - r // 2, centre[1] - r // 6),
                      (centre[0] + r // 2, centre[1] + r // 6), 255, -1)
        cv2.rectangle(layer, (0, 0), (max(2, box_w // 5), box_h - 1), 255, -1)
    margin = int(rng.integers(4, max(5, int(0.04 * min(width, height)))))
    x = {"left": margin, "right": width - box_w - margin}.get(place.split("-")[-1],
                                                             (width - box_w) // 2)
    y = {"top": margin, "bottom": height - box_h - margin}.get(place.split("-")[0],
                                                              (height - box_h) // 2)
    alpha = np.zeros((height, width), np.float32)
    alpha[y:y + box_h, x:x + box_w] = layer / 255.0
    colour = np.full((height, width, 3), 255.0 if rng.random() < 0.6 else 0.0, np.float32)
    return alpha, colour


def blend(frames: np.ndarray, alpha: np.ndarray, colour: np.ndarray, opacity: float):
    a = (alpha * opacity)[None, ..., None]
    return np.clip(a * colour[None] + (1 - a) * frames, 0, 255).round().astype(np.uint8)


def make_cases(count: int, width: int, height: int, frames: int, seed: int) -> list[Case]:
    rng = np.random.default_rng(seed)
    photos = [photo(n) for n in PHOTOS]
    cases = []
    for index in range(count):
        image = photos[index % len(photos)]
        motion = "content" if index % 3 == 2 else "camera"
        if motion == "camera":
            clean = camera_clip(image, width, height, frames, rng)
        else:
            sprite = photos[(index + 3) % len(photos)]
            clean = content_clip(image, sprite, width, height, frames, rng)
        if index % 5 == 4:
            cases.append(Case(f"{index:03d}-clean", clean, clean, None, 0.0, "none", "-", motion))
            continue
        kind = "text" if rng.random() < 0.6 else "logo"
        place = PLACES[index % len(PLACES)]
        opacity = float(rng.choice([0.2, 0.3, 0.5, 0.7, 1.0]))
        area = float(rng.uniform(0.03, 0.15))
        alpha, colour = overlay(width, height, kind, place, area, rng)
        marked = blend(clean, alpha, colour, opacity)
        cases.append(Case(f"{index:03d}-{kind}-{place}-{opacity:g}", clean, marked,
                          alpha > 0.02, opacity, kind, place, motion))
    return cases


# --------------------------------------------------------------------------------------------


def run(args) -> dict:
    from datakit.io.video import encode_video
    from synthesize.watermark import (
        Detection,
        WatermarkConfig,
        crop_window,
        detect_video,
        remove_watermark,
    )

    width, height = (int(v) for v in args.size.split("x"))
    cases = make_cases(args.clips, width, height, args.frames, args.seed)
    config = WatermarkConfig()
    fill_config = WatermarkConfig(crop_band=0.0)
    rows = []
    for case in cases:
        started = time.perf_counter()
        detection = detect_video(case.marked, config)
        detect_s = time.perf_counter() - started
        row = {"name": case.name, "opacity": case.opacity, "kind": case.kind,
               "motion": case.motion, "place": case.place, "score": detection.score,
               "found": detection.found, "detect_s": detect_s}
        started = time.perf_counter()
        encode_video(case.marked, 8.0, crf=18, preset="medium", threads=1)
        row["encode_s"] = time.perf_counter() - started
        if case.mask is not None:
            truth_box = tuple(int(v) for v in (np.nonzero(case.mask)[1].min(),
                                               np.nonzero(case.mask)[0].min(),
                                               np.nonzero(case.mask)[1].max() + 1,
                                               np.nonzero(case.mask)[0].max() + 1))
            if detection.mask is not None:
                row["mask_iou"] = iou(detection.mask, case.mask)
                row["box_iou"] = iou(box_mask(detection.box, case.mask.shape),
                                     box_mask(truth_box, case.mask.shape))
                row["would_crop"] = crop_window(detection.box, case.mask.shape,
                                                config.crop_band) is not None
            if detection.found:
                started = time.perf_counter()
                cleaned, _ = remove_watermark(case.marked, detection, fill_config)
                row["remove_s"] = time.perf_counter() - started
                box = detection.box
                truth = Detection(1.0, True, case.mask, truth_box, "truth")
                results = {"datakit": cleaned, "none": case.marked,
                           "blur": blur_box(case.marked, box),
                           "delogo": delogo(case.marked, box),
                           "datakit_true_mask": remove_watermark(case.marked, truth,
                                                                 fill_config)[0],
                           "delogo_true_box": delogo(case.marked, truth_box)}
                for method, frames in results.items():
                    row[f"psnr_{method}"] = masked_psnr(frames, case.clean, case.mask)
                    row[f"ssim_{method}"] = masked_ssim(frames, case.clean, case.mask)
                    row[f"flicker_{method}"] = instability(frames, case.clean, case.mask)
        rows.append(row)
        if args.verbose:
            print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v)
                              for k, v in row.items()}), flush=True)
    return summarise(rows, args)


def run_stills(count: int, width: int, height: int, seed: int) -> dict:
    """The still-image detector (no classifier) on photos: half get a mark (opacity 0.3 to
    1.0), half stay clean; precision and recall at the default threshold."""
    import cv2

    from synthesize.watermark import WatermarkConfig, detect_image

    rng = np.random.default_rng(seed + 1)
    photos = [photo(n) for n in PHOTOS]
    found = {"marked": [], "clean": []}
    for index in range(count):
        image = photos[index % len(photos)]
        h, w = image.shape[:2]
        side = rng.uniform(0.6, 1.0)
        crop_h, crop_w = int(h * side), int(w * side)
        top, left = int(rng.integers(0, h - crop_h + 1)), int(rng.integers(0, w - crop_w + 1))
        still = cv2.resize(image[top:top + crop_h, left:left + crop_w], (width, height),
                           interpolation=cv2.INTER_AREA)
        if index % 2:
            found["clean"].append(detect_image(still, WatermarkConfig()).found)
            continue
        kind = "text" if rng.random() < 0.6 else "logo"
        alpha, colour = overlay(width, height, kind, PLACES[index % len(PLACES)],
                                float(rng.uniform(0.03, 0.15)), rng)
        opacity = float(rng.choice([0.3, 0.5, 0.7, 1.0]))
        marked = blend(still[None], alpha, colour, opacity)[0]
        found["marked"].append(detect_image(marked, WatermarkConfig()).found)
    return detection_counts(sum(found["marked"]), len(found["marked"]), sum(found["clean"]),
                            len(found["clean"]))


def detect_set(task: tuple[int, int, int, int, int]) -> dict:
    """Detection only, on one labelled set: (seed, clips, width, height, frames) -> per-set
    recall and precision at opacity >= 0.3, and the marks missed / clean clips flagged."""
    from synthesize.watermark import WatermarkConfig, detect_video

    seed, clips, width, height, frames = task
    config = WatermarkConfig()
    marked, clean, missed, flagged = 0, 0, [], []
    for case in make_cases(clips, width, height, frames, seed):
        if case.mask is not None and case.opacity < 0.3:
            continue
        found = detect_video(case.marked, config).found
        if case.mask is None:
            clean += 1
            flagged += [case.name] if found else []
        else:
            marked += 1
            missed += [] if found else [case.name]
    return {"seed": seed, "missed": missed, "flagged": flagged,
            **detection_counts(marked - len(missed), marked, len(flagged), clean)}


def run_detection_sets(args) -> dict:
    """`--detect-sets N`: sets of `--clips` clips made with seeds SEED .. SEED+N-1, detection
    only, one set per worker process. One 60-clip set holds about 40 marks at opacity >= 0.3,
    so one miss moves its recall by 0.025: the pooled figure is the one to compare."""
    from multiprocessing import get_context

    width, height = (int(v) for v in args.size.split("x"))
    tasks = [(args.seed + k, args.clips, width, height, args.frames)
             for k in range(args.detect_sets)]
    with get_context("spawn").Pool(args.workers, initializer=pool_worker) as pool:
        sets = pool.map(detect_set, tasks, chunksize=1)
    total = {key: sum(s[key] for s in sets) for key in ("true_pos", "marked", "false_pos",
                                                         "clean")}
    return {"settings": vars(args), "platform": platform.platform(), "sets": sets,
            "pooled": detection_counts(**total)}


def summarise(rows: list[dict], args) -> dict:
    marked = [r for r in rows if r["kind"] != "none"]
    clean = [r for r in rows if r["kind"] == "none"]

    def detection(subset_marked, subset_clean):
        return detection_counts(sum(r["found"] for r in subset_marked), len(subset_marked),
                                sum(r["found"] for r in subset_clean), len(subset_clean))

    summary = {
        "settings": vars(args), "platform": platform.platform(),
        "detection": {
            "all": detection(marked, clean),
            "opacity>=0.3": detection([r for r in marked if r["opacity"] >= 0.3], clean),
            "by_opacity": {f"{o:g}": detection([r for r in marked if r["opacity"] == o], [])
                           ["recall"] for o in sorted({r["opacity"] for r in marked})},
            "by_motion": {m: detection([r for r in marked if r["motion"] == m],
                                       [r for r in clean if r["motion"] == m])
                          for m in ("camera", "content")},
            "mask_iou": float(np.mean([r["mask_iou"] for r in marked if "mask_iou" in r]
                                      or [0])),
            "box_iou": float(np.mean([r["box_iou"] for r in marked if "box_iou" in r] or [0])),
            "would_crop": int(sum(r.get("would_crop", False) for r in marked if r["found"])),
        },
        "removal": {},
        "cost": {"detect_s": float(np.mean([r["detect_s"] for r in rows])),
                 "encode_s": float(np.mean([r["encode_s"] for r in rows])),
                 "remove_s": float(np.mean([r["remove_s"] for r in rows if "remove_s" in r]
                                           or [0]))},
        "rows": rows,
    }
    removed = [r for r in marked if "psnr_datakit" in r]
    for method in ("datakit", "none", "blur", "delogo", "datakit_true_mask", "delogo_true_box"):
        for subset, name in ((removed, "all"),
                             ([r for r in removed if r["motion"] == "camera"], "camera"),
                             ([r for r in removed if r["motion"] == "content"], "content")):
            if subset:
                summary["removal"].setdefault(method, {})[name] = {
                    "psnr": float(np.mean([r[f"psnr_{method}"] for r in subset])),
                    "ssim": float(np.mean([r[f"ssim_{method}"] for r in subset])),
                    "flicker": float(np.mean([r[f"flicker_{method}"] for r in subset])),
                    "clips": len(subset)}
    return summary


def print_summary(summary: dict) -> None:
    d = summary["detection"]
    for name in ("all", "opacity>=0.3"):
        print(f"detection {name}: {counts(d[name])}")
    print("recall by opacity:", {k: round(v, 3) for k, v in d["by_opacity"].items()})
    for motion, s in d["by_motion"].items():
        print(f"  {motion}: recall {s['recall']:.3f} precision {s['precision']:.3f}")
    print(f"mask IoU {d['mask_iou']:.3f}, box IoU {d['box_iou']:.3f}, "
          f"found marks in a crop band: {d['would_crop']}")
    for method, parts in summary["removal"].items():
        text = "; ".join(f"{k}: PSNR {v['psnr']:.2f} SSIM {v['ssim']:.3f} flicker "
                         f"{v['flicker']:+.2f} (n={v['clips']})" for k, v in parts.items())
        print(f"removal {method:17s} {text}")
    c = summary["cost"]
    print(f"cost per clip: detect {c['detect_s'] * 1000:.1f} ms, encode {c['encode_s'] * 1000:.1f}"
          f" ms, remove {c['remove_s'] * 1000:.1f} ms")


def quiet_worker() -> None:
    """One OpenCV thread per worker process: the pool is the parallelism."""
    import cv2

    cv2.setNumThreads(1)


def pool_worker() -> None:
    """A pool's worker process: `quiet_worker`, and Ctrl-C left to the main process, which
    stops the pool (a worker that took the signal too died with its task, and the pool
    waited for that task for ever)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    quiet_worker()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="real,fresh",
                        help="comma-separated: real, fresh, third, synthetic")
    parser.add_argument("--clips", type=int, default=60, help="clips of the first generator")
    parser.add_argument("--stills", type=int, default=40)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", default="512x320")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fresh-seeds", default="1000",
                        help="comma-separated seeds of the second generator's sets")
    parser.add_argument("--fresh-clips", type=int, default=48, help="clips per fresh set")
    parser.add_argument("--third-seeds", default="17000,17001,17002,17003,17004,17005",
                        help="comma-separated seeds of the third generator's sets")
    parser.add_argument("--third-clips", type=int, default=40, help="clips per third set")
    parser.add_argument("--strip-marks", type=int, default=2,
                        help="real footage: marks per clip whose strip is measured against "
                             "delogo (7: all; 0: detection only, and no shard run)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--detect-sets", type=int, default=0,
                        help="detection only, on this many sets (seeds SEED, SEED+1, ...)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="processes for the real, fresh and third parts and "
                             "--detect-sets")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    quiet_worker()
    parts = set(args.parts.split(","))
    unknown = parts - {"real", "fresh", "third", "synthetic"}
    if unknown:
        parser.error(f"--parts: unknown {sorted(unknown)}")
    started = time.perf_counter()
    if args.detect_sets:
        summary = run_detection_sets(args)
        for s in summary["sets"]:
            print(f"seed {s['seed']}: opacity >= 0.3 {counts(s)} missed {s['missed']} "
                  f"flagged {s['flagged']}")
        print(f"pooled over {len(summary['sets'])} sets: {counts(summary['pooled'])}")
    else:
        from multiprocessing import get_context

        from watermark_fresh import print_fresh, run_fresh
        from watermark_real import print_real, run_real
        from watermark_third import print_third, run_third

        summary = {"settings": vars(args), "platform": platform.platform()}
        with get_context("spawn").Pool(args.workers, initializer=pool_worker) as pool:
            if "real" in parts:
                summary["real"] = run_real(pool, args.seed, args.strip_marks)
                print_real(summary["real"])
            if "fresh" in parts:
                seeds = [int(s) for s in args.fresh_seeds.split(",")]
                summary["fresh"] = run_fresh(pool, seeds, args.fresh_clips)
                print_fresh(summary["fresh"])
            if "third" in parts:
                seeds = [int(s) for s in args.third_seeds.split(",")]
                summary["third"] = run_third(pool, seeds, args.third_clips)
                print_third(summary["third"])
        if "synthetic" in parts:
            summary["synthetic"] = run(args)
            width, height = (int(v) for v in args.size.split("x"))
            summary["synthetic"]["stills"] = run_stills(args.stills, width, height, args.seed)
            print("== first synthetic generator")
            print_summary(summary["synthetic"])
            print(f"stills (heuristic, no classifier): {counts(summary['synthetic']['stills'])}")
    print(f"bench wall time {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2, default=str) + "\n")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        raise SystemExit("stopped (Ctrl-C): nothing was written; rerun to start again") from None
