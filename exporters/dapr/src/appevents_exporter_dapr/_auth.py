"""Authentication headers for the Dapr binding calls (``APPEVENTS_AUTH_*``).

The Atlan application-sdk ``EventStore`` sends ``Authorization: Bearer <token>`` with every binding call, the token
coming from an OAuth2 client-credentials grant; this exporter keeps that wire contract. Here the token comes from
:class:`ClientCredentialsTokenProvider`:

* one cached token shared by every export, refreshed ``refresh_skew_s`` before ``expires_in`` runs out;
* single-flight: concurrent callers wait for the one token request in progress instead of each sending one;
* bounded by ``request_timeout_s``; a 401/400/403 from the token endpoint is an :class:`AuthError` naming the
  setting to fix, and counted;
* the client secret is a :class:`pydantic.SecretStr`; neither it nor the token ever appears in a log line,
  a ``repr`` or an exception message.

Any object with a ``headers() -> Mapping[str, str]`` method is a :class:`HeaderProvider`, so headers can come
from elsewhere (a Dapr secret store, a sidecar, a static key): pass it to the exporter instead of the OAuth2
provider. A provider that also has ``invalidate()`` (a :class:`RefreshableHeaderProvider`, as the OAuth2 one is)
is told when the destination rejected its credentials (HTTP 401), so the next ``headers()`` fetches new ones and
the events are retried; without it a 401 is final.
Providers run on exporter threads, never on the caller's path; ``headers()`` may block for one token request.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from appevents import AppEventsError, ConfigurationError
from appevents.exporting import safe_url

__all__ = [
    "AuthError",
    "AuthSettings",
    "ClientCredentialsTokenProvider",
    "HeaderProvider",
    "RefreshableHeaderProvider",
    "StaticHeaderProvider",
    "TokenProviderStats",
    "header_provider_from_settings",
]


class AuthError(AppEventsError):
    """No authentication headers could be had. ``transient`` says whether trying again later may succeed.

    The message names the endpoint, the HTTP status and the settings to check; it never contains the client
    secret or a token. ``problem`` is what happened, without the advice (what the exporter will do, what to check).
    """

    def __init__(self, problem: str, *, advice: str = "", status: int | None = None, transient: bool) -> None:
        super().__init__(f"{problem}; {advice}" if advice else problem)
        self.problem = problem
        self.status = status
        self.transient = transient


@runtime_checkable
class HeaderProvider(Protocol):
    """The headers (e.g. ``Authorization``) an exporter adds to each call; may raise :class:`AuthError`.

    Called from exporter threads, possibly several at once; it may block (e.g. for one token request).
    """

    def headers(self) -> Mapping[str, str]: ...


@runtime_checkable
class RefreshableHeaderProvider(HeaderProvider, Protocol):
    """A :class:`HeaderProvider` whose credentials can be dropped when the destination rejects them.

    ``invalidate()`` is called (from exporter threads) after an HTTP 401; the next ``headers()`` must fetch fresh
    credentials rather than return the rejected ones. Optional: exporters check for it with ``isinstance``.
    """

    def invalidate(self) -> None: ...


class StaticHeaderProvider:
    """Fixed headers, e.g. an API key read from a secret store at start-up. Values stay out of ``repr``."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        self._headers = dict(headers)

    def headers(self) -> Mapping[str, str]:
        return self._headers

    def __repr__(self) -> str:
        return f"StaticHeaderProvider(keys={sorted(self._headers)!r})"


class AuthSettings(BaseSettings):
    """OAuth2 client credentials (``APPEVENTS_AUTH_*``); auth is on when URL, id and secret are all set."""

    model_config = SettingsConfigDict(env_prefix="APPEVENTS_AUTH_", extra="ignore")

    token_url: str | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    scope: str | None = None
    #: How the credentials travel: form fields (``client_secret_post``) or HTTP Basic
    #: (``client_secret_basic``).
    client_auth_method: Literal["client_secret_post", "client_secret_basic"] = "client_secret_post"
    #: Refresh this many seconds before the token expires (clock skew, time in flight).
    refresh_skew_s: float = Field(default=30.0, ge=0)
    #: Timeout of one token request.
    request_timeout_s: float = Field(default=10.0, gt=0)
    #: Lifetime assumed when the endpoint sends no ``expires_in``.
    default_expires_in_s: float = Field(default=300.0, gt=0)
    #: After a failed token request, callers within this many seconds get the same error, no new request.
    failure_cooldown_s: float = Field(default=1.0, ge=0)

    @property
    def enabled(self) -> bool:
        return bool(self.token_url and self.client_id and self.client_secret)

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        # The token URL may carry credentials (user info, a query string).
        return [(k, safe_url(v) if k == "token_url" and v else v) for k, v in super().__repr_args__()]


@dataclass(frozen=True)
class TokenProviderStats:
    """Counters of a :class:`ClientCredentialsTokenProvider`."""

    token_requests: int
    token_failures: int
    auth_failures: int
    """Rejections of the client credentials (HTTP 400/401/403): fix the settings, retrying will not help."""


class ClientCredentialsTokenProvider:
    """An OAuth2 client-credentials token, cached and refreshed ahead of expiry; a :class:`HeaderProvider`."""

    def __init__(
        self,
        settings: AuthSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not settings.enabled:
            raise AuthError(
                "OAuth2 client credentials are incomplete: set APPEVENTS_AUTH_TOKEN_URL, "
                "APPEVENTS_AUTH_CLIENT_ID and APPEVENTS_AUTH_CLIENT_SECRET",
                transient=False,
            )
        self._settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._refresh_at = 0.0
        self._failure: AuthError | None = None
        self._failure_until = 0.0
        self._requests = 0
        self._failures = 0
        self._auth_failures = 0

    def __repr__(self) -> str:
        return (
            f"ClientCredentialsTokenProvider(token_url={safe_url(self._settings.token_url or '')!r}, "
            f"client_id={self._settings.client_id!r})"
        )

    # -- HeaderProvider --------------------------------------------------------------------------------------
    def headers(self) -> Mapping[str, str]:
        return {"Authorization": f"Bearer {self.token()}"}

    # -- token -----------------------------------------------------------------------------------------------
    def token(self) -> str:
        """The current access token, requested or refreshed when needed. Raises :class:`AuthError`."""
        token = self._token
        if token is not None and self._clock() < self._refresh_at:
            return token
        with self._lock:  # single flight: whoever holds the lock fetches, the others reuse its result
            now = self._clock()
            if self._token is not None and now < self._refresh_at:
                return self._token
            if self._failure is not None and now < self._failure_until:
                raise self._failure
            try:
                token, expires_in = self._request_token()
            except AuthError as exc:
                self._failures += 1
                if not exc.transient:
                    self._auth_failures += 1
                self._failure = exc
                self._failure_until = self._clock() + self._settings.failure_cooldown_s
                raise
            self._failure = None
            lifetime = max(expires_in - self._settings.refresh_skew_s, expires_in / 2)
            self._token = token
            self._refresh_at = self._clock() + lifetime
            return token

    def invalidate(self) -> None:
        """Forget the cached token (the destination rejected it: revoked or rotated); the next call requests a new
        one."""
        with self._lock:
            self._token = None
            self._refresh_at = 0.0

    def stats(self) -> TokenProviderStats:
        return TokenProviderStats(
            token_requests=self._requests, token_failures=self._failures, auth_failures=self._auth_failures
        )

    def _request_token(self) -> tuple[str, float]:
        settings = self._settings
        assert settings.token_url and settings.client_id and settings.client_secret  # checked in __init__
        url = safe_url(settings.token_url)
        form = {"grant_type": "client_credentials"}
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
        secret = settings.client_secret.get_secret_value()
        if settings.client_auth_method == "client_secret_basic":
            pair = f"{urllib.parse.quote(settings.client_id)}:{urllib.parse.quote(secret)}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            form["client_id"] = settings.client_id
            form["client_secret"] = secret
        if settings.scope:
            form["scope"] = settings.scope
        request = urllib.request.Request(
            settings.token_url, data=urllib.parse.urlencode(form).encode(), headers=headers, method="POST"
        )
        self._requests += 1
        try:
            with urllib.request.urlopen(request, timeout=settings.request_timeout_s) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            status = exc.code
            exc.close()
            if status in (400, 401, 403):
                raise AuthError(
                    f"token endpoint {url} rejected the client credentials of client_id "
                    f"{settings.client_id!r} (HTTP {status})",
                    advice="check APPEVENTS_AUTH_CLIENT_ID, APPEVENTS_AUTH_CLIENT_SECRET and APPEVENTS_AUTH_SCOPE",
                    status=status,
                    transient=False,
                ) from None
            raise AuthError(
                f"token endpoint {url} answered HTTP {status}", advice="will retry", status=status, transient=True
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise AuthError(
                f"token endpoint {url} unreachable ({type(reason).__name__})",
                advice=f"will retry (timeout APPEVENTS_AUTH_REQUEST_TIMEOUT_S={settings.request_timeout_s})",
                transient=True,
            ) from None
        try:
            document = json.loads(payload)
            token = document["access_token"]
            if not isinstance(token, str) or not token:
                raise ValueError("empty access_token")
            expires_in = float(document.get("expires_in") or settings.default_expires_in_s)
        except (ValueError, KeyError, TypeError):
            raise AuthError(
                f"token endpoint {url} answered without a usable access_token/expires_in", transient=True
            ) from None
        return token, expires_in


def header_provider_from_settings(settings: AuthSettings | None = None) -> HeaderProvider | None:
    """The OAuth2 provider when ``APPEVENTS_AUTH_*`` configure one, None when auth is off.

    Raises :class:`~appevents.ConfigurationError` when the settings are only partly given: sending events
    without the ``Authorization`` header the user evidently meant to send would be worse than not starting.
    """
    settings = settings if settings is not None else AuthSettings()
    if settings.enabled:
        return ClientCredentialsTokenProvider(settings)
    given = {
        "APPEVENTS_AUTH_TOKEN_URL": settings.token_url,
        "APPEVENTS_AUTH_CLIENT_ID": settings.client_id,
        "APPEVENTS_AUTH_CLIENT_SECRET": settings.client_secret,
    }
    if any(given.values()):
        missing = ", ".join(name for name, value in given.items() if not value)
        raise ConfigurationError(f"OAuth2 client credentials are incomplete: also set {missing} (or unset the others)")
    return None
