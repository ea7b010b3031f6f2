"""Prometheus rules: promtool checks and unit-tests them; every series they read is exported."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import fields
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from churnwatch.domain.churn import Figures
from churnwatch.domain.periods import period_of
from churnwatch.metrics import StateCollector, StateSummary, WorkerMetrics
from config.settings import ChurnSettings
from streams.figures import FiguresSnapshot, PeriodView

pytestmark = pytest.mark.integration

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULES_DIR = PROMETHEUS_DIR / "rules"
TEST_FILES = sorted(RULES_DIR.glob("*.test.yml"))
RULE_FILES = sorted(set(RULES_DIR.glob("*.yml")) - set(TEST_FILES))
# Why a test skips when a tool is missing: the Debian package CI (.ci/run) installs it from.
MISSING_TOOL = {
    "promtool": "promtool not installed; CI installs Debian's prometheus package",
    "amtool": "amtool not installed; CI installs Debian's prometheus-alertmanager package",
}

# The rule files are plain block YAML; reading the few keys needed keeps PyYAML out of the deps.
RULE_KEY = re.compile(r"^(?P<indent> *)(?:- )?(?P<key>record|alert|expr):(?P<value>.*)$")
NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def read_rules(path: Path) -> list[tuple[str, str]]:
    """(record or alert name, expr) of every rule in `path`."""
    lines = path.read_text().splitlines()
    rules: list[tuple[str, str]] = []
    name = None
    for index, line in enumerate(lines):
        match = RULE_KEY.match(line)
        if match is None:
            continue
        value = match["value"].strip()
        if match["key"] != "expr":
            name = value
            continue
        assert name is not None, f"{path.name}:{index + 1}: expr before record/alert"
        if value in ("|", "|-", ">", ">-"):
            indent = len(match["indent"])
            block = []
            for following in lines[index + 1 :]:
                if following.strip() and len(following) - len(following.lstrip()) <= indent:
                    break
                block.append(following.split("#", 1)[0].strip())
            value = " ".join(part for part in block if part)
        rules.append((name, value))
        name = None
    return rules


def exported_series() -> dict[str, set[str]]:
    """Sample names a worker exports, with their label names, figures included."""
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    for metric in vars(metrics).values():  # a labelled metric has no sample until labels are set
        labelnames = metric._labelnames  # no public accessor in prometheus_client
        if labelnames:
            metric.labels(*labelnames)
    period = period_of(1_583_020_800.0)  # 2020-03
    segment_by = ChurnSettings().segment_by
    figures = Figures(**{item.name: 1 for item in fields(Figures)})
    segment = tuple(f"{name}-value" for name in segment_by)
    snapshot = FiguresSnapshot(
        {
            "current": PeriodView(period, period.start + 86_400, {segment: figures}),
            "previous": PeriodView(period.previous(), period.start, {segment: figures}),
        }
    )
    summary = StateSummary(
        at_risk_by_reason={"inactive": 1}, watermarks={0: period.start}, figures=snapshot
    )
    registry.register(StateCollector(lambda: summary, segment_by))
    series: dict[str, set[str]] = {}
    for metric in registry.collect():
        if metric.type == "gauge":  # a scrape-time gauge may have no sample in this summary
            labelnames = getattr(metric, "_labelnames", ())  # GaugeMetricFamily's, no accessor
            series.setdefault(metric.name, set()).update(labelnames)
        for sample in metric.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


def run_tool(tool: str, *args: str | Path) -> str:
    """Output of a Prometheus command-line tool that must succeed; skips if it is not installed."""
    path = shutil.which(tool)
    if path is None:
        pytest.skip(MISSING_TOOL[tool])
    result = subprocess.run(
        [path, *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, (
        f"{tool} {' '.join(map(str, args))}: exit {result.returncode}\n{output}"
    )
    return output


def run_promtool(*args: str | Path) -> str:
    return run_tool("promtool", *args)


def test_rule_files_exist() -> None:
    assert RULE_FILES, f"no rule files in {RULES_DIR}"
    assert TEST_FILES, f"no promtool tests in {RULES_DIR}"


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda path: path.name)
def test_promtool_check_rules(path: Path) -> None:
    output = run_promtool("check", "rules", path)
    assert f"SUCCESS: {len(read_rules(path))} rules found" in output, output


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda path: path.name)
def test_promtool_test_rules(path: Path) -> None:
    run_promtool("test", "rules", path)


def test_prometheus_config_loads_the_rules_and_not_their_tests() -> None:
    output = run_promtool("check", "config", PROMETHEUS_DIR / "prometheus.yml")
    for path in RULE_FILES:
        assert path.name in output, output
    for path in TEST_FILES:
        assert path.name not in output, output


def test_rules_read_only_exported_series_and_labels() -> None:
    series = exported_series()
    labels = set().union(*series.values()) | {"job", "instance"}
    rules = [rule for path in RULE_FILES for rule in read_rules(path)]
    recorded = {name for name, _ in rules}
    problems = []
    for name, expr in rules:
        bare = STRING.sub('""', expr)
        for token in NAME.findall(bare):
            if ":" in token and token not in recorded:
                problems.append(f"{name} reads {token}, which no rule records")
            elif token.startswith("churnwatch_") and token not in series:
                problems.append(f"{name} reads {token}, which churnwatch does not export")
        for group in GROUPING.findall(bare):
            for label in filter(None, (part.strip() for part in group.split(","))):
                if label not in labels:
                    problems.append(f"{name} groups by {label}, a label churnwatch does not export")
    assert rules, "no rules read"
    assert not problems, "\n".join(dict.fromkeys(problems))


def test_every_figure_is_summed_overall_and_per_segment() -> None:
    recorded = {name for path in RULE_FILES for name, _ in read_rules(path)}
    level = "_".join(("period", *ChurnSettings().segment_by))
    missing = [
        f"{prefix}:churnwatch_period_{item.name.removesuffix('_cents')}:sum"
        for item in fields(Figures)
        for prefix in ("period", level)
        if f"{prefix}:churnwatch_period_{item.name.removesuffix('_cents')}:sum" not in recorded
    ]
    assert not missing, f"figures without a recorded sum: {missing}"
