import pytest

from tracker.activity import Step, decide

W = 1800.0


def step(**kw):
    args = dict(has_current=False, last_time=None, fix_time=1000.0, mode="always", armed=True,
                resume_window_s=W)
    args.update(kw)
    return decide(**args)


def test_first_fix_starts_an_activity_in_always_mode():
    assert step() is Step.START


def test_manual_mode_waits_for_a_start_request():
    assert step(mode="manual", armed=False) is Step.NONE
    assert step(mode="manual", armed=True) is Step.START


@pytest.mark.parametrize("gap", [0.0, 1.0, W - 0.001, W])
def test_within_the_resume_window_continues(gap):
    assert step(has_current=True, last_time=1000.0, fix_time=1000.0 + gap) is Step.CONTINUE


def test_a_longer_gap_ends_the_activity_and_starts_another():
    assert step(has_current=True, last_time=1000.0, fix_time=1000.0 + W + 1) is Step.RESTART


def test_gps_time_jumping_back_beyond_the_window_is_a_gap():
    assert step(has_current=True, last_time=10_000.0, fix_time=10_000.0 - W - 1) is Step.RESTART


def test_manual_activities_survive_any_gap():
    assert step(has_current=True, last_time=0.0, fix_time=10 * W, mode="manual") is Step.CONTINUE


def test_after_a_stop_request_fixes_are_kept_outside_any_activity():
    assert step(armed=False) is Step.NONE


def test_a_current_activity_without_fixes_continues():
    assert step(has_current=True, last_time=None) is Step.CONTINUE
