"""Notifier settings: routes from alert transitions to Slack, PagerDuty and generic webhooks.

The `[notify]` table of the settings file, or `CHURNWATCH_NOTIFY__*` variables (a whole list as
JSON: `CHURNWATCH_NOTIFY__ROUTES='[{"name": "ops", ...}]'`). No route: the notifier is idle.
Webhook URLs and routing keys are `SecretStr`: `churnwatch config` prints them as stars.
Reference and an example: docs/notifier.md.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

Severity = Literal["info", "warning", "critical"]
Status = Literal["opened", "escalated", "resolved", "churned"]
PagerDutySeverity = Literal["critical", "error", "warning", "info"]

SEVERITY_RANK: Final[dict[str, int]] = {"info": 0, "warning": 1, "critical": 2}
ALL_STATUSES: Final[tuple[Status, ...]] = ("opened", "escalated", "resolved", "churned")
PAGERDUTY_EVENTS_URL: Final = "https://events.pagerduty.com/v2/enqueue"


def _same_severities() -> dict[Severity, PagerDutySeverity]:
    return {"info": "info", "warning": "warning", "critical": "critical"}


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RouteMatch(_Section):
    """Which transitions a route takes: every condition must hold (an empty one always does)."""

    min_severity: Severity = Field("info", description="lowest severity sent")
    reasons: tuple[str, ...] = Field(
        (), description="any of these reason codes; empty: any reason (or none)"
    )
    min_mrr_at_stake: float = Field(0.0, ge=0, description="lowest MRR at stake sent")
    segment: dict[str, tuple[str, ...]] = Field(
        default_factory=dict,
        description="segment attribute -> accepted values (a string is one value); all must hold",
    )
    statuses: tuple[Status, ...] = Field(ALL_STATUSES, min_length=1)

    @field_validator("segment", mode="before")
    @classmethod
    def _one_value_is_a_list(cls, value: object) -> object:
        if isinstance(value, dict):
            return {k: (v,) if isinstance(v, str) else v for k, v in value.items()}
        return value


class SlackTarget(_Section):
    """A Slack (or Slack-compatible: Mattermost, Rocket.Chat) incoming webhook."""

    kind: Literal["slack"] = "slack"
    url: SecretStr = Field(description="incoming webhook URL; its path is the secret")


class PagerDutyTarget(_Section):
    """A PagerDuty Events API v2 integration: trigger on opened/escalated, resolve on close."""

    kind: Literal["pagerduty"] = "pagerduty"
    url: str = Field(PAGERDUTY_EVENTS_URL, description="Events API v2 enqueue endpoint")
    routing_key: SecretStr = Field(description="the integration key of the service")
    source: str = Field("churnwatch", min_length=1, description="payload.source")
    severity_map: dict[Severity, PagerDutySeverity] = Field(
        default_factory=_same_severities,
        description="churnwatch severity -> PagerDuty severity",
    )

    @field_validator("severity_map")
    @classmethod
    def _maps_every_severity(
        cls, value: dict[Severity, PagerDutySeverity]
    ) -> dict[Severity, PagerDutySeverity]:
        missing = set(SEVERITY_RANK) - set(value)
        if missing:
            raise ValueError(f"severity_map lacks {sorted(missing)}")
        return value


class WebhookTarget(_Section):
    """Any HTTP endpoint: the alert transition itself, as JSON."""

    kind: Literal["webhook"] = "webhook"
    url: SecretStr
    bearer_token: SecretStr | None = Field(None, description="sent as Authorization: Bearer")


Target = Annotated[SlackTarget | PagerDutyTarget | WebhookTarget, Field(discriminator="kind")]


class RateLimitSettings(_Section):
    """A token bucket per route: `burst` at once, refilled at `per_minute`."""

    per_minute: float = Field(30.0, gt=0, description="sustained notifications per minute")
    burst: int = Field(10, ge=1, description="notifications sent back to back at most")
    max_delay_seconds: float = Field(
        5.0, ge=0, le=300, description="wait at most this for a token; then drop (rate_limited)"
    )


class RetrySettings(_Section):
    """Retries on 5xx, 429, timeouts and connection errors; other 4xx are final."""

    attempts: int = Field(5, ge=1, le=20, description="attempts per notification, first included")
    backoff_seconds: float = Field(1.0, gt=0, description="first backoff; doubles per retry")
    max_backoff_seconds: float = Field(
        10.0, gt=0, description="longest backoff; a longer Retry-After fails the notification"
    )
    timeout_seconds: float = Field(5.0, gt=0, le=300, description="per attempt")

    @model_validator(mode="after")
    def _cap_covers_base(self) -> RetrySettings:
        if self.max_backoff_seconds < self.backoff_seconds:
            raise ValueError("max_backoff_seconds cannot be below backoff_seconds")
        return self


class Route(_Section):
    """A named route: matching transitions go to its target."""

    name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$", description="metric label; lower-case, ≤ 63"
    )
    match: RouteMatch = RouteMatch()
    target: Target
    rate_limit: RateLimitSettings | None = Field(
        None, description="this route's bucket; unset: [notify.rate_limit]"
    )


class NotifySettings(_Section):
    """Where alert transitions are sent; no routes (the default) leaves the notifier idle."""

    enabled: bool = True
    routes: tuple[Route, ...] = ()
    retry: RetrySettings = RetrySettings()
    rate_limit: RateLimitSettings = RateLimitSettings()
    max_age_seconds: float = Field(
        86_400.0,
        ge=0,
        description="skip transitions emitted longer ago (a first start does not page history);"
        " 0: never skip",
    )
    proxy_url: SecretStr | None = Field(None, description="HTTP(S) proxy for every request")

    @field_validator("routes")
    @classmethod
    def _unique_names(cls, routes: tuple[Route, ...]) -> tuple[Route, ...]:
        names = [route.name for route in routes]
        doubled = sorted({name for name in names if names.count(name) > 1})
        if doubled:
            raise ValueError(f"route names must be unique: {doubled}")
        return routes

    @property
    def active(self) -> bool:
        """Whether the notifier has anything to do."""
        return self.enabled and bool(self.routes)

    def rate_limit_of(self, route: Route) -> RateLimitSettings:
        """The route's own rate limit, or the shared default."""
        return route.rate_limit or self.rate_limit
