"""The ``receiver`` fixture: the HTTP endpoint behind the Dapr stand-in's ``bindings.http`` component, for the
Dapr and bridge tests (a pytest plugin, see ``pytest_plugins`` in ``tests/conftest.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.dapr_sidecar import HttpReceiver

__all__ = ["receiver"]


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    """A started :class:`HttpReceiver` on a free loopback port; closed after the test."""
    server = HttpReceiver()
    yield server
    server.close()
