"""One frozen settings object: defaults here, then a TOML file, then `CHURNWATCH_*` variables.

Precedence (highest first): keyword arguments (the CLI's flags), environment variables
(`CHURNWATCH_BROKER_URL`, nested with `__`: `CHURNWATCH_RULES__INACTIVE_DAYS=10`), the file named
by `CHURNWATCH_CONFIG_FILE` (or `--config`), then the defaults below. Print it with
`churnwatch config`; secrets are `SecretStr` and never printed.
"""

from __future__ import annotations

import os
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from churnwatch.domain.retention import minimum_retention_days
from churnwatch.exceptions import ConfigError
from config.notify import NotifySettings

ENV_PREFIX = "CHURNWATCH_"
CONFIG_FILE_VARIABLE = "CHURNWATCH_CONFIG_FILE"
# The file given to load_settings(), for the settings being built right now only.
_config_file: ContextVar[Path | None] = ContextVar("churnwatch_config_file", default=None)


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TopicSettings(_Section):
    """Topic names; input topics must have the same partition count (co-partitioned)."""

    usage: str = "usage-events"
    billing: str = "billing-events"
    alerts: str = "churnwatch.alerts"
    health: str = Field(
        "churnwatch.customer-health", description="compacted: latest health of every customer"
    )
    dead_letters: str = "churnwatch.dead-letters"


class RuleSettings(_Section):
    """Thresholds of the at-risk rules (see docs/rules.md)."""

    recent_days: int = Field(7, ge=1, le=28, description="usage_drop: length of the recent window")
    baseline_days: int = Field(28, ge=7, le=90, description="usage_drop: baseline window before it")
    drop_ratio: float = Field(
        0.5, gt=0, lt=1, description="usage_drop: fires when recent rate < ratio x baseline rate"
    )
    min_baseline_daily: float = Field(
        1.0, ge=0, description="usage_drop: baseline daily volume below which it never fires"
    )
    min_baseline_days: int = Field(
        14, ge=1, description="usage_drop: baseline days the customer must have existed for"
    )
    inactive_days: int = Field(7, ge=1, le=90, description="inactive: full days without usage")
    payment_grace_days: int = Field(
        3, ge=0, le=60, description="payment_failed: days a failure may last before it counts"
    )
    downgrade_window_days: int = Field(
        30, ge=1, le=90, description="downgrade: compare MRR and seats with this many days ago"
    )
    breadth_drop_ratio: float = Field(
        0.4, gt=0, lt=1, description="breadth_drop: recent distinct users/types < ratio x baseline"
    )
    min_baseline_breadth: float = Field(
        3.0, ge=1, description="breadth_drop: baseline distinct users/types below which it is off"
    )
    low_engagement_share: float = Field(
        0.10, ge=0, lt=1, description="low_engagement: bottom share of the segment (0: off)"
    )
    low_engagement_window_days: int = Field(
        28, ge=1, le=90, description="low_engagement: days of usage the rate is taken over"
    )
    low_engagement_min_tenure_days: int = Field(
        14, ge=1, description="low_engagement: customers newer than this are not ranked"
    )
    low_engagement_min_population: int = Field(
        20, ge=1, description="low_engagement: fewer ranked customers in a segment: off for it"
    )
    onboarding_days: int = Field(
        14, ge=1, le=365, description="onboarding_stalled: days to reach every milestone"
    )
    milestones: dict[str, int] = Field(
        default_factory=dict,
        description="onboarding_stalled: event type -> events needed (empty: rule off)",
    )

    @model_validator(mode="after")
    def _baseline_fits(self) -> RuleSettings:
        if self.min_baseline_days > self.baseline_days:
            raise ValueError("min_baseline_days cannot exceed baseline_days")
        if any(count < 1 for count in self.milestones.values()):
            raise ValueError("milestone counts must be at least 1")
        return self


class SegmentRules(_Section):
    """Rule thresholds for one segment: `match` attributes, then the fields that differ."""

    match: dict[str, str] = Field(min_length=1, description='e.g. {plan = "business"}')
    rules: dict[str, Any] = Field(description="RuleSettings fields to override")

    @model_validator(mode="after")
    def _known_fields(self) -> SegmentRules:
        unknown = set(self.rules) - set(RuleSettings.model_fields)
        if unknown:
            raise ValueError(f"unknown rule settings: {sorted(unknown)}")
        return self

    def apply_to(self, base: RuleSettings) -> RuleSettings:
        """The base thresholds with this segment's overrides, validated."""
        return RuleSettings.model_validate(base.model_dump() | self.rules)


class AlertSettings(_Section):
    """Risk score, severity and lifecycle of alerts (docs/rules.md)."""

    weights: dict[str, float] = Field(
        default_factory=dict, description="reason code -> weight in the score (default table)"
    )
    warning_score: int = Field(40, ge=1, le=100)
    critical_score: int = Field(70, ge=1, le=100)
    high_mrr: float = Field(
        1000.0, ge=0, description="MRR at stake (currency units) that raises severity one step"
    )
    escalation_step: int = Field(20, ge=1, le=100, description="score rise that escalates")
    resolve_after_days: int = Field(
        3, ge=0, le=90, description="days without any reason before an alert resolves"
    )
    cooldown_days: int = Field(
        7, ge=0, le=365, description="after an alert closes, no new one for this many days"
    )
    segment_rules: tuple[SegmentRules, ...] = Field(
        (), description="per-segment rule thresholds; the first matching entry applies"
    )

    @model_validator(mode="after")
    def _ordered(self) -> AlertSettings:
        if self.warning_score > self.critical_score:
            raise ValueError("warning_score cannot exceed critical_score")
        return self


class ChurnSettings(_Section):
    """How churn figures are counted (docs/churn.md)."""

    period: Literal["week", "month", "quarter"] = Field("month", description="UTC calendar")
    segment_by: tuple[str, ...] = Field(
        ("plan", "channel"), max_length=3, description="billing attributes figures are split by"
    )
    count_intra_period: bool = Field(
        False, description="count customers who join and leave inside one period as churned"
    )
    involuntary_after_days: float | None = Field(
        None, gt=0, description="a payment failing this many days counts as (involuntary) churn"
    )
    activity_window_days: int = Field(14, ge=1, le=28, description="activity churn window")
    max_segment_values: int = Field(
        50, ge=1, le=1000, description="distinct values per attribute; the rest become 'other'"
    )
    figures_interval_seconds: float = Field(10.0, gt=0, description="refresh of the gauges")


class EventLimits(_Section):
    """What makes an input message invalid before it reaches any state."""

    max_payload_bytes: int = Field(64 * 1024, ge=256)
    max_id_length: int = Field(256, ge=8)
    max_future_skew_seconds: float = Field(
        86_400, ge=0, description="reject occurred_at further ahead of the wall clock"
    )
    earliest_event_time: float = Field(
        946_684_800, description="reject occurred_at before this (epoch s; 2000-01-01)"
    )
    max_quantity: float = Field(1e9, gt=0)
    max_envelope_bytes: int = Field(
        1024 * 1024, ge=256, description="largest envelope (many events of one customer)"
    )
    max_envelope_events: int = Field(1000, ge=1, description="most events in one envelope")
    dedupe_horizon_seconds: float = Field(
        86_400,
        ge=0,
        description="a usage event_id seen again within this (event time) is "
        "counted once; 0: no event_id dedupe",
    )
    dedupe_max_ids: int = Field(
        4096, ge=1, description="event ids remembered per customer at most (oldest go first)"
    )


class StateSettings(_Section):
    """Bounds on the customer state a worker keeps (docs/input-safety.md)."""

    retention_days: int = Field(
        400,
        ge=1,
        description="forget customers not subscribed and idle this many days (event time)",
    )
    max_customers_per_partition: int = Field(
        500_000,
        ge=1,
        description="new customers beyond this per partition are dead-lettered (capacity)",
    )
    sweep_decoded_max: int = Field(
        20_000,
        ge=0,
        description="customers of a partition the daily evaluation keeps decoded (~3 KB each) "
        "between its two passes; a bigger partition is read twice, one record at a time",
    )
    decoded_cache_max: int = Field(
        20_000,
        ge=0,
        description="customer records kept decoded between batches (~3 KB each), so a "
        "customer's next event or daily evaluation does not decode its record again; 0: none",
    )


SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
TLS_PROTOCOLS = ("SSL", "SASL_SSL")


class KafkaSecuritySettings(_Section):
    """How every Kafka client authenticates and encrypts (docs/security.md)."""

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    username: str | None = Field(None, description="SASL user (SASL_PLAINTEXT, SASL_SSL)")
    password: SecretStr | None = Field(None, description="SASL password; or password_file")
    password_file: Path | None = Field(
        None, description="file holding the SASL password (a mounted secret), read at start"
    )
    ca_file: Path | None = Field(
        None, description="PEM CA bundle to verify the brokers (default: the system's)"
    )
    cert_file: Path | None = Field(None, description="PEM client certificate (mutual TLS)")
    key_file: Path | None = Field(None, description="PEM private key of cert_file")
    check_hostname: bool = Field(True, description="verify the broker's name in its certificate")

    @model_validator(mode="after")
    def _consistent(self) -> KafkaSecuritySettings:
        """The shape only: the files are read when the clients are made (at start), since a
        mounted secret may not be there when a tool merely loads the settings."""
        protocol = self.security_protocol
        if protocol in SASL_PROTOCOLS:
            if not self.username:
                raise ValueError(f"security_protocol {protocol} needs a username")
            if self.password is None and self.password_file is None:
                raise ValueError(f"security_protocol {protocol} needs password or password_file")
        elif self.username or self.password or self.password_file:
            raise ValueError(
                f"username/password set but security_protocol is {protocol}: "
                "use SASL_PLAINTEXT or SASL_SSL"
            )
        files = {"ca_file": self.ca_file, "cert_file": self.cert_file, "key_file": self.key_file}
        named = [name for name, path in files.items() if path is not None]
        if protocol not in TLS_PROTOCOLS and (named or not self.check_hostname):
            shown = ", ".join(named) or "check_hostname"
            raise ValueError(
                f"{shown} set but security_protocol is {protocol}: use SSL or SASL_SSL"
            )
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class Settings(BaseSettings):
    """Everything a churnwatch process can be told."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
    )

    app_id: str = "churnwatch"
    broker_url: str = Field(
        "kafka://localhost:9092", description="Kafka bootstrap; kafka://host:port[;host:port]"
    )
    store: str = Field("memory://", description="Faust table store: memory:// or rocksdb://")
    partitions: int = Field(4, ge=1, le=1024, description="partitions of the input topics")
    replication_factor: int = Field(1, ge=1)
    web_bind: str = Field("127.0.0.1", description="address the HTTP server listens on")
    web_host: str = Field(
        "127.0.0.1", description="hostname other workers and clients reach this worker by"
    )
    web_port: int = Field(6066, ge=1, le=65535)
    api_token: SecretStr | None = Field(
        None, description="bearer token the HTTP API requires (all but /metrics and /healthz)"
    )
    data_dir: Path = Field(Path("var/worker"), description="Faust's table and worker data")
    database_url: str = Field(
        "sqlite:///var/churnwatch.sqlite3",
        description="SQLAlchemy URL of the store; postgresql+psycopg://… in production",
    )
    cache_dir: Path = Field(
        Path.home() / ".cache" / "churnwatch", description="where the embedded Kafka jars live"
    )

    batch_max_events: int = Field(4000, ge=1, description="events folded per batch at most")
    batch_within_seconds: float = Field(0.1, gt=0, description="wait at most this for a batch")
    fetch_max_wait_ms: int = Field(
        100, ge=1, le=60_000, description="longest the broker holds a fetch with nothing new"
    )
    allowed_lateness_seconds: float = Field(
        3600, ge=0, le=7 * 86_400, description="out-of-order tolerance within a partition"
    )
    clock: Literal["event", "live"] = Field(
        "event", description="event: time moves with events; live: also with the wall clock"
    )
    sweep_interval_seconds: float = Field(5.0, gt=0)

    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    topics: TopicSettings = TopicSettings()
    rules: RuleSettings = RuleSettings()
    alerts: AlertSettings = AlertSettings()
    notify: NotifySettings = NotifySettings()
    churn: ChurnSettings = ChurnSettings()
    limits: EventLimits = EventLimits()
    state: StateSettings = StateSettings()
    kafka: KafkaSecuritySettings = KafkaSecuritySettings()

    @model_validator(mode="after")
    def _retention_keeps_figures(self) -> Settings:
        needed = minimum_retention_days(
            self.churn.period, self.churn.activity_window_days, self.allowed_lateness_seconds
        )
        if self.state.retention_days < needed:
            raise ValueError(
                f"state.retention_days must be at least {needed} with {self.churn.period}ly "
                "periods: figures of the open and the previous period need the customers"
            )
        return self

    @model_validator(mode="after")
    def _segment_rules_fit(self) -> Settings:
        for entry in self.alerts.segment_rules:
            try:
                entry.apply_to(self.rules)
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
                )
                raise ValueError(f"alerts.segment_rules {entry.match}: {problems}") from None
        return self

    @property
    def bootstrap_servers(self) -> list[str]:
        """Broker URL as kafka-python wants it (`host:port` strings)."""
        return [part.removeprefix("kafka://") for part in self.broker_url.split(";") if part]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config_file = _config_file.get() or os.environ.get(CONFIG_FILE_VARIABLE)
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings once, at the edge; raise ConfigError with every problem listed."""
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"config file not found: {config_file}")
    named = os.environ.get(CONFIG_FILE_VARIABLE)
    if config_file is None and named and not Path(named).is_file():
        raise ConfigError(f"{CONFIG_FILE_VARIABLE} names a missing file: {named}")
    token = _config_file.set(config_file)
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file is not valid TOML: {exc}") from exc
    except SettingsError as exc:
        raise ConfigError(f"invalid settings: {exc}") from exc
    finally:
        _config_file.reset(token)
