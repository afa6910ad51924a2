"""Pure cron and webhook rules: slot claims, catch-up, backoff, the SSRF address policy, signatures,
and croniter read in a time zone."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from runplane.core.errors import InvalidInput
from runplane.core.lifecycle import (
    cron_is_due,
    cron_next_slot_after_fire,
    may_claim_slot,
    webhook_payload,
    webhook_retry_delay,
    webhook_url,
)
from runplane.core.models import Run
from runplane.core.run_kwargs import RunKwargs
from runplane.core.webhooks import AddressPolicy, sign, verify
from runplane.worker.scheduler import CroniterSchedule

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_a_cron_is_due_when_enabled_reached_and_not_ended() -> None:
    assert cron_is_due(True, T0, None, T0)
    assert not cron_is_due(True, T0 + timedelta(seconds=1), None, T0)
    assert not cron_is_due(False, T0, None, T0)
    assert not cron_is_due(True, None, None, T0)
    assert cron_is_due(True, T0, T0, T0 + timedelta(hours=1))
    assert not cron_is_due(True, T0, T0 - timedelta(seconds=1), T0)


def test_only_the_awaited_slot_may_be_claimed() -> None:
    assert may_claim_slot(T0, True, T0)
    assert not may_claim_slot(T0 + timedelta(minutes=1), True, T0)  # someone fired it already
    assert not may_claim_slot(T0, False, T0)  # disabled meanwhile
    assert not may_claim_slot(None, True, T0)


def test_after_downtime_the_next_slot_is_after_now_so_catch_up_fires_once() -> None:
    schedule = CroniterSchedule()
    missed_since = T0
    now = T0 + timedelta(minutes=10, seconds=30)  # ten slots of "* * * * *" were missed
    after = schedule.next_after("* * * * *", None, now)
    assert cron_next_slot_after_fire(after, None) == T0 + timedelta(minutes=11)
    assert after > missed_since + timedelta(minutes=10)
    assert cron_next_slot_after_fire(after, now) is None  # past the end: never again


def test_croniter_reads_the_expression_in_the_time_zone() -> None:
    schedule = CroniterSchedule()
    # 09:00 in Paris is 08:00 UTC in winter and 07:00 UTC in summer.
    assert schedule.next_after("0 9 * * *", "Europe/Paris", T0) == datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    summer = datetime(2026, 7, 1, tzinfo=UTC)
    assert schedule.next_after("0 9 * * *", "Europe/Paris", summer) == datetime(2026, 7, 1, 7, 0, tzinfo=UTC)
    assert schedule.next_after("* * * * * */10", None, T0) == T0 + timedelta(seconds=10)


@pytest.mark.parametrize(
    ("expression", "timezone", "message"),
    [
        ("not a cron", None, "Invalid cron schedule"),
        ("61 * * * *", None, "Invalid cron schedule"),
        ("", None, "Invalid cron schedule"),
        ("* * * * *", "Mars/Olympus", "Invalid timezone"),
        ("* * * * *", "../../etc/passwd", "Invalid timezone"),
    ],
)
def test_bad_expressions_and_zones_are_refused(expression: str, timezone: str | None, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        CroniterSchedule().check(expression, timezone)


def test_backoff_doubles_is_capped_and_jittered() -> None:
    delays = [webhook_retry_delay(n, base=1.0, cap=60.0, jitter=1.0) for n in range(1, 9)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    assert webhook_retry_delay(3, base=1.0, cap=60.0, jitter=0.0) == 2.0  # the lower half
    assert 2.0 < webhook_retry_delay(3, base=1.0, cap=60.0, jitter=0.5) < 4.0


def _run(**changes: object) -> Run:
    base = Run(
        run_id="r",
        thread_id="t",
        assistant_id="a",
        owner="",
        status="success",
        multitask_strategy="enqueue",
        created_at=T0,
        updated_at=T0,
        kwargs=RunKwargs.from_json({"webhook": "https://example.com/h"}),
        started_at=T0,
        ended_at=T0 + timedelta(seconds=2),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_only_terminal_runs_with_a_webhook_have_a_delivery() -> None:
    assert webhook_url(_run()) == "https://example.com/h"
    assert webhook_url(_run(status="running")) is None
    assert webhook_url(_run(kwargs={})) is None


def test_the_payload_has_the_reference_shape() -> None:
    payload = webhook_payload(_run(status="timeout", error=None), {"v": 1})
    assert payload["run_started_at"] == T0.isoformat()
    assert payload["run_ended_at"] == (T0 + timedelta(seconds=2)).isoformat()
    assert payload["values"] == {"v": 1}
    assert payload["error"] == {"error": "TimeoutError", "message": "run timed out"}
    assert "error" not in webhook_payload(_run(), None)


@pytest.mark.parametrize(
    ("host", "addresses", "refused"),
    [
        ("example.com", ["93.184.216.34"], None),
        ("example.com", ["93.184.216.34", "10.0.0.5"], "private"),  # any private answer refuses
        ("x", ["127.0.0.1"], "loopback"),
        ("x", ["::1"], "loopback"),
        ("x", ["::ffff:127.0.0.1"], "loopback"),
        ("x", ["169.254.169.254"], "cloud metadata"),
        ("x", ["fd00:ec2::254"], "cloud metadata"),
        ("x", ["169.254.1.1"], "link-local"),
        ("x", ["fe80::1"], "link-local"),
        ("x", ["192.168.1.1"], "private"),
        ("x", ["100.64.0.1"], "private"),  # carrier-grade NAT
        ("x", ["0.0.0.0"], "reserved"),
        ("metadata.google.internal", ["8.8.8.8"], "metadata"),
        ("nowhere.invalid", [], "does not resolve"),
    ],
)
def test_the_address_policy(host: str, addresses: list[str], refused: str | None) -> None:
    reason = AddressPolicy().refusal(host, addresses)
    if refused is None:
        assert reason is None
    else:
        assert reason is not None and refused in reason


def test_the_allow_list_takes_hosts_and_networks() -> None:
    policy = AddressPolicy.parse(" 10.0.0.0/8 , Hooks.Internal., 127.0.0.1 ")
    assert policy.refusal("a", ["10.2.3.4"]) is None
    assert policy.refusal("hooks.internal", []) is None
    assert policy.refusal("a", ["127.0.0.1"]) is None
    assert policy.refusal("a", ["127.0.0.2"]) is not None
    assert policy.refusal("a", ["192.168.0.1"]) is not None
    assert AddressPolicy(allow_loopback=True).refusal("localhost", ["127.0.0.1", "::1"]) is None
    assert AddressPolicy(allow_loopback=True).refusal("x", ["169.254.169.254"]) is not None
    with pytest.raises(InvalidInput):
        AddressPolicy.parse("10.0.0.0/99")


def test_signatures_verify_only_the_same_secret_timestamp_and_body() -> None:
    signature = sign("s3cret", "1700000000", b'{"a":1}')
    assert signature.startswith("v1=")
    assert verify("s3cret", "1700000000", b'{"a":1}', signature)
    assert not verify("other", "1700000000", b'{"a":1}', signature)
    assert not verify("s3cret", "1700000001", b'{"a":1}', signature)
    assert not verify("s3cret", "1700000000", b'{"a":2}', signature)
