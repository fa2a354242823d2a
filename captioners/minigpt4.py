"""MiniGPT-4, assembled from transformers' BLIP-2 parts, its official projection and a Llama.

MiniGPT-4 (Vision-CAIR/MiniGPT-4) is a frozen EVA ViT-g (224 px) and its final layer norm
(LAVIS's `ln_vision`), a frozen Q-Former with 32 query tokens (BLIP-2 Flan-T5-XXL weights), ONE
trained linear layer `llama_proj` and a frozen Vicuna (v0, 7B or 13B) or Llama-2-7B-chat. No
package loads it, so this module assembles it from parts anyone can download:

- vision: a BLIP-2 checkpoint folder or hub id (default Salesforce/blip2-flan-t5-xxl). Only its
  `vision_model.*` (EVA ViT-g; `post_layernorm` is LAVIS's `ln_vision`), `query_tokens` and
  `qformer.*` tensors are read, from the safetensors shards that hold them; the Flan-T5 is never
  loaded. Its image processor (224 px, bicubic, CLIP mean/std) is MiniGPT-4's `blip2_image_eval`.
- projection: the official checkpoint (`pretrained_minigpt4.pth` for Vicuna-13B,
  `prerained_minigpt4_7b.pth` (sic) for Vicuna-7B, `pretrained_minigpt4_llama2_7b.pth`), read
  with `torch.load(weights_only=True)`; only `model["llama_proj.weight"]` and
  `model["llama_proj.bias"]` are used. The weight's shape says which MiniGPT-4 it is:
  [lm hidden, 768] projects the 32 Q-Former outputs (Vicuna variants); [lm hidden, 4 x 1408]
  is the Llama-2 variant, which has no Q-Former: the ViT's patch tokens (class token dropped) are
  grouped 4 consecutive at a time and projected (256 patches -> 64 image embeddings). That
  variant trained with a freshly initialised, frozen `ln_vision` (weight 1, bias 0), so BLIP-2's
  trained `post_layernorm` affine is reset for it (unless the checkpoint carries
  `ln_vision.weight`/`ln_vision.bias`, which are then used).
- lm: a Llama-family causal LM folder or hub id with its tokenizer (Vicuna v0 weights, which
  users make from LLaMA + the delta, or meta-llama/Llama-2-7b-chat-hf).

`--model DIR` names a folder with `minigpt4.json`:

    {"vision": "Salesforce/blip2-flan-t5-xxl", "lm": "vicuna-13b-v0",
     "projection": "pretrained_minigpt4.pth", "template": "vicuna"}

Relative paths are taken from DIR; a value that is not a path there is a hub id. `vision` is
optional (default above), `template` too (vicuna when the projection reads the Q-Former, llama2
otherwise). `captioners.tiny.build_tiny_minigpt4` writes such a folder.

Prompts follow the official demo conversation (minigpt4/conversation/conversation.py), with
the question (`--prompt`, label filled in) where the user's message goes:

    vicuna: "{system}###Human: <Img><ImageHere></Img> {question}###Assistant: "
    llama2: "{system}<s>[INST] <Img><ImageHere></Img> {question} [/INST] "

`{system}` is "Give the following image: <Img>ImageContent</Img>. You will be able to see the
image once I provide it to you. Please answer my questions.". The text before `<ImageHere>` is
tokenized with the tokenizer's special tokens (BOS), the text after without; the image
embeddings are spliced in between. The tokenizer runs in Llama's legacy mode, as the official
`LlamaTokenizer(use_fast=False)` of transformers 4.30 did: every text after a special token
starts a new word, so Llama-2's `<s>[INST]` is `<s>`, "▁[", "INST", "]", the ids MiniGPT-4 was
trained on (transformers 5 defaults to `legacy=False`, which drops the "▁"). `--fuse llm`
puts no second BOS before a template that starts with `<s>`. A Vicuna v0 folder made by
FastChat's apply_delta has only `tokenizer.model`: reading it needs `sentencepiece` and
`protobuf` (the `caption` extra), and a missing one is named in one line. Every frame of
every clip goes through one left-padded `generate` call on `inputs_embeds`. Generation
stops at "###" (vicuna) or the end token (llama2); the caption is the text before any
"###". Decoding (`--decoding reference`) is the official demo's: sampling with top-p 0.9,
temperature 1.0, repetition penalty 1.05 and 300 new tokens, each frame drawing from its own
generator seeded from `--seed`, the clip's key and the frame, so a rerun gives the same
captions (captioners.decoding).
"""

from __future__ import annotations

import json
import logging
import pickle
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from captioners.base import (
    Captioner,
    CaptionerConfig,
    ClipRequest,
    load_failure,
    model_location,
    resolve_device,
    resolve_dtype,
)
from captioners.blip2 import hub_commit, split_per_clip
from captioners.decoding import Decoding, capped_rows, finished
from datakit.io.errors import UserError

logger = logging.getLogger(__name__)

LAYOUT_FILE = "minigpt4.json"
LAYOUT_FIELDS = ("vision", "lm", "projection", "template")
DEFAULT_VISION = "Salesforce/blip2-flan-t5-xxl"
SYSTEM = (
    "Give the following image: <Img>ImageContent</Img>. You will be able to see the image once "
    "I provide it to you. Please answer my questions."
)
IMAGE_HERE = "<ImageHere>"
TEMPLATES = {  # one user turn; describe() puts SYSTEM before it, --fuse llm does not
    "vicuna": "###Human: {message}###Assistant: ",
    "llama2": "<s>[INST] {message} [/INST] ",
}
STOP = {"vicuna": "###", "llama2": None}
PATCHES_PER_TOKEN = 4  # the Llama-2 variant projects 4 consecutive ViT tokens at once
OFFICIAL_DEMO = ("Vision-CAIR/MiniGPT-4 demo.py:116 (max_new_tokens=300), :143 and :152 (num_beams "
                 "1, temperature 1.0), :72 (stop at ###), "
                 "minigpt4/conversation/conversation.py:158-159, 176 "
                 "(do_sample=True, top_p=0.9, repetition_penalty=1.05, min_length=1, "
                 "length_penalty=1)")
LAYOUT_EXAMPLE = ('{"vision": "Salesforce/blip2-flan-t5-xxl", "lm": "path/to/vicuna-13b", '
                  '"projection": "pretrained_minigpt4.pth"}')


def read_layout(folder: str) -> dict[str, str]:
    """`minigpt4.json` of `folder`, with paths resolved against it and defaults filled in.

    Raises:
        UserError: no such file, not a JSON object, an unknown or missing field, a projection
            file that is not there, or an unknown template.
    """
    path = Path(folder) / LAYOUT_FILE
    if not path.is_file():
        raise UserError(f"--model {folder}: no {LAYOUT_FILE} there; a MiniGPT-4 folder names its "
                        f"parts in {LAYOUT_FILE}, e.g. {LAYOUT_EXAMPLE}")
    try:
        layout = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(layout, dict):
        raise UserError(f"{path}: expected a JSON object like {LAYOUT_EXAMPLE}")
    unknown = sorted(set(layout) - set(LAYOUT_FIELDS))
    if unknown:
        raise UserError(f"{path}: unknown field {unknown[0]!r}; use {', '.join(LAYOUT_FIELDS)}")
    for name in ("lm", "projection"):
        if not isinstance(layout.get(name), str) or not layout[name]:
            raise UserError(f"{path}: {name!r} is required (a path or hub id), e.g. "
                            f"{LAYOUT_EXAMPLE}")
    template = layout.get("template")
    if template is not None and template not in TEMPLATES:
        raise UserError(f"{path}: template must be one of {', '.join(TEMPLATES)}, got "
                        f"{template!r}")

    def local(value: str) -> str:
        candidate = Path(folder) / Path(value).expanduser()
        return str(candidate) if candidate.exists() else value

    projection = Path(local(layout["projection"]))
    if not projection.is_file():
        raise UserError(f"{path}: projection {layout['projection']!r} is not a file (relative "
                        f"paths are taken from {folder}); pass the official "
                        "pretrained_minigpt4.pth")
    return {"vision": local(layout.get("vision") or DEFAULT_VISION), "lm": local(layout["lm"]),
            "projection": str(projection), "template": template}


def load_projection(path: str, option: str) -> dict[str, Any]:
    """`llama_proj.weight`/`.bias` (and `ln_vision.*` if present) of an official checkpoint.

    Raises:
        UserError: a file torch cannot read with `weights_only=True` (corrupt, or pickled code),
            or one without `model["llama_proj.weight"]` [out, in] and a matching bias.
    """
    import torch

    expected = ("pass the official pretrained_minigpt4.pth (a dict whose 'model' holds "
                "llama_proj.weight and llama_proj.bias)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        pickled = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
        reason = (f"it pickles a {pickled.group(1)} object (refused, never run)" if pickled else
                  "it is not a torch checkpoint of tensors")
        raise UserError(f"{option}: could not read the projection {path} with "
                        f"torch.load(weights_only=True): {reason}; {expected}") from None
    except Exception as error:  # a damaged zip, a truncated file
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:120]
        raise UserError(f"{option}: could not read the projection {path} with "
                        f"torch.load(weights_only=True): damaged ({reason}); {expected}") from None
    state = checkpoint.get("model") if isinstance(checkpoint, dict) else None
    weight = state.get("llama_proj.weight") if isinstance(state, dict) else None
    bias = state.get("llama_proj.bias") if isinstance(state, dict) else None
    if not (isinstance(weight, torch.Tensor) and weight.ndim == 2 and isinstance(bias, torch.Tensor)
            and bias.shape == weight.shape[:1]):
        raise UserError(f"{option}: the projection {path} has no llama_proj.weight [out, in] "
                        f"with a matching llama_proj.bias under 'model'; {expected}")
    return {key: value for key, value in state.items()
            if key.startswith(("llama_proj.", "ln_vision."))}


def read_blip2_tensors(location: str, revision: str | None, prefixes: tuple[str, ...]) -> dict:
    """The tensors of a BLIP-2 checkpoint whose names start with `prefixes`, read only from the
    safetensors files that hold them (a sharded Flan-T5-XXL checkpoint is mostly language
    model, never loaded here)."""
    from safetensors import safe_open
    from transformers.utils import cached_file

    index = cached_file(location, "model.safetensors.index.json", revision=revision,
                        _raise_exceptions_for_missing_entries=False)
    if index:
        weight_map = json.loads(Path(index).read_text())["weight_map"]
        files = sorted({file for key, file in weight_map.items() if key.startswith(prefixes)})
    else:
        files = ["model.safetensors"]
    tensors = {}
    for file in files:
        with safe_open(cached_file(location, file, revision=revision), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open is not a dict)
                if key.startswith(prefixes):
                    tensors[key] = handle.get_tensor(key)
    return tensors


class StopAtText:
    """A generate stopping criterion: a row is done once its generated text contains `text`
    (decoded, so it holds however the tokenizer splits "###")."""

    def __init__(self, text: str, tokenizer, prompt_length: int):
        self.text, self.tokenizer, self.prompt_length = text, tokenizer, prompt_length

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_length:])
        return torch.tensor([self.text in text for text in texts], device=input_ids.device)


def _without(prefix: str, tensors: dict) -> dict:
    return {key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)}


class MiniGPT4Captioner(Captioner):
    """MiniGPT-4 (Vicuna v0 7B/13B, or Llama-2-7B-chat) assembled from its parts.

    Args:
        config: `model` is a folder with `minigpt4.json` (see the module docstring); `device`,
            `dtype` (the ViT, projection and LM; the Q-Former stays float32), `prompt` (the
            question, with `{label}`), `max_new_tokens`, `trust_remote_code` (for the LM's
            config and tokenizer) as usual; `revision` applies to hub ids in the layout.

    Raises:
        UserError: a missing or malformed layout, a vision part that is not BLIP-2, a corrupt
            projection checkpoint, a projection whose shape fits neither the Q-Former nor 4 ViT
            tokens, or one whose output size is not the LM's hidden size.
    """

    name = "minigpt4"
    default_prompt = "This is a frame from a video of {label}. Describe what is happening in it."

    def __init__(self, config: CaptionerConfig):
        import torch

        super().__init__(config)
        # 1. The parts and the projection
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        folder = model_location(config.model)
        if not Path(folder).is_dir():
            raise UserError(f"--model {config.model}: MiniGPT-4 needs a local folder with "
                            f"{LAYOUT_FILE}, e.g. {LAYOUT_EXAMPLE}")
        self.layout = read_layout(folder)
        projection = load_projection(self.layout["projection"], f"--model {config.model}")
        weight = projection["llama_proj.weight"]

        # 2. The projection must fit both configs (checked before any weights are read)
        blip2, lm_config = self._part_config("vision"), self._part_config("lm")
        if blip2.model_type != "blip-2":
            raise UserError(f"--model {config.model}: vision {self.layout['vision']} is a "
                            f"{blip2.model_type!r} checkpoint; MiniGPT-4's vision part is a BLIP-2 "
                            f"one, e.g. {DEFAULT_VISION}")
        out_features, in_features = weight.shape
        width, queries = blip2.vision_config.hidden_size, blip2.qformer_config.hidden_size
        if in_features not in (queries, PATCHES_PER_TOKEN * width):
            raise UserError(
                f"--model {config.model}: the projection reads {in_features} features, neither "
                f"the Q-Former's {queries} (Vicuna MiniGPT-4) nor {PATCHES_PER_TOKEN} x the ViT's "
                f"{width} (Llama-2 MiniGPT-4); pass a MiniGPT-4 projection for "
                f"{self.layout['vision']}"
            )
        hidden = getattr(lm_config, "hidden_size", None)
        if out_features != hidden:
            raise UserError(
                f"--model {config.model}: the projection outputs {out_features} features but "
                f"the language model {self.layout['lm']} has hidden size {hidden}; pair "
                "pretrained_minigpt4.pth with Vicuna-13B (5120) and prerained_minigpt4_7b.pth "
                "with Vicuna-7B (4096)"
            )
        use_qformer = in_features == queries
        self.template = self.layout["template"] or ("vicuna" if use_qformer else "llama2")

        # 3. Vision: EVA ViT-g and its layer norm, then Q-Former queries or 4-token groups
        self._load_vision(blip2, use_qformer)
        if "ln_vision.weight" in projection:
            self.vision.post_layernorm.load_state_dict(
                {"weight": projection["ln_vision.weight"], "bias": projection["ln_vision.bias"]})
        self.projection = torch.nn.Linear(in_features, out_features)
        self.projection.load_state_dict({"weight": weight, "bias": projection["llama_proj.bias"]})
        self.projection.to(self.device, self.dtype).eval()

        # 4. Language model and tokenizer
        self._load_language_model()

    # --- loading -----------------------------------------------------------------------------

    def _part_failure(self, field: str, what: str, error: BaseException) -> UserError:
        """One line naming the folder, the layout field and what was tried there."""
        part = self.layout[field]
        detail = str(load_failure(part, what, error)).removeprefix(f"--model {part}: ")
        return UserError(f"--model {self.config.model}: {LAYOUT_FILE} {field!r} {part}: {detail} "
                         f"(relative paths are taken from {self.config.model})")

    def _part_config(self, field: str):
        from transformers import AutoConfig

        try:
            return AutoConfig.from_pretrained(
                self.layout[field], revision=self.config.revision,
                trust_remote_code=self.config.trust_remote_code and field == "lm")
        except Exception as error:
            raise self._part_failure(field, "a model config (config.json)", error) from error

    def _load_vision(self, blip2, use_qformer: bool) -> None:
        """The ViT (and the Q-Former with its query tokens when the projection reads them)."""
        import torch
        from transformers import AutoImageProcessor, Blip2QFormerModel, Blip2VisionModel

        vision = self.layout["vision"]
        prefixes = ("vision_model.", "query_tokens", "qformer.") if use_qformer else (
            "vision_model.",)
        try:
            tensors = read_blip2_tensors(vision, self.config.revision, prefixes)
            self.vision = Blip2VisionModel(blip2.vision_config)
            self.vision.load_state_dict(_without("vision_model.", tensors))
            self.qformer = self.query_tokens = None
            if use_qformer:
                self.qformer = Blip2QFormerModel(blip2.qformer_config)
                self.qformer.load_state_dict(_without("qformer.", tensors))
                self.query_tokens = tensors["query_tokens"].float().to(self.device)
            self.image_processor = AutoImageProcessor.from_pretrained(
                vision, revision=self.config.revision)
        except Exception as error:
            raise self._part_failure("vision", "the BLIP-2 vision and Q-Former weights",
                                     error) from error
        if not use_qformer:  # trained with a fresh, frozen ln_vision: plain normalisation
            with torch.no_grad():
                self.vision.post_layernorm.weight.fill_(1.0)
                self.vision.post_layernorm.bias.zero_()
        self.vision.to(self.device, self.dtype).eval()
        if self.qformer is not None:
            self.qformer.to(self.device, torch.float32).eval()

    def _load_language_model(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        lm = self.layout["lm"]
        try:  # legacy: as the official LlamaTokenizer(use_fast=False) of transformers 4.30
            self.tokenizer = AutoTokenizer.from_pretrained(
                lm, revision=self.config.revision, trust_remote_code=self.config.trust_remote_code,
                legacy=True)
            self.lm = AutoModelForCausalLM.from_pretrained(
                lm, revision=self.config.revision, dtype=self.dtype,
                trust_remote_code=self.config.trust_remote_code)
        except Exception as error:
            raise self._part_failure("lm", "a Vicuna/Llama causal LM and its tokenizer",
                                     error) from error
        self.lm.to(self.device).eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:  # Vicuna v0 has none (the official code uses $$)
            self.tokenizer.pad_token = self.tokenizer.unk_token or self.tokenizer.eos_token
        self.lm_revision = hub_commit(lm, self.config.revision)

    def describe_json(self) -> dict[str, Any]:
        return super().describe_json() | {
            "parts": {"vision": self.layout["vision"], "lm": self.layout["lm"],
                      "lm_revision": self.lm_revision, "projection": self.layout["projection"],
                      "template": self.template}}

    # --- captioning --------------------------------------------------------------------------

    def encode_images(self, images: Sequence[Any]):
        """Image embeddings in the LM's space: [frames, 32 (or patches / 4), LM hidden]."""
        import torch

        pixels = self.image_processor(images=list(images), return_tensors="pt")["pixel_values"]
        features = self.vision(pixel_values=pixels.to(self.device, self.dtype)).last_hidden_state
        if self.qformer is not None:
            queries = self.query_tokens.expand(features.shape[0], -1, -1)
            features = self.qformer(
                query_embeds=queries, encoder_hidden_states=features.float(),
                encoder_attention_mask=torch.ones(features.shape[:2], dtype=torch.long,
                                                  device=self.device),
            ).last_hidden_state
        else:  # drop the class token, then 4 consecutive patch tokens side by side
            patches = features[:, 1:, :]
            frames, count, width = patches.shape
            features = patches.reshape(frames, count // PATCHES_PER_TOKEN,
                                       width * PATCHES_PER_TOKEN)
        return self.projection(features.to(self.dtype))

    def layout_prompt(self, question: str) -> tuple[str, str]:
        """The conversation text before and after `<ImageHere>` for one question."""
        message = f"<Img>{IMAGE_HERE}</Img> {question}"
        text = SYSTEM + TEMPLATES[self.template].format(message=message)
        before, after = text.split(IMAGE_HERE)
        return before, after

    def prompt_ids(self, question: str) -> tuple[list[int], list[int]]:
        """The token ids before and after the image embeddings, as the official
        `get_context_emb` makes them: BOS only on the first segment."""
        before, after = self.layout_prompt(question)
        return (self.tokenizer(before, add_special_tokens=True).input_ids,
                self.tokenizer(after, add_special_tokens=False).input_ids)

    def embed_batch(self, prompts: Sequence[str], image_embeds):
        """Left-padded `inputs_embeds` and `attention_mask` with each frame's image embeddings
        spliced in at `<ImageHere>`."""
        import torch

        embed = self.lm.get_input_embeddings()
        rows = []
        for prompt, image in zip(prompts, image_embeds, strict=True):
            ids_before, ids_after = self.prompt_ids(prompt)
            rows.append(torch.cat([
                embed(torch.tensor(ids_before, device=self.device)), image.to(embed.weight.dtype),
                embed(torch.tensor(ids_after, device=self.device))]))
        length = max(row.shape[0] for row in rows)
        pad = embed(torch.tensor([self.tokenizer.pad_token_id], device=self.device))
        inputs = torch.stack([torch.cat([pad.expand(length - row.shape[0], -1), row])
                              for row in rows])
        mask = torch.stack([torch.arange(length, device=self.device) >= length - row.shape[0]
                            for row in rows]).long()
        return inputs, mask

    def reference_decoding(self) -> Decoding:
        """The official demo's sampling; Vicuna answers end at "###"."""
        stop = STOP[self.template]
        return Decoding(do_sample=True, top_p=0.9, temperature=1.0, repetition_penalty=1.05,
                        max_new_tokens=300, min_new_tokens=1, length_penalty=1.0,
                        stop=(stop,) if stop else (), reference=OFFICIAL_DEMO)

    def _generate(self, seeds: Sequence[int], **inputs) -> list[str]:
        from transformers import StoppingCriteriaList

        stop = STOP[self.template]
        prompt_length = inputs["input_ids"].shape[1] if "input_ids" in inputs else 0
        output = self.lm.generate(
            **inputs, **self.decoding.generate_kwargs(seeds, prompt_length),
            pad_token_id=self.tokenizer.pad_token_id,
            stopping_criteria=StoppingCriteriaList(
                [StopAtText(stop, self.tokenizer, prompt_length)] if stop else []),
        )
        output = output[:, prompt_length:]
        texts = self.tokenizer.batch_decode(output, skip_special_tokens=True)
        capped = capped_rows(output, [self.tokenizer.eos_token_id], self.decoding.max_new_tokens,
                             texts, self.decoding.stop)
        return [finished(text.split(stop)[0] if stop else text, cap)
                for text, cap in zip(texts, capped, strict=True)]

    def describe(self, requests: Sequence[ClipRequest]) -> list[list[str]]:
        """One caption per key frame: all frames of all clips in one generate call."""
        import torch

        images = [frame for request in requests for frame in request.frames]
        if not images:
            return [[] for _ in requests]
        prompts = [request.prompt for request in requests for _ in request.frames]
        with torch.inference_mode():
            inputs_embeds, attention_mask = self.embed_batch(prompts, self.encode_images(images))
            texts = self._generate(self.row_seeds(requests), inputs_embeds=inputs_embeds,
                                   attention_mask=attention_mask)
        return split_per_clip(texts, requests)

    def generate(self, prompts: Sequence[str], keys: Sequence[str] | None = None) -> list[str]:
        """Text-only generation with the LM: one user turn of the template, no system text."""
        import torch

        if not prompts:
            return []
        texts = [TEMPLATES[self.template].format(message=prompt) for prompt in prompts]
        starts_with_bos = texts[0].startswith(str(self.tokenizer.bos_token))  # llama2: "<s>[INST]"
        inputs = self.tokenizer(texts, padding=True, add_special_tokens=not starts_with_bos,
                                return_tensors="pt").to(self.device)
        inputs.pop("token_type_ids", None)
        with torch.inference_mode():
            return self._generate(self.text_seeds(prompts, keys), **inputs)
