"""The camera's easing curves: values worked out by hand, so a swapped curve fails."""

import math

import pytest

from synthesize.pan_zoom import ease


@pytest.mark.parametrize("easing,t,expected", [
    ("linear", 0.3, 0.3),
    ("ease-in", 0.5, 1 - math.cos(math.pi / 4)),       # 0.2929: slow start
    ("ease-out", 0.5, math.sin(math.pi / 4)),          # 0.7071: fast start
    ("ease-in-out", 0.25, 0.5 - 0.5 * math.cos(math.pi / 4)),  # 0.1464
    ("ease-in-out", 0.75, 0.5 + 0.5 * math.cos(math.pi / 4)),
])
def test_curve_values(easing, t, expected):
    assert ease(t, easing) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("easing", ["linear", "ease-in", "ease-out", "ease-in-out"])
def test_curves_start_at_0_end_at_1_and_never_go_back(easing):
    steps = [ease(i / 100, easing) for i in range(101)]
    assert steps[0] == pytest.approx(0) and steps[-1] == pytest.approx(1)
    assert all(b >= a for a, b in zip(steps, steps[1:], strict=False))


def test_ease_in_accelerates_and_ease_out_decelerates():
    first = {e: ease(0.1, e) - ease(0.0, e) for e in ("ease-in", "ease-out")}
    last = {e: ease(1.0, e) - ease(0.9, e) for e in ("ease-in", "ease-out")}
    assert first["ease-in"] < 0.1 < first["ease-out"]
    assert last["ease-in"] > 0.1 > last["ease-out"]
