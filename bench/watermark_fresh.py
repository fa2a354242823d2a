"""A second synthetic generator for the watermark bench, written apart from the first
(`watermark.make_cases`) so the detector can be judged on clips it was never tuned on.

It shares nothing with the first but the blend. Content: other photos (matplotlib's Grace
Hopper, scikit-image's camera, coins, brick, gravel, Kivy's wall and textures). Motion: a
hand-held camera (a random walk with rotation and zoom jitter), two-plane parallax (a band
of a second photo slides over a slower background), a slow roll with zoom, a still camera
with objects crossing and the exposure breathing, and a cross-fade between two photos under
a drift. Every clip gets sensor noise and, in most, an x264 round trip (crf 23-30). Marks:
text in serif, monospace and Computer Modern faces (outlined, shadowed, coloured, embossed),
a burned-in timestamp, a lower-third bar with a caption, two-line credits and drawn logos
(disc, shield, diamond with letters), anywhere along the edges or near the centre, with
random offsets, 1-15% of the frame. Sizes and lengths vary: 320x240 to 640x360, 24-40 frames.
A quarter of the clips stay clean.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from watermark_marks import Overlay, place, shape_logo, text_layer
from watermark_media import Photo, photo_pixels

CONTENT = (Photo("grace_hopper", "matplotlib", False), Photo("camera", "skimage", False),
           Photo("coins", "skimage", False), Photo("brick", "skimage", False),
           Photo("gravel", "skimage", False), Photo("wall", "wall", False),
           Photo("faust", "faust", False))
SIZES = ((320, 240), (426, 240), (480, 270), (640, 360), (360, 360))
MOTIONS = ("handheld", "parallax", "roll", "crossing", "crossfade")
STYLES = ("serif", "timestamp", "lower-third", "credits", "shape-logo", "emboss")
WHERE = ("top-left", "top-right", "bottom-left", "bottom-right", "top-centre",
         "bottom-centre", "left-middle", "right-middle", "centre")
SERIF_FACES = ("DejaVuSerif", "DejaVuSerif-Bold", "DejaVuSerif-Italic", "STIXGeneral",
               "STIXGeneralBol", "cmr10", "cmss10", "DejaVuSansMono-Bold")
NAMES = ("Lumen Studio", "northlight films", "(c) 2024 Orbit Media", "FRAMEWORKS",
         "kestrel.video", "Atlas Archive")


@dataclass
class FreshCase:
    name: str
    clean: np.ndarray
    marked: np.ndarray
    overlay: Overlay | None
    motion: str


def warp(image: np.ndarray, width: int, height: int, cx: float, cy: float, scale: float,
         angle: float) -> np.ndarray:
    """The frame a camera sees looking at (cx, cy) of the image, `scale` image pixels per
    frame pixel, rolled by `angle` degrees."""
    import cv2

    matrix = cv2.getRotationMatrix2D((cx, cy), angle, 1.0 / scale)
    matrix[:, 2] += (width / 2 - cx, height / 2 - cy)
    return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT)


def content(motion: str, images: list[np.ndarray], width: int, height: int, frames: int,
            rng: np.random.Generator) -> np.ndarray:
    """A clean clip of one of the five motions."""
    base = images[0].astype(np.float32)
    h, w = base.shape[:2]
    scale = min(w / width, h / height) / rng.uniform(1.25, 1.6)
    cx, cy = w / 2 + rng.uniform(-0.1, 0.1) * w, h / 2 + rng.uniform(-0.1, 0.1) * h
    out = []
    if motion == "handheld":
        steps = rng.normal(0, 1.6 * scale, (frames, 2)).cumsum(0) + rng.uniform(-1, 1, 2) * \
            np.arange(frames)[:, None] * scale
        for t in range(frames):
            out.append(warp(base, width, height, cx + steps[t, 0], cy + steps[t, 1],
                            scale * (1 + 0.01 * rng.normal()), rng.normal(0, 0.4)))
    elif motion == "parallax":
        band_h = int(height * rng.uniform(0.25, 0.4))
        top = int(rng.uniform(0.3, 0.6) * (height - band_h))
        speed = rng.uniform(0.6, 1.4) * scale * rng.choice([-1, 1])
        second = images[1].astype(np.float32)
        s2 = min(second.shape[1] / width, second.shape[0] / height) / 2.0
        for t in range(frames):
            frame = warp(base, width, height, cx + speed * t, cy, scale, 0.0)
            front = warp(second, width, height, second.shape[1] / 2 + 4 * speed / scale * s2 * t,
                         second.shape[0] / 2, s2, 0.0)
            frame[top:top + band_h] = front[top:top + band_h]
            out.append(frame)
    elif motion == "roll":
        spin, zoom = rng.uniform(0.3, 0.9) * rng.choice([-1, 1]), rng.uniform(-0.008, 0.008)
        for t in range(frames):
            out.append(warp(base, width, height, cx, cy, scale * (1 + zoom) ** t, spin * t))
    elif motion == "crossing":
        frame0 = warp(base, width, height, cx, cy, scale, 0.0)
        second = images[1]
        movers = []
        for _ in range(int(rng.integers(2, 5))):
            mh, mw = int(height * rng.uniform(0.15, 0.35)), int(width * rng.uniform(0.1, 0.3))
            y0, x0 = int(rng.integers(0, second.shape[0] - mh)), int(rng.integers(
                0, second.shape[1] - mw))
            movers.append((second[y0:y0 + mh, x0:x0 + mw].astype(np.float32),
                           rng.uniform(0, height - mh), rng.uniform(-mw, width),
                           rng.uniform(3, 9) * rng.choice([-1, 1])))
        for t in range(frames):
            frame = frame0 * (1 + 0.04 * np.sin(t / 3.0 + rng.uniform(0, 0.3)))
            for patch, y, x, v in movers:
                x_now = int(x + v * t) % (width + patch.shape[1]) - patch.shape[1]
                xs = slice(max(0, x_now), min(width, x_now + patch.shape[1]))
                if xs.start < xs.stop:
                    frame[int(y):int(y) + patch.shape[0], xs] = \
                        patch[:, xs.start - x_now:xs.stop - x_now]
            out.append(frame)
    else:  # crossfade
        second = images[1].astype(np.float32)
        s2 = min(second.shape[1] / width, second.shape[0] / height) / 1.3
        drift = rng.uniform(-1, 1, 2) * scale
        for t in range(frames):
            a = warp(base, width, height, cx + drift[0] * t, cy + drift[1] * t, scale, 0.0)
            b = warp(second, width, height, second.shape[1] / 2 - drift[0] * t,
                     second.shape[0] / 2, s2, 0.0)
            mix = float(np.clip((t - frames * 0.3) / (frames * 0.4), 0, 1))
            out.append((1 - mix) * a + mix * b)
    return np.stack(out).astype(np.float32, copy=False)


def fresh_overlay(width: int, height: int, rng: np.random.Generator) -> Overlay:
    """One mark in one of the six styles, placed with a random offset."""
    style = str(rng.choice(STYLES))
    where = str(rng.choice(WHERE))
    size = int(height * rng.uniform(0.05, 0.12))
    colour = tuple(int(v) for v in rng.choice([(255, 255, 255), (255, 230, 80), (150, 210, 255),
                                               (15, 15, 15), (230, 60, 60)]))
    if style == "serif":
        layer = text_layer(str(rng.choice(NAMES)), str(rng.choice(SERIF_FACES)), size, colour,
                           stroke=int(rng.integers(0, 3)), shadow=int(rng.integers(0, 3)))
    elif style == "timestamp":
        stamp = f"2024-0{rng.integers(1, 9)}-1{rng.integers(0, 9)} 1{rng.integers(0, 9)}:" \
                f"{rng.integers(10, 59)}:{rng.integers(10, 59)}"
        layer = text_layer(stamp, "DejaVuSansMono", max(9, int(size * 0.8)), colour, stroke=1)
        where = str(rng.choice(["bottom-left", "bottom-right", "top-left"]))
    elif style == "lower-third":
        from PIL import Image, ImageDraw

        caption = text_layer(str(rng.choice(NAMES)), "DejaVuSans", size, (255, 255, 255))
        bar = Image.new("RGBA", (int(width * rng.uniform(0.4, 0.7)), int(size * 2.2)),
                        (0, 0, 0, 0))
        ImageDraw.Draw(bar).rectangle((0, 0, bar.width, bar.height), fill=(10, 30, 90, 200))
        bar.alpha_composite(caption, (size // 2, (bar.height - caption.height) // 2))
        layer = bar
        where = str(rng.choice(["bottom-left", "bottom-centre"]))
    elif style == "credits":
        from PIL import Image

        first = text_layer(str(rng.choice(NAMES)), "STIXGeneralBol", size, colour, stroke=1)
        second = text_layer("all rights reserved", "DejaVuSerif", max(8, size // 2), colour)
        layer = Image.new("RGBA", (max(first.width, second.width), first.height + second.height))
        layer.alpha_composite(first, ((layer.width - first.width) // 2, 0))
        layer.alpha_composite(second, ((layer.width - second.width) // 2, first.height))
    elif style == "shape-logo":
        layer = shape_logo(str(rng.choice(["TV", "HD", "K", "NL"])), int(size * 2.2),
                           str(rng.choice(["disc", "shield", "diamond"])), colour[:3]
                           if colour != (255, 255, 255) else (40, 120, 200))
    else:  # emboss: a light copy and a dark copy, one pixel apart
        from PIL import Image

        word = str(rng.choice(NAMES))
        face = str(rng.choice(SERIF_FACES))
        light = text_layer(word, face, size, (255, 255, 255))
        dark = text_layer(word, face, size, (0, 0, 0))
        layer = Image.new("RGBA", (light.width + 2, light.height + 2))
        layer.alpha_composite(dark, (2, 2))
        layer.alpha_composite(light, (0, 0))
    margin = int(min(width, height) * rng.uniform(0.02, 0.1))
    offset = (int(rng.normal(0, 0.02 * width)), int(rng.normal(0, 0.02 * height)))
    colour_layer, alpha = place(layer, width, height, where, margin, offset)
    opacity = float(rng.choice([0.2, 0.3, 0.45, 0.6, 0.8, 1.0]))
    return Overlay(style, f"{style}-{where}-{opacity:g}", colour_layer, alpha, opacity)


def finish(frames: np.ndarray, noise: float, crf: int | None, fps: float) -> np.ndarray:
    """Sensor noise, then an optional x264 round trip, as a camera and an upload would."""
    from datakit.io.video import encode_video, read_frames

    rng = np.random.default_rng(int(frames[0, 0, 0, 0]) + len(frames))
    grain = rng.standard_normal(frames.shape, dtype=np.float32) * noise
    noisy = np.clip(frames + grain, 0, 255).round().astype(np.uint8)
    if crf is None:
        return noisy
    return read_frames(encode_video(noisy, fps, crf=crf, preset="veryfast", threads=1))


def fresh_case(seed: int, index: int, images: list[np.ndarray]) -> FreshCase:
    """Clip `index` of the set made with `seed` (each clip from its own generator)."""
    rng = np.random.default_rng([seed, index])
    width, height = SIZES[int(rng.integers(len(SIZES)))]
    frames = int(rng.integers(24, 41))
    motion = MOTIONS[int(rng.integers(len(MOTIONS)))]
    picks = rng.choice(len(images), 2, replace=False)
    clean = content(motion, [images[i] for i in picks], width, height, frames, rng)
    overlay = None if rng.random() < 0.25 else fresh_overlay(width, height, rng)
    noise = float(rng.uniform(0.5, 3.0))
    crf = None if rng.random() < 0.25 else int(rng.integers(23, 31))
    fps = float(rng.choice([12.0, 24.0, 25.0]))
    clean = np.clip(clean, 0, 255, out=clean)
    marked = overlay.blend(clean) if overlay else clean.round().astype(np.uint8)
    clean_frames = finish(clean.round().astype(np.uint8), noise, crf, fps)
    marked_frames = finish(marked, noise, crf, fps) if overlay else clean_frames
    label = overlay.label if overlay else "clean"
    return FreshCase(f"{seed}-{index:03d}-{motion}-{label}", clean_frames, marked_frames,
                     overlay, motion)


def case_row(case) -> dict:
    """Detection on one generated clip (a `FreshCase` or `watermark_third.ThirdCase`); for a
    missed mark, the evidence that was there to be found (`watermark_ceiling.evidence_there`)."""
    from watermark_ceiling import evidence_there
    from watermark_real import detect, overlaps

    detection, fields, detect_s = detect(case.marked)
    row = {"name": case.name, "motion": case.motion, "marked": case.overlay is not None,
           "flagged": detection.found, "score": fields["watermark_score"], "detect_s": detect_s}
    if case.overlay is not None:
        row.update(kind=case.overlay.kind, opacity=case.overlay.opacity,
                   located=overlaps(fields["watermark_box"], case.overlay.mask))
        if not row["located"]:
            row["evidence_there"] = evidence_there(
                case.marked, case.clean, case.overlay,
                bool(detection.details.get("camera_moved")))
    return row


def fresh_task(task: tuple[int, int]) -> dict:
    """`case_row` on one clip of the second generator's set."""
    seed, index = task
    return case_row(fresh_case(seed, index, [photo_pixels(p) for p in CONTENT]))


def summarise(rows: list[dict], seeds: list[int], styles, motions) -> dict:
    """Recall and precision at opacity >= 0.3 (a mark counts when found where it is), clean
    clips flagged, marks found by style and motion, and the evidence ceiling."""
    from watermark_ceiling import ceiling
    from watermark_metrics import detection_counts

    marked = [r for r in rows if r["marked"] and r["opacity"] >= 0.3]
    clean = [r for r in rows if not r["marked"]]
    wrong = sum(r["flagged"] and not r["located"] for r in marked)
    summary = {"seeds": seeds, "rows": rows,
               "opacity>=0.3": detection_counts(sum(r["located"] for r in marked), len(marked),
                                                sum(r["flagged"] for r in clean) + wrong,
                                                len(clean)),
               "clean_flagged": f"{sum(r['flagged'] for r in clean)}/{len(clean)}",
               "ceiling": ceiling(marked), "by_style": {}, "by_motion": {}}
    for key, values in (("by_style", styles), ("by_motion", motions)):
        field = "kind" if key == "by_style" else "motion"
        for value in values:
            subset = [r for r in marked if r[field] == value]
            summary[key][value] = f"{sum(r['located'] for r in subset)}/{len(subset)}"
    return summary


def run_fresh(pool, seeds: list[int], clips: int) -> dict:
    """Detection on `clips` clips per seed of the second generator (`summarise`)."""
    rows = pool.map(fresh_task, [(s, i) for s in seeds for i in range(clips)], chunksize=2)
    return summarise(rows, seeds, STYLES, MOTIONS)


def print_generator(summary: dict, title: str) -> None:
    from watermark_ceiling import print_ceiling
    from watermark_metrics import counts

    rows = summary["rows"]
    print(f"== {title} (seeds {summary['seeds']})")
    print(f"opacity >= 0.3: {counts(summary['opacity>=0.3'])}; clean clips flagged "
          f"{summary['clean_flagged']}")
    print("found by style:", summary["by_style"], "by motion:", summary["by_motion"])
    print_ceiling(summary["ceiling"], rows)
    print(f"detect {np.mean([r['detect_s'] for r in rows]) * 1000:.0f} ms per clip")


def print_fresh(summary: dict) -> None:
    print_generator(summary, "second synthetic generator, never tuned on")
