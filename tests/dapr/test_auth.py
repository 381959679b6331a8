"""The Dapr exporter's OAuth2 client-credentials token provider against the stand-in token endpoint."""

from __future__ import annotations

import threading

import pytest
from pydantic import SecretStr

from appevents._errors import AppEventsError, ConfigurationError
from appevents_exporter_dapr import (
    AuthError,
    AuthSettings,
    ClientCredentialsTokenProvider,
    HeaderProvider,
    StaticHeaderProvider,
    header_provider_from_settings,
)
from support.token_server import TokenServer

pytestmark = pytest.mark.timeout(30)


def settings_for(server: TokenServer, **overrides: object) -> AuthSettings:
    values: dict[str, object] = {
        "token_url": server.url,
        "client_id": server.client_id,
        "client_secret": SecretStr(server.client_secret),
        **overrides,
    }
    return AuthSettings(**values)  # type: ignore[arg-type]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_concurrent_callers_share_one_token_request(token_server: TokenServer) -> None:
    token_server.delay_s = 0.3  # slow endpoint: every caller arrives while the first request is in flight
    provider = ClientCredentialsTokenProvider(settings_for(token_server))
    results: list[str] = []
    barrier = threading.Barrier(16)

    def call() -> None:
        barrier.wait()
        results.append(provider.headers()["Authorization"])

    threads = [threading.Thread(target=call) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert token_server.hits == 1
    assert results == [f"Bearer {token_server.issued[0]}"] * 16


def test_token_is_refreshed_skew_seconds_before_it_expires(token_server: TokenServer) -> None:
    token_server.expires_in = 300
    clock = FakeClock()
    provider = ClientCredentialsTokenProvider(settings_for(token_server, refresh_skew_s=30), clock=clock)

    first = provider.token()
    clock.now += 269
    assert provider.token() == first
    clock.now += 2  # 271 s: inside the 30 s skew window
    second = provider.token()

    assert second != first
    assert token_server.hits == 2
    assert provider.stats().token_requests == 2


def test_scope_and_form_credentials_are_sent(token_server: TokenServer) -> None:
    ClientCredentialsTokenProvider(settings_for(token_server, scope="events:write")).token()
    assert token_server.last_form["scope"] == "events:write"
    assert token_server.last_form["grant_type"] == "client_credentials"
    assert token_server.last_form["client_id"] == token_server.client_id


def test_http_basic_client_authentication_works(token_server: TokenServer) -> None:
    provider = ClientCredentialsTokenProvider(settings_for(token_server, client_auth_method="client_secret_basic"))
    assert provider.token() == token_server.issued[0]
    assert "client_secret" not in token_server.last_form


def test_rejected_credentials_raise_a_clear_error_naming_the_setting_not_the_secret(
    token_server: TokenServer,
) -> None:
    settings = settings_for(token_server, client_secret=SecretStr("wrong-secret-value"))
    provider = ClientCredentialsTokenProvider(settings)

    with pytest.raises(AuthError) as raised:
        provider.token()

    error = raised.value
    assert isinstance(error, AppEventsError)
    assert error.status == 401 and not error.transient
    assert "APPEVENTS_AUTH_CLIENT_SECRET" in str(error)
    assert "wrong-secret-value" not in str(error) and "wrong-secret-value" not in repr(error)
    assert provider.stats().auth_failures == 1


def test_failures_are_not_retried_within_the_cooldown(token_server: TokenServer) -> None:
    token_server.status = 500
    clock = FakeClock()
    provider = ClientCredentialsTokenProvider(settings_for(token_server, failure_cooldown_s=5), clock=clock)
    for _ in range(3):
        with pytest.raises(AuthError) as raised:
            provider.token()
        assert raised.value.transient
    assert token_server.hits == 1
    token_server.status = None
    clock.now += 6
    assert provider.token() == token_server.issued[0]


def test_unreachable_token_endpoint_is_a_transient_error() -> None:
    settings = AuthSettings(
        token_url="http://127.0.0.1:9/token", client_id="c", client_secret=SecretStr("s3cr3t"), request_timeout_s=1
    )
    with pytest.raises(AuthError) as raised:
        ClientCredentialsTokenProvider(settings).token()
    assert raised.value.transient
    assert "s3cr3t" not in str(raised.value)


def test_invalidate_forces_a_new_token(token_server: TokenServer) -> None:
    provider = ClientCredentialsTokenProvider(settings_for(token_server))
    first = provider.token()
    provider.invalidate()
    assert provider.token() != first
    assert token_server.hits == 2


def test_secret_stays_out_of_reprs(token_server: TokenServer) -> None:
    settings = settings_for(token_server)
    provider = ClientCredentialsTokenProvider(settings)
    token = provider.token()
    for text in (repr(settings), str(settings), repr(provider), str(provider)):
        assert token_server.client_secret not in text
        assert token not in text


def test_settings_are_read_from_the_environment(token_server: TokenServer, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in token_server.env().items():
        monkeypatch.setenv(name, value)
    provider = header_provider_from_settings()
    assert isinstance(provider, ClientCredentialsTokenProvider)
    assert provider.headers() == {"Authorization": f"Bearer {token_server.issued[0]}"}


def test_auth_is_off_without_settings_and_half_settings_are_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("APPEVENTS_AUTH_TOKEN_URL", "APPEVENTS_AUTH_CLIENT_ID", "APPEVENTS_AUTH_CLIENT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    assert header_provider_from_settings() is None
    monkeypatch.setenv("APPEVENTS_AUTH_CLIENT_SECRET", "half-configured-secret")
    with pytest.raises(ConfigurationError) as raised:
        header_provider_from_settings()
    assert "APPEVENTS_AUTH_TOKEN_URL" in str(raised.value)
    assert "half-configured-secret" not in str(raised.value)


def test_any_object_with_headers_is_a_header_provider() -> None:
    provider = StaticHeaderProvider({"Authorization": "ApiKey k-123"})
    assert isinstance(provider, HeaderProvider)
    assert provider.headers() == {"Authorization": "ApiKey k-123"}
    assert "k-123" not in repr(provider)
