"""`python -m floe_edge.cli`: the same as the `floe` console script."""

import sys

from . import main

sys.exit(main())
