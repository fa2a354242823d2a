"""A third synthetic generator for the watermark bench, written in the seventeenth round after
the second (`watermark_fresh`) had served as a screen for changes, so that the detector is
judged once more on clips no decision has seen. It was committed before its first run, and
its figures are reported as they came.

It shares with the others only the blend and the placement (`watermark_marks.Overlay`,
`place`, `text_layer`). Content: eleven photos from Debian's plasma-workspace-wallpapers
(a pier, boats at dusk, cups, a forest path, moss, a kite in the sky, a lake at night,
leaves, concrete curves), none used by any bench part or test before. Motion: a dolly
(zoom with a keystone that changes), a tilt (vertical pan), a walk (a periodic bob and roll),
a still camera with cut-out objects moving on curves, a still camera over a time lapse
(light fading, a cloud band drifting), and a hard cut between two slowly moving shots. Marks:
Roboto and GNU FreeFont words (thin to black), a URL in FreeMono, Font Awesome icons in a
badge beside a word, a channel number, hollow (outline-only) words and a ticker bar along
the bottom. Every clip gets sensor noise; most an x264 round trip (crf 20-32), some a
downscale and upscale first (a re-upload). A quarter stay clean.

    python bench/watermark.py --parts third [--third-seeds 17000,17001,...]
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from watermark_fresh import case_row, print_generator, summarise
from watermark_marks import Overlay, place, text_layer
from watermark_media import Asset, debian_member

WALLPAPERS = ("plasma-workspace-wallpapers", "4:5.27.5-2")
PHOTOS = ("BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow",
          "FallenLeaf", "Grey", "Kite", "OneStandsOut", "Path", "summer_1am")
ROBOTO = ("fonts-roboto-unhinted", "2:0~20170802-3")
FREEFONT = ("fonts-freefont-ttf", "20120503-10")
AWESOME = ("fonts-font-awesome", "5.0.10+really4.7.0~dfsg-4.1")
ROBOTO_FACES = ("Thin", "Light", "Regular", "Medium", "Bold", "Black", "Italic", "BoldItalic")
FREE_FACES = ("FreeSans", "FreeSansBold", "FreeSerif", "FreeSerifBoldItalic", "FreeSansOblique")
ICONS = ("\uf04b", "\uf03d", "\uf008", "\uf030", "\uf005", "\uf0e7")  # play, video, film, ...
SIZES = ((384, 216), (512, 288), (640, 360), (480, 360), (720, 406))
MOTIONS = ("dolly", "tilt", "walk", "movers", "timelapse", "cut")
STYLES = ("sans-word", "url", "icon-badge", "channel-number", "hollow-word", "ticker")
WHERE = ("top-left", "top-right", "bottom-left", "bottom-right", "top-centre", "bottom-centre",
         "centre")
WORDS = ("Meridian", "blue hour media", "STOCKWAVE", "(c) Halden Pictures", "nordlys",
         "Verdant TV", "clipvault", "Paper Moon")
DOMAINS = ("www.framehaus.net", "lensroom.io", "getfootage.tv", "vidstock.org/free")


def _debian(package: tuple[str, str], member: str) -> str:
    return str(debian_member(Asset(*package, member, "/" + member, "debian")))


@functools.cache
def photo(name: str) -> np.ndarray:
    """One wallpaper as RGB, about 1100 px wide (the packages' 2560x1600 photos)."""
    from PIL import Image

    path = _debian(WALLPAPERS, f"usr/share/wallpapers/{name}/contents/images/2560x1600.jpg")
    image = Image.open(path).convert("RGB")
    image.thumbnail((1100, 1100), Image.LANCZOS)
    return np.asarray(image)


def font(name: str) -> str:
    if name in ROBOTO_FACES:
        return _debian(ROBOTO, f"usr/share/fonts/truetype/roboto/unhinted/RobotoTTF/"
                               f"Roboto-{name}.ttf")
    if name == "FreeMono":
        return _debian(FREEFONT, "usr/share/fonts/truetype/freefont/FreeMonoBold.ttf")
    if name == "Awesome":
        return _debian(AWESOME, "usr/share/fonts/truetype/font-awesome/fontawesome-webfont.ttf")
    return _debian(FREEFONT, f"usr/share/fonts/truetype/freefont/{name}.ttf")


@dataclass
class ThirdCase:
    name: str
    clean: np.ndarray
    marked: np.ndarray
    overlay: Overlay | None
    motion: str


def view(image: np.ndarray, width: int, height: int, corners: np.ndarray) -> np.ndarray:
    """The frame a camera sees when the image's quadrilateral `corners` (4x2, clockwise from
    top-left, image pixels) fills it."""
    import cv2

    target = np.float32([[0, 0], [width, 0], [width, height], [0, height]])
    matrix = cv2.getPerspectiveTransform(np.float32(corners), target)
    return cv2.warpPerspective(image, matrix, (width, height), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT).astype(np.float32)


def rectangle(cx: float, cy: float, half_w: float, half_h: float, keystone: float = 0.0,
              roll: float = 0.0) -> np.ndarray:
    """Corners of a window centred at (cx, cy), its top edge narrowed by `keystone` (a share
    of its width) and turned by `roll` radians."""
    corners = np.array([[-half_w * (1 - keystone), -half_h], [half_w * (1 - keystone), -half_h],
                        [half_w, half_h], [-half_w, half_h]])
    turn = np.array([[np.cos(roll), -np.sin(roll)], [np.sin(roll), np.cos(roll)]])
    return corners @ turn.T + (cx, cy)


def content(motion: str, images: list[np.ndarray], width: int, height: int, frames: int,
            rng: np.random.Generator) -> np.ndarray:
    """A clean clip of one of the six motions."""
    base = images[0]
    h, w = base.shape[:2]
    half_h = min(h / 2, w / 2 * height / width) / rng.uniform(1.15, 1.5)
    half_w = half_h * width / height
    cx = rng.uniform(half_w * 1.1, w - half_w * 1.1)
    cy = rng.uniform(half_h * 1.1, h - half_h * 1.1)
    t = np.arange(frames) / max(frames - 1, 1)
    out = []
    if motion == "dolly":
        zoom, keystone = rng.uniform(0.1, 0.25), rng.uniform(-0.06, 0.06)
        for s in t:
            out.append(view(base, width, height, rectangle(cx, cy, half_w * (1 - zoom * s),
                                                           half_h * (1 - zoom * s),
                                                           keystone * s)))
    elif motion == "tilt":
        travel = rng.uniform(0.15, 0.35) * half_h * rng.choice([-1, 1])
        for s in t:
            out.append(view(base, width, height, rectangle(cx, cy + travel * (s - 0.5) * 2,
                                                           half_w * 0.9, half_h * 0.9)))
    elif motion == "walk":
        step, stride = rng.uniform(2, 4), rng.uniform(0.02, 0.05) * half_h
        ahead = rng.uniform(0.05, 0.15)
        for index, s in enumerate(t):
            bob = stride * np.sin(2 * np.pi * index / step)
            out.append(view(base, width, height, rectangle(
                cx + 0.3 * bob, cy + bob, half_w * (0.9 - ahead * s), half_h * (0.9 - ahead * s),
                roll=0.01 * np.sin(np.pi * index / step))))
    elif motion == "movers":
        still = view(base, width, height, rectangle(cx, cy, half_w, half_h))
        other = images[1]
        movers = []
        for _ in range(int(rng.integers(1, 4))):
            size = int(min(width, height) * rng.uniform(0.15, 0.4))
            y0 = int(rng.integers(0, other.shape[0] - size))
            x0 = int(rng.integers(0, other.shape[1] - size))
            patch = other[y0:y0 + size, x0:x0 + size].astype(np.float32)
            yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
            disc = (np.hypot(yy, xx) <= size / 2 - 1).astype(np.float32)[..., None]
            start = rng.uniform((0, 0), (width - size, height - size))
            velocity = rng.uniform(-1, 1, 2) * (width, height) * rng.uniform(0.3, 0.8)
            bend = rng.uniform(-0.2, 0.2) * height
            movers.append((patch, disc, start, velocity, bend))
        for s in t:
            frame = still.copy()
            for patch, disc, start, velocity, bend in movers:
                size = patch.shape[0]
                x, y = start + velocity * s + (0, bend * np.sin(np.pi * s))
                x, y = int(np.clip(x, 0, width - size)), int(np.clip(y, 0, height - size))
                area = frame[y:y + size, x:x + size]
                area[:] = disc * patch + (1 - disc) * area
            out.append(frame)
    elif motion == "timelapse":
        still = view(base, width, height, rectangle(cx, cy, half_w, half_h))
        band = int(height * rng.uniform(0.2, 0.35))
        top = int(rng.integers(0, height - band))
        drift = rng.uniform(0.2, 0.5) * width * rng.choice([-1, 1])
        sky = view(images[1], width * 2, band, rectangle(images[1].shape[1] / 2,
                                                         images[1].shape[0] / 2,
                                                         images[1].shape[1] / 2.2,
                                                         images[1].shape[1] / 4.4 * band
                                                         / width))
        fade = rng.uniform(0.5, 0.85)
        for s in t:
            frame = still * (1 - (1 - fade) * s)
            shift = int(drift * s) % width
            frame[top:top + band] = 0.6 * frame[top:top + band] + 0.4 * sky[:, shift:shift + width]
            out.append(frame)
    else:  # cut: two shots, each drifting, the second from frame `at`
        at = int(frames * rng.uniform(0.35, 0.65))
        second = images[1]
        h2, w2 = second.shape[:2]
        half_h2 = min(h2 / 2, w2 / 2 * height / width) / 1.3
        half_w2 = half_h2 * width / height
        for index, s in enumerate(t):
            if index < at:
                out.append(view(base, width, height, rectangle(cx + 0.1 * half_w * s, cy,
                                                               half_w, half_h)))
            else:
                out.append(view(second, width, height, rectangle(w2 / 2 - 0.1 * half_w2 * s,
                                                                 h2 / 2, half_w2, half_h2)))
    return np.stack(out)


def third_overlay(width: int, height: int, rng: np.random.Generator) -> Overlay:
    """One mark in one of the six styles."""
    from PIL import Image, ImageDraw

    style = str(rng.choice(STYLES))
    where = str(rng.choice(WHERE))
    size = int(height * rng.uniform(0.045, 0.11))
    colour = tuple(int(v) for v in rng.choice([(255, 255, 255), (250, 250, 235), (255, 200, 40),
                                               (20, 20, 20), (90, 200, 255), (240, 80, 120)]))
    if style == "sans-word":
        face = str(rng.choice(ROBOTO_FACES + FREE_FACES))
        layer = text_layer(str(rng.choice(WORDS)), font(face), size, colour,
                           shadow=int(rng.integers(0, 2)))
    elif style == "url":
        layer = text_layer(str(rng.choice(DOMAINS)), font("FreeMono"), size, colour)
    elif style == "icon-badge":
        icon = text_layer(str(rng.choice(ICONS)), font("Awesome"), int(size * 1.3), colour)
        word = text_layer(str(rng.choice(WORDS)), font(str(rng.choice(("Medium", "Bold")))),
                          size, colour)
        layer = Image.new("RGBA", (icon.width + word.width + size // 2,
                                   max(icon.height, word.height)))
        layer.alpha_composite(icon, (0, (layer.height - icon.height) // 2))
        layer.alpha_composite(word, (icon.width + size // 2, (layer.height - word.height) // 2))
        where = str(rng.choice(["top-left", "top-right", "bottom-right"]))
    elif style == "channel-number":
        number = text_layer(str(int(rng.integers(1, 99))), font("Black"), int(size * 1.8), colour)
        tag = text_layer(str(rng.choice(("HD", "LIVE", "news", "kids"))), font("Bold"),
                         max(8, int(size * 0.6)), colour)
        layer = Image.new("RGBA", (number.width + tag.width + 4, number.height))
        layer.alpha_composite(number, (0, 0))
        layer.alpha_composite(tag, (number.width + 4, number.height - tag.height))
        where = str(rng.choice(["top-left", "top-right"]))
    elif style == "hollow-word":
        word = str(rng.choice(WORDS)).upper()
        layer = text_layer(word, font(str(rng.choice(("Black", "FreeSansBold")))),
                           int(size * 1.4), (0, 0, 0), stroke=max(1, size // 12),
                           stroke_fill=colour)
        array = np.asarray(layer).copy()  # the black fill taken out: the outline is left
        array[..., 3] = np.where(array[..., :3].sum(-1) == 0, 0, array[..., 3])
        layer = Image.fromarray(array)
    else:  # ticker: a thin bar across the bottom with a line of text
        bar_h = int(size * 1.8)
        bar = Image.new("RGBA", (width - 2, bar_h), (0, 0, 0, 0))
        ImageDraw.Draw(bar).rectangle((0, 0, bar.width, bar_h), fill=(0, 0, 0, 170))
        line = text_layer(f"{rng.choice(WORDS)} | {rng.choice(DOMAINS)}", font("Regular"),
                          size, (255, 255, 255))
        bar.alpha_composite(line, (int(rng.integers(4, max(5, bar.width - line.width))),
                                   (bar_h - line.height) // 2))
        layer, where = bar, "bottom-centre"
    margin = 1 if style == "ticker" else int(min(width, height) * rng.uniform(0.025, 0.08))
    offset = (0, 0) if style == "ticker" else (int(rng.normal(0, 0.015 * width)),
                                               int(rng.normal(0, 0.015 * height)))
    colour_layer, alpha = place(layer, width, height, where, margin, offset)
    opacity = float(rng.choice([0.25, 0.3, 0.4, 0.55, 0.7, 0.85, 1.0]))
    return Overlay(style, f"{style}-{where}-{opacity:g}", colour_layer, alpha, opacity)


def degrade(frames: np.ndarray, rng: np.random.Generator, fps: float) -> np.ndarray:
    """Sensor noise, sometimes a downscale and upscale (a re-upload), mostly an x264 round
    trip."""
    import cv2

    from datakit.io.video import encode_video, read_frames

    noise = float(rng.uniform(0.4, 2.5))
    shrink = rng.random() < 0.3
    crf = None if rng.random() < 0.2 else int(rng.integers(20, 33))
    grain = np.random.default_rng(int(rng.integers(1 << 30)))
    out = np.clip(frames + grain.standard_normal(frames.shape, dtype=np.float32) * noise,
                  0, 255).round().astype(np.uint8)
    if shrink:
        height, width = out.shape[1:3]
        out = np.stack([cv2.resize(cv2.resize(f, (width * 2 // 3, height * 2 // 3),
                                              interpolation=cv2.INTER_AREA), (width, height),
                                   interpolation=cv2.INTER_LINEAR) for f in out])
    if crf is None:
        return out
    return read_frames(encode_video(out, fps, crf=crf, preset="veryfast", threads=1))


def third_case(seed: int, index: int) -> ThirdCase:
    """Clip `index` of the set made with `seed`."""
    rng = np.random.default_rng([seed, index, 3])
    width, height = SIZES[int(rng.integers(len(SIZES)))]
    frames = int(rng.integers(20, 49))
    motion = MOTIONS[int(rng.integers(len(MOTIONS)))]
    picks = rng.choice(len(PHOTOS), 2, replace=False)
    clean = content(motion, [photo(PHOTOS[i]) for i in picks], width, height, frames, rng)
    np.clip(clean, 0, 255, out=clean)
    overlay = None if rng.random() < 0.25 else third_overlay(width, height, rng)
    fps = float(rng.choice([15.0, 24.0, 30.0]))
    state = rng.bit_generator.state  # clean and marked degraded alike
    clean_frames = degrade(clean, rng, fps)
    if overlay is None:
        marked_frames = clean_frames
    else:
        rng.bit_generator.state = state
        marked_frames = degrade(overlay.blend(clean).astype(np.float32), rng, fps)
    label = overlay.label if overlay else "clean"
    return ThirdCase(f"{seed}-{index:03d}-{motion}-{label}", clean_frames, marked_frames,
                     overlay, motion)


def third_task(task: tuple[int, int]) -> dict:
    """`watermark_fresh.case_row` on one clip of the third generator's set."""
    return case_row(third_case(*task))


def run_third(pool, seeds: list[int], clips: int) -> dict:
    """Detection on `clips` clips per seed of the third generator (`watermark_fresh.summarise`)."""
    rows = pool.map(third_task, [(s, i) for s in seeds for i in range(clips)], chunksize=2)
    return summarise(rows, seeds, STYLES, MOTIONS)


def print_third(summary: dict) -> None:
    print_generator(summary, "third synthetic generator, never tuned on before its first run")
