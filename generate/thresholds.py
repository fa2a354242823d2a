"""The documented limit of each headline check figure, shared by the checks that judge a video
and the report that marks its failing cells."""

from __future__ import annotations

from typing import Any

# metric -> (limit, True when a value above the limit fails, False when one below it fails)
THRESHOLDS = {
    "seam_jump_max": (2.0, True),  # a seam changes twice as much as a typical frame pair
    "seam_reversals": (0, True),  # any seam where the motion turns back (a rewind)
    # a seam pair whose flow-warped residual is 5x the typical pair's (a cut, new detail)
    "seam_warp_jump_max": (5.0, True),
    # a seam pair whose flow departs from its neighbours' 5x more than typical (a jump)
    "seam_motion_jump_max": (5.0, True),
    "flicker": (0.9, False),  # mean frame difference above 25 grey levels
    "stagnant_fraction": (0.5, True),  # half the frame pairs barely move
    "scene_cuts_off_seams": (0, True),  # a content break inside a chunk
    "colour_drift_max": (10.0, True),  # Delta E 10 on the same scene points: visible drift
    "sharpness_drift_max": (1.0, True),  # a chunk half or twice as sharp as the first
    "repetition": (5.0, True),  # chunk c+2 is 5 grey levels closer to c than c+1 is
}


def failing(metrics: dict[str, Any]) -> list[str]:
    """The metrics that cross their `THRESHOLDS` limit (None values never fail)."""
    fails = []
    for name, (limit, above) in THRESHOLDS.items():
        value = metrics.get(name)
        if value is not None and (value > limit if above else value < limit):
            fails.append(name)
    return fails
