"""Test-session setup shared by every package.

Each pytest session gets its own ROS domain id and stays on localhost discovery, so that concurrent
test runs on one machine (or a developer's running demo) never see each other's topics.
"""

import os
import random

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
if "SMOLVLA_TEST_KEEP_DOMAIN" not in os.environ:
    os.environ["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(1, 100))
