"""Mechanisms of the core that a mutation audit could break unnoticed: what a rerun counts as
done, and how the dataset statistics count inputs."""

import json

import pandas as pd
from helpers import write_photos
from typer.testing import CliRunner

from datakit.cli import app
from manifests.report import dataset_statistics, normalize_manifest
from manifests.schema import make_row

FAST = ["--size", "96x64", "--frames", "4", "--fps", "4", "--preset", "ultrafast", "--quiet",
        "--workers", "1"]


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_a_rerun_of_several_clips_per_image_redoes_nothing(tmp_path):
    photos, out = tmp_path / "photos", tmp_path / "out"
    write_photos(photos, 3)
    command = ["pan-zoom", photos, "--out", out, "--clips-per-image", "2", *FAST]
    assert _invoke(*command).exit_code == 0
    first = json.loads((out / "stats.json").read_text())
    assert first["this_run"] == {"ok": 6}
    # The input keys (p00..) are never sample keys; the record is done because all of its
    # clips (p00_c0, p00_c1) are.
    assert _invoke(*command).exit_code == 0
    rerun = json.loads((out / "stats.json").read_text())
    assert rerun["this_run"] == {} and rerun["resumed_keys"] == 6


def test_inputs_count_distinct_inputs_not_rows():
    rows = [make_row("long", "split", source="long.mp4")]
    rows += [make_row(f"long__{i:04d}", "ok", source="long.mp4", input_key="long",
                      caption=f"clip {i}") for i in range(3)]
    rows += [make_row("short", "ok", source="short.mp4", caption="a short clip"),
             make_row("bad", "failed", source="bad.mp4", error="not a video: x")]
    stats = dataset_statistics(normalize_manifest(pd.DataFrame(rows)))
    assert stats["rows"] == 6 and stats["inputs"] == 3
