"""`kill -USR1 <worker pid>` logs where every asyncio task of the worker is waiting.

For a worker that is alive but stuck (a stalled partition, a hand-over that never ends): the
event loop still answers /healthz, so a thread dump shows nothing; the tasks' stacks do.
"""

from __future__ import annotations

import asyncio
import signal
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from streams.app import Worker

log = structlog.get_logger(__name__)


def task_stacks() -> list[dict[str, object]]:
    """Each pending task's name and innermost frames (file:line function), oldest first."""
    found: list[dict[str, object]] = []
    for task in asyncio.all_tasks():
        frames = [
            f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}"
            for frame in task.get_stack(limit=12)
        ]
        found.append(
            {"task": task.get_name(), "coro": repr(task.get_coro())[:120], "stack": frames}
        )
    return found


def install(worker: Worker) -> None:
    @worker.app.task  # type: ignore[untyped-decorator]
    async def log_task_stacks_on_sigusr1() -> None:
        def dump() -> None:
            for entry in task_stacks():
                log.warning("task_stack", **entry)

        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump)
