"""Settings of ``make compose-up`` / ``compose-down`` / ``compose-test`` on the host
(``btc_platform.ops.compose``, docs/compose.md; part of :class:`btc_platform.settings.Settings`).
They decide how the stack is built and which one runs; the services inside it get the other
groups' settings through docker-compose.yml."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ComposeSettings(BaseModel):
    """The compose stack's build and shape on this machine."""

    # ---- The compose stack (make compose-up / compose-test; docs/compose.md) -------------------
    compose_stack: Literal["full", "ci"] = Field(
        default="full",
        description="Which compose stack make compose-up/compose-test runs: full (every service of "
        "docker-compose.yml: three brokers, two Spark workers) or ci (derived from it: one broker with "
        "replication 1, one worker, the batch jobs in local mode; what .ci/run tests). `make ... STACK=ci` sets it.",
    )
    compose_build: Literal["prebuilt", "network"] = Field(
        default="prebuilt",
        description="Where the project image's packages come from: prebuilt (the host's .venv, jars and JS of "
        "`make venv jars js`, served to the build on 127.0.0.1; a missing piece from its registry) or network "
        "(pip's index, Maven Central, npm only).",
    )
    compose_base: Literal["auto", "stock", "local"] = Field(
        default="auto",
        description="Base image of the project image: stock (python:3.11-slim-bookworm, present or pulled), local "
        "(Debian bookworm from debootstrap, imported as btc-base:bookworm; no registry needed) or auto (stock "
        "when it can be pulled, else local).",
    )
    compose_prebuilt_port: int = Field(
        default=18731,
        gt=0,
        lt=65536,
        description="Port on 127.0.0.1 that serves the host's packages to the image build (BTC_COMPOSE_BUILD=prebuilt); "
        "part of the layer cache's key, so keep it fixed.",
    )
    compose_ca_certs: str = Field(
        default="",
        description="Folder of extra CA certificates (*.crt, PEM) the image build trusts (a TLS-intercepting "
        "proxy's); empty means /usr/local/share/ca-certificates.",
    )
    compose_backfill_dir: str = Field(
        default="",
        description="Host folder mounted read-only at /opt/btc/backfill in the compose stack, for btc_backfill's "
        "candle files; empty means <data_dir>/compose/backfill.",
    )
