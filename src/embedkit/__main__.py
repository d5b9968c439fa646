"""`python -m embedkit` (also what torchrun runs)."""

import sys

from embedkit.cli.app import main

sys.exit(main())
