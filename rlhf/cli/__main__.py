"""`python -m rlhf.cli`: the `effirl` command."""

import sys

from rlhf.cli.main import main

sys.exit(main())
