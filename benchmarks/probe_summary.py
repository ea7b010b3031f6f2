"""Summarize a `--probe` log: where a live record's time goes, stage by stage.

`python -m benchmarks.probe_summary PROBE.jsonl`. The live phase starts at the first record
produced more than 2 s after the newest pre-produced one (the worker caught up in between); the
first 2 s of it are left out. Figures in seconds: fetch durations (with and without records),
drains from aiokafka into Faust (the records' age, count, gaps), batches the ingest agent
handled (age of their oldest and newest record at the start, handling time, size, gaps).
"""

from __future__ import annotations

import json
import sys
from itertools import pairwise
from typing import Any


def live_start(rows: list[dict[str, Any]]) -> float:
    newest = None
    for row in sorted((r for r in rows if r["k"] == "drain"), key=lambda r: r["t"]):
        if newest is not None and row["ts_min"] / 1000 - newest > 2.0:
            return float(row["ts_min"] / 1000)
        newest = max(newest or 0.0, row["ts_max"] / 1000)
    return 0.0


def quantile(values: list[float], q: float) -> float | None:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3) if ordered else None


def summarize(rows: list[dict[str, Any]]) -> list[str]:
    begin = live_start(rows) + 2.0

    def kind(name: str) -> list[dict[str, Any]]:
        return [r for r in rows if r["k"] == name and r.get("started", r["t"]) > begin]

    fetches, drains, batches = kind("fetch"), kind("drain"), kind("batch")
    figures = {
        "fetch with records: duration": [r["t"] - r["sent"] for r in fetches if r["data"]],
        "fetch without records: duration": [r["t"] - r["sent"] for r in fetches if not r["data"]],
        "drain: now - oldest produce ts": [r["t"] - r["ts_min"] / 1000 for r in drains],
        "drain: now - newest produce ts": [r["t"] - r["ts_max"] / 1000 for r in drains],
        "drain: records": [r["n"] for r in drains],
        "drain: gap between drains": [b["t"] - a["t"] for a, b in pairwise(drains)],
        "batch start: now - oldest": [r["started"] - r["ts_min"] / 1000 for r in batches],
        "batch start: now - newest": [r["started"] - r["ts_max"] / 1000 for r in batches],
        "batch: handling": [r["t"] - r["started"] for r in batches],
        "batch: events": [r["n"] for r in batches],
        "batch: gap between starts": [b["started"] - a["started"] for a, b in pairwise(batches)],
    }
    return [
        f"{name:34s} n={len(values):5d} p50={quantile(values, 0.5)} "
        f"p90={quantile(values, 0.9)} p99={quantile(values, 0.99)} max={quantile(values, 1.0)}"
        for name, values in figures.items()
    ]


if __name__ == "__main__":
    with open(sys.argv[1]) as lines:
        print("\n".join(summarize([json.loads(line) for line in lines])))
