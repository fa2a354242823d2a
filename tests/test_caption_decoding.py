"""Decoding as the reference code decodes (`--decoding reference|greedy|beam`), sampling seeded
per row, and captions cut at the length limit trimmed back to whole sentences.

The reference numbers below are typed from the official sources (LAVIS blip2_opt.py,
blip2_vicuna_instruct.py; MiniGPT-4 demo.py and conversation.py), not read from the code under
test. Tiny random checkpoints come from `captioners.tiny` / `captioners.tiny_vlm`, saved with
`save_pretrained` and loaded through `--model DIR`.
"""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from skimage import data

from captioners.base import CaptionerConfig, ClipRequest, load_captioner
from captioners.decoding import SeededSampling, capped_rows, finished, trim_to_sentence
from captioners.tiny import build_tiny_blip2, build_tiny_instructblip, build_tiny_minigpt4
from captioners.tiny_vlm import build_tiny_llava


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("decoding")
    return {"opt": build_tiny_blip2(root / "opt", "opt"), "t5": build_tiny_blip2(root / "t5", "t5"),
            "instructblip": build_tiny_instructblip(root / "instructblip"),
            "minigpt4": build_tiny_minigpt4(root / "minigpt4", "vicuna"),
            "vlm": build_tiny_llava(root / "llava")}


@pytest.fixture(scope="module")
def photos():
    return [Image.fromarray(image()) for image in (data.astronaut, data.chelsea, data.coffee,
                                                   data.rocket)]


def load(folder, captioner, **options):
    return load_captioner(CaptionerConfig(captioner=captioner, model=str(folder), **options))


def test_each_captioner_decodes_with_its_reference_settings(folders):
    opt, t5 = load(folders["opt"], "blip2"), load(folders["t5"], "blip2")
    instructblip = load(folders["instructblip"], "instructblip")
    minigpt4 = load(folders["minigpt4"], "minigpt4")

    # LAVIS Blip2OPT.generate / Blip2T5.generate: 5 beams, 30 tokens; OPT ends at "\n"
    for captioner, stop in ((opt, ["\n"]), (t5, [])):
        settings = captioner.describe_json()["decoding"]
        assert (settings["num_beams"], settings["max_new_tokens"], settings["do_sample"],
                settings["repetition_penalty"], settings["stop"]) == (5, 30, False, 1.0, stop)
    # LAVIS Blip2VicunaInstruct.generate: 5 beams, max_length 256, repetition penalty 1.5
    settings = instructblip.describe_json()["decoding"]
    assert (settings["num_beams"], settings["max_new_tokens"], settings["do_sample"],
            settings["repetition_penalty"]) == (5, 256, False, 1.5)
    # MiniGPT-4 demo: sampling, top-p 0.9, temperature 1.0, repetition penalty 1.05, 300 tokens
    settings = minigpt4.describe_json()["decoding"]
    assert (settings["num_beams"], settings["max_new_tokens"], settings["do_sample"],
            settings["top_p"], settings["temperature"], settings["repetition_penalty"],
            settings["stop"]) == (1, 300, True, 0.9, 1.0, 1.05, ["###"])
    assert settings["mode"] == "reference" and "demo.py" in settings["reference"]
    # --decoding greedy / beam change the search only; --max-new-tokens the length only
    greedy = load(folders["minigpt4"], "minigpt4", decoding="greedy").decoding
    beam = load(folders["opt"], "blip2", decoding="beam", max_new_tokens=7).decoding
    assert (greedy.do_sample, greedy.num_beams, greedy.repetition_penalty,
            greedy.max_new_tokens) == (False, 1, 1.05, 300)
    assert (beam.num_beams, beam.max_new_tokens, beam.stop) == (5, 7, ("\n",))


def test_a_chat_vlm_decodes_as_its_generation_config_says(folders, tmp_path):
    import shutil

    folder = tmp_path / "llava"
    shutil.copytree(folders["vlm"], folder)
    (folder / "generation_config.json").write_text(json.dumps(
        {"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20,
         "repetition_penalty": 1.05, "bos_token_id": 1, "eos_token_id": 2}))

    settings = load(folder, "vlm").describe_json()["decoding"]
    plain = load(folders["vlm"], "vlm").describe_json()["decoding"]

    assert (settings["do_sample"], settings["temperature"], settings["top_p"], settings["top_k"],
            settings["repetition_penalty"], settings["max_new_tokens"]) == (
        True, 0.7, 0.8, 20, 1.05, 128)
    assert (plain["do_sample"], plain["num_beams"], plain["max_new_tokens"]) == (False, 1, 128)


def test_sampling_is_seeded_per_clip_so_batches_and_reruns_agree(folders, photos):
    captioner = load(folders["minigpt4"], "minigpt4", max_new_tokens=8)
    clips = [ClipRequest("a", photos[:2], "cat", "describe the cat ."),
             ClipRequest("b", photos[2:3], None, "what ?"),
             ClipRequest("c", photos[3:], "dog", "describe the dog in this video .")]

    batch = captioner.describe(clips)

    assert batch == [captioner.describe([clip])[0] for clip in clips]
    assert batch == load(folders["minigpt4"], "minigpt4", max_new_tokens=8).describe(clips)
    reseeded = load(folders["minigpt4"], "minigpt4", max_new_tokens=8, seed=1).describe(clips)
    assert reseeded != batch  # the seed reaches the draws
    renamed = [ClipRequest("z", c.frames, c.label, c.prompt) for c in clips]
    assert captioner.describe(renamed) != batch  # and so does the clip's key


def test_seeded_sampling_draws_from_the_warped_distribution():
    """Temperature, top-k and top-p as transformers' sampler applies them; one token left."""
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]] * 400))
    sampler = SeededSampling(range(400), top_p=0.7)  # keeps the 0.5 and 0.3 tokens

    scores = sampler(torch.zeros((400, 1), dtype=torch.long), logits)

    chosen = scores.argmax(dim=1)
    assert torch.isfinite(scores).sum(dim=1).eq(1).all()
    assert set(chosen.tolist()) == {0, 1}
    share = chosen.eq(0).float().mean().item()
    assert abs(share - 0.5 / 0.8) < 0.08  # renormalised over the kept tokens
    again = SeededSampling(range(400), top_p=0.7)(torch.zeros((400, 1), dtype=torch.long), logits)
    assert torch.equal(again.argmax(dim=1), chosen)


def test_beams_give_the_same_captions_in_a_batch_as_alone(folders, photos):
    captioner = load(folders["instructblip"], "instructblip", max_new_tokens=6)
    clips = [ClipRequest("a", photos[:2], "cat", "describe the cat ."),
             ClipRequest("b", photos[2:], None, "what ?")]

    assert captioner.describe(clips) == [captioner.describe([clip])[0] for clip in clips]


def test_a_capped_caption_is_cut_back_to_its_last_whole_sentence():
    capped = finished("A man rides a bike down a hill. The sun sets behind the", capped=True)
    assert capped == "A man rides a bike down a hill." and capped.truncated
    short = finished("a man riding a bike", capped=False)  # BLIP-2 OPT style: no full stop
    assert short == "a man riding a bike" and not short.truncated
    unsplittable = finished("a man riding a bike down a long", capped=True)
    assert unsplittable == "a man riding a bike down a long" and unsplittable.truncated
    assert trim_to_sentence('He says "go!" and then') == 'He says "go!"'
    assert trim_to_sentence("Version 2.5 of the") == "Version 2.5 of the"  # no sentence end


def test_capped_rows_are_those_that_reached_the_limit_without_an_end():
    rows = torch.tensor([[5, 6, 7], [5, 2, 1], [8, 9, 9]])
    assert capped_rows(rows, [2], 3) == [True, False, True]
    assert capped_rows(rows, [2], 4) == [False, False, False]  # the batch stopped early
    assert capped_rows(rows, [2], 3, ["a b c", "a", "a ### b"], ["###"]) == [True, False, False]


def test_the_length_limit_marks_captions_truncated_through_the_stage(folders):
    import numpy as np

    from captioners.base import CaptionModel

    frames = [np.stack([np.asarray(Image.fromarray(image()).resize((32, 32)))
                        for image in (data.astronaut, data.coffee)])]
    batch = {"key": ["k"], "frames": frames, "label": ["playing guitar"]}
    one_token = CaptionModel(CaptionerConfig(captioner="blip2", model=str(folders["opt"]),
                                             decoding="greedy", max_new_tokens=1))

    out = one_token(batch)

    # at least one new token (min_new_tokens 1) and at most one: every frame reached the limit
    assert out["truncated"] == [True] and out["caption_error"] == [""]


def test_the_repetition_penalty_counts_generated_tokens_only(folders, photos, monkeypatch):
    """LAVIS and MiniGPT-4 generated from embeddings alone, so their penalty never saw the
    prompt; transformers' BLIP-2 classes hand the prompt ids to the language model."""
    from captioners.decoding import GeneratedTokensPenalty

    scores = torch.tensor([[2.0, -2.0, 4.0, 1.0]])
    ids = torch.tensor([[0, 1, 2]])  # prompt 0, 1; generated 2
    assert GeneratedTokensPenalty(2.0, prompt_length=2)(ids, scores).tolist() == [
        [2.0, -2.0, 2.0, 1.0]]
    assert GeneratedTokensPenalty(2.0)(ids, scores).tolist() == [[1.0, -4.0, 2.0, 1.0]]

    captioner = load(folders["instructblip"], "instructblip", max_new_tokens=3)
    seen = []
    original = captioner.model.language_model.generate

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(captioner.model.language_model, "generate", spy)
    captioner.describe([ClipRequest("a", photos[:1], "cat", "describe the cat .")])

    penalties = [p for p in seen[0]["logits_processor"] if isinstance(p, GeneratedTokensPenalty)]
    assert seen[0]["repetition_penalty"] == 1.0 and [p.penalty for p in penalties] == [1.5]
    assert penalties[0].prompt_length == seen[0]["input_ids"].shape[1]
