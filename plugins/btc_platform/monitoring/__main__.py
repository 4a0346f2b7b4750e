"""``python -m btc_platform.monitoring``: the monitor process (see ``service``)."""

from btc_platform.monitoring.service import main

raise SystemExit(main())
