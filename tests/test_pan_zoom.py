import json

import cv2
import numpy as np
import pytest
from skimage import data

from datakit.io.video import read_frames
from manifests.sources import Record
from synthesize.pan_zoom import (
    MOTION_GROUPS,
    Motion,
    PanZoomConfig,
    PanZoomStage,
    SkipImage,
    motion_caption,
    parse_motions,
    plan_path,
    rng_for,
)
from synthesize.render import render_clip, render_clip_yuv420p


def _photo(width=900, height=600):
    """A real photo at a chosen size (astronaut, resized): plenty of texture to track."""
    return np.ascontiguousarray(cv2.resize(data.astronaut(), (width, height),
                                           interpolation=cv2.INTER_AREA))


def _affine(first, last):
    """Similarity transform mapping `first` onto `last`, from ORB feature matches."""
    orb = cv2.ORB_create(2000)
    g1, g2 = (cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in (first, last))
    k1, d1 = orb.detectAndCompute(g1, None)
    k2, d2 = orb.detectAndCompute(g2, None)
    matches = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(d1, d2)
    src = np.float32([k1[m.queryIdx].pt for m in matches])
    dst = np.float32([k2[m.trainIdx].pt for m in matches])
    matrix, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC)
    scale = float(np.hypot(matrix[0, 0], matrix[1, 0]))
    # translation of the frame centre
    centre = np.array([first.shape[1] / 2, first.shape[0] / 2, 1.0])
    moved = matrix @ centre
    return scale, moved[0] - centre[0], moved[1] - centre[1]


def _inside(window, tol=1e-9):
    return (window.cx - window.width / 2 >= -tol and window.cx + window.width / 2 <= 1 + tol
            and window.cy - window.height / 2 >= -tol and window.cy + window.height / 2 <= 1 + tol)


@pytest.mark.parametrize("image_size", [(900, 600), (600, 900), (700, 700), (3000, 400),
                                        (400, 3000), (520, 330)])
@pytest.mark.parametrize("motion", list(Motion))
def test_every_window_stays_inside_the_image(image_size, motion):
    config = PanZoomConfig(zoom_range=(1.1, 1.6), speed_range=(0.05, 0.5))
    for seed in range(10):
        path = plan_path(motion, image_size, config, rng_for(seed, "k"))
        for t in np.linspace(0, 1, 33):
            window = path.window_at(t)
            assert _inside(window), (seed, t, window)
            # the window keeps the output's aspect ratio, in pixels
            aspect = window.width * image_size[0] / (window.height * image_size[1])
            assert aspect == pytest.approx(config.width / config.height, rel=1e-9)


@pytest.mark.parametrize(
    "motion, sign_x, sign_y",
    [(Motion.PAN_LEFT, 1, 0), (Motion.PAN_RIGHT, -1, 0), (Motion.PAN_UP, 0, 1),
     (Motion.PAN_DOWN, 0, -1), (Motion.DIAGONAL_UP_LEFT, 1, 1),
     (Motion.DIAGONAL_DOWN_RIGHT, -1, -1)],
)
def test_content_moves_opposite_to_the_camera(motion, sign_x, sign_y):
    """Camera pans left -> the picture slides right in the frame, and so on."""
    image = _photo()
    config = PanZoomConfig(width=320, height=192, frames=12, speed_range=(0.2, 0.2))
    path = plan_path(motion, (image.shape[1], image.shape[0]), config, rng_for(0, "x"))
    frames = list(render_clip(image, path, config.width, config.height, config.frames))
    assert len(frames) == 12 and frames[0].shape == (192, 320, 3)
    scale, dx, dy = _affine(frames[0], frames[-1])
    assert scale == pytest.approx(1.0, abs=0.01)
    for sign, shift in ((sign_x, dx), (sign_y, dy)):
        if sign:
            assert sign * shift > 10, (dx, dy)
        else:
            assert abs(shift) < 1.5, (dx, dy)


@pytest.mark.parametrize("motion, grows", [(Motion.ZOOM_IN, True), (Motion.ZOOM_OUT, False)])
def test_zoom_scales_the_picture(motion, grows):
    image = _photo()
    config = PanZoomConfig(width=320, height=192, frames=12, zoom_range=(1.3, 1.3))
    path = plan_path(motion, (image.shape[1], image.shape[0]), config, rng_for(0, "x"))
    frames = list(render_clip(image, path, config.width, config.height, config.frames))
    scale, _, _ = _affine(frames[0], frames[-1])
    assert scale == pytest.approx(1.3 if grows else 1 / 1.3, rel=0.02)


def _shift_x(a, b):
    """Sub-pixel horizontal shift between two frames (ECC, translation model)."""
    warp = np.eye(2, 3, dtype=np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 200, 1e-8)
    _, warp = cv2.findTransformECC(a, b, warp, cv2.MOTION_TRANSLATION, criteria, None, 5)
    return float(warp[0, 2])


def test_slow_pan_is_sub_pixel_smooth():
    """Consecutive-frame shifts stay within a few hundredths of a pixel of the path's
    constant step: no integer-pixel jitter (rounding to pixels would give ~0.3 px RMS)."""
    image = _photo(1200, 800)
    config = PanZoomConfig(width=320, height=192, frames=24, fps=24, easing="linear",
                           speed_range=(0.05, 0.05))
    path = plan_path(Motion.PAN_RIGHT, (1200, 800), config, rng_for(0, "slow"))
    frames = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY).astype(np.float32)
              for f in render_clip(image, path, 320, 192, 24)]
    shifts = np.array([_shift_x(a, b) for a, b in zip(frames, frames[1:], strict=False)])
    step = (path.end.cx - path.start.cx) / path.start.width * 320 / 23  # output px per frame
    assert 0.1 < step < 1.0  # a genuinely sub-pixel motion per frame
    assert abs(abs(shifts.mean()) - step) < 0.01
    assert np.sqrt(np.mean((np.abs(shifts) - step) ** 2)) < 0.06


def test_shrinking_is_area_filtered():
    """A 1-pixel checkerboard seen from far away must average to grey, not alias."""
    board = (np.indices((1200, 1800)).sum(axis=0) % 2 * 255).astype(np.uint8)
    image = np.repeat(board[..., None], 3, axis=2)
    config = PanZoomConfig(width=320, height=192, frames=4, zoom_range=(1.2, 1.2))
    path = plan_path(Motion.ZOOM_IN, (1800, 1200), config, rng_for(0, "board"))
    for frame in render_clip(image, path, 320, 192, 4):
        assert abs(frame.mean() - 127.5) < 3
        assert frame.std() < 12


def _reference_frame(image, window, width, height):
    """The slow gold standard: area-resize the whole image to this frame's exact scale, then
    shift by the fractional offset."""
    scale = window.width * image.shape[1] / width
    small = cv2.resize(image, (0, 0), fx=1 / scale, fy=1 / scale, interpolation=cv2.INTER_AREA)
    left = (window.cx - window.width / 2) * image.shape[1] / scale
    top = (window.cy - window.height / 2) * image.shape[0] / scale
    matrix = np.array([[1.0, 0.0, left], [0.0, 1.0, top]])
    return cv2.warpAffine(small, matrix, (width, height),
                          flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT_101)


def test_large_zoom_matches_per_frame_area_filtering():
    """A 1x -> 4x zoom crosses source levels; every frame stays close to a frame area-filtered
    at its own exact scale, so there is neither aliasing nor a pop at level changes."""
    image = _photo(2400, 1600)
    config = PanZoomConfig(width=320, height=192, frames=30, zoom_range=(4.0, 4.0),
                           max_upscale=2.0)
    path = plan_path(Motion.ZOOM_IN, (2400, 1600), config, rng_for(0, "deep"))
    assert path.zoom_end / path.zoom_start > 3.5
    for index, frame in enumerate(render_clip(image, path, 320, 192, 30)):
        reference = _reference_frame(image, path.window_at(index / 29), 320, 192)
        error = np.mean((frame.astype(float) - reference) ** 2)
        assert 10 * np.log10(255**2 / error) > 32, index


def test_zoom_under_one_octave_is_filtered_too():
    """A 1.9x zoom: the far frames shrink the closest frame's level by up to 1.9x, which must
    be filtered as well (fine noise aliases badly when it is not)."""
    noise = np.random.default_rng(0).integers(0, 256, (768, 1280, 3), dtype=np.uint8)
    config = PanZoomConfig(width=320, height=192, frames=10, zoom_range=(1.9, 1.9))
    path = plan_path(Motion.ZOOM_IN, (1280, 768), config, rng_for(0, "noise"))
    assert path.zoom_end / path.zoom_start > 1.8
    psnr = []
    for index, frame in enumerate(render_clip(noise, path, 320, 192, 10)):
        reference = _reference_frame(noise, path.window_at(index / 9), 320, 192)
        psnr.append(10 * np.log10(255**2 / np.mean((frame.astype(float) - reference) ** 2)))
    # unfiltered shrinking gave a mean of 24.2 dB and a worst frame of 20.6 dB here
    assert np.mean(psnr) > 25.5 and min(psnr) > 23.5, np.round(psnr, 1)


def _swscale_yuv420p(frame):
    """PyAV's own rgb24 -> yuv420p conversion (swscale): what the encoder saw before the
    renderer wrote yuv420p itself."""
    import av

    return av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(
        format="yuv420p").to_ndarray()


@pytest.mark.parametrize("motion,zoom,size", [
    (Motion.ZOOM_IN, 1.25, (1800, 1200)), (Motion.PAN_LEFT, 1.25, (1800, 1200)),
    (Motion.PAN_ZOOM, 1.25, (1800, 1200)), (Motion.ZOOM_IN, 4.0, (1800, 1200)),
    (Motion.PAN_ZOOM, 1.25, (701, 467)), (Motion.PAN_ZOOM, 1.25, (519, 347)),
    (Motion.PAN_ZOOM, 1.25, (321, 213))])
def test_yuv420p_renderer_gives_the_bicubic_renderers_picture(motion, zoom, size):
    """The planes the stage hands x264 stay within 50 dB PSNR (luma and chroma alike) of the
    bicubic RGB renderer converted by swscale, for zooms, pans, a zoom across pyramid levels
    (4x, blended), and odd sources shrunk by 1.75 and 1.3 or not at all."""
    image = _photo(*size)
    config = PanZoomConfig(width=320, height=192, frames=12, zoom_range=(zoom, zoom))
    path = plan_path(motion, size, config, rng_for(0, "planes"))
    before = np.stack([_swscale_yuv420p(f) for f in render_clip(image, path, 320, 192, 12)])
    now = np.stack(list(render_clip_yuv420p(image, path, 320, 192, 12)))
    assert now.shape == (12, 288, 320) and now.dtype == np.uint8
    for plane in (slice(0, 192), slice(192, 288)):  # Y; then U and V, row after row
        error = np.mean((now[:, plane].astype(float) - before[:, plane]) ** 2)
        assert 10 * np.log10(255**2 / error) > 50, plane


@pytest.mark.parametrize("size", [(1001, 667), (1000, 667), (1001, 666), (701, 467)])
def test_yuv420p_flat_colour_stays_flat_to_the_edges(size):
    """A flat colour gives its own Y, U and V everywhere, the last row and column of odd
    sources included (their 2x2 cells repeat the edge)."""
    colour = np.array([200, 60, 30], np.uint8)
    image = np.tile(colour, (size[1], size[0], 1))
    config = PanZoomConfig(width=320, height=192, frames=3, zoom_range=(1.25, 1.25))
    path = plan_path(Motion.ZOOM_IN, size, config, rng_for(0, "flat"))  # starts on it all
    # BT.601 limited range, from its definition
    r, g, b = colour / 255
    luma = 16 + 65.481 * r + 128.553 * g + 24.966 * b
    u = 128 - 37.797 * r - 74.203 * g + 112.0 * b
    v = 128 + 112.0 * r - 93.786 * g - 18.214 * b
    for frame in render_clip_yuv420p(image, path, 320, 192, 3):
        assert np.abs(frame[:192].astype(float) - luma).max() <= 1
        assert np.abs(frame[192:240].astype(float) - u).max() <= 1
        assert np.abs(frame[240:].astype(float) - v).max() <= 1


def test_yuv420p_slow_pan_is_sub_pixel_smooth():
    """The shipped renderer's luma moves by the path's constant sub-pixel step (as
    test_slow_pan_is_sub_pixel_smooth asks of the bicubic one)."""
    image = _photo(1200, 800)
    config = PanZoomConfig(width=320, height=192, frames=24, fps=24, easing="linear",
                           speed_range=(0.05, 0.05))
    path = plan_path(Motion.PAN_RIGHT, (1200, 800), config, rng_for(0, "slow"))
    frames = [f[:192].astype(np.float32) for f in render_clip_yuv420p(image, path, 320, 192, 24)]
    shifts = np.array([_shift_x(a, b) for a, b in zip(frames, frames[1:], strict=False)])
    step = (path.end.cx - path.start.cx) / path.start.width * 320 / 23
    assert abs(abs(shifts.mean()) - step) < 0.01
    assert np.sqrt(np.mean((np.abs(shifts) - step) ** 2)) < 0.06


def test_yuv420p_shrinking_is_area_filtered():
    """A far 1-pixel checkerboard is mid-grey in every plane, not aliased."""
    board = (np.indices((1200, 1800)).sum(axis=0) % 2 * 255).astype(np.uint8)
    image = np.repeat(board[..., None], 3, axis=2)
    config = PanZoomConfig(width=320, height=192, frames=4, zoom_range=(1.2, 1.2))
    path = plan_path(Motion.ZOOM_IN, (1800, 1200), config, rng_for(0, "board"))
    for frame in render_clip_yuv420p(image, path, 320, 192, 4):
        luma = (frame[:192].astype(float) - 16) * 255 / 219  # limited range -> 0..255
        assert abs(luma.mean() - 127.5) < 3 and luma.std() < 12
        assert np.abs(frame[192:].astype(float) - 128).max() <= 1  # grey: no colour


def test_small_image_is_skipped_or_upscaled_within_limit():
    config = PanZoomConfig(width=512, height=320, max_upscale=2.0)
    with pytest.raises(SkipImage, match="too small: 200x150 needs"):
        plan_path(Motion.ZOOM_IN, (200, 150), config, rng_for(0, "s"))
    path = plan_path(Motion.ZOOM_IN, (300, 200), config, rng_for(0, "s"))
    # the closest window must not need more than 2x upscaling
    assert path.end.width * 300 >= 512 / 2.0 - 1e-6


def test_same_seed_same_path_other_key_other_path():
    config = PanZoomConfig()
    a = plan_path(Motion.PAN_ZOOM, (900, 600), config, rng_for(3, "a"))
    assert a == plan_path(Motion.PAN_ZOOM, (900, 600), config, rng_for(3, "a"))
    assert a != plan_path(Motion.PAN_ZOOM, (900, 600), config, rng_for(3, "b"))
    assert a != plan_path(Motion.PAN_ZOOM, (900, 600), config, rng_for(4, "a"))


def test_parse_motions_groups_and_errors():
    assert parse_motions("pan") == MOTION_GROUPS["pan"]
    assert parse_motions("zoom-in,diagonal") == (Motion.ZOOM_IN, *MOTION_GROUPS["diagonal"])
    assert parse_motions("all") == tuple(Motion)
    with pytest.raises(ValueError, match="unknown motion 'spin'"):
        parse_motions("pan,spin")


def test_captions_describe_the_motion():
    config = PanZoomConfig()
    rng = rng_for(0, "c")
    left = plan_path(Motion.PAN_LEFT, (900, 600), config, rng)
    assert motion_caption("A cat on a mat.", left, True) == "A cat on a mat. The camera pans left."
    assert motion_caption("A cat", left, False) == "A cat"
    assert motion_caption("What a view!", left, True) == "What a view! The camera pans left."
    zoom = plan_path(Motion.ZOOM_OUT, (900, 600), config, rng)
    assert motion_caption(None, zoom, True) == "The camera zooms out."
    up = plan_path(Motion.PAN_UP, (900, 600), config, rng)
    assert up.caption() == "The camera tilts up."


@pytest.mark.parametrize("bad", [dict(width=511), dict(frames=1), dict(zoom_range=(0.9, 1.2)),
                                 dict(speed_range=(0.3, 0.1)), dict(easing="bounce"),
                                 dict(max_upscale=0.5), dict(seed=-1), dict(crf=52),
                                 dict(preset="ludicrous")])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        PanZoomConfig(**bad)


def test_stage_makes_decodable_clips_with_metadata(tmp_path):
    path = tmp_path / "photo.png"
    cv2.imwrite(str(path), cv2.cvtColor(_photo(640, 480), cv2.COLOR_RGB2BGR))
    record = Record(key="photo", source=str(path), path=str(path), data=None,
                    text="An astronaut", label=None, meta={})
    config = PanZoomConfig(width=256, height=160, frames=10, fps=5, clips_per_image=3, seed=1)
    stage = PanZoomStage(config)
    samples = stage(record)
    assert [s.key for s in samples] == ["photo_c0", "photo_c1", "photo_c2"]
    assert stage.output_keys(record) == ["photo_c0", "photo_c1", "photo_c2"]
    motions = set()
    for sample in samples:
        video = read_frames(sample.files["mp4"])
        assert video.shape == (10, 160, 256, 3)
        info = json.loads(sample.files["json"])
        assert info["frames"] == 10 and info["fps"] == 5 and info["seed"] == 1
        assert info["input_key"] == "photo" and info["source"] == str(path)
        assert sample.files["txt"].decode() == info["caption"]
        assert info["caption"].startswith("An astronaut. The camera ")
        assert sample.row["status"] == "ok" and sample.row["input_key"] == "photo"
        motions.add(info["camera"]["motion"])
    assert len(motions) == 3  # each clip of an image gets its own motion
    again = stage(record)
    assert [s.files["mp4"] for s in again] == [s.files["mp4"] for s in samples]


def test_stage_records_bad_and_small_inputs(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image at all")
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.zeros((40, 60, 3), np.uint8))
    stage = PanZoomStage(PanZoomConfig(width=256, height=160, frames=4))
    [failed] = stage(Record("bad", str(bad), str(bad), None, None, None, {}))
    assert failed["status"] == "failed" and failed["error"]
    [skipped] = stage(Record("small", str(small), str(small), None, None, None, {}))
    assert skipped["status"] == "skipped" and skipped["error"].startswith("too small")
