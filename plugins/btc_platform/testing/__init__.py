"""Test support shared by the tests (tests/), the benchmarks and the fault-injection suite (bench/).

Not used by the platform itself; importable wherever the project is installed, so neither tests
nor benchmarks need a path edit:

* :mod:`.exchange_server` - a local stand-in for the Binance and CoinGecko REST servers, serving
  their exact response formats (``fixtures/*.json``), scriptable with errors and transport faults;
* :mod:`.stream_testdata`, :mod:`.models_testdata`, :mod:`.dashboard_testdata` - builders of seed
  data (wire messages and Kafka rows, hourly series, the tables and records the dashboard reads);
* :mod:`.polling` - waiting for a condition, bounded, and free local ports;
* :mod:`.faults` - killing the Airflow scheduler and waiting for it to come back.
"""
