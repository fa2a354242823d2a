"""InstructBLIP: BLIP-2 whose Q-Former also reads the instruction, through transformers.

`InstructBlipCaptioner` loads `InstructBlipProcessor` + `InstructBlipForConditionalGeneration`
(Salesforce/instructblip-vicuna-7b, -vicuna-13b, -flan-t5-xl, -flan-t5-xxl, or a local folder)
with exactly the BLIP-2 machinery of captioners/blip2.py: every key frame of every clip in one
`generate` call, `num_query_tokens` image tokens per prompt (repaired for old checkpoints),
left padding for Vicuna, Flan-T5 kept out of float16, greedy decoding.

What differs:
- The prompt is a plain instruction ("This is a video of {label}. Describe ..."), not
  "Question: ... Answer:"; the processor tokenizes it twice, for the language model and for the
  Q-Former (BERT tokenizer, its own padding), so the queries pick what the instruction asks.
- Vicuna checkpoints pad with "[PAD]" (id 32000) while their model config says pad id 0
  (transformers #25426): batched generation must use the tokenizer's id, which this captioner
  always passes to `generate`.
"""

from __future__ import annotations

from captioners.base import Captioner
from captioners.blip2 import Blip2Captioner


class InstructBlipCaptioner(Blip2Captioner):
    """InstructBLIP (Vicuna or Flan-T5) through `InstructBlipForConditionalGeneration`.

    Args:
        config: as for `Blip2Captioner`; `prompt` is an instruction with `{label}`.
    """

    name = "instructblip"
    default_prompt = "This is a frame from a video of {label}. Describe what is happening in it."
    default_fuse_prompt = Captioner.default_fuse_prompt
    model_type = "instructblip"
    model_class = "InstructBlipForConditionalGeneration"
    processor_class = "InstructBlipProcessor"
    example = "Salesforce/instructblip-vicuna-7b"
