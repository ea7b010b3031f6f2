"""The stdout handshake between the benchmark and a contender process it runs.

The contender prints `@bench first N` when it has processed its first messages (N of them so
far) and `@bench done N` once it has processed every message, then waits on stdin, so the
benchmark can read its CPU time and peak RSS while it is still alive. Other output is ignored.
Only the standard library here: the Quix Streams contender imports this from its own venv.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from benchmarks.measure import Sample, Window, process_peak_rss_bytes

PREFIX = "@bench "


class ContenderError(RuntimeError):
    """The contender exited, or went quiet, before it reported its last message."""


# -- contender side -----------------------------------------------------------------------------


def report_first(count: int) -> None:
    print(f"{PREFIX}first {count}", flush=True)


def report_done(count: int) -> None:
    """Say the work is done and wait until the benchmark has measured this process."""
    print(f"{PREFIX}done {count}", flush=True)
    sys.stdin.readline()


# -- benchmark side -----------------------------------------------------------------------------


def run_contender(
    cmd: list[str],
    *,
    log_path: Path,
    timeout: float,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    broker_running: Callable[[], bool] = lambda: True,
) -> Window:
    """Run a contender to completion; return what was seen of it."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env, cwd=cwd
        )
    window = Window(launched=time.time())
    assert process.stdout is not None
    assert process.stdin is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    try:
        for line in _lines(process, selector, deadline, log_path, broker_running):
            if not line.startswith(PREFIX):
                continue
            what, count = line[len(PREFIX) :].split()
            if what == "first" and window.first is None:
                window.first = Sample.take(process.pid, int(count))
            elif what == "done":
                window.last = Sample.take(process.pid, int(count))
                window.peak_rss_bytes = process_peak_rss_bytes(process.pid)
                break
        process.stdin.close()  # let it exit
        process.wait(timeout=60)
    finally:
        selector.close()
        if process.poll() is None:
            process.kill()
            process.wait()
    return window


def _lines(
    process: subprocess.Popen[bytes],
    selector: selectors.BaseSelector,
    deadline: float,
    log_path: Path,
    broker_running: Callable[[], bool],
) -> Iterator[str]:
    """Lines of the contender's stdout until EOF; raise if it stalls past the deadline."""
    assert process.stdout is not None
    buffer = b""
    fd = process.stdout.fileno()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ContenderError(f"no result before the time limit\n{log_tail(log_path)}")
        if not selector.select(timeout=min(remaining, 1.0)):
            if not broker_running():
                raise ContenderError("the broker stopped (killed from outside?)")
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            process.wait(timeout=10)
            raise ContenderError(
                f"exited with code {process.returncode} before it was done\n{log_tail(log_path)}"
            )
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        for raw in complete:
            yield raw.decode(errors="replace").strip()


def log_tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
