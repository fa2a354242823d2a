"""A video too long to hold decoded (`synthesize/watermark/videos.py`): judged on the frames
the detector samples, stripped segment by segment, never decoded whole."""

import json

import cv2
import numpy as np
import pytest
from skimage import data

import datakit.io.video as video_io
import synthesize.watermark.videos as videos
from datakit.io.video import encode_video, iter_frames, read_frames
from synthesize.pan_zoom import Motion, PanZoomConfig, plan_path, rng_for
from synthesize.render import render_clip
from synthesize.watermark import ShardSample, WatermarkConfig, WatermarkStage, watermark_video
from synthesize.watermark.detection import detect_video

W, H, T = 320, 192, 40


@pytest.fixture(scope="module")
def clips():
    """A pan over a real photo, clean and with an opaque word in the top-right corner."""
    image = data.astronaut()
    config = PanZoomConfig(width=W, height=H, frames=T, speed_range=(0.15, 0.2),
                           zoom_range=(1.2, 1.3))
    path = plan_path(Motion.PAN_RIGHT, (image.shape[1], image.shape[0]), config,
                     rng_for(0, "astronaut"))
    clean = np.stack(list(render_clip(image, path, W, H, T)))
    layer = np.zeros((H, W), np.uint8)
    cv2.putText(layer, "SAMPLE", (150, 110), cv2.FONT_HERSHEY_SIMPLEX, 1.1, 255, 3,
                cv2.LINE_AA)
    alpha = (layer / 255.0)[None, ..., None]
    marked = np.clip(alpha * 255 + (1 - alpha) * clean, 0, 255).round().astype(np.uint8)
    mp4 = encode_video(marked, 8.0, crf=10, preset="ultrafast")
    return clean, read_frames(mp4), mp4, layer > 5


def long_clips(monkeypatch):
    """Every clip counts as long; decoding one whole is an error."""
    monkeypatch.setattr(videos, "WHOLE_CLIP_BYTES", 0)

    def whole(source, indices=None):
        raise AssertionError("a long clip was decoded whole")

    monkeypatch.setattr(video_io, "read_frames", whole)


def test_segments_are_even_and_never_a_short_tail(monkeypatch):
    monkeypatch.setattr(videos, "SEGMENT_BYTES", 30 * 100)
    assert videos.segment_lengths(100, 100) == [25, 25, 25, 25]
    assert videos.segment_lengths(61, 100) == [21, 20, 20]
    assert videos.segment_lengths(10, 100) == [10]
    assert videos.segment_lengths(40, 10**9) == [14, 13, 13]  # MIN_SEGMENT_FRAMES each
    assert videos.MIN_SEGMENT_FRAMES == 16


def test_a_long_clip_is_judged_on_the_frames_the_detector_samples(clips, monkeypatch):
    _, _, mp4, _ = clips
    config = WatermarkConfig(action="flag")
    whole = watermark_video(mp4, config)
    monkeypatch.setattr(videos, "WHOLE_CLIP_BYTES", 0)
    seen = []
    monkeypatch.setattr("synthesize.watermark.policy.detect_video",
                        lambda frames, *a: seen.append(len(frames)) or detect_video(frames, *a))
    long = watermark_video(mp4, config)
    assert seen == [config.sample_frames]  # the 16 frames, not the 40
    assert long.frames == whole.frames == T and (long.width, long.height) == (W, H)
    assert long.fields["watermark_action"] == whole.fields["watermark_action"] == "flagged"
    assert long.fields["watermark_box"] == whole.fields["watermark_box"]
    assert long.mp4 is None and not long.dropped


def test_a_long_clip_is_stripped_segment_by_segment(clips, monkeypatch):
    clean, decoded, mp4, mask = clips
    config = WatermarkConfig(action="strip", crop_band=0.0)
    whole = np.stack(list(iter_frames(watermark_video(mp4, config, preset="ultrafast").mp4)))
    long_clips(monkeypatch)
    monkeypatch.setattr(videos, "SEGMENT_BYTES", 1)  # MIN_SEGMENT_FRAMES a segment
    stripped = []
    strip = videos.strip
    monkeypatch.setattr(videos, "strip",
                        lambda frames, *a: stripped.append(frames.copy()) or strip(frames, *a))
    (sample,) = WatermarkStage(config, preset="ultrafast")(
        ShardSample("k", "x.tar::k", {"mp4": mp4, "json": json.dumps({"fps": 8}).encode()}))
    # three segments, each with the 16 frames the detector sampled over the whole clip
    assert [len(s) for s in stripped] == [14 + 16, 13 + 16, 13 + 16]
    segments = np.concatenate([s[:-16] for s in stripped])
    assert np.abs(segments.astype(int) - decoded).mean() < 1.0  # the clip's frames, in order
    sampled = np.linspace(0, T - 1, 16).round().astype(int)
    assert all(np.abs(s[-16:].astype(int) - decoded[sampled]).mean() < 1.0 for s in stripped)
    row = sample.row
    assert row["watermark_action"] == "stripped" and row["frames"] == T
    out = np.stack(list(iter_frames(sample.files["mp4"])))
    assert out.shape == clean.shape
    mse = lambda a, b: float(np.mean((a.astype(float) - b.astype(float)) ** 2))  # noqa: E731
    # the sampled frames reveal what a short segment alone does not: as good as whole
    assert mse(out[:, mask], clean[:, mask]) < mse(whole[:, mask], clean[:, mask])
    far = cv2.dilate(mask.astype(np.uint8), np.ones((15, 15), np.uint8)) == 0
    assert mse(out[:, far], decoded[:, far]) < 1.2 * mse(whole[:, far], decoded[:, far])


def test_a_refused_segment_keeps_the_clip_as_it_was(clips, monkeypatch):
    _, _, mp4, _ = clips
    long_clips(monkeypatch)
    monkeypatch.setattr(videos, "SEGMENT_BYTES", 1)
    strip = videos.strip
    calls = []

    def refuse_the_second(frames, *args):
        calls.append(len(frames))
        cleaned, action, _ = strip(frames, *args)
        if len(calls) == 2:
            return frames, "flagged", "strip refused: it took away motion"
        return cleaned, action, ""

    monkeypatch.setattr(videos, "strip", refuse_the_second)
    verdict = watermark_video(mp4, WatermarkConfig(action="strip", crop_band=0.0))
    assert verdict.mp4 is None and not verdict.dropped
    assert verdict.fields["watermark_action"] == "flagged"
    assert verdict.fields["watermark_reason"] == ("strip refused: it took away motion "
                                                  "(frames 14-26)")



def _yuv444_mp4(frames: np.ndarray, pixel_aspect=None) -> bytes:
    """H.264 in 4:4:4, which takes odd sides (as some cameras' and phones' files have),
    anamorphic with `pixel_aspect` (a Fraction)."""
    import io

    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv444p"
        stream.options = {"crf": "10", "preset": "ultrafast"}
        if pixel_aspect:
            stream.codec_context.sample_aspect_ratio = pixel_aspect
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


@pytest.mark.parametrize("long", [False, True])
def test_a_stripped_clip_with_an_odd_side_is_cut_to_even_and_says_so(clips, long, monkeypatch):
    """yuv420p takes even sides only: such a clip once failed as an internal error."""
    _, decoded, _, mask = clips
    if long:
        long_clips(monkeypatch)
    odd = _yuv444_mp4(decoded[:, :H - 1, :W - 1])
    config = WatermarkConfig(action="strip", crop_band=0.0)
    (sample,) = WatermarkStage(config, preset="ultrafast")(ShardSample(
        "k", "x.tar::k", {"mp4": odd, "json": json.dumps({"width": W - 1, "fps": 8}).encode()}))
    row = sample.row
    assert row["status"] == "ok" and row["watermark_action"] == "stripped"
    assert (row["width"], row["height"]) == (W - 2, H - 2)
    assert row["notes"] == [f"re-encoded at {W - 2}x{H - 2}: the input's {W - 1}x{H - 1} has an "
                            "odd side, and yuv420p needs even ones (the last row or column is "
                            "cut)"]
    assert json.loads(sample.files["json"])["width"] == W - 2
    out = np.stack(list(iter_frames(sample.files["mp4"])))
    assert out.shape == (T, H - 2, W - 2, 3)
    inside = mask[:H - 2, :W - 2]
    assert np.abs(out[:, inside].astype(int) - 255).mean() > 40  # the white word is gone
    # a clip with nothing to strip keeps its bytes, whatever its size
    clean = _yuv444_mp4(clips[0][:, :H - 1, :W - 1])
    (kept,) = WatermarkStage(config)(ShardSample("c", "x.tar::c", {"mp4": clean}))
    assert kept.files["mp4"] == clean and kept.row["watermark_action"] == "clean"
    assert kept.row["notes"] is None


@pytest.mark.parametrize("long", [False, True])
def test_a_stripped_anamorphic_clip_is_shown_as_it_was(clips, long, monkeypatch):
    """Re-encoding keeps the stream's sample aspect ratio: a 16:9 DVD-style clip must not
    come back squeezed to its stored 5:4."""
    from fractions import Fraction

    from datakit.io.video import probe

    _, decoded, _, _ = clips
    if long:
        long_clips(monkeypatch)
    wide = _yuv444_mp4(decoded, Fraction(64, 45))
    verdict = watermark_video(wide, WatermarkConfig(action="strip", crop_band=0.0),
                              preset="ultrafast")
    assert verdict.fields["watermark_action"] == "stripped"
    info = probe(verdict.mp4)
    assert (info.width, info.height) == (W, H)
    assert info.pixel_aspect == pytest.approx(64 / 45, abs=1e-3)


@pytest.mark.parametrize("long", [False, True])
def test_an_anamorphic_clip_is_judged_as_shown_and_stripped_as_stored(clips, long,
                                                                      monkeypatch):
    """The detector sees square pixels (a 64:45 clip stored 320 wide is shown 456 wide:
    squeezed, text is narrower than any it learned); the mask it finds comes back on the
    stored pixels, where the strip works."""
    from fractions import Fraction

    from synthesize.watermark.config import Detection

    _, decoded, _, _ = clips
    if long:
        long_clips(monkeypatch)
    seen = []

    def found_on_the_right(frames, *args):
        seen.append(frames.shape[2])
        mask = np.zeros(frames.shape[1:3], bool)
        mask[20:40, frames.shape[2] - 114:frames.shape[2] - 14] = True  # 100 shown px wide
        return Detection(0.9, True, mask, (frames.shape[2] - 114, 20, frames.shape[2] - 14,
                                           40), "static-overlay")

    monkeypatch.setattr("synthesize.watermark.policy.detect_video", found_on_the_right)
    wide = _yuv444_mp4(decoded, Fraction(64, 45))
    verdict = watermark_video(wide, WatermarkConfig(action="flag"))
    assert seen == [456]  # 320 * 64 / 45, to an even number
    x0, y0, x1, y1 = verdict.fields["watermark_box"]
    assert (y0, y1) == (20, 40)
    assert abs(x0 - round(342 * 45 / 64)) <= 1 and abs(x1 - round(442 * 45 / 64)) <= 1
    seen.clear()
    square = watermark_video(_yuv444_mp4(decoded), WatermarkConfig(action="flag"))
    assert seen == [W] and square.fields["watermark_box"] == [W - 114, 20, W - 14, 40]


def _timed_mp4(frames, times) -> bytes:
    """H.264 frames at the given presentation times (a phone's variable frame rate)."""
    import io
    from fractions import Fraction

    import av

    buffer, clock = io.BytesIO(), Fraction(1, 1000)
    with av.open(buffer, "w", format="mp4") as output:
        stream = output.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.codec_context.time_base = stream.time_base = clock
        stream.options = {"crf": "10"}
        for frame, time in zip(frames, times, strict=True):
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
            picture.pts, picture.time_base = round(time / clock), clock
            output.mux(stream.encode(picture))
        output.mux(stream.encode())
    return buffer.getvalue()


def _shown_times(mp4: bytes) -> np.ndarray:
    import io

    import av

    with av.open(io.BytesIO(mp4)) as container:
        stamps = [float(f.pts * f.time_base) for f in container.decode(video=0)]
    return np.array(stamps) - stamps[0]


@pytest.mark.parametrize("long", [False, True])
def test_a_stripped_clip_keeps_a_variable_frame_rate_s_timing(clips, monkeypatch, long):
    """A phone stalls (a real clip: 185 ms among 33 ms frames); the strip's re-encode wrote
    every frame 1/fps apart, spreading the stall over the clip."""
    _, marked, _, _ = clips
    steps = np.where(np.arange(T - 1) % 10 == 9, 0.2, 1 / 30)  # a stall every 10 frames
    times = np.concatenate([[0.0], np.cumsum(steps)])
    source = _timed_mp4(marked, times)
    assert video_io.frame_times(source) == pytest.approx(times, abs=1e-3)
    assert video_io.frame_times(encode_video(marked[:8], 8.0, preset="ultrafast")) is None
    if long:
        monkeypatch.setattr(videos, "WHOLE_CLIP_BYTES", 0)
    verdict = watermark_video(source, WatermarkConfig(action="strip", crop_band=0.0), None,
                              fps=float(T / times[-1]), preset="ultrafast")
    assert verdict.fields["watermark_action"] == "stripped" and verdict.mp4 is not None
    np.testing.assert_allclose(_shown_times(verdict.mp4), times, atol=1e-3)


@pytest.mark.parametrize("long", [False, True])
def test_a_stripped_hdr_clip_is_tone_mapped_and_says_so(clips, long, monkeypatch):
    """A strip re-encodes, and frames are read tone-mapped: the sample comes back SDR, and
    its row says so (a clip with nothing found keeps its HDR bytes)."""
    import io

    import av

    def hdr(frames: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        with av.open(buffer, "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=8)
            stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p10le"
            stream.options = {"crf": "10", "preset": "ultrafast", "x264-params":
                              "transfer=smpte2084:colorprim=bt2020:colormatrix=bt2020nc"}
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
        return buffer.getvalue()

    clean, decoded, _, _ = clips
    marked, unmarked = hdr(decoded), hdr(clean.round().astype(np.uint8))
    if long:
        long_clips(monkeypatch)
    stage = WatermarkStage(WatermarkConfig(action="strip", crop_band=0.0), preset="ultrafast")
    (sample,) = stage(ShardSample("k", "x.tar::k", {"mp4": marked}))
    assert sample.row["watermark_action"] == "stripped"
    assert sample.row["notes"] == ["HDR source (PQ): tone-mapped to SDR BT.709 (Hable)"]
    with av.open(io.BytesIO(sample.files["mp4"])) as container:
        assert container.streams.video[0].codec_context.color_trc == 1  # BT.709
    (kept,) = stage(ShardSample("c", "x.tar::c", {"mp4": unmarked}))
    assert kept.row["watermark_action"] == "clean" and kept.files["mp4"] == unmarked
    assert kept.row["notes"] == ["HDR source (PQ): kept as it was (loaders that do not "
                                 "tone-map show it washed out)"]
