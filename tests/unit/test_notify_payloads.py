"""What Slack, PagerDuty and generic webhooks receive for a transition."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from churnwatch.notify.payloads import (
    HEADER_LIMIT,
    SUMMARY_LIMIT,
    money,
    number,
    outbound_for,
    pagerduty_event,
    pagerduty_severity,
    slack_message,
    summary,
)
from churnwatch.notify.transition import parse_transition
from config.notify import PagerDutyTarget, SlackTarget, WebhookTarget
from tests.unit.test_notify_routes import wire

PAGERDUTY_LEVELS = {"critical", "error", "warning", "info"}
KEY = "R0UT1NGKEY0123456789abcdef012345"

reason_codes = st.from_regex(r"[a-z][a-z_]{0,40}", fullmatch=True)
reasons = st.lists(
    st.fixed_dictionaries(
        {
            "code": reason_codes,
            "area": st.text(max_size=60),
            "observed": st.floats(-1e12, 1e12),
            "baseline": st.floats(-1e12, 1e12),
            "window_days": st.integers(0, 400),
        }
    ),
    max_size=60,
)
statuses = st.sampled_from(["opened", "escalated", "resolved", "churned"])


def _field_texts(message: dict[str, Any]) -> dict[str, str]:
    section = message["blocks"][1]
    return {f["text"].split("\n")[0].strip("*"): f["text"] for f in section["fields"]}


def test_slack_message_says_who_what_how_urgent_and_why() -> None:
    message = slack_message(parse_transition(wire(severity="critical")))

    assert message["text"].startswith("Churn risk opened: customer c-42 (critical, score 55/100")
    header, facts, why, context = message["blocks"]
    assert header["type"] == "header"
    assert header["text"]["type"] == "plain_text"
    assert "c-42" in header["text"]["text"]
    assert facts["type"] == "section"
    fields = _field_texts(message)
    assert set(fields) == {
        "Customer",
        "Status",
        "Severity",
        "Risk score",
        "MRR at stake",
        "Segment",
    }
    assert all(f["type"] == "mrkdwn" for f in facts["fields"])
    assert fields["Customer"].endswith("`c-42`")
    assert fields["Risk score"].endswith("55/100")
    assert fields["MRR at stake"].endswith("129.00 EUR")
    assert fields["Segment"].endswith("channel=sales plan=pro")
    assert why["text"]["text"] == (
        "• *usage_drop* (execution): observed 2.1, baseline 24.5, window 7 d"
    )
    assert context["type"] == "context"
    assert "168c3da3-4b83-5445-b94f-7312fe71fa44" in context["elements"][0]["text"]


def test_slack_message_of_a_resolved_alert_has_no_reason_block() -> None:
    message = slack_message(parse_transition(wire(status="resolved", reasons=[], risk_score=0)))

    assert [block["type"] for block in message["blocks"]] == ["header", "section", "context"]
    assert ":white_check_mark:" in message["blocks"][0]["text"]["text"]
    assert message["text"].endswith("no reason holds any more")


def test_slack_text_from_the_alert_cannot_mention_or_link() -> None:
    message = slack_message(
        parse_transition(wire(customer_id="<!channel> & <https://evil|x>", segment={}))
    )

    # mrkdwn parses <!channel> and <url|text>; the header is plain_text, which does not.
    rendered = repr([message["text"], *message["blocks"][1:]])
    assert "<!channel>" not in rendered
    assert message["blocks"][0]["text"]["type"] == "plain_text"
    assert "&lt;!channel&gt; &amp; &lt;https://evil|x&gt;" in message["text"]
    assert _field_texts(message)["Segment"].endswith("—")


@given(
    customer=st.text(min_size=1, max_size=255),
    reasons=reasons,
    status=statuses,
    currency=st.none() | st.text(min_size=1, max_size=10),
    mrr=st.floats(0, 1e12),
)
def test_slack_message_stays_within_slack_limits(
    customer: str, reasons: list[dict[str, Any]], status: str, currency: str | None, mrr: float
) -> None:
    t = parse_transition(
        wire(
            customer_id=customer,
            reasons=reasons,
            status=status,
            currency=currency,
            mrr_at_stake=mrr,
        )
    )

    message = slack_message(t)

    assert 0 < len(message["text"]) <= 3000
    assert len(message["blocks"]) <= 50
    assert len(message["blocks"][0]["text"]["text"]) <= HEADER_LIMIT
    for block in message["blocks"]:
        if block["type"] == "section":
            assert len(block.get("fields", [])) <= 10
            assert all(len(f["text"]) <= 2000 for f in block.get("fields", []))
            assert len(block.get("text", {}).get("text", "")) <= 3000
    if reasons:
        lines = message["blocks"][2]["text"]["text"].split("\n")
        shown = [line for line in lines if line.startswith("•")]
        assert len(shown) == len(reasons) or lines[-1] == f"…and {len(reasons) - len(shown)} more"


@pytest.mark.parametrize(
    ("status", "action"),
    [
        ("opened", "trigger"),
        ("escalated", "trigger"),
        ("resolved", "resolve"),
        ("churned", "resolve"),
    ],
)
def test_pagerduty_action_per_status_with_the_alert_id_as_dedup_key(
    status: str, action: str
) -> None:
    event = pagerduty_event(parse_transition(wire(status=status)), KEY)

    assert event is not None
    assert event["event_action"] == action
    assert event["dedup_key"] == "168c3da3-4b83-5445-b94f-7312fe71fa44"
    assert event["routing_key"] == KEY


def test_pagerduty_trigger_payload() -> None:
    event = pagerduty_event(parse_transition(wire(severity="critical")), KEY, "churnwatch-prod")

    assert event is not None
    payload = event["payload"]
    assert set(payload) == {
        "summary",
        "source",
        "severity",
        "timestamp",
        "component",
        "group",
        "class",
        "custom_details",
    }
    assert payload["source"] == "churnwatch-prod"
    assert payload["severity"] == "critical"
    assert payload["timestamp"] == "2024-03-12T01:00:03.412907+00:00"
    assert payload["component"] == "c-42"
    assert payload["group"] == "channel=sales plan=pro"
    assert payload["class"] == "usage_drop"
    details = payload["custom_details"]
    assert details["mrr_at_stake"] == 129.0
    assert details["reasons"][0] == {
        "code": "usage_drop",
        "area": "execution",
        "observed": 2.1,
        "baseline": 24.5,
        "window_days": 7,
    }


def test_pagerduty_resolve_carries_only_the_incident_key() -> None:
    event = pagerduty_event(parse_transition(wire(status="churned", reasons=[])), KEY)

    assert event == {
        "routing_key": KEY,
        "event_action": "resolve",
        "dedup_key": "168c3da3-4b83-5445-b94f-7312fe71fa44",
    }


def test_pagerduty_group_is_left_out_without_a_segment() -> None:
    event = pagerduty_event(parse_transition(wire(segment={})), KEY)

    assert event is not None
    assert "group" not in event["payload"]


def test_pagerduty_has_no_event_for_an_unknown_status() -> None:
    assert pagerduty_event(parse_transition(wire(status="snoozed")), KEY) is None


@given(
    customer=st.text(min_size=1, max_size=255),
    reasons=reasons,
    status=st.sampled_from(["opened", "escalated"]),
    currency=st.none() | st.text(min_size=1, max_size=200),
)
def test_pagerduty_summary_never_exceeds_1024_characters(
    customer: str, reasons: list[dict[str, Any]], status: str, currency: str | None
) -> None:
    t = parse_transition(
        wire(customer_id=customer, reasons=reasons, status=status, currency=currency)
    )

    event = pagerduty_event(t, KEY)

    assert event is not None
    text = event["payload"]["summary"]
    assert 0 < len(text) <= SUMMARY_LIMIT
    full = summary(t)
    assert text == full if len(full) <= SUMMARY_LIMIT else text == full[:1023] + "…"


@given(severity=st.text(max_size=20))
def test_any_severity_maps_to_a_pagerduty_level(severity: str) -> None:
    assert pagerduty_severity(severity) in PAGERDUTY_LEVELS


@given(
    mapping=st.fixed_dictionaries(
        {
            "info": st.sampled_from(sorted(PAGERDUTY_LEVELS)),
            "warning": st.sampled_from(sorted(PAGERDUTY_LEVELS)),
            "critical": st.sampled_from(sorted(PAGERDUTY_LEVELS)),
        }
    ),
    severity=st.sampled_from(["info", "warning", "critical", "unheard-of"]),
)
def test_a_configured_severity_map_is_followed(mapping: dict[str, str], severity: str) -> None:
    expected = mapping.get(severity, mapping["warning"])

    assert pagerduty_severity(severity, mapping) == expected


def test_pagerduty_target_defaults_to_the_identity_map_and_events_v2_url() -> None:
    target = PagerDutyTarget.model_validate({"routing_key": KEY})

    assert target.url == "https://events.pagerduty.com/v2/enqueue"
    assert target.severity_map == {"info": "info", "warning": "warning", "critical": "critical"}
    with pytest.raises(ValueError, match="lacks"):
        PagerDutyTarget.model_validate({"routing_key": KEY, "severity_map": {"info": "info"}})


def test_outbound_for_pagerduty_maps_severity_and_hides_the_key() -> None:
    target = PagerDutyTarget.model_validate(
        {
            "routing_key": KEY,
            "severity_map": {"info": "info", "warning": "error", "critical": "critical"},
        }
    )

    outbound = outbound_for(target, parse_transition(wire(severity="warning")))

    assert outbound is not None
    assert outbound.url == "https://events.pagerduty.com/v2/enqueue"
    assert outbound.body["payload"]["severity"] == "error"
    assert KEY in outbound.secrets
    assert KEY not in repr(target)


def test_outbound_for_slack_treats_the_url_path_as_secret() -> None:
    url = "https://hooks.slack.com/services/T000/B000/XXXXSECRET"
    outbound = outbound_for(SlackTarget.model_validate({"url": url}), parse_transition(wire()))

    assert outbound is not None
    assert outbound.url == url
    assert "services/T000/B000/XXXXSECRET" in outbound.secrets
    assert set(outbound.body) == {"text", "blocks"}


def test_outbound_for_a_webhook_is_the_alert_itself_with_a_bearer_token() -> None:
    target = WebhookTarget.model_validate(
        {"url": "https://example.com/hook?sig=abc", "bearer_token": "t0k3n"}
    )
    message = wire(future_field=[1, 2])

    outbound = outbound_for(target, parse_transition(message))

    assert outbound is not None
    assert outbound.body == message  # unknown fields included
    assert outbound.headers == {"Authorization": "Bearer t0k3n"}
    assert {"t0k3n", "sig=abc"} <= set(outbound.secrets)


@pytest.mark.parametrize(
    ("value", "text"),
    [(2.142857, "2.14"), (24.5, "24.5"), (7.0, "7"), (1200.0, "1,200"), (0.001, "0")],
)
def test_number(value: float, text: str) -> None:
    assert number(value) == text


def test_money() -> None:
    assert money(1290.0, "EUR") == "1,290.00 EUR"
    assert money(0.0, None) == "0.00"
