"""Read the prompts of a `datakit generate` run.

Two formats, chosen by the file's suffix:
- `.txt` (or anything else): one prompt per line; blank lines and lines starting with `#`
  are skipped. Every chunk of the video gets the same prompt. The id is the prompt's index
  among kept lines, a readable slug of its first words and a short hash of its whole text
  (`00003_a-cat-running-on-the-beach_1f2e3d4c`), stable and dot-free.
- `.jsonl`: one story per line, `{"id": ..., "prompts": ["chunk 1", "chunk 2", ...],
  "seed": ...}`; chunk i uses `prompts[i]` and the last prompt carries on. `id` and `seed`
  are optional (defaults: the line's index and `--seed`).
Every problem is a one-line `UserError` naming the file and line.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from datakit.io.errors import UserError

_ID = re.compile(r"^[A-Za-z0-9_\-]+$")
SLUG_CHARS = 40


def slug(text: str, limit: int = SLUG_CHARS) -> str:
    """Lower-case ASCII words of `text` joined by `-`, cut at a word boundary to `limit`
    characters (`"A cat, running!"` -> `a-cat-running`); `prompt` when no word is left."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    words = re.findall(r"[a-z0-9]+", ascii_text.lower())
    out = ""
    for word in words:
        candidate = f"{out}-{word}" if out else word[:limit]
        if len(candidate) > limit:
            break
        out = candidate
    return out or "prompt"


@dataclass(frozen=True)
class Story:
    """One video to generate.

    Args:
        id: output name (`OUT/{id}.mp4`) and manifest key; dot-free.
        prompts: one prompt per chunk; the last one repeats for any further chunks.
        seed: the seed of this video, or None for the run's `--seed`.
        where: `file:line` the story came from, for messages.
    """

    id: str
    prompts: tuple[str, ...]
    seed: int | None
    where: str

    def prompt_for(self, chunk: int) -> str:
        return self.prompts[min(chunk, len(self.prompts) - 1)]


def _txt(path: Path, lines: list[str]) -> list[Story]:
    stories = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        digest = hashlib.sha1(text.encode()).hexdigest()[:8]
        story_id = f"{len(stories):05d}_{slug(text)}_{digest}"
        stories.append(Story(story_id, (text,), None, f"{path}:{number}"))
    return stories


def _jsonl(path: Path, lines: list[str]) -> list[Story]:
    stories = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except ValueError as error:
            raise UserError(f"{where}: not valid JSON ({error})") from None
        if not isinstance(record, dict):
            raise UserError(f"{where}: expected an object with \"prompts\", "
                            f"got {type(record).__name__}")
        prompts = record.get("prompts")
        if isinstance(prompts, str):
            prompts = [prompts]
        if not isinstance(prompts, list) or not prompts:
            raise UserError(f"{where}: \"prompts\" must be a non-empty list of strings")
        for prompt in prompts:
            if not isinstance(prompt, str) or not prompt.strip():
                raise UserError(f"{where}: blank prompt in \"prompts\"")
        story_id = str(record.get("id", f"{len(stories):05d}"))
        if not _ID.match(story_id):
            raise UserError(f"{where}: id {story_id!r} must use only letters, digits, _ and -")
        seed = record.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
            raise UserError(f"{where}: \"seed\" must be a non-negative integer, got {seed!r}")
        stories.append(Story(story_id, tuple(p.strip() for p in prompts), seed, where))
    return stories


def load_prompts(path: str | Path) -> list[Story]:
    """Read a prompts file (`.txt` or `.jsonl`) into stories; raise `UserError` on bad input."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such prompts file")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()  # a BOM (Windows) is dropped
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not UTF-8 text ({error})") from None
    stories = _jsonl(path, lines) if path.suffix == ".jsonl" else _txt(path, lines)
    if not stories:
        raise UserError(f"{path}: no prompts (empty, or only blank and # lines)")
    seen: dict[str, str] = {}
    for story in stories:
        if story.id in seen:
            raise UserError(f"{story.where}: id {story.id!r} already used at {seen[story.id]}")
        seen[story.id] = story.where
    return stories


def check_prompt_lengths(stories: list[Story], count_tokens, limit: int) -> None:
    """Raise `UserError` for the first prompt longer than `limit` tokens (it would be cut)."""
    for story in stories:
        for prompt in story.prompts:
            tokens = count_tokens(prompt)
            if tokens > limit:
                raise UserError(f"{story.where}: prompt is {tokens} tokens, longer than the "
                                f"model's limit of {limit}")
