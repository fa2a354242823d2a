"""Tiny random model parts that both stages' tiny builders use: a word-level tokenizer over a
small vocabulary, and a tiny CLIP (the caption score and the noise search both embed with
CLIP). Built offline under a fixed seed; the weights are random."""

from __future__ import annotations

import os
from pathlib import Path

WORDS = [
    "a", "an", "the", "of", "in", "on", "at", "with", "and", "or", "to", "from", "by", "is",
    "are", "was", "under", "over", "near", "cat", "dog", "bird", "fish", "horse", "car", "boat",
    "train", "plane", "tree", "flower", "river", "sea", "sky", "sun", "moon", "city", "street",
    "forest", "mountain", "beach", "road", "house", "room", "man", "woman", "child", "people",
    "crowd", "ball", "red", "green", "blue", "yellow", "white", "black", "small", "big", "slow",
    "fast", "running", "walking", "flying", "swimming", "jumping", "playing", "sitting",
    "standing", "camera", "pan", "zoom", "left", "right", "up", "down", "scene", "video",
    "night", "day",
]


def build_tokenizer(max_length: int = 512, bos: bool = False):
    """A word-level fast tokenizer over a small built-in vocabulary (unknown words -> <unk>).

    Args:
        max_length: the tokenizer's `model_max_length` (prompts longer than this are rejected
            by `datakit generate`).
        bos: add a `<s>` start token (CLIP-style) as well as the `</s>` end token.
    """
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>", "<s>"]
    vocab = {token: index for index, token in enumerate(specials + list(WORDS))}
    core = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    template = "<s> $A </s>" if bos else "$A </s>"
    core.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
        bos_token="<s>", model_max_length=max_length,
    )


def build_tiny_clip(folder: str | os.PathLike, seed: int = 0) -> Path:
    """Build a tiny random CLIP model, image processor and tokenizer; return `folder`.

    It serves `datakit generate --search-clip` (image embeddings only) and `datakit caption
    --score-clip` (caption-to-frames similarity, which needs the tokenizer too).

    Args:
        folder: where `save_pretrained` writes them.
        seed: seeds the random weights.
    """
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(WORDS) + 4, hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=16,
                         bos_token_id=3, eos_token_id=1, pad_token_id=0),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=16, intermediate_size=32,
                           num_hidden_layers=2, num_attention_heads=2),
        projection_dim=8,
    )
    folder = Path(folder)
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32},
                       crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    build_tokenizer(max_length=config.text_config.max_position_embeddings,
                    bos=True).save_pretrained(folder)
    return folder
