"""Caption checks (label agreement, flags), `--questions`, fusion within a batch, and the
default captioner (`datakit caption` with no `--captioner` is BLIP-2 OPT-2.7b).

The scripted captioner below answers from a table keyed by label, so every expected value here
is written by hand, not computed by the code under test.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from helpers import read_samples
from typer.testing import CliRunner

import captioners.base as base
from captioners.base import CaptionerConfig, CaptionModel
from captioners.checks import caption_flags, has_loop, label_agreement
from captioners.decoding import Decoding, finished
from captioners.fusion import fuse_answers, fuse_template
from datakit.cli import app

SCRIPT = {  # label words -> what the "model" says about every frame
    "petting cat": "A woman pets a cat on a sofa.",
    "drinking coffee": "A cup of coffee. A cup of coffee. A cup of coffee.",
    "launching rocket": "A rocket launches, with a watermark in the corner.",
    "space walking": "An astronaut floats above the earth. He waves at the",
    "riding motorcycle": "A man on a red motorbike.",
}


class ScriptedCaptioner(base.Captioner):
    """Answers from `SCRIPT` (prompts that are questions get "answer N about KEY"); the
    space-walking answer stops at the length limit."""

    name = "vlm"
    default_prompt = "describe {label}"
    question_format = "Q: {question}"

    def reference_decoding(self):
        return Decoding(num_beams=3, max_new_tokens=12, reference="a test script")

    def describe(self, requests):
        out = []
        for request in requests:
            if request.prompt.startswith("Q: "):
                text = f"answer {request.question} about {request.key}"
            else:
                text = SCRIPT.get(request.label or "", "something moves")
            capped = request.label == "space walking"
            out.append([finished(text, capped) for _ in request.frames])
        return out


@pytest.fixture()
def scripted(monkeypatch):
    monkeypatch.setitem(base.CAPTIONERS, "vlm", "test_caption_checks:ScriptedCaptioner")


def frames(count: int = 2) -> np.ndarray:
    return np.zeros((count, 16, 16, 3), np.uint8)


# --- fusion --------------------------------------------------------------------------------


def test_template_fusion_lowers_a_and_keeps_acronyms_and_i():
    assert fuse_template("juggling", ["A man juggles", "A ball falls", "TV shows a ball",
                                      "I see a ball"]) == (
        "Juggling: a man juggles, then a ball falls, then TV shows a ball, then I see a ball.")


def test_each_clip_of_a_batch_is_fused_with_its_own_label(scripted):
    model = CaptionModel(CaptionerConfig(captioner="vlm", model="x", batch_size=8))
    labels = ["walking dog", "baking bread", None]

    out = model({"key": ["a", "b", "c"], "frames": [frames(), frames(1), frames()],
                 "label": labels})

    assert out["caption"] == ["Walking dog: something moves.", "Baking bread: something moves.",
                              "Something moves."]
    assert out["prompt"] == ["describe walking dog", "describe baking bread",
                             "describe something"]


def test_questions_are_asked_per_key_frame_and_their_answers_fused(scripted):
    questions = ("What is done in this video of {label}?", "Where?", "Who?")
    model = CaptionModel(CaptionerConfig(captioner="vlm", model="x", batch_size=4,
                                         questions=questions))

    out = model({"key": ["a", "b"], "frames": [frames(2), frames(3)],
                 "label": ["petting cat", "drinking coffee"]})

    assert out["questions"][0] == ["Q: What is done in this video of petting cat?", "Q: Where?",
                                   "Q: Who?"]
    assert out["answers"][1] == [["answer 0 about b"] * 3, ["answer 1 about b"] * 3,
                                 ["answer 2 about b"] * 3]
    assert out["caption"] == [
        "Petting cat: answer 0 about a. Answer 1 about a. Answer 2 about a.",
        "Drinking coffee: answer 0 about b. Answer 1 about b. Answer 2 about b."]
    assert out["frame_captions"][0] == ["answer 0 about a"] * 2


def test_answers_fuse_by_majority_and_skip_what_is_already_said():
    answers = [["a man plays a guitar", "close up of hands"],
               ["a stage", "a dark room", "a dark room"],
               ["a man plays a guitar"],  # said already
               ["close-up", "Wide shot", "wide shot"]]
    assert fuse_answers("playing guitar", answers) == (
        "Playing guitar: a man plays a guitar, then close up of hands. A dark room. Wide shot.")
    assert fuse_answers(None, [["a dog runs"]]) == fuse_template(None, ["a dog runs"])


def test_questions_options_are_checked(tmp_path):
    for config, message in (
        (dict(captioner="label", questions=("Where?",)), "needs a captioner with a model"),
        (dict(captioner="blip2", questions=()), "question set is empty"),
        (dict(captioner="blip2", questions=("Who is {lable}?",)), "unknown field {lable}"),
        (dict(captioner="blip2", questions=("Where?",), prompt="x"), "exclude each other"),
    ):
        with pytest.raises(ValueError, match=message):
            CaptionerConfig(**config)


# --- checks ----------------------------------------------------------------------------------


def test_label_agreement_counts_label_words_the_model_wrote():
    assert label_agreement("riding a bike", ["A man rides a bike."]) == 1.0
    assert label_agreement("playing guitar", ["a man strums a guitar"]) == 0.5
    assert label_agreement("playing guitar", ["a guitarist on stage"]) == 0.5  # guitar-ist
    assert label_agreement("petting cat", ["a dog in a scattered pile"]) == 0.0
    assert label_agreement("running", ["he ran"]) == 0.0  # no irregular forms, no synonyms
    assert label_agreement(None, ["a dog"]) is None and label_agreement("the", ["a"]) is None


def test_loops_and_flags():
    assert has_loop("a man is walking walking walking down the road")
    assert has_loop("a man plays a guitar a man plays a guitar a man plays a guitar")
    assert has_loop("The cat sits on a mat. It purrs. The cat sits on a mat.")
    assert not has_loop("A man plays a guitar on a stage, then a man sings.")
    mark = ["a logo in the corner of the screen"]
    assert caption_flags(mark, False, "clean") == ["mentions_watermark"]
    assert caption_flags(mark, False, "flagged") == []  # a mark was found: no hallucination
    assert caption_flags(mark, False, "kept") == []  # nobody looked
    assert caption_flags(["a a a dog"], True, None) == ["repetition", "truncated"]


def test_checks_reach_the_json_the_manifest_and_the_report(scripted, tmp_path):
    from captioners.pipeline import CaptionConfig, caption
    from datakit.cli.samples import write_sample_videos
    from datakit.run.dataset_report import write_dataset_report
    from datakit.run.pipeline import RunOptions

    videos = tmp_path / "videos"
    write_sample_videos(videos, seconds=1, size=(96, 64), broken=False)
    out = tmp_path / "out"
    caption(videos, out, CaptionConfig(keyframes=2),
            CaptionerConfig(captioner="vlm", model="x"), RunOptions(workers=1, progress=False))

    manifest = pd.read_parquet(out / "manifest.parquet")
    ok = manifest[manifest["status"] == "ok"]
    flags = {label: sorted(found) for label, found in zip(ok["label"], ok["caption_flags"],
                                                          strict=True)}
    agreement = dict(zip(ok["label"], ok["label_agreement"].round(3), strict=True))
    assert flags == {"petting_cat": [], "drinking_coffee": ["repetition"],
                     "launching_rocket": ["mentions_watermark"], "space_walking": ["truncated"],
                     "riding_motorcycle": []}
    assert agreement == {"petting_cat": 1.0, "drinking_coffee": 0.5, "launching_rocket": 1.0,
                         "space_walking": 0.0, "riding_motorcycle": 0.0}
    infos = [json.loads(sample["json"]) for sample in read_samples(out)]
    walk = next(info for info in infos if info["label"] == "space_walking")
    assert walk["truncated"] is True and walk["caption"].endswith("above the earth.")
    assert walk["caption_flags"] == ["truncated"] and walk["label_agreement"] == 0.0
    assert walk["decoding"]["num_beams"] == 3 and walk["decoding"]["reference"] == "a test script"
    rocket = next(info for info in infos if info["label"] == "launching_rocket")
    assert rocket["watermark_action"] == "clean"  # looked, found none: the mention is made up

    report = write_dataset_report(out, samples=6)
    stats = json.loads((report.parent / "report.json").read_text())["statistics"]
    assert stats["caption_flags"]["repetition"] == {
        "count": 1, "keys": list(ok.loc[ok["label"] == "drinking_coffee", "key"])}
    assert stats["label_agreement"]["count"] == len(ok) and stats["label_agreement"]["min"] == 0
    page = report.read_text()
    assert "Flagged captions" in page and "mentions_watermark" in page
    assert page.count('<span class="flag">') == 4  # coffee, rocket, both space-walking clips


# --- the default captioner -------------------------------------------------------------------


@pytest.fixture()
def offline_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    from datakit.cli.samples import write_sample_videos

    root = tmp_path_factory.mktemp("default") / "kinetics"
    write_sample_videos(root, seconds=1, size=(64, 48), broken=False)
    return root


@pytest.mark.parametrize("cached", [(), ("config.json",)])  # nothing, or no weights
def test_no_captioner_and_no_cached_blip2_is_one_line_naming_the_label_captioner(
        videos, tmp_path, offline_cache, cached):
    from captioners.tiny import install_in_hub_cache

    if cached:
        (tmp_path / "part").mkdir()
        (tmp_path / "part" / "config.json").write_text("{}")
        install_in_hub_cache(tmp_path / "part", "Salesforce/blip2-opt-2.7b", offline_cache)
    result = CliRunner().invoke(app, ["caption", str(videos), "--out", str(tmp_path / "o"),
                                      "--quiet"])

    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert "\n" not in line and "Traceback" not in line
    assert "Salesforce/blip2-opt-2.7b" in line and "--captioner label" in line
    assert "HF_HUB_OFFLINE" in line and not (tmp_path / "o").exists()


def test_no_captioner_without_the_caption_extra_names_the_label_captioner(
        videos, tmp_path, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "transformers" else find_spec(name, *a))
    result = CliRunner().invoke(app, ["caption", str(videos), "--out", str(tmp_path / "o")])

    assert result.exit_code == 2, result.output
    assert "pip install 'datakit[caption]'" in result.output
    assert "--captioner label" in result.output


def test_no_captioner_captions_with_blip2_opt_from_the_cache(videos, tmp_path, offline_cache):
    from captioners.tiny import build_tiny_blip2, install_in_hub_cache

    install_in_hub_cache(build_tiny_blip2(tmp_path / "tiny", "opt"), "Salesforce/blip2-opt-2.7b",
                         offline_cache)
    out = tmp_path / "o"
    result = CliRunner().invoke(app, ["caption", str(videos), "--out", str(out), "--quiet",
                                      "--workers", "1", "--max-new-tokens", "4"])

    assert result.exit_code == 0, result.output
    infos = [json.loads(sample["json"]) for sample in read_samples(out)]
    assert len(infos) == 6
    for info in infos:
        assert info["captioner"]["captioner"] == "blip2"
        assert info["captioner"]["model"] == "Salesforce/blip2-opt-2.7b"
        assert info["prompt"].startswith("Question: ") and len(info["frame_captions"]) == 3
        assert (info["decoding"]["mode"], info["decoding"]["num_beams"],
                info["decoding"]["max_new_tokens"]) == ("reference", 5, 4)
