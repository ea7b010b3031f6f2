"""Which routes take a transition.

A closing transition (resolved, churned) carries no reasons and may carry a lower severity
than the alert had, so its own fields would rarely pass the filters that let the alert in. It
goes to every route that was sent an earlier transition of the same alert (`notified`), so a
PagerDuty incident that was triggered is also resolved, and otherwise through the filters.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from churnwatch.domain.alertwire import Transition
from config.notify import SEVERITY_RANK, Route, RouteMatch


def matches(match: RouteMatch, transition: Transition) -> bool:
    """Whether `transition` passes every filter of `match`."""
    if transition.status not in match.statuses:
        return False
    if SEVERITY_RANK.get(transition.severity, 0) < SEVERITY_RANK[match.min_severity]:
        return False
    if transition.mrr_at_stake < match.min_mrr_at_stake:
        return False
    if match.reasons and not set(match.reasons) & set(transition.reason_codes):
        return False
    return all(transition.segment.get(key) in values for key, values in match.segment.items())


def select_routes(
    routes: Iterable[Route], transition: Transition, notified: Collection[str] = ()
) -> list[Route]:
    """The routes `transition` goes to, in configuration order.

    `notified`: names of the routes already sent a transition of this alert.
    """
    selected = []
    for route in routes:
        follows_up = (
            transition.closing
            and route.name in notified
            and transition.status in route.match.statuses
        )
        if follows_up or matches(route.match, transition):
            selected.append(route)
    return selected
