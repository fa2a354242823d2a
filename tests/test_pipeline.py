"""The pan-zoom pipeline end to end: CLI, shards, manifest, stats, resume, kills, errors."""

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import webdataset as wds
from helpers import read_samples, wait_for
from PIL import Image
from skimage import data
from test_images import handmade_png
from typer.testing import CliRunner

from datakit.cli import app
from datakit.io.video import read_frames
from datakit.run.local_engine import run_local
from datakit.run.shards import Sample, ShardWriter, verify_shards
from manifests.schema import make_row
from manifests.store import ManifestStore

FAST = ["--size", "96x64", "--frames", "4", "--fps", "4", "--preset", "ultrafast", "--quiet"]
PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "stereo_motorcycle"]


def _photo(name):
    image = getattr(data, name)()
    return image[0] if isinstance(image, tuple) else image


@pytest.fixture
def images(tmp_path):
    """Six real photos in nested folders (two named photo.jpg), captions, and two bad files."""
    root = tmp_path / "images"
    for index, name in enumerate(PHOTOS):
        folder = root / ("a" if index % 2 else "b") / name[:3]
        folder.mkdir(parents=True)
        stem = "photo" if index < 2 else name
        Image.fromarray(_photo(name)).save(folder / f"{stem}.jpg", quality=90)
        (folder / f"{stem}.txt").write_text(f"a photo of {name}\n")
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.png").write_text("this is text, not a picture")
    return root


@pytest.fixture
def worse_images(images):
    """The same folder plus a truncated JPEG, a decompression bomb and a dangling symlink."""
    whole = (images / "b" / "ast" / "photo.jpg").read_bytes()
    (images / "truncated.jpg").write_bytes(whole[: len(whole) // 3])
    (images / "bomb.png").write_bytes(handmade_png(30000, 30000, 8, 0, b"\0" * 64))
    (images / "gone.jpg").symlink_to(images / "nowhere.jpg")
    return images


def _invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result


def test_pan_zoom_writes_shards_manifest_and_stats(images, tmp_path):
    out = tmp_path / "out"
    result = _invoke("pan-zoom", images, "--out", out, "--shard-size", "4", "--workers", "1",
                     *FAST)
    assert result.exit_code == 0, result.output
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert len(manifest) == 8  # one row per input, failures included
    assert manifest["key"].is_unique
    assert sorted(manifest["status"]) == ["failed"] * 2 + ["ok"] * 6
    failed = manifest[manifest["status"] == "failed"]
    assert all(failed["error"].str.len() > 0) and failed["shard"].isna().all()
    assert {"empty.jpg", "notes.png"} == {Path(s).name for s in failed["source"]}

    samples = read_samples(out)
    assert len(samples) == 6
    assert sorted(p.name for p in (out / "shards").iterdir()) == [
        "00000.tar", "00000_stats.json", "00001.tar", "00001_stats.json"]
    ok = manifest.set_index("key")
    for sample in samples:
        key = sample["__key__"]
        assert "." not in key
        frames = read_frames(sample["mp4"])
        assert frames.shape == (4, 64, 96, 3)
        info = json.loads(sample["json"])
        assert info["key"] == key and info["frames"] == 4 and info["width"] == 96
        assert sample["txt"].decode() == ok.loc[key, "caption"]
        assert sample["txt"].decode().startswith("a photo of ")
        assert ok.loc[key, "shard"] == Path(sample["__url__"]).stem
    # the two photo.jpg files in different folders got different keys
    assert len([k for k in ok.index if k.endswith("photo")]) == 2

    stats = json.loads((out / "stats.json").read_text())
    assert stats["status"] == {"ok": 6, "failed": 2, "skipped": 0, "watermarked": 0, "split": 0}
    assert stats["config"]["frames"] == 4 and stats["config"]["pipeline"] == "pan-zoom"
    assert sum(stats["errors"].values()) == 2
    shard_stats = json.loads((out / "shards" / "00000_stats.json").read_text())
    assert shard_stats["count"] == 4
    assert verify_shards(out).ok


def test_every_bad_file_becomes_a_failed_row_and_the_run_goes_on(worse_images, tmp_path):
    out = tmp_path / "out"
    result = _invoke("pan-zoom", worse_images, "--out", out, "--workers", "2", *FAST)
    assert result.exit_code == 0, result.output
    manifest = pd.read_parquet(out / "manifest.parquet").set_index("key")
    assert len(manifest) == 11 and (manifest["status"] == "ok").sum() == 6
    errors = manifest.loc[manifest["status"] == "failed", "error"].to_dict()
    assert errors["truncated"].startswith("truncated image")
    assert errors["bomb"].startswith("decompression bomb")
    assert errors["gone"].startswith("dangling symlink")
    assert errors["empty"].startswith("empty file")
    assert errors["notes"].startswith("not an image")
    stats = json.loads((out / "stats.json").read_text())
    assert stats["status"]["failed"] == 5 and len(stats["errors"]) == 5


def test_ctrl_c_stops_cleanly_and_a_rerun_finishes(images, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "datakit.cli", "pan-zoom", str(images), "--out", str(out),
               "--workers", "2", "--shard-size", "1", "--clips-per-image", "2",
               "--size", "256x160", "--frames", "24"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    parts = out / ".datakit" / "parts"
    wait_for(lambda: parts.is_dir() and len(list(parts.glob("*.parquet"))) >= 2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "stopped by SIGINT" in stderr, stderr
    assert "Traceback" not in stderr
    stopped = pd.read_parquet(out / "manifest.parquet")  # written on the way out
    assert 0 < len(stopped) <= 14  # the inputs already running were finished, no new one
    stopped_report = verify_shards(out)  # shards read back, but the run is not finished
    assert not any(s.problems for s in stopped_report.shards)
    assert stopped_report.problems == ["incomplete: the last run was stopped by SIGINT before "
                                       "it finished; rerun the same command to finish it"]
    assert subprocess.run(command, capture_output=True).returncode == 0
    assert (pd.read_parquet(out / "manifest.parquet")["status"] == "ok").sum() == 12
    assert verify_shards(out).ok


def test_rerun_resumes_and_output_is_reproducible(images, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    for out in (first, second):
        assert _invoke("pan-zoom", images, "--out", out, "--workers", "1", *FAST).exit_code == 0
    tars = sorted((first / "shards").glob("*.tar"))
    assert [t.read_bytes() for t in tars] == [
        (second / "shards" / t.name).read_bytes() for t in tars]
    before = {t.name: t.stat().st_mtime_ns for t in tars}
    result = _invoke("pan-zoom", images, "--out", first, "--workers", "1", *FAST)
    assert result.exit_code == 0
    stats = json.loads((first / "stats.json").read_text())
    assert stats["run"]["processed"] == 0 and stats["resumed_keys"] == 8
    assert {t.name: t.stat().st_mtime_ns for t in (first / "shards").glob("*.tar")} == before
    assert len(pd.read_parquet(first / "manifest.parquet")) == 8


def test_process_pool_gives_the_same_shards_as_one_process(images, tmp_path):
    one, pool = tmp_path / "one", tmp_path / "pool"
    assert _invoke("pan-zoom", images, "--out", one, "--workers", "1", *FAST).exit_code == 0
    assert _invoke("pan-zoom", images, "--out", pool, "--workers", "2", *FAST).exit_code == 0
    assert (one / "shards" / "00000.tar").read_bytes() == (
        pool / "shards" / "00000.tar").read_bytes()


def test_retry_failed_redoes_only_failures(images, tmp_path):
    out = tmp_path / "out"
    assert _invoke("pan-zoom", images, "--out", out, "--workers", "1", *FAST).exit_code == 0
    Image.fromarray(_photo("coffee")).save(images / "empty.jpg")  # the user fixed the file
    result = _invoke("pan-zoom", images, "--out", out, "--workers", "1", "--retry-failed", *FAST)
    assert result.exit_code == 0
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert len(manifest) == 8 and manifest["key"].is_unique
    assert manifest.set_index("key").loc["empty", "status"] == "ok"
    assert len(read_samples(out)) == 7
    assert verify_shards(out).ok


def test_clips_per_image_and_shard_bytes(images, tmp_path):
    out = tmp_path / "out"
    result = _invoke("pan-zoom", images, "--out", out, "--workers", "1", "--clips-per-image",
                     "3", "--shard-bytes", "20kB", "--motions", "zoom,pan", *FAST)
    assert result.exit_code == 0, result.output
    manifest = pd.read_parquet(out / "manifest.parquet")
    ok = manifest[manifest["status"] == "ok"]
    assert len(ok) == 18 and ok["input_key"].nunique() == 6
    assert all(k.rsplit("_c", 1)[1] in {"0", "1", "2"} for k in ok["key"])
    assert len(list((out / "shards").glob("*.tar"))) > 1
    for tar in (out / "shards").glob("*.tar"):
        with tarfile.open(tar) as archive:
            members = archive.getmembers()
        # a sample's files are adjacent, as WebDataset requires
        keys = [m.name.split(".", 1)[0] for m in members]
        assert keys == sorted(keys, key=keys.index) and len(members) % 3 == 0
        assert all(m.mtime == 0 for m in members)
    motions = {json.loads(s["json"])["camera"]["motion"] for s in read_samples(out)}
    assert motions <= {"zoom-in", "zoom-out", "pan-left", "pan-right", "pan-up", "pan-down"}


@pytest.mark.parametrize("committed_parts", [0, 3, 7])
def test_sigkill_mid_run_then_rerun_accounts_for_every_input_once(images, tmp_path,
                                                                  committed_parts):
    """Kill the whole process group with SIGKILL once the run has committed a given number of
    shards (0: as soon as it starts writing), rerun, and check nothing is lost or doubled."""
    out = tmp_path / "out"
    command = [sys.executable, "-m", "datakit.cli", "pan-zoom", str(images), "--out", str(out),
               "--workers", "2", "--shard-size", "1", "--clips-per-image", "2",
               "--size", "256x160", "--frames", "24", "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    parts = out / ".datakit" / "parts"
    wait_for(lambda: parts.is_dir() and len(list(parts.glob("*.parquet"))) >= committed_parts)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (out / "manifest.parquet").exists()  # killed before the end
    rerun = subprocess.run(command, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert manifest["key"].is_unique
    assert manifest["input_key"].nunique() == 8
    assert (manifest["status"] == "ok").sum() == 12
    keys = [s["__key__"] for s in read_samples(out)]
    assert len(keys) == len(set(keys)) == 12
    report = verify_shards(out)
    assert report.ok, (report.problems, [s.problems for s in report.shards])
    assert not list(out.rglob("*.partial"))


@pytest.mark.parametrize("args, message", [
    (["/no/such/folder", "--out", "{tmp}/o"], "no such file or folder"),
    (["{images}", "--out", "{tmp}/o", "--size", "512by320"], "--size: expected WIDTHxHEIGHT"),
    (["{images}", "--out", "{tmp}/o", "--size", "511x320"], "must be even"),
    (["{empty}", "--out", "{tmp}/o"], "no images found"),
    (["{images}", "--out", "{images}/b/ast/photo.jpg"], "is not a folder"),
    (["{images}", "--out", "{tmp}/o", "--motions", "spin"], "unknown motion"),
    (["{images}", "--out", "{tmp}/o", "--zoom-range", "0.5", "1"], "zoom_range"),
    (["{images}", "--out", "{tmp}/o", "--shard-bytes", "lots"], "--shard-bytes"),
    (["{images}", "--out", "{tmp}/o", "--shard-bytes", "0.5"], "--shard-bytes"),
    (["{images}", "--out", "{tmp}/o", "--preset", "ludicrous"], "preset must be one of"),
])
def test_bad_input_is_one_line_and_exit_2(images, tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    args = [a.format(tmp=tmp_path, images=images, empty=tmp_path / "empty") for a in args]
    result = subprocess.run([sys.executable, "-m", "datakit.cli", "pan-zoom", *args],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_rerun_with_other_settings_is_refused_unless_overwrite(images, tmp_path):
    out = tmp_path / "out"
    assert _invoke("pan-zoom", images, "--out", out, "--workers", "1", *FAST).exit_code == 0
    changed = [a if a != "4" else "6" for a in FAST]
    result = _invoke("pan-zoom", images, "--out", out, "--workers", "1", *changed)
    assert result.exit_code == 2 and "other settings" in result.output
    result = _invoke("pan-zoom", images, "--out", out, "--workers", "1", "--overwrite", *changed)
    assert result.exit_code == 0
    assert read_frames(read_samples(out)[0]["mp4"]).shape[0] == 6


def test_verify_catches_a_damaged_shard_and_a_missing_one(images, tmp_path):
    out = tmp_path / "out"
    assert _invoke("pan-zoom", images, "--out", out, "--workers", "1", "--shard-size", "3",
                   *FAST).exit_code == 0
    assert _invoke("shards", "verify", out).exit_code == 0
    first = out / "shards" / "00000.tar"
    first.write_bytes(first.read_bytes()[:5000])
    result = _invoke("shards", "verify", out)
    assert result.exit_code == 1 and "verification failed" in result.output
    (out / "shards" / "00001.tar").unlink()
    (out / "shards" / "00000_stats.json").write_text("{not json")
    report = verify_shards(out)
    assert any("have no sample" in p for p in report.problems)
    assert "_stats.json is not valid json" in report.shards[0].problems


def test_verify_names_a_sample_without_its_caption_or_its_video(images, tmp_path):
    out = tmp_path / "out"
    assert _invoke("pan-zoom", images, "--out", out, "--workers", "1", *FAST).exit_code == 0
    shard = out / "shards" / "00000.tar"
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    first, second = sorted({m.name.split(".")[0] for m, _ in members})[:2]
    with tarfile.open(shard, "w") as tar:
        for member, data in members:
            if member.name not in (f"{first}.txt", f"{second}.mp4"):
                tar.addfile(member, io.BytesIO(data))
    problems = verify_shards(out).shards[0].problems
    assert f"{first}: no txt" in problems and f"{second}: no mp4" in problems


def test_writer_recovery_removes_orphans_and_partials(tmp_path):
    store = ManifestStore(tmp_path)
    with ShardWriter(tmp_path, store, max_count=2) as writer:
        for key in ("a", "b", "c"):
            writer.add(Sample(key, {"txt": key.encode()}, make_row(key, "ok")))
    shards = tmp_path / "shards"
    assert sorted(p.name for p in shards.glob("*.tar")) == ["00000.tar", "00001.tar"]
    # a killed run left a shard nobody committed, and a half-written one
    (shards / "00002.tar").write_bytes(b"orphan")
    (shards / "00003.tar.partial").write_bytes(b"half")
    writer = ShardWriter(tmp_path, ManifestStore(tmp_path), max_count=2)
    assert sorted(p.name for p in shards.iterdir() if p.suffix != ".json") == [
        "00000.tar", "00001.tar"]
    writer.add(Sample("d", {"txt": b"d"}, make_row("d", "ok")))
    writer.close()
    assert (shards / "00002.tar").exists()
    with pytest.raises(ValueError, match="invalid sample key"):
        ShardWriter(tmp_path, ManifestStore(tmp_path)).add(
            Sample("a.b", {"txt": b""}, make_row("a.b", "ok")))


def _explode(record):
    if record.key == "bad":
        raise RuntimeError("boom")
    return [make_row(record.key, "skipped", error="fine")]


class _Record:
    def __init__(self, key):
        self.key, self.source = key, f"/src/{key}"


@pytest.mark.parametrize("workers", [1, 2])
def test_engine_turns_a_crashing_stage_into_a_failed_row(workers):
    seen = []
    report = run_local([_Record(k) for k in ("a", "bad", "c")], _explode,
                       lambda record, results: seen.append((record.key, results)),
                       workers=workers, progress=False)
    assert [k for k, _ in seen] == ["a", "bad", "c"]  # input order kept
    bad = seen[1][1][0]
    assert bad["status"] == "failed" and "internal error: RuntimeError: boom" in bad["error"]
    assert report.records == 3 and report.status == {"skipped": 2, "failed": 1}


def test_demo_runs_offline_and_verifies(tmp_path):
    result = _invoke("demo", "--out", tmp_path / "demo", "--workers", "1")
    assert result.exit_code == 0, result.output
    manifest = pd.read_parquet(tmp_path / "demo" / "pan-zoom" / "manifest.parquet")
    assert (manifest["status"] == "failed").sum() == 1  # the truncated JPEG, on purpose
    assert (manifest["status"] == "ok").sum() >= 16
    assert np.all(manifest.loc[manifest["status"] == "ok", "frames"] == 16)
    for captions in ("caption", "caption-blip2"):  # the label captioner and a tiny BLIP-2
        rows = pd.read_parquet(tmp_path / "demo" / captions / "manifest.parquet")
        assert (rows["status"] == "ok").sum() == 6 and (rows["status"] == "failed").sum() == 2
        assert verify_shards(tmp_path / "demo" / captions).ok
    labelled = pd.read_parquet(tmp_path / "demo" / "caption" / "manifest.parquet")
    ok = labelled[labelled["status"] == "ok"]
    assert all(label.replace("_", " ") in caption.lower()
               for label, caption in zip(ok["label"], ok["caption"], strict=True))
    generated = tmp_path / "demo" / "generate"
    assert sorted(p.name for p in generated.glob("*.mp4")) == ["boat.mp4", "cat-story.mp4"]
    assert (pd.read_parquet(generated / "manifest.parquet")["status"] == "ok").all()
    assert (generated / "report" / "index.html").is_file()
    for dataset in ("pan-zoom", "caption"):
        page = tmp_path / "demo" / dataset / "report" / "index.html"
        assert page.is_file() and "<video" in page.read_text()
    said = " ".join(result.output.split())  # rich wraps lines at the terminal width
    assert "5. generate" in said and "the videos are noise" in said and "6. report" in said


def test_laion_shards_and_csv_lists_as_input(tmp_path):
    """img2dataset output (jpg + txt + json per key in .tar shards) and a CSV list both work,
    captions and metadata carried through to the samples."""
    laion = tmp_path / "laion"
    laion.mkdir()
    for shard, names in enumerate([PHOTOS[:2], PHOTOS[2:4]]):
        with wds.TarWriter(str(laion / f"{shard:05d}.tar")) as sink:
            for index, name in enumerate(names):
                buffer = io.BytesIO()
                Image.fromarray(_photo(name)).save(buffer, format="JPEG", quality=90)
                sink.write({"__key__": f"{shard:05d}{index:04d}", "jpg": buffer.getvalue(),
                            "txt": f"laion caption {name}",
                            "json": json.dumps({"url": f"http://x/{name}.jpg"}).encode()})
    out = tmp_path / "out"
    assert _invoke("pan-zoom", laion, "--out", out, "--workers", "1", *FAST).exit_code == 0
    samples = read_samples(out)
    assert len(samples) == 4
    info = json.loads(samples[0]["json"])
    assert info["source"].endswith("00000.tar::000000000.jpg")
    assert info["text"] == "laion caption astronaut"
    assert info["source_meta"]["url"] == "http://x/astronaut.jpg"

    listing = tmp_path / "list.csv"
    pd.DataFrame({"path": [str(laion.parent / "images" / "x.png"), "rel.png"],
                  "text": ["absolute", "relative"]}).to_csv(listing, index=False)
    (laion.parent / "images").mkdir()
    Image.fromarray(_photo("coffee")).save(laion.parent / "images" / "x.png")
    Image.fromarray(_photo("rocket")).save(tmp_path / "rel.png")
    listed = tmp_path / "listed"
    assert _invoke("pan-zoom", listing, "--out", listed, "--workers", "1", *FAST).exit_code == 0
    captions = sorted(s["txt"].decode().split(".")[0] for s in read_samples(listed))
    assert captions == ["absolute", "relative"]
