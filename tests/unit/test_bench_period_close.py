"""`benchmarks.period_close` on a small workload: it finds the batch closing January among the
day closes and counts what each wrote (no timing is asserted)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.period_close import main


def test_the_batch_closing_a_period_is_told_apart_and_its_records_counted(
    tmp_path: Path,
) -> None:
    out = tmp_path / "close.json"

    assert main(["--customers", "200", "--days", "14", "--batch", "200", "--out", str(out)]) == 0

    result = json.loads(out.read_text())
    assert result["benchmark"] == "period_close"
    assert result["day_closes"] >= 10  # 2024-01-21 .. 2024-02-02, less the first and the close
    assert result["first_day_close"]["records"] >= 200  # every customer's health, first time
    for row in (result["period_close"], result["day_close_median"]):
        assert row["cpu_ms"] > 0
        assert row["records"] > 0
