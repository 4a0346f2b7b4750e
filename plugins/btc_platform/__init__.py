"""Shared library of the BTC market-data platform (settings, message schema, clients, producer,
storage paths, supervision and data-quality checks). Imported by the DAGs, the Spark jobs, the
models and the tests; kept out of Airflow's plugin scan by ``plugins/.airflowignore``."""
