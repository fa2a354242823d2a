"""BLIP-2 (OPT, Flan-T5) and InstructBLIP captioners on tiny random checkpoints.

Each checkpoint is built once per module with `captioners.tiny`, saved with `save_pretrained`
and loaded through `--captioner ... --model DIR`, the path a user takes.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from PIL import Image
from skimage import data

from captioners.base import CaptionerConfig, CaptionModel, ClipRequest, load_captioner
from captioners.tiny import build_tiny_blip2, build_tiny_instructblip, install_in_hub_cache
from datakit.io.errors import UserError


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("blip")
    return {"opt": build_tiny_blip2(root / "opt", "opt"), "t5": build_tiny_blip2(root / "t5", "t5"),
            "instructblip": build_tiny_instructblip(root / "instructblip")}


@pytest.fixture(scope="module")
def photos():
    return [Image.fromarray(image()) for image in (data.astronaut, data.chelsea, data.coffee)]


def load(folder, captioner="blip2", **options):
    options.setdefault("max_new_tokens", 5)
    options.setdefault("decoding", "greedy")  # random tiny weights: beams may hide the image
    return load_captioner(CaptionerConfig(captioner=captioner, model=str(folder), **options))


def requests(photos, prompts=("Question: is this a cat ? Answer:", "Question: what ? Answer:")):
    """Two clips with prompts of different lengths (so a batch needs padding)."""
    return [ClipRequest("a", photos[:2], "cat", prompts[0]),
            ClipRequest("b", photos[2:], None, prompts[1])]


def spy(monkeypatch, owner, name="generate"):
    """Record the keyword arguments of `owner.name` calls and pass them through."""
    calls = []
    original = getattr(owner, name)

    def recording(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, recording)
    return calls


def one_by_one(captioner, clips):
    return [[captioner.describe([ClipRequest(c.key, [f], c.label, c.prompt)])[0][0]
             for f in c.frames] for c in clips]


def test_opt_batch_is_left_padded_with_query_tokens_per_prompt(folders, photos, monkeypatch):
    saved = json.loads((folders["opt"] / "config.json").read_text())
    image_id, queries = saved["image_token_index"], saved["num_query_tokens"]
    captioner = load(folders["opt"])
    calls = spy(monkeypatch, captioner.model)

    clips = requests(photos)
    captions = captioner.describe(clips)

    assert [len(c) for c in captions] == [2, 1]
    assert len(calls) == 1  # every frame of every clip in one generate call
    ids, mask = calls[0]["input_ids"], calls[0]["attention_mask"]
    assert ids.shape[0] == 3
    assert ((ids == image_id).sum(dim=1) == queries).all()
    assert (ids[:, :queries] == image_id).all()  # the processor puts them first
    assert (mask[:, -1] == 1).all()  # left padding: every row ends on its own last token
    short = mask[2]  # "what" is the shorter prompt: its pads sit right after the images
    assert short[queries] == 0 and short.sum() < mask[0].sum()
    assert captions == one_by_one(captioner, clips)
    assert captions[0][0] != captions[0][1]  # same prompt, other image: the image gets through
    assert not any(c.startswith("question") for clip in captions for c in clip)  # no prompt echo


def test_t5_runs_in_float16_with_its_wo_layers_in_float32_and_pads_right(folders, photos):
    """Flan-T5 in float16 keeps only its feed-forward output layers (`wo`, which overflow) in
    float32, through transformers' `_keep_in_fp32_modules`; the rest stays float16 (in
    float32, blip2-flan-t5-xxl would need about 48 GB on a GPU without bfloat16)."""
    captioner = load(folders["t5"], dtype="float16")

    language = captioner.model.language_model
    assert captioner.dtype == torch.float16
    assert language.shared.weight.dtype == captioner.model.vision_model.dtype == torch.float16
    wo = {name: p.dtype for name, p in language.named_parameters() if ".wo." in name}
    assert len(wo) == 4 and set(wo.values()) == {torch.float32}  # 2 encoder + 2 decoder blocks
    assert captioner.processor.tokenizer.padding_side == "right"
    clips = requests(photos)
    assert captioner.describe(clips) == one_by_one(captioner, clips)


def test_opt_float16_is_honoured(folders):
    captioner = load(folders["opt"], dtype="float16")
    assert captioner.model.language_model.dtype == torch.float16
    assert captioner.model.qformer.dtype == torch.float32  # transformers keeps it in fp32


def test_checkpoint_saved_before_image_token_expansion_is_repaired(folders, photos, tmp_path):
    old = shutil.copytree(folders["opt"], tmp_path / "old")
    for name, field in (("config.json", "image_token_index"),
                        ("processor_config.json", "num_query_tokens")):
        saved = json.loads((old / name).read_text())
        saved[field] = None
        (old / name).write_text(json.dumps(saved))
    clips = requests(photos)

    repaired = load(old)

    assert repaired.processor.num_query_tokens == 4
    assert repaired.model.config.image_token_index == json.loads(
        (folders["opt"] / "config.json").read_text())["image_token_index"]
    assert repaired.describe(clips) == load(folders["opt"]).describe(clips)


def test_an_old_checkpoint_without_an_image_token_row_is_refused(folders, tmp_path):
    from transformers import Blip2ForConditionalGeneration

    old = shutil.copytree(folders["opt"], tmp_path / "old")
    model = Blip2ForConditionalGeneration.from_pretrained(old)
    image_id = model.config.image_token_index
    model.resize_token_embeddings(image_id)  # no row for <image>, as a checkpoint could be
    model.config.image_token_index = None
    model.save_pretrained(old)

    with pytest.raises(UserError, match=f"<image> token \\(id {image_id}\\) has no embedding row"):
        load(old)


def test_fuse_generate_uses_the_language_model_alone(folders):
    captioner = load(folders["opt"])
    prompts = ["Question: a cat on a street ? Answer:", "Question: what ? Answer:"]

    fused = captioner.generate(prompts)

    assert len(fused) == 2 and all(isinstance(text, str) and text for text in fused)
    assert fused == [captioner.generate([p])[0] for p in prompts]


def test_caption_model_runs_blip2_end_to_end(folders, photos):
    import numpy as np

    stage = CaptionModel(CaptionerConfig(captioner="blip2", model=str(folders["opt"]),
                                         max_new_tokens=4))
    frames = [np.stack([np.asarray(p.resize((32, 32))) for p in photos[:2]])]
    out = stage({"key": ["k"], "frames": frames, "label": ["playing guitar"]})

    assert out["caption_error"] == [""]
    assert len(out["frame_captions"][0]) == 2
    assert out["prompt"][0].startswith("Question: ") and "playing guitar" in out["prompt"][0]
    assert out["prompt"][0].endswith("Answer:")


def test_instructblip_batches_with_the_tokenizer_pad_id(folders, photos, monkeypatch):
    captioner = load(folders["instructblip"], captioner="instructblip")
    tokenizer = captioner.processor.tokenizer
    pad = tokenizer.convert_tokens_to_ids("[PAD]")
    assert captioner.model.config.text_config.pad_token_id == 0 != pad  # as in vicuna-7b
    calls = spy(monkeypatch, captioner.model.language_model)
    clips = requests(photos, ("this is a video of a cat . describe the frame .", "what ?"))

    captions = captioner.describe(clips)

    assert calls[0]["pad_token_id"] == pad
    assert tokenizer.padding_side == "left"
    assert captions == one_by_one(captioner, clips)


def test_instructblip_feeds_the_instruction_to_the_qformer(folders, photos, monkeypatch):
    captioner = load(folders["instructblip"], captioner="instructblip")
    calls = spy(monkeypatch, captioner.model)

    captioner.describe([ClipRequest("a", photos[:1], "cat", "describe the cat .")])

    qformer_text = captioner.processor.qformer_tokenizer.decode(
        calls[0]["qformer_input_ids"][0], skip_special_tokens=True)
    assert qformer_text == "describe the cat ."


def test_a_checkpoint_of_another_architecture_is_refused(folders):
    with pytest.raises(UserError, match="'instructblip' checkpoint.*--captioner instructblip"):
        load(folders["instructblip"], captioner="blip2")
    with pytest.raises(UserError, match="'blip-2' checkpoint.*--captioner blip2"):
        load(folders["opt"], captioner="instructblip")


def test_a_folder_without_a_model_is_one_line(tmp_path):
    with pytest.raises(UserError) as caught:
        load(tmp_path)
    message = str(caught.value)
    assert "\n" not in message and str(tmp_path) in message and "config.json" in message


def test_a_hub_id_in_the_local_cache_loads_offline_and_records_its_commit(
        folders, photos, tmp_path, monkeypatch):
    import huggingface_hub.constants

    commit = install_in_hub_cache(folders["opt"], "tiny-org/tiny-blip2", tmp_path)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))

    captioner = load("tiny-org/tiny-blip2")

    assert captioner.revision == commit and load(folders["opt"]).revision is None
    assert captioner.describe_json()["revision"] == commit
    clips = requests(photos)
    assert captioner.describe(clips) == load(folders["opt"]).describe(clips)


def test_a_hub_id_not_available_offline_is_one_line(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError) as caught:
        load("nonexistent-org/no-such-blip2")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("--model nonexistent-org/no-such-blip2: could not load")
    assert "hub id" in message


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_half_precision_on_cuda(folders, photos):
    opt = load(folders["opt"], device="cuda", dtype="float16")
    t5 = load(folders["t5"], device="cuda", dtype="float16")

    assert opt.model.language_model.dtype == t5.model.language_model.dtype == torch.float16
    for captioner in (opt, t5):
        assert [len(c) for c in captioner.describe(requests(photos))] == [2, 1]


def test_a_caption_is_the_first_line_and_frames_go_back_to_their_clips():
    from captioners.blip2 import first_line, split_per_clip

    assert first_line("\n  a man rides a horse \nQuestion: next? Answer:") == "a man rides a horse"
    assert first_line(" \n ") == ""
    clips = [ClipRequest("a", [0, 1], None, ""), ClipRequest("b", [], None, ""),
             ClipRequest("c", [2], None, "")]
    assert split_per_clip(["x", "y", "z"], clips) == [["x", "y"], [], ["z"]]
