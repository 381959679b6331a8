"""A stand-in OAuth2 token endpoint (client-credentials grant) on loopback, for tests.

``POST /token`` with ``grant_type=client_credentials`` and the client's id and secret (form fields or HTTP
Basic) answers ``{"access_token", "token_type": "Bearer", "expires_in"}``. Every token is new and distinctive
(``tok-<random>-<n>``), so tests can look for it in logs. Knobs: ``expires_in``, ``status`` (force an error
answer), ``delay_s`` (slow endpoint, to show single-flight).
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["TokenServer"]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64


class TokenServer:
    def __init__(self, client_id: str = "appevents-client", client_secret: str | None = None) -> None:
        self.client_id = client_id
        self.client_secret = client_secret or f"secret-{secrets.token_hex(8)}"
        self.expires_in = 3600
        self.status: int | None = None
        self.delay_s = 0.0
        self.hits = 0
        self.issued: list[str] = []
        self.last_form: dict[str, str] = {}
        self._lock = threading.Lock()
        self._prefix = f"tok-{secrets.token_hex(6)}"
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                status, body = server._answer(form, self.headers.get("Authorization"))
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._server = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/token"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def _answer(self, form: dict[str, str], authorization: str | None) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.hits += 1
            self.last_form = form
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.status is not None:
            return self.status, {"error": "forced"}
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        if authorization and authorization.startswith("Basic "):
            pair = base64.b64decode(authorization[6:]).decode()
            client_id, _, client_secret = (urllib.parse.unquote(p) for p in pair.partition(":"))
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}
        if client_id != self.client_id or client_secret != self.client_secret:
            return 401, {"error": "invalid_client"}
        with self._lock:
            token = f"{self._prefix}-{len(self.issued) + 1}"
            self.issued.append(token)
        return 200, {"access_token": token, "token_type": "Bearer", "expires_in": self.expires_in}

    def env(self) -> dict[str, str]:
        return {
            "APPEVENTS_AUTH_TOKEN_URL": self.url,
            "APPEVENTS_AUTH_CLIENT_ID": self.client_id,
            "APPEVENTS_AUTH_CLIENT_SECRET": self.client_secret,
        }

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
