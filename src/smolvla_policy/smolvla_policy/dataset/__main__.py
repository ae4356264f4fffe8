"""``python -m smolvla_policy.dataset BAG... --out DIR [options]``: the ``smolvla-export-dataset`` command."""

import sys

from smolvla_policy.dataset.cli import main

sys.exit(main())
