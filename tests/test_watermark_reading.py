"""Two safeguards against scene structure read as a mark: a text line counts only when the
recogniser reads characters in it (the detector also fires on blobs), and under a moving
camera an edge is evidence only when the camera crosses it (the aperture problem).

Clean sides are real: scikit-image's photos, never synthesised."""

import io

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from real_media import FONT, draw_text, real_clip
from skimage import data

import synthesize.watermark.text as text_module
from synthesize.pan_zoom import Motion, PanZoomConfig, plan_path, rng_for
from synthesize.render import render_clip
from synthesize.watermark import (
    WatermarkConfig,
    detect_image,
    detect_video,
    detection,
    look,
    strip,
)
from synthesize.watermark.detection import judge_text
from synthesize.watermark.evidence import motion_across
from synthesize.watermark.frames import temporal_median
from synthesize.watermark.text import TextBox, fixed_text, read_line, reads_as_text


def _grey_photo(name):
    image = getattr(data, name)()
    return np.ascontiguousarray(np.dstack([image] * 3) if image.ndim == 2 else image)


def test_the_recogniser_reads_a_word_and_not_a_blob():
    background = np.full((60, 320, 3), 40, np.uint8)
    page = Image.fromarray(background)
    ImageDraw.Draw(page).text((10, 8), "stockclips", font=ImageFont.truetype(str(FONT), 36),
                              fill=(235, 235, 235))
    word = np.asarray(page)
    text, confidence = read_line(word, (0, 0, 320, 60))
    assert text.lower() == "stockclips" and confidence > 0.9, (text, confidence)
    assert reads_as_text(word, (0, 0, 320, 60)) == (True, text)
    blob = background.copy()
    cv2.ellipse(blob, (160, 30), (120, 18), 0, 0, 360, (235, 235, 235), -1)
    assert not reads_as_text(blob, (0, 0, 320, 60))[0]


def test_a_silhouette_saved_as_jpeg_is_clean_though_the_detector_sees_a_line(monkeypatch):
    """scikit-image's horse, saved as JPEG as a user's photo would be: PP-OCR's detector at
    480 px (a photo's size before TEXT_SIDE_STILL became 352) takes the edge of a leg for a
    text line where marks are, a mark by every other test. The recogniser reads no
    characters there, so the line is no mark, and the photo is clean."""
    horse = np.where(data.horse(), 255, 0).astype(np.uint8)
    saved = io.BytesIO()
    Image.fromarray(np.dstack([horse] * 3)).save(saved, "JPEG")  # Pillow's quality 75
    image = np.asarray(Image.open(saved).convert("RGB"))
    with monkeypatch.context() as patch:
        patch.setattr(text_module, "TEXT_SIDE_STILL", 480)
        lines = fixed_text(image[None])
    threshold = WatermarkConfig().threshold
    score, line, *_ = judge_text(image, lines)
    assert score >= threshold and line is not None, score  # unread, a mark
    assert judge_text(image, lines, threshold=threshold)[1] is None  # read: none
    detection = detect_image(image, WatermarkConfig())
    assert not detection.found, (detection.score, detection.reason)


def test_a_line_among_many_that_read_is_the_scenes_text():
    """A word in a corner of a real photo is a mark; the same word among lines that read
    elsewhere in the picture (a cover, a page, a shop front) is the scene's, as on OpenCV's
    sample photo of a book cover, whose title (centred, one colour) was flagged. A
    two-line credit is still a mark."""
    photo = _grey_photo("coffee")
    config = WatermarkConfig()
    corner = draw_text(photo, "stockreel", (420, 20), 30)
    assert detect_image(corner, config).found
    credit = draw_text(corner, "by Ann Lee", (420, 60), 30)
    assert detect_image(credit, config).found
    cover = draw_text(draw_text(corner, "BASIC", (60, 250), 34, colour=(250, 230, 40)),
                      "CIRCUITS", (60, 320), 34, colour=(250, 230, 40))
    detection = detect_image(cover, config)
    assert not detection.found, (detection.score, detection.reason)
    assert "the text is the scene's (3 lines read)" in detection.reason


def test_counting_the_scenes_lines_reads_a_bounded_number_of_them(monkeypatch):
    """Foliage or gravel can give dozens of boxes that read as nothing: the count reads the
    best SCENE_TEXT_READS of them and stops; lines that read end it at SCENE_TEXT."""
    image = _grey_photo("gravel")
    line = TextBox(0, 0, 100, 20, 0.9)
    others = [TextBox(10 * i, 100, 10 * i + 8, 110, 0.5 + i / 100) for i in range(30)]
    read = []
    monkeypatch.setattr(detection, "reads_as_text",
                        lambda image, box: (read.append(box) or False, ""))
    assert detection.scene_text_lines(image, others + [line], line) == [line]
    assert len(read) == detection.SCENE_TEXT_READS
    assert read[0] == others[-1].box  # best first
    read.clear()
    monkeypatch.setattr(detection, "reads_as_text",
                        lambda image, box: (read.append(box) or True, "word"))
    assert len(detection.scene_text_lines(image, others, line)) == detection.SCENE_TEXT
    assert len(read) == detection.SCENE_TEXT - 1


def test_a_line_the_detector_scores_weakly_passes_on_how_surely_it_reads(monkeypatch):
    """The detector's score is the mean text probability in its box: a partial box of a
    white word over a busy facade scored 0.53 on the real bench (vtest, "(c) VIDEOBANK" at
    0.8), a near miss, while the recogniser read "(C)VIDE" at 0.80. A line whose place and
    look would pass is read, and its surety is the larger of the two. A box of no text
    the detector scores as weakly stays under the threshold, with its detector's score."""
    photo = _grey_photo("coffee")
    threshold = WatermarkConfig().threshold
    marked = draw_text(photo, "stockreel", (420, 20), 30)
    weak = TextBox(415, 22, 580, 58, 0.4)  # the word's line, as a weak detection
    verdict = judge_text(marked, [weak], threshold=threshold)
    assert verdict.line == weak and verdict.score >= threshold, verdict.score
    assert judge_text(marked, [weak]).score < threshold  # on the detector's word alone
    unread = judge_text(photo, [weak], threshold=threshold)  # the scene: no text there
    assert unread.score == judge_text(photo, [weak]).score < threshold
    read = []
    monkeypatch.setattr(detection, "read_surety", lambda image, box: read.append(box) or 0.0)
    assert judge_text(marked, [weak], threshold=threshold).score < threshold
    sure = TextBox(415, 22, 580, 58, 0.95)
    assert judge_text(marked, [sure], threshold=threshold).line == sure
    elsewhere = TextBox(150, 150, 320, 190, 0.4)  # place prior 0.5: could not pass anyway
    assert judge_text(marked, [elsewhere], threshold=threshold).score < threshold
    assert read == [weak.box]  # only the weak line that could pass is read


def test_a_faint_marks_look_allows_for_what_shows_through(monkeypatch):
    """White text at opacity 0.3 over the cameraman's coat, tripod and lawn (a real photo):
    its strokes take 0.7 of what lies beneath, so as one colour they spread widely (look
    0.26); as one colour at one alpha over what lies beneath, they spread little (0.71)."""
    marked = draw_text(_grey_photo("camera"), "stockreel", (66, 364), 40, opacity=0.3)
    box = (60, 360, 286, 416)
    assert look.stroke_look(marked, box)[0] >= 0.6
    monkeypatch.setattr(look, "MIN_ALPHA", 1.0)  # one colour only
    assert look.stroke_look(marked, box)[0] < 0.4


def test_a_marks_look_is_its_letters_and_not_the_scene_beside_them_in_its_box():
    """A dark word at opacity 0.8 over the astronaut's suit (a real photo): its box also
    holds the suit's folds and the edge of the mission patch, which pass the stroke test
    beside the letters. The letters are most of the strokes' cores, so their spread is
    estimated robustly (look 0.94); a standard deviation lets the scene's strokes decide
    (0.56)."""
    marked = draw_text(_grey_photo("astronaut"), "(c) stockreel", (40, 320), 30, opacity=0.8,
                       colour=(20, 20, 20))
    box = (34, 318, 270, 360)
    assert look.stroke_look(marked, box)[0] >= 0.7
    outliers = np.array([[30, 30, 30]] * 6 + [[200, 120, 60]] * 4, np.float32)
    assert look.robust_spread(outliers) == 0.0  # six of ten agree
    normal = np.random.default_rng(0).normal(100.0, 10.0, (20000, 3)).astype(np.float32)
    assert look.robust_spread(normal) == pytest.approx(10.0, rel=0.03)  # as a std


def test_a_thin_words_strokes_are_not_outnumbered_by_the_scenes_in_its_box(monkeypatch):
    """An embossed word in a thin serif italic (white over a black copy 2 px down and right)
    over real gravel: with a kernel as tall as the line, the bright stones, half its height,
    pass as strokes too and outnumber the letters' (look 0.49); the narrow kernel keeps the
    letters alone (1.0)."""
    serif = FONT.parent / "DejaVuSerif-Italic.ttf"
    base = Image.fromarray(_grey_photo("gravel")).convert("RGBA")
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    font = ImageFont.truetype(str(serif), 36)
    draw.text((152, 402), "Atlas Archive", font=font, fill=(0, 0, 0, 255))
    draw.text((150, 400), "Atlas Archive", font=font, fill=(255, 255, 255, 255))
    marked = np.asarray(Image.alpha_composite(base, layer).convert("RGB"))
    box = layer.getbbox()
    assert look.stroke_look(marked, box)[0] >= 0.9
    monkeypatch.setattr(look, "STROKE_KERNELS", (1.0,))
    assert look.stroke_look(marked, box)[0] < 0.6


def _serif_line(image, text, xy):
    """`text` in white DejaVu Serif (24 px) at opacity 0.8 over a real image, and its box."""
    base = Image.fromarray(image).convert("RGBA")
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    font = ImageFont.truetype(str(FONT.parent / "DejaVuSerif.ttf"), 24)
    ImageDraw.Draw(layer).text(xy, text, font=font, fill=(255, 255, 255, 204))
    return np.asarray(Image.alpha_composite(base, layer).convert("RGB")), layer.getbbox()


def test_a_line_the_detector_boxed_in_part_is_carried_on_along_its_strokes(monkeypatch):
    """"(c) Harbour Footage" in white serif at opacity 0.8 over a real street (bikes), with
    only "Harbou" boxed, as the text detector boxes pieces of a thin line over a busy
    scene: the line is carried on along its rows over strokes of its colour, piece by
    piece while it reads more letters, to the words' ends and no further, and its mask
    grows with it. Without the carrying on, the strip would leave "(c)" and "Footage"."""
    frame = real_clip("bikes", frames=1, start=200)[0]
    marked, (x0, y0, x1, y1) = _serif_line(frame, "(c) Harbour Footage", (300, 12))
    part = TextBox(x0 + 45, y0 - 2, x0 + 130, y1 + 2, 0.9)  # (301, 17, 547, 40) whole
    _, strokes = look.stroke_look(marked, part.box)
    line, mask = look.complete_line(marked, part, strokes)
    assert abs(line.x0 - x0) <= 3 and abs(line.x1 - x1) <= 3, line
    assert (line.y0, line.y1) == (part.y0, part.y1)
    assert mask[:, x0:x0 + 30].any() and mask[:, x1 - 30:x1].any()
    assert not mask[:, x1 + 3:].any()
    monkeypatch.setattr(detection, "fixed_text", lambda frames: [part])
    monkeypatch.setattr(detection, "reads_as_text", lambda image, box: (True, "Harbour"))
    in_line = np.zeros_like(mask)
    in_line[line.y0:line.y1, line.x0:line.x1] = True
    found = detect_image(marked, WatermarkConfig())  # a found line is carried on
    assert found.box == line.box and not (mask & ~found.mask).any()
    assert not (found.mask & ~in_line & ~mask).any()  # more strokes, in the line only
    found = detect_video(np.stack([marked] * 4), WatermarkConfig())  # a still shot
    assert found.box == line.box and not (mask & ~found.mask).any()
    assert not (found.mask & ~in_line & ~mask).any()
    monkeypatch.setattr(look, "LINE_REACH", 0.0)
    assert look.complete_line(marked, part, strokes)[0].box != line.box


def _centre_word(image, text, opacity=0.5):
    """`text` in white DejaVu Sans Bold (56 px) centred on a real image, and its box."""
    base = Image.fromarray(image).convert("RGBA")
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    font = ImageFont.truetype(str(FONT), 56)
    draw = ImageDraw.Draw(layer)
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    xy = ((base.width - (x1 - x0)) // 2 - x0, (base.height - (y1 - y0)) // 2 - y0)
    draw.text(xy, text, font=font, fill=(255, 255, 255, round(255 * opacity)))
    return np.asarray(Image.alpha_composite(base, layer).convert("RGB")), layer.getbbox()


def test_a_stub_that_reads_is_carried_on_into_its_line(monkeypatch):
    """A centred "DEMO" at opacity 0.5 over a real street (bikes), with only "DE" boxed,
    as PP-OCRv5 boxed a faint centre word over city-3's towers: too short for a line and
    off-centre, though the word is neither. The stub reads, so it is carried on into the
    word's line, which is a mark (on a clip's median frame; a photo's stubs are not carried
    on: graffiti in a corner of OpenCV's graf1 became a line). Two letters alone ("TV")
    have no line to carry on and stay a stub; a box that reads nothing is not carried on."""
    frame = real_clip("bikes", frames=1, start=200)[0]
    marked, (x0, y0, x1, y1) = _centre_word(frame, "DEMO")
    stub = TextBox(x0 - 2, y0 - 4, x0 + 80, y1 + 4, 0.9)  # "DE": 1.3 times as wide as tall
    assert detection.text_lines([stub], marked.shape[:2]) == []
    (line,) = detection.carry_on_stubs(marked, [stub])
    assert abs(line.x0 - stub.x0) <= 3 and abs(line.x1 - x1) <= 4, (line, x1)
    assert detection.place_prior(line.box, marked.shape[:2]) == 1.0  # centred
    monkeypatch.setattr(detection, "fixed_text", lambda frames: [])
    monkeypatch.setattr(detection, "image_text", lambda image, side: [stub])
    found = detect_video(np.stack([marked] * 4), WatermarkConfig())  # the median's look
    assert found.found and found.box[2] >= x1 - 4, (found.box, found.reason)
    letters, (t0, u0, t1, u1) = _centre_word(frame, "TV")
    two = TextBox(t0 - 2, u0 - 4, t1 + 2, u1 + 4, 0.9)
    assert detection.carry_on_stubs(letters, [two]) == [two]
    carried = []
    monkeypatch.setattr(detection, "complete_line",
                        lambda image, line, mask: carried.append(line) or (line, mask))
    assert detection.carry_on_stubs(frame, [stub]) == [stub]  # no "DE" there: not read
    assert carried == []


def test_a_line_is_not_carried_on_over_the_scenes_strokes_that_do_not_read():
    """"Harbour Footage" over the astronaut's suit, with "arbo" boxed: the suit's white
    straps and patch edges in the line's rows pass as strokes of the line's colour within
    reach of its end, but the line with them reads no more letters, so the line ends with
    its last word (joined without the reading, it ran 59 px on, to x = 327)."""
    marked, (x0, y0, x1, y1) = _serif_line(_grey_photo("astronaut"), "Harbour Footage",
                                           (60, 320))
    part = TextBox(x0 + 5, y0 - 2, x0 + 80, y1 + 2, 0.9)  # (61, 325, 268, 348) whole
    line, _ = look.complete_line(marked, part, look.stroke_look(marked, part.box)[1])
    assert abs(line.x0 - x0) <= 3 and abs(line.x1 - x1) <= 3, line


def test_a_text_marks_box_is_its_line_even_where_its_strokes_do_not_stand_out():
    """The strokes of a faint word are masked where they stand out (over a dark railing,
    not over the pale street): the mark's box is the detector's line, grown by the mask.
    A mask that is not the line's strokes (a matte, a mask from motion) keeps its own box."""
    strokes = np.zeros((272, 640), bool)
    strokes[240:266, 96:120] = True  # "ck" of "ShotStock"
    line = TextBox(8, 238, 118, 268, 0.97)
    verdict = detection.TextVerdict(0.9, line, strokes)
    assert detection.mark_box(strokes, verdict) == (8, 238, 120, 268)
    matte = strokes.copy()
    assert detection.mark_box(matte, verdict) == (96, 240, 120, 266)
    assert detection.mark_box(None, verdict) is None


def test_motion_counts_only_across_an_edge():
    """A 10-pixel pan to the right: it crosses a vertical edge by 10 pixels, a 45-degree
    edge by 10 cos 45, and slides along a horizontal edge (0) or one 80 degrees off the
    motion's direction (cos 80 < CROSSING: 0)."""
    pan = np.array([[1.0, 0.0, 10.0], [0.0, 1.0, 0.0]])
    angles = np.radians([0.0, 45.0, 90.0, 80.0])  # of the gradient, from the x axis
    gx, gy = np.cos(angles)[None], np.sin(angles)[None]
    across = motion_across([np.eye(2, 3), pan], gx.astype(np.float32), gy.astype(np.float32))
    assert np.allclose(across[0], [10.0, 10.0 * np.cos(np.radians(45)), 0.0, 0.0], atol=1e-4)


def _pan_with_band(stripes):
    """A pan to the right over a real photo, with a band at the top right whose stripes stay
    on screen. Horizontal stripes under a horizontal pan are the aperture problem: a band
    of the scene that slides along them (a tower's rows of windows under a turn) looks the
    same. Vertical ones would have moved: they lie over the content."""
    config = PanZoomConfig(width=384, height=240, frames=16, speed_range=(0.15, 0.2),
                           zoom_range=(1.2, 1.3))
    photo = _grey_photo("astronaut")
    path = plan_path(Motion.PAN_RIGHT, (photo.shape[1], photo.shape[0]), config,
                     rng_for(0, "pan"))
    frames = np.stack(list(render_clip(photo, path, 384, 240, 16)))
    period = np.arange(60) if stripes == "vertical" else np.arange(36)
    wave = (120 + 100 * (period // 4 % 2)).astype(np.uint8)
    band = np.broadcast_to(wave[None, :] if stripes == "vertical" else wave[:, None], (36, 60))
    frames[:, 12:48, 300:360] = band[None, :, :, None]
    return frames


def test_edges_the_camera_slides_along_are_no_evidence():
    still_rows = detect_video(_pan_with_band("horizontal"), WatermarkConfig())
    assert not still_rows.found, (still_rows.score, still_rows.reason)
    assert "the camera moves along its edges" in still_rows.reason, still_rows.reason
    still_columns = detect_video(_pan_with_band("vertical"), WatermarkConfig())
    assert still_columns.found, still_columns.reason
    x0, y0, x1, y1 = still_columns.box
    assert x0 >= 290 and y1 <= 60, still_columns.box


def test_the_fast_temporal_median_is_numpys_value_for_value():
    """Every frame count from 1 to 40 and a long clip's (odd and even: the mean of the two
    middle values), floats and bytes, ties included, with numpy's dtype."""
    rng = np.random.default_rng(0)
    for frames in [*range(1, 41), 59, 60]:
        values = rng.normal(100, 50, (frames, 6, 8)).astype(np.float32)
        pixels = rng.integers(0, 256, (frames, 4, 5, 3), dtype=np.uint8)
        ties = rng.integers(0, 3, (frames, 9, 9)).astype(np.uint8)
        for stack in (values, pixels, ties, values.astype(np.float64)):
            median, expected = temporal_median(stack), np.median(stack, axis=0)
            assert median.dtype == expected.dtype, (frames, stack.dtype)
            assert np.array_equal(median, expected), (frames, stack.dtype)
    assert temporal_median(np.array([[1.0], [2.0], [10.0], [20.0]]))[0] == 6.0


def test_a_faint_line_over_a_busy_part_is_masked_along_its_whole_length():
    """"(c) Studio Nine Films" in white serif at opacity 0.5 over bigbuckbunny's still shot,
    over a pale rock on the left and grass on the right. Levelled on the whole box, the
    grass's half of the strokes fell under half the rock's response: "Nine Films" was
    masked at 0.4 of its pixels and the strip left it readable (a new user's run). Each
    stretch of two line heights is levelled on its own."""
    frames = real_clip("bigbuckbunny", frames=24, start=84)
    base = Image.fromarray(frames[0]).convert("RGBA")
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    font = ImageFont.truetype(str(FONT.parent / "DejaVuSerif.ttf"), 40)
    ImageDraw.Draw(layer).text((420, 330), "(c) Studio Nine Films", font=font,
                               fill=(255, 255, 255, 128))
    alpha = np.asarray(layer)[..., 3:].astype(np.float32) / 255
    marked = np.round(alpha * 255 + (1 - alpha) * frames).astype(np.uint8)
    truth = alpha[..., 0] > 0
    detection = detect_video(marked, WatermarkConfig())
    assert detection.found, detection.reason
    grass = truth.copy()
    grass[:, :620] = False  # "Nine Films"
    assert (detection.mask & grass).sum() >= 0.95 * grass.sum()
    stripped, action, reason = strip(marked, detection, WatermarkConfig(action="strip",
                                                                        crop_band=0.0))
    assert action == "stripped", reason
    # what is left of the words over the grass: a white line at 0.5 lifts them by tens of
    # grey levels; after the strip they sit within a fifth of that of the clean frames
    lift = (marked[:, grass].astype(float) - frames[:, grass]).mean()
    left = (stripped[:, grass].astype(float) - frames[:, grass]).mean()
    assert lift > 30 and abs(left) < 0.2 * lift, (lift, left)
