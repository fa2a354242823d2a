"""The weights-free captioner: the class label in a sentence (the offline default).

It looks at no pixels, so it runs anywhere at once; the sentence pattern is chosen per clip
from the seed and the key, so a dataset does not repeat one phrasing a million times, and the
same key and seed always give the same caption.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from captioners.base import Captioner, CaptionerConfig, ClipRequest, fill

TEMPLATES = (
    "A video of {label}.",
    "A video showing {label}.",
    "Footage of {label}.",
    "A clip of {label}.",
    "{Label}, filmed on video.",
)


class LabelCaptioner(Captioner):
    """Caption = the label in one of `TEMPLATES` (or in `--prompt`, when given).

    Args:
        config: `prompt`, when set, is the one template used (with `{label}`).
    """

    name = "label"
    default_prompt = "{label}"
    per_frame = False

    def __init__(self, config: CaptionerConfig):
        super().__init__(config)
        self.model_id = None

    def describe(self, requests: Sequence[ClipRequest]) -> list[list[str]]:
        captions = []
        for request in requests:
            if not request.label:
                raise ValueError("no label: the label captioner needs a class label (a "
                                 "class-folder tree, --annotations, or a label in the json)")
            if self.config.prompt:
                captions.append([fill(self.config.prompt, request.label)])
                continue
            digest = hashlib.sha1(f"{self.config.seed}:{request.key}".encode()).digest()
            template = TEMPLATES[digest[0] % len(TEMPLATES)]
            label = request.label
            captions.append([template.replace("{Label}", label[:1].upper() + label[1:])
                             .replace("{label}", label)])
        return captions
