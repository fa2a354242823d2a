"""Memory and speed on one GPU (issue 9 §3): prompt embeddings computed once per video, offload
choices, the pre-run GPU memory estimate, the attention backend, LoRA, anchor steps, compile.

What needs a GPU (offload, the real peak) is tested here through the calls it makes, with
spies; everything else runs for real on the tiny random pipelines.
"""

import pytest
import torch

from generate.backbones import Backbone, load_backbone
from generate.chunked import ChunkedGenerator, ChunkSettings
from generate.prompts import Story
from generate.search import ContinuityScorer
from generate.tiny import build_tiny_pipeline

FAMILIES = ("wan", "cogvideox", "ltx", "modelscope")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    built = {}

    def get(family: str):
        if family not in built:
            built[family] = build_tiny_pipeline(root / family, family)
        return built[family]

    return get


def chunked(backbone, frames=27, chunk=9, **extra) -> ChunkedGenerator:
    settings = ChunkSettings(**{**dict(
        frames=frames, chunk_frames=chunk, continue_mode="none", steps=2, guidance=3.0,
        negative_prompt="night", height=32, width=32, search_k=2, search_steps=1), **extra})
    return ChunkedGenerator(backbone, settings, scorer=ContinuityScorer())


STORY = Story("s", ("a cat running", "a dog in the sea"), None, "test")  # chunks: A, B, B


# -- 1. each distinct text encoded once per video ---------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_each_text_is_encoded_once_per_video(tiny, tmp_path, family):
    backbone = load_backbone(str(tiny(family)))
    pipe = backbone.pipe
    seen: list[str] = []

    def hook(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        seen.append(pipe.tokenizer.decode(ids[0], skip_special_tokens=True).strip())

    pipe.text_encoder.register_forward_pre_hook(hook, with_kwargs=True)
    generator = chunked(backbone)
    runs = []
    original = type(pipe).__call__
    type_call = lambda self, *a, **k: runs.append(k) or original(self, *a, **k)  # noqa: E731
    pipe.__class__ = type("Spied", (type(pipe),), {"__call__": type_call})
    generator(STORY, 1, tmp_path / "a.mp4", tmp_path / "st")
    # 3 chunks, 2 previews + 1 full run for each after the first: 7 pipeline calls, none
    # given text (encoding in each would run the text encoder 14 times)
    assert len(runs) == 7 and all(k.get("prompt") is None for k in runs)
    assert sorted(seen) == ["a cat running", "a dog in the sea", "night"]
    if family == "ltx":
        assert all(k["prompt_attention_mask"] is not None for k in runs)
        assert all(k["negative_prompt_attention_mask"] is not None for k in runs)
    # a second video encodes again (the cache lives one video), the same three texts
    generator(STORY, 2, tmp_path / "b.mp4", tmp_path / "st2")
    assert sorted(seen[3:]) == ["a cat running", "a dog in the sea", "night"]


@pytest.mark.parametrize("family", FAMILIES)
def test_cached_embeddings_give_the_same_latents(tiny, tmp_path, monkeypatch, family):
    """Against the pipeline encoding its own text on every call (the code before the cache)."""
    backbone = load_backbone(str(tiny(family)))
    generator = chunked(backbone, frames=18)
    generator(STORY, 5, tmp_path / "a.mp4", tmp_path / "cached")
    with monkeypatch.context() as patch:
        patch.setattr(Backbone, "prompt_embeds", lambda self, prompt, negative, guidance,
                      pipe=None: {"prompt": prompt, "negative_prompt": negative or None})
        generator(STORY, 5, tmp_path / "b.mp4", tmp_path / "every")
    for chunk in range(2):
        cached = generator._load(tmp_path / "cached", chunk)[0]["latents"]
        every = generator._load(tmp_path / "every", chunk)[0]["latents"]
        assert torch.equal(cached, every), chunk
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()
