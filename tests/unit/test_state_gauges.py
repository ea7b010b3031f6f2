"""The at-risk and active gauges: counted by the figures refresh, read by the scrape."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from churnwatch.domain.alerts import OpenAlert
from churnwatch.domain.billing import Account, Timeline
from churnwatch.domain.customer import CustomerState
from churnwatch.domain.engagement import day_of
from streams.figures import RefreshBudget, StateTally, figures_snapshot
from tests.unit.test_usage_agent import DAY, START, ListEmitter, Msg, plain_worker, usage

RING = 38


def customer(customer_id: str, last_active: float, alert: OpenAlert | None = None) -> CustomerState:
    state = CustomerState.new(customer_id, 0, last_active, RING)
    state.ring.add(day_of(last_active), 1.0)
    state.alert = alert
    return state


def test_the_tally_counts_at_risk_by_reason_severity_and_mrr_and_active_by_segment() -> None:
    today = START + 40 * DAY
    quiet = customer("quiet", START, OpenAlert("a-1", 0, ("inactive", "usage_drop"), 60))
    paying = customer(
        "paying", today - DAY, OpenAlert("a-2", 0, ("payment_failed",), 80, "critical")
    )
    paying.billing = Timeline(Account(subscribed=True, mrr_cents=12_345, plan="pro"))
    fine = customer("fine", today - 2 * DAY)
    tally = StateTally(activity_window_days=30, segment_by=("plan",))

    tally.add([quiet, paying, fine], watermark=today)

    assert tally.at_risk == 2
    assert tally.by_reason == {"inactive": 1, "usage_drop": 1, "payment_failed": 1}
    assert tally.by_severity == {"warning": 1, "critical": 1}
    assert tally.mrr_by_severity == {"critical": 123.45}  # the unsubscribed one has none
    assert tally.active == {("pro",): 1, ("unknown",): 1}  # quiet: idle for 40 days


class TrackedState(CustomerState):
    """A record the test can hold a weak reference to, to see when the pass lets go of it."""

    __slots__ = ("__weakref__",)


def test_a_figures_pass_holds_one_decoded_record_at_a_time(tmp_path: Path) -> None:
    # At 1M customers a partition is 250,000 records, ~750 MB decoded: a pass that listed
    # them before counting grew the worker's heap by that much, and the heap kept it.
    worker = plain_worker(tmp_path, ListEmitter())
    today = START + 40 * DAY
    held: list[weakref.ref[TrackedState]] = []
    most_alive = 0

    def records(partition: int) -> Iterator[CustomerState]:
        nonlocal most_alive
        for number in range(200):
            most_alive = max(most_alive, sum(ref() is not None for ref in held))
            state = TrackedState.new(f"c-{partition}-{number}", partition, today - DAY, RING)
            state.ring.add(day_of(today - DAY), 1.0)
            state.billing = Timeline(Account(subscribed=True, mrr_cents=100, plan="pro"))
            held.append(weakref.ref(state))
            yield state

    tally = StateTally(activity_window_days=30, segment_by=())
    watermarks = {0: today, 1: today}

    snapshot = figures_snapshot(
        worker.engine, lambda p: tally.counting(records(p), watermarks[p]), watermarks
    )

    assert tally.active == {(): 400}  # every record was counted ...
    for view in snapshot.views.values():  # ... for both periods' churn figures too
        assert sum(figures.end_customers for figures in view.figures.values()) == 400
    assert most_alive == 1  # ... and let go of before the next was read


def test_a_partition_without_a_watermark_counts_alerts_but_no_activity() -> None:
    tally = StateTally(activity_window_days=30, segment_by=())
    tally.add([customer("c", START, OpenAlert("a", 0, ("inactive",), 50))], watermark=None)

    assert (tally.at_risk, tally.active) == (1, {})


def test_a_refresh_waits_nine_times_as_long_as_the_last_one_took() -> None:
    budget = RefreshBudget(share=0.1)
    assert budget.due(0.0)
    budget.spent(started=100.0, ended=102.0)  # took 2 s

    assert not budget.due(102.0 + 17.9)
    assert budget.due(102.0 + 18.0)


@pytest.mark.parametrize("share", [0.0, -0.5, 1.5])
def test_a_share_outside_zero_to_one_is_refused(share: float) -> None:
    with pytest.raises(ValueError, match="share"):
        RefreshBudget(share)


def test_the_scrape_reads_the_last_refresh_and_counts_tracked_customers_live(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = plain_worker(tmp_path, ListEmitter())
    monkeypatch.setattr(worker, "owned_partitions", lambda: {0})  # no consumer runs here
    topic = worker.settings.topics.usage
    batch = [
        Msg(topic, 0, day, b"c-1", usage("c-1", START + day * DAY + 3600)) for day in range(3)
    ] + [Msg(topic, 0, 3, b"c-2", usage("c-2", START + 20 * DAY))]  # c-1 idle 17 days: inactive

    asyncio.run(worker.ingest.handle(batch))

    gauge = worker.registry.get_sample_value
    assert gauge("churnwatch_customers_tracked") == 2  # live, from the partition index
    assert gauge("churnwatch_customers_at_risk") == 0  # nothing counted yet
    assert gauge("churnwatch_state_refreshed_timestamp_seconds") is None

    worker.refresh_figures()

    assert gauge("churnwatch_customers_at_risk") == 1
    assert gauge("churnwatch_customers_at_risk_by_reason", {"reason": "inactive"}) == 1
    refreshed = gauge("churnwatch_state_refreshed_timestamp_seconds")
    assert refreshed is not None
    assert refreshed > 0
    duration = gauge("churnwatch_state_refresh_duration_seconds")
    assert duration is not None
    assert duration >= 0
