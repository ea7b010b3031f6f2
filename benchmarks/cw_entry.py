"""Entry point of the benchmark's churnwatch worker process: `churnwatch worker`, exactly.

Run as `python -m benchmarks.cw_entry`, so its command line names neither "churnwatch" nor
"worker": a `pkill -f` that someone on the same machine aims at their own worker (it happened
while this benchmark was written) does not take the measured one down with it.
"""

from churnwatch.cli import main

raise SystemExit(main(["worker"]))
