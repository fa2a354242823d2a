"""Annotation files in the exact formats the datasets and mmaction2 ship: VideoLT's
`labels/*_videofolder.txt` (lines copied from VideoLT's own test_videofolder.txt) and
mmaction2 video lists with their class-index file."""

import numpy as np
import pytest

from datakit.io.errors import UserError
from datakit.io.video import encode_video
from manifests.videos import read_video_records


def _clip(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_video([np.zeros((32, 48, 3), np.uint8)] * 4, 8, preset="ultrafast"))


def test_videolt_videofolder_lists_with_their_label_list(tmp_path):
    root = tmp_path / "videos"
    for video_id in ("bmJxIlOApIQ", "q8Ocg8D7QLs", "ebRpY2He5-w"):
        _clip(root / f"{video_id}.mp4")
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "count-labels-train.lst").write_text(
        "armWrestling 58 724.0\ndog 276 1044.0\ndogGoingUpTheStairs 277 104.0\n"
        "makingTea 611 167.0\n")
    (labels / "test_videofolder.txt").write_text(
        "armWrestling/bmJxIlOApIQ 6 58,\nmultiple/q8Ocg8D7QLs 15 276,277,\n"
        "makingTea/ebRpY2He5-w 196 611,\nwolf/tuWYPOqSY8E 137 990,\n")
    records = list(read_video_records(root, [labels / "test_videofolder.txt"]))
    assert [(r.key, r.label) for r in records] == [
        ("bmJxIlOApIQ", "armWrestling"), ("q8Ocg8D7QLs", "dog, dogGoingUpTheStairs"),
        ("ebRpY2He5-w", "makingTea"), ("tuWYPOqSY8E", "class 990")]
    assert records[1].meta["label_ids"] == [276, 277]
    assert records[0].path == str(root / "bmJxIlOApIQ.mp4")
    assert records[3].error == "missing file: no tuWYPOqSY8E.* under SRC"
    assert records[3].meta["unknown_label_ids"] == [990]


def test_mmaction2_video_lists_with_their_class_index_file(tmp_path):
    root = tmp_path / "kinetics400" / "videos_train"
    _clip(root / "abseiling" / "x_000095_000105.mp4")
    _clip(root / "air_drumming" / "y_000010_000020.mp4")
    _clip(root / "archery" / "z_000001_000011.mp4")
    lists = tmp_path / "kinetics400"
    videos = lists / "kinetics400_train_list_videos.txt"
    videos.write_text("abseiling/x_000095_000105.mp4 0\nair_drumming/y_000010_000020.mp4 1\n"
                      "archery/z_000001_000011.mp4 2 0\nabseiling/gone_000001_000011.mp4 0\n")
    label_map = lists / "label_map_k400.txt"
    label_map.write_text("abseiling\nair drumming\narchery\n")
    expected = [("abseiling__x_000095_000105", "abseiling"),
                ("air_drumming__y_000010_000020", "air drumming"),
                ("archery__z_000001_000011", "archery, abseiling"),
                ("abseiling__gone_000001_000011", "abseiling")]
    for annotations in ([videos, label_map], [videos]):  # passed, or found beside the list
        records = list(read_video_records(root, annotations))
        assert [(r.key, r.label) for r in records] == expected
        assert records[0].source == "abseiling/x_000095_000105.mp4"
        assert records[3].error == "missing file: abseiling/gone_000001_000011.mp4 is not " \
                                   "under SRC"
    label_map.unlink()
    with pytest.raises(UserError, match="an mmaction2 video list needs its class-index file"):
        list(read_video_records(root, [videos]))
