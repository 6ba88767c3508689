"""``python -m greenstalk``: the ``greenstalk`` command (see :mod:`greenstalk.cli`)."""

import sys

from .cli import main

sys.exit(main())
