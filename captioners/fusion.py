"""Fusion: frame captions (or the answers to `--questions`) and the label as one caption.

`fuse_template` is the VidRD-style template: the label, then the de-duplicated frame captions
in time order, in one sentence ("Playing guitar: a man plays a guitar, then close up of hands
on a guitar."); the label is not repeated when the captions already name it as whole words.
`fuse_answers` adds one sentence per further `--questions` question. `normalize_label` turns
dataset class names into the words that prompts and captions use.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

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


def as_sentence(text: str) -> str:
    """A caption as a sentence: capitalised, without its closing full stop."""
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


def lower_first(text: str) -> str:
    """A caption as the middle of a sentence: "A man runs" -> "a man runs"; an acronym
    ("TV", "ATM") and the pronoun "I" keep their capitals."""
    first = text.split(" ", 1)[0]
    letters = re.sub(r"[^A-Za-z]", "", first)
    if first == "I" or first.startswith("I'") or (len(letters) > 1 and letters.isupper()):
        return text
    return text[:1].lower() + text[1:]


def fuse_template(label: str | None, captions: Sequence[str]) -> str:
    """One sentence from the label and the de-duplicated frame captions.

    "playing guitar", ["a man plays a guitar", "close up of hands on a guitar"] ->
    "Playing guitar: a man plays a guitar, then close up of hands on a guitar."
    """
    parts = dedupe_captions(captions)
    body = ", then ".join(lower_first(p) for p in parts)
    if label and body:
        if _mentions(body, label):
            return as_sentence(body) + "."
        return f"{as_sentence(label)}: {body}."
    if body:
        return as_sentence(body) + "."
    return f"{as_sentence(label)}." if label else ""


def majority_answer(answers: Sequence[str]) -> str:
    """The answer most key frames gave (compared without case and punctuation); the earliest
    one on a tie; "" when none has words."""
    kept = [(answer.strip().rstrip(".").strip(), _comparable(answer)) for answer in answers]
    kept = [(text, norm) for text, norm in kept if norm]
    if not kept:
        return ""
    votes: dict[str, int] = {}
    for _, norm in kept:
        votes[norm] = votes.get(norm, 0) + 1
    best = max(votes.values())
    return next(text for text, norm in kept if votes[norm] == best)


def fuse_answers(label: str | None, answers: Sequence[Sequence[str]]) -> str:
    """One caption from the answers to `--questions` (one list per question, one answer per
    key frame): the first question's answers fused with the label by `fuse_template`, then
    one sentence per other question, its majority answer, unless an earlier sentence already
    holds it."""
    sentences = [fuse_template(label, answers[0])] if answers else []
    for question_answers in answers[1:]:
        answer = majority_answer(question_answers)
        if answer and not any(_comparable(answer) in _comparable(s) for s in sentences):
            sentences.append(as_sentence(answer) + ".")
    return " ".join(s for s in sentences if s)
