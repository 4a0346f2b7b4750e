"""Operations: local services, supervision, processes, JVM artifacts, Airflow environment and DAG helpers."""
