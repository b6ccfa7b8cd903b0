"""``python -m aioconnpool``: the command (see :mod:`aioconnpool.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
