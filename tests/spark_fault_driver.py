"""Driver of tests/test_cluster_faults.py's worker-kill test, run as its own process (a Spark
driver on the standalone master, like the platform's stream job): a checkpointed streaming query
from the ``rate`` source into a Parquet file sink, its progress written to a JSON file after
every batch, until a stop file appears. Exits 0 after a clean stop, 1 if the query failed.

    python tests/spark_fault_driver.py --out DIR --status FILE --stop FILE
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

log = logging.getLogger("spark_fault_driver")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--status", required=True)
    parser.add_argument("--stop", required=True)
    parser.add_argument("--rows-per-second", type=int, default=400)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from btc_platform.lakehouse.spark_session import build_session
    from btc_platform.settings import get_settings

    settings = get_settings()
    spark = build_session("btc-fault-test", settings, master=settings.spark_master)
    out = Path(args.out)
    query = (
        spark.readStream.format("rate")
        .option("rowsPerSecond", args.rows_per_second)
        .option("numPartitions", 4)
        .load()
        .writeStream.format("parquet")
        .option("path", f"file://{out / 'data'}")
        .option("checkpointLocation", f"file://{out / 'checkpoint'}")
        .trigger(processingTime="1 second")
        .start()
    )
    status = Path(args.status)
    last = None
    while query.isActive and not Path(args.stop).exists():
        progress = query.lastProgress
        if progress and progress.get("batchId") != last:
            last = progress.get("batchId")
            record = {"app_id": spark.sparkContext.applicationId, "pid": os.getpid(), "batch_id": last,
                      "input_rows": progress.get("numInputRows"), "at": time.time()}  # fmt: skip
            tmp = status.with_suffix(".tmp")
            tmp.write_text(json.dumps(record))
            os.replace(tmp, status)
        time.sleep(0.2)
    failed = query.exception()
    query.stop()
    spark.stop()
    if failed is not None:
        log.error("query failed: %s", failed)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
