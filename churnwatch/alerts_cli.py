"""`churnwatch alerts`: follow the alerts topic; list, acknowledge and snooze stored alerts."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from churnwatch.exceptions import ChurnwatchError
from config import Settings, load_settings

if TYPE_CHECKING:  # the store (SQLAlchemy, Alembic) loads only when an alerts command runs
    from churnwatch.domain.alertwire import Transition
    from churnwatch.store.alerts import AlertRecord, AlertStore


ALERTS_HELP = """\
Alerts on the topic and in the SQL store. `tail` follows the alerts topic; `list`, `ack` and
`snooze` work on the store the alert sink fills (--database-url or CHURNWATCH_DATABASE_URL).
"""
RELATIVE_TIME = re.compile(r"(\d+)([mhdw])")
UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def add_alerts_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `churnwatch alerts tail|list|ack|snooze`."""
    alerts = commands.add_parser(
        "alerts", help="follow, list, acknowledge and snooze alerts", description=ALERTS_HELP
    )
    actions = alerts.add_subparsers(title="actions", required=True, metavar="ACTION")

    tail = actions.add_parser(
        "tail",
        help="follow the alerts topic, one line per transition",
        description="Print alert transitions as they are published (from now, or from the "
        "start of the topic), one readable line each or the JSON as sent. Malformed messages "
        "are reported on stderr. Ctrl-C stops.",
    )
    tail.add_argument("--config", type=Path, help="TOML settings file")
    tail.add_argument("--broker", dest="broker_url", help="Kafka URL, kafka://host:port")
    tail.add_argument("--topic", help="alerts topic (default: topics.alerts from the settings)")
    tail.add_argument(
        "--from-beginning", action="store_true", help="start at the oldest retained alert"
    )
    tail.add_argument("--json", action="store_true", help="print each alert's JSON on one line")
    tail.add_argument(
        "--max-messages", type=int, metavar="N", help="stop after printing N transitions"
    )
    tail.add_argument(
        "--duration", type=float, metavar="SECONDS", help="stop after this long (default: never)"
    )
    tail.set_defaults(handler=_alerts_tail)

    listing = actions.add_parser(
        "list",
        help="alerts in the store, newest event time first",
        description="List alerts from the store with their latest status, newest event time "
        "first. Filters combine; a further page is named by the cursor printed at the end.",
    )
    _store_options(listing)
    listing.add_argument(
        "--status",
        choices=["open", "closed", "opened", "escalated", "resolved", "churned"],
        help="open (opened or escalated), closed, or a latest status",
    )
    listing.add_argument("--severity", choices=["info", "warning", "critical"])
    listing.add_argument("--reason", metavar="CODE", help="a reason code, e.g. usage_drop")
    listing.add_argument(
        "--segment",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="segment attribute to match, e.g. plan=pro (repeat for several)",
    )
    listing.add_argument(
        "--limit", type=int, default=50, help="alerts per page, 1-1000 (default 50)"
    )
    listing.add_argument("--cursor", help="the cursor a previous page printed")
    listing.add_argument("--json", action="store_true", help="print JSON: alerts and next_cursor")
    listing.set_defaults(handler=_alerts_list)

    ack = actions.add_parser(
        "ack",
        help="acknowledge an alert: who, when (now) and an optional note",
        description="Record that someone is acting on an alert. A later ack replaces it.",
    )
    _store_options(ack)
    ack.add_argument("alert_id", metavar="ALERT_ID", help="the alert's id (`alerts list` shows it)")
    ack.add_argument("--by", required=True, metavar="WHO", help="who acknowledges it")
    ack.add_argument("--note", help="what is being done about it")
    ack.set_defaults(handler=_alerts_ack)

    snooze = actions.add_parser(
        "snooze",
        help="silence an alert until a time: no notification, no reopen",
        description="Snooze an alert until TIME: RFC 3339 with an offset "
        "(2024-03-15T09:00:00Z) or a span from now (30m, 12h, 3d, 2w).",
    )
    _store_options(snooze)
    snooze.add_argument(
        "alert_id", metavar="ALERT_ID", help="the alert's id (`alerts list` shows it)"
    )
    snooze.add_argument("--until", required=True, metavar="TIME", help="RFC 3339 or 30m/12h/3d/2w")
    snooze.add_argument("--by", required=True, metavar="WHO", help="who snoozes it")
    snooze.add_argument("--broker", dest="broker_url", help="Kafka URL, kafka://host:port")
    snooze.add_argument(
        "--store-only",
        action="store_true",
        help="only record the snooze (no notification); do not tell the stream, which then may "
        "open a new alert for the customer before TIME",
    )
    snooze.set_defaults(handler=_alerts_snooze)


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    """Settings from the file, the environment and the flags given (flags win)."""
    return load_settings(args.config, broker_url=getattr(args, "broker_url", None), **extra)


def _store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML settings file")
    parser.add_argument("--database-url", help="SQLAlchemy URL of the store")


@contextmanager
def _alert_store(args: argparse.Namespace) -> Iterator[AlertStore]:
    """The store named by the flags or settings, migrated; errors as ChurnwatchError."""
    from sqlalchemy import make_url
    from sqlalchemy.exc import ArgumentError, OperationalError

    from churnwatch.store.alerts import AlertStore

    settings = _settings(args, database_url=args.database_url)
    try:
        where = make_url(settings.database_url).render_as_string(hide_password=True)
    except ArgumentError as exc:
        raise ChurnwatchError(f"database_url: {exc}") from exc
    try:
        store = AlertStore(settings.database_url)  # makes a SQLite file's directory
    except OSError as exc:
        raise ChurnwatchError(f"cannot use the alert store at {where}: {exc}") from exc
    try:
        store.migrate()
        yield store
    except OperationalError as exc:
        raise ChurnwatchError(f"cannot use the alert store at {where}: {exc.orig}") from exc
    finally:
        store.close()


def _alerts_list(args: argparse.Namespace) -> int:
    segment = dict(_key_value(item) for item in args.segment)
    with _alert_store(args) as store:
        page = store.list_alerts(
            status=args.status,
            severity=args.severity,
            reason=args.reason,
            segment=segment,
            limit=args.limit,
            cursor=args.cursor,
        )
    if args.json:
        alerts = [alert.as_json_dict() for alert in page.alerts]
        print(json.dumps({"alerts": alerts, "next_cursor": page.next_cursor}, indent=2))
        return 0
    print(format_alert_table(page.alerts) if page.alerts else "no alerts match")
    if page.next_cursor:
        print(f"more: add --cursor {page.next_cursor}")
    return 0


def _alerts_ack(args: argparse.Namespace) -> int:
    with _alert_store(args) as store:
        alert = store.acknowledge(args.alert_id, by=args.by, note=args.note, at=datetime.now(UTC))
    print(f"acknowledged {alert.alert_id} ({alert.customer_id}, {alert.status}) by {args.by}")
    return 0


def _alerts_snooze(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    until = parse_until(args.until, now)
    with _alert_store(args) as store:
        alert = store.snooze(args.alert_id, until=until, by=args.by, at=now)
    print(f"snoozed {alert.alert_id} ({alert.customer_id}) until {until.isoformat()}")
    if not args.store_only:
        _tell_stream(_settings(args), alert.customer_id, until)
    return 0


def _tell_stream(settings: Settings, customer_id: str, until: datetime) -> None:
    """Send the snooze control message, so the owning worker opens no alert before `until`."""
    from kafka.errors import KafkaError

    from churnwatch import kafka_client
    from streams.commands import snooze_message

    key, value = snooze_message(customer_id, until)
    try:
        producer = kafka_client.producer(settings, acks="all", client_id="churnwatch-cli")
        try:
            producer.send(settings.topics.usage, key=key, value=value).get(timeout=30)
        finally:
            producer.close()
    except KafkaError as exc:
        raise ChurnwatchError(
            f"snooze stored, but the stream was not told (no broker at {settings.broker_url}: "
            f"{exc}); run again when Kafka is up, or use --store-only"
        ) from exc
    print(f"told the stream: no new alert for {customer_id} before {until.isoformat()}")


def _alerts_tail(args: argparse.Namespace) -> int:
    from kafka import TopicPartition
    from kafka.errors import KafkaError

    from churnwatch import kafka_client
    from churnwatch.domain.alertwire import decode_transition
    from churnwatch.exceptions import InvalidAlertError

    settings = _settings(args)
    topic = args.topic or settings.topics.alerts
    try:
        consumer = kafka_client.consumer(
            settings, enable_auto_commit=False, client_id="churnwatch-alerts-tail"
        )
    except KafkaError as exc:
        raise ChurnwatchError(f"no Kafka broker answers at {settings.broker_url}: {exc}") from exc
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise ChurnwatchError(f"topic {topic} does not exist at {settings.broker_url}")
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        if args.from_beginning:
            consumer.seek_to_beginning()
        else:
            consumer.seek_to_end()
        for tp in assigned:
            consumer.position(tp)  # resolve the start now: later alerts are all shown
        start = "the beginning" if args.from_beginning else "now"
        print(f"following {topic} from {start}; Ctrl-C stops", file=sys.stderr, flush=True)
        deadline = None if args.duration is None else time.monotonic() + args.duration
        shown = 0
        while deadline is None or time.monotonic() < deadline:
            for messages in consumer.poll(timeout_ms=200).values():
                for message in messages:
                    try:
                        transition = decode_transition(message.value)
                    except InvalidAlertError as exc:
                        print(
                            f"skipped a malformed alert at partition {message.partition} "
                            f"offset {message.offset}: {exc.reason}",
                            file=sys.stderr,
                        )
                        continue
                    line = message.value.decode() if args.json else format_transition(transition)
                    print(line.replace("\n", " "), flush=True)
                    shown += 1
                    if args.max_messages is not None and shown >= args.max_messages:
                        return 0
    finally:
        consumer.close()
    return 0


def format_transition(transition: Transition) -> str:
    """One readable line: day, status, severity, score, MRR, customer, reasons, segment, id."""
    t = transition
    mrr = f"{t.mrr_at_stake:,.2f}{f' {t.currency}' if t.currency else ''}"
    reasons = ",".join(t.reason_codes) or "-"
    segment = ",".join(f"{k}={v}" for k, v in t.segment.items()) or "-"
    return (
        f"{t.event_time:%Y-%m-%d} {t.status:<9} {t.severity:<8} score {t.risk_score:>3}  "
        f"mrr {mrr}  customer {t.customer_id}  reasons {reasons}  segment {segment}  "
        f"alert {t.alert_id}"
    )


def format_alert_table(alerts: Sequence[AlertRecord]) -> str:
    """Alerts as aligned columns, one line each."""
    header = ("DAY", "STATUS", "SEVERITY", "SCORE", "MRR", "CUSTOMER", "REASONS", "PEOPLE", "ALERT")
    rows = [header]
    for a in alerts:
        people = []
        if a.acknowledged_by:
            people.append(f"acked by {a.acknowledged_by}")
        if a.snoozed_until:
            people.append(f"snoozed until {a.snoozed_until:%Y-%m-%d %H:%M}")
        mrr = f"{a.mrr_at_stake:,.2f}{f' {a.currency}' if a.currency else ''}"
        rows.append(
            (
                f"{a.event_time:%Y-%m-%d}",
                a.status,
                a.severity,
                str(a.risk_score),
                mrr,
                a.customer_id,
                ",".join(a.reason_codes) or "-",
                "; ".join(people) or "-",
                a.alert_id,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def parse_until(text: str, now: datetime) -> datetime:
    """RFC 3339 with an offset, or a span from `now` such as 30m, 12h, 3d, 2w."""
    relative = RELATIVE_TIME.fullmatch(text.strip())
    if relative:
        amount, unit = relative.groups()
        return now + timedelta(**{UNITS[unit]: int(amount)})
    try:
        until = datetime.fromisoformat(text)
    except ValueError:
        raise ChurnwatchError(f"--until: not RFC 3339 nor a span like 3d: {text!r}") from None
    if until.tzinfo is None:
        raise ChurnwatchError(f"--until needs a UTC offset (e.g. Z): {text!r}")
    return until.astimezone(UTC)


def _key_value(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ChurnwatchError(f"--segment wants KEY=VALUE, not {item!r}")
    return key, value
