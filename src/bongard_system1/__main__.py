"""``python -m bongard_system1`` is the ``system1`` command."""

import sys

from .cli import main

sys.exit(main())
