"""``python -m growsearch`` is the ``growsearch`` command."""

import sys

from growsearch.cli import main

sys.exit(main())
