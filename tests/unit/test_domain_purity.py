"""The domain package imports no framework or I/O library and never reads the clock."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import churnwatch.domain

DOMAIN = Path(churnwatch.domain.__file__).parent
MODULES = sorted(DOMAIN.glob("*.py"))
FORBIDDEN_IMPORTS = frozenset(
    {
        "faust",
        "mode",
        "kafka",
        "aiokafka",
        "sqlalchemy",
        "prometheus_client",
        "structlog",
        "time",
    }
)
CLOCK_READS = frozenset({"now", "utcnow", "today", "time", "monotonic", "perf_counter"})


def _impurities(source: str) -> list[str]:
    """Forbidden imports and clock reads in `source`, as readable findings."""
    findings: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            findings += [
                f"line {node.lineno}: imports {alias.name}"
                for alias in node.names
                if alias.name.split(".")[0] in FORBIDDEN_IMPORTS
            ]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] in FORBIDDEN_IMPORTS:
                findings.append(f"line {node.lineno}: imports {node.module}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in CLOCK_READS
        ):
            findings.append(f"line {node.lineno}: calls .{node.func.attr}()")
    return findings


def test_the_domain_package_is_found() -> None:
    names = {module.name for module in MODULES}

    assert len(MODULES) >= 5
    assert {"engagement.py", "rules.py", "events.py", "alerts.py", "customer.py"} <= names


@pytest.mark.parametrize("module", MODULES, ids=[module.stem for module in MODULES])
def test_domain_module_is_pure(module: Path) -> None:
    assert _impurities(module.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    ("source", "finding"),
    [
        ("import faust", "imports faust"),
        ("import kafka.admin as admin", "imports kafka.admin"),
        ("from aiokafka import AIOKafkaConsumer", "imports aiokafka"),
        ("from sqlalchemy.orm import Session", "imports sqlalchemy.orm"),
        ("import prometheus_client, structlog", "imports structlog"),
        ("from mode import Service", "imports mode"),
        ("from time import time", "imports time"),
        ("from datetime import datetime\nstamp = datetime.now()", "calls .now()"),
        ("import datetime\nstamp = datetime.datetime.utcnow()", "calls .utcnow()"),
        ("from datetime import date\nday = date.today()", "calls .today()"),
        ("def f(clock):\n    return clock.time()", "calls .time()"),
    ],
)
def test_the_check_finds_impurities(source: str, finding: str) -> None:
    assert any(found.endswith(finding) for found in _impurities(source))


@pytest.mark.parametrize(
    "source",
    [
        "from datetime import UTC, datetime\nwhen = datetime.fromtimestamp(0, UTC)",
        "import timeit",  # a name that only starts like a forbidden one
        "from . import rules",
        "from churnwatch.domain.engagement import day_of",
    ],
)
def test_the_check_passes_pure_code(source: str) -> None:
    assert _impurities(source) == []
