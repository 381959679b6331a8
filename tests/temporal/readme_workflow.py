"""The README's workflow code, as a user writes it: appevents imported at module level, no passthrough, no
plugin (a module of its own: the sandbox re-imports it, and appevents with it, per run)."""

from __future__ import annotations

from temporalio import workflow

from appevents import Event, EventStore


@workflow.defn
class ReadmeWorkflow:
    @workflow.run
    async def run(self, input_size: int) -> bool:
        # Workflow code as the README writes it, on a worker without the plugin; the result tells the test what
        # publish answered.
        return await EventStore.publish_event(Event(event_type="workflow.started", data={"input_size": input_size}))


@workflow.defn
class ChangedInPlaceWorkflow:
    """Builds a valid event, then changes its data in place into something that is not JSON (a set), and
    publishes it: refused at publish, as outside the sandbox."""

    @workflow.run
    async def run(self) -> bool:
        event = Event(event_type="workflow.started", data={"ids": [1, 2]})
        event.data["ids"] = {1, 2}
        return await EventStore.publish_event(event)
