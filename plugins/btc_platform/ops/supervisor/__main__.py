"""``python -m btc_platform.ops.supervisor``: see :mod:`btc_platform.ops.supervisor.cli`."""

import sys

from btc_platform.ops.supervisor.cli import main

sys.exit(main())
