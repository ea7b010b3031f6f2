"""What closing a period writes: only the records whose evaluation changed.

What a record keeps for later periods' figures is written with the record's own changes: the
activity at a period start when its ring forgets that window (`CustomerState.active_marks`),
and billing history folded when its next billing event is applied. Closing a period once
rewrote every active or billed customer's record for them, at one UTC midnight a period
(at a million customers, hundreds of megabytes of changelog in one batch).
"""

from __future__ import annotations

from datetime import UTC, datetime

from churnwatch.domain.billing import BillingEvent, BillingType
from churnwatch.domain.customer import CustomerState
from churnwatch.domain.engagement import SECONDS_PER_DAY, day_of, ring_days_needed
from churnwatch.domain.events import Heartbeat, UsageEvent
from churnwatch.domain.partition import BatchResult, PartitionClock, PartitionEngine
from config.settings import RuleSettings
from tests.unit.test_partition import DictStore

DAY = SECONDS_PER_DAY
HOUR = 3_600.0
DEC, JAN, FEB, MAR = (
    datetime(y, m, 1, tzinfo=UTC).timestamp()
    for y, m in ((2020, 12), (2021, 1), (2021, 2), (2021, 3))
)
CUSTOMERS = [f"c{number}" for number in range(20)]
ENGINE = PartitionEngine(RuleSettings(), HOUR, ring_days_needed(35, HOUR))

Item = UsageEvent | BillingEvent | Heartbeat


class WriteCountingStore(DictStore):
    """Notes which customers each batch put."""

    def __init__(self) -> None:
        super().__init__()
        self.put_ids: set[str] = set()

    def put(self, state: CustomerState) -> None:
        self.put_ids.add(state.customer_id)
        super().put(state)


def daily_use(first: float, last: float) -> list[UsageEvent]:
    """Every customer at noon of each day from `first` to `last` (exclusive)."""
    days = range(day_of(first), day_of(last))
    return [
        UsageEvent(f"{customer}-{day}", customer, day * DAY + 12 * HOUR, "login")
        for day in days
        for customer in CUSTOMERS
    ]


def billing(customer: str, at: float, kind: BillingType) -> BillingEvent:
    return BillingEvent(f"{customer}-{kind}-{at}", customer, at, kind, mrr_cents=5_000, plan="pro")


class Partition:
    """Partition 0 folded batch after batch, its offsets running on; notes each batch's puts."""

    def __init__(self) -> None:
        self.clock, self.store, self.next_offset = PartitionClock(0), WriteCountingStore(), 0

    def fold(self, items: list[Item], backlog: frozenset[str] = frozenset()) -> BatchResult:
        self.store.put_ids.clear()
        batch = list(enumerate(items, start=self.next_offset))
        self.next_offset += len(items)
        return ENGINE.process(self.clock, batch, self.store, backlog)


def start_active(result: BatchResult, period_start: float) -> int:
    """Customers active at the start of the period the batch closed, starting then."""
    [closed] = [closed for closed in result.closed if closed.period.start == period_start]
    return sum(figures.start_active_customers for figures in closed.figures.values())


def plain(store: DictStore) -> dict[str, dict[str, object]]:
    """Each record as written, but the day evaluated (written with the record's next change)."""
    return {
        customer: {k: v for k, v in state.to_plain().items() if k != "ed"}
        for customer, state in store.states.items()
    }


def changed(result: BatchResult) -> set[str]:
    """Customers whose published health or alert the batch changed."""
    return {health.customer_id for health in result.health} | {
        alert.customer_id for alert in result.alerts
    }


def test_closing_a_period_writes_only_records_whose_evaluation_changed() -> None:
    partition = Partition()
    partition.fold([*daily_use(DEC, FEB), Heartbeat(FEB - HOUR)])
    before = plain(partition.store)

    closing = partition.fold([Heartbeat(FEB + 2 * HOUR)])

    [january] = [closed for closed in closing.closed if closed.period.start == JAN]
    figures = list(january.figures.values())
    assert sum(f.start_active_customers for f in figures) == len(CUSTOMERS)
    assert sum(f.churned_active_customers for f in figures) == 0
    assert partition.store.put_ids <= changed(closing)
    unchanged = set(CUSTOMERS) - changed(closing)
    assert unchanged, "every customer changed: the test shows nothing"
    after = plain(partition.store)
    for customer in unchanged:
        assert after[customer] == before[customer]


def test_activity_at_a_period_start_is_kept_when_the_ring_forgets_its_window() -> None:
    partition = Partition()
    store = partition.store
    partition.fold([*daily_use(DEC, FEB), Heartbeat(FEB + 2 * HOUR)])
    feb_1, window = day_of(FEB), ENGINE.policy.activity_window_days
    for customer in CUSTOMERS:  # the ring still holds February 1's window
        assert store.states[customer].ring.oldest_day <= feb_1 - window
        assert feb_1 not in store.states[customer].active_marks

    # A month of use: the ring forgets mid-January, where February 1's window began.
    closing = partition.fold([*daily_use(FEB, MAR), Heartbeat(MAR + 2 * HOUR)])

    for customer in CUSTOMERS:
        state = store.states[customer]
        assert state.ring.oldest_day > feb_1 - window
        assert feb_1 in state.active_marks
    assert start_active(closing, FEB) == len(CUSTOMERS)


def test_billing_history_folds_when_the_next_billing_event_is_applied() -> None:
    partition = Partition()
    customer = CUSTOMERS[0]
    history: list[Item] = [
        billing(customer, DEC - 20 * DAY, "subscription.started"),
        billing(customer, DEC + 3 * HOUR, "subscription.renewed"),
        billing(customer, JAN + 3 * HOUR, "subscription.renewed"),
        Heartbeat(FEB - HOUR),
    ]
    partition.fold(history)

    closing = partition.fold([Heartbeat(FEB + 2 * HOUR)])

    assert customer not in partition.store.put_ids - changed(closing)
    timeline = partition.store.states[customer].billing
    assert timeline is not None
    assert len(timeline.changes) == 3  # nothing folded by the close

    partition.fold([billing(customer, FEB + 3 * HOUR, "subscription.renewed")])

    # Folded up to the period before the one closed: December's start.
    assert (timeline.base_until, len(timeline.changes)) == (DEC, 3)
    assert timeline.at(DEC).subscribed
    assert timeline.at(FEB + 4 * HOUR).mrr_cents == 5_000


def test_a_ring_grown_by_reading_ahead_keeps_the_activity_it_forgets_when_fitted_back() -> None:
    # Billing lags at mid-December while usage is read to February 10: the watermark waits for
    # billing, so rings grow to keep every day still to be evaluated. Billing then catches up,
    # the days are evaluated, and each ring is fitted back: January 1's window (from December
    # 18) is forgotten there, before January closes on February 1.
    partition = Partition()
    store = partition.store
    ahead = [Heartbeat(DEC + 14 * DAY, kind="billing"), *daily_use(DEC, FEB + 10 * DAY)]
    partition.fold(ahead, backlog=frozenset({"billing"}))
    jan_1, window = day_of(JAN), ENGINE.policy.activity_window_days
    assert all(store.states[c].ring.oldest_day <= jan_1 - window for c in CUSTOMERS)  # grown
    assert all(store.states[c].ring.size > ENGINE.ring_days for c in CUSTOMERS)

    caught_up = partition.fold([Heartbeat(FEB + 10 * DAY, kind="billing")])

    for customer in CUSTOMERS:
        state = store.states[customer]
        assert state.ring.oldest_day > jan_1 - window  # fitted back: the window is gone
        assert jan_1 in state.active_marks
    assert start_active(caught_up, JAN) == len(CUSTOMERS)
