"""`python -m benchmarks.scaling --quick` end to end on the session broker: a complete result.

No timing assertions: figures depend on the machine. What must hold is that every size and store
ran (or says why it could not), every figure is there, recovery and 1-vs-2 ran, and the
Markdown was written beside the JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.scaling import SIZES, STORES
from benchmarks.scaling_report import SCHEMA, SIZE_FIGURES, validate

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_quick_scaling_writes_a_complete_result(kafka_bootstrap: str, tmp_path: Path) -> None:
    out = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.scaling", "--quick", "--out", str(out),
         "--bootstrap", kafka_bootstrap],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]

    result = json.loads((out / "scaling-latest.json").read_text())
    assert validate(result) == []
    assert result["schema"] == SCHEMA
    assert result["quick"] is True
    runs = {(entry["store"], entry["customers"]): entry for entry in result["sizes"]}
    assert set(runs) == {(store, size) for store in STORES for size in SIZES["quick"]}
    for (store, size), entry in runs.items():
        if store == "rocksdb" and entry["status"].startswith("unavailable: "):
            continue  # no rocksdict here: the reason is recorded
        assert entry["status"] == "ok", (store, size, entry["status"])
        assert 0 < entry["customers_tracked"] <= size
        for key in SIZE_FIGURES:
            assert entry[key] > 0, (store, size, key)

    recovered = {entry["local_data"]: entry for entry in result["recovery"]}
    assert recovered["fresh"]["status"] == "ok"
    assert recovered["fresh"]["customers"] == max(SIZES["quick"])
    if runs[("rocksdb", max(SIZES["quick"]))]["status"] == "ok":
        assert {recovered["kept"]["status"], recovered["wiped"]["status"]} == {"ok"}

    group = result["one_versus_two"]
    assert group["workers_1"]["workers"] == 1
    assert group["workers_2"]["workers"] == 2
    assert sum(group["workers_2"]["processed_by_worker"]) >= group["events"]

    stamped = list(out.glob("scaling-*-quick.json"))
    assert len(stamped) == 1
    markdown = (out / "scaling-latest.md").read_text()
    assert markdown == stamped[0].with_suffix(".md").read_text()
    assert "## Recovery" in markdown
    assert "## 1 worker vs a group of 2" in markdown
