"""What ``appevents doctor`` checks for the Segment exporter (:meth:`SegmentExporter.diagnose`).

* ``segment write key`` — set (shown as ``****``, never in any form);
* ``segment host`` — an HTTP ``GET`` of the host's root within ``timeout_s``: any HTTP answer means reachable. No
  event is sent and no write key travels (Segment has no endpoint that checks a key without taking a message).
"""

from __future__ import annotations

import time
import urllib.error
import urllib.parse
import urllib.request

from appevents.exporting import Check, safe_url
from appevents_exporter_segment._settings import DEFAULT_HOST, SegmentExporterSettings

__all__ = ["diagnose_segment"]

MASK = "****"


def diagnose_segment(settings: SegmentExporterSettings, timeout_s: float) -> list[Check]:
    """The Segment exporter's checks, each bounded by ``timeout_s``."""
    key_set = settings.write_key is not None and bool(settings.write_key.get_secret_value())
    write_key = Check(
        "segment write key",
        key_set,
        f"APPEVENTS_SEGMENT_WRITE_KEY={MASK}" if key_set else "APPEVENTS_SEGMENT_WRITE_KEY is not set",
        "set APPEVENTS_SEGMENT_WRITE_KEY to the source's write key",
    )
    return [write_key, _check_host(settings.host, timeout_s)]


def _check_host(host: str, timeout_s: float) -> Check:
    name = "segment host"
    shown = safe_url(host)
    setting = "APPEVENTS_SEGMENT_HOST" + ("" if host != DEFAULT_HOST else " unset: the default")
    fix = (
        f"check the network path to {shown} (proxy, firewall, DNS), or set APPEVENTS_SEGMENT_HOST to the regional "
        "endpoint (e.g. https://events.eu1.segmentapis.com)"
    )
    request = urllib.request.Request(f"{host}/", headers={"User-Agent": "appevents-doctor"}, method="GET")
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            status = response.status
    except urllib.error.HTTPError as exc:  # any HTTP answer: the host is there
        status = exc.code
        exc.close()
    except (OSError, ValueError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return Check(
            name, False, f"{shown} unreachable ({type(reason).__name__}, within {timeout_s:g} s; {setting})", fix
        )
    took = (time.monotonic() - started) * 1000
    return Check(name, True, f"{shown} answered HTTP {status} in {took:.0f} ms ({setting}; no event sent)")
