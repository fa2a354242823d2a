"""Realistic overlays for the watermark bench, drawn the way editing tools draw them.

A mark is a colour layer and an alpha (0..1, antialiased) the size of the frame, blended
over every frame with one opacity: `I = a * opacity * W + (1 - a * opacity) * J`. Text is set
in real TrueType fonts (the DejaVu, STIX and Computer Modern files that matplotlib ships)
with Pillow; logos are real logo images with their own alpha (scikit-image's and
matplotlib's). `real_marks` gives the marks put on the real clips and photos; the second
synthetic generator (`watermark_fresh`) draws its own with `text_layer`, `shape_logo` and
`place`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")
STOCK_WORDS = ("(c) stockreel", "clipvault", "Footage Hub", "(c) VIDEOBANK", "stockmotion",
               "ShotStock")
URLS = ("www.clipvault.net", "getfootage.com", "stockreel.tv/free", "www.videobank.io")
BUGS = ("NEWS 24", "TV5", "SPORT+", "LIVE", "HD 1")
CENTRE_WORDS = ("PREVIEW", "SAMPLE", "WATERMARK", "DEMO")


@dataclass
class Overlay:
    """A mark at frame size: `colour` (H, W, 3) float 0..255, `alpha` (H, W) float 0..1."""

    kind: str
    label: str
    colour: np.ndarray
    alpha: np.ndarray
    opacity: float

    @property
    def mask(self) -> np.ndarray:
        """Where the mark changes the picture (alpha above 1/255 at its opacity)."""
        return self.alpha * self.opacity > 1.0 / 255

    @property
    def box(self) -> tuple[int, int, int, int]:
        ys, xs = np.nonzero(self.mask)
        return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1

    def blend(self, frames: np.ndarray) -> np.ndarray:
        """Frames (T, H, W, 3) or one image (H, W, 3) with the mark over them."""
        a = (self.alpha * self.opacity)[..., None]
        out = a * self.colour + (1.0 - a) * frames.astype(np.float32)
        return np.clip(out, 0, 255).round().astype(np.uint8)


@cache
def font_file(name: str) -> str:
    """A TrueType file that matplotlib ships (e.g. DejaVuSans-Bold, STIXGeneral, cmr10), or
    a font file's path."""
    import matplotlib

    if Path(name).suffix in (".ttf", ".ttc", ".otf"):
        path = Path(name)
    else:
        path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / f"{name}.ttf"
    if not path.is_file():
        raise FileNotFoundError(path)
    return str(path)


def text_layer(text: str, font: str, height: int, fill=(255, 255, 255), stroke: int = 0,
               stroke_fill=(0, 0, 0), shadow: int = 0):
    """The text set tightly in an RGBA Pillow image whose letters are `height` px tall
    (cap height, about), with an optional outline and a drop shadow offset by `shadow` px."""
    from PIL import Image, ImageDraw, ImageFont

    face = ImageFont.truetype(font_file(font), max(6, int(round(height * 1.35))))
    probe = ImageDraw.Draw(Image.new("RGBA", (1, 1)))
    x0, y0, x1, y1 = probe.textbbox((0, 0), text, font=face, stroke_width=stroke)
    pad = stroke + shadow + 2
    image = Image.new("RGBA", (x1 - x0 + 2 * pad, y1 - y0 + 2 * pad), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    origin = (pad - x0, pad - y0)
    if shadow:
        draw.text((origin[0] + shadow, origin[1] + shadow), text, font=face,
                  fill=(0, 0, 0, 160), stroke_width=stroke, stroke_fill=(0, 0, 0, 160))
    draw.text(origin, text, font=face, fill=(*fill, 255), stroke_width=stroke,
              stroke_fill=(*stroke_fill, 255))
    return image


def bug_layer(text: str, height: int, box_fill=(200, 20, 30), text_fill=(255, 255, 255)):
    """A channel bug: a rounded box with bold text inside."""
    from PIL import Image, ImageDraw

    label = text_layer(text, "DejaVuSans-Bold", int(height * 0.55), text_fill)
    pad_x, pad_y = int(height * 0.35), (height - label.height) // 2
    width = label.width + 2 * pad_x
    image = Image.new("RGBA", (width, max(height, label.height)), (0, 0, 0, 0))
    ImageDraw.Draw(image).rounded_rectangle((0, 0, width - 1, image.height - 1),
                                            radius=height // 4, fill=(*box_fill, 255))
    image.alpha_composite(label, (pad_x, max(0, pad_y)))
    return image


def logo_layer(which: str, height: int):
    """A real logo with its own alpha, scaled to `height` px: scikit-image's or matplotlib's."""
    import matplotlib
    import skimage

    path = {"skimage": Path(skimage.__file__).parent / "data" / "logo.png",
            "matplotlib": Path(matplotlib.get_data_path()) / "sample_data" / "logo2.png"}[which]
    return image_layer(path, height)


def image_layer(path: str | Path, height: int):
    """An RGBA image file cropped to what it draws and scaled to `height` px."""
    from PIL import Image

    image = Image.open(path).convert("RGBA")
    image = image.crop(image.getbbox())
    width = max(1, round(image.width * height / image.height))
    return image.resize((width, height), Image.LANCZOS)


def shape_logo(letters: str, height: int, shape: str, fill, text_fill=(255, 255, 255)):
    """A drawn logo: a disc, shield or diamond with letters cut out of it."""
    from PIL import Image, ImageDraw

    image = Image.new("RGBA", (height, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    h = height - 1
    if shape == "disc":
        draw.ellipse((0, 0, h, h), fill=(*fill, 255))
    elif shape == "shield":
        draw.polygon([(0, 0), (h, 0), (h, h * 0.6), (h / 2, h), (0, h * 0.6)], fill=(*fill, 255))
    else:
        draw.polygon([(h / 2, 0), (h, h / 2), (h / 2, h), (0, h / 2)], fill=(*fill, 255))
    label = text_layer(letters, "DejaVuSans-Bold", int(height * 0.32), text_fill)
    label.thumbnail((int(height * 0.7), int(height * 0.7)))
    image.alpha_composite(label, ((height - label.width) // 2, (height - label.height) // 2))
    return image


def place(layer, width: int, height: int, where: str, margin: int,
          offset: tuple[int, int] = (0, 0)) -> tuple[np.ndarray, np.ndarray]:
    """The RGBA layer put on a frame-sized canvas: `where` is a corner, "centre",
    "top-centre", "bottom-centre", "left-middle" or "right-middle"; `margin` px from the
    edges it is near; `offset` moves it further. Returns (colour, alpha)."""
    rgba = np.asarray(layer, np.float32)
    if rgba.shape[1] > width - 2 * margin or rgba.shape[0] > height - 2 * margin:
        from PIL import Image

        scale = min((width - 2 * margin) / rgba.shape[1], (height - 2 * margin) / rgba.shape[0])
        layer = layer.resize((max(1, int(layer.width * scale)), max(1, int(layer.height * scale))),
                             Image.LANCZOS)
        rgba = np.asarray(layer, np.float32)
    h, w = rgba.shape[:2]
    vertical, _, horizontal = where.partition("-")
    if where == "centre":
        vertical, horizontal = "middle", "centre"
    if vertical in ("left", "right"):
        vertical, horizontal = horizontal, vertical
    x = {"left": margin, "right": width - w - margin}.get(horizontal, (width - w) // 2)
    y = {"top": margin, "bottom": height - h - margin}.get(vertical, (height - h) // 2)
    x = int(np.clip(x + offset[0], 0, width - w))
    y = int(np.clip(y + offset[1], 0, height - h))
    colour = np.zeros((height, width, 3), np.float32)
    alpha = np.zeros((height, width), np.float32)
    colour[y:y + h, x:x + w] = rgba[..., :3]
    alpha[y:y + h, x:x + w] = rgba[..., 3] / 255.0
    return colour, alpha


def real_marks(width: int, height: int, rng: np.random.Generator) -> list[Overlay]:
    """The marks each real clip (and photo) gets, one at a time: stock-site text at opacity
    0.3, 0.5 and 0.8 in three corners, a URL, a channel bug, a logo and a large
    semi-transparent centre word. Sizes follow the frame's height (text 5-8% of it, at least
    11 px)."""
    corners = list(rng.permutation(CORNERS))
    margin = max(4, int(0.03 * min(width, height)))
    text_height = max(11, int(height * rng.uniform(0.05, 0.08)))
    marks = []
    for opacity, corner in zip((0.3, 0.5, 0.8), corners[:3], strict=True):
        word = str(rng.choice(STOCK_WORDS))
        fill = (255, 255, 255) if rng.random() < 0.75 else (20, 20, 20)
        layer = text_layer(word, str(rng.choice(["DejaVuSans", "DejaVuSans-Bold"])),
                           text_height, fill)
        marks.append(Overlay("text", f"text-{opacity:g}-{corner}",
                             *place(layer, width, height, corner, margin), opacity))
    url = text_layer(str(rng.choice(URLS)), "DejaVuSans", max(11, int(height * 0.045)),
                     shadow=1)
    where = str(rng.choice(["bottom-right", "bottom-centre", "top-right"]))
    marks.append(Overlay("url", f"url-{where}", *place(url, width, height, where, margin),
                         float(rng.choice([0.6, 0.8, 1.0]))))
    bug = bug_layer(str(rng.choice(BUGS)), max(16, int(height * 0.09)),
                    box_fill=tuple(int(v) for v in rng.choice([(200, 20, 30), (20, 60, 160),
                                                               (30, 30, 30)])))
    where = str(rng.choice(["top-left", "top-right"]))
    marks.append(Overlay("bug", f"bug-{where}", *place(bug, width, height, where, margin),
                         float(rng.choice([0.7, 0.85, 1.0]))))
    logo = logo_layer(str(rng.choice(["skimage", "matplotlib"])),
                      max(20, int(height * rng.uniform(0.1, 0.16))))
    where = str(rng.choice(CORNERS))
    marks.append(Overlay("logo", f"logo-{where}", *place(logo, width, height, where, margin),
                         float(rng.choice([0.5, 0.7, 0.9]))))
    word = text_layer(str(rng.choice(CENTRE_WORDS)), "DejaVuSans-Bold", int(height * 0.16))
    marks.append(Overlay("centre", "centre-word", *place(word, width, height, "centre",
                                                         margin), float(rng.choice([0.3, 0.4]))))
    return marks
