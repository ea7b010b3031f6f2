"""`churnwatch` command line: worker, broker, simulate, replay, report, alerts, demo, config."""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import structlog

from churnwatch import simulation
from churnwatch.exceptions import ChurnwatchError
from churnwatch.logs import configure_logging
from churnwatch.report import add_report_command
from churnwatch.simulation import Customer, Plan
from config import Settings, load_settings

if TYPE_CHECKING:  # the store (SQLAlchemy, Alembic) loads only when an alerts command runs
    from churnwatch.store.alerts import AlertRecord, AlertStore, Transition

log = structlog.get_logger(__name__)

REPO_POM = Path(__file__).resolve().parents[1] / "deploy" / "kafka" / "pom.xml"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.handler(args)
    except ChurnwatchError as exc:
        print(f"churnwatch: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="churnwatch",
        description="Real-time customer engagement and churn monitor on Kafka and Faust.",
        epilog="Settings also come from CHURNWATCH_* variables and a TOML file (--config); "
        "see docs/configuration.md.",
    )
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    worker = commands.add_parser("worker", help="run a stream-processing worker")
    _settings_options(worker)
    worker.add_argument("--web-port", type=int, help="HTTP port for /metrics (default 6066)")
    worker.add_argument("--data-dir", type=Path, help="Faust table and worker data directory")
    worker.add_argument("--clock", choices=["event", "live"], help="how time advances")
    worker.set_defaults(handler=_run_worker)

    broker = commands.add_parser("broker", help="run the embedded single-node Apache Kafka")
    _settings_options(broker)
    broker.add_argument("--port", type=int, default=9092, help="listener port (default 9092)")
    broker.add_argument("--data-dir", type=Path, help="broker data (default: under the cache)")
    broker.add_argument("--fresh", action="store_true", help="wipe the data directory first")
    broker.add_argument(
        "--fetch-only",
        action="store_true",
        help="only fetch the Kafka jars from Maven Central into the cache",
    )
    broker.set_defaults(handler=_run_broker)

    simulate = commands.add_parser(
        "simulate", help="produce synthetic usage with planted drop-offs"
    )
    _settings_options(simulate)
    _simulation_options(simulate)
    simulate.add_argument(
        "--planted-out", type=Path, help="write the planted customers (JSON) here"
    )
    simulate.set_defaults(handler=_run_simulate)

    replay = commands.add_parser(
        "replay", help="produce JSONL history files in event-time order, then a heartbeat"
    )
    _settings_options(replay)
    replay.add_argument("--usage", type=Path, help="usage events, one JSON object per line")
    replay.add_argument("--billing", type=Path, help="billing events, one JSON object per line")
    replay.add_argument(
        "--advance-to",
        metavar="TIME",
        help="heartbeat time (RFC 3339 or epoch seconds) sent to every partition afterwards, "
        "so periods up to it close (default: the last event's time plus the allowed lateness)",
    )
    replay.set_defaults(handler=_run_replay)

    demo = commands.add_parser(
        "demo", help="broker + worker + synthetic traffic + a live summary, all local"
    )
    _simulation_options(demo, customers=2000, days=60)
    demo.add_argument(
        "--duration",
        type=float,
        default=0.0,
        help="stop after this many seconds (default: run until Ctrl-C)",
    )
    demo.add_argument("--port", type=int, default=9092, help="embedded broker port")
    demo.add_argument("--web-port", type=int, default=6066, help="worker /metrics port")
    demo.set_defaults(handler=_run_demo)

    add_report_command(commands)
    add_alerts_command(commands)

    show = commands.add_parser("config", help="print the effective settings as JSON")
    _settings_options(show)
    show.set_defaults(handler=_show_config)
    return parser


def _settings_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML settings file")
    parser.add_argument("--broker", dest="broker_url", help="Kafka URL, kafka://host:port")
    parser.add_argument("--partitions", type=int, help="partitions of the input topics")


def _simulation_options(
    parser: argparse.ArgumentParser, customers: int = 2000, days: int = 60
) -> None:
    parser.add_argument("--customers", type=int, default=customers, help="how many customers")
    parser.add_argument("--days", type=int, default=days, help="days of event time")
    parser.add_argument("--seed", type=int, default=7, help="random seed (deterministic)")
    parser.add_argument(
        "--decay-fraction", type=float, default=0.025, help="share of customers whose usage decays"
    )
    parser.add_argument(
        "--stop-fraction",
        type=float,
        default=0.025,
        help="share of customers who stop using the product (and ask to cancel)",
    )
    parser.add_argument(
        "--churn-fraction",
        type=float,
        default=0.03,
        help="share of customers who cancel and whose subscription ends",
    )
    parser.add_argument(
        "--new-fraction",
        type=float,
        default=0.05,
        help="share of customers who sign up during the simulation",
    )
    parser.add_argument(
        "--no-billing", dest="billing", action="store_false", help="produce usage events only"
    )
    parser.add_argument(
        "--start", default="2020-01-01", help="first simulated day, UTC (YYYY-MM-DD)"
    )


def settings_from(args: argparse.Namespace, **extra: Any) -> Settings:
    """Settings from the file, the environment and the flags given (flags win)."""
    overrides = {
        "broker_url": getattr(args, "broker_url", None),
        "partitions": getattr(args, "partitions", None),
        **extra,
    }
    return load_settings(getattr(args, "config", None), **overrides)


def _run_worker(args: argparse.Namespace) -> NoReturn:
    import faust

    from streams.app import create_worker
    from streams.topics import ensure_topics

    settings = settings_from(args, web_port=args.web_port, data_dir=args.data_dir, clock=args.clock)
    logging_config = configure_logging(settings.log_format, settings.log_level)
    ensure_topics(settings)
    worker = create_worker(settings)
    log.info(
        "worker_starting",
        broker=settings.broker_url,
        web_port=settings.web_port,
        partitions=settings.partitions,
        store=settings.store,
    )
    faust.Worker(
        worker.app,
        loglevel=settings.log_level,
        logging_config=logging_config,
        quiet=True,
        redirect_stdouts=False,
    ).execute_from_commandline()


def _run_broker(args: argparse.Namespace) -> int:
    from churnwatch.broker import EmbeddedKafka, ensure_kafka

    settings = settings_from(args)
    configure_logging(settings.log_format, settings.log_level)
    lib_dir = ensure_kafka(settings.cache_dir, REPO_POM)
    if args.fetch_only:
        print(f"Kafka jars ready in {lib_dir}", file=sys.stderr)
        return 0
    data_dir = args.data_dir or settings.cache_dir / "broker-data"
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with EmbeddedKafka(lib_dir, data_dir, port=args.port, fresh=args.fresh) as kafka:
        print(
            f"Kafka is up at {kafka.bootstrap} (data in {data_dir}); Ctrl-C stops it.",
            file=sys.stderr,
        )
        try:
            while not stop.wait(0.5) and kafka.running:
                pass
        except KeyboardInterrupt:
            pass
    return 0


def _run_simulate(args: argparse.Namespace) -> int:
    from churnwatch.produce import make_producer, send_heartbeats
    from streams.topics import ensure_topics

    settings = settings_from(args)
    configure_logging(settings.log_format, settings.log_level)
    plan = plan_from(args)
    customers = simulation.customers_for(plan)
    if args.planted_out:
        write_planted(args.planted_out, customers)
    ensure_topics(settings)
    producer = make_producer(settings.bootstrap_servers)
    try:
        sent = produce_simulation(producer, settings, plan, customers, billing=args.billing)
        # Push every partition's watermark past the last simulated day, so it is evaluated.
        heartbeat_at = plan.end + settings.allowed_lateness_seconds + 1
        send_heartbeats(producer, [settings.topics.usage, settings.topics.billing], heartbeat_at)
    finally:
        producer.close()
    log.info("simulation_produced", customers=plan.customers, days=plan.days, **sent)
    return 0


def produce_simulation(
    producer: Any,
    settings: Settings,
    plan: Plan,
    customers: list[Customer],
    billing: bool = True,
) -> dict[str, int]:
    """Produce the simulated usage (and billing) events with a progress line."""
    from churnwatch.produce import encode, produce
    from churnwatch.progress import Progress

    usage = simulation.events(plan, customers)
    records = (
        (
            encode(kind, event)
            for kind, event in simulation.merged(usage, simulation.billing_events(plan, customers))
        )
        if billing
        else (encode("usage", event) for event in usage)
    )
    progress = Progress("producing events", simulation.event_count_estimate(plan))
    topics = {"usage": settings.topics.usage, "billing": settings.topics.billing}
    sent = produce(producer, topics, records, progress, settings.allowed_lateness_seconds / 2)
    progress.finish()
    return dict(sent)


def _run_replay(args: argparse.Namespace) -> int:
    from churnwatch.produce import make_producer, produce, send_heartbeats
    from churnwatch.progress import Progress
    from churnwatch.replay import in_event_time_order, last_event_time, read_history
    from streams.topics import ensure_topics

    settings = settings_from(args)
    configure_logging(settings.log_format, settings.log_level)
    if args.usage is None and args.billing is None:
        raise ChurnwatchError("give --usage FILE, --billing FILE, or both")
    histories = [
        read_history(path, kind)
        for path, kind in ((args.usage, "usage"), (args.billing, "billing"))
        if path is not None
    ]
    total = sum(len(history) for history in histories)
    advance_to = _advance_to(args.advance_to, last_event_time(*histories), settings)
    ensure_topics(settings)
    producer = make_producer(settings.bootstrap_servers)
    try:
        topics = {"usage": settings.topics.usage, "billing": settings.topics.billing}
        progress = Progress("replaying", total)
        sent = produce(
            producer,
            topics,
            in_event_time_order(*histories),
            progress,
            settings.allowed_lateness_seconds / 2,
        )
        progress.finish()
        if advance_to is not None:
            send_heartbeats(producer, topics.values(), advance_to)
    finally:
        producer.close()
    log.info("replay_produced", advanced_to=advance_to, **dict(sent))
    return 0


def _advance_to(given: str | None, last: float | None, settings: Settings) -> float | None:
    """Heartbeat time: as given, else one that puts every watermark at the last event."""
    from churnwatch.domain.events import parse_timestamp
    from churnwatch.exceptions import InvalidEventError

    if given is None:
        return None if last is None else last + settings.allowed_lateness_seconds
    try:
        value: object = float(given) if given.replace(".", "", 1).isdigit() else given
        return parse_timestamp(value)
    except InvalidEventError as exc:
        raise ChurnwatchError(f"--advance-to: {exc.detail}") from exc


def _run_demo(args: argparse.Namespace) -> int:
    from churnwatch.demo import run_demo

    return run_demo(args)


def _show_config(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    print(json.dumps(settings.model_dump(mode="json"), indent=2))
    return 0


def plan_from(args: argparse.Namespace) -> Plan:
    start = datetime.strptime(args.start, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()
    try:
        return Plan(
            customers=args.customers,
            days=args.days,
            seed=args.seed,
            decay_fraction=args.decay_fraction,
            stop_fraction=args.stop_fraction,
            churn_fraction=args.churn_fraction,
            new_fraction=args.new_fraction,
            start=start,
        )
    except ValueError as exc:
        raise ChurnwatchError(f"invalid simulation: {exc}") from exc


def write_planted(path: Path, customers: Sequence[Customer]) -> None:
    """The planted customers as JSON: what a correct monitor must alert on."""
    planted = [
        {"customer_id": c.customer_id, "pattern": c.pattern, "onset_day": c.onset_day}
        for c in customers
        if c.pattern in simulation.PLANTED
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"planted": planted, "customers": len(customers)}, indent=1))


# -- churnwatch alerts -------------------------------------------------------------------------

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
    snooze.set_defaults(handler=_alerts_snooze)


def _store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML settings file")
    parser.add_argument("--database-url", help="SQLAlchemy URL of the store")


@contextmanager
def _alert_store(args: argparse.Namespace) -> Iterator[AlertStore]:
    """The store named by the flags or settings, migrated; errors as ChurnwatchError."""
    from sqlalchemy import make_url
    from sqlalchemy.exc import ArgumentError, OperationalError

    from churnwatch.store.alerts import AlertStore

    settings = settings_from(args, database_url=args.database_url)
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
    return 0


def _alerts_tail(args: argparse.Namespace) -> int:
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    from churnwatch.exceptions import InvalidAlertError
    from churnwatch.store.alerts import decode_transition

    settings = settings_from(args)
    topic = args.topic or settings.topics.alerts
    try:
        consumer = KafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers,
            enable_auto_commit=False,
            client_id="churnwatch-alerts-tail",
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
    mrr = f"{t.mrr_at_stake_cents / 100:,.2f}{f' {t.currency}' if t.currency else ''}"
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
