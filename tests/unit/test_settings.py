"""Settings come from defaults, a TOML file, CHURNWATCH_* variables and keywords, in that order."""

from __future__ import annotations

import os
from pathlib import Path

import pydantic
import pytest

from churnwatch.exceptions import ConfigError
from config.settings import (
    CONFIG_FILE_VARIABLE,
    ENV_PREFIX,
    EventLimits,
    RuleSettings,
    Settings,
    TopicSettings,
    load_settings,
)

EXAMPLE_FILE = Path(__file__).resolve().parents[2] / "config" / "churnwatch.example.toml"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CHURNWATCH_* variable from outside; none set by a test outlives it.

    load_settings(config_file=...) writes CHURNWATCH_CONFIG_FILE itself: setting it first makes
    monkeypatch remember its original state, which it restores afterwards.
    """
    monkeypatch.setenv(CONFIG_FILE_VARIABLE, "")
    for name in [name for name in os.environ if name.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(name)


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "churnwatch.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults() -> None:
    settings = load_settings()

    assert settings.broker_url == "kafka://localhost:9092"
    assert settings.bootstrap_servers == ["localhost:9092"]
    assert settings.partitions == 4
    assert settings.clock == "event"
    assert settings.allowed_lateness_seconds == 3600
    assert settings.topics == TopicSettings()
    assert settings.topics.usage == "usage-events"
    assert settings.rules == RuleSettings()
    assert (settings.rules.recent_days, settings.rules.baseline_days) == (7, 28)
    assert settings.rules.drop_ratio == 0.5
    assert settings.rules.inactive_days == 7
    assert settings.limits == EventLimits()
    assert settings.limits.max_payload_bytes == 64 * 1024


def test_environment_overrides_defaults_including_nested_fields(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHURNWATCH_BROKER_URL", "kafka://broker:29092")
    monkeypatch.setenv("CHURNWATCH_RULES__INACTIVE_DAYS", "10")

    settings = load_settings()

    assert settings.broker_url == "kafka://broker:29092"
    assert settings.rules.inactive_days == 10
    assert settings.rules.recent_days == 7  # the rest of the section keeps its defaults


def test_file_values(tmp_path: Path) -> None:
    path = _toml(
        tmp_path,
        'broker_url = "kafka://filehost:9092"\n'
        "partitions = 8\n"
        "[rules]\ninactive_days = 5\ndrop_ratio = 0.3\n"
        '[topics]\nalerts = "alerts-from-file"\n',
    )

    settings = load_settings(config_file=path)

    assert settings.broker_url == "kafka://filehost:9092"
    assert settings.partitions == 8
    assert settings.rules.inactive_days == 5
    assert settings.rules.drop_ratio == 0.3
    assert settings.rules.recent_days == 7
    assert settings.topics.alerts == "alerts-from-file"
    assert settings.topics.usage == "usage-events"


def test_file_named_by_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CONFIG_FILE_VARIABLE, str(_toml(tmp_path, "partitions = 12\n")))

    assert load_settings().partitions == 12


def test_the_example_file_holds_the_defaults() -> None:
    defaults = load_settings()  # first: loading a file names it in the environment

    assert load_settings(config_file=EXAMPLE_FILE) == defaults


def test_environment_beats_file_field_by_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _toml(tmp_path, "partitions = 8\n[rules]\ninactive_days = 5\ndrop_ratio = 0.3\n")
    monkeypatch.setenv("CHURNWATCH_PARTITIONS", "16")
    monkeypatch.setenv("CHURNWATCH_RULES__INACTIVE_DAYS", "10")

    settings = load_settings(config_file=path)

    assert settings.partitions == 16
    assert settings.rules.inactive_days == 10
    assert settings.rules.drop_ratio == 0.3  # the file's value for a field the env leaves alone


def test_keywords_beat_environment_and_none_means_not_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHURNWATCH_PARTITIONS", "16")
    monkeypatch.setenv("CHURNWATCH_BROKER_URL", "kafka://env:9092")
    path = _toml(tmp_path, "web_port = 7000\n")

    settings = load_settings(config_file=path, partitions=2, broker_url=None, web_port=None)

    assert settings.partitions == 2
    assert settings.broker_url == "kafka://env:9092"
    assert settings.web_port == 7000


@pytest.mark.parametrize(
    ("variable", "value", "field"),
    [
        ("CHURNWATCH_PARTITIONS", "0", "partitions"),
        ("CHURNWATCH_PARTITIONS", "abc", "partitions"),
        ("CHURNWATCH_RULES__DROP_RATIO", "2", "rules.drop_ratio"),
        ("CHURNWATCH_CLOCK", "wall", "clock"),
    ],
)
def test_invalid_environment_value_names_the_field(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, field: str
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(ConfigError, match=rf"invalid settings: .*\b{field}: "):
        load_settings()


def test_every_invalid_value_is_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHURNWATCH_PARTITIONS", "0")
    monkeypatch.setenv("CHURNWATCH_RULES__DROP_RATIO", "2")

    with pytest.raises(ConfigError) as caught:
        load_settings()

    assert "partitions:" in str(caught.value)
    assert "rules.drop_ratio:" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("[rules]\ndrop_ratio = 2\n", "rules.drop_ratio"),
        ("[rules]\nmin_baseline_days = 30\n", "rules"),  # more than baseline_days
        ("partitions = 0\n", "partitions"),
        ("unknown_setting = 1\n", "unknown_setting"),
        ("[rules]\nunknown_rule = 1\n", "rules.unknown_rule"),
    ],
)
def test_invalid_file_value_names_the_field(tmp_path: Path, text: str, field: str) -> None:
    with pytest.raises(ConfigError, match=rf"invalid settings: .*\b{field}: "):
        load_settings(config_file=_toml(tmp_path, text))


def test_invalid_keyword_value_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"web_port: "):
        load_settings(web_port=70_000)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(config_file=tmp_path / "absent.toml")


def test_missing_file_named_by_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CONFIG_FILE_VARIABLE, str(tmp_path / "absent.toml"))

    with pytest.raises(ConfigError, match=CONFIG_FILE_VARIABLE):
        load_settings()


def test_malformed_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_settings(config_file=_toml(tmp_path, "partitions = \n"))


def test_malformed_section_variable_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHURNWATCH_RULES", "inactive_days=10")

    with pytest.raises(ConfigError):
        load_settings()


@pytest.mark.parametrize(
    ("url", "servers"),
    [
        ("kafka://a:1;kafka://b:2", ["a:1", "b:2"]),
        ("kafka://a:1;", ["a:1"]),
        ("a:1", ["a:1"]),
    ],
)
def test_bootstrap_servers(url: str, servers: list[str]) -> None:
    assert load_settings(broker_url=url).bootstrap_servers == servers


def test_settings_are_frozen() -> None:
    settings = load_settings()

    with pytest.raises(pydantic.ValidationError):
        settings.partitions = 9  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        settings.rules.inactive_days = 9  # type: ignore[misc]


def test_settings_class_reads_the_same_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHURNWATCH_WEB_PORT", "7001")

    assert Settings().web_port == 7001
