"""`--questions`: several questions per key frame, their answers fused into one caption.

VidRD built its captions by asking a vision-language model many questions; one prompt
("describe what is happening") leaves out what a text-to-video model also has to learn:
where it happens, who is in it, how it is filmed. With `--questions`, every key frame (every
clip, for `vlm`) is asked each question of a set, batched with the clip's other requests.
The default sets ask, in order: the action (naming the label), the scene, the subjects and
the camera (`FRAME_QUESTIONS` for per-frame captioners, `CLIP_QUESTIONS` for `vlm`; the texts
are below and in docs/caption.md). A single frame shows framing, not motion, so only the
per-clip set asks how the camera moves.
Each captioner wraps a question in its own prompt form (`Captioner.question_format`: BLIP-2's
"Question: ... Answer:", the VLM's "These are frames from one video. ..."). `--question TEXT`
(repeated) asks your own set instead; the first question plays the action's part.

Fusion (`captioners.fusion.fuse_answers`): the first question's answers are fused with the label
in time order, as `--fuse template` does with frame captions; each other question adds one
sentence, the answer most key frames gave (the earliest frame's on a tie), left out when an
earlier sentence already holds it. `--fuse llm` lists every answer in the fusion prompt.
"""

from __future__ import annotations

FRAME_QUESTIONS = (
    "This is a frame from a video of {label}. What is happening?",
    "Where is this? Describe the place.",
    "Who or what is in the picture? Describe them.",
    "Is this a close-up, a medium shot or a wide shot?",
)
CLIP_QUESTIONS = (
    "What happens in this video of {label}?",
    "Where is this? Describe the place.",
    "Who or what is in the video? Describe them.",
    "How does the camera move: is it still, does it pan, tilt, zoom or follow someone?",
)
ASPECTS = ("action", "scene", "subjects", "camera")


def default_questions(per_frame: bool) -> tuple[str, ...]:
    """The default question set for a per-frame or a per-clip captioner."""
    return FRAME_QUESTIONS if per_frame else CLIP_QUESTIONS
