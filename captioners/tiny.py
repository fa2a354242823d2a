"""Tiny random BLIP-family captioners, built offline, for tests and `datakit demo`.

Each builder writes a folder that loads through `--model DIR` exactly as a downloaded
checkpoint does: `build_tiny_blip2` and `build_tiny_instructblip` write a transformers model
(`save_pretrained`, safetensors) with its processor; `build_tiny_minigpt4` writes the three
parts of MiniGPT-4 (a BLIP-2 folder for the vision side, a Llama folder for the language model,
the projection in the official `.pth` key layout) and the `minigpt4.json` that names them.

Sizes: vision hidden 32 (2 layers, 28 px images in 14 px patches: 4 patch tokens and a class
token), Q-Former hidden 32 (2 layers) with 4 query tokens, language models with hidden 32 and 2
layers over a word-level vocabulary built in code. Weights are random under a fixed seed, so
captions are strings of vocabulary words: useful only to exercise the code.
"""

from __future__ import annotations

import json
from pathlib import Path

from datakit.models.tiny import WORDS

BLIP2_VARIANTS = ("opt", "t5")
MINIGPT4_VARIANTS = ("vicuna", "llama2")
IMAGE_SIZE = 28
PATCH_SIZE = 14
VISION_HIDDEN = 32
QUERY_TOKENS = 4
PROMPT_WORDS = [
    "question", "answer", "this", "video", "frame", "what", "happens", "describe", "picture",
    "these", "descriptions", "frames", "one", "write", "sentence", "describing", "whole", "give",
    "following", "image", "you", "will", "be", "able", "see", "once", "i", "provide", "it",
    "please", "my", "questions", "human", "assistant", "img", "imagecontent", "inst", "briefly",
    "something",
]
PUNCTUATION = [":", ".", ",", "?", "!", "<", ">", "</", "###", "[", "]", "[/", "/"]


def build_tokenizer(bos: str | None, eos: str | None, pad: str = "<pad>"):
    """A word-level fast tokenizer over `WORDS`, the prompt words and punctuation.

    Args:
        bos: the token put before every text (OPT: "</s>", Llama: "<s>"), or None.
        eos: the token put after every text (T5: "</s>"), or None.
        pad: the padding token: "<pad>" (a special token of its own), "[PAD]" (an id after the
            words, as InstructBLIP-Vicuna's 32000) or an existing special such as "<unk>".
    """
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>"] + (["<pad>"] if pad == "<pad>" else [])
    vocab = {t: i for i, t in enumerate(specials + WORDS + PROMPT_WORDS + PUNCTUATION)}
    vocab.setdefault(pad, len(vocab))  # "[PAD]" after the words, as Vicuna's 32000
    core = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    template = " ".join(t for t in (bos, "$A", eos) if t)
    core.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(t, vocab[t]) for t in (bos, eos) if t]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token=pad, eos_token="</s>", unk_token="<unk>",
        bos_token="<s>" if bos == "<s>" else "</s>", model_max_length=512,
    )


def _image_processor():
    from transformers import BlipImageProcessor

    return BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})


def _vision_and_qformer(qformer_text: bool = False) -> dict:
    return dict(
        vision_config=dict(
            hidden_size=VISION_HIDDEN, intermediate_size=37, num_hidden_layers=2,
            num_attention_heads=4, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE,
            initializer_range=0.2,  # the default (1e-10) makes a near-zero ViT
        ),
        qformer_config=dict(
            hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            vocab_size=len(WORDS) + len(PROMPT_WORDS) + len(PUNCTUATION) + 8,
            max_position_embeddings=64, use_qformer_text_input=qformer_text,
            initializer_range=0.2,
        ),
        num_query_tokens=QUERY_TOKENS,
    )


def _like_trained(model):
    """Random query tokens and LayerNorm affines: initialisation leaves them zero and identity,
    which would hide a query or a layer-norm mix-up from the tests."""
    import torch

    with torch.no_grad():
        model.query_tokens.normal_(0.0, 1.0)
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.normal_(1.0, 0.3)
                module.bias.normal_(0.0, 0.3)
    return model


def _text_config(family: str, tokenizer) -> dict:
    vocab = len(tokenizer) + 2  # room for the processor's <image> token, as real checkpoints have
    ids = dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
               bos_token_id=tokenizer.bos_token_id)
    if family == "opt":
        return dict(model_type="opt", vocab_size=vocab, hidden_size=32, num_hidden_layers=2,
                    ffn_dim=37, num_attention_heads=4, word_embed_proj_dim=32,
                    max_position_embeddings=128, init_std=0.5, **ids)
    if family == "t5":
        return dict(model_type="t5", vocab_size=vocab, d_model=32, d_kv=8, d_ff=37,
                    num_layers=2, num_heads=4, relative_attention_num_buckets=8,
                    decoder_start_token_id=tokenizer.pad_token_id, **ids)
    return dict(model_type="llama", vocab_size=vocab, hidden_size=32, intermediate_size=37,
                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                max_position_embeddings=256, initializer_range=0.5, **ids)


def build_tiny_blip2(folder: str | Path, variant: str = "opt") -> Path:
    """Write a tiny random BLIP-2 (model and processor) that `--captioner blip2 --model
    FOLDER` loads.

    Args:
        folder: where to write it (created).
        variant: "opt" (decoder-only language model) or "t5" (encoder-decoder, Flan-T5 style).
    """
    import torch
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor

    if variant not in BLIP2_VARIANTS:
        raise ValueError(f"variant: expected one of {', '.join(BLIP2_VARIANTS)}, got {variant!r}")
    folder = Path(folder)
    tokenizer = build_tokenizer(bos="</s>" if variant == "opt" else None,
                                eos="</s>" if variant == "t5" else None)
    processor = Blip2Processor(_image_processor(), tokenizer, num_query_tokens=QUERY_TOKENS)
    config = Blip2Config(
        text_config=_text_config(variant, tokenizer), **_vision_and_qformer(),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"), initializer_range=0.5,
    )
    torch.manual_seed(0)
    _like_trained(Blip2ForConditionalGeneration(config)).eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def build_tiny_instructblip(folder: str | Path) -> Path:
    """Write a tiny random InstructBLIP with a Vicuna-like language model: a Llama whose
    tokenizer pads with "[PAD]" (an id after the vocabulary) while the model config says pad
    id 0, as Salesforce/instructblip-vicuna-7b does.

    Args:
        folder: where to write it (created).
    """
    import torch
    from transformers import (
        InstructBlipConfig,
        InstructBlipForConditionalGeneration,
        InstructBlipProcessor,
    )

    folder = Path(folder)
    tokenizer = build_tokenizer(bos="<s>", eos=None, pad="[PAD]")
    qformer_tokenizer = build_tokenizer(bos=None, eos=None)
    processor = InstructBlipProcessor(_image_processor(), tokenizer, qformer_tokenizer,
                                      num_query_tokens=QUERY_TOKENS)
    text_config = _text_config("llama", tokenizer) | {"pad_token_id": 0}
    config = InstructBlipConfig(
        text_config=text_config, **_vision_and_qformer(qformer_text=True),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )
    torch.manual_seed(0)
    _like_trained(InstructBlipForConditionalGeneration(config)).eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def build_tiny_minigpt4(folder: str | Path, variant: str = "vicuna") -> Path:
    """Write a tiny random MiniGPT-4 as a user assembles the official one: `folder/vision`
    (a BLIP-2 Flan-T5 folder), `folder/lm` (a Llama causal LM with its tokenizer),
    `folder/pretrained_minigpt4.pth` (`{"model": {"llama_proj.weight", "llama_proj.bias"}}`,
    saved with `torch.save`) and `folder/minigpt4.json` naming the three.

    Args:
        folder: where to write it (created).
        variant: "vicuna" (Q-Former queries projected: weight [lm hidden, Q-Former hidden]) or
            "llama2" (no Q-Former; 4 consecutive ViT tokens projected: [lm hidden, 4 x vision
            hidden]).
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if variant not in MINIGPT4_VARIANTS:
        raise ValueError(
            f"variant: expected one of {', '.join(MINIGPT4_VARIANTS)}, got {variant!r}"
        )
    folder = Path(folder)
    build_tiny_blip2(folder / "vision", "t5")
    tokenizer = build_tokenizer(bos="<s>", eos=None, pad="<unk>")
    torch.manual_seed(1)
    config = LlamaConfig(**{k: v for k, v in _text_config("llama", tokenizer).items()
                            if k != "model_type"})
    LlamaForCausalLM(config).eval().save_pretrained(folder / "lm")
    tokenizer.save_pretrained(folder / "lm")
    in_features = 32 if variant == "vicuna" else 4 * VISION_HIDDEN
    projection = torch.nn.Linear(in_features, config.hidden_size)
    torch.save({"model": {"llama_proj.weight": projection.weight.detach().clone(),
                          "llama_proj.bias": projection.bias.detach().clone()}},
               folder / "pretrained_minigpt4.pth")
    (folder / "minigpt4.json").write_text(json.dumps(
        {"vision": "vision", "lm": "lm", "projection": "pretrained_minigpt4.pth"}, indent=2))
    return folder


def install_in_hub_cache(folder: str | Path, repo_id: str, cache: str | Path,
                         commit: str = "0123456789abcdef0123456789abcdef01234567") -> str:
    """Copy a model folder into a Hugging Face cache as `repo_id` at `commit` (branch main),
    so it loads by hub id offline, exactly as a downloaded checkpoint does. Returns `commit`.

    Args:
        folder: a folder written by one of the builders above.
        repo_id: "org/name".
        cache: the hub cache root (what HF_HUB_CACHE points at).
        commit: the 40-hex commit the snapshot is filed under.
    """
    import shutil

    repo = Path(cache) / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return commit
