"""Video sources: class trees, Kinetics / Moments-in-Time / VideoLT annotations, shards."""

import io
import json
import tarfile

import numpy as np
import pytest

from datakit.io.errors import UserError
from datakit.io.video import encode_video
from manifests.videos import read_video_records


def _clip(path, frames=8, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_video([np.full((32, 48, 3), value, np.uint8)] * frames, 8,
                                  preset="ultrafast"))
    return path


def _records(src, annotations=()):
    return list(read_video_records(src, [str(a) for a in annotations]))


def test_class_tree_labels_splits_keys_and_extensions(tmp_path):
    root = tmp_path / "kinetics"
    _clip(root / "train" / "abseiling" / "0wR5jVB-WPk_000417_000427.mp4")
    _clip(root / "train" / "playing_guitar" / "x y.MP4")
    _clip(root / "val" / "abseiling" / "clip.webm")
    (root / "train" / "abseiling" / ".hidden.mp4").write_bytes(b"")
    (root / "train" / "abseiling" / "notes.txt").write_text("not a video")
    records = _records(root)
    by_key = {r.key: r for r in records}
    assert sorted(by_key) == ["train__abseiling__0wR5jVB-WPk_000417_000427",
                              "train__playing_guitar__x_y", "val__abseiling__clip"]
    guitar = by_key["train__playing_guitar__x_y"]
    assert guitar.label == "playing_guitar" and guitar.meta == {"split": "train"}
    assert guitar.source == "train/playing_guitar/x y.MP4"
    # Pointing at one split: the label is still the parent folder; the key matches DESIGN.md.
    keys = [r.key for r in _records(root / "train")]
    assert "abseiling__0wR5jVB-WPk_000417_000427" in keys


def test_kinetics_csv_clip_files_whole_videos_missing_files_and_labels(tmp_path):
    root = tmp_path / "k"
    _clip(root / "abseiling" / "AAA_000010_000020.mp4")
    _clip(root / "whole" / "BBB.mp4", frames=40)  # only the whole source video is there
    csv = tmp_path / "train.csv"
    csv.write_text("label,youtube_id,time_start,time_end,split\n"
                   "abseiling,AAA,10,20,train\n"
                   "playing guitar,BBB,1,3,train\n"
                   "juggling,CCC,0,10,train\n"
                   ",AAA,10,20,train\n")
    records = _records(root, [csv])
    assert len(records) == 4  # one per annotation row, never dropped
    first, second, missing, unlabeled = records
    assert first.key == "abseiling__AAA_000010_000020" and first.label == "abseiling"
    assert first.start is None and first.path.endswith("AAA_000010_000020.mp4")
    assert second.label == "playing guitar" and (second.start, second.end) == (1.0, 3.0)
    assert second.path.endswith("BBB.mp4") and second.meta["split"] == "train"
    assert missing.error.startswith("missing file: no CCC_000000_000010.*")
    assert unlabeled.label is None and unlabeled.error is None
    assert len({r.key for r in records}) == 4


def test_kinetics_times_keep_their_fractions_and_bad_ones_are_failed_rows(tmp_path):
    root = tmp_path / "k"
    _clip(root / "BBB.mp4", frames=40)
    csv = tmp_path / "segments.csv"
    csv.write_text("label,youtube_id,time_start,time_end\n"
                   "cut,BBB,0.4,1.25\n"
                   "endless,BBB,2,inf\n"
                   "backwards,BBB,3,2\n"
                   "early,BBB,-1,2\n"
                   "words,BBB,one,two\n")
    fraction, endless, backwards, early, words = _records(root, [csv])
    assert (fraction.start, fraction.end) == (0.4, 1.25) and fraction.error is None
    assert fraction.key == "cut__BBB_000000_000001"  # named as Kinetics names its clips
    assert endless.error == ("bad annotation: time_start/time_end must be finite (got 2, inf) "
                             "on line 3 of segments.csv")
    assert backwards.error.startswith("bad annotation: the segment [3, 2] is empty")
    assert early.error.startswith("bad annotation: the segment [-1, 2] is empty or starts "
                                  "before 0 on line 5")
    assert words.error.startswith("bad annotation: time_start/time_end are not numbers")


def test_moments_in_time_csv_and_path_label_csv(tmp_path):
    root = tmp_path / "training"
    _clip(root / "adult+female+singing" / "a1.mp4")
    _clip(root / "bathing" / "b2.mp4")
    mit = tmp_path / "trainingSet.csv"
    mit.write_text("adult+female+singing/a1.mp4,adult+female+singing,3,0\n"
                   "bathing/b2.mp4,bathing,2,1\n"
                   "bathing/gone.mp4,bathing,2,1\n")
    records = _records(root, [mit])
    assert [r.label for r in records] == ["adult+female+singing", "bathing", "bathing"]
    assert records[0].source == "adult+female+singing/a1.mp4"
    assert records[2].error.startswith("missing file")
    listing = tmp_path / "list.csv"
    listing.write_text("video_path,class\nelsewhere/b2.mp4,washing\n")  # found by file name
    (record,) = _records(root, [listing])
    assert record.label == "washing" and record.path.endswith("bathing/b2.mp4")


def test_videolt_lists_with_label_list_found_beside_them(tmp_path):
    root = tmp_path / "videos"
    _clip(root / "xYjQkWxF8h0.mp4")
    _clip(root / "sub" / "RijQ4BMl4Ig.mkv")
    lists = tmp_path / "labels"
    lists.mkdir()
    (lists / "count-labels-train.lst").write_text("3DPainting 0 137.0\nmakingApplePie 1 5.0\n"
                                                  "desert 2 1268.0\n")
    (lists / "train.lst").write_text("xYjQkWxF8h0 1\nRijQ4BMl4Ig 0,2\nmissing0001 2\n")
    records = _records(root, [lists / "train.lst"])
    assert [r.label for r in records] == ["makingApplePie", "3DPainting, desert", "desert"]
    assert records[1].meta["labels"] == ["3DPainting", "desert"]
    assert records[1].path.endswith("RijQ4BMl4Ig.mkv")
    assert records[2].error.startswith("missing file")


def test_shards_with_video_members_keep_keys_and_labels(tmp_path):
    shard = tmp_path / "shards" / "00000.tar"
    shard.parent.mkdir()
    mp4 = _clip(tmp_path / "x.mp4").read_bytes()
    with tarfile.open(shard, "w") as tar:
        for key, meta in (("cat__a", {"label": "petting_cat"}), ("dog__b", {})):
            for ext, data in (("json", json.dumps(meta).encode()), ("mp4", mp4),
                              ("txt", b"old caption")):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    records = _records(tmp_path / "shards")
    assert [r.key for r in records] == ["cat__a", "dog__b"]
    assert records[0].label == "petting_cat" and records[1].label is None
    assert records[0].text == "old caption" and records[0].data == mp4


def test_bad_sources_are_one_line_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no videos found"):
        _records(tmp_path / "empty")
    with pytest.raises(UserError, match="no such file"):
        _records(tmp_path / "nowhere")
    _clip(tmp_path / "v" / "a" / "x.mp4")
    odd = tmp_path / "odd.csv"
    odd.write_text("foo,bar\n1,2\n")
    with pytest.raises(UserError, match="not a known annotation file"):
        _records(tmp_path / "v", [odd])
    lonely = tmp_path / "solo" / "train.lst"
    lonely.parent.mkdir()
    lonely.write_text("x 1\n")
    with pytest.raises(UserError, match="needs its label list"):
        _records(tmp_path / "v", [lonely])
