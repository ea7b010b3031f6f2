"""Notifier settings: defaults, the documented TOML example, environment variables, secrets."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from config.notify import NotifySettings, PagerDutyTarget, SlackTarget, WebhookTarget

DOC = Path(__file__).resolve().parents[2] / "docs" / "notifier.md"


class _WithNotify(BaseSettings):
    """How `Settings` carries the section: `notify: NotifySettings = NotifySettings()`."""

    model_config = SettingsConfigDict(env_prefix="CHURNWATCH_", env_nested_delimiter="__")
    notify: NotifySettings = NotifySettings()


def _documented_toml() -> dict[str, object]:
    block = re.search(r"```toml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)
    assert block is not None
    return tomllib.loads(block.group(1))


def test_defaults_leave_the_notifier_idle() -> None:
    notify = NotifySettings()

    assert notify.routes == ()
    assert not notify.active
    assert notify.retry.attempts >= 1


def test_the_documented_example_is_valid_and_means_what_it_says() -> None:
    notify = NotifySettings.model_validate(_documented_toml()["notify"])

    assert notify.active
    slack, pager, crm = notify.routes
    assert isinstance(slack.target, SlackTarget)
    assert slack.match.segment == {"plan": ("pro", "enterprise")}
    assert isinstance(pager.target, PagerDutyTarget)
    assert pager.target.url == "https://events.pagerduty.com/v2/enqueue"
    assert notify.rate_limit_of(pager).per_minute == 10
    assert notify.rate_limit_of(slack) == notify.rate_limit
    assert isinstance(crm.target, WebhookTarget)
    assert crm.match.reasons == ("payment_failed", "cancel_scheduled")


def test_secrets_are_not_printed() -> None:
    notify = NotifySettings.model_validate(_documented_toml()["notify"])

    printed = repr(notify) + notify.model_dump_json()
    for secret in ("XXXXXXXXXXXXXXXXXXXXXXXX", "0123456789abcdef0123456789abcdef", "s3cret"):
        assert secret not in printed


def test_environment_variables_set_routes_and_nested_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHURNWATCH_NOTIFY__RETRY__ATTEMPTS", "2")
    monkeypatch.setenv(
        "CHURNWATCH_NOTIFY__ROUTES",
        '[{"name": "ops", "match": {"min_severity": "critical"},'
        ' "target": {"kind": "pagerduty", "routing_key": "k"}}]',
    )

    notify = _WithNotify().notify

    assert notify.retry.attempts == 2
    assert notify.routes[0].name == "ops"
    assert notify.routes[0].match.min_severity == "critical"


@pytest.mark.parametrize(
    "section",
    [
        {"routes": [{"name": "x", "target": {"kind": "email", "url": "u"}}]},
        {"routes": [{"name": "x", "target": {"kind": "slack"}}]},
        {"routes": [{"name": "x", "target": {"kind": "pagerduty"}}]},
        {"routes": [{"name": "x", "target": {"kind": "slack", "url": "u"}, "color": "red"}]},
        {
            "routes": [
                {"name": "x", "match": {"statuses": []}, "target": {"kind": "webhook", "url": "u"}}
            ]
        },
        {"retry": {"backoff_seconds": 5, "max_backoff_seconds": 1}},
        {"rate_limit": {"per_minute": 0}},
        {"max_age_seconds": -1},
    ],
)
def test_invalid_sections_are_refused(section: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        NotifySettings.model_validate(section)


def test_disabled_is_idle_even_with_routes() -> None:
    notify = NotifySettings.model_validate(
        {"enabled": False, "routes": [{"name": "x", "target": {"kind": "webhook", "url": "u"}}]}
    )

    assert not notify.active
