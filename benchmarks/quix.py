"""The Quix Streams contender: its own venv, its own process, measured like every other one.

quixstreams caps pydantic and pydantic-settings below the versions churnwatch runs with, so it
lives in a venv of its own, made on first use from `requirements-quix.txt` (the pinned version)
under the cache directory, or given with `--quix-python`.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from benchmarks.handshake import run_contender
from benchmarks.measure import Window

REQUIREMENTS = Path(__file__).with_name("requirements-quix.txt")
REPO_ROOT = Path(__file__).resolve().parents[1]


class QuixUnavailableError(RuntimeError):
    """Quix Streams cannot be installed or imported here; the message says why."""


def pinned_version() -> str:
    match = re.search(r"^quixstreams==(\S+)", REQUIREMENTS.read_text(), re.MULTILINE)
    if match is None:
        raise QuixUnavailableError(f"{REQUIREMENTS.name} pins no quixstreams version")
    return match.group(1)


def installed_version(python: Path) -> str:
    """The quixstreams version `python` imports; QuixUnavailableError if it cannot."""
    probe = subprocess.run(
        [str(python), "-c", "import quixstreams; print(quixstreams.__version__)"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if probe.returncode != 0:
        raise QuixUnavailableError(
            f"{python} cannot import quixstreams: {_last_line(probe.stderr)}"
        )
    return probe.stdout.strip()


def ensure_python(cache_dir: Path, explicit: Path | None, install: bool) -> Path:
    """The interpreter of a venv holding the pinned quixstreams; made (once) if allowed."""
    if explicit is not None:
        installed_version(explicit)
        return explicit
    version = pinned_version()
    venv = cache_dir / "bench" / f"quix-{version}"
    python = venv / "bin" / "python"
    if python.exists():
        try:
            if installed_version(python) == version:
                return python
        except QuixUnavailableError:
            pass  # a broken venv (an interrupted install): made again below
    if not install:
        raise QuixUnavailableError(f"no venv with quixstreams {version} at {venv} (--no-install)")
    print(f"bench: installing quixstreams {version} into {venv} (first run only)",
          file=sys.stderr, flush=True)  # fmt: skip
    for cmd in (
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        [str(python), "-m", "pip", "install", "--quiet", "-r", str(REQUIREMENTS)],
    ):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
        if done.returncode != 0:
            raise QuixUnavailableError(
                f"`{' '.join(cmd[:4])} ...` failed: {_last_line(done.stderr)}"
            )
    installed_version(python)
    return python


def run(
    python: Path,
    *,
    bootstrap: str,
    topic: str,
    group: str,
    messages: int,
    state_dir: Path,
    log_path: Path,
    timeout: float,
    broker_running: Callable[[], bool] = lambda: True,
) -> Window:
    """Run the Quix app over the whole topic; return what was seen of it."""
    window = run_contender(
        [str(python), "-m", "benchmarks.quix_app", "--bootstrap", bootstrap, "--topic", topic,
         "--group", group, "--messages", str(messages), "--state-dir", str(state_dir)],
        log_path=log_path,
        timeout=timeout,
        cwd=REPO_ROOT,
        broker_running=broker_running,
    )  # fmt: skip
    window.details["quixstreams"] = installed_version(python)
    return window


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output)"
