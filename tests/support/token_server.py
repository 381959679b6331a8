"""A stand-in OAuth2 token endpoint (client-credentials grant) on loopback, for tests.

``POST /token`` with ``grant_type=client_credentials`` and the client's id and secret (form fields or HTTP
Basic) answers ``{"access_token", "token_type": "Bearer", "expires_in"}``. Every token is new and distinctive
(``tok-<random>-<n>``), so tests can look for it in logs. Knobs: ``expires_in``, ``status`` (force an error
answer), ``delay_s`` (slow endpoint, to show single-flight).
"""

from __future__ import annotations

import base64
import secrets
import time
import urllib.parse

from support.http_stub import HttpStub, StubReply, StubRequest

__all__ = ["TokenServer"]


class TokenServer(HttpStub[dict[str, str]]):
    """Serves from construction; records the form of every request as it arrives (before ``delay_s``)."""

    methods = ("POST",)

    def __init__(self, client_id: str = "appevents-client", client_secret: str | None = None) -> None:
        super().__init__()
        self.client_id = client_id
        self.client_secret = client_secret or f"secret-{secrets.token_hex(8)}"
        self.expires_in = 3600
        self.status: int | None = None
        self.delay_s = 0.0
        self.issued: list[str] = []
        self.url = f"{self.base_url}/token"
        self._prefix = f"tok-{secrets.token_hex(6)}"
        self.start()

    @property
    def hits(self) -> int:
        """Requests received so far."""
        return len(self.records)

    @property
    def last_form(self) -> dict[str, str]:
        """The form of the latest request ({} before the first)."""
        records = self.records
        return records[-1] if records else {}

    def answer(self, request: StubRequest) -> StubReply:
        form = request.form()
        self.record(form)
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.status is not None:
            return StubReply.json(self.status, {"error": "forced"})
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        authorization = request.header("Authorization")
        if authorization and authorization.startswith("Basic "):
            pair = base64.b64decode(authorization[6:]).decode()
            client_id, _, client_secret = (urllib.parse.unquote(p) for p in pair.partition(":"))
        if form.get("grant_type") != "client_credentials":
            return StubReply.json(400, {"error": "unsupported_grant_type"})
        if client_id != self.client_id or client_secret != self.client_secret:
            return StubReply.json(401, {"error": "invalid_client"})
        with self._lock:
            token = f"{self._prefix}-{len(self.issued) + 1}"
            self.issued.append(token)
        return StubReply.json(200, {"access_token": token, "token_type": "Bearer", "expires_in": self.expires_in})

    def env(self) -> dict[str, str]:
        return {
            "APPEVENTS_AUTH_TOKEN_URL": self.url,
            "APPEVENTS_AUTH_CLIENT_ID": self.client_id,
            "APPEVENTS_AUTH_CLIENT_SECRET": self.client_secret,
        }
