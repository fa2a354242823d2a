"""Benchmark `datakit generate` on a tiny random Wan pipeline (CPU).

1. Memory is bounded by the chunk: peak RSS for 1, 4 and 16 chunks of 33 frames at 256x256
   with `--continue reuse`, against one-pass generation of the same length (one chunk as long
   as the whole video). Each configuration runs in its own process (peak RSS is per process).
   Time per frame is printed beside it. Every configuration runs twice: as datakit runs it
   (`--bounded-heap`: one glibc arena, a fixed 1 MiB mmap threshold, the heap trimmed after
   each chunk) and with `--fast-heap` (glibc's defaults).
2. Search cost: wall time with `--search-k 5 --search-steps 3 --steps 50` against no search,
   measured side by side in one process on the same chunks.

3. The bound with the defaults (`--part bound`): 1 against 16 chunks with `--continue auto`
   (anchor on Wan) and the search on (k=5, 1-step previews), at 128x128 (the previews' decodes
   dominate on the CPU).

4. Refinement memory against video length (`--part refine`): `--refine` windows of 17 frames
   (overlap 8) over videos of 17 to 321 frames at 64x64 (chunks of 17 frames); the chunk loop
   runs in one process, the refinement in another, so its peak RSS is its own.

5. On a GPU (`--gpu --random-weights`, bench/generate_gpu.py): LTX-Video 2B, Wan 2.1 1.3B,
   CogVideoX-5B and Wan 2.1 14B built at full size from their published configs with random
   weights; peak GPU memory for 1, 4 and 16 chunks of 81 frames at 480x832 and seconds per
   step, against one-pass generation of the lengths one pass can hold, 2 steps per chunk,
   within `--budget` seconds. `--tiny` runs the same code tiny on the CPU.

Usage: python bench/generate.py [--quick] [--part memory|search|bound|refine]
       python bench/generate.py --gpu --random-weights [--models a,b] [--budget 540] [--tiny]
(--quick: fewer steps, for a smoke run; --part: run one of the parts.)
The figures go to docs/benchmarks.md under "## generate".
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZE = 256
CHUNK = 33
REFINE_WINDOW = 17


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(model: str, frames: int, chunk_frames: int, steps: int, search_k: int,
           search_steps: int, out: str, bounded_heap: bool = True, continue_mode: str = "reuse",
           overlap: int = 8, size: int = SIZE) -> dict:
    """Generate one video in this process; return its timings and peak RSS."""
    import torch

    from generate.chunked import ChunkedGenerator, ChunkSettings
    from generate.loading import load_backbone
    from generate.prompts import Story
    from generate.search import ContinuityScorer

    torch.set_num_threads(2)
    backbone = load_backbone(model)
    loaded_rss = _rss_mb()
    settings = ChunkSettings(frames=frames, chunk_frames=chunk_frames, overlap=overlap,
                             continue_mode=continue_mode, steps=steps, guidance=5.0,
                             height=size, width=size, fps=16, search_k=search_k,
                             search_steps=search_steps)
    generator = ChunkedGenerator(backbone, settings, scorer=ContinuityScorer(),
                                 bounded_heap=bounded_heap)
    started = time.perf_counter()
    info = generator(Story("bench", ("a boat on the sea",), None, "bench"), 0,
                     Path(out) / "bench.mp4", Path(out) / "state")
    seconds = time.perf_counter() - started
    timed = [c for c in info["chunk_details"] if "decode_seconds" in c]
    step = sum(c["denoise_seconds"] for c in timed) / len(timed) / steps
    decode = sum(c["decode_seconds"] for c in timed) / len(timed)
    return {"step_seconds": round(step, 4), "decode_seconds": round(decode, 3),
            "frames": frames, "chunks": info["chunks"], "chunk_frames": chunk_frames,
            "seconds": round(seconds, 2), "seconds_per_frame": round(seconds / frames, 4),
            "rss_after_load_mb": round(loaded_rss, 1), "peak_rss_mb": round(_rss_mb(), 1),
            "search_seconds": round(sum(c["search"].get("seconds", 0)
                                        for c in info["chunk_details"]), 2)}


HEAPS = {"--bounded-heap (default)": True, "--fast-heap": False}


def _in_process(model: str, **kwargs) -> dict:
    """Run `worker` in a fresh process (its own peak RSS)."""
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, __file__, "--worker", json.dumps({"model": model, **kwargs,
                                                                      "out": out})]
        result = subprocess.run(command, check=True, capture_output=True, text=True)
        return json.loads(result.stdout.strip().splitlines()[-1])


def bench_memory(model: str, steps: int, counts: tuple[int, ...]) -> list[dict]:
    rows = []
    for chunks in counts:
        frames = chunks * CHUNK
        one_pass = (frames - 1) // 4 * 4 + 1 + (4 if (frames - 1) % 4 else 0)
        for mode, chunk_frames in (("chunked", CHUNK), ("one pass", one_pass)):
            if mode == "one pass" and chunks == 1:
                continue
            for heap, bounded in HEAPS.items():
                row = _in_process(model, frames=frames, chunk_frames=chunk_frames, steps=steps,
                                  search_k=1, search_steps=1, bounded_heap=bounded)
                row.update(mode=mode, heap=heap)
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def bench_bound(model: str, steps: int, size: int) -> list[dict]:
    """The memory bound with the defaults: `--continue auto` (anchor on Wan, overlap 5, so each
    chunk after the first adds 28 frames) and the search on (k=5, 1-step previews)."""
    rows = []
    for chunks in (1, 16):
        frames = CHUNK + (chunks - 1) * (CHUNK - 5)
        row = _in_process(model, frames=frames, chunk_frames=CHUNK, steps=steps, search_k=5,
                          search_steps=1, continue_mode="auto", overlap=5, size=size)
        row.update(mode="chunked, defaults, search on")
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def bench_search(model: str, steps: int, search_steps: int, k: int, chunks: int) -> dict:
    """Search on vs off, side by side in this process (same model, same chunks)."""
    import torch

    torch.set_num_threads(2)
    results = {}
    for label, search_k in (("no search", 1), (f"k={k}, s={search_steps}", k)):
        with tempfile.TemporaryDirectory() as out:
            results[label] = worker(model, chunks * CHUNK, CHUNK, steps, search_k, search_steps,
                                    out)
            print(json.dumps({label: results[label]}), flush=True)
    base, searched = results["no search"], results[f"k={k}, s={search_steps}"]
    searched_chunks = chunks - 1  # chunk 0 has no conditioning and is not searched
    per_chunk_base = base["seconds"] / chunks
    decode_steps = base["decode_seconds"] / base["step_seconds"]
    return {
        "steps": steps, "k": k, "search_steps": search_steps, "chunks": chunks,
        "seconds_no_search": base["seconds"], "seconds_search": searched["seconds"],
        "overhead_total": round(searched["seconds"] / base["seconds"] - 1, 3),
        "overhead_per_searched_chunk": round(
            (searched["seconds"] - base["seconds"]) / searched_chunks / per_chunk_base, 3),
        "k_s_over_S": round(k * search_steps / steps, 3),
        # one decode costs r steps; a searched chunk costs k*s + k*r + S + r instead of S + r
        "decode_in_steps": round(decode_steps, 1),
        "predicted_overhead_per_searched_chunk": round(
            (k * search_steps + k * decode_steps) / (steps + decode_steps), 3),
    }


def refine_worker(model: str, frames: int, window: int, size: int, out: str) -> dict:
    """Generate `frames` frames (chunk loop), then, in this process, refine them with
    `--refine-chunk window --refine-overlap 8`; the refinement's own peak RSS is measured in a
    second process (`--worker-refine`), so the chunk loop's does not hide it."""
    import torch

    from generate.chunked import ChunkedGenerator, ChunkSettings
    from generate.loading import load_backbone, share_backbone
    from generate.prompts import Story
    from generate.refine import Refiner

    torch.set_num_threads(2)
    backbone = load_backbone(model)
    settings = ChunkSettings(frames=frames, chunk_frames=window, overlap=5, steps=2,
                             guidance=5.0, height=size, width=size, fps=16, search_k=1)
    generator = ChunkedGenerator(backbone, settings)
    story = Story("bench", ("a boat on the sea",), None, "bench")
    state = Path(out) / "state"
    if not (state / "done").exists():  # first process: the chunk loop only
        generator(story, 0, Path(out) / "loop.mp4", state)
        (state / "done").touch()
        return {}
    loaded = _rss_mb()
    started = time.perf_counter()
    refiner = Refiner(share_backbone(backbone, "v2v"), window, 8, strength=0.5, steps=4)
    info = refiner(generator, state, story, 0, Path(out) / "refined.mp4")
    return {"frames": frames, "windows": len(info["window_starts"]),
            "seconds": round(time.perf_counter() - started, 2),
            "rss_after_load_mb": round(loaded, 1), "peak_rss_mb": round(_rss_mb(), 1)}


def bench_refine(model: str, lengths: tuple[int, ...], size: int) -> list[dict]:
    """Refinement's peak RSS against video length, each length in its own processes."""
    rows = []
    for frames in lengths:
        with tempfile.TemporaryDirectory() as out:
            job = json.dumps({"model": model, "frames": frames, "window": REFINE_WINDOW,
                              "size": size, "out": out})
            for _ in range(2):  # the chunk loop, then the refinement alone
                result = subprocess.run([sys.executable, __file__, "--worker-refine", job],
                                        check=True, capture_output=True, text=True)
            row = json.loads(result.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few steps, for a smoke run")
    parser.add_argument("--part", choices=("memory", "search", "bound", "refine"),
                        help="run only this part (bound: 1 vs 16 chunks with the default "
                        "continuation and the search on; refine: refinement memory against "
                        "video length)")
    parser.add_argument("--gpu", action="store_true",
                        help="full-size architectures on CUDA (bench/generate_gpu.py); needs "
                        "--random-weights")
    parser.add_argument("--random-weights", action="store_true",
                        help="with --gpu: build each model from its published configs with "
                        "random weights (real weights cannot be downloaded here)")
    parser.add_argument("--tiny", action="store_true",
                        help="with --gpu: the same code on tiny configs on the CPU")
    parser.add_argument("--models", default="ltx-2b,wan-1.3b,cogvideox-5b,wan-14b",
                        help="with --gpu: comma-separated, run in this order")
    parser.add_argument("--budget", type=float, default=540,
                        help="with --gpu: seconds for the whole run (models share it)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-refine", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(**json.loads(args.worker))))
        return
    if args.worker_refine:
        print(json.dumps(refine_worker(**json.loads(args.worker_refine))))
        return
    if args.gpu:
        if not args.random_weights:
            parser.error("--gpu needs --random-weights (no real weights can be downloaded)")
        from bench.generate_gpu import MODELS, bench_gpu

        models = args.models.split(",")
        unknown = sorted(set(models) - set(MODELS))
        if unknown:
            parser.error(f"--models: unknown {', '.join(unknown)}; known: {', '.join(MODELS)}")
        rows = bench_gpu(models, (1, 4, 16), args.budget, args.tiny)
        print(json.dumps({"gpu": rows}, indent=2))
        return
    from generate.tiny import build_tiny_pipeline

    with tempfile.TemporaryDirectory() as folder:
        model = str(build_tiny_pipeline(Path(folder) / "wan", "wan"))
        memory_steps, search_total = (2, 10) if args.quick else (4, 50)
        counts = (1, 4) if args.quick else (1, 4, 16)
        memory = search = bound = refine = None
        if args.part == "refine":
            lengths = (17, 65, 161) if args.quick else (17, 65, 161, 321)
            print(f"# refine: tiny Wan, {SIZE // 4}x{SIZE // 4}, windows of {REFINE_WINDOW} "
                  "frames, overlap 8, strength 0.5 of 4 steps", flush=True)
            refine = bench_refine(model, lengths, SIZE // 4)
        if args.part == "bound":
            print(f"# bound: tiny Wan, {SIZE // 2}x{SIZE // 2}, defaults (anchor), k=5, s=1, "
                  "2 steps", flush=True)
            bound = bench_bound(model, 2, SIZE // 2)
        if args.part in (None, "memory"):
            print(f"# memory: tiny Wan, {SIZE}x{SIZE}, chunks of {CHUNK} frames, "
                  f"{memory_steps} steps, reuse", flush=True)
            memory = bench_memory(model, memory_steps, counts)
        if args.part in (None, "search"):
            print(f"# search: k=5, s=3, S={search_total}, 4 chunks", flush=True)
            search = bench_search(model, search_total, 3, 5, 4)
        print(json.dumps({"memory": memory, "search": search, "bound": bound, "refine": refine},
                         indent=2))


if __name__ == "__main__":
    main()
