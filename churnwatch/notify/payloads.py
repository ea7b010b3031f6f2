"""What each target receives for a transition: Slack blocks, a PagerDuty v2 event, or the alert.

Slack: an incoming-webhook message, `text` (the notification fallback) plus Block Kit blocks
within Slack's limits (header 150 characters, section text 3,000, field 2,000). Text from the
alert is escaped (`&`, `<`, `>`) so a customer id cannot mention `@channel` or forge a link.
PagerDuty: Events API v2; `trigger` for opened and escalated, `resolve` for resolved and
churned, `dedup_key` = alert id, so every transition of one alert lands on one incident.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from churnwatch.domain.alertwire import Transition
from config.notify import PagerDutyTarget, SlackTarget, Target, WebhookTarget

SUMMARY_LIMIT: Final = 1024  # PagerDuty payload.summary
HEADER_LIMIT: Final = 150  # Slack header block, plain_text
SECTION_LIMIT: Final = 3000  # Slack section text
FIELD_LIMIT: Final = 2000  # Slack section field
PAGERDUTY_ACTIONS: Final = {
    "opened": "trigger",
    "escalated": "trigger",
    "resolved": "resolve",
    "churned": "resolve",
}
_STATUS_ICON: Final = {"resolved": ":white_check_mark:", "churned": ":x:"}
_SEVERITY_ICON: Final = {
    "critical": ":red_circle:",
    "warning": ":large_orange_circle:",
    "info": ":large_blue_circle:",
}


@dataclass(frozen=True, slots=True)
class Outbound:
    """One POST to make: where, the JSON body, headers, and the secrets logs must never show."""

    url: str
    body: Mapping[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()


def outbound_for(target: Target, transition: Transition) -> Outbound | None:
    """The request `target` gets for `transition`; None when the target has nothing to send."""
    if isinstance(target, SlackTarget):
        url = target.url.get_secret_value()
        return Outbound(url, slack_message(transition), secrets=_url_secrets(url))
    if isinstance(target, PagerDutyTarget):
        key = target.routing_key.get_secret_value()
        levels = {str(ours): theirs for ours, theirs in target.severity_map.items()}
        event = pagerduty_event(transition, key, target.source, levels)
        if event is None:
            return None
        return Outbound(target.url, event, secrets=(key, *_url_secrets(target.url)))
    url = target.url.get_secret_value()
    return Outbound(url, dict(transition.raw), *_webhook_auth(target, url))


def _webhook_auth(target: WebhookTarget, url: str) -> tuple[dict[str, str], tuple[str, ...]]:
    if target.bearer_token is None:
        return {}, _url_secrets(url)
    token = target.bearer_token.get_secret_value()
    return {"Authorization": f"Bearer {token}"}, (token, *_url_secrets(url))


def _url_secrets(url: str) -> tuple[str, ...]:
    """Parts of a URL that may hold a secret (Slack's token is the path's last segment)."""
    parts = urlsplit(url)
    path = parts.path.strip("/")
    last = path.rsplit("/", 1)[-1]
    candidates = (path, last if len(last) >= 8 else "", parts.query, parts.password)
    return tuple(part for part in candidates if part)


def slack_message(transition: Transition) -> dict[str, Any]:
    """A Slack incoming-webhook message: fallback `text` and blocks."""
    t = transition
    icon = _STATUS_ICON.get(t.status) or _SEVERITY_ICON.get(t.severity, "")
    header = _clip(f"{icon} Churn risk {t.status}: {t.customer_id}".strip(), HEADER_LIMIT)
    fields = [
        ("Customer", f"`{escape(t.customer_id)}`"),
        ("Status", escape(t.status)),
        ("Severity", escape(t.severity)),
        ("Risk score", f"{t.risk_score}/100"),
        ("MRR at stake", escape(money(t.mrr_at_stake, t.currency))),
        ("Segment", escape(segment_label(t.segment)) or "—"),
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header, "emoji": True}},
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": _clip(f"*{name}*\n{value}", FIELD_LIMIT)}
                for name, value in fields
            ],
        },
    ]
    if t.reasons:
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": _reason_lines(transition)}}
        )
    blocks.append(
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": _clip(
                        f"alert `{escape(t.alert_id)}` · opened {t.opened_at.date()}"
                        f" · evaluated {t.event_time.date()} · churnwatch",
                        FIELD_LIMIT,
                    ),
                }
            ],
        }
    )
    return {"text": _clip(escape(summary(transition)), SECTION_LIMIT), "blocks": blocks}


def _reason_lines(transition: Transition) -> str:
    lines: list[str] = []
    size = 0
    for n, reason in enumerate(transition.reasons):
        area = f" ({escape(reason.area)})" if reason.area else ""
        figures = []
        if reason.observed is not None:
            figures.append(f"observed {number(reason.observed)}")
        if reason.baseline is not None:
            figures.append(f"baseline {number(reason.baseline)}")
        if reason.window_days:
            figures.append(f"window {reason.window_days} d")
        line = f"• *{escape(reason.code)}*{area}: {', '.join(figures) or 'no figures'}"
        rest = len(transition.reasons) - n
        if size + len(line) + 1 > SECTION_LIMIT - 40:  # room for the "and N more" line
            lines.append(f"…and {rest} more")
            break
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines)


def pagerduty_event(
    transition: Transition,
    routing_key: str,
    source: str = "churnwatch",
    severity_map: Mapping[str, str] | None = None,
) -> dict[str, Any] | None:
    """A PagerDuty Events API v2 event; None for a status PagerDuty has no action for."""
    t = transition
    action = PAGERDUTY_ACTIONS.get(t.status)
    if action is None:
        return None
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": t.alert_id,
    }
    if action == "resolve":
        return event  # PagerDuty needs only the key of the incident to resolve
    payload: dict[str, Any] = {
        "summary": _clip(summary(transition), SUMMARY_LIMIT),
        "source": source,
        "severity": pagerduty_severity(t.severity, severity_map),
        "timestamp": t.emitted_at.isoformat(),
        "component": t.customer_id,
        "class": ",".join(t.reason_codes) or "churn_risk",
        "custom_details": {
            "alert_id": t.alert_id,
            "customer_id": t.customer_id,
            "status": t.status,
            "risk_score": t.risk_score,
            "severity": t.severity,
            "mrr_at_stake": t.mrr_at_stake,
            "currency": t.currency,
            "segment": dict(t.segment),
            "reasons": [
                {
                    "code": r.code,
                    "area": r.area,
                    "observed": r.observed,
                    "baseline": r.baseline,
                    "window_days": r.window_days,
                }
                for r in t.reasons
            ],
            "opened_at": t.opened_at.isoformat(),
            "event_time": t.event_time.isoformat(),
        },
    }
    group = segment_label(t.segment)
    if group:
        payload["group"] = group
    event["payload"] = payload
    return event


def pagerduty_severity(severity: str, severity_map: Mapping[str, str] | None = None) -> str:
    """PagerDuty's level for a churnwatch severity; an unknown one counts as warning."""
    mapping = severity_map or {"info": "info", "warning": "warning", "critical": "critical"}
    return mapping.get(severity) or mapping.get("warning") or "warning"


def summary(transition: Transition) -> str:
    """One line saying who, what, how urgent and why (unclipped)."""
    t = transition
    why = ", ".join(t.reason_codes) or "no reason holds any more"
    return (
        f"Churn risk {t.status}: customer {t.customer_id} ({t.severity}, score {t.risk_score}/100,"
        f" MRR at stake {money(t.mrr_at_stake, t.currency)}): {why}"
    )


def money(amount: float, currency: str | None) -> str:
    """`1,290.00 EUR`; no currency code when the alert has none."""
    text = f"{amount:,.2f}"
    return f"{text} {currency}" if currency else text


def number(value: float) -> str:
    """A figure at most two decimals long, without trailing zeros: 2.14, 24.5, 1,200."""
    text = f"{value:,.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def segment_label(segment: Mapping[str, str]) -> str:
    """`channel=sales plan=pro`: the segment in a stable order."""
    return " ".join(f"{key}={segment[key]}" for key in sorted(segment))


def escape(text: str) -> str:
    """Escape the three characters Slack's mrkdwn treats as control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
