"""What a rerun resumes: other SRCs, changed inputs, OUT inside SRC, damaged shards, and
what `shards verify` says of an unfinished run."""

import json
import os
import shutil

import pandas as pd
from PIL import Image
from skimage import data
from typer.testing import CliRunner

from datakit.cli import app
from datakit.run.shards import verify_shards

FAST = ["--size", "96x64", "--frames", "4", "--fps", "4", "--preset", "ultrafast", "--quiet",
        "--workers", "1", "--shard-size", "2"]


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _photos(root, names=("astronaut", "chelsea", "coffee", "rocket")):
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.fromarray(getattr(data, name)()).save(root / f"{name}.jpg", quality=85)
    return root


def test_another_src_is_refused_unless_appended(tmp_path):
    first, second = _photos(tmp_path / "a"), _photos(tmp_path / "b", ("camera",))
    out = tmp_path / "out"
    assert _invoke("pan-zoom", first, "--out", out, *FAST).exit_code == 0
    refused = _invoke("pan-zoom", second, "--out", out, *FAST)
    assert refused.exit_code == 2
    assert f"was made from {first.resolve()}, not {second.resolve()}" in refused.output
    assert "--append" in refused.output
    assert _invoke("pan-zoom", second, "--out", out, "--append", *FAST).exit_code == 0
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert sorted(manifest["key"]) == ["astronaut", "camera", "chelsea", "coffee", "rocket"]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["sources"] == [str(first.resolve()), str(second.resolve())]


def test_a_changed_input_is_reported_not_silently_skipped(tmp_path):
    src = _photos(tmp_path / "src")
    out = tmp_path / "out"
    assert _invoke("pan-zoom", src, "--out", out, *FAST).exit_code == 0
    recorded = pd.read_parquet(out / "manifest.parquet").set_index("key")["fingerprint"]
    size = (src / "coffee.jpg").stat().st_size
    assert recorded["coffee"].startswith(f"{size}:")  # size and mtime of the file
    Image.fromarray(data.camera()).save(src / "coffee.jpg")  # same name, other picture
    result = _invoke("pan-zoom", src, "--out", out, *FAST)
    assert result.exit_code == 0
    said = " ".join(result.output.split())
    assert "1 input(s) changed since they were written" in said and "coffee.jpg" in said
    stats = json.loads((out / "stats.json").read_text())
    assert stats["changed_inputs"]["count"] == 1


def test_out_inside_src_is_not_read_as_input(tmp_path):
    src = _photos(tmp_path / "src")
    out = src / "clips"
    for _ in range(2):
        result = _invoke("pan-zoom", src, "--out", out, *FAST)
        assert result.exit_code == 0, result.output
    assert len(pd.read_parquet(out / "manifest.parquet")) == 4


def test_a_damaged_shard_is_redone_by_a_rerun_and_by_repair(tmp_path):
    src = _photos(tmp_path / "src")
    out = tmp_path / "out"
    assert _invoke("pan-zoom", src, "--out", out, *FAST).exit_code == 0
    shard = out / "shards" / "00000.tar"
    keys = set(pd.read_parquet(out / "manifest.parquet").query("shard == '00000'")["key"])
    assert len(keys) == 2
    shard.write_bytes(shard.read_bytes()[:1500])  # cut short
    assert not verify_shards(out).ok
    rerun = _invoke("pan-zoom", src, "--out", out, *FAST)
    assert rerun.exit_code == 0
    assert "2 sample(s) of damaged shards were redone" in " ".join(rerun.output.split())
    manifest = pd.read_parquet(out / "manifest.parquet").set_index("key")
    assert (manifest["status"] == "ok").all() and len(manifest) == 4
    assert set(manifest.loc[sorted(keys), "shard"]) != {"00000"}  # written again, elsewhere
    report = verify_shards(out)
    assert report.ok and report.samples == 4
    # the same through `shards verify --repair`, then the rerun
    second = sorted((out / "shards").glob("*.tar"))[-1]
    second.unlink()
    repaired = _invoke("shards", "verify", out, "--repair")
    assert "marked lost" in repaired.output
    assert _invoke("pan-zoom", src, "--out", out, *FAST).exit_code == 0
    assert verify_shards(out).ok and verify_shards(out).samples == 4


def test_verify_reports_an_unfinished_run(tmp_path):
    src = _photos(tmp_path / "src")
    out = tmp_path / "out"
    assert _invoke("pan-zoom", src, "--out", out, *FAST).exit_code == 0
    stats = json.loads((out / "stats.json").read_text())
    (out / "stats.json").write_text(json.dumps({**stats, "interrupted": True,
                                                "stopped_by": "SIGTERM"}))
    result = _invoke("shards", "verify", out)
    assert result.exit_code == 1
    assert "incomplete: the last run was stopped by SIGTERM" in " ".join(result.output.split())
    os.remove(out / "stats.json")
    assert "incomplete: no stats.json" in " ".join(_invoke("shards", "verify", out).output.split())
    shutil.rmtree(out)
