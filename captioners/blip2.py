"""BLIP-2: frozen image encoder -> Q-Former queries -> OPT or Flan-T5, through transformers.

`Blip2Captioner` loads `Blip2Processor` + `Blip2ForConditionalGeneration` from a hub id
(Salesforce/blip2-opt-2.7b, blip2-opt-6.7b, blip2-flan-t5-xl, blip2-flan-t5-xxl, ...) or a
local folder, and captions every key frame of every clip in ONE `generate` call:

- Prompt: "Question: ... Answer:" with the clip's label (the format BLIP-2 was tuned on; the
  OPT variants ramble without it). One prompt per frame; a clip's frames share its prompt.
- Image tokens: the processor puts `num_query_tokens` `<image>` tokens before each prompt and
  the model overwrites their embeddings with the projected Q-Former outputs (transformers >=
  4.45). Checkpoints saved before that (`num_query_tokens: null` in the processor config, no
  `image_token_index` in the model config) would silently caption with no image at all in
  current transformers; they are repaired at load time from the model config and the
  tokenizer's `<image>` token (logged), or refused with one line when the token has no
  embedding row.
- Batches: decoder-only language models (OPT, Vicuna) are padded on the left, so every row's
  last prompt token sits next to the first generated one and OPT's positions (counted from the
  attention mask) match an unpadded run; encoder-decoders (Flan-T5) are padded on the right.
  Generation pads finished rows with the tokenizer's pad id, never the model config's (they
  disagree in InstructBLIP-Vicuna, transformers #25426).
- Dtype: `--dtype` as asked, for OPT and Flan-T5 alike. Flan-T5's feed-forward output layers
  (`wo`) overflow in float16; transformers keeps them, the Q-Former and the query tokens in
  float32 whatever the dtype (`_keep_in_fp32_modules`), so blip2-flan-t5-xxl runs in float16
  on a GPU without bfloat16 instead of doubling its memory in float32.
- Decoding (`--decoding reference`): LAVIS's `Blip2OPT.generate` / `Blip2T5.generate`, 5 beams
  and at most 30 new tokens; OPT answers end at the newline token, as LAVIS trained and decodes
  them. InstructBLIP: LAVIS's 5 beams, 256 new tokens, repetition penalty 1.5. A caption is the
  first line of the generated text; one capped at the limit is cut back to its last whole
  sentence and marked truncated (captioners.decoding).
- No `--model`: blip2 loads `DEFAULT_MODEL` (Salesforce/blip2-opt-2.7b), the captioner
  `datakit caption` uses when no `--captioner` is given.
- `generate` (for `--fuse llm`) runs the language model alone on text prompts.

`InstructBlipCaptioner` (captioners/instructblip.py) is the same machinery over the InstructBLIP
classes. Weights: safetensors are preferred wherever the checkpoint has them; the config,
processor and tokenizer run a checkpoint's own code only with `--trust-remote-code`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from captioners.base import (
    Captioner,
    CaptionerConfig,
    ClipRequest,
    load_failure,
    model_location,
    resolve_device,
    resolve_dtype,
)
from captioners.decoding import Decoding, capped_rows, finished
from datakit.io.errors import UserError

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "Salesforce/blip2-opt-2.7b"
LAVIS_BLIP2 = ("LAVIS lavis/models/blip2_models/blip2_opt.py:165-176 (generate: num_beams=5, "
               "max_length=30, min_length=1) and :91-93, 241 (eos_token_id: the newline token); "
               "blip2_t5.py:159-170, 235 (max_new_tokens=30)")
LAVIS_INSTRUCTBLIP = ("LAVIS lavis/models/blip2_models/blip2_vicuna_instruct.py:249-260 and "
                      "blip2_t5_instruct.py:280-291 (generate: num_beams=5, max_length=256, "
                      "min_length=1, repetition_penalty=1.5, length_penalty=1)")

# config.model_type -> the --captioner that loads it (for "pass this instead" hints)
CAPTIONER_FOR_MODEL_TYPE = {"blip-2": "blip2", "instructblip": "instructblip"}


def hub_availability(model: str, revision: str | None = None, timeout: float = 10.0) -> str:
    """Why the weights of hub id `model` cannot load now ("" when they can): neither in the
    local Hugging Face cache nor reachable on the hub."""
    import huggingface_hub
    from huggingface_hub import constants

    if Path(model).expanduser().is_dir():
        return ""
    cached = [isinstance(huggingface_hub.try_to_load_from_cache(model, name, revision=revision),
                         str)
              for name in ("config.json", "model.safetensors.index.json", "model.safetensors")]
    if cached[0] and any(cached[1:]):
        return ""
    if constants.HF_HUB_OFFLINE:
        return "not in the Hugging Face cache, and HF_HUB_OFFLINE is set"
    try:
        huggingface_hub.get_hf_file_metadata(
            huggingface_hub.hf_hub_url(model, "config.json", revision=revision), timeout=timeout)
    except Exception as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:120]
        return f"not in the Hugging Face cache, and the hub could not be reached ({reason})"
    return ""


def hub_commit(model: str, revision: str | None, filename: str = "config.json") -> str | None:
    """The commit hash a hub id resolved to in the local Hugging Face cache (None for a local
    folder, or when the file is not cached)."""
    if Path(model).expanduser().is_dir():
        return None
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(model, filename, revision=revision)
    except ValueError:  # not a valid repo id
        return None
    found = re.search(r"snapshots/([0-9a-f]{40})/", str(cached).replace("\\", "/"))
    return found.group(1) if isinstance(cached, str) and found else None


def split_per_clip(texts: Sequence[str], requests: Sequence[ClipRequest]) -> list[list[str]]:
    """Flat per-frame captions back into one list per clip (in frame order)."""
    out, start = [], 0
    for request in requests:
        out.append(list(texts[start:start + len(request.frames)]))
        start += len(request.frames)
    return out


def first_line(text: str) -> str:
    """A caption is the first non-empty line of what the model generated."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


class Blip2Captioner(Captioner):
    """BLIP-2 (OPT or Flan-T5) through transformers' `Blip2ForConditionalGeneration`.

    Args:
        config: `model` (hub id or folder; default `DEFAULT_MODEL`), `revision`, `device`,
            `dtype`, `prompt` (per frame, with `{label}`), `max_new_tokens`,
            `trust_remote_code`.

    Raises:
        UserError: no model, a folder or id that does not load (one line naming what was tried),
            a checkpoint of another architecture, or an old checkpoint that cannot be repaired.
    """

    name = "blip2"
    default_prompt = "Question: This is a frame from a video of {label}. What is happening? Answer:"
    default_fuse_prompt = (
        "Question: These are descriptions of frames from one video of {label}: {captions} "
        "What happens in the whole video? Answer:"
    )
    model_type: ClassVar[str] = "blip-2"
    model_class: ClassVar[str] = "Blip2ForConditionalGeneration"
    processor_class: ClassVar[str] = "Blip2Processor"
    example: ClassVar[str] = DEFAULT_MODEL
    default_model: ClassVar[str | None] = DEFAULT_MODEL  # without --model
    question_format = "Question: {question} Answer:"

    def __init__(self, config: CaptionerConfig):
        import transformers

        super().__init__(config)
        # 1. Where it runs, what it loads
        self.device = resolve_device(config.device)
        self.model_id = config.model or self.default_model
        location = model_location(self.model_id)
        model_config = self._load_config(location)
        self.encoder_decoder = bool(model_config.text_config.is_encoder_decoder)
        self.dtype = resolve_dtype(config.dtype, self.device)

        # 2. Processor and model
        try:
            self.processor = getattr(transformers, self.processor_class).from_pretrained(
                location, revision=config.revision, trust_remote_code=config.trust_remote_code
            )
        except Exception as error:
            raise load_failure(self.model_id, f"the {self.processor_class}", error) from error
        try:
            self.model = getattr(transformers, self.model_class).from_pretrained(
                location, revision=config.revision, dtype=self.dtype
            )
        except Exception as error:
            raise load_failure(self.model_id, f"the {self.model_class} weights",
                               error) from error
        self.model.to(self.device).eval()
        self.revision = hub_commit(location, config.revision)

        # 3. Repair what old checkpoints lack; pad where batched generation needs it
        self._repair_image_tokens()
        tokenizer = self.processor.tokenizer
        tokenizer.padding_side = "right" if self.encoder_decoder else "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.pad_token_id: int = tokenizer.pad_token_id
        self.end_ids = self._end_ids()

    # --- loading -----------------------------------------------------------------------------

    def _load_config(self, location: str):
        """The checkpoint's config, refused unless it is this captioner's architecture."""
        from transformers import AutoConfig

        try:
            model_config = AutoConfig.from_pretrained(
                location, revision=self.config.revision,
                trust_remote_code=self.config.trust_remote_code,
            )
        except Exception as error:
            raise load_failure(self.config.model, "a model config (config.json)", error) from error
        found = getattr(model_config, "model_type", None)
        if found != self.model_type:
            other = CAPTIONER_FOR_MODEL_TYPE.get(found)
            instead = (f"--captioner {other}" if other else
                       f"a checkpoint like {self.example} (or --captioner vlm for an "
                       "image-text-to-text chat model)")
            raise UserError(f"--model {self.config.model}: is a {found!r} checkpoint, not "
                            f"{self.model_type!r}; use {instead}")
        return model_config

    def _repair_image_tokens(self) -> None:
        """Give checkpoints saved before transformers 4.45 the image-token expansion."""
        processor, model_config = self.processor, self.model.config
        if processor.num_query_tokens is None:
            processor.num_query_tokens = model_config.num_query_tokens
            logger.warning("%s: the processor has no num_query_tokens (saved before transformers "
                           "4.45); using the model's %d", self.config.model,
                           model_config.num_query_tokens)
        if model_config.image_token_index is None:
            token = str(processor.image_token)
            token_id = processor.tokenizer.convert_tokens_to_ids(token)
            rows = self.model.get_input_embeddings().num_embeddings
            if token_id is None or token_id >= rows:
                raise UserError(
                    f"--model {self.config.model}: the config has no image_token_index and the "
                    f"tokenizer's {token} token (id {token_id}) has no embedding row ({rows}); "
                    f"pass a checkpoint saved with transformers >= 4.45 (e.g. {self.example})"
                )
            model_config.image_token_index = token_id
            logger.warning("%s: no image_token_index in the config (saved before transformers "
                           "4.45); using the tokenizer's %s token, id %d", self.config.model,
                           token, token_id)

    # --- captioning --------------------------------------------------------------------------

    def reference_decoding(self) -> Decoding:
        """LAVIS's BLIP-2 `generate` defaults; OPT stops at its newline token."""
        return Decoding(num_beams=5, max_new_tokens=30, min_new_tokens=1, length_penalty=1.0,
                        stop=() if self.encoder_decoder else ("\n",), reference=LAVIS_BLIP2)

    def _end_ids(self) -> list[int]:
        """The ids that end a caption: the end token, and a stop text that is one token."""
        tokenizer = self.processor.tokenizer
        ends = [tokenizer.eos_token_id]
        for text in self.decoding.stop:
            ids = tokenizer(text, add_special_tokens=False).input_ids
            if len(ids) == 1 and ids[0] != tokenizer.unk_token_id:
                ends.append(ids[0])
        return ends

    def _generation_kwargs(self, seeds: Sequence[int], prompt_length: int) -> dict[str, Any]:
        """`generate`'s settings; the prompt's ids (a decoder-only model gets them too) are
        kept out of the repetition penalty, as LAVIS generating from embeddings had it."""
        prompt_length = 0 if self.encoder_decoder else prompt_length
        return dict(**self.decoding.generate_kwargs(seeds, prompt_length, self.end_ids),
                    pad_token_id=self.pad_token_id)

    def _decode(self, output, prompt_length: int) -> list[str]:
        """Generated text only (a decoder-only model's output starts with the prompt ids, an
        encoder-decoder's with the decoder start token); capped rows trimmed."""
        output = output[:, 1:] if self.encoder_decoder else output[:, prompt_length:]
        texts = self.processor.tokenizer.batch_decode(output, skip_special_tokens=True)
        capped = capped_rows(output, self.end_ids, self.decoding.max_new_tokens, texts,
                             self.decoding.stop)
        return [finished(first_line(text), cap) for text, cap in zip(texts, capped, strict=True)]

    def prepare_inputs(self, prompts: Sequence[str], images: Sequence[Any]):
        """The processor's batch for one prompt per image, on the device: `num_query_tokens`
        image tokens, then the prompt, each row padded on the language model's side."""
        inputs = self.processor(images=list(images), text=list(prompts), padding=True,
                                return_tensors="pt").to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        return inputs

    def describe(self, requests: Sequence[ClipRequest]) -> list[list[str]]:
        """One caption per key frame: all frames of all clips in one generate call."""
        import torch

        images = [frame for request in requests for frame in request.frames]
        if not images:
            return [[] for _ in requests]
        prompts = [request.prompt for request in requests for _ in request.frames]
        inputs = self.prepare_inputs(prompts, images)
        with torch.inference_mode():
            output = self.model.generate(**inputs, **self._generation_kwargs(
                self.row_seeds(requests), inputs["input_ids"].shape[1]))
        return split_per_clip(self._decode(output, inputs["input_ids"].shape[1]), requests)

    def generate(self, prompts: Sequence[str], keys: Sequence[str] | None = None) -> list[str]:
        """Text-only generation with the language model (for `--fuse llm`)."""
        import torch

        if not prompts:
            return []
        inputs = self.processor.tokenizer(list(prompts), padding=True, return_tensors="pt")
        inputs = inputs.to(self.device)
        inputs.pop("token_type_ids", None)
        with torch.inference_mode():
            output = self.model.language_model.generate(**inputs, **self._generation_kwargs(
                self.text_seeds(prompts, keys), inputs["input_ids"].shape[1]))
        return self._decode(output, inputs["input_ids"].shape[1])

