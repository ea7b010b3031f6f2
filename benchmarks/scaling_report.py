"""The scaling result file (JSON, schema `churnwatch-scaling/1`) and its Markdown.

Top level: `schema`, `run_id`, `started_at`, `finished_at`, `quick`, `command`, `machine` (as
the main benchmark's), `events_rule`, `workloads` (per customer count), `idle` (per store: the
RSS of a worker with nothing to read), `sizes` (per customer count and store: events/s, peak and
final RSS, RSS per tracked customer, state bytes per customer, changelog bytes per event),
`recovery` (a new worker restoring the tables: launch to /readyz and to every customer back)
and `one_versus_two` (one worker, then a group of two, on the same workload). An entry that
could not run has `status: "unavailable: <reason>"` or `"failed: <reason>"`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.report import _write_atomically

SCHEMA = "churnwatch-scaling/1"
SIZE_FIGURES = (
    "events_per_second",
    "peak_rss_bytes",
    "rss_bytes_per_customer",
    "state_bytes_per_customer",
    "changelog_bytes_per_event",
    "customers_tracked",
)
RECOVERY_FIGURES = ("ready_seconds", "restored_seconds")
MIB = 2**20


def events_rule(floor: int) -> str:
    return (
        f"events = max({floor:,}, customers), one event per customer per event day: every "
        "customer is tracked (1M customers need 1M events) and small sizes still run long "
        "enough to measure"
    )


def validate(result: dict[str, Any]) -> list[str]:
    """Problems that make a scaling result incomplete (empty list: complete)."""
    problems = []
    if result.get("schema") != SCHEMA:
        problems.append(f"schema is {result.get('schema')!r}")
    for key in ("machine", "workloads", "idle", "sizes", "recovery", "one_versus_two"):
        if key not in result:
            problems.append(f"missing {key}")
    for entry in result.get("sizes", []):
        label = f"{entry.get('store')}:{entry.get('customers')}"
        status = str(entry.get("status", ""))
        if status == "ok":
            for key in SIZE_FIGURES:
                if not isinstance(entry.get(key), int | float):
                    problems.append(f"{label}: {key} is {entry.get(key)!r}")
        elif not status.startswith(("unavailable: ", "unsupported: ", "skipped: ", "failed: ")):
            problems.append(f"{label}: status {status!r}")
    for entry in result.get("recovery", []):
        if entry.get("status") == "ok":
            for key in RECOVERY_FIGURES:
                if not isinstance(entry.get(key), int | float):
                    problems.append(f"recovery {entry.get('local_data')}: {key} missing")
    group = result.get("one_versus_two") or {}
    if "status" not in group:
        for key in ("workers_1", "workers_2", "speedup"):
            if key not in group:
                problems.append(f"one_versus_two: missing {key}")
    return problems


def add_marginal(result: dict[str, Any]) -> None:
    """RSS per customer between consecutive sizes of a store: what one more customer costs,
    without the fixed cost of processing (buffers, heap growth) that dominates small sizes."""
    previous: dict[str, dict[str, Any]] = {}
    for entry in result["sizes"]:
        store = entry.get("store", "?")
        if entry.get("status") != "ok":
            continue
        before = previous.get(store)
        entry["marginal_rss_bytes_per_customer"] = None
        if before is not None:
            extra = entry["customers_tracked"] - before["customers_tracked"]
            if extra > 0:
                grown = entry["rss_bytes"] - before["rss_bytes"]
                entry["marginal_rss_bytes_per_customer"] = round(grown / extra, 1)
        previous[store] = entry


def write(result: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """`scaling-<stamp>.json` and `.md`, copied to `scaling-latest.*`."""
    import json

    add_marginal(result)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = result["started_at"].replace(":", "").replace("-", "")
    stem = f"scaling-{stamp}{'-quick' if result.get('quick') else ''}"
    texts = (json.dumps(result, indent=2) + "\n", to_markdown(result))
    paths = (out_dir / f"{stem}.json", out_dir / f"{stem}.md")
    for path, text in zip(paths, texts, strict=True):
        _write_atomically(path, text)
        _write_atomically(out_dir / f"scaling-latest{path.suffix}", text)
    return paths


def size_summary(entry: dict[str, Any]) -> str:
    if entry.get("status") != "ok":
        return str(entry.get("status"))
    return (
        f"{entry['events_per_second']:,.0f} events/s, peak RSS {entry['peak_rss_bytes'] / MIB:,.0f}"
        f" MiB, {entry['rss_bytes_per_customer']:,.0f} B RSS and "
        f"{entry['state_bytes_per_customer']:,.0f} B state per customer, "
        f"{_num(entry['changelog_bytes_per_event'], 0)} B changelog per event"
    )


def recovery_summary(entry: dict[str, Any]) -> str:
    if entry.get("status") != "ok":
        return str(entry.get("status"))
    ready, restored = entry["ready_seconds"], entry["restored_seconds"]
    return f"ready in {ready:.1f} s, all restored in {restored:.1f} s"


def to_markdown(result: dict[str, Any]) -> str:
    machine = result["machine"]
    lines = [
        f"# churnwatch scaling, {result['started_at']}{' (quick)' if result['quick'] else ''}",
        "",
        f"{machine['cpu_count']} CPUs ({machine['cpu_model']}), Python {machine['python']}, "
        f"Kafka {machine['kafka_version']} ({machine['broker']}); load average "
        f"{_load(machine['loadavg_start'])} at start, {_load(machine.get('loadavg_end'))} at end. "
        f"Workload: {result['events_rule']}. 4 partitions, a real `churnwatch worker` from "
        "offset 0 per row.",
        "",
        "| store | customers | events | event days | events/s | CPU s / M | events per CPU s "
        "| rest CPU s "
        "| peak RSS MiB | RSS B / customer | marginal RSS B / customer | state B / customer "
        "| changelog B / event |",
        "| --- " + "| ---: " * 12 + "|",
    ]
    reasons: dict[str, str] = {}
    for entry in result["sizes"]:
        if entry.get("status") != "ok":
            kind = str(entry["status"]).split(":", 1)[0]
            reasons.setdefault(f"{entry['store']}://", str(entry["status"]))
            lines.append(
                f"| {entry['store']}:// | {entry['customers']:,} | {kind} (below) | | | | | | | | |"
            )
            continue
        lines.append(
            f"| {entry['store']}:// | {entry['customers_tracked']:,} | {entry['events']:,} "
            f"| {entry['event_days']} | {entry['events_per_second']:,.0f} "
            f"| {entry['cpu_seconds_per_million']:,.0f} "
            f"| {1e6 / max(entry['cpu_seconds_per_million'], 1e-9):,.0f} "
            f"| {entry['other_cpu_seconds']:,.1f} "
            f"| {entry['peak_rss_bytes'] / MIB:,.0f} | {entry['rss_bytes_per_customer']:,.0f} "
            f"| {_num(entry.get('marginal_rss_bytes_per_customer'), 0)} "
            f"| {entry['state_bytes_per_customer']:,.0f} "
            f"| {_num(entry['changelog_bytes_per_event'], 0)} |"
        )
    idle = ", ".join(
        f"{store}:// {entry['rss_bytes'] / MIB:,.0f} MiB"
        if entry.get("status") == "ok"
        else f"{store}:// {entry.get('status')}"
        for store, entry in result["idle"].items()
    )
    lines += [f"\n{label}: {reason}." for label, reason in reasons.items()]
    lines += [
        "",
        f"RSS per customer = (RSS after the last event - RSS of an idle worker: {idle}) / "
        "customers tracked; marginal = RSS growth over the previous size / the customers it "
        "added (without the fixed cost of processing, which dominates small sizes). "
        "State = mean encoded CustomerState (newest changelog value per key). "
        "Changelog = the topic's log size on the broker / events (before compaction). "
        "Events per CPU s = 1,000,000 / (worker CPU s per million events): the rate with a whole "
        "core, less sensitive to other load than events/s. "
        "Rest CPU = the machine's busy CPU seconds in the window beyond worker and broker "
        "(the benchmark itself and other users of the machine).",
        "",
        "## Recovery: a new worker of the same group restores the customers table",
        "",
        "| store | local data | customers | launch → /readyz s | launch → all restored s |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for entry in result["recovery"]:
        if entry.get("status") != "ok":
            lines.append(f"| | | {entry.get('status')} | | |")
            continue
        lines.append(
            f"| {entry['store']}:// | {entry['local_data']} | {entry['customers']:,} "
            f"| {entry['ready_seconds']:.1f} | {entry['restored_seconds']:.1f} |"
        )
    lines += ["", *_group_lines(result.get("one_versus_two") or {}), ""]
    if result.get("note"):
        lines += [f"Note: {result['note']}", ""]
    return "\n".join(lines)


def _group_lines(group: dict[str, Any]) -> list[str]:
    if "workers_1" not in group:
        return [f"1 vs 2 workers: {group.get('status', 'not run')}."]
    lines = [
        f"## 1 worker vs a group of 2: {group['customers']:,} customers, {group['events']:,} "
        "events, memory://",
        "",
        "| workers | events/s (first → last event) | seconds | start-up s | events/s from launch "
        "| events/s once all have partitions | workers' CPU use | machine CPU s "
        "| events per worker |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for count in (1, 2):
        entry = group[f"workers_{count}"]
        lines.append(
            f"| {count} | {entry['events_per_second']:,.0f} | {entry['seconds']:.1f} "
            f"| {entry['startup_seconds']:.1f} | {entry['total_events_per_second']:,.0f} "
            f"| {_num(entry.get('steady_events_per_second'), 0)} "
            f"| {entry['cpu_utilisation']:.2f} | {entry['machine_cpu_seconds']:.1f} "
            f"| {' / '.join(f'{n:,}' for n in entry['processed_by_worker'])} |"
        )
    lines += [
        "",
        f"Speed-up of 2 workers over 1: {group['speedup']:.2f}x; CPU seconds per million "
        f"events: {_per_million(group['workers_1'], group['events'])} with 1 worker, "
        f"{_per_million(group['workers_2'], group['events'])} with 2. The machine has 2 cores, "
        "shared with the broker, this benchmark and other users ('machine CPU s' shows how "
        "much of the 2 x seconds was busy): on a contended machine two processes also get "
        "more of its time slices than one, so the speed-up is only a ceiling's hint; the CPU "
        "per event says whether the work itself grew.",
    ]
    return lines


def _per_million(entry: dict[str, Any], events: int) -> str:
    return f"{entry['cpu_seconds'] / max(events, 1) * 1e6:,.0f}"


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _load(values: list[float] | None) -> str:
    return "?" if not values else " / ".join(f"{v:.2f}" for v in values)
