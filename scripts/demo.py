"""`make demo`: the whole pipeline in simulation (see smolvla_bringup.demo, or `make demo ARGS=--help`)."""

import sys

from smolvla_bringup.demo import exit_now_if_inferring, main

sys.exit(exit_now_if_inferring(main(sys.argv[1:])))
