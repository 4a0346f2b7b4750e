"""Storage: the table layout, Delta reads/writes outside Spark, the storage root, Spark sessions, SQL, lineage, data quality."""
