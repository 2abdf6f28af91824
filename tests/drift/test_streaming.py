"""ADWIN and Page-Hinkley: quiet while the stream is stable, quick after a shift."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scanflow_agents.drift import ADWIN, PageHinkley

Detector = ADWIN | PageHinkley


def errors(rate: float, size: int, seed: int) -> list[float]:
    drawn: list[float] = (np.random.default_rng(seed).random(size) < rate).astype(float).tolist()
    return drawn


def first_alarm(detector: Detector, stream: list[float]) -> int | None:
    for i, x in enumerate(stream):
        if detector.update(x):
            return i
    return None


@pytest.mark.parametrize("make", [ADWIN, PageHinkley], ids=["adwin", "page_hinkley"])
def test_quiet_on_a_stable_error_stream(make: type[Detector]) -> None:
    for seed in range(3):
        detector = make()
        assert first_alarm(detector, errors(0.1, 20_000, seed)) is None
        assert detector.n == 20_000
        assert detector.estimate == pytest.approx(0.1, abs=0.02)


@pytest.mark.parametrize("make", [ADWIN, PageHinkley], ids=["adwin", "page_hinkley"])
def test_detects_an_increase_of_the_error_rate(make: type[Detector]) -> None:
    for seed in range(3):
        detector = make()
        assert first_alarm(detector, errors(0.1, 2_000, seed)) is None
        delay = first_alarm(detector, errors(0.4, 2_000, seed + 100))  # +1 std
        assert delay is not None, delay
        assert delay < 300, delay


def test_adwin_shrinks_to_the_new_regime_and_reports_it() -> None:
    detector = ADWIN()
    stream = np.random.default_rng(0).normal(size=3_000)
    stream[2_000:] += 1.0
    alarms = [i for i, x in enumerate(stream.tolist()) if detector.update(x)]
    assert alarms
    assert 2_000 < alarms[0] < 2_200
    change = detector.state()["last_change"]
    assert change["mean_before"] == pytest.approx(0.0, abs=0.15)
    assert change["mean_after"] == pytest.approx(1.0, abs=0.3)
    assert detector.width < 1_200
    assert detector.estimate == pytest.approx(1.0, abs=0.15)
    json.dumps(detector.state())


def test_adwin_window_statistics_are_exact() -> None:
    # The bucket merges keep sums and squared deviations exactly (up to rounding).
    values = np.random.default_rng(2).normal(3.0, 2.0, size=1_000)
    detector = ADWIN()
    for x in values.tolist():
        detector.update(x)
    assert detector.width == 1_000
    assert detector.estimate == pytest.approx(values.mean())
    assert detector.variance == pytest.approx(values.var())


def test_page_hinkley_directions_and_readable_state_after_detection() -> None:
    down = [0.5] * 100 + [0.0] * 200
    assert first_alarm(PageHinkley(direction="up"), down) is None
    detector = PageHinkley(direction="down")
    at = first_alarm(detector, down)
    assert at is not None
    assert at >= 100
    state = detector.state()
    assert state["detected"] is True
    assert state["statistic"] > state["threshold"]
    json.dumps(state)
    detector.update(0.0)  # the next value starts afresh
    assert detector.n == 1
    assert not detector.detected
    assert detector.detections == 1


def test_page_hinkley_for_std_scales_the_default_tuning() -> None:
    assert PageHinkley.for_std(0.3).delta == pytest.approx(PageHinkley().delta)
    scaled = PageHinkley.for_std(1.0, direction="up")
    assert scaled.threshold == pytest.approx(50.0)
    assert scaled.direction == "up"


@pytest.mark.parametrize("make", [ADWIN, PageHinkley], ids=["adwin", "page_hinkley"])
def test_reset_forgets_the_stream(make: type[Detector]) -> None:
    detector = make()
    for x in errors(0.5, 500, 1):
        detector.update(x)
    detector.reset()
    assert detector.n == 0
    assert detector.estimate == 0.0


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="delta must lie in"):
        ADWIN(delta=0.0)
    with pytest.raises(ValueError, match="up, down or both"):
        PageHinkley(direction="sideways")  # type: ignore[arg-type]
