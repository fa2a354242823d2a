"""Key frames, clip cutting and the two-part model stage of the engine."""

import io
import time

import av
import cv2
import numpy as np
import pytest
from skimage import data

import captioners.keyframes as keyframes
import datakit.io.video as video
from captioners.keyframes import read_keyframes, scene_indices, uniform_indices
from datakit.io.clips import (
    ClipFailure,
    ClipSpec,
    OutputFormat,
    plan_fixed,
    plan_scenes,
    remux_video,
    transcode_clips,
)
from datakit.io.video import encode_video, probe, read_frames
from datakit.run.local_engine import ModelItem, ModelStage, run_local

GRAY_STEP = 5  # frame i of a counting clip is a flat gray of value 5 * i


def _counting_clip(count=48, fps=8.0, size=(64, 48), gop=None):
    """A clip whose frame i is flat gray 5*i: the decoded value tells which frame it is."""
    frames = [np.full((size[1], size[0], 3), GRAY_STEP * i, np.uint8) for i in range(count)]
    if gop is None:
        return encode_video(frames, fps, crf=0, preset="ultrafast")
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=int(fps))
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.options = {"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0",
                          "preset": "ultrafast", "crf": "0"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def _frame_numbers(frames):
    return [int(round(f.mean() / GRAY_STEP)) for f in frames]


def _three_shots():
    """16 frames each of three different photos, each panning 2 px per frame: cuts at 16, 32."""
    frames = []
    for photo in (data.astronaut(), data.chelsea(), data.coffee()):
        image = cv2.resize(photo, (160, 96), interpolation=cv2.INTER_AREA)
        frames += [np.roll(image, 2 * i, axis=1) for i in range(16)]
    return encode_video(frames, 8, preset="ultrafast")


def test_uniform_positions_are_the_common_recipe():
    assert keyframes.uniform_positions(3) == [0.1, 0.5, 0.9]
    assert keyframes.uniform_positions(1) == [0.5]
    # 24 frames: 0.1*23 = 2.3, 0.5*23 = 11.5 (rounds to even: 12), 0.9*23 = 20.7
    assert uniform_indices(24, 3) == [2, 12, 21]
    assert uniform_indices(2, 3) == [0, 1]  # a short clip gives fewer, distinct frames
    assert uniform_indices(0, 3) == []


def test_uniform_key_frames_decode_only_those_frames(monkeypatch):
    clip = _counting_clip(24)
    asked = []

    def counting_read(source, indices=None):
        asked.append(None if indices is None else list(indices))
        return read_frames(source, indices)

    def no_full_decode(source):
        raise AssertionError("the whole clip was decoded")

    monkeypatch.setattr(keyframes, "read_frames", counting_read)
    monkeypatch.setattr(video, "iter_frames", no_full_decode)
    chosen = read_keyframes(clip, 24, 8.0, 3, "uniform")
    assert chosen.indices == [2, 12, 21]
    assert asked == [[2, 12, 21]]  # one batch of exactly the key frames
    assert chosen.frames.shape == (3, 48, 64, 3)
    assert _frame_numbers(chosen.frames) == [2, 12, 21]  # and they are the right frames


def test_iframes_mode_reads_only_coded_key_frames():
    clip = _counting_clip(48, gop=5)
    assert keyframes.iframe_indices(clip, 8.0) == list(range(0, 48, 5))
    chosen = read_keyframes(clip, 48, 8.0, 3, "iframes")
    # targets 5, 24, 42 (0.1/0.5/0.9 of 47); nearest I-frames 5, 25, 40
    assert chosen.indices == [5, 25, 40]
    assert _frame_numbers(chosen.frames) == [5, 25, 40]


def test_scene_key_frames_sit_in_each_shot_and_fall_back_without_cuts():
    chosen = read_keyframes(_three_shots(), 48, 8.0, 3, "scene")
    assert chosen.mode == "scene" and chosen.indices == [7, 23, 39]  # middles of the shots
    steady = _counting_clip(24)  # a slow fade: no clear change anywhere
    assert read_keyframes(steady, 24, 8.0, 3, "scene").mode == "uniform"
    change = np.zeros(30, np.float32)
    change[[10, 20]] = 50.0
    assert scene_indices(change, 3) == [4, 14, 24]
    assert scene_indices(change, 4) is None  # only two clear changes


def test_split_plans_scenes_at_the_cuts_and_fixed_pieces():
    # cuts at frames 16 and 32 of an 8 fps video: 2 s and 4 s; it ends after frame 47 (6 s)
    assert plan_scenes(_three_shots(), 8.0, clip_seconds=10, min_clip_seconds=1) == [
        ClipSpec(0, 2), ClipSpec(2, 4), ClipSpec(4, 6)]
    # a scene longer than --clip-seconds is cut into pieces; short pieces dropped
    assert plan_fixed(6.0, 8.0, 2.5, 1.0) == [ClipSpec(0, 2.5), ClipSpec(2.5, 5), ClipSpec(5, 6)]
    assert plan_fixed(6.0, 8.0, 2.5, 1.5) == [ClipSpec(0, 2.5), ClipSpec(2.5, 5)]


def test_one_pass_transcode_cuts_resamples_crops_and_keeps_frames():
    clip = _counting_clip(48, size=(64, 48))  # 8 fps: frame i at i/8 s
    output = OutputFormat(size=(48, 48), fps=4.0, crf=0, preset="ultrafast")
    clips = list(transcode_clips(clip, [ClipSpec(0.5, 2.5), ClipSpec(3.75, 6)], 8.0, output,
                                 keep=lambda spec, count: [0, count - 1]))
    first, second = clips
    assert (first.frames, second.frames) == (8, 9)  # 2 s and 2.25 s at 4 fps
    assert (first.width, first.height) == (48, 48)
    # output frame j shows source frame start + 2j
    assert _frame_numbers(read_frames(first.mp4)) == [4 + 2 * j for j in range(8)]
    assert _frame_numbers([first.kept[0], first.kept[7]]) == [4, 18]
    assert _frame_numbers(read_frames(second.mp4))[0] == 30
    # Clips after the last frame fail, each naming its own range; the one before is cut.
    late = list(transcode_clips(clip, [ClipSpec(5, 7.5), ClipSpec(8.75, 10)], 8.0, output))
    assert late[0].frames == 4  # 5.0 .. 5.75 s: the video ends at 6 s
    assert late[1] == ClipFailure(ClipSpec(8.75, 10),
                                  "clip 8.75-10.00 s: the video ends at 6.00 s")


def test_remux_copies_the_video_stream_and_drops_audio():
    clip = _counting_clip(12)
    buffer = io.BytesIO()  # the same H.264 stream plus an audio track
    with av.open(io.BytesIO(clip)) as source, av.open(buffer, "w", format="mp4") as target:
        copied = target.add_stream_from_template(source.streams.video[0])
        audio = target.add_stream("aac", rate=8000)
        audio.layout = "mono"
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = copied
                target.mux(packet)
        samples = av.AudioFrame.from_ndarray(np.zeros((1, 8000), np.float32), format="fltp",
                                             layout="mono")
        samples.sample_rate = 8000
        for packet in [*audio.encode(samples), *audio.encode(None)]:
            target.mux(packet)
    remuxed = remux_video(buffer.getvalue())
    with av.open(io.BytesIO(remuxed)) as container:
        assert len(container.streams.audio) == 0
    assert probe(remuxed).frames == 12
    assert np.array_equal(read_frames(remuxed), read_frames(clip))  # not one pixel changed


# --- the two-part model stage ----------------------------------------------------------------


class _Record:
    def __init__(self, key):
        self.key, self.source = key, f"/src/{key}"


def _prepare(record):
    from manifests.schema import make_row

    if record.key.startswith("bad"):
        return [make_row(record.key, "failed", error="bad input")]
    count = 2 if record.key.startswith("two") else 1
    return [ModelItem({"key": f"{record.key}_{i}", "value": len(record.key) + i})
            for i in range(count)]


class _CountingModel:
    def __init__(self):
        self.batches = []

    def __call__(self, batch):
        self.batches.append(list(batch["key"]))
        return {"key": batch["key"], "double": [2 * v for v in batch["value"]]}


def _finish(row):
    from manifests.schema import make_row

    return [make_row(row["key"], "skipped", error=f"double={row['double']}")]


@pytest.mark.parametrize("workers", [1, 2])
def test_model_stage_batches_items_and_keeps_input_order(workers):
    model = _CountingModel()
    stage = ModelStage(_prepare, lambda: model, _finish, batch_size=3)
    keys = ["a", "two", "bad", "bb", "ccc", "two2", "d"]
    seen = []
    report = run_local([_Record(k) for k in keys], stage,
                       lambda record, results: seen.append((record.key, results)),
                       workers=workers, progress=False)
    assert [k for k, _ in seen] == keys
    rows = {r["key"]: r["error"] for _, results in seen for r in results}
    # "two" gives two items, values 3 and 4 -> doubled by the model
    assert rows["two_0"] == "double=6" and rows["two_1"] == "double=8"
    assert rows["bad"] == "bad input" and rows["ccc_0"] == "double=6"
    assert all(len(batch) >= 3 for batch in model.batches[:-1])  # full batches, last partial
    assert sum(len(b) for b in model.batches) == 8
    assert report.model.calls == len(model.batches) and report.model.items == 8


def test_model_is_not_loaded_when_no_item_needs_it():
    def refuse():
        raise AssertionError("model loaded for nothing")

    stage = ModelStage(_prepare, refuse, _finish, batch_size=2)
    report = run_local([_Record("bad1"), _Record("bad2")], stage, lambda r, x: None,
                       progress=False)
    assert report.status == {"failed": 2} and report.model.calls == 0


def _hangs_on_slow(record):
    from manifests.schema import make_row

    if record.key == "slow":
        time.sleep(600)  # a decoder that never returns
    return [make_row(record.key, "skipped", error="fine")]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_hanging_input_times_out_and_the_run_goes_on(workers):
    seen = []
    started = time.time()
    keys = ["a", "slow", "b", "c", "d"]
    report = run_local([_Record(k) for k in keys], _hangs_on_slow,
                       lambda record, results: seen.append((record.key, results)),
                       workers=workers, progress=False, sample_timeout=2.0)
    assert time.time() - started < 30
    assert [k for k, _ in seen] == keys  # every input once, in order
    rows = {k: r[0] for k, r in seen}
    assert rows["slow"]["status"] == "failed"
    assert rows["slow"]["error"].startswith("timeout: no result after 2 s")
    assert all(rows[k]["error"] == "fine" for k in ("a", "b", "c", "d"))  # redone, not failed
    assert report.status == {"skipped": 4, "failed": 1}
