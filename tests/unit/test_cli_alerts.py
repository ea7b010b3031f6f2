"""`churnwatch alerts list|ack|snooze` through the CLI's main(), on a temporary SQLite store.

Also the shares of planted customers `simulate` and `demo` pass to the simulation plan.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from churnwatch import simulation
from churnwatch.alerts_cli import format_transition, parse_until
from churnwatch.cli import build_parser, main, plan_from
from churnwatch.exceptions import ChurnwatchError
from churnwatch.store.alerts import AlertStore, parse_transition
from tests.unit.test_alert_store import START, wire


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/alerts.sqlite3"


@pytest.fixture
def store(url: str) -> Iterator[AlertStore]:
    store = AlertStore(url)
    store.migrate()
    store.record(
        [
            wire("a-1", day=1, customer_id="c-1", severity="critical", segment={"plan": "pro"}),
            wire("a-2", day=2, customer_id="c-2", codes=("inactive",), segment={"plan": "pro"}),
            wire("a-3", "opened", 0, customer_id="c-3", segment={"plan": "basic"}),
            wire("a-3", "resolved", 3, customer_id="c-3", segment={"plan": "basic"}),
        ]
    )
    yield store
    store.close()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["alerts", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_list_prints_a_table_newest_first(
    store: AlertStore, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "list", "--database-url", url)

    lines = out.splitlines()
    assert code == 0
    assert lines[0].split() == [
        "DAY", "STATUS", "SEVERITY", "SCORE", "MRR", "CUSTOMER", "REASONS", "PEOPLE", "ALERT"
    ]  # fmt: skip
    assert [line.split()[-1] for line in lines[1:]] == ["a-3", "a-2", "a-1"]
    assert lines[1].split()[:3] == ["2024-03-04", "resolved", "warning"]


def test_list_filters_and_prints_json(
    store: AlertStore, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys, "list", "--database-url", url, "--status", "open", "--segment", "plan=pro",
        "--json",
    )  # fmt: skip

    document = json.loads(out)
    assert code == 0
    assert [a["alert_id"] for a in document["alerts"]] == ["a-2", "a-1"]
    assert document["next_cursor"] is None
    assert document["alerts"][1]["severity"] == "critical"
    assert document["alerts"][0]["reasons"][0]["code"] == "inactive"
    _, out, _ = run(capsys, "list", "--database-url", url, "--reason", "inactive", "--json")
    assert [a["alert_id"] for a in json.loads(out)["alerts"]] == ["a-2"]
    _, out, _ = run(capsys, "list", "--database-url", url, "--severity", "info")
    assert out.strip() == "no alerts match"


def test_list_pages_with_the_printed_cursor(
    store: AlertStore, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = run(capsys, "list", "--database-url", url, "--limit", "2")
    last = out.splitlines()[-1]
    assert last.startswith("more: add --cursor ")

    _, out, _ = run(
        capsys, "list", "--database-url", url, "--limit", "2", "--cursor", last.split()[-1]
    )
    assert [line.split()[-1] for line in out.splitlines()[1:]] == ["a-1"]


def test_ack_records_who_and_the_note(
    store: AlertStore, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = datetime.now(UTC)
    code, out, _ = run(
        capsys, "ack", "a-2", "--by", "ana", "--note", "call booked", "--database-url", url
    )

    alert = store.get("a-2")
    assert code == 0
    assert out.startswith("acknowledged a-2 (c-2, opened) by ana")
    assert (alert.acknowledged_by, alert.acknowledgement_note) == ("ana", "call booked")
    assert alert.acknowledged_at is not None
    assert before <= alert.acknowledged_at <= datetime.now(UTC)
    _, out, _ = run(capsys, "list", "--database-url", url, "--status", "opened")
    assert "acked by ana" in out


def test_snooze_until_a_time_or_for_a_span(
    store: AlertStore, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys, "snooze", "a-1", "--until", "2099-01-02T03:04:05Z", "--by", "bo",
        "--database-url", url, "--store-only",
    )  # fmt: skip
    assert code == 0
    assert "until 2099-01-02T03:04:05+00:00" in out
    assert store.get("a-1").snoozed_until == datetime(2099, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert store.is_snoozed("a-1", datetime(2099, 1, 1, tzinfo=UTC))

    before = datetime.now(UTC)
    argv = ("snooze", "a-2", "--until", "3d", "--by", "bo", "--database-url", url, "--store-only")
    assert run(capsys, *argv)[0] == 0
    until = store.get("a-2").snoozed_until
    assert until is not None
    assert before + timedelta(days=3) <= until <= datetime.now(UTC) + timedelta(days=3)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("ack", "nope", "--by", "ana"), "no alert with id 'nope'"),
        (("snooze", "nope", "--until", "1h", "--by", "ana"), "no alert with id 'nope'"),
        (("snooze", "a-1", "--until", "2000-01-01T00:00:00Z", "--by", "a"), "is not after"),
        (("snooze", "a-1", "--until", "2099-01-01T00:00:00", "--by", "a"), "needs a UTC offset"),
        (("snooze", "a-1", "--until", "soon", "--by", "ana"), "not RFC 3339 nor a span"),
        (("list", "--segment", "plan"), "--segment wants KEY=VALUE"),
        (("list", "--limit", "0"), "limit must be 1 to 1000"),
        (("list", "--cursor", "garbage"), "not a cursor"),
    ],
)
def test_a_bad_request_exits_2_with_the_reason(
    store: AlertStore,
    url: str,
    capsys: pytest.CaptureFixture[str],
    argv: tuple[str, ...],
    message: str,
) -> None:
    code, out, err = run(capsys, *argv, "--database-url", url)

    assert code == 2
    assert out == ""
    assert err.startswith("churnwatch: error: ")
    assert message in err


def test_an_unreachable_store_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    url = f"sqlite:///{blocked}/alerts.sqlite3"

    code, _, err = run(capsys, "list", "--database-url", url)

    assert code == 2
    assert "cannot use the alert store at sqlite:///" in err


def test_help_explains_every_action(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["alerts", "--help"])
    out = capsys.readouterr().out
    for action in ("tail", "list", "ack", "snooze"):
        assert f"    {action} " in out


def test_a_transition_reads_as_one_line() -> None:
    transition = parse_transition(
        wire(
            "168c3da3",
            "escalated",
            11,
            customer_id="c-42",
            score=80,
            codes=("usage_drop", "inactive"),
            severity="critical",
            mrr_at_stake=1290.5,
            currency="EUR",
            segment={"plan": "pro", "channel": "sales"},
        )
    )

    assert format_transition(transition) == (
        "2024-03-12 escalated critical score  80  mrr 1,290.50 EUR  customer c-42  "
        "reasons usage_drop,inactive  segment plan=pro,channel=sales  alert 168c3da3"
    )


def test_until_accepts_spans_and_rfc3339() -> None:
    now = START
    assert parse_until("30m", now) == now + timedelta(minutes=30)
    assert parse_until("2w", now) == now + timedelta(weeks=2)
    assert parse_until("2024-03-02T01:00:00+01:00", now) == datetime(2024, 3, 2, tzinfo=UTC)
    with pytest.raises(ChurnwatchError):
        parse_until("3 days", now)


# -- churnwatch simulate / demo: planted shares --------------------------------------------------


@pytest.mark.parametrize("command", ["simulate", "demo"])
def test_narrow_and_stall_shares_reach_the_plan(command: str) -> None:
    argv = [command, "--customers", "1000", "--narrow-fraction", "0.04", "--stall-fraction", "0.03"]

    plan = plan_from(build_parser().parse_args(argv))
    patterns = [customer.pattern for customer in simulation.customers_for(plan)]

    assert (plan.narrow_fraction, plan.stall_fraction) == (0.04, 0.03)
    assert (patterns.count("narrow"), patterns.count("stall")) == (40, 30)


def test_narrow_and_stall_default_to_none_and_a_bad_share_is_a_clear_error() -> None:
    plan = plan_from(build_parser().parse_args(["simulate"]))

    assert (plan.narrow_fraction, plan.stall_fraction) == (0.0, 0.0)
    with pytest.raises(ChurnwatchError, match="invalid simulation: fractions cannot be negative"):
        plan_from(build_parser().parse_args(["simulate", "--stall-fraction", "-0.1"]))
