"""Learning curve of a ``make train`` run: each saved checkpoint's offline MAE on held-out bags and its
closed-loop success on held-out sim placements. See :mod:`smolvla_bringup.demo.learning_curve`.

    python benchmarks/bench_learning_curve.py outputs/closed-loop --bags recordings/held-out/episode_* \
        --episodes 5 --every 1000
"""

from __future__ import annotations

import sys

from smolvla_bringup.demo.learning_curve import main

if __name__ == "__main__":
    sys.exit(main())
