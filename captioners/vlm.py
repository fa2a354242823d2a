"""`vlm`: any transformers image-text-to-text chat model describes a whole clip at once.

Qwen2.5-VL, Qwen3-VL, LLaVA, LLaVA-OneVision and their kin load through one path:
`AutoProcessor` + `AutoModelForImageTextToText`, prompted through the processor's own chat
template, so the captioner carries no per-model prompt format.

- One clip is one user turn: all its key frames as images, in time order, then the prompt
  with the clip's label as a hint ("Its category is 'playing guitar'. Describe ..."). The
  model sees the frames together and returns one caption per clip (`per_frame = False`).
- Frames are always sent as images, never as a video: scene-aware key frames are unevenly
  spaced, which a video input (Qwen2.5-VL encodes absolute time from the frame rate) would
  misrepresent, and transformers' video processors need torchvision.
- A batch of clips is one padded `generate` call: the processor tokenizes the chats itself
  (`apply_chat_template(tokenize=True)`, each clip's frames as its own list of images, no
  second BOS after a template that writes one), the tokenizer pads on the left (so every
  row's new tokens start at the same column), and only the new tokens are decoded.
- Decoding (`--decoding reference`): what the checkpoint's own `generation_config.json` asks
  (sampling, temperature, top-k, top-p, repetition penalty, end tokens; transformers' defaults
  where it is silent), with its `max_new_tokens` or `REFERENCE_NEW_TOKENS`. Sampling is seeded
  per clip (captioners.decoding), so a rerun gives the same caption.
- `generate(prompts)` is text-only chat with the same model, for `--fuse llm`.
- A folder that is not a chat VLM (a text-only LM, a BLIP-2 folder without a chat template),
  a processor that needs a missing package, or weights that are not there are `UserError`s:
  one line naming the model and what to pass instead.
- `--backend vllm` is refused with one line: no vLLM release installs beside datakit's torch
  and transformers pins (docs/captioners-vlm.md has the versions and what to do).

Weights load as safetensors, in `--dtype` (bf16 on a recent GPU, fp32 on CPU), on `--device`;
`trust_remote_code` only when the user asks; `revision` is recorded as the resolved commit
when the hub reports one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from captioners.base import (
    Captioner,
    CaptionerConfig,
    ClipRequest,
    load_failure,
    model_location,
    resolve_device,
    resolve_dtype,
    resolved_revision,
)
from captioners.decoding import Decoding, capped_rows, finished
from datakit.io.errors import UserError

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "Qwen/Qwen2.5-VL-3B-Instruct"
REFERENCE_NEW_TOKENS = 128  # transformers' Qwen2.5-VL usage example (docs/captioners.md)
VLLM_UNAVAILABLE = (
    "--backend vllm: not available: the vLLM releases on torch 2.13 (0.31, 0.32) need "
    "transformers<5.20 and torchvision, and 0.33 pins torch 2.14, so none installs beside "
    "datakit's torch and transformers; use --backend transformers (see docs/captioners-vlm.md)"
)


class VLMCaptioner(Captioner):
    """One caption per clip from all its key frames, by a transformers chat VLM.

    Args:
        config: `model` (hub id or folder; default `DEFAULT_MODEL`), `revision`, `device`,
            `dtype`, `max_new_tokens`, `trust_remote_code`, `backend` (transformers only),
            `prompt` (with `{label}`; default `default_prompt`).

    Raises:
        UserError: `--backend vllm`, a model that cannot be loaded, or a model that is not an
            image-text-to-text chat model.
    """

    name = "vlm"
    default_prompt = (
        "These are frames from one video. Its category is '{label}'. Describe in one or two "
        "sentences what happens in the video."
    )
    per_frame = False
    question_format = "These are frames from one video. {question}"

    def __init__(self, config: CaptionerConfig):
        super().__init__(config)
        # 1. Check the settings
        if config.backend == "vllm":
            raise UserError(VLLM_UNAVAILABLE)
        from transformers import (
            AutoConfig,
            AutoModelForImageTextToText,
            AutoProcessor,
            GenerationConfig,
        )
        from transformers.models.auto.modeling_auto import (
            MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
        )

        self.model_id = config.model or DEFAULT_MODEL
        location = model_location(self.model_id)
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        hub = dict(revision=config.revision, trust_remote_code=config.trust_remote_code)

        # 2. Check the architecture before any weights are read
        try:
            model_config = AutoConfig.from_pretrained(location, **hub)
        except (OSError, ValueError) as error:
            raise load_failure(self.model_id, "a model config", error) from None
        remote = getattr(model_config, "auto_map", None) or {}
        if (model_config.model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
                and "AutoModelForImageTextToText" not in remote):
            raise UserError(
                f"--model {self.model_id}: a {model_config.model_type!r} model is not an "
                f"image-text-to-text chat model; pass a VLM such as {DEFAULT_MODEL}"
            )

        # 3. Load the processor; it must render chats with images
        try:
            self.processor = AutoProcessor.from_pretrained(location, **hub)
        except ImportError as error:
            if "torchvision" not in str(error).lower():
                raise load_failure(self.model_id, "a processor", error) from None
            raise UserError(
                f"--model {self.model_id}: its processor needs torchvision (Qwen-VL video "
                "processors do); install the torchvision build that matches your torch"
            ) from None
        except (OSError, ValueError) as error:
            raise load_failure(self.model_id, "a processor", error) from None
        if not getattr(self.processor, "chat_template", None):
            raise UserError(
                f"--model {self.model_id}: its processor has no chat template, so it is not a "
                "chat VLM (BLIP-2 and InstructBLIP folders go with --captioner blip2 or "
                "instructblip)"
            )
        self.tokenizer = self.processor.tokenizer
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            logger.info("%s has no pad token: padding with its end token", self.model_id)
            self.tokenizer.pad_token = self.tokenizer.eos_token

        # 4. Load the weights
        try:
            self.model = AutoModelForImageTextToText.from_pretrained(
                location, dtype=self.dtype, device_map=self.device, use_safetensors=True, **hub
            ).eval()
        except (OSError, ValueError) as error:
            raise load_failure(self.model_id, "the model weights (safetensors)", error) from None
        self.revision = resolved_revision(self.model_id, config.revision)
        self.end_ids = self.model.generation_config.eos_token_id
        self.generation = GenerationConfig(eos_token_id=self.end_ids,
                                           pad_token_id=self.tokenizer.pad_token_id)

    def reference_decoding(self) -> Decoding:
        """The checkpoint's generation_config (transformers' defaults where it says nothing);
        sampling draws with one beam."""
        saved = self.model.generation_config

        def value(name: str, default):
            found = getattr(saved, name, None)
            return default if found is None else found

        sample = bool(value("do_sample", False))
        return Decoding(
            do_sample=sample, temperature=float(value("temperature", 1.0)),
            top_p=float(value("top_p", 1.0)), top_k=int(value("top_k", 50)),
            repetition_penalty=float(value("repetition_penalty", 1.0)), penalize_prompt=True,
            num_beams=1 if sample else int(value("num_beams", 1)),
            length_penalty=float(value("length_penalty", 1.0)),
            max_new_tokens=int(value("max_new_tokens", REFERENCE_NEW_TOKENS)),
            min_new_tokens=int(value("min_new_tokens", 0)),
            reference=f"{self.model_id} generation_config.json")

    def conversation(self, request: ClipRequest) -> list[dict]:
        """One user turn for one clip: its key frames as images, in time order, then the
        prompt."""
        if not request.frames:
            raise ValueError(f"clip {request.key}: no key frames to describe")
        parts = [{"type": "image", "image": frame} for frame in request.frames]
        parts.append({"type": "text", "text": request.prompt})
        return [{"role": "user", "content": parts}]

    def chat_text(self, request: ClipRequest) -> str:
        """The rendered chat prompt for one clip, up to the assistant's turn."""
        return self.processor.apply_chat_template(
            self.conversation(request), add_generation_prompt=True, tokenize=False)

    def prepare_inputs(self, requests: Sequence[ClipRequest]):
        """The processor's padded batch for `requests` (ids, attention mask, pixel values, and
        whatever else the model takes, such as Qwen's image grid), on the model's device.

        The processor tokenizes the chats itself (`apply_chat_template(tokenize=True)`), so a
        template that writes its own BOS (Gemma-3) gets no second one, and each clip's frames
        reach it as that clip's own list of images: Gemma-3 and SmolVLM need that for a batch,
        and LLaVA-OneVision reads several images of one clip as one tile each instead of
        tiling every frame as a lone high-resolution image."""
        return self._tokenize([self.conversation(request) for request in requests])

    def describe(self, requests: Sequence[ClipRequest]) -> list[list[str]]:
        if not requests:
            return []
        return [[caption] for caption in self._generate(self.prepare_inputs(requests),
                                                         self.row_seeds(requests))]

    def generate(self, prompts: Sequence[str], keys: Sequence[str] | None = None) -> list[str]:
        if not prompts:
            return []
        conversations = [[{"role": "user", "content": [{"type": "text", "text": prompt}]}]
                         for prompt in prompts]
        return self._generate(self._tokenize(conversations), self.text_seeds(prompts, keys))

    def _tokenize(self, conversations: list[list[dict]]):
        inputs = self.processor.apply_chat_template(
            conversations, add_generation_prompt=True, tokenize=True, return_dict=True,
            return_tensors="pt", processor_kwargs={"padding": True})
        return inputs.to(self.device, dtype=self.dtype)

    def _generate(self, inputs, seeds: list[int]) -> list[str]:
        """Generation for a padded batch; only the tokens after the prompt decoded, capped
        rows trimmed to whole sentences."""
        import torch

        with torch.inference_mode():
            output = self.model.generate(**inputs, generation_config=self.generation,
                                         **self.decoding.generate_kwargs(seeds))
        new_tokens = output[:, inputs["input_ids"].shape[1]:]
        texts = self.processor.batch_decode(new_tokens, skip_special_tokens=True)
        ends = self.end_ids if isinstance(self.end_ids, list) else [self.end_ids]
        capped = capped_rows(new_tokens, [e for e in ends if e is not None],
                             self.decoding.max_new_tokens)
        return [finished(text, cap) for text, cap in zip(texts, capped, strict=True)]
