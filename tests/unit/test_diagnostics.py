"""The task dump names every waiting task and where it waits."""

from __future__ import annotations

import asyncio

from agents.diagnostics import task_stacks


def test_a_waiting_task_is_listed_with_the_line_it_waits_on() -> None:
    async def wait_for_ever(event: asyncio.Event) -> None:
        await event.wait()

    async def main() -> list[dict[str, object]]:
        event = asyncio.Event()
        waiting = asyncio.create_task(wait_for_ever(event), name="stuck-one")
        await asyncio.sleep(0)
        found = task_stacks()
        event.set()
        await waiting
        return found

    found = {entry["task"]: entry for entry in asyncio.run(main())}

    assert "stuck-one" in found
    stack = found["stuck-one"]["stack"]
    assert isinstance(stack, list)
    assert any(frame.endswith(" wait_for_ever") for frame in stack)
