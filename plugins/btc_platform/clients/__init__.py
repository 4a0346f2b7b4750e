"""Exchange REST clients (transport only: they return the exchanges' raw JSON payloads;
``btc_platform.normalize`` turns payloads into messages)."""
