"""``python -m pylog.cli``: the ``pylog`` console script."""

import sys

from . import main

sys.exit(main())
