"""Embedded demo inputs: real photos that ship with scikit-image, no download needed.

The set mixes what real folders hold: colour JPEGs, a grayscale PNG, an RGBA PNG, images
small enough to be upscaled or skipped, and one truncated file that must end as a failed
manifest row.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

# name in skimage.data -> (caption, file name under the demo's input folder)
SAMPLE_PHOTOS: dict[str, tuple[str, str]] = {
    "astronaut": ("Portrait of an astronaut in a white spacesuit in front of a flag",
                  "people/astronaut.jpg"),
    "chelsea": ("A tabby cat looking to the side", "animals/chelsea.jpg"),
    "coffee": ("A cup of coffee on a saucer with a spoon", "food/coffee.jpg"),
    "rocket": ("A rocket on the launch pad under a blue sky", "places/rocket.jpg"),
    "hubble_deep_field": ("Hundreds of galaxies in the deep field of space",
                          "places/hubble_deep_field.jpg"),
    "retina": ("A photograph of the back of a human eye", "science/retina.jpg"),
    "stereo_motorcycle": ("A red motorcycle parked in a garage", "vehicles/motorcycle.jpg"),
    "camera": ("A black and white photo of a man with a camera on a tripod",
               "people/cameraman.png"),
    "logo": ("The scikit-image logo on a transparent background", "graphics/logo.png"),
}


def _photo(name: str) -> np.ndarray:
    import skimage.data

    image = getattr(skimage.data, name)()
    return image[0] if isinstance(image, tuple) else image


def write_sample_images(folder: str | Path, broken: bool = True) -> list[Path]:
    """Write the sample photos (with NAME.txt captions) under `folder`; return the paths.

    Args:
        folder: where to write; sub-folders group the photos like a real collection.
        broken: also write `broken/truncated.jpg`, a JPEG cut in half, to show that a bad
            file becomes a failed manifest row and the run goes on.
    """
    from PIL import Image

    folder = Path(folder)
    written = []
    for name, (caption, relative) in SAMPLE_PHOTOS.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(_photo(name))
        if path.suffix == ".jpg":
            image.save(path, quality=92)
        else:
            image.save(path)
        path.with_suffix(".txt").write_text(caption + "\n")
        written.append(path)
    if broken:
        buffer = io.BytesIO()
        Image.fromarray(_photo("coffee")).save(buffer, format="JPEG", quality=92)
        path = folder / "broken" / "truncated.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        written.append(path)
    return written


# label folder -> the photos whose clips go in it (a Kinetics-style class tree)
SAMPLE_CLASSES: dict[str, tuple[str, ...]] = {
    "petting_cat": ("chelsea",),
    "drinking_coffee": ("coffee",),
    "launching_rocket": ("rocket",),
    "space_walking": ("astronaut", "hubble_deep_field"),
    "riding_motorcycle": ("stereo_motorcycle",),
}


def write_sample_videos(
    folder: str | Path,
    seconds: float = 2.0,
    fps: float = 8.0,
    size: tuple[int, int] = (192, 128),
    broken: bool = True,
) -> list[Path]:
    """Write short H.264 clips of the sample photos as `LABEL/NAME.mp4`; return the paths.

    Each clip is a slow pan or zoom over one photo (`synthesize.pan_zoom`), so it has real
    motion; the folders are Kinetics-style class names.

    Args:
        folder: the class tree's root.
        seconds, fps, size: each clip's length, rate and (even) size.
        broken: also write `broken/truncated.mp4` (cut in half) and `broken/notes.mp4` (text),
            to show failure accounting.
    """
    from datakit.io.video import encode_video
    from synthesize.pan_zoom import Motion, PanZoomConfig, plan_path, rng_for
    from synthesize.render import render_clip

    folder = Path(folder)
    width, height = size
    frames = max(2, int(round(seconds * fps)))
    config = PanZoomConfig(width=width, height=height, frames=frames, fps=fps, seed=0)
    motions = list(Motion)
    written = []
    for number, (label, names) in enumerate(SAMPLE_CLASSES.items()):
        for index, name in enumerate(names):
            image = _photo(name)
            if image.ndim == 2:
                image = np.stack([image] * 3, axis=-1)
            image = np.ascontiguousarray(image[..., :3])
            motion = motions[(number + index) % len(motions)]
            path_plan = plan_path(motion, (image.shape[1], image.shape[0]), config,
                                  rng_for(0, name))
            clip = encode_video(render_clip(image, path_plan, width, height, frames), fps,
                                preset="veryfast")
            path = folder / label / f"{name}.mp4"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(clip)
            written.append(path)
    if broken:
        (folder / "broken").mkdir(parents=True, exist_ok=True)
        whole = written[0].read_bytes()
        truncated = folder / "broken" / "truncated.mp4"
        truncated.write_bytes(whole[: len(whole) // 2])
        notes = folder / "broken" / "notes.mp4"
        notes.write_text("this is text, not a video\n")
        written += [truncated, notes]
    return written
