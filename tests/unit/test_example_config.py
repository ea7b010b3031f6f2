"""The example settings file and the TOML in the docs are settings churnwatch accepts."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from churnwatch.domain.rules import WEIGHTS
from config.settings import CONFIG_FILE_VARIABLE, ENV_PREFIX, Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "churnwatch.example.toml"
DOCS_WITH_TOML = ("configuration.md", "rules.md", "notifier.md", "security.md")
# A commented-out setting: "# key = value", "# [table]" or "# [[table]]"; prose never is.
COMMENTED_SETTING = re.compile(r"^# ((?:[a-z_][a-z0-9_]*\s*=\s*\S.*)|(?:\[\[?[a-z_.]+\]\]?.*))$")
# Set nowhere on purpose: the default depends on the user's home directory.
NOT_IN_EXAMPLE = {"cache_dir"}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CHURNWATCH_* variable from outside reaches the settings under test."""
    monkeypatch.setenv(CONFIG_FILE_VARIABLE, "")
    for name in [name for name in os.environ if name.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(name)


def _uncommented(text: str) -> str:
    """The example with every commented-out setting switched on."""
    return "\n".join(
        match.group(1) if (match := COMMENTED_SETTING.match(line)) else line
        for line in text.splitlines()
    )


def _load(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "settings.toml"
    path.write_text(text, encoding="utf-8")
    return load_settings(config_file=path)


def _missing(model: type[BaseModel], table: dict[str, Any], prefix: str = "") -> list[str]:
    """Fields of `model` (and of its sections, recursively) that `table` does not name."""
    missing = []
    for name, field in model.model_fields.items():
        if name not in table:
            missing.append(prefix + name)
            continue
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            missing += _missing(kind, table[name], f"{prefix}{name}.")
    return missing


def test_the_example_names_every_setting() -> None:
    table = tomllib.loads(_uncommented(EXAMPLE.read_text(encoding="utf-8")))

    assert set(_missing(Settings, table)) == NOT_IN_EXAMPLE


def test_the_commented_examples_are_valid_settings(tmp_path: Path) -> None:
    settings = _load(tmp_path, _uncommented(EXAMPLE.read_text(encoding="utf-8")))

    assert settings.api_token is not None
    assert settings.rules.milestones
    assert settings.alerts.weights
    assert set(settings.alerts.weights) <= set(WEIGHTS)
    assert len(settings.alerts.segment_rules) == 2
    for entry in settings.alerts.segment_rules:
        entry.apply_to(settings.rules)  # what the worker validates when it starts
    assert [route.name for route in settings.notify.routes] == ["cs-slack", "oncall-pagerduty"]
    assert settings.churn.involuntary_after_days is not None
    assert settings.notify.proxy_url is not None


def test_uncommenting_does_not_touch_prose() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    prose = [line for line in text.splitlines() if line.startswith("#")]

    assert any(COMMENTED_SETTING.match(line) for line in prose)
    assert all(not COMMENTED_SETTING.match(line) for line in prose if line[2:3].isupper())


def _toml_blocks(name: str) -> list[str]:
    text = (ROOT / "docs" / name).read_text(encoding="utf-8")
    return re.findall(r"^```toml\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


@pytest.mark.parametrize("name", DOCS_WITH_TOML)
def test_toml_in_the_docs_is_accepted(name: str, tmp_path: Path) -> None:
    blocks = _toml_blocks(name)
    assert blocks, f"docs/{name} shows no TOML"
    for block in blocks:
        settings = _load(tmp_path, block)
        for entry in settings.alerts.segment_rules:
            entry.apply_to(settings.rules)
        assert set(settings.alerts.weights) <= set(WEIGHTS)
