"""LSTM 24-hour BTC forecast: features, network, honest evaluation, intervals, registry, pipeline.

Entry points: ``python -m models.cli train|predict|evaluate`` and the functions in
``models.pipeline`` that the ``btc_retrain`` Airflow DAG calls. TensorFlow/Keras is imported
lazily inside functions, so importing this package (or running ``--help``) stays fast.
"""

__version__ = "0.1.0"
