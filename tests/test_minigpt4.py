"""MiniGPT-4 assembled from a tiny BLIP-2 folder, a tiny Llama and a projection checkpoint
written in the official key layout; loaded through `--captioner minigpt4 --model DIR`.

The expected image embeddings are computed here from the parts themselves (transformers'
BLIP-2 model, the tensors in the .pth), never by the captioner's code.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from PIL import Image
from skimage import data

from captioners.base import CaptionerConfig, ClipRequest, load_captioner
from captioners.tiny import build_tiny_minigpt4, install_in_hub_cache
from datakit.io.errors import UserError

SYSTEM = ("Give the following image: <Img>ImageContent</Img>. You will be able to see the image "
          "once I provide it to you. Please answer my questions.")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("minigpt4")
    return {v: build_tiny_minigpt4(root / v, v) for v in ("vicuna", "llama2")}


@pytest.fixture(scope="module")
def photos():
    return [Image.fromarray(image()) for image in (data.astronaut, data.chelsea, data.rocket)]


def load(folder, **options):
    options.setdefault("max_new_tokens", 5)
    return load_captioner(CaptionerConfig(captioner="minigpt4", model=str(folder), **options))


def first_lm_inputs(captioner):
    """Capture `inputs_embeds` and `attention_mask` of the LM's first forward call."""
    seen = []

    def hook(module, args, kwargs):
        if not seen:
            mask = kwargs.get("attention_mask")  # None when no row is padded
            seen.append((kwargs["inputs_embeds"].clone(), None if mask is None else mask.clone()))

    captioner.lm.register_forward_pre_hook(hook, with_kwargs=True)
    return seen


def official_projection(folder):
    state = torch.load(folder / "pretrained_minigpt4.pth", weights_only=True)["model"]
    return state["llama_proj.weight"], state["llama_proj.bias"]


def blip2_pixels_and_model(folder, image):
    from transformers import Blip2ForConditionalGeneration, Blip2Processor

    processor = Blip2Processor.from_pretrained(folder / "vision")
    model = Blip2ForConditionalGeneration.from_pretrained(folder / "vision").eval()
    return processor.image_processor(image, return_tensors="pt")["pixel_values"], model


def test_the_checkpoint_is_in_the_official_key_layout(folders):
    checkpoint = torch.load(folders["vicuna"] / "pretrained_minigpt4.pth", weights_only=True)
    assert set(checkpoint) == {"model"}
    assert {k: tuple(v.shape) for k, v in checkpoint["model"].items()} == {
        "llama_proj.weight": (32, 32), "llama_proj.bias": (32,)}
    layout = json.loads((folders["vicuna"] / "minigpt4.json").read_text())
    assert layout == {"vision": "vision", "lm": "lm", "projection": "pretrained_minigpt4.pth"}


def test_vicuna_splices_projected_queries_at_image_here(folders, photos):
    folder = folders["vicuna"]
    captioner = load(folder)
    seen = first_lm_inputs(captioner)
    question = "describe the cat ."

    captioner.describe([ClipRequest("k", photos[1:2], "cat", question)])

    embeds, mask = seen[0]
    pixels, blip2 = blip2_pixels_and_model(folder, photos[1])
    with torch.no_grad():
        queries = blip2.get_image_features(pixels).qformer_outputs.last_hidden_state
    weight, bias = official_projection(folder)
    image = queries[0] @ weight.T + bias  # [4 queries, 32]
    tokenizer, embed = captioner.tokenizer, captioner.lm.get_input_embeddings()
    before = tokenizer(SYSTEM + "###Human: <Img>").input_ids
    after = tokenizer(f"</Img> {question}###Assistant: ", add_special_tokens=False).input_ids
    assert before[0] == tokenizer.bos_token_id
    assert embeds.shape[1] == len(before) + 4 + len(after)
    assert mask is None or mask.all()
    with torch.no_grad():
        torch.testing.assert_close(embeds[0, :len(before)], embed(torch.tensor(before)))
        torch.testing.assert_close(embeds[0, len(before):len(before) + 4], image,
                                   rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(embeds[0, len(before) + 4:], embed(torch.tensor(after)))


def test_llama2_variant_groups_four_vit_tokens_under_a_plain_layer_norm(folders, photos):
    folder = folders["llama2"]
    captioner = load(folder)
    assert captioner.template == "llama2" and captioner.qformer is None
    seen = first_lm_inputs(captioner)

    captioner.describe([ClipRequest("k", photos[:1], "man", "who ?")])

    embeds, _ = seen[0]
    pixels, blip2 = blip2_pixels_and_model(folder, photos[0])
    vision = blip2.vision_model
    with torch.no_grad():
        tokens = vision.encoder(inputs_embeds=vision.embeddings(pixels)).last_hidden_state
        tokens = torch.nn.functional.layer_norm(tokens, tokens.shape[-1:], eps=1e-6)
    patches = tokens[0, 1:]  # 4 patch tokens of 32 -> one 128-wide group
    weight, bias = official_projection(folder)
    image = patches.reshape(1, 128) @ weight.T + bias
    tokenizer = captioner.tokenizer
    before = tokenizer(SYSTEM + "<s>[INST] <Img>").input_ids
    after = tokenizer("</Img> who ? [/INST] ", add_special_tokens=False).input_ids
    assert embeds.shape[1] == len(before) + 1 + len(after)
    torch.testing.assert_close(embeds[0, len(before)], image[0], rtol=1e-4, atol=1e-5)


def test_a_batch_is_left_padded_and_equals_one_by_one(folders, photos):
    captioner = load(folders["vicuna"])
    seen = first_lm_inputs(captioner)
    clips = [ClipRequest("a", photos[:2], "cat", "describe the cat in this video ."),
             ClipRequest("b", photos[2:], None, "what ?")]

    captions = captioner.describe(clips)

    _, mask = seen[0]
    assert mask.shape[0] == 3 and (mask[:, -1] == 1).all() and mask[2, 0] == 0
    assert [len(c) for c in captions] == [2, 1]
    assert captions == [captioner.describe([clip])[0] for clip in clips]  # sampled per clip


def test_generation_stops_at_the_separator(folders):
    from captioners.minigpt4 import StopAtText

    captioner = load(folders["vicuna"])
    tokenizer = captioner.tokenizer
    ids = torch.tensor([tokenizer("a cat ### on human", add_special_tokens=False).input_ids,
                        tokenizer("a cat on a road", add_special_tokens=False).input_ids])
    assert StopAtText("###", tokenizer, 0)(ids, None).tolist() == [True, False]
    assert StopAtText("###", tokenizer, 3)(ids, None).tolist() == [False, False]  # prompt part


def test_fuse_generate_cuts_at_the_separator(folders, monkeypatch):
    from captioners.minigpt4 import StopAtText

    captioner = load(folders["vicuna"])
    tokenizer = captioner.tokenizer
    seen = {}

    def generate(input_ids, **kwargs):  # the LM "answers" past the separator
        seen.update(kwargs, input_ids=input_ids)
        answer = tokenizer(["a cat running ### human : more"] * len(input_ids),
                           add_special_tokens=False, return_tensors="pt").input_ids
        return torch.cat([input_ids, answer], dim=1)

    monkeypatch.setattr(captioner.lm, "generate", generate)
    fused = captioner.generate(["a cat , then a dog .", "what is it"])

    assert fused == ["a cat running", "a cat running"]
    prompt = tokenizer.decode(seen["input_ids"][1], skip_special_tokens=True)
    assert prompt == "### human : what is it ### assistant :"  # one user turn, no system text
    assert isinstance(seen["stopping_criteria"][0], StopAtText)


def test_official_extra_keys_are_ignored(folders, tmp_path):
    folder = shutil.copytree(folders["vicuna"], tmp_path / "m")
    checkpoint = torch.load(folder / "pretrained_minigpt4.pth", weights_only=True)
    checkpoint["model"]["llama_model.model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(4)
    checkpoint.update(optimizer={"state": {}, "param_groups": []}, config={"run": {}}, epoch=4)
    torch.save(checkpoint, folder / "pretrained_minigpt4.pth")

    assert load(folder).projection.weight.shape == (32, 32)


@pytest.mark.parametrize("content, match", [
    (b"not a zip and not a pickle", r"weights_only=True\): it is not a torch checkpoint"),
    ("truncated", r"weights_only=True\): damaged \(PytorchStreamReader"),
    ({"state_dict": {}}, "no llama_proj.weight"),
    ({"model": {"llama_proj.weight": torch.zeros(32, 32)}}, "no llama_proj.weight"),
])
def test_a_corrupt_projection_is_one_clear_line(folders, tmp_path, content, match):
    folder = shutil.copytree(folders["vicuna"], tmp_path / "m")
    target = folder / "pretrained_minigpt4.pth"
    if isinstance(content, bytes):
        target.write_bytes(content)
    elif content == "truncated":
        whole = target.read_bytes()
        target.write_bytes(whole[:len(whole) // 2])
    else:
        torch.save(content, target)

    with pytest.raises(UserError, match=match) as caught:
        load(folder)
    assert "\n" not in str(caught.value) and "pretrained_minigpt4.pth" in str(caught.value)


def test_a_pickled_object_is_refused_not_executed(folders, tmp_path):
    folder = shutil.copytree(folders["vicuna"], tmp_path / "m")
    torch.save({"model": {"llama_proj.weight": Image.new("RGB", (1, 1))}},
               folder / "pretrained_minigpt4.pth")
    with pytest.raises(UserError, match=r"pickles a PIL.Image.Image object \(refused, never run\)"):
        load(folder)


def test_a_projection_for_another_lm_size_is_refused(folders, tmp_path):
    folder = shutil.copytree(folders["vicuna"], tmp_path / "m")
    torch.save({"model": {"llama_proj.weight": torch.zeros(48, 32),
                          "llama_proj.bias": torch.zeros(48)}}, folder / "pretrained_minigpt4.pth")
    with pytest.raises(UserError, match="outputs 48 features .* hidden size 32"):
        load(folder)


def test_a_projection_that_fits_no_vision_output_is_refused(folders, tmp_path):
    folder = shutil.copytree(folders["vicuna"], tmp_path / "m")
    torch.save({"model": {"llama_proj.weight": torch.zeros(32, 50),
                          "llama_proj.bias": torch.zeros(32)}}, folder / "pretrained_minigpt4.pth")
    with pytest.raises(UserError, match="reads 50 features, neither the Q-Former's 32"):
        load(folder)


def test_a_folder_without_the_layout_names_what_to_write(folders, tmp_path):
    with pytest.raises(UserError, match="no minigpt4.json there.*\"projection\""):
        load(tmp_path)
    with pytest.raises(UserError, match="needs a local folder"):
        load("someone/minigpt4")


def test_a_vision_part_that_is_not_blip2_is_refused(folders, tmp_path):
    folder = shutil.copytree(folders["vicuna"], tmp_path / "m")
    layout = json.loads((folder / "minigpt4.json").read_text()) | {"vision": "lm"}
    (folder / "minigpt4.json").write_text(json.dumps(layout))
    with pytest.raises(UserError, match="is a 'llama' checkpoint; .* BLIP-2"):
        load(folder)


def test_a_part_that_does_not_load_names_the_layout_field(folders, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    folder = shutil.copytree(folders["vicuna"], tmp_path / "m")
    layout = json.loads((folder / "minigpt4.json").read_text()) | {"lm": "vicuna-13b-v0"}
    (folder / "minigpt4.json").write_text(json.dumps(layout))
    with pytest.raises(UserError) as caught:
        load(folder)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"--model {folder}: minigpt4.json 'lm' vicuna-13b-v0: could not load")


def test_the_vision_part_can_be_a_hub_id(folders, photos, tmp_path, monkeypatch):
    import huggingface_hub.constants

    install_in_hub_cache(folders["vicuna"] / "vision", "tiny-org/tiny-blip2-t5", tmp_path / "hub")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    folder = shutil.copytree(folders["vicuna"], tmp_path / "m", ignore=shutil.ignore_patterns(
        "vision"))
    layout = json.loads((folder / "minigpt4.json").read_text()) | {
        "vision": "tiny-org/tiny-blip2-t5"}
    (folder / "minigpt4.json").write_text(json.dumps(layout))
    clip = [ClipRequest("k", photos[:2], "cat", "describe the cat .")]

    assert load(folder).describe(clip) == load(folders["vicuna"]).describe(clip)
