"""How captions are decoded: each captioner's reference settings, and what `--decoding` changes.

`reference` (the default) decodes as each captioner's own reference code does, so captions
on real checkpoints read like the captions of the official demos: BLIP-2 with LAVIS's 5
beams and 30 new tokens, ending at a newline for OPT; InstructBLIP with LAVIS's 5 beams, 256
new tokens and repetition penalty 1.5; MiniGPT-4 sampling as its demo does (top-p 0.9,
temperature 1.0, repetition penalty 1.05, 300 new tokens); a chat VLM with the checkpoint's
own `generation_config` and 128 new tokens. docs/captioners.md names the file and line each
value comes from. `greedy` and `beam` (5 beams) change only the search: the length limit, the
repetition penalty and the stop texts stay the reference's.

Sampling is seeded per clip: every generated row (one key frame, or one clip for `vlm`) draws
from its own `torch.Generator`, seeded from `--seed`, the clip's key, the question and the
frame, so a caption never depends on the other clips of its batch and a rerun gives it again.
transformers' `generate` has one random stream for the whole batch, so the drawing is done
here, as the last logits processor of a greedy `generate`: it applies temperature, top-k and
top-p as transformers' sampler does, draws each row's token from that row's generator, and
leaves only that token for the greedy step to take.

The repetition penalty counts only the generated tokens for BLIP-2, InstructBLIP and
MiniGPT-4, as their reference code did (it generated from `inputs_embeds` alone, so the prompt
was never in `input_ids`). transformers' BLIP-2 classes pass the prompt ids, and its own
penalty, given left padding with `inputs_embeds` alone, exempts each row's first generated
tokens as many as the row has pads, which makes a caption depend on its batch; so that penalty
is applied here (`GeneratedTokensPenalty`). A chat VLM keeps transformers' own penalty over
prompt and answer, as its reference (transformers' `generate`) has it.

A caption that stops because it reached `max_new_tokens` is cut back to its last whole
sentence and marked `truncated`; one that ends by itself (an end token or a stop text) is kept
as written, full stop or not (BLIP-2 OPT answers are short phrases).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

DECODING_MODES = ("reference", "greedy", "beam")
BEAMS = 5  # `--decoding beam`, and LAVIS's BLIP-2 / InstructBLIP default
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s|$)")


@dataclass(frozen=True)
class Decoding:
    """The generation settings of one captioner (all of them go into each sample's json).

    Args:
        mode: reference, greedy or beam (see the module docstring).
        max_new_tokens: longest caption, in tokens.
        min_new_tokens: shortest caption, in tokens.
        num_beams: beam width (1: no beam search).
        do_sample: draw tokens (seeded per row) instead of taking the most likely.
        temperature, top_p, top_k: the sampling distribution (top_k 0: off).
        repetition_penalty: > 1 makes tokens already in the text less likely.
        penalize_prompt: the repetition penalty also counts the prompt's tokens (transformers'
            `generate`); False: only the generated ones (LAVIS, MiniGPT-4).
        length_penalty: beam search's length exponent.
        stop: texts that end a caption besides the end token ("\\n" for BLIP-2 OPT, "###"
            for MiniGPT-4 on Vicuna).
        seed: the run's `--seed`, from which every row's sampling seed is derived.
        reference: where the reference values come from.
    """

    mode: str = "reference"
    max_new_tokens: int = 30
    min_new_tokens: int = 1
    num_beams: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    penalize_prompt: bool = False
    length_penalty: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int = 0
    reference: str = ""

    def __post_init__(self):
        if self.mode not in DECODING_MODES:
            raise ValueError(f"--decoding: expected one of {', '.join(DECODING_MODES)}, got "
                             f"{self.mode!r}")
        if self.max_new_tokens < 1:
            raise ValueError(f"--max-new-tokens: must be at least 1, got {self.max_new_tokens}")

    def resolved(self, mode: str, max_new_tokens: int | None, seed: int) -> Decoding:
        """These reference settings under `--decoding mode`, `--max-new-tokens` (None: the
        reference length) and `--seed`."""
        search = {"reference": {},
                  "greedy": {"num_beams": 1, "do_sample": False},
                  "beam": {"num_beams": BEAMS, "do_sample": False}}
        return dataclasses.replace(
            self, mode=mode, seed=seed, **search.get(mode, {}),
            max_new_tokens=self.max_new_tokens if max_new_tokens is None else max_new_tokens)

    def record(self) -> dict[str, Any]:
        """The settings as json values."""
        return {**dataclasses.asdict(self), "stop": list(self.stop)}

    def generate_kwargs(self, seeds: Sequence[int], prompt_length: int = 0,
                        eos_token_id=None) -> dict[str, Any]:
        """Keyword arguments for transformers' `generate`, one seed per batch row.

        Args:
            seeds: each row's sampling seed (see `row_seed`); unused without sampling.
            prompt_length: how many columns of `input_ids` are prompt (0 when generating from
                `inputs_embeds` alone, or for an encoder-decoder's decoder).
            eos_token_id: the end token(s), when the model's generation config is not to be
                trusted (BLIP-2 OPT also ends at its newline token).
        """
        from transformers import LogitsProcessorList

        processors = LogitsProcessorList()
        penalty = self.repetition_penalty
        if penalty != 1.0 and not self.penalize_prompt:
            processors.append(GeneratedTokensPenalty(penalty, prompt_length))
            penalty = 1.0
        if self.do_sample:
            processors.append(SeededSampling(seeds, self.temperature, self.top_p, self.top_k))
        kwargs: dict[str, Any] = dict(
            max_new_tokens=self.max_new_tokens, min_new_tokens=self.min_new_tokens,
            num_beams=self.num_beams, do_sample=False, repetition_penalty=penalty,
            logits_processor=processors,
        )
        if self.num_beams > 1:
            kwargs["length_penalty"] = self.length_penalty
        if eos_token_id is not None:
            kwargs["eos_token_id"] = eos_token_id
        return kwargs


def row_seed(seed: int, key: str, question: int = 0, frame: int = 0) -> int:
    """The sampling seed of one generated row: from the run's seed, the clip's key, the
    question and the key frame only (never from the batch or the worker)."""
    digest = hashlib.blake2b(f"{seed}:{key}:{question}:{frame}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big") >> 1


class GeneratedTokensPenalty:
    """transformers' repetition penalty over each row's generated tokens only (the columns of
    `input_ids` after `prompt_length`): a logit of a token already generated is divided by
    `penalty` when positive, multiplied when negative."""

    def __init__(self, penalty: float, prompt_length: int = 0):
        self.penalty, self.prompt_length = penalty, prompt_length

    def __call__(self, input_ids, scores):
        import torch

        generated = input_ids[:, self.prompt_length:]
        if generated.shape[1] == 0:
            return scores
        seen = scores.gather(1, generated)
        seen = torch.where(seen < 0, seen * self.penalty, seen / self.penalty)
        return scores.scatter(1, generated, seen)


class SeededSampling:
    """A logits processor that samples each batch row from its own generator.

    It applies temperature, top-k and top-p (transformers' own warpers, in the order its
    sampler uses), draws row i's token from generator i by inverting the row's cumulative
    distribution with one uniform number, and returns scores that leave only that token, so a
    greedy `generate` takes exactly the drawn tokens.
    """

    def __init__(self, seeds: Sequence[int], temperature: float = 1.0, top_p: float = 1.0,
                 top_k: int = 0):
        import torch
        from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.warpers = []
        if temperature != 1.0:
            self.warpers.append(TemperatureLogitsWarper(temperature))
        if top_k:
            self.warpers.append(TopKLogitsWarper(top_k))
        if top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p))

    def __call__(self, input_ids, scores):
        import torch

        if scores.shape[0] != len(self.generators):
            raise ValueError(f"seeded sampling: {scores.shape[0]} rows but "
                             f"{len(self.generators)} seeds")
        for warper in self.warpers:
            scores = warper(input_ids, scores)
        cumulative = scores.float().softmax(dim=-1).cumsum(dim=-1)
        draws = torch.stack([torch.rand((), generator=g) for g in self.generators])
        draws = draws.to(cumulative.device).unsqueeze(1) * cumulative[:, -1:]
        tokens = torch.searchsorted(cumulative, draws).clamp(max=scores.shape[1] - 1)
        chosen = torch.full_like(scores, float("-inf"))
        return chosen.scatter_(1, tokens, 0.0)


class Generated(str):
    """A caption as generated, remembering whether it was cut at `max_new_tokens`."""

    truncated: bool

    def __new__(cls, text: str, truncated: bool = False):
        made = super().__new__(cls, text)
        made.truncated = truncated
        return made


def trim_to_sentence(text: str) -> str:
    """`text` up to its last whole sentence ("A dog runs. It jum" -> "A dog runs."); as it
    is when no sentence in it ends."""
    ends = list(_SENTENCE_END.finditer(text))
    return text[:ends[-1].end()].strip() if ends else text.strip()


def finished(text: str, capped: bool) -> Generated:
    """The caption of one row: trimmed to whole sentences when generation was capped."""
    text = " ".join(text.split())
    return Generated(trim_to_sentence(text) if capped else text, truncated=capped)


def capped_rows(new_tokens, end_ids: Sequence[int], max_new_tokens: int,
                texts: Sequence[str] = (), stop: Sequence[str] = ()) -> list[bool]:
    """Which rows of a `generate` output stopped only because they reached the length limit.

    Args:
        new_tokens: the generated ids after the prompt, [rows, length].
        end_ids: the ids that end a caption (end token, OPT's newline token).
        max_new_tokens: the limit generate ran with.
        texts: the rows decoded, for stop texts that no single token spells ("###").
        stop: those stop texts.
    """
    rows = new_tokens.tolist()
    if new_tokens.shape[1] < max_new_tokens:
        return [False] * len(rows)
    ends = set(end_ids)
    texts = list(texts) or [""] * len(rows)
    return [not ends.intersection(row) and not any(s in text for s in stop)
            for row, text in zip(rows, texts, strict=True)]
