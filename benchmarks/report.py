"""The result file (JSON, schema `churnwatch-bench/1`) and its Markdown table.

Top level: `schema`, `run_id`, `started_at`, `finished_at`, `quick`, `command`, `machine`
(CPU count and model, memory, Python, Kafka version, load average at start and end, package
versions, git commit), `workload`, `baseline` (the contender ratios are taken against),
`contenders` (fetch, decode_update, quix, churnwatch: each with `status`, `events`, `seconds`,
`events_per_second`, `ratio`, `peak_rss_bytes`, `cpu_seconds_per_million` and more) and
`latency`. A contender that could not run has `status: "unavailable: <reason>"` and nulls.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

SCHEMA = "churnwatch-bench/1"
BASELINE = "decode_update"
CONTENDERS: dict[str, str] = {
    "fetch": "aiokafka consumer, fetch only",
    "decode_update": "aiokafka + orjson + dict per customer",
    "quix": "Quix Streams app, stateful per-customer update (RocksDB, changelog)",
    "faust_take": "Faust as the worker sets it up, batches + orjson + dict per customer",
    "faust_changelog": "the same + one table write and changelog record per customer per batch",
    "churnwatch": "churnwatch worker: agents, validation, state, rules, changelog, metrics",
    "churnwatch_live_shaped": "the same worker on the live-shaped workload, single events",
    "churnwatch_envelopes": "the same worker on the live-shaped workload, envelopes of <= 50",
}
REQUIRED = ("events", "seconds", "events_per_second", "ratio", "peak_rss_bytes",
            "cpu_seconds_per_million")  # fmt: skip
PACKAGES = ("faust-streaming", "aiokafka", "kafka-python", "orjson", "prometheus-client")
REPO_ROOT = Path(__file__).resolve().parents[1]


def machine_info(kafka_version: str, broker: str) -> dict[str, Any]:
    """What ran the benchmark; `loadavg_end` is filled in when the run ends."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_bytes": _memory_bytes(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "kafka_version": kafka_version,
        "broker": broker,
        "loadavg_start": [round(v, 2) for v in os.getloadavg()],
        "loadavg_end": None,
        "packages": versions,
        "git": _git(),
    }


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _memory_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _git() -> dict[str, Any] | None:
    git = shutil.which("git")
    if git is None:
        return None
    try:
        commit = _output([git, "rev-parse", "HEAD"]).strip()
        dirty = bool(_output([git, "status", "--porcelain"]).strip())
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def _output(cmd: list[str]) -> str:
    done = subprocess.run(
        cmd, cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=10
    )
    return done.stdout


def add_ratios(contenders: dict[str, dict[str, Any]]) -> None:
    """Each contender's events/s as a ratio to the decode+update limit's."""
    baseline = contenders.get(BASELINE, {}).get("events_per_second")
    for result in contenders.values():
        rate = result.get("events_per_second")
        if baseline and rate is not None:
            result["ratio"] = round(rate / baseline, 4)


def validate(result: dict[str, Any]) -> list[str]:
    """Problems that make a result file incomplete (empty list: complete)."""
    problems = []
    if result.get("schema") != SCHEMA:
        problems.append(f"schema is {result.get('schema')!r}, not {SCHEMA!r}")
    for key in ("machine", "workload", "contenders", "latency"):
        if key not in result:
            problems.append(f"missing {key}")
    contenders = result.get("contenders", {})
    for name in CONTENDERS:
        entry = contenders.get(name)
        if entry is None:
            problems.append(f"contender {name} missing")
            continue
        status = str(entry.get("status", ""))
        for key in REQUIRED:
            if key not in entry:
                problems.append(f"{name}: missing {key}")
            elif status == "ok" and key != "ratio" and not isinstance(entry[key], int | float):
                problems.append(f"{name}: {key} is {entry[key]!r}")
        if status != "ok" and not status.startswith(("unavailable: ", "skipped", "failed: ")):
            problems.append(f"{name}: status {status!r}")
    return problems


def write(result: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """`<stamp>.json` and `<stamp>.md`, copied to `latest.json` and `latest.md`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = result["started_at"].replace(":", "").replace("-", "")
    stem = f"{stamp}-quick" if result.get("quick") else stamp
    json_text = json.dumps(result, indent=2) + "\n"
    markdown = to_markdown(result)
    paths = (out_dir / f"{stem}.json", out_dir / f"{stem}.md")
    for path, text in zip(paths, (json_text, markdown), strict=True):
        _write_atomically(path, text)
        _write_atomically(out_dir / f"latest{path.suffix}", text)
    return paths


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(text)
    partial.replace(path)


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def to_markdown(result: dict[str, Any]) -> str:
    machine, workload = result["machine"], result["workload"]
    lines = [
        f"# churnwatch benchmark, {result['started_at']}{' (quick)' if result['quick'] else ''}",
        "",
        f"{workload['events']:,} usage events ({workload.get('mean_event_bytes', '?')} B JSON "
        f"mean), {workload['customers']:,} customers, {workload['partitions']} partitions, "
        f"seed {workload['seed']}. {machine['cpu_count']} CPUs ({machine['cpu_model']}), "
        f"Python {machine['python']}, Kafka {machine['kafka_version']} ({machine['broker']}); "
        f"load average {_load(machine['loadavg_start'])} at start, "
        f"{_load(machine['loadavg_end'])} at end.",
        "",
        "Each contender in its own process, one at a time, from offset 0 with a fresh group. "
        "events/s over the window from the first event handled to the last (start-up and group "
        "join excluded: `start-up s`); CPU is the process's user+system time in that window; "
        "peak RSS is the process's high-water mark.",
        "",
        "| contender | events/s | x decode+update | seconds | start-up s | peak RSS MiB "
        "| CPU s / M events | CPU use |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, label in CONTENDERS.items():
        entry = result["contenders"].get(name, {})
        if entry.get("status") != "ok":
            lines.append(f"| {name} ({label}) | {entry.get('status', 'not run')} | | | | | | |")
            continue
        lines.append(
            f"| {name} ({label}) | {entry['events_per_second']:,.0f} | {_num(entry['ratio'], 3)} "
            f"| {entry['seconds']:.2f} | {entry['startup_seconds']:.1f} "
            f"| {entry['peak_rss_bytes'] / 2**20:,.0f} | {entry['cpu_seconds_per_million']:,.1f} "
            f"| {entry['cpu_utilisation']:.2f} |"
        )
    for name in CONTENDERS:
        shaped = result["contenders"].get(name, {}).get("workload")
        if shaped:
            span = (shaped["last_event_time"] - shaped["first_event_time"]) / 60
            lines += [
                "",
                f"{name}: {shaped['events']:,} events of {shaped['customers']:,} customers "
                f"within {span:,.0f} minutes of event time ({shaped['events_per_customer_day']:,} "
                f"per customer-day), in {shaped['messages']:,} messages "
                f"({shaped['events_per_message']:g} events per message, heartbeats included).",
            ]
    lines += [
        "",
        "CPU seconds each window took: the contender, the broker, and the rest of the machine "
        "(the benchmark itself and anyone else's load; a 2-core machine has 2 per second).",
        "",
        "| contender | window s | contender CPU s | broker CPU s | rest CPU s |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name in CONTENDERS:
        entry = result["contenders"].get(name, {})
        if entry.get("status") == "ok":
            lines.append(
                f"| {name} | {entry['seconds']:.2f} | {entry['cpu_seconds']:.2f} "
                f"| {entry.get('broker_cpu_seconds', 0):.2f} "
                f"| {entry.get('other_cpu_seconds', 0):.2f} |"
            )
    lines += ["", *_latency_lines(result.get("latency", {})), ""]
    return "\n".join(lines)


def _latency_lines(latency: dict[str, Any]) -> list[str]:
    if latency.get("status") != "ok":
        return [f"Latency: {latency.get('status', 'not run')}."]
    processed, alert = latency["produce_to_processed"], latency["condition_to_alert"]
    return [
        f"## Latency: {latency['achieved_rate_per_second']:,.0f} events/s for "
        f"{latency['duration_seconds']:g} s, event time at "
        f"{latency['event_seconds_per_wall_second']:,.0f}x wall time",
        "",
        "| measure | samples | p50 ms | p99 ms | max ms |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| produce → processed (state on the changelog) | {processed['samples']:,} "
        f"| {_num(processed['p50_ms'], 1)} | {_num(processed['p99_ms'], 1)} "
        f"| {_num(processed['max_ms'], 1)} |",
        f"| condition true → alert on churnwatch.alerts | {alert['samples']:,} "
        f"| {_num(alert['p50_ms'], 1)} | {_num(alert['p99_ms'], 1)} | {_num(alert['max_ms'], 1)} |",
        "",
        f"Condition → alert includes the allowed lateness ({alert['of_which_allowed_lateness_ms']} "
        f"ms of wall time at this speed); {alert['alerts_expected']} alerts expected, "
        f"{alert['alerts_missing']} missing, {alert['alert_day_mismatches']} on another day "
        f"than expected, over {alert['distinct_condition_days']} distinct condition days.",
        *_busy_line(latency.get("worker_during_live_phase")),
        "",
        *(f"- {name}: {text}." for name, text in latency["definitions"].items()),
    ]


def _busy_line(busy: dict[str, Any] | None) -> list[str]:
    if not busy:
        return []
    return [
        "",
        f"The worker over the live phase: {busy['cpu_utilisation']:.0%} of a core, "
        f"{busy['batches']:,} batches of {busy['mean_batch_events']:,.0f} events on average, "
        f"{busy['seconds_inside_batches']:.1f} s of {busy['seconds']:.0f} s inside them.",
    ]


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _load(values: list[float] | None) -> str:
    return "?" if not values else " / ".join(f"{v:.2f}" for v in values)
