"""Helpers several test modules share: waiting for a run to get somewhere, reading its
shards back, and checking that an output accounts for every input exactly once."""

from __future__ import annotations

import re
import tarfile
import time
from pathlib import Path

import pandas as pd
import webdataset as wds

from datakit.io.atomic import TEMP_SUFFIX
from datakit.run.shards import verify_shards


def write_photos(root: Path, count: int) -> set[str]:
    """`count` JPEGs of scikit-image's sample photos in `root` (made), named p00, p01, ...;
    returns their keys."""
    from PIL import Image
    from skimage import data

    root.mkdir(parents=True, exist_ok=True)
    sources = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    for i in range(count):
        Image.fromarray(sources[i % 4]).save(root / f"p{i:02d}.jpg", quality=85)
    return {f"p{i:02d}" for i in range(count)}


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "the run never got there"
        time.sleep(0.005)


def live_group(pgid: int) -> list[int]:
    """Processes of the group that are still running (zombies waiting for init don't count)."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, group = fields[0], int(fields[2])
        if group == pgid and state not in ("Z", "X"):
            alive.append(int(entry.name))
    return alive


def read_samples(out: Path) -> list[dict]:
    """Every sample of OUT's shards, read with webdataset as a trainer would."""
    samples = []
    for tar in sorted((out / "shards").glob("*.tar")):
        samples.extend(wds.WebDataset(str(tar), shardshuffle=False, empty_check=False))
    return samples


def summary_counts(stderr: str) -> dict[str, int]:
    """The status table the CLI prints at the end of a run (`│ ok │ 9 │`), as a dict."""
    rows = re.findall(r"^\W*(ok|failed|skipped|watermarked|split)\W+(\d+)\W*$", stderr, re.M)
    return {status: int(count) for status, count in rows}


def assert_accounted_for(out: Path, input_keys: set[str]) -> pd.DataFrame:
    """One manifest row per input, every ok key in exactly one shard, every shard reads back
    (tarfile and `verify_shards`, which decodes every clip), no temporary file left in OUT.
    Returns the manifest."""
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert manifest["key"].is_unique
    assert set(manifest["input_key"]) == input_keys
    ok = manifest[manifest["status"] == "ok"]
    holders: dict[str, list[str]] = {}
    for path in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(path) as tar:  # reads every member to the end
            for member in tar:
                assert member.isfile() and len(tar.extractfile(member).read()) == member.size
                if member.name.endswith(".mp4"):
                    holders.setdefault(member.name.split(".", 1)[0], []).append(path.stem)
    assert {key: [shard] for key, shard in zip(ok["key"], ok["shard"], strict=True)} == holders
    report = verify_shards(out)
    assert report.ok, (report.problems, [s.problems for s in report.shards if s.problems])
    leftovers = [p for p in out.rglob("*") if p.name.endswith(TEMP_SUFFIX)
                 or p.name == ".write-test"]
    assert not leftovers, leftovers
    return manifest
