"""A large word centred on the frame, boxed in part where the scene under it changes, is read
again out to its mirror image about the centre line (`look.centred_word`); words that are not
centred are not widened into the scene beside them."""

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from real_media import FONT, real_clip
from skimage import data

from synthesize.watermark import WatermarkConfig, detect_video, strip
from synthesize.watermark.look import centred_parts, centred_word
from synthesize.watermark.text import TextBox, read_characters


def _word_over(frames, word, left, opacity, share=0.16):
    """White bold `word`, `share` of the height tall, at opacity over `frames` (T, H, W, 3):
    centred when `left` is None, else starting at that share of the width. Returns the
    marked frames and the word's alpha (H, W)."""
    height, width = frames.shape[1:3]
    font = ImageFont.truetype(str(FONT), int(share * height))
    x0, y0, x1, y1 = font.getbbox(word)
    x = (width - (x1 - x0)) // 2 - x0 if left is None else int(left * width) - x0
    layer = Image.new("L", (width, height), 0)
    ImageDraw.Draw(layer).text((x, (height - (y1 - y0)) // 2 - y0), word, font=font, fill=255)
    alpha = np.asarray(layer).astype(np.float32) / 255 * opacity
    marked = alpha[..., None] * 255 + (1 - alpha[..., None]) * frames.astype(np.float32)
    return np.round(marked).astype(np.uint8), alpha


def _box(alpha):
    ys, xs = np.nonzero(alpha > 1 / 255)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


@pytest.mark.parametrize("word", ["PREVIEW", "SAMPLE"])
def test_a_centred_word_over_two_parts_of_the_scene_is_boxed_whole(word):
    """Over bigbuckbunny's still shot a white word at 0.35 runs over the grey rabbit, then
    foliage: the text detector boxed "PRE" and "SAM" alone (a new user's run), "SAM" reading
    "SAN", cut. The box now holds the word, and the strip takes all of it."""
    clean = real_clip("bigbuckbunny", frames=72, start=60)[::2]
    marked, alpha = _word_over(clean, word, None, 0.35)
    x0, y0, x1, y1 = _box(alpha)
    detection = detect_video(marked, WatermarkConfig())
    assert detection.found, detection.reason
    bx0, _, bx1, _ = detection.box
    assert min(bx1, x1) - max(bx0, x0) >= 0.95 * (x1 - x0), (detection.box, (x0, x1))
    assert x0 - bx0 <= y1 - y0 and bx1 - x1 <= y1 - y0, (detection.box, (x0, x1))
    right_half = (alpha > 1 / 255) & (np.arange(alpha.shape[1]) >= alpha.shape[1] // 2)
    assert (detection.mask & right_half).sum() >= 0.8 * right_half.sum()
    stripped, action, reason = strip(marked, detection, WatermarkConfig(action="strip",
                                                                        crop_band=0.0))
    assert action == "stripped", reason

    def error(frames):
        return np.abs(frames[:, right_half].astype(float) - clean[:, right_half]).mean()

    assert error(stripped) < 0.6 * error(marked), (error(stripped), error(marked))


@pytest.mark.parametrize("photo, word, left, opacity", [
    ("astronaut", "STOCK", 0.28, 0.8),  # the suit beside it reads as an "A" at 0.72
    ("coffee", "IMAGE", 0.35, 0.8),     # the mirror adds under two letters
    ("brick", "SAMPLE", 0.3, 0.8),      # the mortar reads as "HH", a word apart
    ("brick", "TV", 0.25, 0.5),         # ... and as "HH" after two letters
    ("brick", "PREVIEW", 0.35, 0.8),    # a word that runs to the frame's edge
    ("camera", "IMAGE", 0.35, 0.5),     # ... and one that ends 43 px from it
    ("grass", "PHOTO", 0.3, 0.8),       # the grass reads as "3O3", at 0.22
])
def test_a_word_off_the_centre_line_is_not_widened_into_the_scene(photo, word, left,
                                                                    opacity):
    """Whole words, off the centre line, with what the recogniser reads in the scene
    beside them: the line keeps its box."""
    image = getattr(data, photo)()
    image = np.dstack([image] * 3) if image.ndim == 2 else image[..., :3]
    marked, alpha = _word_over(image[None], word, left, opacity)
    line = TextBox(*_box(alpha), 0.9)
    assert centred_word(marked[0], line) == line


PRE = [("P", 1.0, 384.0), ("R", 1.0, 469.0), ("E", 0.99, 554.0)]  # "PRE" of "PREVIEW", 85 px apart


def _reading(wider, own=PRE):
    """A stand-in recogniser: `own` for the line's box, `wider` ("letters", probabilities,
    first column) for any other box, its letters a pitch of 85 px apart."""
    letters, probabilities, start = wider
    read = [(c, p, start + 85.0 * i) for i, (c, p) in enumerate(zip(letters, probabilities,
                                                                         strict=True))]
    return lambda image, box: own if box == LINE.box else read


LINE = TextBox(352, 292, 616, 420, 0.9)  # its mirror image about 640 is 928
BLANK = np.zeros((720, 1280, 3), np.uint8)
SURE = [1.0, 1.0, 0.98, 0.64, 0.97, 0.82]


@pytest.mark.parametrize("wider, widened", [
    (("PREVEW", SURE, 384), True),
    (("PRNVEW", SURE, 384), True),                          # the letter the box cut reads anew
    (("PMEVEW", SURE, 384), False),                         # a letter of its own changed
    (("PREVEW", [1, 1, 1, 0.3, 0.4, 0.3], 384), False),     # what it adds reads doubtfully
    (("PRE VEW", [*SURE[:3], 0.9, *SURE[3:]], 384), False),  # a word apart
    (("PREV", SURE[:4], 384), False),                       # one letter for 312 px
])
def test_what_the_wider_box_reads_decides(monkeypatch, wider, widened):
    monkeypatch.setattr("synthesize.watermark.look.read_characters", _reading(wider))
    expected = TextBox(352, 292, 928, 420, 0.9) if widened else LINE
    assert centred_word(BLANK, LINE) == expected


@pytest.mark.parametrize("line", [
    TextBox(100, 292, 300, 420, 0.9),   # a line in the frame's left quarter
    TextBox(400, 292, 560, 420, 0.9),   # the mirror would add over 1.5 times its width
    TextBox(60, 292, 700, 420, 0.9),    # a word 60 px from the edge, under a pitch: not centred
    TextBox(500, 292, 640, 420, 0.9),   # the mirror adds under two letters
])
def test_lines_the_mirror_does_not_fit_are_not_read_again(monkeypatch, line):
    reads = []

    def recogniser(image, box):
        reads.append(box)
        return [(c, 1.0, line.x0 + 32.0 + 85.0 * i) for i, c in enumerate("ABCDEFGHIJ")]

    monkeypatch.setattr("synthesize.watermark.look.read_characters", recogniser)
    assert centred_word(BLANK, line) == line
    assert len(reads) <= 1  # the line's own letters at most: the wider box is never read


def test_a_line_right_of_the_centre_is_widened_to_the_left(monkeypatch):
    """"VIEW" of "PREVIEW" boxed alone: its letters are the last of the wider box's."""
    line = TextBox(664, 292, 928, 420, 0.9)
    own = [("I", 0.99, 700.0), ("E", 1.0, 785.0), ("W", 1.0, 870.0)]
    read = [(c, 0.9, 380.0 + 85.0 * i) for i, c in enumerate("PREVIEW")]
    monkeypatch.setattr("synthesize.watermark.look.read_characters",
                        lambda image, box: own if box == line.box else read)
    assert centred_word(BLANK, line) == TextBox(352, 292, 928, 420, 0.9)


def test_each_character_is_read_at_its_own_column():
    """`read_characters` places each letter it reads within that letter's own columns of
    the image (the pitch `centred_word` judges by), for a word set in a real font on a
    plain ground, in a box wider than the word."""
    font = ImageFont.truetype(str(FONT), 48)
    image = Image.new("RGB", (640, 120), (255, 255, 255))
    ImageDraw.Draw(image).text((150, 30), "PREVIEW", font=font, fill=(0, 0, 0))
    spans = [(150 + font.getbbox("PREVIEW"[:i])[2] if i else 150,
              150 + font.getbbox("PREVIEW"[:i + 1])[2]) for i in range(7)]
    read = read_characters(np.asarray(image), (100, 20, 560, 100))
    assert "".join(c for c, _, _ in read) == "PREVIEW"
    for (_, _, column), (start, end) in zip(read, spans, strict=True):
        assert start - 4 <= column <= end + 4, (column, start, end)


def _photo(name):
    image = getattr(data, name)()
    return np.dstack([image] * 3) if image.ndim == 2 else image[..., :3]


def test_a_centred_word_boxed_in_two_pieces_is_judged_whole():
    """A bold "WATERMARK" at 0.4 across coffee's cups: the text detector boxes it as
    pieces with nothing between them, the one judged (the left, off the centre line) stays
    under the bar, and the photo was clean. The pieces are joined into the centred word
    (`look.centred_parts`): it is found, boxed across the centre line."""
    image = _photo("coffee")
    marked, alpha = _word_over(image[None], "WATERMARK", None, 0.4)
    x0, _, x1, _ = _box(alpha)
    detection = detect_video(marked[0], WatermarkConfig())
    assert detection.found, detection.reason
    bx0, _, bx1, _ = detection.box
    assert bx0 < image.shape[1] / 2 - 0.25 * (x1 - x0) and bx1 > image.shape[1] / 2 + 0.25 * (
        x1 - x0), (detection.box, (x0, x1))


def _pieces(alpha, left_share, right_share):
    """Boxes over the first `left_share` and the last `right_share` of the word's width."""
    x0, y0, x1, y1 = _box(alpha)
    width = x1 - x0
    return (TextBox(x0 - 2, y0 - 2, x0 + round(left_share * width), y1 + 2, 0.9),
            TextBox(x1 - round(right_share * width), y0 - 2, x1 + 2, y1 + 2, 0.9))


def test_two_pieces_of_a_centred_word_are_joined_and_of_one_off_centre_are_not():
    image = _photo("coffee")
    marked, alpha = _word_over(image[None], "WATERMARK", None, 0.6)
    left, right = _pieces(alpha, 0.25, 0.35)
    joined = centred_parts(marked[0], [left, right])
    assert joined[:2] == [left, right] and len(joined) == 3
    assert (joined[2].x0, joined[2].x1) == (left.x0, right.x1)
    # the same word starting at 0.15 of the width: its pieces' box is off the centre line
    shifted, alpha = _word_over(image[None], "SAMPLE", 0.15, 0.6)
    assert len(centred_parts(shifted[0], list(_pieces(alpha, 0.3, 0.3)))) == 2


def test_two_short_words_apart_with_the_scene_between_them_are_not_joined():
    """"TV" near the left edge and "HD" near the right, over the brick wall: their joined
    box is centred, but between them the scene reads as no run of letters."""
    image = _photo("brick")
    marked, alpha_tv = _word_over(image[None], "TV", 0.08, 0.8)
    marked, alpha_hd = _word_over(marked, "HD", 0.8, 0.8)
    pieces = [TextBox(*_box(alpha_tv), 0.9), TextBox(*_box(alpha_hd), 0.9)]
    assert len(centred_parts(marked[0], pieces)) == 2


def test_pieces_on_two_lines_are_not_joined():
    """The two pieces of a centred word, the right one moved down by its height: two lines."""
    image = _photo("coffee")
    marked, alpha = _word_over(image[None], "WATERMARK", None, 0.6)
    left, right = _pieces(alpha, 0.25, 0.35)
    lower = TextBox(right.x0, right.y1, right.x1, 2 * right.y1 - right.y0, 0.9)
    assert len(centred_parts(marked[0], [left, lower])) == 2


def test_a_part_of_a_centred_word_is_placed_as_the_word():
    """"SAMPLE" at 0.3, 14% of the height, centred over the camera photo: the text
    detector boxes a part of it that lies off the centre line, where the place prior halves
    its score, and the photo was clean. The part is read out to the centred word it belongs
    to (`detection.placed_as_centred_word`) and judged where the word is: found, boxed
    across the centre line."""
    image = _photo("camera")
    marked, alpha = _word_over(image[None], "SAMPLE", None, 0.3, share=0.14)
    x0, _, x1, _ = _box(alpha)
    detection = detect_video(marked[0], WatermarkConfig())
    assert detection.found, detection.reason
    bx0, _, bx1, _ = detection.box
    middle = image.shape[1] / 2
    assert bx0 < middle - 0.3 * (x1 - x0) and bx1 > middle + 0.3 * (x1 - x0), (detection.box,
                                                                             (x0, x1))
