"""A corpus of broken and odd inputs through both pipelines, as the CLI runs them.

Every input must end as exactly one manifest row with the right status and a reason a person
can read, no worker may crash (the run finishes, exit 0: failed inputs are counted, not
fatal), the summary table printed at the end must give the same counts, and every ok sample
must decode. The corpus is made on the spot (`corpus.py`): zero bytes, truncated, wrong
extensions, a decompression bomb, a video header claiming 16000x16000, a dangling symlink,
a FIFO (as an input and as a sidecar: a reader would wait for it forever), unicode and
space names, one basename in two folders, odd frame sizes, one frame, audio only, AV1 and
VP9.
"""

import json
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest
from corpus import encode, huge_header_video, image_corpus, png_bytes, video_corpus
from helpers import assert_accounted_for, read_samples, summary_counts

from datakit.io.video import read_frames

PAN_ZOOM = ["--size", "96x64", "--frames", "4", "--fps", "4", "--preset", "ultrafast"]

# source (relative to SRC) -> (status, start of the reason)
VIDEOS = {
    "walking/good.mp4": ("ok", ""),
    "walking/clip.mp4": ("ok", ""),
    "running/clip.mp4": ("ok", ""),
    "running/été à la plage.mp4": ("ok", ""),
    "odd/odd dims.mp4": ("ok", ""),  # 321x241 H.264 (4:4:4): re-encoded to even 320x240
    "odd/odd vp9.webm": ("ok", ""),
    "codecs/av1.mp4": ("ok", ""),  # decord cannot; PyAV (libdav1d) can
    "codecs/vp9.webm": ("ok", ""),
    "codecs/vp9.mp4": ("ok", ""),
    "odd/one frame.mp4": ("skipped", "too short: 1 frame(s)"),
    "odd/huge.avi": ("failed", "too large: 16000x16000 frames"),
    "broken/audio only.mp4": ("failed", "no video stream"),
    "broken/zero.mp4": ("failed", "empty file"),
    "broken/truncated.mp4": ("failed", "not a video: cannot probe"),
    "broken/png.mp4": ("failed", "not a video: a still image"),
    "broken/text.mp4": ("failed", "not a video: cannot probe"),
    "broken/gone.mp4": ("failed", "dangling symlink: target"),
    "broken/pipe.mp4": ("failed", "not a regular file: a FIFO"),
}
IMAGES = {
    "good.jpg": ("ok", ""),
    "a/photo.jpg": ("ok", ""),
    "b/photo.jpg": ("ok", ""),
    "été à la plage.jpg": ("ok", ""),
    "odd dims.png": ("ok", ""),
    "png named.jpg": ("ok", ""),
    "cmyk.jpg": ("ok", ""),
    "tiny.png": ("skipped", "too small: 12x8 needs 8.00x upscaling"),
    "broken/zero.jpg": ("failed", "empty file"),
    "broken/truncated.jpg": ("failed", "truncated image"),
    "broken/bomb.png": ("failed", "decompression bomb"),
    "broken/text.png": ("failed", "not an image"),
    "broken/mp4 named.jpg": ("failed", "not an image"),
    "broken/gone.jpg": ("failed", "dangling symlink: target"),
    "broken/pipe.jpg": ("failed", "not a regular file: a FIFO"),
}


def _run(*args, prefix=()):
    return subprocess.run([*prefix, sys.executable, "-m", "datakit.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def _check_rows(manifest, expected):
    rows = {row.source: row for row in manifest.itertuples()}
    assert sorted(rows) == sorted(expected)  # every input once, nothing else
    for source, (status, reason) in expected.items():
        row = rows[source]
        assert (row.status, (row.error or "")[:len(reason)]) == (status, reason), row
        if status != "ok":  # a reason, one line, no Python noise
            assert row.error.strip() and "\n" not in row.error, row.error
            assert "Traceback" not in row.error and "internal error" not in row.error


def _check_summary(result, manifest):
    assert result.returncode == 0, result.stderr  # bad inputs are counted, not fatal
    assert "Traceback" not in result.stderr and "worker crashed" not in result.stderr
    counts = manifest["status"].value_counts().to_dict()
    assert {s: n for s, n in summary_counts(result.stderr).items() if n} == counts
    assert f"this run: {len(manifest)} inputs" in " ".join(result.stderr.split())


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos") / "src"
    video_corpus(root)
    huge_header_video(root / "odd" / "huge.avi")
    return root


def test_caption_accounts_for_every_broken_and_odd_video(videos, tmp_path):
    out = tmp_path / "out"
    result = _run("caption", videos, "--out", out, "--workers", "2", "--shard-size", "4",
                  "--quiet", "--captioner", "label")
    manifest = assert_accounted_for(out, set(_keys(out)))
    _check_rows(manifest, VIDEOS)
    _check_summary(result, manifest)
    for sample in read_samples(out):
        info = json.loads(sample["json"])
        frames = read_frames(sample["mp4"])
        assert frames.shape[1:] == (info["height"], info["width"], 3)
        assert info["width"] % 2 == 0 and info["height"] % 2 == 0  # H.264 yuv420p
        assert frames.shape[0] == 8 and sample["txt"].strip()
    odd = manifest.set_index("source").loc["odd/odd dims.mp4"]
    assert (odd.width, odd.height) == (320, 240)


def test_pan_zoom_accounts_for_every_broken_and_odd_image(tmp_path):
    images = tmp_path / "src"
    image_corpus(images)
    out = tmp_path / "out"
    result = _run("pan-zoom", images, "--out", out, "--workers", "2", "--shard-size", "4",
                  "--quiet", *PAN_ZOOM)
    manifest = assert_accounted_for(out, set(_keys(out)))
    _check_rows(manifest, IMAGES)
    _check_summary(result, manifest)
    assert all(read_frames(s["mp4"]).shape == (4, 64, 96, 3) for s in read_samples(out))
    keys = manifest.set_index("source")["key"]
    assert keys["a/photo.jpg"] != keys["b/photo.jpg"]  # one basename, two keys


def _keys(out):
    return pd.read_parquet(out / "manifest.parquet")["input_key"]


def _without_read_permission():
    """A command prefix under which mode 000 stops reads, or None. Root reads anything
    through CAP_DAC_OVERRIDE; without it (dropped from the bounding set), root obeys the mode
    bits while still reaching its own interpreter (a `--reuid` user could not: /root is
    private here)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]


@pytest.mark.parametrize("pipeline", ["caption", "pan-zoom"])
def test_an_unreadable_input_is_a_failed_row(tmp_path, pipeline):
    prefix = _without_read_permission()
    if prefix is None:
        pytest.skip("running as root without setpriv: chmod 000 cannot stop root's reads")
    src = tmp_path / "src"
    if pipeline == "caption":
        _two_videos(src)
        locked, args = src / "walking" / "locked.mp4", ["--quiet", "--captioner", "label"]
    else:
        _two_images(src)
        locked, args = src / "locked.jpg", ["--quiet", *PAN_ZOOM]
    locked.chmod(0)
    probe = subprocess.run([*prefix, "cat", str(locked)], capture_output=True)
    if probe.returncode == 0:
        pytest.skip("mode 000 does not stop reads here (no way to drop read capabilities)")
    out = tmp_path / "out"
    result = _run(pipeline, src, "--out", out, "--workers", "2", *args, prefix=prefix)
    manifest = assert_accounted_for(out, set(_keys(out)))
    rows = manifest.set_index("source")
    relative = locked.relative_to(src).as_posix()
    assert rows.loc[relative, "status"] == "failed"
    assert rows.loc[relative, "error"].startswith("unreadable: ")
    assert "ermission denied" in rows.loc[relative, "error"]
    assert (rows["status"] == "ok").sum() == 1
    _check_summary(result, manifest)


def _two_videos(root):
    encode(root / "walking" / "good.mp4")
    encode(root / "walking" / "locked.mp4")


def _two_images(root):
    root.mkdir()
    (root / "good.png").write_bytes(png_bytes(192, 128))
    (root / "locked.jpg").write_bytes(png_bytes(192, 128))


def test_a_fifo_among_input_shards_is_a_failed_row_not_a_hang(tmp_path):
    """Shards are read by the main process: a FIFO there would block the whole run."""
    import webdataset as wds

    src = tmp_path / "src"
    src.mkdir()
    with wds.TarWriter(str(src / "00000.tar")) as sink:
        for index in range(2):
            sink.write({"__key__": f"s{index}", "png": png_bytes(192, 128), "txt": "a photo"})
    os.mkfifo(src / "00001.tar")
    out = tmp_path / "out"
    result = _run("pan-zoom", src, "--out", out, "--workers", "1", "--quiet", *PAN_ZOOM)
    manifest = assert_accounted_for(out, set(_keys(out)))
    rows = manifest.set_index("source")
    assert rows.loc["00001.tar", "error"] == "not a regular file: a FIFO (named pipe)"
    assert (rows["status"] == "ok").sum() == 2
    _check_summary(result, manifest)
