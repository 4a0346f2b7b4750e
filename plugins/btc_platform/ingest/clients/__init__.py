"""Exchange REST clients (transport only: they return the exchanges' raw JSON payloads;
``btc_platform.ingest.normalize`` turns payloads into messages)."""
