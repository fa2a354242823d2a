"""The generate step of `datakit demo`: the whole chunked path offline, on a tiny random model.

No weights are downloaded: a tiny Wan pipeline with random weights is built on the fly and
loaded back through its folder, exactly as `--model DIR` would load a real one. Its videos
are noise; the point is to show every moving part (chunks, anchor continuation, k-step search,
json, manifest, checks report) in a few seconds.
"""

from __future__ import annotations

import json
from pathlib import Path


def demo_generate(out: str | Path, checks: bool = True) -> dict:
    """Generate two short videos from a two-chunk story into `out / "generate"`.

    Args:
        out: the demo's output folder.
        checks: also run the checks and write the report.

    Returns the run's stats (as `OUT/stats.json`).
    """
    from generate.runner import GenerateOptions, generate_videos
    from generate.tiny import build_tiny_pipeline

    out = Path(out)
    model = out / "tiny-wan"
    if not (model / "model_index.json").is_file():
        build_tiny_pipeline(model, "wan")
    stories = out / "inputs" / "story.jsonl"
    stories.parent.mkdir(parents=True, exist_ok=True)
    stories.write_text("\n".join(json.dumps(s) for s in (
        {"id": "cat-story", "prompts": ["a cat sitting in a room", "a cat running in the street"]},
        {"id": "boat", "prompts": ["a small boat on the sea at night"], "seed": 1},
    )) + "\n")
    return generate_videos(GenerateOptions(
        prompts=stories, model=str(model), out=out / "generate", frames=33, chunk_frames=13,
        overlap=5, steps=6, height=64, width=64, fps=8, search_k=3, search_steps=2, checks=checks,
    ))
