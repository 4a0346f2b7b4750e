"""Market-data ingest: exchange clients, the HTTP layer, normalisation, the message schema, sources and the producer."""
