"""Captioners: one small interface, one file per model family, label fused into the prompt.

The VidRD ("Reuse and Diffuse") recipe: caption a few key frames of a clip with a
vision-language model whose prompt names the clip's class label, then fuse the frame captions
and the label into one caption, with a template or with the captioner's own language model.

- A `Captioner` is loaded once, in the process that owns the device, and describes batches of
  `ClipRequest`s (key frames as RGB PIL images, the label, the prompt). A per-frame captioner
  (BLIP-2, InstructBLIP, MiniGPT-4) returns one caption per key frame; a clip-level one
  (`vlm`, `label`) returns a single caption made from all frames at once.
- `CaptionModel` is the batched model stage an engine runs: a plain callable class, loaded
  once, called on column batches (`{"key": [...], "frames": [...], "label": [...]}`) and
  returning columns, exactly the shape Ray Data's `map_batches` wants. It never raises for
  one bad clip: a clip that cannot be captioned gets a `caption_error`, and a CUDA
  out-of-memory halves the batch and retries, so nothing is lost.
- How a captioner generates is its `decoding` (captioners.decoding: the reference settings
  under `--decoding`); fusion is captioners.fusion; `--questions` is captioners.questions.

Weights come from a hub id or a local folder (safetensors preferred); `trust_remote_code` is
off unless the user asks. A model that cannot be loaded is a `UserError`: one line naming
what was tried and what to pass instead.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from captioners.decoding import DECODING_MODES, Decoding, row_seed
from captioners.fusion import as_sentence, dedupe_captions, fuse_answers
from datakit.io.errors import UserError

logger = logging.getLogger(__name__)

CAPTIONERS: dict[str, str] = {
    "label": "captioners.label:LabelCaptioner",
    "blip2": "captioners.blip2:Blip2Captioner",
    "instructblip": "captioners.instructblip:InstructBlipCaptioner",
    "minigpt4": "captioners.minigpt4:MiniGPT4Captioner",
    "vlm": "captioners.vlm:VLMCaptioner",
}
FUSE_MODES = ("template", "llm")
DTYPES = ("auto", "float32", "float16", "bfloat16")
BACKENDS = ("transformers", "vllm")
NO_LABEL = "something"  # what `{label}` becomes for a clip without a label


@dataclass(frozen=True)
class CaptionerConfig:
    """Which captioner, and how it runs.

    Args:
        captioner: one of `CAPTIONERS` (label, blip2, instructblip, minigpt4, vlm); blip2 by
            default, as `datakit caption` with no `--captioner`.
        model: hub id or local folder of the weights (None: the captioner's default, e.g.
            Salesforce/blip2-opt-2.7b for blip2; `label` needs none).
        revision: hub revision (branch, tag or commit) when `model` is a hub id.
        device: auto (cuda if available, else cpu), cpu, cuda or cuda:N.
        dtype: auto (bfloat16 on CUDA where supported, else float16 on CUDA, float32 on CPU),
            float32, float16 or bfloat16. Captioners may keep parts in float32 where a dtype
            is known to break them (Flan-T5 in float16).
        batch_size: clips per model call.
        prompt: per-frame (or per-clip) prompt template with `{label}`; None: the
            captioner's default.
        fuse: template (label + de-duplicated frame captions in one sentence) or llm (the
            captioner's language model summarises the frame captions with the label).
        fuse_prompt: the llm fusion prompt with `{label}` and `{captions}`; None: default.
        max_new_tokens: longest caption, in tokens (None: the captioner's reference length).
        trust_remote_code: allow a checkpoint's own Python code (off by default).
        backend: transformers, or vllm (vlm only, when vLLM is installed).
        seed: seeds sampling per clip (captioners.decoding.row_seed) and picks label templates.
        decoding: reference (each captioner's reference settings), greedy or beam (see
            captioners.decoding).
        questions: questions asked of every key frame (with `{label}`), whose answers are
            fused into the caption (captioners.questions); None: the one `prompt`.
    """

    captioner: str = "blip2"
    model: str | None = None
    revision: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 8
    prompt: str | None = None
    fuse: str = "template"
    fuse_prompt: str | None = None
    max_new_tokens: int | None = None
    trust_remote_code: bool = False
    backend: str = "transformers"
    seed: int = 0
    decoding: str = "reference"
    questions: tuple[str, ...] | None = None

    def __post_init__(self):
        if self.captioner not in CAPTIONERS:
            raise ValueError(
                f"--captioner: unknown captioner {self.captioner!r}; choose from "
                f"{', '.join(CAPTIONERS)}"
            )
        if self.fuse not in FUSE_MODES:
            raise ValueError(f"--fuse: expected one of {', '.join(FUSE_MODES)}, got {self.fuse!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"--dtype: expected one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.backend not in BACKENDS:
            raise ValueError(
                f"--backend: expected one of {', '.join(BACKENDS)}, got {self.backend!r}"
            )
        if self.backend == "vllm" and self.captioner != "vlm":
            raise ValueError("--backend vllm works with --captioner vlm only")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size: must be at least 1, got {self.batch_size}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError(f"--max-new-tokens: must be at least 1, got {self.max_new_tokens}")
        if self.decoding not in DECODING_MODES:
            raise ValueError(f"--decoding: expected one of {', '.join(DECODING_MODES)}, got "
                             f"{self.decoding!r}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", self.device):
            raise ValueError(
                f"--device: expected auto, cpu, cuda or cuda:N, got {self.device!r}"
            )
        if self.captioner == "label" and self.fuse == "llm":
            raise ValueError("--fuse llm needs a captioner with a language model; the label "
                             "captioner has none (use --fuse template)")
        for name, text, fields in (("--prompt", self.prompt, ("label",)),
                                   ("--fuse-prompt", self.fuse_prompt, ("label", "captions")),
                                   *(("--question", q, ("label",)) for q in self.questions or ())):
            if text is not None:
                check_template(text, name, fields)
        if self.questions is not None:
            if self.captioner == "label":
                raise ValueError("--questions needs a captioner with a model; the label "
                                 "captioner has none")
            if not self.questions:
                raise ValueError("--questions: the question set is empty")
            if self.prompt is not None:
                raise ValueError("--prompt and --questions exclude each other: ask your own "
                                 "questions with --question")


@dataclass
class ClipRequest:
    """One clip to describe.

    Args:
        key: the sample key (stable; label templates are picked from it).
        frames: key frames, RGB PIL images, in time order.
        label: the class label in words ("playing guitar"), or None.
        prompt: the prompt for each frame (or for the clip), label already filled in.
        question: which question of `--questions` the prompt asks (0 without them); with the
            key it seeds the request's sampling.
    """

    key: str
    frames: list[Any]
    label: str | None
    prompt: str
    question: int = 0


class Captioner(ABC):
    """A vision-language model that describes clips.

    Subclasses set the class attributes, load their model in `__init__` (raising `UserError`
    for a model that cannot be loaded) and implement `describe`; those with a language model
    implement `generate` too, which `--fuse llm` uses.
    """

    name: ClassVar[str]
    default_prompt: ClassVar[str]  # with {label}
    default_fuse_prompt: ClassVar[str] = (
        "These are descriptions of frames from one video of {label}: {captions} "
        "Write one sentence describing the whole video."
    )
    per_frame: ClassVar[bool] = True  # False: one caption per clip from all its key frames
    question_format: ClassVar[str] = "{question}"  # a --questions question as this one's prompt

    def __init__(self, config: CaptionerConfig):
        self.config = config
        self.model_id: str | None = config.model
        self.revision: str | None = config.revision

    @abstractmethod
    def describe(self, requests: Sequence[ClipRequest]) -> list[list[str]]:
        """Captions for each request: one per key frame when `per_frame`, else one."""

    def generate(self, prompts: Sequence[str], keys: Sequence[str] | None = None) -> list[str]:
        """Text-only generation with the captioner's language model (for `--fuse llm`); `keys`
        (the clips') seed the sampling, else the prompts do."""
        raise UserError(f"--fuse llm: the {self.name} captioner has no language model to fuse "
                        "with; use --fuse template")

    def reference_decoding(self) -> Decoding | None:
        """The reference code's generation settings (None: no language model generates)."""
        return None

    @functools.cached_property
    def decoding(self) -> Decoding | None:
        """The reference settings under `--decoding`, `--max-new-tokens` and `--seed`."""
        reference = self.reference_decoding()
        if reference is None:
            return None
        return reference.resolved(self.config.decoding, self.config.max_new_tokens,
                                  self.config.seed)

    def row_seeds(self, requests: Sequence[ClipRequest]) -> list[int]:
        """One sampling seed per generated row, in `describe`'s row order: per key frame, or
        per clip when not `per_frame`."""
        return [row_seed(self.config.seed, request.key, request.question, frame)
                for request in requests
                for frame in range(len(request.frames) if self.per_frame else 1)]

    def text_seeds(self, prompts: Sequence[str], keys: Sequence[str] | None = None) -> list[int]:
        """The sampling seeds of `generate`'s rows (question -1: fusion)."""
        return [row_seed(self.config.seed, key, -1)
                for key in (keys if keys is not None else prompts)]

    @property
    def prompt_template(self) -> str:
        return self.config.prompt or self.default_prompt

    @property
    def fuse_template(self) -> str:
        return self.config.fuse_prompt or self.default_fuse_prompt

    def describe_json(self) -> dict[str, Any]:
        """What goes into each sample's json about the captioner."""
        return {"captioner": self.name, "model": self.model_id, "revision": self.revision,
                "backend": self.config.backend,
                "decoding": self.decoding.record() if self.decoding else None}


# --- prompts and fusion ----------------------------------------------------------------------


def check_template(text: str, option: str, fields: Sequence[str]) -> None:
    """A prompt template may use only the named `{fields}` (and `{{`/`}}` for braces)."""
    import string

    try:
        used = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as error:
        raise ValueError(f"{option}: not a valid template ({error}): {text!r}") from None
    unknown = used - set(fields)
    if unknown:
        raise ValueError(
            f"{option}: unknown field {{{sorted(unknown)[0]}}}; use "
            + ", ".join(f"{{{f}}}" for f in fields)
        )


def fill(template: str, label: str | None, **more: str) -> str:
    """A template with `{label}` (and any `more` fields) filled in."""
    return template.format(label=label or NO_LABEL, **more)


# --- loading helpers shared by the model captioners ------------------------------------------


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when available, else 'cpu'; a CUDA device that is not there is a
    UserError."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {device}: CUDA is not available here; use --device cpu")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise UserError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s)")
    if device == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps: MPS is not available here; use --device cpu")
    return device


def resolve_dtype(dtype: str, device: str):
    """The torch dtype for `--dtype` on `device` ('auto': bf16/fp16 on CUDA, fp32 elsewhere)."""
    import torch

    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return getattr(torch, dtype)


def model_location(model: str | None, option: str = "--model") -> str:
    """`model` as given when it is a local folder or looks like a hub id; else a UserError.

    Raises:
        UserError: no model given, a path that does not exist, or a path that is a file.
    """
    if not model:
        raise UserError(f"{option}: this captioner needs a model (a hub id or a local folder)")
    path = Path(model).expanduser()
    if path.is_dir():
        return str(path)
    if path.exists():
        raise UserError(f"{option} {model}: is a file; pass the model's folder")
    looks_local = model.startswith((".", "/", "~")) or os.sep in model.strip("/").replace(
        "/", os.sep, 1
    ) and model.count("/") > 1
    if looks_local:
        raise UserError(f"{option} {model}: no such folder")
    return model


def load_failure(model: str, what: str, error: BaseException,
                 option: str = "--model") -> UserError:
    """The one-line error for a model that did not load: what was tried, what to pass.

    Args:
        model: the hub id or folder as the user gave it.
        what: what could not be loaded ("the model weights", "a processor").
        error: the loader's exception (its first line is quoted).
        option: the option that named the model (`--model`, `--score-clip`).
    """
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    missing = missing_tokenizer_packages(model)
    if missing and re.search(r"tiktoken|sentencepiece|protobuf", reason, re.IGNORECASE):
        return UserError(
            f"{option} {model}: its tokenizer is a SentencePiece model (tokenizer.model, no "
            f"tokenizer.json), which transformers reads with {' and '.join(missing)}, not "
            "installed here: pip install 'datakit[caption]'")
    local = Path(model).expanduser().is_dir()
    where = "the local folder" if local else (
        "the hub id (not in the local Hugging Face cache, and the hub could not be reached)"
        if "offline" in reason.lower() or "connect" in reason.lower()
        or "resolve" in reason.lower() or "not found" in reason.lower()
        or "does not appear to have" in reason.lower() else "the hub id")
    return UserError(f"{option} {model}: could not load {what} from {where}: {reason[:300]}")


def missing_tokenizer_packages(model: str) -> list[str]:
    """The packages transformers needs, and that are not installed, to read the tokenizer of
    `model` (a folder, or a hub id in the local cache): a SentencePiece `tokenizer.model`
    without a `tokenizer.json` (Vicuna v0 as FastChat's apply_delta writes it) is converted
    with `sentencepiece` and `protobuf`; without them transformers falls back to, and names,
    tiktoken."""
    import importlib.util

    from transformers.utils import cached_file

    def present(filename: str) -> bool:
        try:
            return cached_file(model, filename, local_files_only=True,
                               _raise_exceptions_for_missing_entries=False,
                               _raise_exceptions_for_connection_errors=False) is not None
        except (OSError, ValueError):
            return False

    def installed(module: str) -> bool:
        try:
            return importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            return False

    if not present("tokenizer.model") or present("tokenizer.json"):
        return []
    return [package for package, module in (("sentencepiece", "sentencepiece"),
                                            ("protobuf", "google.protobuf"))
            if not installed(module)]


def resolved_revision(model: str, revision: str | None) -> str | None:
    """The commit a hub id resolved to, read from the local Hugging Face cache (where
    `from_pretrained` just loaded it); `revision` as given for a local folder or when the
    cache does not say."""
    if Path(model).expanduser().is_dir():
        return revision
    from huggingface_hub import try_to_load_from_cache

    path = try_to_load_from_cache(model, "config.json", revision=revision)
    parts = Path(path).parts if isinstance(path, str) else ()
    if "snapshots" in parts[:-1]:
        commit = parts[parts.index("snapshots") + 1]
        if re.fullmatch(r"[0-9a-f]{40}", commit):
            return commit
    return revision


# --- registry --------------------------------------------------------------------------------


def captioner_class(name: str) -> type[Captioner]:
    module_name, _, class_name = CAPTIONERS[name].partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def load_captioner(config: CaptionerConfig) -> Captioner:
    """Build (and load) the captioner a config names."""
    return captioner_class(config.captioner)(config)


# --- the batched model stage -----------------------------------------------------------------


@dataclass
class BatchStats:
    """Where the model stage's time went (for the benchmark and the run summary)."""

    calls: int = 0
    clips: int = 0
    seconds: float = 0.0
    oom_halvings: int = 0
    errors: dict[str, int] = field(default_factory=dict)


def _is_out_of_memory(error: BaseException) -> bool:
    import sys

    torch = sys.modules.get("torch")  # not loaded: no model ran, so no CUDA out-of-memory
    if torch is None:
        return False

    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return isinstance(error, oom) or "out of memory" in str(error).lower()


def _to_image(frame: Any):
    from PIL import Image

    if isinstance(frame, Image.Image):
        return frame.convert("RGB")
    return Image.fromarray(np.asarray(frame, dtype=np.uint8)).convert("RGB")


class CaptionModel:
    """The batched model part of the caption stage (a plain callable class, no engine import).

    Args:
        config: which captioner and how it runs; the model is loaded here, once.

    Call it with a column batch: `key` (list of str), `frames` (list of uint8 arrays
    (N, H, W, 3) or lists of PIL images) and `label` (list of str or None, as words). It
    returns the same number of rows: `key`, `frame_captions` (list of str per clip: the
    answers to the prompt, or to the first of `--questions`), `caption` (the fused caption),
    `prompt`, `questions` (the prompts asked, None without `--questions`), `answers` (one list
    per question, one answer per key frame), `truncated` (a generation of the clip reached
    `max_new_tokens`), `fuse_prompt` (None unless llm fusion ran) and `caption_error` (""
    when fine). Any other input column is passed through unchanged.

    With `--questions`, each question of a clip is one request, and `--batch-size` counts
    requests, so a model call holds as many rows as without questions.
    """

    def __init__(self, config: CaptionerConfig):
        import time

        started = time.perf_counter()
        self.config = config
        self.captioner = load_captioner(config)
        self.stats = BatchStats()
        self.load_seconds = time.perf_counter() - started

    def prompt_templates(self) -> list[str]:
        """The prompts each clip is asked (with `{label}`): the one prompt, or every question
        in the captioner's question form."""
        if self.config.questions is None:
            return [self.captioner.prompt_template]
        form = self.captioner.question_format
        return [form.replace("{question}", question) for question in self.config.questions]

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        import time

        started = time.perf_counter()
        keys = list(batch["key"])
        labels = list(batch.get("label") or [None] * len(keys))
        templates = self.prompt_templates()
        asked = len(templates)
        requests = []
        for key, frames, label in zip(keys, batch["frames"], labels, strict=True):
            images = [_to_image(f) for f in frames]
            requests += [ClipRequest(key, images, label, fill(template, label), question=index)
                         for index, template in enumerate(templates)]
        texts, truncated, errors = self._describe_all(requests)
        clips = range(len(keys))
        answers = [texts[i * asked:(i + 1) * asked] for i in clips]
        clip_errors = [next((e for e in errors[i * asked:(i + 1) * asked] if e), "") for i in clips]
        firsts = [requests[i * asked] for i in clips]
        fused, fuse_prompts, fuse_truncated = self._fuse(firsts, answers, clip_errors)
        out = {name: list(values) for name, values in batch.items() if name != "frames"}
        out.update(
            frame_captions=[a[0] for a in answers],
            caption=fused,
            prompt=[r.prompt for r in firsts],
            questions=[None if self.config.questions is None else
                       [r.prompt for r in requests[i * asked:(i + 1) * asked]] for i in clips],
            answers=answers,
            truncated=[any(truncated[i * asked:(i + 1) * asked]) or fuse_truncated[i]
                       for i in clips],
            fuse_prompt=fuse_prompts,
            caption_error=clip_errors,
        )
        self.stats.calls += 1
        self.stats.clips += len(keys)
        self.stats.seconds += time.perf_counter() - started
        return out

    def _describe_all(self, requests: list[ClipRequest]
                      ) -> tuple[list[list[str]], list[bool], list[str]]:
        """Describe in chunks of `batch_size`; halve on out-of-memory; isolate a bad clip.
        Returns the captions, whether any caption of a request was capped, and the errors."""
        captions: list[list[str]] = [[] for _ in requests]
        truncated = [False] * len(requests)
        errors = [""] * len(requests)
        size = max(1, self.config.batch_size)
        start = 0
        while start < len(requests):
            chunk = requests[start:start + size]
            try:
                results = self.captioner.describe(chunk)
            except Exception as error:
                if _is_out_of_memory(error) and size > 1:
                    _empty_cache()
                    size = max(1, size // 2)
                    self.stats.oom_halvings += 1
                    logger.warning("out of memory: captioning in batches of %d from now on", size)
                    continue
                if len(chunk) > 1:  # find the clip that breaks the batch: one at a time
                    logger.warning("a batch of %d clips failed (%s): captioning them one at a "
                                   "time", len(chunk), _caption_failure(error))
                    for offset, request in enumerate(chunk):
                        captions[start + offset], truncated[start + offset], \
                            errors[start + offset] = self._one(request)
                    start += len(chunk)
                    continue
                errors[start] = _caption_failure(error)
                start += 1
                continue
            for offset, result in enumerate(results):
                captions[start + offset], truncated[start + offset] = _texts(result)
            start += len(chunk)
        return captions, truncated, errors

    def _one(self, request: ClipRequest) -> tuple[list[str], bool, str]:
        try:
            return *_texts(self.captioner.describe([request])[0]), ""
        except Exception as error:
            if _is_out_of_memory(error):
                _empty_cache()
            return [], False, _caption_failure(error)

    def _fuse(self, requests, answers, errors
              ) -> tuple[list[str], list[str | None], list[bool]]:
        """Each clip's caption from its answers (`answers[clip][question][frame]`)."""
        fused = ["" for _ in requests]
        prompts: list[str | None] = [None for _ in requests]
        truncated = [False for _ in requests]
        llm_rows = []
        for i, (request, clip_answers) in enumerate(zip(requests, answers, strict=True)):
            if errors[i]:
                continue
            if self.config.fuse == "llm":
                listing = " ".join(f"{as_sentence(c)}." for question in clip_answers
                                   for c in dedupe_captions(question))
                prompts[i] = fill(self.captioner.fuse_template, request.label, captions=listing)
                llm_rows.append(i)
            else:
                fused[i] = fuse_answers(request.label, clip_answers)
        if llm_rows:
            try:
                outputs = self.captioner.generate([prompts[i] for i in llm_rows],
                                                  keys=[requests[i].key for i in llm_rows])
            except Exception as error:
                for i in llm_rows:
                    errors[i] = f"fusion failed: {_caption_failure(error)}"
                return fused, prompts, truncated
            for i, text in zip(llm_rows, outputs, strict=True):
                truncated[i] = bool(getattr(text, "truncated", False))
                fused[i] = text.strip() or fuse_answers(requests[i].label, answers[i])
        for i in range(len(requests)):
            if not errors[i] and not fused[i]:
                errors[i] = "empty caption: the model produced no text"
        return fused, prompts, truncated


def _texts(result: Sequence[str]) -> tuple[list[str], bool]:
    """A request's captions as plain strings, and whether generation capped any of them
    (captioners.decoding.Generated)."""
    return ([str(c).strip() for c in result],
            any(getattr(c, "truncated", False) for c in result))


def _caption_failure(error: BaseException) -> str:
    if _is_out_of_memory(error):
        return "out of memory: this clip does not fit even alone (smaller --keyframes or dtype)"
    if isinstance(error, UserError):
        return f"caption failed: {error}"
    return f"caption failed: {type(error).__name__}: {error}"


def _empty_cache() -> None:
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
