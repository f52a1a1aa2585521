"""``python -m nth_dynamics``: see :mod:`nth_dynamics.cli`."""

import sys

from .cli import main

sys.exit(main())
