"""A centred line mid-frame is placed as a mark's only when it spans a good part of the
picture (`priors.CENTRED_WIDE`): photographers centre their subject, and a short centred
line is most often the subject's own print. kphotoalbum's demo photo of a man on a beach,
"LAS VEGAS NV" across 13% of the width of his sweatshirt, was flagged at 0.86."""

import numpy as np
import pytest
from PIL import ImageFont
from real_media import FONT, draw_text
from skimage import data

from synthesize.watermark import WatermarkConfig
from synthesize.watermark.detection import detect_image
from synthesize.watermark.priors import CENTRED_WIDE, PLACE_ELSEWHERE, place_prior


def test_a_centred_line_is_placed_as_a_mark_only_when_wide():
    shape = (600, 800)
    short = (345, 280, 455, 310)  # 110 px: 14% of the width, centred
    wide = (240, 280, 560, 330)  # 320 px: 40%
    assert place_prior(short, shape) == PLACE_ELSEWHERE
    assert place_prior(wide, shape) == 1.0
    assert place_prior((345, 540, 455, 570), shape) == 1.0  # the short line by the bottom
    bar = round(CENTRED_WIDE * shape[1])
    assert place_prior((400 - bar // 2, 280, 400 + bar // 2, 310), shape) == 1.0
    assert place_prior((400 - bar // 2 + 2, 280, 400 + bar // 2 - 2, 310), shape) \
        == PLACE_ELSEWHERE


def _centred(image, text, size, y=None, opacity=1.0):
    height, width = image.shape[:2]
    x0, y0, x1, _ = ImageFont.truetype(str(FONT), size).getbbox(text)
    y = height // 2 - y0 if y is None else y
    return draw_text(image, text, ((width - (x1 - x0)) // 2 - x0, y), size, opacity), \
        (x1 - x0) / width


@pytest.mark.parametrize("name", ["chelsea", "coffee", "rocket"])
def test_a_short_centred_line_on_a_photo_is_no_mark_but_a_wide_word_is(name):
    """An 18-px "VEGAS" (11-15% of the width) centred on three of scikit-image's photos is
    no mark now (over chelsea it was flagged before). By the bottom edge the same line is
    found, and a 60-px centred "PREVIEW" (48-68% of the width) is found as before."""
    image = getattr(data, name)()
    image = np.stack([image] * 3, -1) if image.ndim == 2 else image
    config = WatermarkConfig()
    short, share = _centred(image, "VEGAS", 18)
    assert share < CENTRED_WIDE
    detection = detect_image(short, config)
    assert not detection.found, (detection.score, detection.box)
    bottom, _ = _centred(image, "VEGAS", 18, y=image.shape[0] - 34)
    assert detect_image(bottom, config).found
    wide, share = _centred(image, "PREVIEW", 60)
    assert share > CENTRED_WIDE
    assert detect_image(wide, config).found
