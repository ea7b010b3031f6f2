"""The benchmark's worker with Faust's `processing_guarantee="exactly_once"`: `churnwatch worker`
with every `faust.App` made with that one setting changed.

Not a churnwatch setting: as built, the worker's outputs (alerts, health, dead letters) bypass
Faust's transactions and are not flushed before a transaction commits (docs/exactness.md).
`python -m benchmarks.exactly_once` runs this to measure what transactions cost and give.
"""

from typing import Any

import faust

from churnwatch.cli import main

_App = faust.App


def _exactly_once_app(*args: Any, **kwargs: Any) -> Any:
    return _App(*args, **{**kwargs, "processing_guarantee": "exactly_once"})


faust.App = _exactly_once_app  # type: ignore[misc]  # streams/app.py calls faust.App(...)
raise SystemExit(main(["worker"]))
