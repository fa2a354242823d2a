"""InstructBLIP: BLIP-2 whose Q-Former also reads the instruction, through transformers.

`InstructBlipCaptioner` loads `InstructBlipProcessor` + `InstructBlipForConditionalGeneration`
(Salesforce/instructblip-vicuna-7b, -vicuna-13b, -flan-t5-xl, -flan-t5-xxl, or a local folder)
with exactly the BLIP-2 machinery of captioners/blip2.py: every key frame of every clip in one
`generate` call, `num_query_tokens` image tokens per prompt (repaired for old checkpoints),
left padding for Vicuna, Flan-T5's `wo` layers kept in float32, LAVIS's decoding (5 beams, 256 new
tokens, repetition penalty 1.5).

What differs:
- The prompt is a plain instruction ("This is a video of {label}. Describe ..."), not
  "Question: ... Answer:"; it is tokenized twice, for the language model and for the Q-Former
  (BERT tokenizer), so the queries pick what the instruction asks.
- The Q-Former's text is padded on the right, as LAVIS pads it: the Q-Former adds absolute
  position embeddings, so left padding would shift a short instruction's positions and make a
  clip's caption depend on the longest prompt in its batch. The processor would pass it the
  language model's padding side (its tokenizer config's `padding_side`, "left" in some
  checkpoints), so the Q-Former text is tokenized again here.
- Vicuna checkpoints pad with "[PAD]" (id 32000) while their model config says pad id 0
  (transformers #25426): batched generation must use the tokenizer's id, which this captioner
  always passes to `generate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from captioners.base import Captioner
from captioners.blip2 import LAVIS_INSTRUCTBLIP, Blip2Captioner
from captioners.decoding import Decoding


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
    default_model = None
    question_format = "{question}"

    def reference_decoding(self) -> Decoding:
        """LAVIS's InstructBLIP `generate` defaults (Vicuna and Flan-T5 alike)."""
        return Decoding(num_beams=5, max_new_tokens=256, min_new_tokens=1,
                        repetition_penalty=1.5, length_penalty=1.0, reference=LAVIS_INSTRUCTBLIP)

    def prepare_inputs(self, prompts: Sequence[str], images: Sequence[Any]):
        """As BLIP-2's, with the Q-Former's instruction ids padded on the right."""
        inputs = super().prepare_inputs(prompts, images)
        qformer = self.processor.qformer_tokenizer(list(prompts), padding="longest",
                                                   padding_side="right", return_tensors="pt")
        inputs["qformer_input_ids"] = qformer["input_ids"].to(self.device)
        inputs["qformer_attention_mask"] = qformer["attention_mask"].to(self.device)
        return inputs
