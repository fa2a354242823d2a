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
