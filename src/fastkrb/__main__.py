"""`python -m fastkrb` is the `fastkrb` command."""

import sys

from fastkrb.tools.cli import main

sys.exit(main())
