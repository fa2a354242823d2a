"""The CLIP caption-to-frames score on a tiny random CLIP built offline (`build_tiny_clip`).

Random weights make the scores meaningless as quality, so the tests check the definition
against a hand computation from the model's own `get_text_features`/`get_image_features`,
and the mechanics: pairing, batching, frame order and weighting, and the errors.
"""

import shutil

import numpy as np
import pytest
import torch
from skimage import data
from transformers import CLIPModel, CLIPProcessor

from captioners.clip_score import ClipScorer
from captioners.tiny_vlm import build_tiny_llava
from datakit.io.errors import UserError
from datakit.models.tiny import build_tiny_clip

CAPTIONS = ["a man and a woman walking on the beach", "a small red car on the road at night",
            "a cat sitting in the room"]


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    return build_tiny_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def scorer(clip_folder):
    return ClipScorer(str(clip_folder), device="cpu", batch_size=2)


@pytest.fixture(scope="module")
def clips():
    """Three clips of real photos with 2, 1 and 3 key frames (crops of different sizes)."""
    astronaut, chelsea, coffee, rocket = data.astronaut(), data.chelsea(), data.coffee(), \
        data.rocket()
    return [
        np.stack([astronaut[:256, :256], astronaut[256:, 256:]]),
        chelsea[None, :280, :280],
        np.stack([coffee[:400, :400], rocket[:400, :400], rocket[27:, 240:]]),
    ]


def _manual_scores(folder, captions, clips):
    """The documented definition, computed by hand with numpy from the raw CLIP features."""
    model = CLIPModel.from_pretrained(folder).eval()
    processor = CLIPProcessor.from_pretrained(folder)

    def features(output):
        tensor = output if isinstance(output, torch.Tensor) else output.pooler_output
        return tensor.detach().numpy().astype(np.float64)

    with torch.no_grad():
        tokens = processor.tokenizer(captions, padding=True, return_tensors="pt")
        text = features(model.get_text_features(**tokens))
        scores = np.zeros((len(captions), len(clips)))
        for j, clip in enumerate(clips):
            pixels = processor.image_processor(images=list(clip), return_tensors="pt")
            image = features(model.get_image_features(**pixels))
            image /= np.linalg.norm(image, axis=1, keepdims=True)
            mean = image.mean(axis=0)
            for i in range(len(captions)):
                scores[i, j] = text[i] @ mean / np.linalg.norm(text[i]) / np.linalg.norm(mean)
    return scores


def test_score_is_cosine_of_caption_and_mean_unit_frame_embedding(clip_folder, scorer, clips):
    expected = _manual_scores(clip_folder, CAPTIONS, clips)
    scores = scorer(CAPTIONS, clips)
    assert len(scores) == 3 and all(isinstance(s, float) for s in scores)
    assert scores == pytest.approx(np.diag(expected), abs=1e-5)
    assert all(-1 <= s <= 1 for s in scores)
    # the frames are weighed as unit vectors: averaging raw embeddings gives other numbers here
    assert not np.allclose(np.diag(expected), _raw_mean_scores(clip_folder, CAPTIONS, clips),
                           atol=1e-4)


def _raw_mean_scores(folder, captions, clips):
    model = CLIPModel.from_pretrained(folder).eval()
    processor = CLIPProcessor.from_pretrained(folder)
    with torch.no_grad():
        text = model.get_text_features(**processor.tokenizer(captions, padding=True,
                                                              return_tensors="pt")).pooler_output
        out = []
        for i, clip in enumerate(clips):
            pixels = processor.image_processor(images=list(clip), return_tensors="pt")
            mean = model.get_image_features(**pixels).pooler_output.mean(dim=0)
            out.append(float(torch.nn.functional.cosine_similarity(text[i], mean, dim=0)))
    return np.array(out)


def test_pairing_batching_and_frame_order(clip_folder, scorer, clips):
    expected = _manual_scores(clip_folder, CAPTIONS, clips)
    # each caption is scored against the frames at its own index: shuffle the clips and the
    # scores follow the cross terms of the hand-computed matrix
    order = [2, 0, 1]
    shuffled = scorer(CAPTIONS, [clips[j] for j in order])
    assert shuffled == pytest.approx([expected[i, j] for i, j in enumerate(order)], abs=1e-5)
    # a clip alone scores as it does in a batch (batch_size 2 splits this batch of 6 frames)
    alone = [scorer([caption], [clip])[0] for caption, clip in zip(CAPTIONS, clips, strict=True)]
    assert alone == pytest.approx(scorer(CAPTIONS, clips), abs=1e-5)
    # the mean does not care about frame order, and a repeated frame adds nothing
    assert scorer(CAPTIONS[:1], [clips[0][::-1]]) == pytest.approx(
        scorer(CAPTIONS[:1], [clips[0]]), abs=1e-5)
    assert scorer(CAPTIONS[1:2], [np.repeat(clips[1], 4, axis=0)]) == pytest.approx(
        scorer(CAPTIONS[1:2], [clips[1]]), abs=1e-5)
    assert scorer([], []) == []


def test_long_captions_are_truncated_to_the_text_context(scorer, clips):
    # the tiny CLIP's context is 16 positions: a longer caption must still score
    long = "a man walking on the beach with a dog " * 6
    (score,) = scorer([long], clips[:1])
    assert -1 <= score <= 1


def test_bad_inputs_and_models_are_one_line_errors(tmp_path, clip_folder, scorer, clips):
    with pytest.raises(ValueError, match="2 captions for 1 clips"):
        scorer(CAPTIONS[:2], clips[:1])
    with pytest.raises(ValueError, match=r"clip 0: expected uint8 frames"):
        scorer(CAPTIONS[:1], [clips[0][0]])
    with pytest.raises(ValueError, match=r"clip 0: expected uint8 frames"):
        scorer(CAPTIONS[:1], [clips[0].astype(np.float32)])
    with pytest.raises(ValueError, match="batch_size"):
        ClipScorer(str(clip_folder), batch_size=0)
    with pytest.raises(UserError, match="--score-clip .*: no such folder"):
        ClipScorer(str(tmp_path / "nowhere" / "clip"))
    llava = build_tiny_llava(tmp_path / "llava")
    with pytest.raises(UserError, match="a 'llava' model is not a CLIP model"):
        ClipScorer(str(llava))
    no_tokenizer = tmp_path / "image-only"
    no_tokenizer.mkdir()
    for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
        (no_tokenizer / name).write_bytes((clip_folder / name).read_bytes())
    with pytest.raises(UserError, match="--score-clip .*: its tokenizer is missing or empty"):
        ClipScorer(str(no_tokenizer))
    no_weights = tmp_path / "no-weights"
    shutil.copytree(clip_folder, no_weights)
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(UserError, match="--score-clip .*: could not load the CLIP weights from "
                                        "the local folder"):
        ClipScorer(str(no_weights))


def test_half_precision_scores_close_to_float32(clip_folder, scorer, clips):
    half = ClipScorer(str(clip_folder), device="cpu", dtype="bfloat16")
    assert half.model.dtype == torch.bfloat16
    assert half(CAPTIONS, clips) == pytest.approx(scorer(CAPTIONS, clips), abs=0.05)
