"""HDR to SDR: datakit's tone mapping against FFmpeg's own filters (zscale and tonemap, in
imageio-ffmpeg's static build), on a real photo carried into PQ and HLG by FFmpeg."""

import io
import subprocess

import numpy as np
import pytest

from datakit.io.clips import ClipSpec, OutputFormat, can_copy, transcode_clips
from datakit.io.colour import hable, signal_peak, tone_map
from datakit.io.video import decord_reads_exactly, probe, read_frames, source_notes

imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
TRANSFER_NAMES = {"pq": "smpte2084", "hlg": "arib-std-b67"}


def ffmpeg(*arguments: str, data: bytes | None = None) -> bytes:
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", *arguments]
    return subprocess.run(command, input=data, capture_output=True, check=True).stdout


def photo_with_ramp() -> np.ndarray:
    """scikit-image's astronaut over a grey ramp, 256x256."""
    import cv2
    import skimage.data

    picture = cv2.resize(skimage.data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
    picture[:32] = np.linspace(0, 255, 256).astype(np.uint8)[None, :, None]
    return picture


def hdr_clip(transfer: str, tmp_path) -> bytes:
    """The photo as 10-bit BT.2020 video in `transfer`, SDR white at 100 nits (FFmpeg's
    zscale), as an HDR camera or grading would store it."""
    rgb = photo_with_ramp()
    path = tmp_path / f"{transfer}.mp4"
    name = TRANSFER_NAMES[transfer]
    ffmpeg("-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "256x256", "-r", "8", "-i", "-",
           "-vf", f"format=gbrpf32le,zscale=tin=bt709:pin=bt709:rin=pc:t={name}:p=bt2020:"
           "m=2020_ncl:r=tv:npl=100,format=yuv420p10le",
           "-color_primaries", "bt2020", "-color_trc", name, "-colorspace", "bt2020nc",
           "-c:v", "libx264", "-crf", "4", "-preset", "ultrafast", "-y", str(path),
           data=np.stack([rgb] * 3).tobytes())
    return path.read_bytes()


def ffmpeg_tone_mapped(clip: bytes, peak: float) -> np.ndarray:
    """FFmpeg's usual HDR-to-SDR recipe, on the first frame."""
    raw = ffmpeg("-i", "-", "-frames:v", "1", "-vf",
                 "zscale=t=linear:npl=100,format=gbrpf32le,zscale=p=bt709,"
                 f"tonemap=tonemap=hable:desat=0:peak={peak},zscale=t=bt709:m=bt709:r=pc,"
                 "format=rgb24", "-f", "rawvideo", "-", data=clip)
    return np.frombuffer(raw, np.uint8).reshape(256, 256, 3)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    error = np.mean((a.astype(np.float64) - b) ** 2)
    return float(10 * np.log10(255 ** 2 / max(error, 1e-12)))


def test_a_pq_clip_reads_as_ffmpeg_tone_maps_it(tmp_path):
    clip = hdr_clip("pq", tmp_path)
    info = probe(clip)
    assert info.transfer == "pq"
    assert not decord_reads_exactly(clip)  # decord cannot tone-map
    ours = read_frames(clip, [0])[0]
    reference = ffmpeg_tone_mapped(clip, peak=10.0)  # 1000 nits: no metadata in this clip
    assert psnr(ours, reference) > 40
    import av

    with av.open(io.BytesIO(clip)) as container:
        untouched = next(container.decode(video=0)).to_ndarray(format="rgb24")
    assert psnr(untouched, reference) < 30  # what was read before: the PQ code values
    assert source_notes(info) == ["HDR source (PQ): tone-mapped to SDR BT.709 (Hable)"]


def test_an_hlg_clip_keeps_its_greys_where_ffmpeg_does(tmp_path):
    """On greys BT.2100's OOTF (on the luminance) and zimg's (on each channel) agree, so the
    ramp must match FFmpeg's; on colours they part (a hue kept against one shifted)."""
    clip = hdr_clip("hlg", tmp_path)
    ours = read_frames(clip, [0])[0]
    reference = ffmpeg_tone_mapped(clip, peak=10.0)
    ramp = (slice(4, 28), slice(8, 248))
    assert np.abs(ours[ramp].astype(int) - reference[ramp]).max() <= 3
    assert psnr(ours, reference) > 33


def test_one_peak_for_the_whole_stream_from_its_metadata():
    """x264 writes the mastering display and content light level once, on the first frame;
    every frame is tone-mapped with that peak (a later frame without it would otherwise get
    the 1000-nit default and jump in brightness)."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p10le"
        stream.options = {"x264-params": "mastering-display=G(13250,34500)B(7500,3000)"
                          "R(34000,16000)WP(15635,16450)L(40000000,50):cll=4000,400:"
                          "colorprim=bt2020:transfer=smpte2084:colormatrix=bt2020nc"}
        for value in (44337,) * 3:  # PQ's code for about 500 nits
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), value, np.uint16),
                                               format="rgb48le")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    clip = buffer.getvalue()
    with av.open(io.BytesIO(clip)) as container:
        decoded = list(container.decode(video=0))
    assert signal_peak(decoded[0]) == 4000.0  # MaxCLL
    assert signal_peak(decoded[1]) == 1000.0  # nothing attached to a later frame
    frames = read_frames(clip)
    # 500 nits is 5.0 of SDR white, against a 4,000-nit peak (40.0) in every frame
    expected = (hable(5.0) / hable(40.0)) ** (1 / 2.4) * 255
    assert np.abs(frames[:, 32, 32].astype(float) - expected).max() <= 3
    # a cut that starts after the first frame still takes the stream's peak
    (cut,) = transcode_clips(clip, [ClipSpec(0.125, 0.375)], 8.0, OutputFormat(),
                             keep=lambda spec, count: list(range(count)))
    assert len(cut.kept) == 2
    assert all(abs(float(f[32, 32].mean()) - expected) <= 3 for f in cut.kept.values())


def test_tone_map_follows_hable_and_the_screen_gamma():
    """A grey of known PQ code: 100 nits is 1.0 of SDR light, mapped by Hable's curve
    against the peak, then encoded with BT.1886's 2.4 gamma."""
    code = 0.5080784  # ST 2084 of 100 nits
    grey = np.full((2, 2, 3), round(code * 65535), np.uint16)
    expected = round((hable(1.0) / hable(10.0)) ** (1 / 2.4) * 255)
    assert abs(int(tone_map(grey, "pq", 1000.0)[0, 0, 0]) - expected) <= 1
    brighter = round((hable(1.0) / hable(4.0)) ** (1 / 2.4) * 255)
    assert abs(int(tone_map(grey, "pq", 400.0)[0, 0, 0]) - brighter) <= 1
    with pytest.raises(ValueError, match="transfer"):
        tone_map(grey, "sdr", 100.0)


def test_hlg_display_light_keeps_the_scene_s_hue():
    """BT.2100's OOTF scales a pixel's three channels by one factor of its luminance, so
    their ratios in display light are the scene's (a gamma on each channel would make
    2 : 1 : 0.5 into 2.3 : 1 : 0.44). Hable's curve on the largest channel keeps them too."""
    a, b, c = 0.17883277, 0.28466892, 0.55991073

    def oetf(light: float) -> float:  # ARIB STD-B67
        return np.sqrt(3 * light) if light <= 1 / 12 else a * np.log(12 * light - b) + c

    scene = (0.6, 0.3, 0.15)
    pixel = np.array([[[round(oetf(v) * 65535) for v in scene]]], np.uint16)
    shown = (tone_map(pixel, "hlg", 1000.0, bt2020=False)[0, 0] / 255) ** 2.4
    assert shown[0] / shown[1] == pytest.approx(2.0, rel=0.06)
    assert shown[2] / shown[1] == pytest.approx(0.5, rel=0.06)


def test_an_hdr_source_is_re_encoded_not_copied(tmp_path):
    """A copy would stay HDR, which loaders decode washed out."""
    import dataclasses

    info = probe(hdr_clip("pq", tmp_path))
    mp4 = "mov,mp4,m4a,3gp,3g2,mj2"
    assert not can_copy(info, mp4, OutputFormat())
    assert can_copy(dataclasses.replace(info, transfer=""), mp4, OutputFormat())
