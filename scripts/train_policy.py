"""Train a small SmolVLA from scratch on the recorded sim dataset with LeRobot's lerobot-train.

    python scripts/train_policy.py --dataset recordings/closed-loop/dataset --output-dir outputs/closed-loop
(see smolvla_policy.training, or --help)
"""

import sys

from smolvla_policy.training import main

sys.exit(main(sys.argv[1:]))
