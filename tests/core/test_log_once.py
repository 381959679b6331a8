"""Failures are counted and logged once, not per event: LogOnce, and its "once per exception type" form."""

from __future__ import annotations

import logging

import pytest

from appevents.exporting import LogOnce

pytestmark = pytest.mark.timeout(30)


def test_each_exception_type_is_logged_once_and_every_occurrence_counted(caplog: pytest.LogCaptureFixture) -> None:
    log_once = LogOnce(logging.getLogger("appevents.test"))
    with caplog.at_level(logging.WARNING, logger="appevents.test"):
        logged = [log_once.failure("send", ValueError(f"bad {n}"), "sending", "it is skipped") for n in range(5)]
        logged.append(log_once.failure("send", KeyError("k"), "sending", "it is skipped"))
        logged.append(log_once.failure("send", OSError("disk"), "sending", "retried", level=logging.WARNING))
    assert logged == [True, False, False, False, False, True, True]
    assert [r.getMessage() for r in caplog.records] == [
        "appevents: sending failed (ValueError: bad 0); it is skipped (further failures of this kind are counted, "
        "not logged)",
        "appevents: sending failed (KeyError: 'k'); it is skipped (further failures of this kind are counted, "
        "not logged)",
        "appevents: sending failed (OSError: disk); retried (further failures of this kind are counted, not logged)",
    ]
    assert [r.levelno for r in caplog.records] == [logging.ERROR, logging.ERROR, logging.WARNING]
    assert (log_once.count("send:ValueError"), log_once.count("send:KeyError")) == (5, 1)


def test_reset_re_arms_a_cause(caplog: pytest.LogCaptureFixture) -> None:
    log_once = LogOnce(logging.getLogger("appevents.test"))
    with caplog.at_level(logging.INFO, logger="appevents.test"):
        assert log_once("down", logging.WARNING, "down %s", "x") is True
        assert log_once("down", logging.WARNING, "down %s", "x") is False
        log_once.reset("down")
        assert log_once("down", logging.WARNING, "down %s", "y") is True
    assert [r.getMessage() for r in caplog.records] == ["down x", "down y"]
