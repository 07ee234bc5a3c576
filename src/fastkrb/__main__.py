"""`python -m fastkrb` is the `fastkrb` command."""

import sys

from fastkrb.cli import main

sys.exit(main())
