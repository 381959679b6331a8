"""``AppEventsPlugin``: one line on a Temporal client or worker turns on appevents.

    client = await Client.connect("localhost:7233", plugins=[AppEventsPlugin()])
    # or: Worker(client, task_queue="orders", workflows=[...], activities=[...], plugins=[AppEventsPlugin()])

On a worker (or on the client, which hands its plugins to every worker built from it) the plugin

- adds :class:`~appevents.temporal.EventInterceptor` exactly once, however many times it is registered (client and
  worker, twice on one client, or the interceptor listed by hand as well) — one interceptor, one event per step;
- passes ``appevents`` and ``opentelemetry`` through the workflow sandbox, so workflow code and the interceptor
  use the process's one event pipeline instead of re-importing it per workflow run;
- before the worker polls, configures the pipeline from the environment if nobody called
  :func:`appevents.configure` (outside the sandbox: settings, exporters and files are opened here, never on a
  workflow task) and publishes ``worker_start``;
- while the worker runs, watches its task queue for runs the server closed without worker code (terminated,
  timed out) and publishes their ``workflow_end`` (:mod:`appevents.temporal._watcher`;
  ``APPEVENTS_TEMPORAL_WATCH=false`` or ``settings=TemporalSettings(watch=False)`` turns it off);
- after the worker stops, waits for the pipeline to deliver what was published (``EventStore.flush``).

On a :class:`temporalio.worker.Replayer` it adds the same interceptor and passthrough; replaying publishes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import temporalio
import temporalio.client
import temporalio.worker
from pydantic import ValidationError
from temporalio.client import ClientConfig
from temporalio.plugin import SimplePlugin
from temporalio.worker import ReplayerConfig, Worker, WorkerConfig, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from appevents._event_store import EventStore
from appevents._version import __version__
from appevents.temporal._interceptor import EventInterceptor
from appevents.temporal._lifecycle import worker_start_event
from appevents.temporal._settings import TemporalSettings, settings_problems
from appevents.temporal._watcher import ClosedRunWatcher

__all__ = ["PASSTHROUGH_MODULES", "AppEventsPlugin"]

_logger = logging.getLogger("appevents.temporal")

#: Modules the workflow sandbox must share with the process (the plugin adds them to the sandbox restrictions).
PASSTHROUGH_MODULES: tuple[str, ...] = ("appevents", "opentelemetry")

# Workers whose run an AppEventsPlugin already wraps: a plugin registered on the client and on the worker is run
# twice around the same worker, and must announce and flush it once.
_running_workers: weakref.WeakSet[Worker] = weakref.WeakSet()


def _pass_appevents_through(runner: WorkflowRunner | None) -> WorkflowRunner:
    if runner is None:
        raise ValueError("AppEventsPlugin needs a workflow runner to configure; the worker has none")
    if isinstance(runner, SandboxedWorkflowRunner):
        return dataclasses.replace(
            runner, restrictions=runner.restrictions.with_passthrough_modules(*PASSTHROUGH_MODULES)
        )
    return runner


def _single_event_interceptor(interceptors: Sequence[Any], *, on_client: bool) -> list[Any]:
    """``interceptors`` with at most one :class:`EventInterceptor` (none if the client already carries one)."""
    kept: list[Any] = []
    seen = on_client
    for interceptor in interceptors:
        if isinstance(interceptor, EventInterceptor):
            if seen:
                continue
            seen = True
        kept.append(interceptor)
    return kept


class AppEventsPlugin(SimplePlugin):
    """Temporal plugin: lifecycle events, replay-safe workflow publishing, pipeline set up and drained per worker.

    ``announce_worker`` turns the ``worker_start`` event off; ``flush_timeout_s`` bounds the wait for delivery
    when a worker stops; ``settings`` (default: read from ``APPEVENTS_TEMPORAL_*`` when a worker starts) say
    whether and how often the closed-run watcher queries the server.
    """

    def __init__(
        self,
        *,
        announce_worker: bool = True,
        flush_timeout_s: float = 10.0,
        settings: TemporalSettings | None = None,
    ) -> None:
        self.interceptor = EventInterceptor()
        self._announce_worker = announce_worker
        self._flush_timeout_s = flush_timeout_s
        self._settings = settings
        #: The closed-run watcher of each running worker (for inspection and measurements).
        self.watchers: weakref.WeakKeyDictionary[Worker, ClosedRunWatcher] = weakref.WeakKeyDictionary()
        super().__init__(
            "appevents.AppEventsPlugin",
            interceptors=[self.interceptor],
            workflow_runner=_pass_appevents_through,
        )

    def configure_client(self, config: ClientConfig) -> ClientConfig:
        config = super().configure_client(config)
        # Two plugins on one client, or the interceptor listed by hand beside the plugin: keep the first one.
        config["interceptors"] = _single_event_interceptor(config.get("interceptors", []), on_client=False)
        return config

    def configure_worker(self, config: WorkerConfig) -> WorkerConfig:
        config = super().configure_worker(config)
        client = config.get("client")
        client_interceptors = client.config(active_config=True).get("interceptors", []) if client else []
        # temporalio prepends the client's worker-capable interceptors to these when it builds the worker.
        config["interceptors"] = _single_event_interceptor(
            config.get("interceptors", []),
            on_client=any(isinstance(i, EventInterceptor) for i in client_interceptors),
        )
        return config

    def configure_replayer(self, config: ReplayerConfig) -> ReplayerConfig:
        config = super().configure_replayer(config)
        config["interceptors"] = _single_event_interceptor(config.get("interceptors", []), on_client=False)
        return config

    async def run_worker(self, worker: Worker, next: Callable[[Worker], Awaitable[None]]) -> None:
        if worker in _running_workers:
            await super().run_worker(worker, next)
            return
        _running_workers.add(worker)
        watching: asyncio.Task[None] | None = None
        try:
            EventStore.pipeline()  # configure from the environment now, outside any workflow task
            if self._announce_worker:
                self._announce(worker)
            watching = self._start_watcher(worker)
            await super().run_worker(worker, next)
        finally:
            _running_workers.discard(worker)
            if watching is not None:
                watching.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watching
            await EventStore.flush(self._flush_timeout_s)

    def _start_watcher(self, worker: Worker) -> asyncio.Task[None] | None:
        try:
            settings = self._settings or TemporalSettings()
        except ValidationError as exc:  # events must not keep a worker from running
            _logger.error(
                "appevents: bad APPEVENTS_TEMPORAL_* settings (%s); the closed-run watcher is off",
                settings_problems(exc),
            )
            return None
        if not settings.watch:
            return None
        watcher = ClosedRunWatcher(worker.client, [worker.task_queue], settings)
        self.watchers[worker] = watcher
        return asyncio.create_task(watcher.run(), name=f"appevents closed-run watcher ({worker.task_queue})")

    @staticmethod
    def _announce(worker: Worker) -> None:
        try:
            config = worker.config(active_config=True)
            deployment = config.get("deployment_config")
            build_id = deployment.version.build_id if deployment is not None else config.get("build_id")
            event = worker_start_event(
                task_queue=worker.task_queue,
                namespace=worker.client.namespace,
                build_id=build_id,
                identity=config.get("identity") or worker.client.identity,
                temporalio_version=temporalio.__version__,
                appevents_version=__version__,
            )
        except Exception:
            _logger.warning("appevents: could not describe the worker for worker_start", exc_info=True)
            return
        EventStore.publish(event)
