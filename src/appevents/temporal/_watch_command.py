"""``appevents temporal watch``: the closed-run watcher on its own, for one watcher per namespace instead of one
per worker (then run the workers with ``APPEVENTS_TEMPORAL_WATCH=false``).

The connection comes from Temporal's own client configuration (``TEMPORAL_ADDRESS``, ``TEMPORAL_NAMESPACE``,
``TEMPORAL_API_KEY``, ``TEMPORAL_TLS_*``, the ``temporal.toml`` profile; see ``temporalio.envconfig``), the
events' destinations from ``APPEVENTS_*`` as for any application. SIGTERM/SIGINT stop it; what was published is
delivered before it exits.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from pydantic import ValidationError
from temporalio.client import Client
from temporalio.envconfig import ClientConfig

from appevents._event_store import EventStore
from appevents.temporal._settings import TemporalSettings, settings_problems
from appevents.temporal._watcher import ClosedRunWatcher

__all__ = ["run_watch_command"]

_logger = logging.getLogger("appevents.temporal")


async def _watch(
    address: str | None, namespace: str | None, task_queues: Sequence[str], settings: TemporalSettings
) -> int:
    target = address
    try:
        config = ClientConfig.load_client_connect_config()
        if address:
            config["target_host"] = address
        if namespace:
            config["namespace"] = namespace
        target = config.get("target_host")
        client = await Client.connect(**config)
    except Exception as exc:  # a bad profile, connection refused, bad TLS, bad credentials: one line, no traceback
        print(f"appevents temporal watch: cannot connect to Temporal at {target}: {exc}", file=sys.stderr)
        return 2
    watcher = ClosedRunWatcher(client, task_queues, settings)
    _logger.info(
        "appevents: watching namespace %r, task queues %s, every %s s",
        client.namespace,
        ", ".join(watcher.task_queues),
        settings.watch_interval_s,
    )
    watching = asyncio.create_task(watcher.run())
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, watching.cancel)
    try:
        await watching
    except asyncio.CancelledError:
        return 0
    return 1  # the server refused the query for good (the watcher logged why)


def run_watch_command(
    *, address: str | None, namespace: str | None, task_queues: Sequence[str], interval_s: float | None
) -> int:
    """Run the watcher until SIGTERM/SIGINT; 0 when stopped so, 1 when the server refused the query for good, 2 for
    bad settings or when it could not connect."""
    try:
        settings = TemporalSettings() if interval_s is None else TemporalSettings(watch_interval_s=interval_s)
    except ValidationError as exc:
        print(f"appevents temporal watch: bad APPEVENTS_TEMPORAL_* settings: {settings_problems(exc)}", file=sys.stderr)
        return 2
    EventStore.pipeline()  # the destinations, from APPEVENTS_*
    try:
        return asyncio.run(_watch(address, namespace, task_queues, settings))
    finally:
        EventStore.flush_sync()
        EventStore.shutdown()
