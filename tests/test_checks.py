"""The checks (generate/checks.py), the report (generate/report.py) and `datakit check`.

Videos are made from scikit-image photos: a smooth pan (one camera move, cut into chunks), the
same pan spliced with a pan over an unrelated photo, a still video, a video that darkens and
blurs in its second half.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
from typer.testing import CliRunner

from datakit.cli import app
from datakit.io.video import encode_video
from generate.checks import CheckSettings, check_video, check_videos, load_results, warp_pair
from generate.report import write_report

WIDTH, HEIGHT, FRAMES = 128, 96, 24


def pan(image: np.ndarray, frames: int = FRAMES, speed: float = 1.5, y: int = 150) -> list:
    """A camera moving right over `image` at `speed` px per frame (sub-pixel warps)."""
    return [cv2.warpAffine(image, np.float32([[1, 0, -(120 + speed * i)], [0, 1, -y]]),
                           (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR) for i in range(frames)]


def write(path, frames) -> str:
    path.write_bytes(encode_video(frames, 8, crf=10))
    return str(path)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    astronaut, coffee = skimage.data.astronaut(), skimage.data.coffee()
    smooth = pan(astronaut)
    darker = [cv2.GaussianBlur((f * 0.5).astype(np.uint8), (9, 9), 3) if i >= 12 else f
              for i, f in enumerate(smooth)]
    return {
        "smooth": write(folder / "smooth.mp4", smooth),
        "spliced": write(folder / "spliced.mp4", smooth[:12] + pan(coffee, y=100)[12:]),
        "still": write(folder / "still.mp4", [smooth[0]] * 12),
        "darker": write(folder / "darker.mp4", darker),
    }


def test_seam_jump_is_large_on_a_splice_and_near_one_on_a_smooth_pan(videos):
    smooth, _ = check_video(videos["smooth"], chunk_starts=[0, 12])
    spliced, _ = check_video(videos["spliced"], chunk_starts=[0, 12])
    assert [s["frame"] for s in spliced["seams"]] == [12]
    assert spliced["metrics"]["seam_jump_max"] > 5
    assert smooth["metrics"]["seam_jump_max"] < 1.5
    # the unrelated content also shows in the other seam-sensitive measures
    assert spliced["metrics"]["warp_error"] > 10 * smooth["metrics"]["warp_error"]
    assert spliced["metrics"]["flow_std"] > smooth["metrics"]["flow_std"]
    assert spliced["metrics"]["seam_warp_jump_max"] > 100
    assert smooth["metrics"]["seam_warp_jump_max"] < 2
    # new content is a colour change, not a drift: nothing the flow follows changed colour
    assert spliced["metrics"]["colour_change_max"] > smooth["metrics"]["colour_change_max"]
    assert spliced["metrics"]["colour_drift_max"] < 1 and smooth["metrics"]["colour_drift_max"] < 1
    # the cut detector finds the splice, on the seam, and nothing in the smooth pan
    assert spliced["scene_cut_frames"] == [12]
    assert spliced["metrics"]["scene_cuts_off_seams"] == 0
    assert smooth["scene_cut_frames"] == []


def test_flow_measures_the_pan_speed_and_a_still_video_stagnates(videos):
    smooth, _ = check_video(videos["smooth"], CheckSettings(flow="dis"))
    still, _ = check_video(videos["still"])
    # 1.5 px per frame to the right: flow points right, magnitude near 1.5 where textured
    assert 0.5 < smooth["metrics"]["motion"] < 2.0
    assert smooth["metrics"]["stagnant_fraction"] == 0
    assert still["metrics"]["motion"] < 0.05
    assert still["metrics"]["stagnant_fraction"] == 1
    assert still["metrics"]["flicker"] == pytest.approx(1.0, abs=1e-3)
    assert 0.9 < smooth["metrics"]["flicker"] < 1.0
    assert len(smooth["series"]["difference"]) == FRAMES - 1


def test_drift_tracks_colour_and_sharpness_against_the_first_chunk(videos):
    result, sheet = check_video(videos["darker"], chunk_starts=[0, 12])
    first, second = result["chunks"]
    assert first["colour_delta_e"] == 0 and first["sharpness_log2_ratio"] == 0
    assert second["lab"][0] < first["lab"][0] - 10  # darker
    assert second["sharpness_log2_ratio"] < -1  # blurred: sharpness at most half
    assert result["metrics"]["colour_change_max"] == second["colour_delta_e"] > 10
    # the same scene points darkened: the drift followed along the flow says so too
    assert result["metrics"]["colour_drift_max"] == second["colour_drift"]
    assert second["colour_drift"] == pytest.approx(second["colour_delta_e"], rel=0.15)
    assert len(sheet) == 2 and all(len(row) == 6 for row in sheet)  # a row per chunk


def test_chunks_come_from_the_generate_json_else_equal_segments(videos, tmp_path):
    video = tmp_path / "story.mp4"
    video.write_bytes(Path(videos["spliced"]).read_bytes())
    alone, _ = check_video(video)
    assert alone["seams"] == [] and alone["metrics"]["seam_jump_max"] is None
    assert len(alone["chunks"]) == 4 and alone["chunks_from"] == "none"
    video.with_suffix(".json").write_text(json.dumps({"chunk_starts": [0, 12]}))
    told, _ = check_video(video)
    assert told["chunks_from"] == "story.json" and [s["frame"] for s in told["seams"]] == [12]
    every, _ = check_video(videos["spliced"], chunk_frames=8)
    assert every["chunk_starts"] == [0, 8, 16]


def test_warp_error_is_zero_for_an_exact_shift_and_masks_occlusions():
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.random((40, 60, 3), dtype=np.float32), (5, 5), 1)
    shifted = np.roll(base, 2, axis=1)  # content moves 2 px right
    forward = np.zeros((40, 60, 2), np.float32)
    forward[..., 0] = 2
    error, occluded = warp_pair(base, shifted, forward, -forward)
    assert error < 1e-6
    assert occluded == pytest.approx(2 / 60, abs=1e-6)  # the columns that flow out of view
    inconsistent = warp_pair(base, shifted, forward, forward)[1]
    assert inconsistent == 1.0  # forward and backward disagree everywhere: all occluded


def test_check_videos_writes_json_and_sheet_and_records_unreadable_files(videos, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    results = check_videos([videos["smooth"], bad], tmp_path / "report")
    assert "error" not in results[0] and "cannot probe" in results[1]["error"]
    assert (tmp_path / "report" / "smooth_sheet.png").is_file()
    sheet = cv2.imread(str(tmp_path / "report" / "smooth_sheet.png"))
    assert sheet.shape[0] > 4 * 96  # four rows of 96 px thumbnails (equal segments)
    assert [r["name"] for r in load_results(tmp_path / "report")] == ["bad", "smooth"]
    index = write_report(results, tmp_path / "report")
    page = index.read_text()
    assert "smooth_metrics.png" in page and "smooth_sheet.png" in page and "bad.mp4" in page
    assert (tmp_path / "report" / "smooth_metrics.png").stat().st_size > 1000
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary[0]["flicker"] == results[0]["metrics"]["flicker"]


def test_check_command(videos, tmp_path):
    runner = CliRunner()
    out = tmp_path / "report"
    result = runner.invoke(app, ["check", videos["smooth"], videos["spliced"], "--out",
                                 str(out), "--chunk-frames", "12", "-q"])
    assert result.exit_code == 0, result.output
    assert "spliced: seam jump" in result.output
    assert {p.name for p in out.glob("*.checks.json")} == {"smooth.checks.json",
                                                          "spliced.checks.json"}
    missing = runner.invoke(app, ["check", str(tmp_path / "nope.mp4"), "--out", str(out)])
    assert missing.exit_code == 2 and "nope.mp4: no such file or folder" in missing.output
    assert "Traceback" not in missing.output
    (tmp_path / "broken.mp4").write_bytes(b"\0" * 100)
    broken = runner.invoke(app, ["check", str(tmp_path / "broken.mp4"), videos["still"],
                                 "--out", str(tmp_path / "r2"), "-q"])
    assert broken.exit_code == 1 and "failed:" in broken.output and "still:" in broken.output


# -- flow figures against clips of known motion -----------------------------------------------

def moving(dx: float, dy: float, frames: int = 8, width: int = 256, height: int = 192,
           x0: float = 120, y0: float = 150) -> list:
    """A camera moving (dx, dy) px per frame over the astronaut: content moves (-dx, -dy)."""
    image = skimage.data.astronaut()
    return [cv2.warpAffine(image, np.float32([[1, 0, -(x0 + dx * i)], [0, 1, -(y0 + dy * i)]]),
                           (width, height), flags=cv2.INTER_LINEAR) for i in range(frames)]


@pytest.mark.parametrize(("dx", "dy"), [(3, 0), (-3, 0), (0, 3), (0, -1), (1, 0), (6, 0),
                                        (2, -2)])
def test_motion_matches_known_pans_at_any_analysis_size(tmp_path, dx, dy):
    video = write(tmp_path / "pan.mp4", moving(dx, dy))
    speed = float(np.hypot(dx, dy))
    full, _ = check_video(video, CheckSettings(max_side=256))
    half, _ = check_video(video, CheckSettings(max_side=128))
    for result in (full, half):
        assert result["metrics"]["motion"] == pytest.approx(speed, rel=0.06)
        # the mean flow vector points where the content moves: against the camera
        mean = np.mean(result["series"]["flow_vector"], axis=0)
        assert mean == pytest.approx([-dx, -dy], abs=0.1 * speed + 0.05)
        # MAWE is the warp error over 9.5 x the mean squared flow: speed^2 for a uniform pan
        metrics = result["metrics"]
        assert metrics["mawe"] == pytest.approx(metrics["warp_error"] / (9.5 * speed**2),
                                                rel=0.15)
    assert half["metrics"]["motion"] == pytest.approx(full["metrics"]["motion"], rel=0.05)


def test_farneback_is_kept_as_an_option_and_reads_pans_slow(tmp_path):
    video = write(tmp_path / "pan.mp4", moving(3, 0))
    result, _ = check_video(video, CheckSettings(flow="farneback", max_side=256))
    assert 0.7 * 3 < result["metrics"]["motion"] < 0.9 * 3  # documented: about 0.8x


def test_a_rewind_at_a_seam_is_a_reversal(tmp_path):
    """A chunk whose first frames replay the end of the previous one backwards (what keeping a
    mirrored bridge does): the frame pair across the seam is nearly identical, so the jump
    looks perfect, but the motion turns back."""
    forward = moving(3, 0, frames=12)
    rewind = forward + forward[-2:-6:-1] + moving(3, 0, frames=8, x0=120 + 3 * 8)[:8]
    smooth = moving(3, 0, frames=24)
    rewound, _ = check_video(write(tmp_path / "rewind.mp4", rewind), chunk_starts=[0, 12])
    steady, _ = check_video(write(tmp_path / "steady.mp4", smooth), chunk_starts=[0, 12])
    (seam,) = rewound["seams"]
    assert seam["reversal"] and seam["direction"] < -0.9
    assert rewound["metrics"]["seam_reversals"] == 1
    (calm,) = steady["seams"]
    assert not calm["reversal"] and calm["direction"] > 0.99
    assert steady["metrics"]["seam_reversals"] == 0


def test_check_folder_lists_skipped_files(videos, tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    (folder / "a.mp4").write_bytes(Path(videos["still"]).read_bytes())
    (folder / "b.webm").write_bytes(b"x")
    (folder / "a.json").write_text("{}")
    result = CliRunner().invoke(app, ["check", str(folder), "--out", str(tmp_path / "r"), "-q"])
    assert result.exit_code == 0, result.output
    assert "skipped 1 file(s) that are not .mp4 or .tar: b.webm" in result.stderr


def test_report_puts_videos_past_a_threshold_first_and_marks_them(videos, tmp_path):
    results = check_videos([videos["smooth"], videos["spliced"], videos["darker"],
                            videos["still"]], tmp_path / "r", chunk_frames=12)
    by_name = {r["name"]: r for r in results}
    assert by_name["smooth"]["fails"] == []
    assert "seam_jump_max" in by_name["spliced"]["fails"]  # a splice: jump > 2
    assert "colour_drift_max" in by_name["darker"]["fails"]  # Delta E > 10
    assert "sharpness_drift_max" in by_name["darker"]["fails"]
    assert by_name["still"]["fails"] == ["stagnant_fraction"]  # no seam, but it fails
    page = write_report(results, tmp_path / "r").read_text()
    table = page[page.index("<table>"):page.index("</table>")]
    assert table.index("smooth") > max(table.index(name) for name in ("spliced", "darker",
                                                                      "still"))
    assert table.count("class=bad") >= 5  # 2 fails cells + at least 3 metric cells
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert {s["name"]: s["fails"] for s in summary}["smooth"] == []


def test_repetition_sees_an_a_b_a_b_look(tmp_path):
    a, b = moving(1, 0, frames=8), moving(1, 0, frames=8, y0=20)
    alternating = write(tmp_path / "abab.mp4", a + b + a + b)
    steady = write(tmp_path / "pan.mp4", moving(3, 0, frames=32))
    abab, _ = check_video(alternating, chunk_starts=[0, 8, 16, 24])
    pan, _ = check_video(steady, chunk_starts=[0, 8, 16, 24])
    assert abab["metrics"]["repetition"] > 20 and "repetition" in abab["fails"]
    assert pan["metrics"]["repetition"] < 1 and "repetition" not in pan["fails"]
    short, _ = check_video(steady, chunk_starts=[0, 16])
    assert short["metrics"]["repetition"] is None


def test_contact_sheet_shows_alternating_flicker(tmp_path):
    from generate.checks import contact_frames

    assert contact_frames(0, 12, 6) == [0, 1, 5, 6, 10, 11]
    assert contact_frames(12, 24, 6) == [12, 13, 17, 18, 22, 23]
    base = moving(0, 0, frames=1)[0]
    flicker = [base if i % 2 == 0 else (base * 0.4).astype(np.uint8) for i in range(24)]
    result, sheet = check_video(write(tmp_path / "flicker.mp4", flicker), chunk_starts=[0, 12])
    for row in sheet:
        means = [float(thumb.mean()) for thumb in row]
        assert max(means) > 1.8 * min(means)  # both phases are in every row
    assert result["metrics"]["flicker"] < 0.9 and "flicker" in result["fails"]


def test_check_reads_the_toolkits_shards(videos, tmp_path):
    import tarfile

    from datakit.run.shards import write_tar_sample

    shards = tmp_path / "shards"
    shards.mkdir()
    for index, names in enumerate((("smooth", "spliced"), ("still",))):
        with tarfile.open(shards / f"{index:05d}.tar", "w") as tar:
            for name in names:
                files = {"mp4": Path(videos[name]).read_bytes(), "txt": name.encode()}
                if name == "spliced":
                    files["json"] = json.dumps({"chunk_starts": [0, 12]}).encode()
                write_tar_sample(tar, f"clip_{name}", files)
    out = tmp_path / "report"
    runner = CliRunner()
    result = runner.invoke(app, ["check", str(shards), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    checked = {r["name"]: r for r in load_results(out)}
    assert set(checked) == {"clip_smooth", "clip_spliced", "clip_still"}
    assert [s["frame"] for s in checked["clip_spliced"]["seams"]] == [12]  # from its json
    one = runner.invoke(app, ["check", str(shards / "00001.tar"), "--out", str(tmp_path / "o"),
                              "-q"])
    assert one.exit_code == 0 and "clip_still: seam jump" in one.output


# -- seams under motion (832x480, the sizes a generated video has) -----------------------------

W832, H480 = 832, 480
QUICK = CheckSettings(max_side=256)  # the flow at 256x148: the figures hold, 4x less work


def photo(name: str, width: int = 2000) -> np.ndarray:
    """A scikit-image photo scaled to `width` (room for a long pan at 832x480)."""
    image = getattr(skimage.data, name)()
    if image.ndim == 2:  # a texture: tint it
        image = np.clip(image[..., None] * np.array([1.0, 0.95, 0.85]), 0, 255).astype(np.uint8)
        image = np.tile(image, (2, 4, 1))
    scale = width / image.shape[1]
    return cv2.resize(image, (width, round(image.shape[0] * scale)),
                      interpolation=cv2.INTER_CUBIC)


def camera(image: np.ndarray, xs, y: float = 100) -> list:
    """832x480 views of `image` with the camera's left edge at each of `xs` (sub-pixel)."""
    return [cv2.warpAffine(image, np.float32([[1, 0, -x], [0, 1, -y]]), (W832, H480),
                           flags=cv2.INTER_LINEAR) for x in xs]


def steps(speed: float, frames: int, start: float = 40, jumps: dict | None = None) -> list:
    """Camera positions moving `speed` px per frame, plus `jumps[i]` px before frame i."""
    xs, x = [], start
    for i in range(frames):
        x += (jumps or {}).get(i, 0)
        xs.append(x)
        x += speed
    return xs


def test_a_hard_cut_under_a_fast_pan_is_a_seam_break(tmp_path):
    """At 8 px/frame over gravel the frame difference inside chunks is as large as across a
    cut, so `seam_jump` reads about 1; the flow-warped residual does not."""
    gravel = photo("gravel")
    frames = camera(gravel, steps(8, 16)) + camera(gravel, steps(8, 16, start=368), y=400)
    result, _ = check_video(write(tmp_path / "cut.mp4", frames), QUICK,
                             chunk_starts=[0, 16])
    (seam,) = result["seams"]
    assert seam["jump"] < 2  # what the frame difference alone sees
    assert seam["warp_jump"] > 10 and seam["motion_jump"] > 20
    assert {"seam_warp_jump_max", "seam_motion_jump_max"} <= set(result["fails"])


def test_a_rerendered_seam_is_a_seam_break(tmp_path):
    """The next chunk continues the pan (4 px/frame) over a re-render of the same photo: the
    same layout and colours, the fine detail made anew."""
    astronaut = photo("astronaut")
    low = cv2.GaussianBlur(astronaut, (0, 0), 3).astype(np.float32)
    detail = np.roll(astronaut.astype(np.float32) - low, (17, 23), axis=(0, 1))
    rerendered = np.clip(low + 1.3 * detail, 0, 255).astype(np.uint8)
    frames = camera(astronaut, steps(4, 16)) + camera(rerendered, steps(4, 16, start=104))
    result, _ = check_video(write(tmp_path / "rerender.mp4", frames), QUICK,
                             chunk_starts=[0, 16])
    (seam,) = result["seams"]
    assert seam["jump"] < 2
    assert seam["warp_jump"] > 10 and "seam_warp_jump_max" in result["fails"]
    assert result["metrics"]["colour_drift_max"] < 1  # the same colours: no drift


def test_a_pan_that_jumps_at_each_seam_is_flagged_and_a_steady_one_is_not(tmp_path):
    """64 frames at 8 px/frame, chunks of 16; the camera jumps 12 px more at each seam."""
    astronaut = photo("astronaut")
    jumped, _ = check_video(write(tmp_path / "jump.mp4", camera(
        astronaut, steps(8, 64, jumps={16: 12, 32: 12, 48: 12}))), QUICK,
        chunk_starts=[0, 16, 32, 48])
    steady, _ = check_video(write(tmp_path / "steady.mp4", camera(astronaut, steps(8, 64))),
                            QUICK, chunk_starts=[0, 16, 32, 48])
    assert len(jumped["seams"]) == 3
    for seam in jumped["seams"]:
        assert seam["flow"] == pytest.approx(20, abs=1.5)  # 8 + 12 px across the seam
        assert seam["motion_jump"] > 20 and not seam["reversal"]
    assert "seam_motion_jump_max" in jumped["fails"]
    for seam in steady["seams"]:
        assert seam["motion_jump"] < 3 and seam["warp_jump"] < 2 and seam["jump"] < 1.2
    assert steady["fails"] == []


def test_a_steady_pan_over_one_photo_changes_colour_but_does_not_drift(tmp_path):
    """From the red table to the white cup: the chunks' mean colour moves by more than the
    drift threshold, the colour of every scene point stays."""
    frames = camera(photo("coffee"), steps(16, 48, start=10))
    result, _ = check_video(write(tmp_path / "pan.mp4", frames), QUICK, chunk_starts=[0, 16, 32])
    assert result["metrics"]["colour_change_max"] > 10  # content that changes
    assert result["metrics"]["colour_drift_max"] < 1
    assert "colour_drift_max" not in result["fails"]
    # the same pan tinted a little more every frame does drift, by about the tint
    tinted = [np.clip(f * np.array([1.0 - 0.008 * i, 1.0, 1.0]), 0, 255).astype(np.uint8)
              for i, f in enumerate(frames)]
    drifting, _ = check_video(write(tmp_path / "tinted.mp4", tinted), QUICK,
                              chunk_starts=[0, 16, 32])
    assert drifting["metrics"]["colour_drift_max"] > 10
    assert "colour_drift_max" in drifting["fails"]


def test_a_small_object_reversing_on_a_still_background_is_a_reversal(tmp_path):
    """A 64x64 patch moves 4 px/frame right for chunk 0 and left for chunk 1 over a still
    photo: 1% of the pixels move, so the whole-frame mean flow is under 0.1 px."""
    background = cv2.resize(skimage.data.coffee(), (W832, H480))
    patch = skimage.data.astronaut()[100:164, 200:264]
    frames, x = [], 300
    for i in range(32):
        frame = background.copy()
        frame[200:264, x:x + 64] = patch
        frames.append(frame)
        x += 4 if i < 15 else -4
    result, _ = check_video(write(tmp_path / "object.mp4", frames), QUICK, chunk_starts=[0, 16])
    assert abs(np.mean(result["series"]["flow_vector"], axis=0)[0]) < 0.1
    (seam,) = result["seams"]
    assert seam["reversal"] and seam["direction"] < -0.9
    assert result["metrics"]["seam_reversals"] == 1
    # the motion vector is the object's (flow smooths it over a halo: under 4 px/frame)
    vectors = np.array(result["series"]["motion_vector"])
    assert (vectors[:14, 0] > 1).all() and (vectors[16:, 0] < -1).all()


def test_a_jump_across_the_seam_is_not_a_reversal(tmp_path):
    """Steady motion on both sides and a backward jump on the pair across the seam: the
    directions compare the chunks' own pairs, so the jump is not read as the motion turning."""
    astronaut = photo("astronaut")
    frames = camera(astronaut, steps(4, 24, jumps={12: -24}))
    result, _ = check_video(write(tmp_path / "back.mp4", frames), QUICK, chunk_starts=[0, 12])
    (seam,) = result["seams"]
    assert seam["flow"] > 12  # the crossing pair moves the other way, fast
    assert seam["direction"] > 0.99 and not seam["reversal"]
    assert seam["motion_jump"] > 20
