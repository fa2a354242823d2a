"""Where `datakit pan-zoom`'s CPU time goes, per process (main, fork server, workers).

Runs the whole command under py-spy (`pip install py-spy`), sampling every process of the run
(`--subprocesses`, on-CPU samples only), once with `--watermarks keep` and once with the
default (`flag`), on the same photos as bench/pan_zoom.py, and sorts every sample into a step
by the innermost line of its stack that names one (the line's source text, or its file):

    python bench/pan_zoom_profile.py                 # 120 photos, 2 workers
    python bench/pan_zoom_profile.py --json /tmp/pan_zoom_profile.json

Per step it prints CPU seconds, the share of that process's samples and ms per clip. py-spy
takes a runnable thread waiting for a core for a busy one, so on a loaded machine the seconds
grow with the load; the shares hold. Some waits (a sleeping watchdog thread, a blocked
`select`) are sampled as busy too: they are shown apart and left out of the shares.
"""

from __future__ import annotations

import argparse
import collections
import json
import linecache
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from pan_zoom import datakit_command, make_photos  # noqa: E402

# (step, what the innermost matching line's source text or file holds), first match wins.
WAITING = "waiting (py-spy counts some waits)"
STEPS_BY_LINE = (
    (WAITING, "time.sleep("),
    (WAITING, ".wait("),
    (WAITING, "select("),
    (WAITING, "_poll("),
    (WAITING, ".acquire("),
    ("x264 (stream.encode)", "._stream.encode("),
    ("frame handed to PyAV (copy)", "from_ndarray"),
    ("mp4 container (open, mux, close)", "mux("),
    ("mp4 container (open, mux, close)", "av.open("),
    ("mp4 container (open, mux, close)", "add_stream"),
    ("mp4 container (open, mux, close)", "_container.close"),
    ("warps (per frame)", "warpAffine"),
    ("warps (per frame)", "addWeighted"),
    ("pre-shrink, luma upsampling (resize)", "cv2.resize("),
    ("colour conversion once per clip", "cv2.transform"),
    ("colour conversion once per clip", "GaussianBlur"),
    ("pickling, pool transport", "pickle"),
    ("pickling, pool transport", "_send_bytes"),
    ("pickling, pool transport", "_recv_bytes"),
)
STEPS_BY_FILE = (
    ("image decode (PIL) to RGB array", "datakit/io/images.py"),
    ("image decode (PIL) to RGB array", "datakit/images.py"),  # the layout before issue 21
    ("image decode (PIL) to RGB array", "PIL/"),
    ("pickling, pool transport", "multiprocessing/reduction.py"),
    ("pickling, pool transport", "multiprocessing/connection.py"),
    ("pickling, pool transport", "multiprocessing/queues.py"),
    ("pickling, pool transport", "concurrent/futures/process.py"),
    ("shard writer (tar)", "datakit/run/shards.py"),
    ("shard writer (tar)", "datakit/shards.py"),
    ("shard writer (tar)", "tarfile.py"),
    ("manifest (parquet, stats)", "manifests/"),
    ("manifest (parquet, stats)", "pyarrow/"),
    ("manifest (parquet, stats)", "pandas/"),
    ("progress display (rich)", "rich/"),
    ("imports, start-up", "<frozen importlib"),
    ("engine (pool, fork server)", "datakit/run/"),
    ("engine (pool, fork server)", "datakit/engine/"),
    ("engine (pool, fork server)", "datakit/pipeline.py"),
    ("engine (pool, fork server)", "multiprocessing/"),
    ("engine (pool, fork server)", "concurrent/futures/"),
    ("camera path, caption, json, row", "synthesize/pan_zoom.py"),
    ("frame rendering (python)", "synthesize/render.py"),
    ("command line", "datakit/cli"),
    ("command line", "typer/"),
    ("command line", "click/"),
)
FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*):(?P<line>\d+)\)$")
PROCESS = re.compile(r'process (\d+):"((?:[^"\\]|\\.)*)";?')


def step_of(frames: list[str]) -> str:
    """The step of one stack (root first), from its innermost line that names one."""
    parsed = [m for m in (FRAME.match(f) for f in frames) if m]
    for match in reversed(parsed):
        if "synthesize/watermark" in match["file"]:
            return "watermark check"
        text = linecache.getline(match["file"], int(match["line"]))
        for step, needle in STEPS_BY_LINE:
            if needle in text:
                return step
        for step, needle in STEPS_BY_FILE:
            if needle in match["file"]:
                return step
    return "other (native, interpreter)"


def read_profile(path: Path) -> dict[str, collections.Counter]:
    """py-spy's raw output -> {role: Counter(step -> samples)}; the role is the depth in the
    process tree: the command, its fork server (or resource tracker), the workers."""
    roles: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        chain = []
        while match := PROCESS.match(stack):  # a command line may hold ';' itself
            chain.append(match[2])
            stack = stack[match.end():]
        depth = len(chain)
        role = {1: "main process", 2: "fork server"}.get(depth, "workers")
        if depth == 2 and "resource_tracker" in chain[-1]:
            role = "resource tracker"
        roles[role][step_of(stack.split(";") if stack else [])] += int(count)
    return roles


def profile_run(src: Path, out: Path, mode: str, args, record: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    command = ["py-spy", "record", "--subprocesses", "--format", "raw", "--rate",
               str(args.rate), "--output", str(record), "--", *datakit_command(), "pan-zoom",
               str(src), "--out", str(out), "--seed", "0", "--workers", str(args.workers),
               "--watermarks", mode, "--quiet"]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    clips = json.loads((out / "stats.json").read_text())["this_run"].get("ok", 0)
    roles = read_profile(record)
    table = {}
    for role, steps in sorted(roles.items(), key=lambda r: -sum(r[1].values())):
        total = sum(n for step, n in steps.items() if step != WAITING)
        table[role] = {
            "cpu_seconds": total / args.rate,
            "steps": {step: {"cpu_seconds": n / args.rate,
                             "share": n / total if step != WAITING else 0.0,
                             "ms_per_clip": 1000 * n / args.rate / max(1, clips)}
                      for step, n in steps.most_common()}}
    return {"clips": clips, "processes": table}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=120)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rate", type=int, default=100, help="samples per second")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--workdir", type=Path, help="keep photos, outputs and py-spy's files")
    args = parser.parse_args()
    if shutil.which("py-spy") is None:
        sys.exit("py-spy is not installed: pip install py-spy")
    figures = {}
    with tempfile.TemporaryDirectory(prefix="bench_pan_zoom_profile_") as temp:
        work = args.workdir or Path(temp)
        make_photos(work / "photos", args.photos, 1200)
        for mode in ("keep", "flag"):
            figures[mode] = profile_run(work / "photos", work / mode, mode, args,
                                        work / f"{mode}.txt")
            print(f"\n--watermarks {mode}: {figures[mode]['clips']} clips, "
                  f"{args.workers} workers (CPU seconds sampled, share, ms per clip)")
            for role, table in figures[mode]["processes"].items():
                print(f"  {role}: {table['cpu_seconds']:.2f} s")
                for step, row in table["steps"].items():
                    if row["share"] >= 0.002 or step == WAITING:
                        print(f"    {step:<40}{row['cpu_seconds']:8.2f} s{row['share']:7.1%}"
                              f"{row['ms_per_clip']:8.1f} ms")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
