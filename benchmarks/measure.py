"""Measuring a contender process from outside, the same way for every contender (Linux /proc).

Each contender is its own process, run alone. The benchmark samples the process's CPU time
(user + system, all threads), the broker's, and the machine's busy CPU time when it sees the
first event processed and when it sees the last one: the throughput window. What the machine
spent beyond the two is `other_cpu_seconds`: the benchmark itself, and anyone else's load.
Peak RSS is the kernel's high-water mark (VmHWM) read just before the process is told to exit,
so it covers the whole life of the process, start-up included."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process, all its threads (utime + stime)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / _TICKS


def process_peak_rss_bytes(pid: int) -> int:
    """The process's peak resident set size so far (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/{pid}/status has no VmHWM")


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine spent busy since boot (all processes)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
    return (user + nice + system + irq + softirq + steal) / _TICKS


def find_pid(fragment: str) -> int | None:
    """The process whose command line contains `fragment` (e.g. the broker's config path)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if fragment in cmdline:
            return int(entry.name)
    return None


# The broker's pid, when the benchmark runs it: every sample reads its CPU time too, so a
# result shows how much of the machine the broker and everything else took in the window.
BROKER: dict[str, int] = {}


def _broker_cpu() -> float:
    pid = BROKER.get("pid")
    if pid is None:
        return 0.0
    try:
        return process_cpu_seconds(pid)
    except OSError:
        return 0.0


@dataclass(frozen=True, slots=True)
class Sample:
    """A moment of a contender's run, seen from outside."""

    wall: float
    cpu: float
    machine_busy: float
    count: int
    broker_cpu: float = 0.0

    @classmethod
    def take(cls, pid: int, count: int) -> Sample:
        return cls(
            time.time(), process_cpu_seconds(pid), machine_busy_seconds(), count, _broker_cpu()
        )


@dataclass(slots=True)
class Window:
    """What the benchmark saw of one contender: launch, first event, last event, peak RSS."""

    launched: float
    first: Sample | None = None
    last: Sample | None = None
    peak_rss_bytes: int | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def result(self, events: int) -> dict[str, Any]:
        """The contender's figures for `events` events (the window excludes start-up)."""
        if self.first is None or self.last is None:
            raise RuntimeError("the contender never reported its first and last event")
        in_window = self.last.count - self.first.count
        seconds = max(self.last.wall - self.first.wall, 1e-6)
        cpu = self.last.cpu - self.first.cpu
        machine = self.last.machine_busy - self.first.machine_busy
        broker = self.last.broker_cpu - self.first.broker_cpu
        return {
            "status": "ok",
            "events": events,
            "seconds": round(seconds, 4),
            "events_per_second": round(in_window / seconds, 1),
            "ratio": None,  # filled in by the report, against the decode+update limit
            "peak_rss_bytes": self.peak_rss_bytes,
            "cpu_seconds": round(cpu, 3),
            "cpu_seconds_per_million": round(cpu / max(in_window, 1) * 1e6, 2),
            "cpu_utilisation": round(cpu / seconds, 3),
            "machine_cpu_seconds": round(machine, 2),
            "broker_cpu_seconds": round(broker, 2),
            "other_cpu_seconds": round(machine - cpu - broker, 2),
            "events_in_window": in_window,
            "startup_seconds": round(self.first.wall - self.launched, 3),
            "total_seconds": round(self.last.wall - self.launched, 3),
            "total_events_per_second": round(events / (self.last.wall - self.launched), 1),
            **({"details": self.details} if self.details else {}),
        }


def unavailable(reason: str) -> dict[str, Any]:
    """A contender slot that could not be measured, with the reason."""
    return not_measured(f"unavailable: {reason}")


def not_measured(status: str) -> dict[str, Any]:
    """A contender slot with every figure null: skipped, unavailable or failed."""
    return {
        "status": status,
        "events": None,
        "seconds": None,
        "events_per_second": None,
        "ratio": None,
        "peak_rss_bytes": None,
        "cpu_seconds_per_million": None,
    }
