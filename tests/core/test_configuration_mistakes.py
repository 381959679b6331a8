"""Configuration mistakes are named: unknown APPEVENTS_* variables (doctor and once at configure), exporter names
with a did-you-mean and any case, an empty APPEVENTS_EXPORTERS read as OpenTelemetry reads its own, log lines
that name their source once."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import uuid

import pytest

from appevents import AppEventsSettings, ConfigurationError, configure
from appevents._doctor import format_checks, run_checks
from appevents._variables import unknown_variables

pytestmark = pytest.mark.timeout(60)


def _checks(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, object]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return {check.name: check for check in run_checks(1.0)}


def test_doctor_fails_on_an_unknown_variable_and_suggests_the_known_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPEVENTS_EXPORTER", "console")
    checks = run_checks(1.0)

    [variables] = [check for check in checks if check.name == "variables"]
    assert not variables.ok
    assert variables.required
    assert "APPEVENTS_EXPORTER (did you mean APPEVENTS_EXPORTERS?)" in variables.detail
    assert "required checks failed: variables" in format_checks(checks)


def test_exporter_settings_are_known_variables_and_their_typos_are_not() -> None:
    environ = {
        "APPEVENTS_SEGMENT_WRITE_KEY": "x",
        "APPEVENTS_DAPR_MODE": "binding",
        "APPEVENTS_AUTH_CLIENT_ID": "c",
        "APPEVENTS_BRIDGE_TOKEN": "t",
        "APPEVENTS_TEMPORAL_WATCH_INTERVAL_S": "5",
        "APPEVENTS_EVENT_STORE_NAME": "eventstore",
        "appevents_tenant_id": "acme",  # names ignore case, as pydantic-settings reads them
        "APPEVENTS_BRIDGE_ENDPOINT": "http://bridge:4318",  # read by the collector configs in collector/
        "APPEVENTS_SEGEMENT_WRITE_KEY": "x",
        "APPEVENTS_DAPR_MODEE": "binding",
        "APPEVENTS_NOTHING_LIKE_IT": "1",
    }
    unknown = {variable.name: variable.suggestion for variable in unknown_variables(environ)}
    assert unknown == {
        "APPEVENTS_SEGEMENT_WRITE_KEY": "APPEVENTS_SEGMENT_WRITE_KEY",
        "APPEVENTS_DAPR_MODEE": "APPEVENTS_DAPR_MODE",
        "APPEVENTS_NOTHING_LIKE_IT": None,
    }


def test_configure_warns_once_about_unknown_variables(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"APPEVENTS_TYPO_{uuid.uuid4().hex[:8].upper()}"  # a set of names of its own: warned once per process
    monkeypatch.setenv(name, "1")
    with caplog.at_level(logging.WARNING, logger="appevents"):
        configure(AppEventsSettings(exporters=["memory"]))
        configure(AppEventsSettings(exporters=["memory"]))
    said = [r.getMessage() for r in caplog.records if name in r.getMessage()]
    assert len(said) == 1
    assert "not read by appevents" in said[0]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("LOCAL, Memory", ["local", "memory"]), ("", ["local"]), ("  ", ["local"]), ("none", []), ("None", [])],
)
def test_exporter_names_ignore_case_and_empty_means_unset(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: list[str]
) -> None:
    monkeypatch.setenv("APPEVENTS_EXPORTERS", value)
    assert AppEventsSettings().exporters == expected


def test_a_misspelt_exporter_gets_a_did_you_mean_and_no_made_up_extra() -> None:
    with pytest.raises(ConfigurationError) as raised:
        configure(AppEventsSettings(exporters=["local", "dapper"]))
    message = str(raised.value)
    assert "did you mean 'dapr'?" in message
    assert "appevents[dapper]" not in message


def test_doctor_names_the_misspelt_exporter_with_a_did_you_mean(monkeypatch: pytest.MonkeyPatch) -> None:
    checks = _checks(monkeypatch, APPEVENTS_EXPORTERS="local,dapper")
    check = checks["exporter dapper"]
    assert not check.ok  # type: ignore[attr-defined]
    assert "did you mean 'dapr'?" in check.detail  # type: ignore[attr-defined]
    assert "appevents[dapper]" not in check.fix  # type: ignore[attr-defined]


def test_doctor_fails_when_no_exporter_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    check = _checks(monkeypatch, APPEVENTS_EXPORTERS="none")["exporters"]
    assert not check.ok  # type: ignore[attr-defined]
    assert check.required  # type: ignore[attr-defined]


def test_doctor_reads_an_empty_exporters_variable_as_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    checks = _checks(monkeypatch, APPEVENTS_EXPORTERS="")
    assert "APPEVENTS_EXPORTERS=local (default)" in checks["settings"].detail  # type: ignore[attr-defined]
    assert "exporter local" in checks


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=30, check=True
    )


def test_a_log_line_names_appevents_once_with_the_applications_logging_format() -> None:
    run = _run(
        """
        import logging
        logging.basicConfig(format="%(name)s|%(levelname)s|%(message)s")
        from appevents import AppEventsSettings, configure
        configure(AppEventsSettings(exporters=["memory"], local_path="unused.db"))
        logging.getLogger("appevents").warning("appevents: something to say")
        """
    )
    assert "appevents|WARNING|something to say" in run.stderr


def test_without_logging_configured_a_log_line_still_says_appevents() -> None:
    run = _run(
        """
        import logging
        import appevents
        logging.getLogger("appevents").warning("appevents: something to say")
        """
    )
    assert run.stderr.strip() == "appevents: something to say"
