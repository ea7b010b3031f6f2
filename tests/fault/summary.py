"""Print the figures of the last fault run (var/reliability/*.json) as the Markdown table in
docs/reliability.md: `python -m tests.fault.summary`."""

from __future__ import annotations

import json

from tests.fault.scenario import FIGURES_DIR

COLUMNS = (
    ("test", "test"),
    ("faults_injected", "faults"),
    ("events_produced", "produced"),
    ("events_processed", "processed"),
    ("events_dead_lettered", "dead-lettered"),
    ("events_late", "late"),
    ("events_redelivered", "redelivered (suppressed)"),
    ("events_duplicates", "duplicates"),
    ("events_lost", "lost"),
    ("alert_ids", "alert ids"),
    ("alert_messages", "alert messages"),
    ("wall_seconds", "wall s"),
)


def main() -> None:
    runs = [json.loads(path.read_text()) for path in sorted(FIGURES_DIR.glob("*.json"))]
    print("| " + " | ".join(title for _, title in COLUMNS) + " | recovery s |")
    print("|" + "---|" * (len(COLUMNS) + 1))
    for run in runs:
        recovery = ", ".join(
            f"{fault['kind']}: {fault['recovery_seconds']}"
            for fault in run["faults"]
            if fault["recovery_seconds"] is not None
        )
        cells = [str(run[key]) for key, _ in COLUMNS]
        print("| " + " | ".join(cells) + f" | {recovery or '-'} |")


if __name__ == "__main__":
    main()
