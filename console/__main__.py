"""`python -m console [--workspace DIR] [SEARCH]`: the console without the `ideaforge` command."""

import sys

from console.app import main

sys.exit(main())
