"""An outlined mark over a plain ground: what is stripped is its letters, not the ground
between them (`look.letters_only`, INK_SHARE); a compressed mark over a plain ground: its
letters, not the ground (`look.is_ground`)."""

import io

import av
import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from real_media import FONT
from skimage import data

from datakit.io.video import encode_video
from synthesize.watermark.detection import TextVerdict, whole_line
from synthesize.watermark.look import letters_only, stroke_look
from synthesize.watermark.text import TextBox


def outlined_handle_over_sky(margin: int):
    """The cameraman's sky (a real photo's plain ground) under a white handle with a 1-px
    black outline at 0.85, as Chinese platforms draw theirs, softened as a camera's frame
    is. Returns the image, the letters' pixels and the detector-like box around them."""
    sky = np.repeat(data.camera()[:120, :, None], 3, 2).astype(np.float32)
    layer = Image.new("RGBA", (sky.shape[1], sky.shape[0]), (0, 0, 0, 0))
    ImageDraw.Draw(layer).text((40, 30), "@channel 8842", font=ImageFont.truetype(str(FONT), 30),
                               fill=(255, 255, 255, 255), stroke_width=1,
                               stroke_fill=(0, 0, 0, 255))
    rgba = np.asarray(layer).astype(np.float32)
    alpha = rgba[..., 3:] / 255 * 0.85
    noise = np.random.default_rng(0).normal(0, 2, sky.shape)
    image = np.clip(alpha * rgba[..., :3] + (1 - alpha) * sky + noise, 0, 255).astype(np.uint8)
    image = cv2.GaussianBlur(image, (0, 0), 0.7)
    letters = rgba[..., 3] > 0
    ys, xs = np.nonzero(letters)
    box = (int(xs.min()) - margin, int(ys.min()) - margin, int(xs.max()) + margin + 1,
           int(ys.max()) + margin + 1)
    return image, letters, box


def test_an_outlined_marks_strip_mask_is_its_letters_not_the_ground():
    # A box-tall top-hat opens the outlines away and keeps the whole plain ground as
    # "bright strokes", as uniform as the letters: the mask was 0.97 of the box, and the
    # strip of a Douyin-like handle over a phone clip's floor filled the whole box
    image, letters, box = outlined_handle_over_sky(margin=14)
    look, judged = stroke_look(image, box)
    assert look > 0.5
    mask = letters_only(image, box, judged)
    x0, y0, x1, y1 = box
    assert mask[y0:y1, x0:x1].mean() < 0.5
    assert (mask & letters).sum() / letters.sum() > 0.9


def test_a_mask_of_letters_is_kept_as_it_is():
    image, letters, box = outlined_handle_over_sky(margin=14)
    x0, y0, x1, y1 = box
    assert letters[y0:y1, x0:x1].mean() < 0.5
    assert letters_only(image, box, letters) is letters
    sky = np.zeros(letters.shape, bool)
    sky[y0 + 15:y1 - 15, x0:x1] = ~letters[y0 + 15:y1 - 15, x0:x1]  # under half the box
    assert letters_only(image, box, sky) is not sky  # of the sky's colour: the ground


def test_a_found_outlined_marks_mask_is_its_letters():
    # the mask a found mark is stripped with: the letters, and the strokes levelled along
    # the line (`strokes_along`) are the letters too, not the ground
    image, letters, box = outlined_handle_over_sky(margin=14)
    _, judged = stroke_look(image, box)
    found = whole_line(image, TextVerdict(0.9, TextBox(*box, 0.9), judged), 0.5)
    x0, y0, x1, y1 = box
    assert found.mask[y0:y1, x0:x1].mean() < 0.5
    assert (found.mask & letters).sum() / letters.sum() > 0.9


def test_a_moving_cameras_line_keeps_its_judged_strokes_for_the_matte():
    # under a moving camera the mask is the matte grown from the judged strokes
    # (`matte_of_line`); kept as judged there, they hold the faint letters' edges too
    image, letters, box = outlined_handle_over_sky(margin=14)
    _, judged = stroke_look(image, box)
    found = whole_line(image, TextVerdict(0.9, TextBox(*box, 0.9), judged), 0.5,
                       letters=False)
    assert (found.mask & judged).sum() == judged.sum()
    x0, y0, x1, y1 = box
    assert found.mask[y0:y1, x0:x1].mean() > 0.7


def word_over_plain_ground(dark: bool, crf: int):
    """A word at 0.8 over the cameraman's sky (darkened to a night sky with `dark`: light
    letters; else dark letters), through x264 at `crf` as a publisher's upload is. Returns
    the decoded frame, the letters' pixels and a detector-like box around them."""
    sky = np.repeat(data.camera()[:120, :, None], 3, 2).astype(np.float32) * (0.12 if dark
                                                                              else 1.0)
    layer = Image.new("RGBA", (sky.shape[1], sky.shape[0]), (0, 0, 0, 0))
    ImageDraw.Draw(layer).text((40, 30), "ShotStock", font=ImageFont.truetype(str(FONT), 44),
                               fill=(220, 215, 210, 255) if dark else (20, 20, 20, 255))
    rgba = np.asarray(layer).astype(np.float32)
    alpha = rgba[..., 3:] / 255 * 0.8
    image = np.clip(alpha * rgba[..., :3] + (1 - alpha) * sky, 0, 255).astype(np.uint8)
    clip = encode_video(np.repeat(image[None], 4, 0), 25.0, crf=crf, preset="fast", threads=1)
    with av.open(io.BytesIO(clip)) as container:
        decoded = next(container.decode(video=0)).to_ndarray(format="rgb24")
    letters = rgba[..., 3] > 0
    ys, xs = np.nonzero(letters)
    box = (int(xs.min()) - 6, int(ys.min()) - 6, int(xs.max()) + 7, int(ys.max()) + 7)
    return decoded, letters, box


@pytest.mark.parametrize("dark, crf", [(True, 23), (True, 28), (False, 18)])
def test_a_compressed_words_strip_mask_is_its_letters_not_the_ground(dark, crf):
    # After compression the letters ring and the plain ground between them is the more
    # uniform "stroke": a white word over a dark film frame was stripped as its ground,
    # and the fill spread the letters into a glow (4.4 dB in the mark, delogo 43.4)
    image, letters, box = word_over_plain_ground(dark, crf)
    _, judged = stroke_look(image, box)
    mask = letters_only(image, box, judged)
    x0, y0, x1, y1 = box
    inside, ground = letters[y0:y1, x0:x1], ~letters[y0:y1, x0:x1]
    assert (mask[y0:y1, x0:x1] & inside).sum() / inside.sum() > 0.8
    assert (mask[y0:y1, x0:x1] & ground).sum() / ground.sum() < 0.2  # a 1-px rim
