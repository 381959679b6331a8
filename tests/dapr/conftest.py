"""Fixtures for the Dapr exporter tests: the sidecar stand-in, the HTTP endpoint behind ``bindings.http``, the
OAuth2 token endpoint, and a helper that configures the real pipeline with ``APPEVENTS_EXPORTERS=dapr``.

The Dapr SDK reads ``DAPR_*`` from the environment at each access (``dapr.conf.Settings``), and the exporter
creates its client lazily, so setting the variables with ``monkeypatch`` before ``configure()`` is enough.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from appevents_exporter_dapr import DaprExporter
from support.dapr_sidecar import DaprSidecar
from support.pipelines import ConfigurePipeline, exporter_in
from support.token_server import TokenServer

#: Short backoffs so that tests about retries and re-probing take a second, not a minute.
FAST_RETRIES = {
    "APPEVENTS_DAPR_RETRY_INITIAL_BACKOFF_S": "0.05",
    "APPEVENTS_DAPR_RETRY_MAX_BACKOFF_S": "0.5",
    "APPEVENTS_DAPR_RETRY_MAX_ELAPSED_S": "30",
    "APPEVENTS_DAPR_PROBE_INITIAL_BACKOFF_S": "0.1",
    "APPEVENTS_DAPR_PROBE_MAX_BACKOFF_S": "0.4",
    "APPEVENTS_DAPR_HEALTH_PROBE_TIMEOUT_S": "0.5",
    "APPEVENTS_SCHEDULE_DELAY_MS": "20",
}


@pytest.fixture
def token_server() -> Iterator[TokenServer]:
    server = TokenServer()
    yield server
    server.close()


@pytest.fixture
def sidecar_unstarted() -> Iterator[DaprSidecar]:
    """A sidecar with its ports chosen but not listening yet; the test starts it."""
    sidecar = DaprSidecar()
    yield sidecar
    sidecar.stop()


@pytest.fixture
def sidecar(sidecar_unstarted: DaprSidecar) -> DaprSidecar:
    return sidecar_unstarted.start()


@pytest.fixture
def dapr_env(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Set the environment an app next to ``sidecar`` would have (plus auth when ``tokens`` is given)."""

    def apply(sidecar: DaprSidecar, tokens: TokenServer | None = None, **extra: str) -> None:
        for name in ("DAPR_API_TOKEN", "APPEVENTS_AUTH_TOKEN_URL", "APPEVENTS_AUTH_CLIENT_ID"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv("APPEVENTS_AUTH_CLIENT_SECRET", raising=False)
        for name, value in {**sidecar.env(), **FAST_RETRIES, **(tokens.env() if tokens else {}), **extra}.items():
            monkeypatch.setenv(name, value)

    return apply


@pytest.fixture
def pipeline(configured_pipeline: ConfigurePipeline) -> Callable[[], DaprExporter]:
    """Configure the real pipeline with the ``dapr`` exporter from the environment; returns the exporter."""
    return lambda: exporter_in(configured_pipeline("dapr"), "dapr", DaprExporter)
