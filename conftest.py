"""Test-session setup shared by every package.

Every test gets its own ROS domain id (and discovery stays on localhost), so nodes of one test never
see the topics of another, of a concurrent test run on the same machine, or of a robot on the network.
The id is read by rclpy when a test initialises its context, and inherited by subprocesses it starts.
"""

import itertools
import os
import random
import signal

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

# A test session started in the background by a script (`make test &`, nohup) inherits SIGINT ignored and
# hands that down to every process it starts; `ros2 launch` keeps an ignored SIGINT ignored, so the Ctrl-C
# of the launch tests would do nothing. Tests run as from a terminal: SIGINT handled.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

#: domain ids no other test uses, for a test that must see discovery in a domain nothing ever ran in (a
#: participant leaked by an earlier test in a reused domain can take the localhost discovery ports)
RESERVED_DOMAIN_IDS = (99, 100)
_DOMAIN_IDS = itertools.cycle(random.SystemRandom().sample(range(1, 99), 98))
if "SMOLVLA_TEST_KEEP_DOMAIN" not in os.environ:
    # for module/session fixtures that start nodes outside a test; each test then gets its own id
    os.environ["ROS_DOMAIN_ID"] = str(next(_DOMAIN_IDS))


@pytest.fixture(autouse=True)
def isolated_ros_domain(monkeypatch):
    if "SMOLVLA_TEST_KEEP_DOMAIN" not in os.environ:
        monkeypatch.setenv("ROS_DOMAIN_ID", str(next(_DOMAIN_IDS)))
