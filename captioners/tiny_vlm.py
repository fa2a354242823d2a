"""A tiny random LLaVA-style chat VLM, built offline, for tests, benchmarks and `datakit demo`.

`build_tiny_llava(folder)` writes a complete `LlavaForConditionalGeneration` folder (a
two-layer CLIP vision tower on 32x32 images, a two-layer Llama, a linear-GELU projector), a
`LlavaProcessor` (CLIP image processor + a word-level tokenizer with a chat template), all
saved with `save_pretrained` in safetensors, so `datakit caption --captioner vlm --model DIR`
loads it through `AutoProcessor` + `AutoModelForImageTextToText` exactly as it loads a
downloaded LLaVA. Each image becomes `TOKENS_PER_IMAGE` = (32 / 8)^2 = 16 `<image>` tokens
(the CLS token is dropped, as LLaVA's "default" feature strategy does). The weights are
random: the captions it writes are word salad, useful only to exercise the code.
"""

from __future__ import annotations

import os
from pathlib import Path

IMAGE_SIZE = 32
PATCH_SIZE = 8
TOKENS_PER_IMAGE = (IMAGE_SIZE // PATCH_SIZE) ** 2
IMAGE_TOKEN = "<image>"
CHAT_TOKENS = ("<|user|>", "<|assistant|>", "<|end|>")

# One turn per message: "<|role|>" then its parts (an image is one <image> placeholder, which
# the processor expands to TOKENS_PER_IMAGE tokens), then "<|end|>".
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|> "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image> "
    "{% elif part['type'] == 'text' %}{{ part['text'] }} {% endif %}"
    "{% endfor %}{% endif %}<|end|> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)


def build_tiny_llava(folder: str | os.PathLike, seed: int = 0) -> Path:
    """Build the tiny LLaVA model and processor in `folder` (created if needed); return it.

    Args:
        folder: where `save_pretrained` writes the model and the processor.
        seed: seeds the random weights (the same seed gives the same weights).
    """
    import torch
    import transformers
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    from datakit.models.tiny import build_tokenizer

    tokenizer = build_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN, *CHAT_TOKENS]})
    tokenizer.padding_side = "left"
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    )
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )
    end = tokenizer.convert_tokens_to_ids("<|end|>")
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, hidden_size=16, intermediate_size=32,
            num_hidden_layers=2, num_attention_heads=2, projection_dim=16,
        ),
        text_config=LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=end,
        ),
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=TOKENS_PER_IMAGE, vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = end
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    transformers.utils.logging.disable_progress_bar()
    model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    return folder
