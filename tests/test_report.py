import io
import json
import re
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from skimage import data
from typer.testing import CliRunner

from datakit.cli import app
from datakit.io.errors import UserError
from datakit.io.video import encode_video, probe, read_frames
from datakit.run.dataset_report import write_dataset_report
from datakit.run.shards import Sample, ShardWriter, write_tar_sample
from manifests.report import choose_samples, normalize_manifest
from manifests.schema import make_row, rows_to_table
from manifests.store import ManifestStore, write_stats


def _frames(photo: str, count: int, size=(64, 48)) -> list[np.ndarray]:
    """`count` frames of a real photo sliding right by 2 px a frame."""
    image = data.stereo_motorcycle()[0] if photo == "motorcycle" else getattr(data, photo)()
    image = cv2.resize(image, (size[0] + 2 * count, size[1]),
                       interpolation=cv2.INTER_AREA)
    return [np.ascontiguousarray(image[:, 2 * i:2 * i + size[0]]) for i in range(count)]


def _mp4(photo: str, count: int, fps: float = 4.0) -> bytes:
    return encode_video(_frames(photo, count), fps, preset="ultrafast")


# The known dataset: 7 ok clips (labels a x4, b x2, c x1; frames 4..10 at 4 fps), 3 failed
# (two kinds), 2 skipped, 1 watermarked; three captions that differ only in case, digits
# and punctuation.
OK = [
    ("a0", "a", "A cat runs across the lawn.", 4, 0.30, 0.10, "chelsea"),
    ("a1", "a", "a cat runs across the lawn!", 5, 0.25, 0.20, "chelsea"),
    ("a2", "a", "A cat runs across the lawn 2", 6, 0.35, 0.05, "chelsea"),
    ("a3", "a", "A rocket stands on the pad", 7, 0.20, 0.00, "rocket"),
    ("b0", "b", "Coffee is poured into a cup", 8, 0.31, 0.15, "coffee"),
    ("b1", "b", "An astronaut waves at the camera", 9, 0.28, 0.12, "astronaut"),
    ("c0", "c", "A motorcycle stands in a garage", 10, 0.22, 0.02, "motorcycle"),
]
FAILED = [("f0", "truncated image: cut at 100 bytes"), ("f1", "truncated image: cut at 7 bytes"),
          ("f2", "unreadable: not an image")]
SKIPPED = [("s0", "too small: 20x20"), ("s1", "too small: 30x10")]


def _known_dataset(out: Path, extra_column: bool = False) -> Path:
    store = ManifestStore(out)
    with ShardWriter(out, store, max_count=3) as writer:
        for i, (key, label, caption, frames, clip, mark, photo) in enumerate(OK):
            mp4 = _mp4(photo, frames)
            info = {"key": key, "label": label, "caption": caption, "frames": frames}
            row = make_row(key, "ok", source=f"src/{key}.mp4", caption=caption, label=label,
                           width=64, height=48, frames=frames, fps=4.0, clip_score=clip,
                           watermark_score=mark, watermark_action="kept",
                           meta={"motion": "pan-left" if i % 2 else "zoom-in"})
            writer.add(Sample(key, {"mp4": mp4, "txt": caption.encode(),
                                    "json": json.dumps(info).encode()}, row))
        for key, error in FAILED:
            writer.add_row(make_row(key, "failed", source=f"src/{key}.mp4", error=error))
        for key, error in SKIPPED:
            writer.add_row(make_row(key, "skipped", source=f"src/{key}.mp4", error=error))
        writer.add_row(make_row("w0", "watermarked", source="src/w0.mp4",
                                error="watermark: logo at top left", watermark_score=0.9,
                                watermark_action="drop"))
    store.write_manifest()
    write_stats(store, {"pipeline": "caption"}, time.time() - 2.0, 13)
    if extra_column:
        frame = pd.read_parquet(out / "manifest.parquet")
        frame["aesthetic_v9"] = 1.5
        newer = frame.iloc[[-1]].assign(key="q0", input_key="q0", status="quarantined")
        pd.concat([frame, newer]).to_parquet(out / "manifest.parquet")
    return out


@pytest.fixture(scope="module")
def known(tmp_path_factory) -> Path:
    return _known_dataset(tmp_path_factory.mktemp("known") / "out")


@pytest.fixture(scope="module")
def known_report(known, tmp_path_factory) -> Path:
    return write_dataset_report(known, tmp_path_factory.mktemp("report") / "rep", samples=5)


def _page(index: Path) -> str:
    return index.read_text()


def _summary(index: Path) -> dict:
    return json.loads((index.parent / "report.json").read_text())


def test_the_numbers_on_the_page_match_the_manifest(known_report):
    page = _page(known_report)
    for status, count in (("ok", 7), ("failed", 3), ("skipped", 2), ("watermarked", 1),
                          ("split", 0)):
        assert f'<tr data-status="{status}"><td>{status}</td><td>{count}</td></tr>' in page
    stats = _summary(known_report)["statistics"]
    assert stats["rows"] == 13 and stats["inputs"] == 13
    # 4+5+...+10 = 49 frames at 4 fps
    assert stats["ok_seconds"] == pytest.approx(49 / 4)
    assert "0:00:12 (12.2 s)" in page
    assert [(r["status"], r["reason"], r["count"]) for r in stats["failure_reasons"]] == [
        ("failed", "truncated image", 2), ("skipped", "too small", 2),
        ("failed", "unreadable", 1), ("watermarked", "watermark", 1)]
    assert stats["failure_reasons"][0]["example_source"] == "src/f0.mp4"
    assert stats["labels"]["most"] == {"a": 4, "b": 2, "c": 1}
    assert list(stats["labels"]["least"]) == ["c", "b", "a"]
    assert stats["motions"] == {"zoom-in": 4, "pan-left": 3}
    assert stats["clip_score"]["max"] == pytest.approx(0.35)
    assert stats["clip_score"]["min"] == pytest.approx(0.20)
    assert stats["watermark_score"]["count"] == 7  # the watermarked row is not a clip
    assert stats["watermark_action"] == {"kept": 7, "drop": 1}
    words = [len(c.split()) for _, _, c, *_ in OK]
    assert stats["caption_words"]["mean"] == pytest.approx(np.mean(words))
    duplicates = stats["duplicate_captions"]
    assert (duplicates["duplicated"], duplicates["groups"]) == (3, 1)
    assert sorted(duplicates["worst"][0]["keys"]) == ["a0", "a1", "a2"]
    assert '<p id="duplicates">3 of 7 captions are in 1 groups' in page
    assert "12.2 s" in page and "13 inputs in" in page  # throughput of the run
    # every failure is a row of the sortable table
    table = re.search(r'<table class="sortable" id="failures">.*?</table>', page).group(0)
    assert table.count("<tr>") == 1 + 6
    for key, _ in FAILED + SKIPPED:
        assert f"<td>src/{key}.mp4</td>" in table
    assert "no-ok" not in page and "Could not be read" not in page


def test_the_chosen_clips_are_extracted_unchanged(known, known_report):
    summary = _summary(known_report)
    assert len(summary["chosen"]) == 5
    assert {"a", "b", "c"} <= {k[0] for k in summary["chosen"]}  # every label is seen
    members = {}
    for tar_path in sorted((known / "shards").glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            for member in tar:
                if member.name.endswith(".mp4"):
                    members[member.name[:-4]] = tar.extractfile(member).read()
    media = known_report.parent / "media"
    page = _page(known_report)
    for i, key in enumerate(summary["chosen"]):
        video = media / f"{i:03d}_{key}.mp4"
        assert video.read_bytes() == members[key]  # H.264 already: copied, not re-encoded
        assert f'src="media/{video.name}"' in page
        strip = cv2.imread(str(media / f"{i:03d}_{key}.jpg"))
        assert strip.shape == (96, 3 * 128 + 2 * 3, 3)  # 64x48 frames shown 96 high
        frames = read_frames(members[key])
        # the strip's last third is the clip's last frame
        last = cv2.resize(frames[-1], (128, 96), interpolation=cv2.INTER_AREA)
        shown = cv2.cvtColor(strip[:, -128:], cv2.COLOR_BGR2RGB)
        assert np.abs(shown.astype(int) - last).mean() < 6
    plots = {p.name for p in (media / "plots").glob("*.png")}
    assert plots == {"caption_words.png", "duration.png", "resolution.png", "fps.png",
                     "labels.png", "motion.png", "watermark_score.png", "clip_score.png"}


def _manifest(rows) -> pd.DataFrame:
    return normalize_manifest(rows_to_table(rows).to_pandas())


def test_sample_choice_is_reproducible_and_stratified():
    rows = [make_row(f"big{i:03d}", "ok", label="big") for i in range(100)]
    rows += [make_row(f"tail{i}", "ok", label=f"tail{i}") for i in range(9)]
    rows += [make_row("bad", "failed", label="tail0", error="x: y")]
    frame = _manifest(rows)
    chosen = choose_samples(frame, 10, seed=3)
    assert sorted(chosen["label"]) == sorted(["big"] + [f"tail{i}" for i in range(9)])
    assert "bad" not in set(chosen["key"])
    shuffled = frame.sample(frac=1.0, random_state=7)
    assert list(choose_samples(shuffled, 10, seed=3)["key"]) == list(chosen["key"])
    picks = {tuple(choose_samples(frame, 12, seed=s)["key"]) for s in range(5)}
    assert len(picks) > 1  # the seed changes the choice
    three = choose_samples(frame, 30, seed=0)
    assert (three["label"] == "big").sum() == 21  # 9 tail clips, the rest from "big"
    assert len(choose_samples(frame, 500, seed=0)) == 109
    assert choose_samples(frame, 0).empty


def test_pan_zoom_output(tmp_path):
    from datakit.cli.samples import write_sample_images
    from datakit.run.pipeline import RunOptions
    from synthesize.pan_zoom import PanZoomConfig, pan_zoom

    write_sample_images(tmp_path / "images")
    config = PanZoomConfig(width=96, height=64, frames=6, fps=8, seed=0, preset="ultrafast")
    out = tmp_path / "out"
    stats = pan_zoom(tmp_path / "images", out, config,
                     RunOptions(workers=1, shard_size=4, progress=False))
    result = CliRunner().invoke(app, ["report", str(out), "--samples", "3", "--quiet"])
    assert result.exit_code == 0, result.output
    index = out / "report" / "index.html"
    assert result.stdout.strip() == str(index)
    summary = _summary(index)
    assert summary["statistics"]["status"] == stats["status"]
    assert len(summary["chosen"]) == 3 and summary["run"]["processed"] == stats["run"]["processed"]
    page = _page(index)
    assert "broken/truncated.jpg</td><td>failed</td><td>truncated image" in page
    assert sum(summary["statistics"]["motions"].values()) == stats["status"]["ok"]
    assert len(list((out / "report" / "media").glob("*.mp4"))) == 3


def _mpeg4(photo: str, count: int) -> bytes:
    """An MP4 in MPEG-4 Part 2, which browsers do not play."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for frame in _frames(photo, count):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def test_shards_without_a_manifest(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    with tarfile.open(folder / "a.tar", "w") as tar:
        write_tar_sample(tar, "clip0", {"mp4": _mp4("chelsea", 6), "txt": b"a cat"})
        info = {"label": "drink", "watermark_score": 0.75, "watermark_action": "flagged"}
        write_tar_sample(tar, "clip1", {"mp4": _mpeg4("coffee", 5), "txt": b"a coffee cup",
                                        "json": json.dumps(info).encode()})
        write_tar_sample(tar, "notes", {"txt": b"no video here"})
    (folder / "b.tar").write_bytes(b"this is not a tar file" * 100)
    index = write_dataset_report(folder, tmp_path / "rep", samples=10)
    summary = _summary(index)
    stats = summary["statistics"]
    assert stats["status"]["ok"] == 2 and stats["rows"] == 2
    assert stats["ok_seconds"] == pytest.approx(6 / 4 + 5 / 5)  # from the mp4 headers
    assert stats["resolutions"] == {"64x48": 2}
    assert stats["labels"]["most"] == {"drink": 1}
    assert stats["watermark_action"] == {"flagged": 1}
    assert stats["watermark_score"]["max"] == 0.75
    assert any("b.tar: unreadable shard" in n for n in summary["could_not_read"])
    page = _page(index)
    assert "Could not be read" in page and "no manifest: scanned 2 shards" in page
    # the MPEG-4 clip was re-encoded to H.264 so that it plays
    for i, key in enumerate(summary["chosen"]):
        info = probe(index.parent / "media" / f"{i:03d}_{key}.mp4")
        assert info.codec == "h264" and (info.width, info.height) == (64, 48)
        expected = 5 if key == "clip1" else 6
        assert info.frames == expected


def test_a_run_with_no_ok_samples_says_so(tmp_path):
    store = ManifestStore(tmp_path)
    store.commit([make_row(f"f{i}", "failed", source=f"in/{i}.jpg", error="truncated image: x")
                  for i in range(3)])
    store.write_manifest()
    index = write_dataset_report(tmp_path, samples=8)
    assert index == tmp_path / "report" / "index.html"
    page = _page(index)
    assert 'id="no-ok"' in page and "No ok samples" in page
    assert "No clips to show: the dataset has no ok samples." in page
    assert '<tr data-status="failed"><td>failed</td><td>3</td></tr>' in page
    assert "no readable stats.json: throughput unknown" in page


def test_bad_inputs_are_one_line_or_listed(tmp_path, known):
    runner = CliRunner()
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["report", str(empty)])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "not a datakit output" in result.output
    result = runner.invoke(app, ["report", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "no such folder" in result.output
    with pytest.raises(UserError, match="--samples must be at least 0"):
        write_dataset_report(known, tmp_path / "r", samples=-1)

    # a newer manifest with a column this version does not know: named, numbers unchanged
    newer = _known_dataset(tmp_path / "newer", extra_column=True)
    index = write_dataset_report(newer, samples=2)
    summary = _summary(index)
    assert summary["statistics"]["status"]["failed"] == 3
    assert summary["statistics"]["status"]["quarantined"] == 1  # a status it does not know
    assert '<tr data-status="quarantined"><td>quarantined</td><td>1</td></tr>' in _page(index)
    assert any("aesthetic_v9" in n for n in summary["could_not_read"])

    # a damaged shard: its clips are listed, the rest of the report is written
    damaged = tmp_path / "damaged"
    shutil.copytree(known, damaged)
    shard = sorted((damaged / "shards").glob("*.tar"))[0]
    shard.write_bytes(b"\0garbage" * 64)
    (damaged / "stats.json").write_text('["not", "an object"]')
    index = write_dataset_report(damaged, samples=7)
    notes = _summary(index)["could_not_read"]
    assert notes[0].endswith("stats.json: unreadable (not a JSON object); no run figures")
    assert len(notes) == 4 and all(shard.name in n for n in notes[1:])  # its three clips
    assert "no readable stats.json: throughput unknown" in _page(index)

    # an unreadable manifest: the shards are scanned instead
    broken = tmp_path / "broken"
    shutil.copytree(known, broken)
    (broken / "manifest.parquet").write_bytes(b"PAR1 not really")
    summary = _summary(write_dataset_report(broken, samples=1))
    assert summary["from_manifest"] is False
    assert summary["statistics"]["status"]["ok"] == 7
    assert any("not a readable parquet file" in n for n in summary["could_not_read"])


# ---- headless Chromium: the page loads without errors and a video plays ----


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class DevTools:
    """A minimal Chrome DevTools Protocol client over one page's websocket."""

    def __init__(self, url: str):
        import websocket

        self.socket = websocket.create_connection(url, timeout=30)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params):
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            self.events.append(message)

    def wait_for(self, method: str, timeout: float = 30.0) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if any(e.get("method") == method for e in self.events):
                return next(e for e in self.events if e.get("method") == method)
            self.events.append(json.loads(self.socket.recv()))
        raise TimeoutError(method)

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True,
                           returnByValue=True)
        return result["result"].get("value")

    def errors(self) -> list[str]:
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(params["exceptionDetails"].get("text", "exception"))
            elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                found.append(str(params.get("args")))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(params["entry"]["text"])
        return found


PLAY_FIRST_CLIP = """new Promise(resolve => {
  const img = document.querySelector('figure.clip img');
  img.click();
  const video = img.nextElementSibling, start = Date.now();
  (function poll() {
    if (video.readyState >= 2 && video.currentTime > 0 || Date.now() - start > 15000)
      resolve({ready: video.readyState, time: video.currentTime, hidden: video.hidden,
               error: video.error && video.error.code});
    else setTimeout(poll, 100);
  })();
})"""


@pytest.mark.skipif(_chromium() is None, reason="chromium is not installed (Debian: apt-get "
                    "install chromium); the page was not opened in a browser")
def test_the_page_loads_and_plays_in_headless_chromium(known_report, tmp_path):
    pytest.importorskip("websocket", reason="pip install websocket-client (the dev extra)")
    from urllib.request import urlopen

    process = subprocess.Popen(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--remote-debugging-port=0", "--remote-allow-origins=*",
         f"--user-data-dir={tmp_path / 'profile'}",
         "--window-size=1280,1600", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        for line in process.stderr:
            match = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            if match:
                port = match.group(1)
                break
        assert port, "chromium did not start its DevTools endpoint"
        pages = json.load(urlopen(f"http://127.0.0.1:{port}/json/list"))
        page = DevTools(next(p for p in pages if p["type"] == "page")["webSocketDebuggerUrl"])
        for domain in ("Page", "Runtime", "Log"):
            page.call(f"{domain}.enable")
        page.call("Page.navigate", url=known_report.resolve().as_uri())
        page.wait_for("Page.loadEventFired")
        assert page.evaluate("document.readyState") == "complete"
        assert page.evaluate("Array.from(document.images).every(i => i.naturalWidth > 0)")
        played = page.evaluate(PLAY_FIRST_CLIP)
        assert played["error"] is None and not played["hidden"], played
        assert played["ready"] >= 2 and played["time"] > 0, played
        # the failures table sorts by a clicked column, both ways
        column = "Array.from(document.querySelectorAll('#failures tbody tr')).map(r => " \
                 "r.cells[1].textContent)"
        page.evaluate("document.querySelector('#failures th:nth-child(2)').click()")
        up = page.evaluate(column)
        assert up == sorted(up) and up[0] == "failed" and up[-1] == "watermarked"
        page.evaluate("document.querySelector('#failures th:nth-child(2)').click()")
        assert page.evaluate(column) == sorted(up, reverse=True)
        shot = page.call("Page.captureScreenshot", format="png")
        import base64

        (known_report.parent / "screenshot.png").write_bytes(base64.b64decode(shot["data"]))
        assert page.errors() == []
    finally:
        process.terminate()
        process.wait(timeout=30)
