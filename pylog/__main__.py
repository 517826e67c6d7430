"""``python -m pylog``: the ``pylog`` console script."""

import sys

from .cli import main

sys.exit(main())
