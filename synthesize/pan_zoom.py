"""Still image -> short clip with a smooth simulated camera (pan, zoom, diagonal, combined).

A camera path is a start and an end crop window at the output aspect ratio, always inside the
image, joined by an easing curve: the centre moves along a straight line and the window size
changes geometrically (so a zoom looks uniform). Windows are planned in normalised image
coordinates (fractions of width and height), so the plan does not depend on the resolution the
image was decoded at. Each frame is one affine warp of the source at sub-pixel precision;
where the window is larger than the output it is first area-filtered (no aliasing), so slow
motion shows no integer-pixel jitter, unlike ffmpeg's `zoompan`.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from datakit.io.video import X264_PRESETS
from synthesize.watermark import WatermarkConfig


class Motion(str, Enum):
    PAN_LEFT = "pan-left"
    PAN_RIGHT = "pan-right"
    PAN_UP = "pan-up"
    PAN_DOWN = "pan-down"
    ZOOM_IN = "zoom-in"
    ZOOM_OUT = "zoom-out"
    DIAGONAL_UP_LEFT = "diagonal-up-left"
    DIAGONAL_UP_RIGHT = "diagonal-up-right"
    DIAGONAL_DOWN_LEFT = "diagonal-down-left"
    DIAGONAL_DOWN_RIGHT = "diagonal-down-right"
    PAN_ZOOM = "pan-zoom"


# Direction of the camera (the window centre) in image coordinates: +x right, +y down.
_DIRECTIONS: dict[Motion, tuple[float, float]] = {
    Motion.PAN_LEFT: (-1.0, 0.0),
    Motion.PAN_RIGHT: (1.0, 0.0),
    Motion.PAN_UP: (0.0, -1.0),
    Motion.PAN_DOWN: (0.0, 1.0),
    Motion.DIAGONAL_UP_LEFT: (-1.0, -1.0),
    Motion.DIAGONAL_UP_RIGHT: (1.0, -1.0),
    Motion.DIAGONAL_DOWN_LEFT: (-1.0, 1.0),
    Motion.DIAGONAL_DOWN_RIGHT: (1.0, 1.0),
}
_PAN_WORDS = {(-1, 0): "pans left", (1, 0): "pans right", (0, -1): "tilts up", (0, 1): "tilts down",
              (-1, -1): "moves diagonally up and to the left",
              (1, -1): "moves diagonally up and to the right",
              (-1, 1): "moves diagonally down and to the left",
              (1, 1): "moves diagonally down and to the right"}

MOTION_GROUPS: dict[str, tuple[Motion, ...]] = {
    "all": tuple(Motion),
    "pan": (Motion.PAN_LEFT, Motion.PAN_RIGHT, Motion.PAN_UP, Motion.PAN_DOWN),
    "zoom": (Motion.ZOOM_IN, Motion.ZOOM_OUT),
    "diagonal": (Motion.DIAGONAL_UP_LEFT, Motion.DIAGONAL_UP_RIGHT,
                 Motion.DIAGONAL_DOWN_LEFT, Motion.DIAGONAL_DOWN_RIGHT),
    "combined": (Motion.PAN_ZOOM,),
}

EASINGS = ("linear", "ease-in-out", "ease-in", "ease-out")


def parse_motions(spec: str | Sequence[str]) -> tuple[Motion, ...]:
    """Motions from names and group names ("pan", "zoom", "diagonal", "combined", "all")."""
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    chosen: list[Motion] = []
    for name in filter(None, names):
        if name in MOTION_GROUPS:
            members = MOTION_GROUPS[name]
        else:
            try:
                members = (Motion(name),)
            except ValueError:
                valid = ", ".join([m.value for m in Motion] + list(MOTION_GROUPS))
                raise ValueError(f"unknown motion {name!r}; choose from {valid}") from None
        chosen.extend(m for m in members if m not in chosen)
    if not chosen:
        raise ValueError("no motions given")
    return tuple(chosen)


def ease(t: np.ndarray | float, easing: str) -> np.ndarray | float:
    """Map time in [0, 1] to path progress in [0, 1]; all curves are smooth inside the clip."""
    if easing == "linear":
        return t
    if easing == "ease-in-out":
        return 0.5 - 0.5 * np.cos(np.pi * t)
    if easing == "ease-in":
        return 1.0 - np.cos(0.5 * np.pi * t)
    if easing == "ease-out":
        return np.sin(0.5 * np.pi * t)
    raise ValueError(f"easing must be one of {', '.join(EASINGS)}, got {easing!r}")


@dataclass(frozen=True)
class Window:
    """A crop window in normalised image coordinates: centre and width as fractions of the
    image's width (x, width) and height (y)."""

    cx: float
    cy: float
    width: float
    height: float


@dataclass(frozen=True)
class CameraPath:
    """Where the camera looks over a clip."""

    motion: Motion
    start: Window
    end: Window
    easing: str
    speed: float  # travel in window widths per second (0 for pure zooms)
    zoom_start: float  # 1.0 = the largest window of the output aspect that fits the image
    zoom_end: float
    capped: tuple[str, ...] = ()  # "speed", "zoom": drawn values the image did not allow
    panorama: bool = False  # an image far wider (taller) than the output: panned end to end

    def window_at(self, t: float) -> Window:
        """The window at time t in [0, 1]: centre linear, size geometric, both eased."""
        p = float(ease(t, self.easing))
        ratio = self.end.width / self.start.width
        scale = ratio**p
        return Window(
            cx=self.start.cx + (self.end.cx - self.start.cx) * p,
            cy=self.start.cy + (self.end.cy - self.start.cy) * p,
            width=self.start.width * scale,
            height=self.start.height * scale,
        )

    def caption(self) -> str:
        """Plain words for the motion, e.g. "The camera pans left while zooming in."."""
        dx, dy = np.sign(self.end.cx - self.start.cx), np.sign(self.end.cy - self.start.cy)
        moved = abs(self.end.cx - self.start.cx) > 1e-6 or abs(self.end.cy - self.start.cy) > 1e-6
        zoom = ""
        if abs(self.zoom_end - self.zoom_start) > 1e-6:
            zoom = "zooms in" if self.zoom_end > self.zoom_start else "zooms out"
        if moved and self.motion is not Motion.ZOOM_IN and self.motion is not Motion.ZOOM_OUT:
            words = _PAN_WORDS[(int(dx), int(dy))]
            if zoom:
                words += f" while {'zooming in' if zoom == 'zooms in' else 'zooming out'}"
        else:
            words = zoom or "holds still"
        return f"The camera {words}."

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["motion"] = self.motion.value
        data["capped"] = list(self.capped)
        return data


PANORAMA_STRETCH = 2.0  # image aspect / output aspect from which an image is a panorama


def _panorama_path(motion: Motion, base: tuple[float, float], config: PanZoomConfig,
                   rng: np.random.Generator) -> CameraPath:
    """Pan from one end of a panorama to the other at zoom 1, so the clip shows all of it:
    along x when the window spans the image's height, else along y. A pan already along
    that axis keeps its direction; any other motion becomes one (direction from the seed)."""
    horizontal = base[0] < base[1]
    forward = {Motion.PAN_RIGHT: True, Motion.PAN_LEFT: False, Motion.PAN_DOWN: True,
               Motion.PAN_UP: False}
    along = (Motion.PAN_LEFT, Motion.PAN_RIGHT) if horizontal else (Motion.PAN_UP,
                                                                     Motion.PAN_DOWN)
    ahead = forward[motion] if motion in along else bool(rng.random() < 0.5)
    motion = along[int(ahead)]
    half = (base[0] if horizontal else base[1]) / 2
    first, last = (half, 1 - half) if ahead else (1 - half, half)
    if horizontal:
        start, end = Window(first, 0.5, *base), Window(last, 0.5, *base)
        travel = abs(last - first) / base[0]  # in window widths
    else:
        start, end = Window(0.5, first, *base), Window(0.5, last, *base)
        travel = abs(last - first) / (config.width / config.height * base[1])
    speed = travel / config.duration if config.duration else 0.0
    return CameraPath(motion, start, end, config.easing, speed, 1.0, 1.0, panorama=True)


class SkipImage(Exception):
    """The image cannot make a clip under the settings (e.g. it is too small)."""


@dataclass(frozen=True)
class PanZoomConfig:
    """Settings of the pan-zoom pipeline; every field but `max_pixels` is a CLI option.

    Args:
        width, height: output size in pixels (even, for yuv420p).
        frames: frames per clip.
        fps: frames per second of the clips.
        clips_per_image: clips made from each image; motions are spread over them and repeat
            once all are used.
        motions: the motions to draw from.
        zoom_range: the zoom reached at the close end of a zoom, drawn per clip from this range
            (1.0 = the largest window of the output's aspect that fits the image).
        speed_range: pan speed in window widths per second, drawn per clip from this range.
        easing: how the camera accelerates: linear, ease-in-out, ease-in, ease-out.
        max_upscale: largest upscale allowed; an image that needs more is skipped.
        motion_caption: append the camera motion in words to the caption.
        seed: the seed every random choice is derived from (with the sample key).
        crf, preset: x264 quality and speed.
        max_pixels: images with more pixels are refused (decompression bombs).
        background: the RGB colour transparent images are composited over (recorded in the
            json as `alpha` and in the manifest's notes).
        watermark: what to do with marks found in the source image (`--watermarks`): flag
            records a score and box (in the decoded image's pixels) in the json and manifest,
            strip removes the mark from the image before rendering, drop skips the image with
            status `watermarked`.
    """

    width: int = 512
    height: int = 320
    frames: int = 16
    fps: float = 8.0
    clips_per_image: int = 1
    motions: tuple[Motion, ...] = field(default_factory=lambda: tuple(Motion))
    zoom_range: tuple[float, float] = (1.1, 1.25)
    speed_range: tuple[float, float] = (0.05, 0.15)
    easing: str = "ease-in-out"
    max_upscale: float = 2.0
    motion_caption: bool = True
    seed: int = 0
    crf: int = 18
    preset: str = "medium"
    max_pixels: int = 100_000_000
    watermark: WatermarkConfig = field(default_factory=WatermarkConfig)
    background: tuple[int, int, int] = (128, 128, 128)

    def __post_init__(self):
        if len(self.background) != 3 or not all(0 <= int(c) <= 255 for c in self.background):
            raise ValueError(f"--background: expected an RGB colour with values 0..255, got "
                             f"{self.background!r}")
        if self.width < 16 or self.height < 16 or self.width % 2 or self.height % 2:
            raise ValueError(
                f"size must be even and at least 16x16, got {self.width}x{self.height}"
            )
        if self.frames < 2:
            raise ValueError(f"frames must be at least 2, got {self.frames}")
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        if self.clips_per_image < 1:
            raise ValueError(f"clips_per_image must be at least 1, got {self.clips_per_image}")
        low, high = self.zoom_range
        if not 1.0 <= low <= high:
            raise ValueError(f"zoom_range must satisfy 1.0 <= low <= high, got {low},{high}")
        low, high = self.speed_range
        if not 0.0 <= low <= high:
            raise ValueError(f"speed_range must satisfy 0 <= low <= high, got {low},{high}")
        if self.max_upscale < 1.0:
            raise ValueError(f"max_upscale must be at least 1.0, got {self.max_upscale}")
        ease(0.5, self.easing)
        if self.seed < 0:
            raise ValueError(f"seed must be at least 0, got {self.seed}")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"crf must be in 0..51, got {self.crf}")
        if self.preset not in X264_PRESETS:
            raise ValueError(f"preset must be one of {', '.join(X264_PRESETS)}, "
                             f"got {self.preset!r}")
        if not self.motions:
            raise ValueError("motions must not be empty")

    @property
    def duration(self) -> float:
        return (self.frames - 1) / self.fps

    def min_source_size(self) -> tuple[int, int]:
        """Source size below which the closest window would need upscaling: a decoder may
        shrink the image (e.g. JPEG draft mode) as long as it stays at least this large."""
        zoom = self.zoom_range[1]
        return math.ceil(self.width * zoom), math.ceil(self.height * zoom)


def rng_for(seed: int, key: str, *more: int) -> np.random.Generator:
    """A generator that depends only on (seed, key, more), never on worker or order."""
    digest = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")
    return np.random.default_rng([seed, digest, *more])


def _fit_axis(half0: float, half1: float, shift: float) -> tuple[float, float] | None:
    """Feasible start centres on one axis (image spans [0, 1]) for windows of half-sizes
    half0 -> half1 whose centre moves by `shift`; None if there are none."""
    low = max(half0, half1 - shift)
    high = min(1.0 - half0, 1.0 - half1 - shift)
    return (low, high) if low <= high + 1e-12 else None


def plan_path(
    motion: Motion,
    image_size: tuple[int, int],
    config: PanZoomConfig,
    rng: np.random.Generator,
) -> CameraPath:
    """Draw a camera path for one clip that keeps every window inside the image.

    Raises:
        SkipImage: the image would need more than `config.max_upscale` upscaling.
    """
    image_w, image_h = image_size
    aspect = config.width / config.height
    # The largest window of the output aspect that fits: zoom 1.0. Sizes in pixels here.
    base_w = min(image_w, image_h * aspect)
    upscale = config.width / base_w
    if upscale > config.max_upscale + 1e-9:
        raise SkipImage(
            f"too small: {image_w}x{image_h} needs {upscale:.2f}x upscaling for "
            f"{config.width}x{config.height} (max {config.max_upscale:g}x)"
        )
    base = (base_w / image_w, base_w / aspect / image_h)  # normalised window at zoom 1
    stretch = (image_w / image_h) / aspect
    if stretch >= PANORAMA_STRETCH or stretch <= 1 / PANORAMA_STRETCH:
        return _panorama_path(motion, base, config, rng)
    # Never zoom closer than the upscale limit allows.
    zoom_cap = max(1.0, base_w * config.max_upscale / config.width)
    zoom_low, zoom_high = (min(z, zoom_cap) for z in config.zoom_range)
    capped = ["zoom"] if max(config.zoom_range) > zoom_cap + 1e-9 else []
    zoom_far = float(rng.uniform(zoom_low, zoom_high))
    speed = float(rng.uniform(*config.speed_range))

    if motion is Motion.ZOOM_IN:
        zooms, direction = (1.0, zoom_far), (0.0, 0.0)
    elif motion is Motion.ZOOM_OUT:
        zooms, direction = (zoom_far, 1.0), (0.0, 0.0)
    elif motion is Motion.PAN_ZOOM:
        zooms = (1.0, zoom_far) if rng.random() < 0.5 else (zoom_far, 1.0)
        direction = tuple(_PAN_WORDS)[int(rng.integers(len(_PAN_WORDS)))]
    else:
        zooms, direction = None, _DIRECTIONS[motion]

    norm = math.hypot(*direction)
    unit = (direction[0] / norm, direction[1] / norm) if norm else (0.0, 0.0)

    def travel_fits(z0: float, z1: float, amount: float):
        """Feasible start-centre intervals for a travel of `amount` window widths."""
        travel_px = amount * base_w / math.sqrt(z0 * z1)  # same pixels on both axes
        shift = (unit[0] * travel_px / image_w, unit[1] * travel_px / image_h)
        fits_x = _fit_axis(base[0] / z0 / 2, base[0] / z1 / 2, shift[0])
        fits_y = _fit_axis(base[1] / z0 / 2, base[1] / z1 / 2, shift[1])
        return (fits_x, fits_y, shift) if fits_x and fits_y else None

    wanted = speed * config.duration if norm else 0.0
    if zooms is None:
        # A pure pan: the widest window (lowest zoom) that leaves room for the travel.
        zoom_grid = np.linspace(1.0, max(1.0, zoom_high), 64)
        zoom = next((z for z in zoom_grid if travel_fits(z, z, wanted)), zoom_grid[-1])
        zooms = (float(zoom), float(zoom))
    amount, fit = wanted, travel_fits(*zooms, wanted)
    if fit is None:  # not enough room: travel as far as the image allows
        low, high = 0.0, wanted
        for _ in range(40):
            mid = (low + high) / 2
            low, high = (mid, high) if travel_fits(*zooms, mid) else (low, mid)
        amount, fit = low, travel_fits(*zooms, low)
        capped.append("speed")
    fits_x, fits_y, shift = fit
    start_x = float(rng.uniform(*_middle(fits_x)))
    start_y = float(rng.uniform(*_middle(fits_y)))
    start = Window(start_x, start_y, base[0] / zooms[0], base[1] / zooms[0])
    end = Window(start_x + shift[0], start_y + shift[1], base[0] / zooms[1], base[1] / zooms[1])
    actual_speed = amount / config.duration if config.duration else 0.0
    return CameraPath(motion, start, end, config.easing, actual_speed, zooms[0], zooms[1],
                      capped=tuple(capped))


def _middle(interval: tuple[float, float], share: float = 0.6) -> tuple[float, float]:
    """The central part of an interval, so clips favour the middle of the picture."""
    low, high = interval
    if high <= low:
        return low, low
    margin = (high - low) * (1 - share) / 2
    return low + margin, high - margin


def motion_caption(text: str | None, path: CameraPath, with_motion: bool) -> str:
    """The clip's caption: the image's text, with the camera motion appended if asked."""
    text = (text or "").strip()
    if not with_motion:
        return text
    motion = path.caption()
    if not text:
        return motion
    return f"{text} {motion}" if text.endswith((".", "!", "?")) else f"{text}. {motion}"


class PanZoomStage:
    """Make `config.clips_per_image` clips from one record (a plain callable, picklable, so
    any engine can run it).

    Args:
        config: what to make.
    """

    def __init__(self, config: PanZoomConfig):
        from synthesize.watermark import LazyClassifier

        self.config = config
        self.classifier = LazyClassifier(config.watermark)  # loaded once per worker

    def output_keys(self, record) -> list[str]:
        count = self.config.clips_per_image
        return [record.key] if count == 1 else [f"{record.key}_c{i}" for i in range(count)]

    def __call__(self, record) -> list:
        import cv2

        from datakit.io.images import ImageError, load_image_info
        from datakit.io.video import encode_video
        from datakit.run.shards import Sample
        from manifests.schema import Status, make_row
        from synthesize.render import render_clip_yuv420p
        from synthesize.watermark import apply_watermark_policy

        config = self.config
        started = time.perf_counter()
        if cv2.getNumThreads() != 1:
            # One core per worker, as x264 gets (threads=1): OpenCV's own thread pool in
            # every worker cost 14 ms of CPU per clip in waking and joining its threads.
            cv2.setNumThreads(1)
        # 1. Load: a bad file is a failed row, never an exception.
        try:
            decoded = load_image_info(
                record.image_input(),
                max_pixels=config.max_pixels,
                min_size=config.min_source_size(),
                background=tuple(config.background),
            )
        except ImageError as error:
            return [make_row(record.key, Status.FAILED, source=record.source, error=str(error))]
        image = decoded.array
        alpha = ({"composited": True, "background": list(config.background)}
                 if decoded.composited else {"composited": False})
        image_size = (image.shape[1], image.shape[0])
        # 2. Watermarks in the source image: flag, strip or drop.
        image, marks = apply_watermark_policy(image, config.watermark, self.classifier())
        if image is None:
            return [make_row(record.key, Status.WATERMARKED, source=record.source,
                             width=image_size[0], height=image_size[1], **marks)]
        # 3. One motion per clip, spread over the allowed motions, from a per-image seed.
        order = rng_for(config.seed, record.key).permutation(len(config.motions))
        samples = []
        for clip, key in enumerate(self.output_keys(record)):
            motion = config.motions[order[clip % len(order)]]
            try:
                path = plan_path(motion, image_size, config, rng_for(config.seed, record.key, clip))
            except SkipImage as reason:
                return [make_row(record.key, Status.SKIPPED, source=record.source,
                                 error=str(reason), width=image_size[0], height=image_size[1])]
            # 4. Render and encode, one frame at a time.
            frames = render_clip_yuv420p(image, path, config.width, config.height,
                                         config.frames)
            mp4 = encode_video(frames, config.fps, crf=config.crf, preset=config.preset,
                               threads=1, pixel_format="yuv420p")
            caption = motion_caption(record.text, path, config.motion_caption)
            text = (record.text or "").strip()
            info = {
                "key": key,
                "input_key": record.key,
                "source": record.source,
                "caption": caption,
                "caption_source": "text+motion" if text and config.motion_caption
                else "text" if text else "motion" if config.motion_caption else "none",
                "text": record.text,
                "label": record.label,
                "clip_index": clip,
                "seed": config.seed,
                "width": config.width,
                "height": config.height,
                "frames": config.frames,
                "fps": config.fps,
                "decoded_size": list(image_size),
                "camera": path.to_json(),
                "encoder": {"codec": "h264", "pix_fmt": "yuv420p", "crf": config.crf,
                            "preset": config.preset},
                "source_meta": record.meta,
                "alpha": alpha,
                **marks,
            }
            row = make_row(
                key, Status.OK, source=record.source, input_key=record.key, caption=caption,
                width=config.width, height=config.height, frames=config.frames, fps=config.fps,
                seconds=time.perf_counter() - started,  # the first clip's includes the load
                meta={"motion": path.motion.value, "speed": path.speed,
                      "zoom": [path.zoom_start, path.zoom_end], "capped": list(path.capped),
                      "panorama": path.panorama},
                notes=[*(f"{what} capped to fit the image" for what in path.capped),
                       *(["panorama: panned end to end"] if path.panorama else []),
                       *([f"transparent: composited over rgb{tuple(config.background)}"]
                         if decoded.composited else [])] or None,
                **marks,
            )
            files = {"mp4": mp4, "txt": caption.encode(),
                     "json": json.dumps(info, sort_keys=True, default=str).encode()}
            samples.append(Sample(key, files, row))
            started = time.perf_counter()  # the rows' seconds add up to the input's time
        return samples


def pan_zoom(src, out, config: PanZoomConfig, options) -> dict[str, Any]:
    """Turn every image under `src` into clips in OUT's shards; return the run's stats.

    Args:
        src: an image folder, img2dataset/LAION shards, or a CSV/parquet list.
        out: the output folder (resumed if it holds an earlier run with the same settings).
        config: what to make.
        options: how to run (`datakit.run.pipeline.RunOptions`).
    """
    from datakit.run.pipeline import run_pipeline
    from manifests.sources import count_records, read_records

    stage = PanZoomStage(config)
    records = read_records(src)
    settings = {"pipeline": "pan-zoom", **asdict(config),
                "watermark": config.watermark.settings(),
                "motions": [m.value for m in config.motions]}
    stage.classifier()  # a bad --watermark-model fails here, once, not in every worker
    return run_pipeline(
        records, stage, stage.output_keys, out, settings, options,
        total=count_records(src), description="pan-zoom", src=src,
    )
