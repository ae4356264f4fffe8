"""Record scripted-expert episodes of the simulated pick-up task as bags through the real graph.

    python scripts/record_expert.py --episodes 20 --seed 0 --output-dir recordings/expert
(see smolvla_bringup.demo.record_expert, or --help)
"""

import sys

from smolvla_bringup.demo.record_expert import main

sys.exit(main(sys.argv[1:]))
