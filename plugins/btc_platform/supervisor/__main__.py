"""``python -m btc_platform.supervisor``: see :mod:`btc_platform.supervisor.cli`."""

import sys

from btc_platform.supervisor.cli import main

sys.exit(main())
