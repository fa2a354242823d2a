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

4. On a GPU (`--gpu`): a Wan 2.1 T2V 1.3B pipeline with random weights built in memory from
   the real checkpoint's configs (`WAN_13B`: the 30-layer 1.3B transformer, UMT5-XXL, the Wan
   VAE), bfloat16 (VAE float32), 480x832, chunks of 81 frames: seconds per frame and peak GPU
   memory (`torch.cuda.max_memory_allocated`) for 1 and 8 chunks, with and without the search
   (k=5, s=3, the continuity scorer) and refinement, beside the pre-run estimate
   (`generate/memory.py`). Random weights cost the same time and memory as trained ones.
   `--smoke` runs the same code on a tiny build on the CPU, so it is known to work.

Usage: python bench/generate.py [--quick] [--part memory|search|bound]
       python bench/generate.py --gpu [--steps 50] [--offload none|model|...] [--smoke]
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


# Wan-AI/Wan2.1-T2V-1.3B-Diffusers: transformer/config.json, text_encoder/config.json (UMT5-XXL
# encoder), vae/config.json (AutoencoderKLWan's defaults), scheduler (UniPC, flow_shift 3.0)
WAN_13B = {
    "transformer": dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128,
                        in_channels=16, out_channels=16, text_dim=4096, freq_dim=256,
                        ffn_dim=8960, num_layers=30, cross_attn_norm=True,
                        qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024),
    "text_encoder": dict(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24,
                         num_heads=64, relative_attention_num_buckets=32,
                         relative_attention_max_distance=128, feed_forward_proj="gated-gelu",
                         dropout_rate=0.0),
    "vae": dict(base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                temperal_downsample=[False, True, True]),
    "size": (480, 832), "chunk": 81, "overlap": 5,
}
SMOKE = {
    "transformer": dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12,
                        in_channels=16, out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32,
                        num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                        rope_max_seq_len=1024),
    "text_encoder": dict(vocab_size=200, d_model=32, d_kv=8, d_ff=37, num_layers=2,
                         num_heads=4, relative_attention_num_buckets=8, dropout_rate=0.0),
    "vae": dict(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                temperal_downsample=[False, True, True]),
    "size": (32, 32), "chunk": 9, "overlap": 5,
}


def random_wan(config: dict, device: str, offload: str):
    """A `Backbone` over a WanPipeline with random weights of `config`'s sizes, built on
    `device` (no checkpoint needed, nothing saved to disk)."""
    import torch
    from diffusers import (
        AutoencoderKLWan,
        UniPCMultistepScheduler,
        WanPipeline,
        WanTransformer3DModel,
    )
    from transformers import UMT5Config, UMT5EncoderModel

    from datakit.models.tiny import build_tokenizer
    from generate.backbone import Backbone
    from generate.families import FAMILIES
    from generate.loading import apply_offload

    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    build_on = "cpu" if offload != "none" else device
    with torch.device(build_on):
        transformer = WanTransformer3DModel(**config["transformer"]).to(dtype).eval()
        text_encoder = UMT5EncoderModel(UMT5Config(**config["text_encoder"])).to(dtype).eval()
        vae = AutoencoderKLWan(**config["vae"]).eval()  # float32, as load_backbone keeps it
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        flow_shift=3.0)
    pipe = WanPipeline(tokenizer=build_tokenizer(512), text_encoder=text_encoder,
                       transformer=transformer, vae=vae, scheduler=scheduler)
    apply_offload(pipe, offload, device)
    backbone = Backbone(pipe, FAMILIES["wan"], "t2v", "random Wan 2.1 1.3B")
    backbone.offload = offload
    return backbone


def bench_gpu(steps: int, offload: str, smoke: bool) -> list[dict]:
    """Seconds per frame and peak GPU memory, 1 and 8 chunks, search and refine on/off."""
    import torch

    from generate.chunked import ChunkedGenerator, ChunkSettings
    from generate.loading import share_backbone
    from generate.memory import estimate_peak
    from generate.prompts import Story
    from generate.refine import Refiner
    from generate.search import ContinuityScorer

    config = SMOKE if smoke else WAN_13B
    device = "cpu" if smoke else "cuda"
    if not smoke and not torch.cuda.is_available():
        raise SystemExit("--gpu needs a CUDA device (--smoke runs a tiny build on the CPU)")
    backbone = random_wan(config, device, offload)
    v2v = share_backbone(backbone, "v2v")
    height, width = config["size"]
    chunk, overlap = config["chunk"], config["overlap"]
    rows = []
    for chunks in (1, 8):
        frames = chunk + (chunks - 1) * (chunk - overlap)
        for search_k in (1, 5):
            if chunks == 1 and search_k > 1:
                continue  # chunk 0 is never searched
            for refine in (False, True):
                settings = ChunkSettings(frames=frames, chunk_frames=chunk, overlap=overlap,
                                         continue_mode="anchor", steps=steps, guidance=5.0,
                                         height=height, width=width, fps=16,
                                         search_k=search_k, search_steps=min(3, steps))
                generator = ChunkedGenerator(backbone, settings, scorer=ContinuityScorer())
                refiner = Refiner(v2v, chunk_frames=chunk, overlap=4, steps=steps,
                                  strength=0.4, guidance=5.0) if refine else None
                estimate = estimate_peak([backbone, v2v], offload, chunk, height, width, 5.0)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                with tempfile.TemporaryDirectory() as out:
                    story = Story("bench", ("a boat on the sea",), None, "bench")
                    started = time.perf_counter()
                    generator(story, 0, Path(out) / "b.mp4", Path(out) / "state")
                    if refiner is not None:
                        refiner(generator, Path(out) / "state", story, 0, Path(out) / "b.mp4")
                    seconds = time.perf_counter() - started
                peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
                row = {"chunks": chunks, "frames": frames, "search_k": search_k,
                       "refine": refine, "steps": steps, "offload": offload,
                       "seconds": round(seconds, 1),
                       "seconds_per_frame": round(seconds / frames, 3),
                       "peak_gpu_gib": round(peak / 2**30, 2) if peak else None,
                       "estimated_peak_gib": round(estimate["peak_bytes"] / 2**30, 2),
                       "estimated_weights_gib": round(estimate["weights_bytes"] / 2**30, 2)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few steps, for a smoke run")
    parser.add_argument("--part", choices=("memory", "search", "bound"),
                        help="run only this part (bound: 1 vs 16 chunks with the default "
                        "continuation and the search on)")
    parser.add_argument("--gpu", action="store_true",
                        help="random full-size Wan 2.1 1.3B at 480x832x81 on CUDA (part 4)")
    parser.add_argument("--smoke", action="store_true",
                        help="with --gpu: the same code on a tiny build on the CPU")
    parser.add_argument("--steps", type=int, default=50, help="with --gpu: denoising steps")
    parser.add_argument("--offload", default="none",
                        choices=("none", "model", "sequential", "group"),
                        help="with --gpu: how the weights are placed")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(**json.loads(args.worker))))
        return
    if args.gpu:
        rows = bench_gpu(4 if args.smoke else args.steps, args.offload, args.smoke)
        print(json.dumps({"gpu": rows}, indent=2))
        return
    from generate.tiny import build_tiny_pipeline

    with tempfile.TemporaryDirectory() as folder:
        model = str(build_tiny_pipeline(Path(folder) / "wan", "wan"))
        memory_steps, search_total = (2, 10) if args.quick else (4, 50)
        counts = (1, 4) if args.quick else (1, 4, 16)
        memory = search = bound = None
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
        print(json.dumps({"memory": memory, "search": search, "bound": bound}, indent=2))


if __name__ == "__main__":
    main()
