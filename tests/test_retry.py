"""The retry policy is pure: every case runs without a clock or a network."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from tracker.retry import RETRY_AFTER_MAX_S, RetryPolicy, parse_retry_after


def test_ceiling_doubles_up_to_the_cap():
    p = RetryPolicy(base_s=1.0, cap_s=300.0)
    assert [p.ceiling(n) for n in range(1, 11)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]
    assert p.ceiling(0) == 0
    assert p.ceiling(10_000) == 300  # no overflow however long the outage


def test_full_jitter_spans_zero_to_the_ceiling():
    p = RetryPolicy(base_s=2.0, cap_s=60.0)
    for _ in range(3):
        p = p.failed(rand=lambda: 0.5)
    assert p.failures == 3 and p.delay_s == pytest.approx(0.5 * 8.0)
    assert p.failed(rand=lambda: 0.0).delay_s == 0.0
    assert p.failed(rand=lambda: 0.999999).delay_s == pytest.approx(16.0, rel=1e-5)


def test_cap_holds_for_every_draw():
    p = RetryPolicy(base_s=1.0, cap_s=300.0)
    for _ in range(50):
        p = p.failed(rand=lambda: 0.999999)
        assert p.delay_s <= 300.0
    assert p.delay_s > 299.0


def test_policy_is_immutable_and_success_resets():
    p = RetryPolicy()
    q = p.failed(rand=lambda: 0.5)
    assert p.failures == 0 and q.failures == 1  # failed() returns a new value
    with pytest.raises(AttributeError):
        q.failures = 5  # type: ignore[misc]
    r = q.failed(rand=lambda: 0.5).succeeded()
    assert r.failures == 0 and r.delay_s == 0.0
    assert r.failed(rand=lambda: 1.0 - 1e-9).delay_s <= 1.0  # back to the first step


def test_retry_after_is_a_floor_and_bounded():
    p = RetryPolicy(base_s=1.0, cap_s=300.0)
    assert p.failed(retry_after_s=30, rand=lambda: 0.0).delay_s == 30
    big = p.failed(retry_after_s=10**6, rand=lambda: 0.0).delay_s
    assert big == 3600.0  # a server asking for days is waited for an hour, then asked again
    assert big == RETRY_AFTER_MAX_S
    # A jittered delay already longer than Retry-After stays.
    many = RetryPolicy(base_s=1.0, cap_s=300.0, failures=20)
    assert many.failed(retry_after_s=5, rand=lambda: 0.5).delay_s == 150


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError):
        RetryPolicy(base_s=0)


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, None), ("", None), ("120", 120.0), (" 7 ", 7.0), ("soon", None), ("-5", None)],
)
def test_parse_retry_after_seconds(header, expected):
    assert parse_retry_after(header, now=1000.0) == expected


def test_parse_retry_after_http_date():
    now = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC).timestamp()
    later = format_datetime(datetime(2026, 6, 1, 12, 1, 30, tzinfo=UTC), usegmt=True)
    assert parse_retry_after(later, now) == 90.0
    earlier = format_datetime(datetime(2026, 6, 1, 11, 0, 0, tzinfo=UTC), usegmt=True)
    assert parse_retry_after(earlier, now) == 0.0
