"""Temporal integration: ``AppEventsPlugin`` (one line on a client or worker) and ``EventInterceptor``.

Optional: this package imports ``temporalio`` (``pip install 'appevents[temporal]'``); the rest of appevents never
imports it.

What you get:

- ``workflow_start``/``workflow_end`` per workflow run, ``workflow_end.metadata.workflow_state`` being the state
  the server records (completed, failed, cancelled, continued_as_new), ``data.duration_ms`` in workflow time;
- ``activity_start``/``activity_end`` per activity attempt (attempt number, status, duration, error type);
- ``worker_start`` once per worker run;
- ``workflow_end`` (state terminated or timed_out) for runs the server closed without worker code, from the
  closed-run watcher the plugin runs beside each worker (:class:`ClosedRunWatcher`, ``appevents temporal watch``).

Workflow code may call ``await EventStore.publish_event(Event(...))`` directly — do not wrap it in an activity.
It is safe there because publishing is an in-memory append (no I/O, no commands: the history is unchanged),
time comes from ``workflow.now()``, the event id from ``workflow.uuid4()`` (a re-executed workflow task repeats
it) and nothing is published while history is replayed (queries still publish). See :mod:`.interceptor` for the
details of what runs inside the sandbox and :mod:`.lifecycle` for the events' shape.
"""

from appevents.temporal._interceptor import EventInterceptor
from appevents.temporal._plugin import AppEventsPlugin
from appevents.temporal._settings import TemporalSettings
from appevents.temporal._watcher import ClosedRunWatcher

__all__ = ["AppEventsPlugin", "ClosedRunWatcher", "EventInterceptor", "TemporalSettings"]
