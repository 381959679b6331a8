"""appevents: application events for Temporal apps, carried by OpenTelemetry and delivered without loss.

Everyday API::

    from appevents import EventStore, Event

    await EventStore.publish_event(Event(event_type="order.received", data={"order_id": "o-1"}))

``publish_event`` enriches the metadata from the current Temporal/OTel context, encodes the event once and hands
it to the delivery engine, then returns — it never raises and never waits for delivery unless asked
(``wait=True``). Exporters (``local`` SQLite log by default; ``dapr``, ``segment``, ``otlp``, ``console``) deliver
from their own threads, per event and counted (:meth:`EventStore.stats`); ``APPEVENTS_SPOOL_PATH`` makes delivery
durable. Configure with ``APPEVENTS_*`` environment variables or :func:`configure`. Exporter authors: see
:mod:`appevents.exporting`.
"""

from appevents import _log_prefix
from appevents._counting import DeliveryStats
from appevents._errors import AppEventsError, ConfigurationError
from appevents._event_store import EventStore, configure
from appevents._metrics import use_meter_provider
from appevents._models import ApplicationEventNames, Event, EventMetadata, EventTypes, WorkflowStates
from appevents._pipeline import Pipeline
from appevents._settings import AppEventsSettings
from appevents._version import __version__

_log_prefix.install()

__all__ = [
    "AppEventsError",
    "AppEventsSettings",
    "ApplicationEventNames",
    "ConfigurationError",
    "DeliveryStats",
    "Event",
    "EventMetadata",
    "EventStore",
    "EventTypes",
    "Pipeline",
    "WorkflowStates",
    "__version__",
    "configure",
    "use_meter_provider",
]
