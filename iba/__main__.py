"""``python -m iba``: the command line (see ``iba.cli``)."""

import sys

from iba.cli import main

sys.exit(main())
