"""`python -m shared`: the rotator's command line."""

import sys

from shared.cli import main

sys.exit(main())
