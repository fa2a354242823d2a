"""Exit codes of the shard-writing commands: a run in which every input failed exits 1 with
its cause in one line; one in which every input was skipped still exits 0."""

import io
import json
import tarfile

from PIL import Image
from typer.testing import CliRunner

from datakit.cli import app

FAST = ["--quiet", "--workers", "1"]


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _error_lines(result):
    return [line for line in result.output.splitlines() if line.startswith("error:")]


def test_every_input_failed_exits_1_with_one_line(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a", "b", "c"):
        (photos / f"{name}.jpg").write_text("not a picture")
    out = tmp_path / "out"
    result = _invoke("pan-zoom", photos, "--out", out, "--size", "96x64", "--frames", "4",
                     "--preset", "ultrafast", *FAST)
    assert result.exit_code == 1, result.output
    [line] = _error_lines(result)
    assert line.startswith("error: every input of this run failed (3 rows; 3 x ")
    assert line.endswith(f"each row's reason is in {out / 'manifest.parquet'}")
    stats = json.loads((out / "stats.json").read_text())
    assert stats["every_input_failed"] == line.removeprefix("error: ")
    # The rerun has nothing left to do: not a failure.
    assert _invoke("pan-zoom", photos, "--out", out, "--size", "96x64", "--frames", "4",
                   "--preset", "ultrafast", *FAST).exit_code == 0


def test_every_input_skipped_exits_0(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a", "b"):
        Image.new("RGB", (20, 20), (200, 10, 10)).save(photos / f"{name}.jpg")
    out = tmp_path / "out"
    result = _invoke("pan-zoom", photos, "--out", out, "--size", "96x64", "--frames", "4",
                     "--preset", "ultrafast", *FAST)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "stats.json").read_text())["this_run"] == {"skipped": 2}


def test_caption_and_watermark_runs_that_fail_everything_exit_1(tmp_path):
    videos = tmp_path / "videos" / "abseiling"
    videos.mkdir(parents=True)
    (videos / "x.mp4").write_text("not a video")
    result = _invoke("caption", videos.parent, "--out", tmp_path / "c", "--captioner", "label",
                     *FAST)
    assert result.exit_code == 1 and len(_error_lines(result)) == 1, result.output
    assert "every input of this run failed (1 rows; 1 x not a video" in result.output
    shard = tmp_path / "in.tar"
    with tarfile.open(shard, "w") as tar:
        for name, data in (("k.mp4", b"not a video"), ("k.txt", b"a caption")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    result = _invoke("watermark", shard, "--out", tmp_path / "w", *FAST)
    assert result.exit_code == 1 and len(_error_lines(result)) == 1, result.output
    assert "every input of this run failed (1 rows; 1 x " in result.output


def test_failures_next_to_finished_samples_are_no_failed_run(tmp_path):
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.mkdir()
    bad.mkdir()
    Image.new("RGB", (200, 150), (20, 120, 200)).save(good / "a.jpg")
    (bad / "b.jpg").write_text("not a picture")
    out = tmp_path / "out"
    args = ["--size", "96x64", "--frames", "4", "--preset", "ultrafast", *FAST]
    assert _invoke("pan-zoom", good, "--out", out, *args).exit_code == 0
    appended = _invoke("pan-zoom", bad, "--out", out, "--append", *args)
    assert appended.exit_code == 0, appended.output  # OUT holds a sample: the job did its work
    assert json.loads((out / "stats.json").read_text())["this_run"] == {"failed": 1}


def test_an_out_that_is_a_url_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (200, 150), (20, 120, 200)).save(photos / "a.jpg")
    result = _invoke("pan-zoom", photos, "--out", "s3://bucket/out", *FAST)
    assert result.exit_code == 2
    assert _error_lines(result) == ["error: s3:/bucket/out: --out must be a folder of this "
                                    "machine's file system (the driver writes every shard "
                                    "there); mount the bucket and give the mount point"]
    assert not (tmp_path / "s3:").exists()  # no local folder made from the URL
