"""`datakit caption` end to end: CLI, shards, manifest, bad inputs, split, resume, batches."""

import io
import json
import os
import signal
import subprocess
import sys
import time

import av
import numpy as np
import pandas as pd
import pytest
import webdataset as wds
from test_caption_keyframes import _three_shots
from typer.testing import CliRunner

import captioners.base as base
from captioners.base import CaptionerConfig, CaptionModel
from captioners.fusion import fuse_template, normalize_label
from datakit.cli import app
from datakit.cli.samples import SAMPLE_CLASSES, write_sample_videos
from datakit.io.video import encode_video, probe, read_frames
from datakit.run.shards import verify_shards

QUIET = ["--quiet", "--workers", "1"]
LABEL = ["--captioner", "label"]  # weights-free; with no --captioner, blip2 would load


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _samples(out):
    found = {}
    for tar in sorted((out / "shards").glob("*.tar")):
        for sample in wds.WebDataset(str(tar), shardshuffle=False, empty_check=False):
            found[sample["__key__"]] = sample
    return found


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """The demo's class tree (6 clips of sample photos, 5 labels) plus bad files."""
    root = tmp_path_factory.mktemp("videos") / "kinetics"
    write_sample_videos(root)  # also broken/truncated.mp4 and broken/notes.mp4
    bad = root / "bad"
    bad.mkdir()
    (bad / "empty.mp4").write_bytes(b"")
    one = encode_video([np.zeros((64, 96, 3), np.uint8)], 8, preset="ultrafast")
    (root / "still_life" / "one_frame.mov").parent.mkdir()
    (root / "still_life" / "one_frame.mov").write_bytes(one)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=8000)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 8000), np.float32), format="fltp",
                                           layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    (bad / "audio_only.mp4").write_bytes(buffer.getvalue())
    return root


def test_label_captions_every_input_accounted_for(tree, tmp_path):
    out = tmp_path / "out"
    result = _invoke("caption", tree, "--out", out, *LABEL, *QUIET)
    assert result.exit_code == 0, result.output
    manifest = pd.read_parquet(out / "manifest.parquet").set_index("key")
    clips = sum(len(names) for names in SAMPLE_CLASSES.values())
    assert len(manifest) == clips + 5  # every file has exactly one row
    status = manifest["status"].to_dict()
    assert status["bad__empty"] == "failed" and manifest.loc["bad__empty", "error"] == (
        "empty file")
    assert manifest.loc["bad__audio_only", "error"].startswith("no video stream")
    assert manifest.loc["broken__notes", "error"].startswith("not a video")
    assert status["broken__truncated"] == "failed"
    assert status["still_life__one_frame"] == "skipped"
    assert manifest.loc["still_life__one_frame", "error"].startswith("too short: 1 frame")
    ok = manifest[manifest["status"] == "ok"]
    assert len(ok) == clips
    samples = _samples(out)
    for key, row in ok.iterrows():
        words = row["label"].replace("_", " ")
        assert words in row["caption"].lower()  # the label is in the caption
        sample = samples[key]
        assert sample["txt"].decode() == row["caption"]
        info = json.loads(sample["json"])
        assert info["label"] == row["label"] and info["label_text"] == words
        assert info["video"]["encoded"] == "copy"  # H.264 MP4 within limits: stream-copied
        source = tree / info["source"]
        assert np.array_equal(read_frames(sample["mp4"]), read_frames(source))
    assert verify_shards(out).ok
    stats = json.loads((out / "stats.json").read_text())
    assert stats["status"]["ok"] == clips and stats["config"]["pipeline"] == "caption"


def test_a_cut_whose_edit_list_hides_frames_is_re_encoded_to_the_shown_ones(tmp_path):
    """A stream copy keeps the cut's hidden pre-roll, which decord-based training loaders
    read as frames (the last shown frame, repeated)."""
    import decord
    from test_video import trimmed_mp4

    (tmp_path / "in" / "cut").mkdir(parents=True)
    (tmp_path / "in" / "cut" / "a.mp4").write_bytes(trimmed_mp4())
    out = tmp_path / "out"
    result = _invoke("caption", tmp_path / "in", "--out", out, "--crf", "0", *LABEL, *QUIET)
    assert result.exit_code == 0, result.output
    sample = _samples(out)["cut__a"]
    info = json.loads(sample["json"])
    assert info["video"]["encoded"] == "h264" and info["video"]["source"]["hidden_frames"] == 10
    reader = decord.VideoReader(io.BytesIO(sample["mp4"]))  # as training loaders read it
    frames = reader.get_batch(list(range(len(reader)))).asnumpy()
    assert len(frames) == info["frames"] == 30
    assert np.abs(frames[[0, -1], 0, 0, 0].astype(int) - [70, 244]).max() <= 3


def test_an_interlaced_hdr_source_says_so_in_its_row_and_json(tmp_path):
    from test_video import interlaced_hdr_mp4

    (tmp_path / "in" / "field").mkdir(parents=True)
    (tmp_path / "in" / "field" / "a.mp4").write_bytes(interlaced_hdr_mp4())
    out = tmp_path / "out"
    result = _invoke("caption", tmp_path / "in", "--out", out, "--min-clip-seconds", "0.1",
                     *LABEL, *QUIET)
    assert result.exit_code == 0, result.output
    row = pd.read_parquet(out / "manifest.parquet").set_index("key").loc["field__a"]
    assert row["status"] == "ok"
    assert [note.split(":")[0] for note in row["notes"]] == [
        "interlaced source", "HDR source (PQ)"]
    sample = _samples(out)["field__a"]
    info = json.loads(sample["json"])
    assert (info["video"]["source"]["interlaced"], info["video"]["source"]["transfer"]) == (
        True, "pq")
    assert info["video"]["encoded"] == "h264"  # re-encoded deinterlaced, not copied woven
    assert not probe(sample["mp4"]).interlaced


def test_rerun_resumes_and_other_settings_are_refused(tree, tmp_path):
    out = tmp_path / "out"
    assert _invoke("caption", tree, "--out", out, *LABEL, *QUIET).exit_code == 0
    again = _invoke("caption", tree, "--out", out, *LABEL, *QUIET)
    assert again.exit_code == 0
    assert json.loads((out / "stats.json").read_text())["run"]["processed"] == 0
    changed = _invoke("caption", tree, "--out", out, "--keyframes", "5", *LABEL, *QUIET)
    assert changed.exit_code == 2 and "other settings (keyframes" in changed.output


def test_scene_split_gives_one_sample_per_shot(tmp_path):
    root = tmp_path / "videolt" / "cooking"
    root.mkdir(parents=True)
    (root / "long.mp4").write_bytes(_three_shots())  # cuts at frames 16 and 32, 8 fps
    out = tmp_path / "out"
    result = _invoke("caption", root.parent, "--out", out, "--split", "scenes",
                     "--min-clip-seconds", "1", "--preset", "ultrafast", *LABEL, *QUIET)
    assert result.exit_code == 0, result.output
    manifest = pd.read_parquet(out / "manifest.parquet").set_index("key")
    parent = manifest.loc["cooking__long"]
    assert parent["status"] == "split" and json.loads(parent["meta"])["clips"] == 3
    samples = _samples(out)
    assert sorted(samples) == [f"cooking__long__{i:04d}" for i in range(3)]
    for i, key in enumerate(sorted(samples)):
        info = json.loads(samples[key]["json"])
        assert (info["clip_start"], info["clip_end"]) == (2.0 * i, 2.0 * (i + 1))
        assert info["frames"] == 16 and probe(samples[key]["mp4"]).frames == 16
        assert manifest.loc[key, "input_key"] == "cooking__long"
    assert verify_shards(out).ok


def test_kinetics_annotations_cut_whole_videos_and_keep_missing_rows(tmp_path):
    root = tmp_path / "raw"
    root.mkdir()
    frames = [np.full((48, 64, 3), 5 * i, np.uint8) for i in range(40)]  # frame i: gray 5i
    (root / "BBB.mp4").write_bytes(encode_video(frames, 8, crf=0, preset="ultrafast"))
    csv = tmp_path / "train.csv"
    csv.write_text("label,youtube_id,time_start,time_end,split\n"
                   "juggling balls,BBB,1,3,train\n"
                   "juggling balls,CCC,1,3,train\n"
                   "catching,BBB,0.5,1.25,train\n")
    out = tmp_path / "out"
    result = _invoke("caption", root, "--annotations", csv, "--out", out, "--crf", "0",
                     "--preset", "ultrafast", *LABEL, *QUIET)
    assert result.exit_code == 0, result.output
    manifest = pd.read_parquet(out / "manifest.parquet").set_index("key")
    assert manifest.loc["juggling_balls__CCC_000001_000003", "error"].startswith("missing file")
    sample = _samples(out)["juggling_balls__BBB_000001_000003"]
    cut = read_frames(sample["mp4"])
    assert len(cut) == 16  # seconds 1-3 at 8 fps: source frames 8..23
    assert [int(round(f.mean() / 5)) for f in cut[[0, -1]]] == [8, 23]
    assert sample["txt"].decode().lower().count("juggling balls") == 1
    fraction = read_frames(_samples(out)["catching__BBB_000000_000001"]["mp4"])
    assert len(fraction) == 6  # seconds 0.5-1.25 at 8 fps: source frames 4..9
    assert [int(round(f.mean() / 5)) for f in fraction[[0, -1]]] == [4, 9]


def test_bad_options_are_one_line_errors(tree, tmp_path):
    for args, expected in (
        (["--captioner", "instructblip"], "needs --model"),
        (["--keyframe-mode", "random"], "--keyframe-mode: expected one of"),
        (["--split", "halves"], "--split: expected one of"),
        (["--captioner", "label", "--fuse", "llm"],
         "--fuse llm needs a captioner with a language model"),
        (["--prompt", "describe {lable}"], "unknown field {lable}"),
        (["--captioner", "blip2", "--model", str(tmp_path / "nowhere/")], "no such folder"),
    ):
        result = _invoke("caption", tree, "--out", tmp_path / "o", *args, *QUIET)
        assert result.exit_code == 2, (args, result.output)
        assert expected in result.output and "Traceback" not in result.output


def test_a_killed_run_resumes_without_duplicates(tmp_path):
    root = tmp_path / "many"
    clip = encode_video([np.full((64, 96, 3), 10 * i, np.uint8) for i in range(16)], 8,
                        preset="ultrafast")
    for label in ("a_b", "c_d", "e_f"):
        for i in range(25):
            (root / label).mkdir(parents=True, exist_ok=True)
            (root / label / f"clip{i:02d}.mp4").write_bytes(clip)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "datakit.cli", "caption", str(root), "--out", str(out),
               "--shard-size", "4", "--workers", "2", "--quiet", "--split", "fixed", *LABEL,
               "--clip-seconds", "1", "--min-clip-seconds", "0.5", "--preset", "ultrafast"]
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and len(list((out / "shards").glob("*.tar"))) < 3:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert subprocess.run(command, capture_output=True).returncode == 0
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert not manifest["key"].duplicated().any()
    assert (manifest["status"] == "split").sum() == 75
    assert (manifest["status"] == "ok").sum() == 150  # two 1-second clips per video
    report = verify_shards(out)
    assert report.ok and report.samples == 150


# --- the batched model: OOM halving, a bad clip isolated, mixed clip sizes -------------------


class FakeCaptioner(base.Captioner):
    """Describes each frame by its size and brightness; fails like a GPU would."""

    name = "vlm"
    default_prompt = "what happens in {label}?"
    calls: list = []

    def describe(self, requests):
        FakeCaptioner.calls.append(len(requests))
        if len(requests) > 2:
            import torch

            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        if any(r.key == "poison" for r in requests):
            raise RuntimeError("bad pixels")
        return [[f"{f.size[0]}x{f.size[1]} brightness {np.asarray(f).mean():.0f}"
                 for f in r.frames] for r in requests]


def test_batched_model_halves_on_oom_and_isolates_a_bad_clip(monkeypatch, caplog):
    monkeypatch.setitem(base.CAPTIONERS, "vlm", "test_caption:FakeCaptioner")
    FakeCaptioner.calls = []
    model = CaptionModel(CaptionerConfig(captioner="vlm", model="x", batch_size=8))
    sizes = [(2, 32, 48), (3, 64, 96), (1, 40, 40), (2, 20, 30), (3, 32, 48)]
    frames = [np.full((n, h, w, 3), 50 * i, np.uint8) for i, (n, h, w) in enumerate(sizes)]
    keys = ["a", "b", "poison", "d", "e"]
    out = model({"key": keys, "frames": frames, "label": ["x", "y", "z", None, "w"]})
    assert FakeCaptioner.calls[:3] == [5, 4, 2]  # 8 -> 4 -> 2 after two out-of-memory errors
    assert model.stats.oom_halvings == 2
    assert out["caption_error"][2] == "caption failed: RuntimeError: bad pixels"
    assert ("a batch of 2 clips failed (caption failed: RuntimeError: bad pixels): captioning "
            "them one at a time") in caplog.text  # the fallback is never silent
    assert [e for i, e in enumerate(out["caption_error"]) if i != 2] == [""] * 4
    assert out["frame_captions"][1] == ["96x64 brightness 50"] * 3  # sizes kept per clip
    assert out["caption"][0] == "X: 48x32 brightness 0."
    assert out["prompt"][3] == "what happens in something?"


def test_labels_and_template_fusion():
    assert normalize_label("playing_guitar") == "playing guitar"
    assert normalize_label("makingApplePie") == "making apple pie"
    assert normalize_label("3DPainting") == "3D painting"
    assert normalize_label("adult+female+singing") == "adult female singing"
    assert normalize_label("ATM") == "ATM"
    assert fuse_template("playing guitar", ["a man plays a guitar.", "A man plays a guitar",
                                            "hands", "close up of hands on a guitar"]) == (
        "Playing guitar: a man plays a guitar, then close up of hands on a guitar.")
    assert fuse_template("abseiling", ["a woman abseiling down a cliff"]) == (
        "A woman abseiling down a cliff.")
    assert fuse_template("cat", ["a scattered pile of leaves"]) == (
        "Cat: a scattered pile of leaves.")  # whole words: "cat" is not in "scattered"
    assert fuse_template(None, []) == ""


def test_vlm_captions_mixed_clips_with_clip_scores_through_the_cli(tree, tmp_path):
    """A tiny random LLaVA from a folder, as `--model DIR`; clips of several sizes and
    lengths in batches; CLIP scores in the manifest and json; llm fusion is not needed."""
    from captioners.tiny_vlm import build_tiny_llava
    from datakit.models.tiny import build_tiny_clip

    model = build_tiny_llava(tmp_path / "llava")
    clip = build_tiny_clip(tmp_path / "clip")
    mixed = tmp_path / "mixed"
    for label, (width, height, frames) in {"waving": (96, 64, 12), "jumping": (64, 96, 5),
                                           "running": (128, 72, 20)}.items():
        (mixed / label).mkdir(parents=True)
        (mixed / label / "a.mp4").write_bytes(encode_video(
            [np.full((height, width, 3), 9 * i, np.uint8) for i in range(frames)], 8,
            preset="ultrafast"))
    out = tmp_path / "out"
    result = _invoke("caption", mixed, "--out", out, "--captioner", "vlm", "--model", model,
                     "--batch-size", "2", "--max-new-tokens", "6", "--score-clip", clip,
                     "--keyframe-mode", "scene", *QUIET)
    assert result.exit_code == 0, result.output
    manifest = pd.read_parquet(out / "manifest.parquet").set_index("key")
    assert (manifest["status"] == "ok").all() and len(manifest) == 3
    assert manifest["clip_score"].between(-1, 1).all()
    for key, sample in _samples(out).items():
        info = json.loads(sample["json"])
        assert info["captioner"]["captioner"] == "vlm"
        assert info["captioner"]["model"] == str(model)
        assert len(info["frame_captions"]) == 1  # one caption per clip from all key frames
        assert info["keyframes"]["mode"] == "uniform"  # flat clips: no scene change found
        assert len(info["keyframes"]["indices"]) == 3
        assert info["clip_score"] == pytest.approx(manifest.loc[key, "clip_score"], abs=1e-6)
        assert sample["txt"].decode() == manifest.loc[key, "caption"] != ""
    stats = json.loads((out / "stats.json").read_text())
    assert stats["model"]["calls"] == 2 and stats["model"]["items"] == 3  # batches of 2


def test_watermarks_flag_drop_and_strip_in_caption(tmp_path):
    import cv2
    from skimage import data

    from synthesize.pan_zoom import Motion, PanZoomConfig, plan_path, rng_for
    from synthesize.render import render_clip

    root = tmp_path / "videos" / "cooking"
    root.mkdir(parents=True)
    image = data.coffee()
    config = PanZoomConfig(width=320, height=192, frames=16, fps=8, seed=0)
    path = plan_path(Motion.PAN_RIGHT, (image.shape[1], image.shape[0]), config, rng_for(0, "x"))
    clean = list(render_clip(image, path, 320, 192, 16))
    marked = [cv2.putText(f.copy(), "STOCKPIX", (190, 180), cv2.FONT_HERSHEY_SIMPLEX, 0.8,
                          (255, 255, 255), 2) for f in clean]
    (root / "clean.mp4").write_bytes(encode_video(clean, 8, crf=10))
    (root / "marked.mp4").write_bytes(encode_video(marked, 8, crf=10))
    results = {}
    for action in ("flag", "drop", "strip"):
        out = tmp_path / action
        result = _invoke("caption", root.parent, "--out", out, "--watermarks", action, *LABEL,
                         *QUIET)
        assert result.exit_code == 0, result.output
        results[action] = pd.read_parquet(out / "manifest.parquet").set_index("key")
    flagged = results["flag"]
    assert flagged.loc["cooking__clean", "watermark_action"] == "clean"
    assert flagged.loc["cooking__marked", "watermark_action"] == "flagged"
    x0, y0, x1, y1 = flagged.loc["cooking__marked", "watermark_box"]
    drawn = cv2.putText(np.zeros((192, 320), np.uint8), "STOCKPIX", (190, 180),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.8, 255, 2) > 0
    ys, xs = np.nonzero(drawn)
    # around the drawn text, within 2 pixels (H.264 at crf 10 softens the strokes' rims)
    assert abs(x0 - xs.min()) <= 2 and abs(y0 - ys.min()) <= 2
    assert abs(x1 - xs.max() - 1) <= 2 and abs(y1 - ys.max() - 1) <= 2
    assert results["drop"].loc["cooking__marked", "status"] == "watermarked"
    assert results["drop"].loc["cooking__clean", "status"] == "ok"
    stripped = _samples(tmp_path / "strip")["cooking__marked"]
    assert json.loads(stripped["json"])["watermark_action"] == "stripped"
    after = read_frames(stripped["mp4"]).astype(float)[:, y0:y1, x0:x1]
    truth = np.stack(clean).astype(float)[:, y0:y1, x0:x1]
    before = np.stack(marked).astype(float)[:, y0:y1, x0:x1]
    assert np.abs(after - truth).mean() < 0.5 * np.abs(before - truth).mean()
