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
from datakit.run.shards import verify_shards
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
    assert rows.loc["link", ["status", "source", "error"]].tolist() == [
        "failed", "in.tar::link.mp4",
        "not a regular file: a symbolic link to /etc/passwd (not followed)"]
    assert rows.loc["good", "status"] == rows.loc["last", "status"] == "ok"


def _webm(frames) -> bytes:
    """VP9 in WebM, as other tools' shards may hold their clips."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="webm") as output:
        stream = output.add_stream("libvpx-vp9", rate=8)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            output.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        output.mux(stream.encode())
    return buffer.getvalue()


def test_datakit_watermark_reads_any_video_member_and_a_shard_that_breaks_off(tmp_path):
    """Shards other tools wrote: .webm and upper-case members, a json that does not parse, a
    sample without a video, and a shard cut short; each sample is a row that says what it
    met, and a clip whose pixels do not change keeps its member and bytes."""
    from real_media import draw_text, real_clip

    clean = real_clip("bikes", frames=24)
    marked = np.stack([draw_text(f, "stock.example.com", (12, 236), 22, 0.9) for f in clean])
    kept, stripped = _webm(clean), _webm(marked)
    upper = encode_video(clean, 8, preset="ultrafast")
    shard = tmp_path / "other.tar"
    with tarfile.open(shard, "w") as tar:
        _add(tar, "kept.webm", kept)
        _add(tar, "kept.json", json.dumps({"fps": 8}).encode())
        _add(tar, "marked.webm", stripped)
        _add(tar, "upper.MP4", upper)
        _add(tar, "upper.json", b"{not json")
        _add(tar, "lonely.txt", b"a caption without its clip")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["watermark", str(shard), "--out", str(out), "--quiet",
                                      "--workers", "1", "--preset", "ultrafast"])
    assert result.exit_code == 0, result.output
    rows = pd.read_parquet(out / "manifest.parquet").set_index("key")
    assert rows.loc["kept", "watermark_action"] == "clean"
    assert rows.loc["marked", "watermark_action"] in ("stripped", "cropped")
    assert "re-encoded as mp4 (was webm)" in list(rows.loc["marked", "notes"])
    assert rows.loc["upper", "status"] == "ok"
    assert any(note.startswith("unreadable json: upper.json does not parse")
               for note in rows.loc["upper", "notes"])
    assert rows.loc["lonely", ["status", "error"]].tolist() == [
        "failed", "no video: the shard sample has txt but no video member"]
    samples = {}
    with tarfile.open(next((out / "shards").glob("*.tar"))) as tar:
        for member in tar:
            key, _, extension = member.name.partition(".")
            samples.setdefault(key, {})[extension] = tar.extractfile(member).read()
    assert samples["kept"]["webm"] == kept and "mp4" not in samples["kept"]
    assert set(samples["marked"]) == {"mp4", "json"}
    assert samples["upper"]["mp4"] == upper
    assert json.loads(samples["upper"]["json"])["watermark_action"] == "clean"
    report = verify_shards(out)  # a kept .webm and a sample without a caption are whole
    assert report.ok, (report.problems, [c.problems for c in report.shards])
    result = CliRunner().invoke(app, ["report", str(out), "--out", str(tmp_path / "page"),
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    page = json.loads((tmp_path / "page" / "report.json").read_text())
    assert page["could_not_read"] == [] and sorted(page["chosen"]) == ["kept", "marked", "upper"]
    assert len(list((tmp_path / "page" / "media").glob("*_kept.mp4"))) == 1  # made playable
    # the same shard cut short: the samples before the break, then a row for the break
    (tmp_path / "cut.tar").write_bytes(shard.read_bytes()[:len(kept) + len(stripped) // 2])
    result = CliRunner().invoke(app, ["watermark", str(tmp_path / "cut.tar"), "--out",
                                      str(tmp_path / "cut"), "--quiet", "--workers", "1",
                                      "--watermarks", "flag"])
    assert result.exit_code == 0, result.output
    rows = pd.read_parquet(tmp_path / "cut" / "manifest.parquet").set_index("key")
    assert rows.loc["kept", "status"] == "ok"
    assert rows.loc["cut", "error"].startswith("corrupt shard: unexpected end of data")


def test_a_shard_cut_at_a_member_edge_or_inside_a_header_gets_a_row_that_says_so(tmp_path):
    """tarfile ends such a read silently: the samples after the cut were lost unnamed."""
    from manifests.sources import read_records

    mp4 = encode_video([np.full((32, 48, 3), 90, np.uint8)] * 6, 8, preset="ultrafast")
    shard = tmp_path / "whole.tar"
    with tarfile.open(shard, "w") as tar:
        _add(tar, "a.mp4", mp4)
        _add(tar, "a.json", json.dumps({"label": "abseiling"}).encode())
        _add(tar, "b.mp4", mp4)
    with tarfile.open(shard) as tar:
        second = tar.getmember("a.json").offset
    whole = shard.read_bytes()
    assert [r.key for r in read_records(shard)] == ["whole__a", "whole__b"]  # the control
    for name, end in (("edge.tar", second), ("header.tar", second + 100)):
        (tmp_path / name).write_bytes(whole[:end])
        *samples, cut = read_records(tmp_path / name)
        assert [r.key for r in samples] == [f"{name[:-4]}__a"]
        assert cut.error == ("corrupt shard: it ends without tar's end-of-archive block, where "
                             "a member should begin (cut short?) (after 1 samples)")
