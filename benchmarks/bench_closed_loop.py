"""Closed-loop score on the simulated pick-up task through the real graph (sim, policy, executor).

Rows: the scripted expert (``--expert``: proves the scorer sees a success) and the policy for each executor
mode and added inference latency (the policy node's ``added_latency_s``). Columns: successes n/N and %,
median and max time to success (from the instruction), chunks received and executor idle ticks. Placements
come from held-out task seeds (>= 1000, refused by ``record_expert``). The table is printed and written as
``reports/closed-loop-<time>/{results.json,table.md}``. See :mod:`smolvla_bringup.demo.closed_loop`.

    python benchmarks/bench_closed_loop.py --expert --no-policy --episodes 3
    python benchmarks/bench_closed_loop.py --checkpoint PATH --modes sync,async --latencies 0,0.3,0.8
    python benchmarks/bench_closed_loop.py --expert --episodes 2 --timeout 8 --latencies 0,0.3,0.8
"""

from __future__ import annotations

import sys

from smolvla_bringup.demo.closed_loop import main

if __name__ == "__main__":
    sys.exit(main())
