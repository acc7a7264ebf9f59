"""`python -m sim.cli ARGS`: the batchsim command line."""

import sys

from sim.cli import main

sys.exit(main())
