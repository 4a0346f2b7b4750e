"""``python -m models`` is ``python -m models.cli``."""

import sys

from models.cli import main

sys.exit(main())
