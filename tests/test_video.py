import io

import numpy as np
import pytest

from datakit.io import video
from datakit.io.video import (
    VideoError,
    VideoWriter,
    encode_video,
    even_size,
    iter_frames,
    probe,
    read_frames,
)


def _ramp(count=12, height=48, width=64):
    """Frames whose brightness encodes their index, so order and count can be checked."""
    return [np.full((height, width, 3), 10 + 18 * i, np.uint8) for i in range(count)]


def test_encode_is_h264_yuv420p_with_exact_frames_and_fps():
    data = encode_video(_ramp(), fps=8, crf=10, preset="ultrafast")
    info = probe(data)
    assert (info.frames, info.fps, info.width, info.height, info.codec) == (12, 8.0, 64, 48,
                                                                             "h264")
    import av

    with av.open(io.BytesIO(data)) as container:
        assert container.streams.video[0].codec_context.pix_fmt == "yuv420p"
    frames = read_frames(data)
    assert frames.shape == (12, 48, 64, 3)
    assert np.abs(frames[:, 20, 20, 0].astype(int) - [10 + 18 * i for i in range(12)]).max() <= 3


def test_written_streams_name_their_colour_matrix_so_players_agree():
    """Every stream is tagged BT.601 limited range (the matrix it was converted with).
    Decoders that follow the tag give back the colours; one that takes BT.709's matrix, as
    a browser does for an untagged HD stream, turns rgb(0, 200, 0) into about (0, 170, 0)."""
    import av

    frame = np.zeros((64, 128, 3), np.uint8)
    frame[:, :64] = (0, 200, 0)
    frame[:, 64:] = (220, 40, 40)
    data = encode_video([frame] * 3, fps=8, crf=0, preset="ultrafast")
    with av.open(io.BytesIO(data)) as container:
        context = container.streams.video[0].codec_context
        tags = (context.colorspace, context.color_range, context.color_primaries,
                context.color_trc)
        decoded = next(container.decode(video=0))
        as_tagged = decoded.to_ndarray(format="rgb24")
        as_bt709 = decoded.reformat(format="rgb24", src_colorspace="itu709").to_ndarray()
    assert tags == (6, 1, 1, 1)  # smpte170m, tv (limited), bt709 primaries and transfer
    assert np.abs(as_tagged[32, 32].astype(int) - (0, 200, 0)).max() <= 2
    assert np.abs(as_tagged[32, 96].astype(int) - (220, 40, 40)).max() <= 2
    assert as_bt709[32, 32, 1] < 180 and as_bt709[32, 96, 0] > 230  # what untagged risks


def test_yuv420p_frames_reach_x264_unconverted():
    """yuv420p planes go to the encoder as given: lossless (crf 0) decodes to the same planes,
    sample for sample (an RGB round trip through swscale could not)."""
    import av

    rng = np.random.default_rng(0)
    frames = [rng.integers(16, 236, (72, 64), dtype=np.uint8) for _ in range(3)]
    data = encode_video(frames, fps=8, crf=0, preset="ultrafast", pixel_format="yuv420p")
    assert probe(data).width == 64 and probe(data).height == 48
    with av.open(io.BytesIO(data)) as container:
        decoded = [f.to_ndarray(format="yuv420p") for f in container.decode(video=0)]
    assert all(np.array_equal(a, b) for a, b in zip(frames, decoded, strict=True))
    with pytest.raises(ValueError, match=r"shape \(72, 64\) \(yuv420p\)"):
        VideoWriter(io.BytesIO(), 64, 48, fps=8, pixel_format="yuv420p").write(frames[0][:48])
    with pytest.raises(ValueError, match="pixel_format"):
        VideoWriter(io.BytesIO(), 64, 48, fps=8, pixel_format="nv12")


def test_ntsc_frame_rate_is_kept_as_a_fraction(tmp_path):
    path = tmp_path / "ntsc.mp4"
    with VideoWriter(path, 64, 48, fps=30000 / 1001, preset="ultrafast") as writer:
        writer.write_many(_ramp(5))
    assert writer.frames_written == 5
    assert probe(path).fps == pytest.approx(29.97, abs=1e-3)


def test_read_selected_frames_and_stream_all(tmp_path):
    path = tmp_path / "v.mp4"
    path.write_bytes(encode_video(_ramp(), fps=8, crf=0, preset="ultrafast"))
    picked = read_frames(path, [5, 0, 5])
    assert picked.shape == (3, 48, 64, 3)
    assert picked[0, 0, 0, 0] == picked[2, 0, 0, 0] > picked[1, 0, 0, 0]
    assert sum(1 for _ in iter_frames(path)) == 12
    with pytest.raises(VideoError, match="frame 12 out of range"):
        read_frames(path, [12])


def test_pyav_takes_over_when_decord_cannot_read(monkeypatch):
    data = encode_video(_ramp(), fps=8, preset="ultrafast")

    def broken(*args, **kwargs):
        raise RuntimeError("decord cannot")

    monkeypatch.setattr(video, "_read_frames_decord", broken)
    assert read_frames(data, [1, 2]).shape == (2, 48, 64, 3)


def _mpeg_stream(path, container):
    """40 frames of brightness 10 + 6 * index as MPEG-2 video in an MPEG program or transport
    stream (.mpg, .ts), containers without an index, as PyAV writes them."""
    import av

    with av.open(str(path), "w", format=container) as output:
        stream = output.add_stream("mpeg2video", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"qscale": "2"}
        for index in range(40):
            frame = np.full((48, 64, 3), 10 + 6 * index, np.uint8)
            output.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        output.mux(stream.encode())


@pytest.mark.parametrize("container, name", [("mpeg", "v.mpg"), ("mpegts", "v.ts")])
def test_streams_without_an_index_give_the_frames_asked_for(tmp_path, container, name):
    """decord returned other frames than those asked for from these containers (Kivy's real
    cityCC0.mpg: all of them), silently; they are decoded in order instead."""
    path = tmp_path / name
    _mpeg_stream(path, container)
    wanted = [30, 3, 17, 3]
    for source in (path, path.read_bytes()):
        picked = read_frames(source, wanted)
        brightness = picked[:, 24, 32, 0].astype(int)
        assert np.abs(brightness - [10 + 6 * i for i in wanted]).max() <= 4
    whole = read_frames(path)
    assert whole.shape == (40, 48, 64, 3)
    assert np.abs(whole[:, 24, 32, 0].astype(int) - [10 + 6 * i for i in range(40)]).max() <= 4


def test_frames_decoded_in_order_stop_after_the_last_one_asked_for(tmp_path, monkeypatch):
    path = tmp_path / "v.mpg"
    _mpeg_stream(path, "mpeg")
    yielded = []
    decode = video.iter_frames

    def counted(source):
        for frame in decode(source):
            yielded.append(1)
            yield frame

    monkeypatch.setattr(video, "iter_frames", counted)
    picked = read_frames(path, [6, 2])
    assert np.abs(picked[:, 0, 0, 0].astype(int) - [10 + 6 * 6, 10 + 6 * 2]).max() <= 4
    assert len(yielded) == 7
    with pytest.raises(VideoError, match="frame 40 out of range"):
        read_frames(path, [1, 40])


def trimmed_mp4() -> bytes:
    """An H.264 MP4 of 40 frames (brightness 10 + 6 * index, one GOP) whose edit list starts
    it at frame 10, as `ffmpeg -ss 0.4 -c copy` cuts: it stores 40 frames and shows 30."""
    import av

    coded = io.BytesIO()
    with av.open(coded, "w", format="mp4") as output:
        stream = output.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"g": "40", "bf": "0", "crf": "0"}
        for index in range(40):
            frame = np.full((48, 64, 3), 10 + 6 * index, np.uint8)
            output.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        output.mux(stream.encode())
    coded.seek(0)
    cut = io.BytesIO()
    with av.open(coded) as source, av.open(cut, "w", format="mp4") as output:
        copied = output.add_stream_from_template(source.streams.video[0])
        shift = round(0.4 / source.streams.video[0].time_base)
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.pts, packet.dts = packet.pts - shift, packet.dts - shift
                packet.stream = copied
                output.mux(packet)
    return cut.getvalue()


def test_a_clip_whose_edit_list_trims_its_start_shows_only_what_players_show():
    """decord counted the 10 hidden frames and gave the last shown frame again in their
    place; the count and every frame are the shown ones."""
    data = trimmed_mp4()
    info = probe(data)
    assert (info.frames, info.hidden_frames) == (30, 10)
    whole = read_frames(data)
    assert len(whole) == 30
    assert np.abs(whole[:, 0, 0, 0].astype(int) - [10 + 6 * i for i in range(10, 40)]).max() <= 2
    picked = read_frames(data, [29, 0])
    assert np.abs(picked[:, 0, 0, 0].astype(int) - [10 + 6 * 39, 10 + 6 * 10]).max() <= 2
    assert probe(encode_video(_ramp(), fps=8, preset="ultrafast")).hidden_frames == 0


def interlaced_hdr_mp4() -> bytes:
    """H.264 coded as interlaced fields with HDR10's PQ transfer (x264's own flags), as a
    camcorder's 1080i or a phone's HDR clip says so in its bitstream."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as output:
        stream = output.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"x264-params": "interlaced=1:tff=1:transfer=smpte2084:"
                                         "colorprim=bt2020:colormatrix=bt2020nc"}
        for frame in _ramp(6):
            output.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        output.mux(stream.encode())
    return buffer.getvalue()


def test_an_interlaced_or_hdr_source_is_named_in_notes():
    info = probe(interlaced_hdr_mp4())
    assert (info.interlaced, info.transfer, info.frames) == (True, "pq", 6)
    assert video.source_notes(info) == [
        "interlaced source: deinterlaced (bwdif)",
        "HDR source (PQ): tone-mapped to SDR BT.709 (Hable)"]
    plain = probe(encode_video(_ramp(), fps=8, preset="ultrafast"))
    assert (plain.interlaced, plain.transfer) == (False, "")
    assert video.source_notes(plain) == []


def combed_mp4() -> bytes:
    """12 interlaced frames of a bar moving right, its bottom field 3 px ahead of its top
    field (the later field: a camcorder's 1080i), coded as fields by x264."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as output:
        stream = output.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p"
        stream.options = {"x264-params": "interlaced=1:tff=1", "crf": "4"}
        for index in range(12):
            frame = np.zeros((96, 128, 3), np.uint8)
            frame[0::2, 10 + 6 * index:30 + 6 * index] = 220
            frame[1::2, 13 + 6 * index:33 + 6 * index] = 220
            output.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        output.mux(stream.encode())
    return buffer.getvalue()


def combing(frames: np.ndarray) -> float:
    """Mean distance of each row from the mean of its neighbours: fields woven together."""
    grey = frames[..., 0].astype(float)
    return float(np.abs(grey[:, 1:-1] - (grey[:, :-2] + grey[:, 2:]) / 2).mean())


def test_an_interlaced_clip_is_read_deinterlaced_frame_for_frame():
    import decord

    data = combed_mp4()
    reader = decord.VideoReader(io.BytesIO(data))
    woven = reader.get_batch(list(range(len(reader)))).asnumpy()
    assert combing(woven) > 5  # the control: as decoded, the fields comb the bar
    for frames in (read_frames(data), np.stack(list(iter_frames(data))),
                   read_frames(data, [11, 0, 5])):
        assert combing(frames) < 0.5
    assert len(read_frames(data)) == probe(data).frames == 12


@pytest.mark.parametrize("bad", [b"", b"definitely not a video" * 50])
def test_garbage_is_a_video_error(bad):
    with pytest.raises(VideoError):
        read_frames(bad)
    with pytest.raises(VideoError):
        probe(bad)


def test_writer_rejects_odd_sizes_bad_settings_and_wrong_frames():
    with pytest.raises(ValueError, match="even"):
        VideoWriter(io.BytesIO(), 63, 48, fps=8)
    with pytest.raises(ValueError, match="crf"):
        VideoWriter(io.BytesIO(), 64, 48, fps=8, crf=60)
    with pytest.raises(ValueError, match="preset"):
        VideoWriter(io.BytesIO(), 64, 48, fps=8, preset="warp")
    writer = VideoWriter(io.BytesIO(), 64, 48, fps=8)
    with pytest.raises(ValueError, match="expected a uint8 frame"):
        writer.write(np.zeros((48, 64), np.uint8))
    with pytest.raises(ValueError, match="no frames"):
        encode_video([], fps=8)
    assert even_size(63, 47) == (62, 46)


def _pan(width, height):
    import cv2
    from skimage import data

    photo = data.astronaut()
    return np.stack([cv2.resize(photo[2 * i:2 * i + 400, 3 * i:3 * i + 400], (width, height),
                                interpolation=cv2.INTER_AREA) for i in range(12)])


# (each case gave several MP4s in six calls without the AVX2 limit, on an AVX-512 CPU)
@pytest.mark.parametrize("size", [(96, 64), (192, 128), (352, 240)])
def test_the_same_frames_encode_to_the_same_bytes_whatever_was_encoded_before(size):
    """x264's AVX-512 code made a clip's bytes depend on the process's earlier encodes."""
    frames = _pan(*size)
    rng = np.random.default_rng(0)
    encoded = set()
    for _ in range(6):
        encoded.add(encode_video(frames, 8, crf=18, threads=1))
        h, w = rng.integers(8, 100, 2) * 2
        encode_video(rng.integers(0, 256, (int(rng.integers(1, 12)), h, w, 3), np.uint8), 8,
                     crf=int(rng.integers(10, 30)), threads=1)
    assert len(encoded) == 1
