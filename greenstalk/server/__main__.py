"""``python -m greenstalk.server``: run greenstalkd (see :mod:`greenstalk.server.cli`)."""

import sys

from .cli import main

sys.exit(main())
