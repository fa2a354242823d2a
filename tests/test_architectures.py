"""Every architecture the captioners support, as it really is: a tiny random model of each,
built from the real config, model, processor and tokenizer classes (tests/tiny_architectures.py)
and loaded through `--model DIR` by the captioner a user would name.

On each architecture:
- a batch of clips gives the captions that one call per clip gives (greedy decoding), in ONE
  `describe` call: no clip falls back to a silent one-by-one retry;
- the prompt's token ids are the reference's: for chat VLMs those of the processor's own
  `apply_chat_template(tokenize=True)` on the clip alone; for BLIP-2, InstructBLIP and MiniGPT-4
  those of the official code's prompt construction (LAVIS `blip2_opt.py`, `blip2_t5.py`,
  `blip2_vicuna_instruct.py`; MiniGPT-4 `conversation.py` and `minigpt_base.get_context_emb`),
  computed here with sentencepiece / tokenizers alone from the trained tokenizer files, in the
  slow Llama tokenizer's legacy mode the official code ran with (transformers 4.30).
"""

from __future__ import annotations

import re
import sys
from contextlib import nullcontext
from unittest import mock

import numpy as np
import pytest
import tiny_architectures as tiny
import torch
from PIL import Image

from captioners.base import CaptionerConfig, CaptionModel, ClipRequest, fill
from datakit.io.errors import UserError

BUILDERS = {  # name -> (captioner, builder)
    "blip2-opt": ("blip2", lambda folder: tiny.build_blip2(folder, "opt")),
    "blip2-t5": ("blip2", lambda folder: tiny.build_blip2(folder, "t5")),
    "instructblip-vicuna": ("instructblip", tiny.build_instructblip_vicuna),
    "minigpt4-vicuna": ("minigpt4", lambda folder: tiny.build_minigpt4(folder, "vicuna")),
    "minigpt4-llama2": ("minigpt4", lambda folder: tiny.build_minigpt4(folder, "llama2")),
    "llava": ("vlm", tiny.build_llava),
    "llava-onevision": ("vlm", tiny.build_llava_onevision),
    "qwen2.5-vl": ("vlm", tiny.build_qwen2_5_vl),
    "gemma3": ("vlm", tiny.build_gemma3),
    "smolvlm": ("vlm", tiny.build_smolvlm),
}
CHAT_VLMS = [name for name, (captioner, _) in BUILDERS.items() if captioner == "vlm"]
LABELS = ["playing guitar", "cat", "rocket launch"]  # prompts of different lengths
FRAMES = [2, 1, 3]  # key frames per clip
SYSTEM = ("Give the following image: <Img>ImageContent</Img>. You will be able to see the "
          "image once I provide it to you. Please answer my questions.")


class Built:
    """One architecture: its folder and a loader for its caption stage."""

    def __init__(self, name: str, tmp_path_factory):
        self.name = name
        self.captioner, builder = BUILDERS[name]
        self.tiny = builder(tmp_path_factory.mktemp(name))

    def stage(self, **settings) -> CaptionModel:
        """The caption stage on this model (`--decoding greedy`, 4 new tokens, CPU)."""
        handed = (mock.patch("transformers.AutoProcessor.from_pretrained",
                             return_value=self.tiny.processor)
                  if self.tiny.processor is not None else nullcontext())
        config = CaptionerConfig(captioner=self.captioner, model=str(self.tiny.folder),
                                 device="cpu", decoding="greedy", max_new_tokens=4,
                                 batch_size=len(FRAMES), **settings)
        with handed:
            return CaptionModel(config)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    cache: dict[str, Built] = {}

    def get(name: str) -> Built:
        if name not in cache:
            cache[name] = Built(name, tmp_path_factory)
        return cache[name]
    return get


@pytest.fixture(scope="module")
def stages(built):
    cache: dict[str, CaptionModel] = {}

    def get(name: str) -> CaptionModel:
        if name not in cache:
            cache[name] = built(name).stage()
        return cache[name]
    return get


def clip_batch(keys=("k0", "k1", "k2")) -> dict:
    rng = np.random.default_rng(7)
    return {"key": list(keys),
            "frames": [rng.integers(0, 255, (count, 40, 48, 3), dtype=np.uint8)
                       for count in FRAMES],
            "label": list(LABELS)}


def rows(batch: dict, index: int) -> dict:
    return {name: [values[index]] for name, values in batch.items()}


def captioner_request(captioner, batch: dict, index: int) -> ClipRequest:
    """Row `index` of a clip batch as the request the caption stage makes of it."""
    frames = [Image.fromarray(frame) for frame in batch["frames"][index]]
    label = batch["label"][index]
    return ClipRequest(batch["key"][index], frames, label, fill(captioner.prompt_template, label))


def spy(target, name: str) -> list:
    """Record the arguments of every call of `target.name` (the calls still go through)."""
    calls = []
    original = getattr(target, name)

    def recording(*args, **kwargs):
        calls.append((args, kwargs))
        return original(*args, **kwargs)
    setattr(target, name, recording)
    return calls


# --- (a) batches ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(BUILDERS))
def test_a_batch_gives_the_captions_of_single_calls_in_one_call(name, stages):
    stage = stages(name)
    calls = spy(stage.captioner, "describe")
    batch = clip_batch()

    together = stage(batch)
    assert [len(args[0]) for args, _ in calls] == [len(FRAMES)]  # one call, no retry per clip
    assert together["caption_error"] == ["", "", ""]
    alone = [stage(rows(batch, i)) for i in range(len(FRAMES))]
    assert together["frame_captions"] == [out["frame_captions"][0] for out in alone]
    per_clip = 1 if BUILDERS[name][0] == "vlm" else None
    assert [len(c) for c in together["frame_captions"]] == [per_clip or n for n in FRAMES]
    flat = [caption for clip in together["frame_captions"] for caption in clip]
    assert len(set(flat)) > 1, flat  # the frames reach the model: captions differ


# --- (b) prompt ids: chat VLMs ----------------------------------------------------------------


def unpadded(inputs, row: int) -> list[int]:
    return inputs["input_ids"][row][inputs["attention_mask"][row].bool()].tolist()


@pytest.mark.parametrize("name", CHAT_VLMS)
def test_chat_prompt_ids_are_the_processors_own(name, stages):
    captioner = stages(name).captioner
    processor = captioner.processor
    requests = [captioner_request(captioner, clip_batch(), i) for i in range(len(FRAMES))]
    inputs = captioner.prepare_inputs(requests)
    for row, request in enumerate(requests):
        parts = [{"type": "image", "image": frame} for frame in request.frames]
        own = processor.apply_chat_template(
            [{"role": "user", "content": [*parts, {"type": "text", "text": request.prompt}]}],
            add_generation_prompt=True, tokenize=True, return_dict=True)
        assert unpadded(inputs, row) == own["input_ids"][0]
    # --fuse llm: text-only chat, the same way
    calls = spy(captioner.model, "generate")
    captioner.generate(["a cat on a beach", "a dog"])
    sent = calls[0][1]
    for row, text in enumerate(["a cat on a beach", "a dog"]):
        own = processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "text", "text": text}]}],
            add_generation_prompt=True, tokenize=True, return_dict=True)
        assert unpadded(sent, row) == own["input_ids"][0]


def test_gemma3_prompt_starts_with_one_bos(stages):
    """Gemma-3's template writes `<bos>` and its tokenizer adds one: the prompt must hold it
    once (a second BOS is out of distribution for the model), for captions and --fuse llm."""
    captioner = stages("gemma3").captioner
    bos = captioner.tokenizer.bos_token_id
    ids = unpadded(captioner.prepare_inputs([captioner_request(captioner, clip_batch(), 0)]), 0)
    assert ids[0] == bos and ids.count(bos) == 1
    calls = spy(captioner.model, "generate")
    captioner.generate(["a cat"])
    ids = unpadded(calls[0][1], 0)
    assert ids[0] == bos and ids.count(bos) == 1


def test_llava_onevision_reads_a_clips_frames_as_one_tile_each(stages):
    """Several images of one clip are a multi-image prompt: each is one 32 px tile, 16 patch
    tokens and the image-newline token. Sent as one flat list, every frame was read as a lone
    image and tiled anyres (a base tile and 4 grid tiles)."""
    captioner = stages("llava-onevision").captioner
    requests = [captioner_request(captioner, clip_batch(), i) for i in (0, 2)]
    inputs = captioner.prepare_inputs(requests)
    image = captioner.model.config.image_token_index
    assert inputs["batch_num_images"].tolist() == [2, 3]
    assert (inputs["input_ids"] == image).sum(dim=1).tolist() == [2 * 17, 3 * 17]


# --- (b) prompt ids: BLIP-2, InstructBLIP (LAVIS) ---------------------------------------------


def reference_ids(built, text: str) -> list[int]:
    """`text` tokenized with the trained tokenizer file alone (no special tokens)."""
    path = built.tiny.reference
    if path.suffix == ".model":
        import sentencepiece

        return sentencepiece.SentencePieceProcessor(model_file=str(path)).encode(text)
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path)).encode(text, add_special_tokens=False).ids


def blip_inputs(stage):
    captioner = stage.captioner
    requests = [captioner_request(captioner, clip_batch(), i) for i in range(len(FRAMES))]
    prompts = [r.prompt for r in requests for _ in r.frames]
    images = [f for r in requests for f in r.frames]
    return prompts, captioner.prepare_inputs(prompts, images)


@pytest.mark.parametrize("name", ["blip2-opt", "blip2-t5", "instructblip-vicuna"])
def test_blip_prompt_ids_are_lavis(name, built, stages):
    """LAVIS puts the query outputs first, then the prompt as its LM tokenizer makes it: OPT
    `"</s>" + prompt` (blip2_opt.py), T5 `prompt + "</s>"` (blip2_t5.py), Vicuna
    `bos + prompt` with bos = "</s>" (blip2_vicuna_instruct.py sets bos_token to "</s>")."""
    stage = stages(name)
    tokenizer = stage.captioner.processor.tokenizer
    image = stage.captioner.model.config.image_token_index
    eos = tokenizer.convert_tokens_to_ids("</s>")  # OPT and Vicuna's BOS, T5's EOS
    prompts, inputs = blip_inputs(stage)
    for row, prompt in enumerate(prompts):
        text = reference_ids(built(name), prompt)
        expected = [eos, *text] if name != "blip2-t5" else [*text, eos]
        assert unpadded(inputs, row) == [image] * tiny.QUERY_TOKENS + expected


def test_instructblip_qformer_text_is_padded_right(built, stages):
    """LAVIS pads the Q-Former's instruction on the right (its positions are absolute); the
    checkpoint's tokenizer config says padding_side "left", which the processor would pass on.
    Its ids are BERT's: [CLS] + lower-cased words and punctuation + [SEP]."""
    prompts, inputs = blip_inputs(stages("instructblip-vicuna"))
    vocab = {token: i for i, token in enumerate(tiny.BERT_VOCAB)}
    mask = inputs["qformer_attention_mask"]
    assert mask[:, 0].all() and not mask.all()  # a shorter instruction is padded, at the end
    for row, prompt in enumerate(prompts):
        words = re.findall(r"\w+|[^\w\s]", prompt.lower())
        expected = [vocab["[CLS]"], *(vocab[w] for w in words), vocab["[SEP]"]]
        length = int(mask[row].sum())
        assert mask[row, :length].all() and not mask[row, length:].any()
        assert inputs["qformer_input_ids"][row, :length].tolist() == expected


# --- (b) prompt ids: MiniGPT-4 (official conversation) ----------------------------------------

OFFICIAL = {  # conversation.py: CONV_VISION_Vicuna0 / CONV_VISION_LLama2, one image turn
    "minigpt4-vicuna": SYSTEM + "###Human: <Img><ImageHere></Img> {q}###Assistant: ",
    "minigpt4-llama2": SYSTEM + "<s>[INST] <Img><ImageHere></Img> {q} [/INST] ",
}


def legacy_ids(built, text: str) -> list[int]:
    """The slow LlamaTokenizer of transformers 4.30 (legacy): the text is split at "<s>", each
    piece encoded by SentencePiece on its own (so each starts with "▁")."""
    pieces = text.split("<s>")
    ids = reference_ids(built, pieces[0]) if pieces[0] else []
    for piece in pieces[1:]:
        ids += [1, *reference_ids(built, piece)] if piece else [1]
    return ids


@pytest.mark.parametrize("name", ["minigpt4-vicuna", "minigpt4-llama2"])
def test_minigpt4_prompt_ids_are_the_official(name, built, stages):
    """get_context_emb: the text before <ImageHere> with BOS, the text after without, image
    embeddings between; what describe() feeds the LM are exactly those ids' embeddings."""
    captioner = stages(name).captioner
    request = captioner_request(captioner, clip_batch(), 1)
    before, after = OFFICIAL[name].format(q=request.prompt).split("<ImageHere>")
    expected = ([1, *legacy_ids(built(name), before)], legacy_ids(built(name), after))
    assert captioner.prompt_ids(request.prompt) == expected

    calls = spy(captioner.lm, "generate")
    captioner.describe([request])
    embeds = calls[0][1]["inputs_embeds"][0]
    table = captioner.lm.get_input_embeddings().weight
    head, tail = expected
    assert torch.equal(embeds[:len(head)], table[head])
    assert torch.equal(embeds[-len(tail):], table[tail])


@pytest.mark.parametrize("name", ["minigpt4-vicuna", "minigpt4-llama2"])
def test_minigpt4_fuse_prompt_has_one_bos(name, built, stages):
    """--fuse llm: one user turn of the template, no system text, ONE BOS (Llama-2's turn
    starts with "<s>" itself)."""
    captioner = stages(name).captioner
    turn = OFFICIAL[name].removeprefix(SYSTEM).replace("<Img><ImageHere></Img> ", "")
    calls = spy(captioner.lm, "generate")
    captioner.generate(["a cat on a beach."])
    text = turn.format(q="a cat on a beach.")
    expected = legacy_ids(built(name), text)
    expected = expected if text.startswith("<s>") else [1, *expected]
    assert unpadded(calls[0][1], 0) == expected


def test_vicuna_v0_folder_needs_sentencepiece_and_says_so(built, monkeypatch):
    """A Vicuna v0 folder has only tokenizer.model: without sentencepiece, the error names
    sentencepiece (transformers' own falls back to, and names, tiktoken)."""
    folder = built("minigpt4-vicuna").tiny.folder
    assert not (folder / "lm" / "tokenizer.json").exists()
    monkeypatch.setitem(sys.modules, "sentencepiece", None)
    with pytest.raises(UserError) as caught:
        built("minigpt4-vicuna").stage()
    message = str(caught.value)
    assert "\n" not in message and "tiktoken" not in message
    assert re.search(r"tokenizer\.model.*sentencepiece.*pip install 'datakit\[caption\]'",
                     message), message
