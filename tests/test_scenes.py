"""The shot detector: cuts where shots change, none inside a steady pan or a fade."""

import numpy as np
from test_caption_keyframes import _three_shots

from datakit.io.scenes import adaptive_cuts, detect_shots
from datakit.io.video import encode_video


def test_cuts_between_shots_and_none_inside_a_fast_pan():
    assert detect_shots(_three_shots()) == [16, 32]  # three photos, each panning 2 px/frame
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 255, (96, 2000, 3), dtype=np.uint8)
    pan = [texture[:, 12 * i: 12 * i + 160] for i in range(40)]  # 12 px per frame, all texture
    assert detect_shots(encode_video(pan, 8, preset="ultrafast")) == []


def test_adaptive_rule_on_known_changes():
    steady = np.full(40, 20.0)  # a pan changes every frame alike: no cut however large
    assert adaptive_cuts(steady) == []
    spiky = steady.copy()
    spiky[[18, 25]] = 80.0  # 4x the neighbours; the second is too close to the first
    assert adaptive_cuts(spiky) == [18]
    assert adaptive_cuts(spiky, min_scene_frames=5) == [18, 25]
    faint = np.zeros(30)
    faint[10] = 10.0  # far above its (zero) neighbours but below the least change of a cut
    assert adaptive_cuts(faint) == []
