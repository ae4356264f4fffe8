"""``python -m smolvla_policy.model.generate tiny|real-size OUT_DIR [options]``: the console script."""

from .cli import main

raise SystemExit(main())
