"""`python -m councils_local.cli`: the same as the `councils` command."""

import sys

from . import main

sys.exit(main())
