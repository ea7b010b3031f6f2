"""Where the worker's time goes: py-spy samples it during the throughput window (`--profile`).

py-spy (`pip install py-spy`) records collapsed stacks ("frame;frame;... count") without
stopping the process (`--nonblocking`); the summary lists the functions with the most samples
on top of the stack (self) and anywhere in it (inclusive). A profiled run is slower: its
figures are marked and are not the ones to compare.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME_FILE = re.compile(r"\((?:.*/site-packages/|.*/(?=churnwatch/|streams/|agents/))")


def py_spy() -> str | None:
    beside_python = Path(sys.executable).with_name("py-spy")
    return str(beside_python) if beside_python.exists() else shutil.which("py-spy")


def start(pid: int, output: Path) -> subprocess.Popen[bytes]:
    tool = py_spy()
    if tool is None:
        raise RuntimeError("--profile needs py-spy: pip install py-spy")
    return subprocess.Popen(
        [tool, "record", "--pid", str(pid), "--format", "raw", "--output", str(output),
         "--rate", "100", "--nonblocking", "--function"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def stop(recorder: subprocess.Popen[bytes]) -> None:
    recorder.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
    try:
        recorder.wait(timeout=60)
    except subprocess.TimeoutExpired:
        recorder.kill()
        recorder.wait()


def summarize(path: Path, top: int = 20) -> dict[str, Any]:
    """Shares of samples per function: on top of the stack, and anywhere in it."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_FRAME_FILE.sub("(", frame) for frame in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return {"samples": 0, "self": [], "inclusive": []}
    return {
        "samples": total,
        "self": [[frame, round(n / total, 4)] for frame, n in own.most_common(top)],
        "inclusive": [[frame, round(n / total, 4)] for frame, n in inclusive.most_common(top)],
    }
