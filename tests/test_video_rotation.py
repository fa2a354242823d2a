"""Phone clips are stored landscape with a display matrix that turns them, and anamorphic
video stores pixels that are not square: every reader and the re-encoding paths give the
frames as players show them."""

import io
from fractions import Fraction

import numpy as np
import pytest

from datakit.io.clips import ClipSpec, OutputFormat, can_copy, transcode_clips
from datakit.io.video import iter_frames, probe, read_frames

W, H, T = 64, 48, 6


def _turned_mp4(frames: np.ndarray, degrees: int) -> bytes:
    """An H.264 MP4 whose display matrix turns `frames` by `degrees` counter-clockwise."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"crf": "10", "preset": "ultrafast"}
        stream.set_display_rotation(degrees)
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


@pytest.fixture(scope="module")
def stored():
    """Frames with a bright block in the stored top-left corner and a gradient."""
    frames = np.zeros((T, H, W, 3), np.uint8)
    frames[:] = np.linspace(0, 120, W, dtype=np.uint8)[None, None, :, None]
    frames[:, :12, :20] = 255
    return frames


def _error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(int) - b.astype(int)).mean()) if a.shape == b.shape else 1e9


@pytest.mark.parametrize(("degrees", "turns"), [(90, 1), (180, 2), (-90, 3)])
def test_every_reader_turns_the_frames_as_players_do(stored, degrees, turns):
    mp4 = _turned_mp4(stored, degrees)
    upright = np.rot90(stored, turns, axes=(1, 2))
    info = probe(mp4)
    assert (info.width, info.height, info.turns) == (upright.shape[2], upright.shape[1], turns)
    assert _error(read_frames(mp4), upright) < 3  # decord
    assert _error(np.stack(list(iter_frames(mp4))), upright) < 3  # PyAV
    assert _error(np.stack(list(iter_frames(mp4))), stored) > 20


@pytest.mark.parametrize(("degrees", "turns"), [(90, 1), (-90, 3)])
def test_a_cut_clip_of_a_turned_video_is_upright(stored, degrees, turns):
    """A re-encoded clip carries no display matrix, so its pixels must be turned."""
    mp4 = _turned_mp4(stored, degrees)
    upright = np.rot90(stored, turns, axes=(1, 2))
    (clip,) = transcode_clips(mp4, [ClipSpec(0.0, 0.5)], 8.0,
                              OutputFormat(preset="ultrafast", crf=10), lambda spec, n: [0])
    assert (clip.width, clip.height) == (H, W)
    assert _error(read_frames(clip.mp4), upright[:clip.frames]) < 3
    assert _error(clip.kept[0], upright[0]) < 3
    assert probe(clip.mp4).turns == 0


def test_an_anamorphic_video_is_cut_with_square_pixels(stored):
    """A DVD-style 16:9 stream stores 64x48 pixels each 64/45 as wide as tall: players show
    it 91 px wide. Training loaders ignore the ratio, so a sample has square pixels: never
    copied as it is, and cut clips are stretched to the shown width (even)."""
    import av
    import cv2

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"crf": "10", "preset": "ultrafast"}
        stream.codec_context.sample_aspect_ratio = Fraction(64, 45)
        for frame in stored:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    mp4 = buffer.getvalue()
    info = probe(mp4)
    assert info.pixel_aspect == pytest.approx(64 / 45)
    assert not can_copy(info, "mov,mp4,m4a,3gp,3g2,mj2", OutputFormat())
    (clip,) = transcode_clips(mp4, [ClipSpec(0.0, 0.5)], 8.0,
                              OutputFormat(preset="ultrafast", crf=10), lambda spec, n: [0])
    assert (clip.width, clip.height) == (92, H)
    shown = np.stack([cv2.resize(f, (92, H), interpolation=cv2.INTER_LINEAR) for f in stored])
    assert _error(read_frames(clip.mp4), shown[:clip.frames]) < 4
    assert _error(clip.kept[0], shown[0]) < 4
    assert can_copy(probe(clip.mp4), "mov,mp4,m4a,3gp,3g2,mj2", OutputFormat())
