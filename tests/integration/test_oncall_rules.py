"""On-call alerts: complete, unit-tested, documented, routed and inhibited as docs/oncall.md says.

`promtool check rules` and `promtool test rules` run on oncall.rules.yml and its test files in
test_promtool.py, which covers every rule and test file in deploy/prometheus/rules.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from churnwatch.broker import free_port
from tests.integration.test_promtool import RULES_DIR, run_tool

pytestmark = pytest.mark.integration

REPO_ROOT = RULES_DIR.parents[2]
ONCALL_RULES = RULES_DIR / "oncall.rules.yml"
ONCALL_TESTS = sorted(RULES_DIR.glob("oncall.rules*.test.yml"))
ALERTMANAGER_CONFIG = REPO_ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
RUNBOOK = REPO_ROOT / "docs" / "oncall.md"
RUNBOOK_BASE = "https://github.com/your-org/churnwatch/blob/main/docs/oncall.md#"

PAGER = "churnwatch-pagerduty"
CHAT = {"pipeline": "churnwatch-ops-slack", "churn": "churnwatch-customer-success"}
SEVERITIES = {"page", "ticket"}
ANNOTATIONS = {"summary", "description", "runbook_url"}
NO_ALERTMANAGER = (
    "Alertmanager not installed (alertmanager, or prometheus-alertmanager on Debian); "
    "CI installs Debian's prometheus-alertmanager package"
)

# The rule file is plain block YAML; reading it line by line keeps PyYAML out of the deps.
KEY_VALUE = re.compile(r"^(?P<indent> *)(?:- )?(?P<key>[A-Za-z_]+):(?: +(?P<value>.*))?$")
BLOCK = {">", ">-", "|", "|-"}


@dataclass(frozen=True)
class AlertRule:
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def severity(self) -> str:
        return self.labels.get("severity", "")


def read_alert_rules(path: Path) -> list[AlertRule]:
    """Alerting rules of `path` with their labels and annotations (block scalars joined)."""
    lines = path.read_text().splitlines()
    rules: list[AlertRule] = []
    section: dict[str, str] | None = None
    section_indent = 0
    index = 0
    while index < len(lines):
        match = KEY_VALUE.match(lines[index])
        index += 1
        if match is None:
            continue
        indent, key = len(match["indent"]), match["key"]
        value = (match["value"] or "").strip()
        if key == "alert":
            rules.append(AlertRule(value))
            section = None
        elif rules and key in ("labels", "annotations") and not value:
            section = getattr(rules[-1], key)
            section_indent = indent
        elif section is not None and indent > section_indent:
            if value in BLOCK:
                block = []
                while index < len(lines) and (
                    not lines[index].strip()
                    or len(lines[index]) - len(lines[index].lstrip()) > indent
                ):
                    block.append(lines[index].strip())
                    index += 1
                value = " ".join(part for part in block if part)
            section[key] = value.strip("'\"")
        else:
            section = None
    return rules


def unit_tested_alerts(paths: list[Path]) -> tuple[set[tuple[str, str]], set[str]]:
    """(alert, severity) pairs some unit test expects firing, and alerts one expects quiet."""
    firing: set[tuple[str, str]] = set()
    quiet: set[str] = set()
    for path in paths:
        alertname = ""
        for line in path.read_text().splitlines():
            text = line.split("#", 1)[0].strip()
            if match := re.fullmatch(r"- alertname: (\S+)", text):
                alertname = match[1]
            elif text == "exp_alerts: []":
                quiet.add(alertname)
            elif match := re.fullmatch(r"severity: (\S+)", text):
                firing.add((alertname, match[1]))
    return firing, quiet


def github_anchors(markdown: str) -> set[str]:
    """Anchors GitHub gives the headings of a Markdown page."""
    anchors = set()
    for heading in re.findall(r"^#+ +(.+?) *$", markdown, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


ALERTS = read_alert_rules(ONCALL_RULES)


def alert_id(alert: AlertRule) -> str:
    return f"{alert.name}-{alert.severity}"


def test_rules_file_has_alerts() -> None:
    assert len(ALERTS) >= 10, f"read {len(ALERTS)} alerts from {ONCALL_RULES}"
    assert len({alert_id(alert) for alert in ALERTS}) == len(ALERTS), "an alert tier repeats"


def test_every_alert_is_labelled_and_annotated() -> None:
    problems = []
    for alert in ALERTS:
        if alert.severity not in SEVERITIES:
            problems.append(f"{alert.name}: severity {alert.severity!r} not in {SEVERITIES}")
        if alert.labels.get("category") not in CHAT:
            problems.append(f"{alert.name}: category {alert.labels.get('category')!r}")
        if alert.labels.get("service") != "churnwatch":
            problems.append(f"{alert.name}: service {alert.labels.get('service')!r}")
        if set(alert.annotations) != ANNOTATIONS:
            problems.append(f"{alert.name}: annotations {sorted(alert.annotations)}")
        if "{{" not in alert.annotations.get("description", ""):
            problems.append(f"{alert.name}: description shows no value")
    assert not problems, "\n".join(problems)


def test_runbook_urls_point_at_sections_of_oncall_md() -> None:
    anchors = github_anchors(RUNBOOK.read_text())
    problems = []
    for alert in ALERTS:
        url = alert.annotations.get("runbook_url", "")
        anchor = url.removeprefix(RUNBOOK_BASE)
        if anchor == url or anchor != alert.name.lower():
            problems.append(f"{alert.name}: runbook_url {url!r} is not {RUNBOOK_BASE}<name>")
        elif anchor not in anchors:
            problems.append(f"{alert.name}: docs/oncall.md has no section #{anchor}")
    assert not problems, "\n".join(problems)


def test_every_alert_fires_and_stays_quiet_in_a_unit_test() -> None:
    assert ONCALL_TESTS, f"no oncall.rules*.test.yml in {RULES_DIR}"
    firing, quiet = unit_tested_alerts(ONCALL_TESTS)
    missing = [
        f"{alert_id(alert)} never fires"
        for alert in ALERTS
        if (alert.name, alert.severity) not in firing
    ]
    missing += [f"{name} is never shown quiet" for name in sorted({a.name for a in ALERTS} - quiet)]
    assert not missing, "\n".join(missing)


def test_alertmanager_config_is_valid() -> None:
    output = run_tool("amtool", "check-config", ALERTMANAGER_CONFIG)
    assert "SUCCESS" in output, output
    assert "- 4 inhibit rules" in output, output
    assert "- 3 receivers" in output, output


@pytest.mark.parametrize("alert", ALERTS, ids=alert_id)
def test_alert_routes_to_its_receivers(alert: AlertRule) -> None:
    labels = [
        f"{name}={value}" for name, value in {"alertname": alert.name, **alert.labels}.items()
    ]
    chat = CHAT[alert.labels["category"]]
    expected = [PAGER, chat] if alert.severity == "page" else [chat]
    # amtool exits non-zero, naming the receivers it found, when they are not the expected ones.
    output = run_tool(
        "amtool",
        "config",
        "routes",
        "test",
        f"--config.file={ALERTMANAGER_CONFIG}",
        f"--verify.receivers={','.join(expected)}",
        *labels,
    )
    assert ",".join(expected) in output, output


class Alertmanager:
    """A running Alertmanager's API v2, for posting alerts and reading how it treats them."""

    def __init__(self, url: str) -> None:
        self.url = url

    def call(self, method: str, path: str, body: object = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}/api/v2{path}",
            method=method,
            data=data,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            text = response.read()
        return json.loads(text) if text else None

    def post(self, *alerts: dict[str, str], resolved: bool = False) -> None:
        now = datetime.now(UTC)
        times = {"startsAt": _iso(now - timedelta(minutes=10))}
        if resolved:
            times["endsAt"] = _iso(now - timedelta(seconds=1))
        self.call("POST", "/alerts", [{"labels": labels, **times} for labels in alerts])

    def inhibited(self) -> dict[tuple[str, ...], bool]:
        """Whether each active alert is inhibited, by (alertname, severity, instance, topic)."""
        return {
            _key(alert["labels"]): bool(alert["status"]["inhibitedBy"])
            for alert in self.call("GET", "/alerts")
        }

    def wait_for(self, expected: dict[tuple[str, ...], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while (seen := self.inhibited()) != expected and time.monotonic() < deadline:
            time.sleep(0.1)
        assert seen == expected, f"inhibited (alertname, severity, instance, topic): {seen}"


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _key(labels: dict[str, str]) -> tuple[str, ...]:
    return tuple(labels.get(name, "") for name in ("alertname", "severity", "instance", "topic"))


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[Alertmanager]:
    """Alertmanager on the example config, every churnwatch alert silenced: nothing is sent."""
    binary = shutil.which("alertmanager") or shutil.which("prometheus-alertmanager")
    if binary is None:
        pytest.skip(NO_ALERTMANAGER)
    port = free_port()
    log = (tmp_path / "alertmanager.log").open("w")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={ALERTMANAGER_CONFIG}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        api = Alertmanager(f"http://127.0.0.1:{port}")
        _wait_ready(api, process, tmp_path / "alertmanager.log")
        now = datetime.now(UTC)
        api.call(
            "POST",
            "/silences",
            {
                "matchers": [{"name": "service", "value": "churnwatch", "isRegex": False}],
                "startsAt": _iso(now),
                "endsAt": _iso(now + timedelta(hours=1)),
                "createdBy": "tests/integration/test_oncall_rules.py",
                "comment": "tests send no notification",
            },
        )
        yield api
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _wait_ready(api: Alertmanager, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"Alertmanager exited {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{api.url}/-/ready", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"Alertmanager not ready in 15 s:\n{log.read_text()}")


def firing(name: str, severity: str, **extra: str) -> dict[str, str]:
    """Labels Prometheus sends for the rule `name` at `severity`, plus the series' own."""
    (rule,) = [alert for alert in ALERTS if alert.name == name and alert.severity == severity]
    return {"alertname": name, **rule.labels, **extra}


def test_inhibit_rules_hold_back_what_the_runbook_says(alertmanager: Alertmanager) -> None:
    worker = {"job": "churnwatch"}
    worker_down = firing("ChurnwatchWorkerDown", "page", instance="worker-1:6066", **worker)
    stalled = firing("ChurnwatchProcessingStalled", "page", instance="worker-2:6066", **worker)
    lag_2 = firing("ChurnwatchWatermarkLagHigh", "ticket", instance="worker-2:6066", **worker)
    lag_3 = firing("ChurnwatchWatermarkLagHigh", "ticket", instance="worker-3:6066", **worker)
    lag_3_page = firing("ChurnwatchWatermarkLagHigh", "page", instance="worker-3:6066", **worker)
    active = firing("ChurnwatchActiveCustomersDropped", "ticket")
    billing = firing("ChurnwatchDeadLetterRateHigh", "ticket", topic="billing-events")
    usage = firing("ChurnwatchDeadLetterRateHigh", "ticket", topic="usage-events")
    usage_page = firing("ChurnwatchDeadLetterRateHigh", "page", topic="usage-events")
    key = _key

    # A worker down holds back stalls and lag on any worker, and the customer alerts.
    alertmanager.post(worker_down, stalled, lag_2, active, billing)
    alertmanager.wait_for(
        {key(worker_down): False, key(stalled): True, key(lag_2): True, key(active): True}
        | {key(billing): False}
    )

    # Once it resolves, a stall holds back its own worker's lag only.
    alertmanager.post(worker_down, resolved=True)
    alertmanager.post(lag_3)
    alertmanager.wait_for(
        {key(stalled): False, key(lag_2): True, key(lag_3): False, key(active): False}
        | {key(billing): False}
    )

    # A page tier holds back the ticket tier of the same alert, worker and topic only.
    alertmanager.post(lag_3_page, usage, usage_page)
    alertmanager.wait_for(
        {key(stalled): False, key(lag_2): True, key(lag_3): True, key(lag_3_page): False}
        | {key(active): False, key(billing): False, key(usage): True, key(usage_page): False}
    )
