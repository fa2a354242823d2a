"""Odd members of an input shard, as a user re-captioning a hand-made shard meets them: every
sample ends as a manifest row that says what was wrong, and what was cut."""

import io
import json
import tarfile

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from datakit.cli import app
from datakit.io.video import encode_video
from manifests.sources import MAX_LABEL_CHARS, MAX_TEXT_CHARS, TEXT_CUT_NOTE


def _add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_links_bad_json_and_huge_labels_become_rows_that_say_why(tmp_path):
    mp4 = encode_video([np.full((32, 48, 3), 90, np.uint8)] * 6, 8, preset="ultrafast")
    shard = tmp_path / "in" / "hand.tar"
    shard.parent.mkdir()
    words = " ".join(f"word{i}" for i in range(40000))  # about 300,000 characters
    with tarfile.open(shard, "w") as tar:
        _add(tar, "good.json", json.dumps({"label": "abseiling"}).encode())
        _add(tar, "good.mp4", mp4)
        link = tarfile.TarInfo("link.mp4")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
        _add(tar, "broken.json", b'{"label": "juggling",')
        _add(tar, "broken.mp4", mp4)
        _add(tar, "huge.json", json.dumps({"label": "x" * 200_000}).encode())
        _add(tar, "huge.mp4", mp4)
        _add(tar, "wordy.json", json.dumps({"label": "knitting"}).encode())
        _add(tar, "wordy.mp4", mp4)
        _add(tar, "wordy.txt", words.encode())
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["caption", str(shard), "--out", str(out), "--quiet",
                                      "--workers", "1", "--captioner", "label"])
    assert result.exit_code == 0, result.output
    rows = pd.read_parquet(out / "manifest.parquet").set_index("key")
    assert sorted(rows.index) == ["broken", "good", "huge", "link", "wordy"]
    assert rows.loc["link", ["status", "source", "error"]].tolist() == [
        "failed", "hand.tar::link.mp4",
        "not a regular file: a symbolic link to /etc/passwd (not followed)"]
    assert rows.loc["broken", "status"] == "failed"
    assert rows.loc["broken", "error"] == (
        "unreadable json: broken.json does not parse (Expecting property name enclosed in "
        "double quotes: line 1 column 22 (char 21))")
    assert rows.loc["huge", ["status", "error"]].tolist() == [
        "failed", f"bad label: 200000 characters, more than {MAX_LABEL_CHARS} (a label names "
                  "a class; put long text in the caption)"]
    assert pd.isna(rows.loc["huge", "label"])  # the 200 KB label is not copied into the row
    assert rows.loc["wordy", "status"] == "ok" and rows.loc["good", "status"] == "ok"
    assert list(rows.loc["wordy", "notes"]) == [TEXT_CUT_NOTE]
    with tarfile.open(next((out / "shards").glob("*.tar"))) as written:
        kept = json.loads(written.extractfile("wordy.json").read())["text"]
    assert MAX_TEXT_CHARS - 10 < len(kept) <= MAX_TEXT_CHARS
    assert kept == words[:len(kept)] and words[len(kept)] == " "  # cut between words
    stats = json.loads((out / "stats.json").read_text())
    assert stats["notes"] == {TEXT_CUT_NOTE: 1}


def test_an_image_sample_keeps_its_picture_when_its_json_is_unreadable(tmp_path):
    from PIL import Image

    from manifests.sources import read_records

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buffer, "JPEG")
    shard = tmp_path / "laion.tar"
    with tarfile.open(shard, "w") as tar:
        _add(tar, "000.jpg", buffer.getvalue())
        _add(tar, "000.txt", ("a red square " * 100).encode())
        _add(tar, "000.json", b"{oops")
    [record] = read_records(shard)
    assert record.error is None and record.data == buffer.getvalue()
    assert record.notes == (TEXT_CUT_NOTE, "unreadable json member ignored")
    assert len(record.text) <= MAX_TEXT_CHARS
    assert ("a red square " * 100).startswith(record.text + " ")  # cut between words


def test_datakit_watermark_gives_a_link_member_a_row_that_says_why(tmp_path):
    mp4 = encode_video([np.full((32, 48, 3), 90, np.uint8)] * 6, 8, preset="ultrafast")
    shard = tmp_path / "in.tar"
    with tarfile.open(shard, "w") as tar:
        _add(tar, "good.mp4", mp4)
        link = tarfile.TarInfo("link.mp4")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
        _add(tar, "last.mp4", mp4)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["watermark", str(shard), "--out", str(out), "--quiet",
                                      "--workers", "1", "--watermarks", "flag"])
    assert result.exit_code == 0, result.output
    rows = pd.read_parquet(out / "manifest.parquet").set_index("key")
    assert sorted(rows.index) == ["good", "last", "link"]
    assert rows.loc["link", ["status", "error"]].tolist() == [
        "failed", "link.mp4: not a regular file: a symbolic link to /etc/passwd (not followed)"]
    assert rows.loc["good", "status"] == rows.loc["last", "status"] == "ok"
