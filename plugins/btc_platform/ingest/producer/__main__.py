"""``python -m btc_platform.ingest.producer``."""

import sys

from btc_platform.ingest.producer.cli import main

sys.exit(main())
