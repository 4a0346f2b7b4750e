"""pytest.ini's warning filters: a deprecation attributed to our code (btc_platform, spark_jobs,
models, dags, tests) fails the test; one attributed to a third-party package does not."""

from __future__ import annotations

import warnings

import pytest

OUR_MODULES = ("btc_platform.lakehouse.storage", "spark_jobs.stream_job", "models.features", "dags", "tests.helpers_kafka")
CATEGORIES = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)


def _warn_from(module: str, category: type[Warning]) -> None:
    """A warning attributed to ``module``, as a ``warnings.warn`` (stacklevel) there would be."""
    warnings.warn_explicit("old API", category, filename=f"{module}.py", lineno=1, module=module, registry={})


@pytest.mark.parametrize("category", CATEGORIES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("module", OUR_MODULES)
def test_a_deprecation_in_our_code_is_an_error(module, category):
    with pytest.raises(category, match="old API"):
        _warn_from(module, category)


def test_a_third_party_deprecation_called_from_our_code_is_an_error():
    """pandas attributes its deprecations to the caller: a deprecated pandas API in our code fails."""
    import pandas as pd

    hours = pd.Series(pd.to_datetime(["2024-01-01T05:00"]))
    with pytest.raises(DeprecationWarning, match="dayofweek"):
        hours.dt.dayofweek  # noqa: B018  (the access itself warns)


@pytest.mark.parametrize("module", ["pyspark.sql.session", "airflow.models", "modelscope.hub", "testsuite"])
def test_a_deprecation_in_third_party_code_is_not_an_error(module):
    with warnings.catch_warnings(record=True) as caught:
        _warn_from(module, DeprecationWarning)
    assert [str(w.message) for w in caught] == ["old API"]
