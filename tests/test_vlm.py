"""The `vlm` captioner on a tiny random LLaVA built offline (`build_tiny_llava`) and loaded
through `AutoProcessor` + `AutoModelForImageTextToText` from its folder, as `--model DIR` is.

The captions are word salad (random weights); the tests check the mechanism: one image
placeholder expanded to 16 tokens per key frame, the label in the rendered chat, left
padding, greedy batches equal to one-by-one runs, only new tokens decoded, and the one-line
errors for folders that are not chat VLMs and for `--backend vllm`.
"""

import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data
from transformers import AutoModelForImageTextToText, AutoProcessor

from captioners.base import CaptionerConfig, CaptionModel, ClipRequest, fill
from captioners.tiny_vlm import build_tiny_llava
from captioners.vlm import VLMCaptioner
from datakit.io.errors import UserError

TOKENS_PER_IMAGE = (32 // 8) ** 2  # a 32 px image in 8 px patches, CLS dropped
MAX_NEW = 6


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_tiny_llava(tmp_path_factory.mktemp("llava"))


def _config(folder, **changes):
    return CaptionerConfig(captioner="vlm", model=str(folder), device="cpu",
                           max_new_tokens=MAX_NEW, **changes)


@pytest.fixture(scope="module")
def captioner(folder):
    return VLMCaptioner(_config(folder))


def _frames(*names):
    return [Image.fromarray(getattr(data, name)()).convert("RGB") for name in names]


def _request(key, names, label, captioner):
    return ClipRequest(key, _frames(*names), label, fill(captioner.prompt_template, label))


@pytest.fixture(scope="module")
def requests(captioner):
    return [
        _request("k0", ["astronaut", "coffee", "rocket"], "playing guitar", captioner),
        _request("k1", ["chelsea"], "petting cat", captioner),
        _request("k2", ["rocket", "astronaut"], None, captioner),
    ]


def test_loads_through_the_auto_classes_in_the_requested_dtype(folder, captioner):
    assert type(captioner.model).__name__ == "LlavaForConditionalGeneration"
    assert captioner.model.dtype == torch.float32 and captioner.device == "cpu"
    assert captioner.per_frame is False and captioner.name == "vlm"
    # the folder's tokenizer pads on the right; the captioner switches it to the left
    assert AutoProcessor.from_pretrained(folder).tokenizer.padding_side == "right"
    assert captioner.tokenizer.padding_side == "left"
    info = captioner.describe_json()
    assert info.pop("decoding")["mode"] == "reference"
    assert info == {"captioner": "vlm", "model": str(folder), "revision": None,
                    "backend": "transformers"}
    half = VLMCaptioner(_config(folder, dtype="bfloat16"))
    assert half.model.dtype == torch.bfloat16


def test_all_key_frames_in_one_prompt_with_the_label_hint(captioner, requests):
    text = captioner.chat_text(requests[0])
    assert text.count("<image>") == 3
    assert "Its category is 'playing guitar'." in text
    assert text.index("<image>") < text.index("Its category")  # frames first, then the ask
    assert "Its category is 'something'." in captioner.chat_text(requests[2])  # no label
    inputs = captioner.prepare_inputs(requests)
    image_token = captioner.model.config.image_token_index
    per_row = (inputs["input_ids"] == image_token).sum(dim=1).tolist()
    assert per_row == [3 * TOKENS_PER_IMAGE, 1 * TOKENS_PER_IMAGE, 2 * TOKENS_PER_IMAGE]
    assert inputs["pixel_values"].shape == (6, 3, 32, 32)


def test_batch_is_left_padded(captioner, requests):
    inputs = captioner.prepare_inputs(requests)
    mask, ids = inputs["attention_mask"], inputs["input_ids"]
    longest = int(mask.sum(dim=1).argmax())
    shortest = int(mask.sum(dim=1).argmin())
    assert longest == 0 and shortest == 1
    assert mask[longest].all()
    padding = int((mask[shortest] == 0).sum())
    assert padding == 2 * TOKENS_PER_IMAGE  # two frames fewer, same words
    assert mask[shortest, :padding].sum() == 0 and mask[shortest, padding:].all()
    assert (ids[shortest, :padding] == captioner.tokenizer.pad_token_id).all()


def test_batched_captions_equal_one_by_one(captioner, requests):
    batched = captioner.describe(requests)
    alone = [captioner.describe([request])[0] for request in requests]
    assert batched == alone
    assert [len(c) for c in batched] == [1, 1, 1]  # one caption per clip
    assert len({c[0] for c in batched}) > 1  # the frames change the caption
    assert captioner.describe([]) == []


def test_only_the_new_tokens_are_decoded(folder, captioner, requests):
    (caption,) = captioner.describe(requests[:1])[0]
    # the word-level tokenizer decodes one word per token: at most MAX_NEW words, while the
    # prompt alone decodes to more than that
    assert 1 <= len(caption.split()) <= MAX_NEW
    processor = AutoProcessor.from_pretrained(folder)
    prompt = processor.batch_decode(captioner.prepare_inputs(requests[:1])["input_ids"],
                                    skip_special_tokens=True)[0]
    assert len(prompt.split()) > MAX_NEW
    # the same tokens as an independent greedy run from the prompt, cut after the prompt
    model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    inputs = captioner.prepare_inputs(requests[:1])
    output = model.generate(**inputs, max_new_tokens=MAX_NEW, do_sample=False)
    new = output[0, inputs["input_ids"].shape[1]:]
    assert caption == processor.decode(new, skip_special_tokens=True).strip()


def test_text_only_generation_for_llm_fusion(captioner):
    prompts = ["the man and the dog on the beach", "a red car"]
    outputs = captioner.generate(prompts)
    assert len(outputs) == 2 and all(1 <= len(o.split()) <= MAX_NEW for o in outputs)
    assert outputs == [captioner.generate([p])[0] for p in prompts]
    assert captioner.generate([]) == []


def test_caption_model_stage_with_llm_fusion(folder):
    stage = CaptionModel(_config(folder, fuse="llm", batch_size=2))
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (n, 40, 48, 3), dtype=np.uint8) for n in (3, 1, 2)]
    out = stage({"key": ["a", "b", "c"], "frames": frames,
                 "label": ["playing guitar", "petting cat", None]})
    assert out["caption_error"] == ["", "", ""]
    assert [len(c) for c in out["frame_captions"]] == [1, 1, 1]
    assert "Its category is 'petting cat'." in out["prompt"][1]
    assert all(out["caption"]) and out["fuse_prompt"][0].startswith("These are descriptions")


def test_a_tokenizer_without_pad_token_pads_with_its_end_token(tmp_path, folder, requests):
    import json

    no_pad = tmp_path / "no-pad"
    shutil.copytree(folder, no_pad)
    settings = json.loads((no_pad / "tokenizer_config.json").read_text())
    del settings["pad_token"]
    (no_pad / "tokenizer_config.json").write_text(json.dumps(settings))
    assert AutoProcessor.from_pretrained(no_pad).tokenizer.pad_token is None
    captioner = VLMCaptioner(_config(no_pad))
    assert captioner.tokenizer.pad_token == "</s>"
    inputs = captioner.prepare_inputs(requests[:2])
    assert (inputs["input_ids"][1, :2 * TOKENS_PER_IMAGE] == captioner.tokenizer.eos_token_id).all()
    assert captioner.describe(requests[:2]) == [captioner.describe([r])[0] for r in requests[:2]]


def test_vllm_backend_is_one_clear_error(folder):
    with pytest.raises(UserError, match=r"--backend vllm: not available.*torch 2\.14"):
        VLMCaptioner(_config(folder, backend="vllm"))


def test_folders_that_are_not_chat_vlms(tmp_path, folder):
    from transformers import LlamaConfig, LlamaForCausalLM

    from datakit.models.tiny import build_tokenizer

    text_lm = tmp_path / "llama"
    LlamaForCausalLM(LlamaConfig(vocab_size=90, hidden_size=16, intermediate_size=32,
                                 num_hidden_layers=1, num_attention_heads=2)).save_pretrained(
        text_lm)
    build_tokenizer().save_pretrained(text_lm)
    with pytest.raises(UserError, match="a 'llama' model is not an image-text-to-text chat"):
        VLMCaptioner(_config(text_lm))
    no_template = tmp_path / "no-template"
    shutil.copytree(folder, no_template)
    (no_template / "chat_template.jinja").unlink()
    with pytest.raises(UserError, match="has no chat template.*--captioner blip2"):
        VLMCaptioner(_config(no_template))
    no_processor = tmp_path / "no-processor"
    shutil.copytree(folder, no_processor)
    (no_processor / "processor_config.json").unlink()
    with pytest.raises(UserError, match="could not load a processor from the local folder"):
        VLMCaptioner(_config(no_processor))
    no_weights = tmp_path / "no-weights"
    shutil.copytree(folder, no_weights)
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(UserError, match="could not load the model weights .*local folder"):
        VLMCaptioner(_config(no_weights))
    with pytest.raises(UserError, match="no such folder"):
        VLMCaptioner(_config(tmp_path / "nowhere" / "model"))


def test_qwen2_vl_processor_needs_torchvision_here(tmp_path):
    """Qwen2-VL's processor has a video part, which transformers builds only with
    torchvision; where torchvision is missing the captioner says so in one line."""
    import importlib.util
    import json

    from transformers import Qwen2VLConfig, Qwen2VLImageProcessor

    from datakit.models.tiny import build_tokenizer

    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed: the Qwen2-VL processor loads")
    qwen = tmp_path / "qwen2-vl"
    Qwen2VLConfig().save_pretrained(qwen)
    build_tokenizer().save_pretrained(qwen)
    Qwen2VLImageProcessor().save_pretrained(qwen)
    (qwen / "processor_config.json").write_text(json.dumps({"processor_class":
                                                            "Qwen2VLProcessor"}))
    with pytest.raises(UserError, match="its processor needs torchvision"):
        VLMCaptioner(_config(qwen))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_real_chat_vlm_on_gpu():
    """Real weights (`DATAKIT_TEST_VLM`, default Qwen2.5-VL-3B; cached or downloadable)."""
    import os

    from captioners.vlm import DEFAULT_MODEL

    model = os.environ.get("DATAKIT_TEST_VLM", DEFAULT_MODEL)
    captioner = VLMCaptioner(CaptionerConfig(captioner="vlm", model=model, device="cuda",
                                             max_new_tokens=60))
    cat = _request("cat", ["chelsea", "chelsea"], "cat", captioner)
    rocket = _request("rocket", ["rocket"], "rocket launch", captioner)
    (cat_caption,), (rocket_caption,) = captioner.describe([cat, rocket])
    assert "cat" in cat_caption.lower() or "kitten" in cat_caption.lower()
    assert "rocket" in rocket_caption.lower()


def test_hub_id_from_the_cache_records_the_commit(tmp_path, folder, monkeypatch):
    """A hub id resolves through the Hugging Face cache (offline here): the captioner loads
    the snapshot and records the commit it resolved to."""
    import huggingface_hub.constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--tiny--llava"
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    captioner = VLMCaptioner(CaptionerConfig(captioner="vlm", model="tiny/llava",
                                             device="cpu", max_new_tokens=2))
    assert captioner.revision == commit
    assert captioner.describe_json()["revision"] == commit
    with pytest.raises(UserError, match="tiny/absent: could not load .*not in the local Hug"):
        VLMCaptioner(CaptionerConfig(captioner="vlm", model="tiny/absent", device="cpu"))


def _tiny_qwen2_vl(folder):
    """A tiny random Qwen2-VL saved to `folder`, and its processor built in code.

    The processor cannot be loaded here: transformers builds Qwen2-VL's video processor only
    with torchvision, and even constructing the processor without one trips its class check
    (the caller switches that check off). The model itself loads through
    `AutoModelForImageTextToText` from the folder, as a user's would."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    from datakit.models.tiny import build_tokenizer

    tokenizer = build_tokenizer()
    specials = ["<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>",
                "<|user|>", "<|assistant|>", "<|end|>"]
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in specials}
    template = (
        "{% for message in messages %}<|{{ message['role'] }}|> "
        "{% for part in message['content'] %}{% if part['type'] == 'image' %}"
        "<|vision_start|><|image_pad|><|vision_end|> "
        "{% elif part['type'] == 'text' %}{{ part['text'] }} {% endif %}{% endfor %}"
        "<|end|> {% endfor %}{% if add_generation_prompt %}<|assistant|> {% endif %}"
    )
    # 4 px patches merged 2x2: a 32x32 frame is 8x8 patches, 16 tokens
    image_processor = Qwen2VLImageProcessorPil(patch_size=4, merge_size=2, temporal_patch_size=2,
                                               min_pixels=16 * 16, max_pixels=32 * 32)
    config = Qwen2VLConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                          "mrope_section": [2, 1, 1]},
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
                         eos_token_id=ids["<|end|>"]),
        vision_config=dict(depth=2, embed_dim=16, hidden_size=32, num_heads=2, patch_size=4,
                           spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = ids["<|end|>"]
    model.save_pretrained(folder)
    processor = Qwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                 video_processor=None, chat_template=template)
    return processor, ids["<|image_pad|>"]


def test_qwen2_vl_model_path_with_a_code_built_processor(tmp_path, monkeypatch):
    """Qwen's extras (the image grid, multimodal rotary positions under left padding) go
    through the same captioner code: batched equals one-by-one, 16 tokens per 32 px frame."""
    from transformers import AutoProcessor, Qwen2VLProcessor

    monkeypatch.setattr(Qwen2VLProcessor, "check_argument_for_proper_class",
                        lambda self, name, value: None)  # it fails without torchvision
    processor, image_pad = _tiny_qwen2_vl(tmp_path / "qwen")
    monkeypatch.setattr(AutoProcessor, "from_pretrained", lambda *args, **kwargs: processor)
    captioner = VLMCaptioner(_config(tmp_path / "qwen"))
    assert type(captioner.model).__name__ == "Qwen2VLForConditionalGeneration"

    def request(key, names, label):
        frames = [frame.resize((32, 32)) for frame in _frames(*names)]
        return ClipRequest(key, frames, label, fill(captioner.prompt_template, label))

    batch = [request("q0", ["astronaut", "coffee", "rocket"], "rocket launch"),
             request("q1", ["chelsea"], "cat")]
    inputs = captioner.prepare_inputs(batch)
    assert inputs["image_grid_thw"].tolist() == [[1, 8, 8]] * 4
    assert (inputs["input_ids"] == image_pad).sum(dim=1).tolist() == [3 * 16, 1 * 16]
    assert inputs["attention_mask"][1, :2 * 16].sum() == 0  # left padding
    batched = captioner.describe(batch)
    assert batched == [captioner.describe([r])[0] for r in batch]
    assert all(1 <= len(c[0].split()) <= MAX_NEW for c in batched)
