"""``python -m fnjob`` is the ``fnjob`` command."""

import sys

from fnjob.cli import main

sys.exit(main())
