"""`churnwatch` command line: worker, broker, simulate, replay, report, alerts, demo, config."""

from __future__ import annotations

import argparse
import gc
import json
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import structlog

from churnwatch import simulation
from churnwatch.alerts_cli import add_alerts_command
from churnwatch.exceptions import ChurnwatchError
from churnwatch.logs import configure_logging
from churnwatch.report import add_report_command
from churnwatch.simulation import Customer, Plan
from config import Settings, load_settings

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
    _envelope_option(simulate)
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
    _envelope_option(replay)
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
        "--narrow-fraction",
        type=float,
        default=0.0,
        help="share of customers who, partway through, use one event type by one user at "
        "unchanged volume (planted breadth_drop; default 0)",
    )
    parser.add_argument(
        "--stall-fraction",
        type=float,
        default=0.0,
        help="share of customers who never reach the activation milestones, with no "
        "report_run or export event (planted onboarding_stalled; default 0)",
    )
    for name, planted in (
        ("dunning", "whose payment fails and is never recovered (planted payment_failed)"),
        ("downgrade", "who move to half their MRR (planted downgrade)"),
        ("recover", "whose usage dips for a week, then returns (usage_drop, then resolved)"),
        ("flap", "whose usage dips twice a week apart (tests the alert cooldown)"),
    ):
        parser.add_argument(
            f"--{name}-fraction",
            type=float,
            default=0.0,
            help=f"share of customers {planted}; default 0",
        )
    parser.add_argument(
        "--no-billing", dest="billing", action="store_false", help="produce usage events only"
    )
    parser.add_argument(
        "--start", default="2020-01-01", help="first simulated day, UTC (YYYY-MM-DD)"
    )


def _envelope_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--envelope-size",
        type=int,
        default=1,
        metavar="N",
        help="send each customer's events in envelopes of up to N events (docs/topics.md; "
        "held at most half the allowed lateness of event time); default 1: single events",
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
    # Modules, Faust's app and the settings live as long as the process: frozen, the garbage
    # collector's full passes no longer walk them (~155k objects; measured in-process on
    # the batch path: single events ~5% less CPU, envelopes within noise).
    gc.collect()
    gc.freeze()
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
    from churnwatch.kafka_client import explained_auth_failure, kafka_python_options
    from churnwatch.produce import make_producer, send_heartbeats
    from streams.topics import ensure_topics

    settings = settings_from(args)
    configure_logging(settings.log_format, settings.log_level)
    plan = plan_from(args)
    customers = simulation.customers_for(plan)
    if args.planted_out:
        write_planted(args.planted_out, customers)
    ensure_topics(settings)
    with explained_auth_failure(settings):
        producer = make_producer(settings.bootstrap_servers, kafka_python_options(settings.kafka))
    try:
        sent = produce_simulation(
            producer,
            settings,
            plan,
            customers,
            billing=args.billing,
            envelope_size=args.envelope_size,
        )
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
    envelope_size: int = 1,
) -> dict[str, int]:
    """Produce the simulated usage (and billing) events with a progress line; the counts
    are of messages (an envelope is one)."""
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
    sent = produce(
        producer,
        topics,
        records,
        progress,
        settings.allowed_lateness_seconds / 2,
        envelope_size=envelope_size,
    )
    progress.finish()
    return dict(sent)


def _run_replay(args: argparse.Namespace) -> int:
    from churnwatch.kafka_client import explained_auth_failure, kafka_python_options
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
    with explained_auth_failure(settings):
        producer = make_producer(settings.bootstrap_servers, kafka_python_options(settings.kafka))
    try:
        topics = {"usage": settings.topics.usage, "billing": settings.topics.billing}
        progress = Progress("replaying", total)
        sent = produce(
            producer,
            topics,
            in_event_time_order(*histories),
            progress,
            settings.allowed_lateness_seconds / 2,
            envelope_size=args.envelope_size,
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
    from churnwatch.logs import redact

    # SecretStr fields print as stars; redact() also masks passwords inside URLs.
    print(json.dumps(redact(settings.model_dump(mode="json")), indent=2))
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
            narrow_fraction=args.narrow_fraction,
            stall_fraction=args.stall_fraction,
            dunning_fraction=args.dunning_fraction,
            downgrade_fraction=args.downgrade_fraction,
            recover_fraction=args.recover_fraction,
            flap_fraction=args.flap_fraction,
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
