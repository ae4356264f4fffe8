"""Record the expert taking over where a policy got stuck in the simulated pick-up task (recovery data).

    python scripts/record_takeovers.py --checkpoint checkpoints/sim-pick-cube --episodes 40 --seed 1
(see smolvla_bringup.demo.record_takeovers, or --help)
"""

import sys

from smolvla_bringup.demo.record_takeovers import main

sys.exit(main(sys.argv[1:]))
