"""What per-row seeded sampling costs next to transformers' own sampler.

    python bench/caption_sampling.py [--rows 32] [--vocab 32000] [--steps 300]

`captioners.decoding.SeededSampling` draws each row's token from that row's own generator (so
a caption does not depend on its batch); transformers' sampler draws the whole batch from one
stream with `torch.multinomial`. Both get the same logits (MiniGPT-4's settings: temperature
1.0, top-p 0.9) for `--steps` steps, side by side in one run, on the CPU (and on CUDA when
there is one). The ratio is the price of batch-independent captions, per generated token,
before the language model's own forward pass (which costs far more on a real checkpoint).
"""

from __future__ import annotations

import argparse
import functools
import time


def transformers_sampling(scores, warpers, generator):
    import torch

    for warper in warpers:
        scores = warper(None, scores)
    probs = scores.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator)


def milliseconds_per_step(step, steps: int, device: str) -> float:
    import torch

    step()  # warm up
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / steps * 1000


def main() -> None:
    import torch
    from transformers import TopPLogitsWarper

    from captioners.decoding import SeededSampling

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        logits = torch.randn(args.rows, args.vocab, device=device) * 3
        ids = torch.zeros(args.rows, 1, dtype=torch.long, device=device)
        seeded = SeededSampling(range(args.rows), temperature=1.0, top_p=0.9)
        generator = torch.Generator(device=device).manual_seed(0)
        base = milliseconds_per_step(functools.partial(
            transformers_sampling, logits, [TopPLogitsWarper(0.9)], generator), args.steps, device)
        ours = milliseconds_per_step(functools.partial(seeded, ids, logits), args.steps, device)
        print(f"{device}: {args.rows} rows x {args.vocab} vocab, {args.steps} steps: "
              f"transformers (one stream) {base:.2f} ms/step, seeded per row {ours:.2f} ms/step; "
              f"seeded / transformers = {ours / base:.2f}")


if __name__ == "__main__":
    main()
