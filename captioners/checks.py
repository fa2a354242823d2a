"""Caption checks: does a caption describe its label, and does it show a known failure.

Written to each sample's json and to the manifest columns `label_agreement` and
`caption_flags`, so a user filters a million captions with one parquet query
(`manifest[manifest.label_agreement < 0.5]`, `"repetition" in caption_flags`) before training.

`label_agreement` (0..1, None when no model wrote the text) is weights-free and fast: the
share of the label's content words that the model's own text contains, compared as word
stems ("riding" and "rides" both stem to "rid"; a stem of 4 letters or more also matches the
start of a longer word: "guitar" in "guitarist"). Only what the model wrote is read (the frame
captions or answers, or the llm-fused caption): never the label that template fusion puts in
front. Synonyms are not matched ("bike" vs "bicycle" scores 0): a low score asks for a look,
it does not prove a wrong caption.

`caption_flags`, any of:
- `repetition`: a loop, as language models fall into: the same 1 to 8 words three times in a
  row, or one sentence written twice.
- `truncated`: generation reached `max_new_tokens` (the caption was cut back to its last
  whole sentence).
- `mentions_watermark`: the text speaks of a watermark, logo, text, caption, subtitle or
  signature although the watermark stage looked at the clip and found none (a hallucination
  that teaches a video model to paint marks).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

FLAGS = ("repetition", "truncated", "mentions_watermark")
STOPWORDS = frozenset({
    "a", "an", "the", "and", "or", "of", "in", "on", "at", "to", "for", "with", "by", "from",
    "into", "onto", "over", "under", "up", "down", "out", "off", "is", "are", "was", "were",
    "be", "being", "been", "it", "its", "this", "that", "these", "those", "some", "something",
    "someone", "his", "her", "their", "he", "she", "they", "them", "him", "one", "two",
})
LOOP_WORDS = 8
LOOP_REPEATS = 3
MARK_WORDS = re.compile(r"\b(watermarks?|logos?|texts?|captions?|subtitles?|signatures?|"
                        r"copyright|lettering|writing|written)\b", re.IGNORECASE)
WATERMARK_CHECKED_CLEAN = "clean"  # watermark_action when the stage looked and found nothing


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def stem(word: str) -> str:
    """A crude English stem: plural and verb endings off, a doubled last consonant undone
    ("running" -> "run", "rides" -> "rid", "riding" -> "rid", "boxes" -> "box")."""
    for suffix in ("ing", "ed", "es", "s", "e"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "aeiouls":
        word = word[:-1]
    return word


def label_agreement(label: str | None, texts: Sequence[str]) -> float | None:
    """Share of the label's content words found (as stems) in `texts`; None without a label,
    text, or a content word in the label."""
    wanted = {stem(w) for w in words(label or "") if w not in STOPWORDS}
    found = {stem(w) for text in texts for w in words(text)}
    if not wanted or not found:
        return None
    hits = sum(1 for w in wanted if w in found
               or (len(w) >= 4 and any(f.startswith(w) for f in found)))
    return round(hits / len(wanted), 3)


def has_loop(text: str) -> bool:
    """The same 1..LOOP_WORDS words LOOP_REPEATS times in a row, or a sentence twice."""
    tokens = words(text)
    for size in range(1, LOOP_WORDS + 1):
        for start in range(len(tokens) - size * LOOP_REPEATS + 1):
            piece = tokens[start:start + size]
            if all(tokens[start + k * size:start + (k + 1) * size] == piece
                   for k in range(1, LOOP_REPEATS)):
                return True
    sentences = [" ".join(words(s)) for s in re.split(r"[.!?]+", text)]
    sentences = [s for s in sentences if len(s.split()) >= 3]
    return len(sentences) != len(set(sentences))


def caption_flags(texts: Sequence[str], truncated: bool,
                  watermark_action: str | None) -> list[str]:
    """The flags (in `FLAGS` order) that the model's `texts` raise."""
    flags = []
    if any(has_loop(text) for text in texts):
        flags.append("repetition")
    if truncated:
        flags.append("truncated")
    if watermark_action == WATERMARK_CHECKED_CLEAN and any(MARK_WORDS.search(t) for t in texts):
        flags.append("mentions_watermark")
    return flags


def caption_checks(label: str | None, model_texts: Sequence[str], truncated: bool,
                   watermark_action: str | None, scored: bool = True) -> dict:
    """The json fields and manifest columns `label_agreement` and `caption_flags` of one
    sample; `scored` False (the label captioner, which writes no text of its own) leaves
    the agreement None."""
    return {"label_agreement": label_agreement(label, model_texts) if scored else None,
            "caption_flags": caption_flags(model_texts, truncated, watermark_action)}
