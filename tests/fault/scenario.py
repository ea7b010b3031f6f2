"""What every fault test shares: the input, the clean run it is compared with, a seeded choice
of where to strike, and the figures each test writes for docs/reliability.md."""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from churnwatch import simulation
from tests.integration.runs import FAST_FIGURES, Outcome
from tests.integration.workers import WorkerEnv, WorkerProcess

REPO_ROOT = Path(__file__).resolve().parents[2]
FIGURES_DIR = REPO_ROOT / "var" / "reliability"

# Small enough for a run in ~15 s on a shared 2-core machine, with every kind of alert and
# churn in it. The final heartbeats put every partition's watermark at END.
PLAN = simulation.Plan(
    customers=400, days=60, seed=23, decay_fraction=0.03, stop_fraction=0.03,
    churn_fraction=0.05, new_fraction=0.06, dunning_fraction=0.03, downgrade_fraction=0.03,
    recover_fraction=0.03,
)  # fmt: skip
END = PLAN.end + 1
SETTINGS = {**FAST_FIGURES, "CHURNWATCH_LOG_LEVEL": "INFO"}

COUNTERS = {
    "processed": "churnwatch_events_processed_total",
    "dead_lettered": "churnwatch_events_dead_lettered_total",
    "late": "churnwatch_events_late_total",
    "redelivered": "churnwatch_events_redelivered_total",
    "duplicates": "churnwatch_events_duplicate_total",
    "rewound": "churnwatch_events_rewound_total",
    "deferred": "churnwatch_events_deferred_total",
    "moved_away": "churnwatch_events_moved_away_total",
}


@dataclass(frozen=True)
class Reference:
    """The clean run: one worker, no faults, over the input every fault test reads again."""

    env: WorkerEnv
    produced: int
    outcome: Outcome
    seconds: float

    def rerun(self, app_id: str, name: str) -> WorkerEnv:
        """Settings for another app over the same input topics, with its own outputs."""
        return replace(
            self.env,
            app_id=app_id,
            alerts_topic=f"{app_id}-{name}-alerts",
            dead_letters_topic=f"{app_id}-{name}-dead",
            health_topic=f"{app_id}-{name}-health",
        )


def seeded(test: str) -> tuple[int, random.Random]:
    """The seed of where a test strikes: CHURNWATCH_FAULT_SEED, or a fresh one (printed)."""
    seed = int(os.environ.get("CHURNWATCH_FAULT_SEED") or random.randrange(2**31))
    print(f"{test}: CHURNWATCH_FAULT_SEED={seed}")
    return seed, random.Random(seed)


@dataclass
class FaultLog:
    """Faults injected and counters of every worker life (a killed worker's as last scraped),
    written to var/reliability/<test>.json."""

    test: str
    seed: int
    produced: int
    faults: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, float] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0.0))
    started: float = field(default_factory=time.monotonic)

    def tally(self, worker: WorkerProcess) -> None:
        """Add a worker's counters (call once per worker life, before it ends)."""
        metrics = worker.metrics()
        for key, name in COUNTERS.items():
            self.counts[key] += sum(v for (n, _), v in metrics.items() if n == name)

    def fault(self, kind: str, recovery_seconds: float | None, **details: Any) -> None:
        """Note a fault; `recovery_seconds` None where there is nothing to recover from."""
        recovery = None if recovery_seconds is None else round(recovery_seconds, 1)
        self.faults.append({"kind": kind, "recovery_seconds": recovery, **details})

    def context(self) -> str:
        """For assertion messages: how to replay this run."""
        return f"(CHURNWATCH_FAULT_SEED={self.seed}; faults: {self.faults})"

    def write(self, result: Outcome, reference: Reference, **extra: Any) -> Path:
        lost = sum(
            max(0, int(record["n"]) - int(result.customers.get(c, {}).get("n", 0)))  # type: ignore[call-overload]
            for c, record in reference.outcome.customers.items()
        )
        figures = {
            "test": self.test,
            "seed": self.seed,
            "faults_injected": len(self.faults),
            "faults": self.faults,
            "events_produced": self.produced,
            **{f"events_{key}": int(value) for key, value in self.counts.items()},
            "events_lost": lost,
            "customers": len(result.customers),
            "alert_ids": len(result.alert_ids),
            "alert_messages": result.alert_messages,
            "reference_alert_messages": reference.outcome.alert_messages,
            "wall_seconds": round(time.monotonic() - self.started, 1),
            **extra,
        }
        FIGURES_DIR.mkdir(parents=True, exist_ok=True)
        path = FIGURES_DIR / f"{self.test}.json"
        path.write_text(json.dumps(figures, indent=2) + "\n")
        return path


def wait_ready(workers: list[WorkerProcess], partitions: int, timeout: float = 120) -> float:
    """Seconds until the workers own every partition between them and are all ready."""
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        for worker in workers:
            worker.assert_alive()
        try:
            owned = sum(len(w.health()["partitions"]) for w in workers)  # type: ignore[arg-type]
            if owned == partitions and all(w.ready() for w in workers):
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"not ready in {timeout}s\n" + "\n".join(w.log_tail() for w in workers))


# Written with a record's next change (CustomerState.evaluated_day): its stored value depends
# on when that came, the behaviour it drives does not (the alerts and figures compare that).
PROGRESS_FIELDS = frozenset({"ed"})


def assert_same(result: Outcome, reference: Outcome, log: FaultLog, ignore: set[str]) -> None:
    """Exactly the clean run's figures, customer records (less `ignore`d fields) and alerts."""
    context = log.context()
    assert result.figures == reference.figures, f"churn figures differ {context}"
    assert set(result.customers) == set(reference.customers), f"customers differ {context}"
    skip = ignore | PROGRESS_FIELDS
    differ = {
        c: {
            k: (r.get(k), result.customers[c].get(k))
            for k in set(r) | set(result.customers[c])
            if k not in skip and r.get(k) != result.customers[c].get(k)
        }
        for c, r in reference.customers.items()
    }
    differ = {c: fields for c, fields in differ.items() if fields}
    shown = list(differ.items())[:3]
    assert not differ, f"{len(differ)} customer records differ {context}: (clean, faulty) {shown}"
    missing = sorted(reference.alert_ids - result.alert_ids)
    extra = sorted(result.alert_ids - reference.alert_ids)
    assert not missing, f"alert ids missing {missing[:5]} {context}"
    assert not extra, f"alert ids not in the clean run {extra[:5]} {context}"
