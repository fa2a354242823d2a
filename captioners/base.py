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

Weights come from a hub id or a local folder (safetensors preferred); `trust_remote_code` is
off unless the user asks. A model that cannot be loaded is a `UserError`: one line naming
what was tried and what to pass instead.
"""

from __future__ import annotations

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
        captioner: one of `CAPTIONERS` (label, blip2, instructblip, minigpt4, vlm).
        model: hub id or local folder of the weights (None: the captioner's default; `label`
            needs none).
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
        max_new_tokens: generation length for each caption.
        trust_remote_code: allow a checkpoint's own Python code (off by default).
        backend: transformers, or vllm (vlm only, when vLLM is installed).
        seed: for sampling-free decoding this only picks label templates; kept for the record.
    """

    captioner: str = "label"
    model: str | None = None
    revision: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 8
    prompt: str | None = None
    fuse: str = "template"
    fuse_prompt: str | None = None
    max_new_tokens: int = 40
    trust_remote_code: bool = False
    backend: str = "transformers"
    seed: int = 0

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
        if self.max_new_tokens < 1:
            raise ValueError(f"--max-new-tokens: must be at least 1, got {self.max_new_tokens}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", self.device):
            raise ValueError(
                f"--device: expected auto, cpu, cuda or cuda:N, got {self.device!r}"
            )
        if self.captioner == "label" and self.fuse == "llm":
            raise ValueError("--fuse llm needs a captioner with a language model; the label "
                             "captioner has none (use --fuse template)")
        for name, text, fields in (("--prompt", self.prompt, ("label",)),
                                   ("--fuse-prompt", self.fuse_prompt, ("label", "captions"))):
            if text is not None:
                check_template(text, name, fields)


@dataclass
class ClipRequest:
    """One clip to describe.

    Args:
        key: the sample key (stable; label templates are picked from it).
        frames: key frames, RGB PIL images, in time order.
        label: the class label in words ("playing guitar"), or None.
        prompt: the prompt for each frame (or for the clip), label already filled in.
    """

    key: str
    frames: list[Any]
    label: str | None
    prompt: str


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

    def __init__(self, config: CaptionerConfig):
        self.config = config
        self.model_id: str | None = config.model
        self.revision: str | None = config.revision

    @abstractmethod
    def describe(self, requests: Sequence[ClipRequest]) -> list[list[str]]:
        """Captions for each request: one per key frame when `per_frame`, else one."""

    def generate(self, prompts: Sequence[str]) -> list[str]:
        """Text-only generation with the captioner's language model (for `--fuse llm`)."""
        raise UserError(f"--fuse llm: the {self.name} captioner has no language model to fuse "
                        "with; use --fuse template")

    @property
    def prompt_template(self) -> str:
        return self.config.prompt or self.default_prompt

    @property
    def fuse_template(self) -> str:
        return self.config.fuse_prompt or self.default_fuse_prompt

    def describe_json(self) -> dict[str, Any]:
        """What goes into each sample's json about the captioner."""
        return {"captioner": self.name, "model": self.model_id, "revision": self.revision,
                "backend": self.config.backend}


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


_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def normalize_label(label: str | None) -> str | None:
    """Class names as words: `playing_guitar` -> "playing guitar", `makingApplePie` -> "making
    apple pie", `adult+female+singing` -> "adult female singing"; acronyms stay (`ATM`)."""
    if label is None:
        return None
    text = _CAMEL.sub(" ", str(label).strip())
    words = re.sub(r"[_+\s]+", " ", text).strip().split(" ")
    words = [w.lower() if w[:1].isupper() and w[1:].islower() else w for w in words if w]
    return " ".join(words) or None


def _sentence(text: str) -> str:
    text = text.strip().rstrip(".").strip()
    return text[:1].upper() + text[1:] if text else text


def _comparable(text: str) -> str:
    return re.sub(r"[^a-z0-9 ]", "", text.lower()).strip()


def _mentions(text: str, label: str) -> bool:
    """Whether `text` names `label` as whole words ("cat" is not in "scattered")."""
    words = _comparable(label)
    return bool(words) and re.search(rf"\b{re.escape(words)}\b", _comparable(text)) is not None


def dedupe_captions(captions: Sequence[str]) -> list[str]:
    """Drop empty captions, repeats, and captions contained in another one (order kept)."""
    kept: list[str] = []
    for caption in captions:
        text = caption.strip().rstrip(".").strip()
        norm = _comparable(text)
        if not norm:
            continue
        if any(norm == _comparable(k) or norm in _comparable(k) for k in kept):
            continue
        kept = [k for k in kept if _comparable(k) not in norm]
        kept.append(text)
    return kept


def fuse_template(label: str | None, captions: Sequence[str]) -> str:
    """One sentence from the label and the de-duplicated frame captions.

    "playing guitar", ["a man plays a guitar", "close up of hands on a guitar"] ->
    "Playing guitar: a man plays a guitar, then close up of hands on a guitar."
    """
    parts = dedupe_captions(captions)
    body = ", then ".join(p[:1].lower() + p[1:] if p[:2] != p[:2].upper() else p for p in parts)
    if label and body:
        if _mentions(body, label):
            return _sentence(body) + "."
        return f"{_sentence(label)}: {body}."
    if body:
        return _sentence(body) + "."
    return f"{_sentence(label)}." if label else ""


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
    local = Path(model).expanduser().is_dir()
    where = "the local folder" if local else (
        "the hub id (not in the local Hugging Face cache, and the hub could not be reached)"
        if "offline" in reason.lower() or "connect" in reason.lower()
        or "resolve" in reason.lower() or "not found" in reason.lower()
        or "does not appear to have" in reason.lower() else "the hub id")
    return UserError(f"{option} {model}: could not load {what} from {where}: {reason[:300]}")


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
    returns the same number of rows: `key`, `frame_captions` (list of str per clip), `caption`
    (the fused caption), `prompt`, `fuse_prompt` (None unless llm fusion ran) and
    `caption_error` ("" when fine). Any other input column is passed through unchanged.
    """

    def __init__(self, config: CaptionerConfig):
        import time

        started = time.perf_counter()
        self.config = config
        self.captioner = load_captioner(config)
        self.stats = BatchStats()
        self.load_seconds = time.perf_counter() - started

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        import time

        started = time.perf_counter()
        keys = list(batch["key"])
        labels = list(batch.get("label") or [None] * len(keys))
        prompt = self.captioner.prompt_template
        requests = [
            ClipRequest(key, [_to_image(f) for f in frames], label, fill(prompt, label))
            for key, frames, label in zip(keys, batch["frames"], labels, strict=True)
        ]
        captions, errors = self._describe_all(requests)
        fused, fuse_prompts = self._fuse(requests, captions, errors)
        out = {name: list(values) for name, values in batch.items() if name != "frames"}
        out.update(
            frame_captions=captions,
            caption=fused,
            prompt=[r.prompt for r in requests],
            fuse_prompt=fuse_prompts,
            caption_error=errors,
        )
        self.stats.calls += 1
        self.stats.clips += len(keys)
        self.stats.seconds += time.perf_counter() - started
        return out

    def _describe_all(self, requests: list[ClipRequest]) -> tuple[list[list[str]], list[str]]:
        """Describe in chunks of `batch_size`; halve on out-of-memory; isolate a bad clip."""
        captions: list[list[str]] = [[] for _ in requests]
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
                    for offset, request in enumerate(chunk):
                        captions[start + offset], errors[start + offset] = self._one(request)
                    start += len(chunk)
                    continue
                errors[start] = _caption_failure(error)
                start += 1
                continue
            for offset, result in enumerate(results):
                captions[start + offset] = [str(c).strip() for c in result]
            start += len(chunk)
        return captions, errors

    def _one(self, request: ClipRequest) -> tuple[list[str], str]:
        try:
            return [str(c).strip() for c in self.captioner.describe([request])[0]], ""
        except Exception as error:
            if _is_out_of_memory(error):
                _empty_cache()
            return [], _caption_failure(error)

    def _fuse(self, requests, captions, errors) -> tuple[list[str], list[str | None]]:
        fused = ["" for _ in requests]
        prompts: list[str | None] = [None for _ in requests]
        llm_rows = []
        for i, (request, frame_captions) in enumerate(zip(requests, captions, strict=True)):
            if errors[i]:
                continue
            if self.config.fuse == "llm":
                listing = " ".join(f"{_sentence(c)}." for c in dedupe_captions(frame_captions))
                prompts[i] = fill(self.captioner.fuse_template, request.label, captions=listing)
                llm_rows.append(i)
            else:
                fused[i] = fuse_template(request.label, frame_captions)
        if llm_rows:
            try:
                outputs = self.captioner.generate([prompts[i] for i in llm_rows])
            except Exception as error:
                for i in llm_rows:
                    errors[i] = f"fusion failed: {_caption_failure(error)}"
                return fused, prompts
            for i, text in zip(llm_rows, outputs, strict=True):
                fused[i] = text.strip() or fuse_template(requests[i].label, captions[i])
        for i in range(len(requests)):
            if not errors[i] and not fused[i]:
                errors[i] = "empty caption: the model produced no text"
        return fused, prompts


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
