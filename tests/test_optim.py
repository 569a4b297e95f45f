"""Learning-rate schedules from config: each shape's value at step 0, at the end of the warm-up and at the
last step, against the formula."""

import math

import ml_collections
import pytest

from cfjax.optim import make_schedule

LR, NUM_STEPS, WARMUP = 2e-4, 100, 20


def _config(schedule: str, warmup: int = 0) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({"schedule": schedule, "learning_rate": LR, "warmup_steps": warmup})


def _at(schedule, step: int) -> float:
    return float(schedule(step))


@pytest.mark.parametrize("shape", ["constant", "cosine", "linear"])
def test_without_warmup_every_schedule_starts_at_the_learning_rate(shape):
    schedule = make_schedule(_config(shape), NUM_STEPS)
    assert _at(schedule, 0) == pytest.approx(LR)
    end = {"constant": LR, "cosine": 0.0, "linear": 0.0}[shape]
    assert _at(schedule, NUM_STEPS) == pytest.approx(end, rel=1e-6, abs=1e-10)
    middle = {"constant": LR, "cosine": LR / 2, "linear": LR / 2}[shape]
    assert _at(schedule, NUM_STEPS // 2) == pytest.approx(middle, rel=1e-5)


def test_cosine_follows_half_a_cosine_period():
    schedule = make_schedule(_config("cosine"), NUM_STEPS)
    for step in (10, 25, 75, 90):
        expected = LR * 0.5 * (1 + math.cos(math.pi * step / NUM_STEPS))
        assert _at(schedule, step) == pytest.approx(expected, rel=1e-5), step


@pytest.mark.parametrize("shape", ["constant", "cosine", "linear"])
def test_warmup_ramps_from_zero_to_the_learning_rate_then_decays_over_the_remaining_steps(shape):
    schedule = make_schedule(_config(shape, WARMUP), NUM_STEPS)
    assert _at(schedule, 0) == 0.0
    assert _at(schedule, WARMUP // 2) == pytest.approx(LR / 2, rel=1e-5)  # linear ramp
    assert _at(schedule, WARMUP) == pytest.approx(LR)  # end of the warm-up: the full rate
    # The decay spans num_steps - warmup steps, so it reaches its end at num_steps, not later.
    end = {"constant": LR, "cosine": 0.0, "linear": 0.0}[shape]
    assert _at(schedule, NUM_STEPS) == pytest.approx(end, rel=1e-6, abs=1e-10)
    middle = {"constant": LR, "cosine": LR / 2, "linear": LR / 2}[shape]
    assert _at(schedule, WARMUP + (NUM_STEPS - WARMUP) // 2) == pytest.approx(middle, rel=1e-5)


def test_a_warmup_as_long_as_the_run_still_gives_a_schedule():
    schedule = make_schedule(_config("linear", NUM_STEPS), NUM_STEPS)  # decay over max(0, 1) step
    assert _at(schedule, 0) == 0.0 and _at(schedule, NUM_STEPS) == pytest.approx(LR)


def test_an_unknown_schedule_is_named():
    with pytest.raises(ValueError, match="schedule must be one of .*'constant', 'cosine', 'linear'.*got 'step'"):
        make_schedule(_config("step"), NUM_STEPS)
