"""Settings of the Temporal integration (``APPEVENTS_TEMPORAL_*``): the closed-run watcher.

Read from the environment when a worker with :class:`~appevents.temporal.AppEventsPlugin` starts (outside any
workflow), or given in code: ``AppEventsPlugin(settings=TemporalSettings(watch=False))``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["TemporalSettings", "settings_problems"]


def settings_problems(error: ValidationError) -> str:
    """``field: message; ...`` — what is wrong with the settings, in one line."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in error.errors())


class TemporalSettings(BaseSettings):
    """What the closed-run watcher does (see :mod:`appevents.temporal._watcher` and the README)."""

    model_config = SettingsConfigDict(env_prefix="APPEVENTS_TEMPORAL_", extra="ignore")

    #: Publish ``workflow_end`` for runs the server closed without worker code (terminated, timed out) on the
    #: task queue of every worker that carries the plugin. ``APPEVENTS_TEMPORAL_WATCH=false`` turns it off.
    watch: bool = True
    #: Seconds between two visibility queries (one per task queue). The latency from a run's close to its
    #: ``workflow_end`` is at most this plus the server's visibility delay.
    watch_interval_s: float = Field(default=10.0, gt=0)
    #: How far back (seconds) a starting watcher looks for closed runs: runs closed while no watcher ran are
    #: reported if they closed within this window; it bounds what a restart reads again.
    watch_lookback_s: float = Field(default=600.0, ge=0)
    #: Each query re-reads this many seconds before the newest close time seen, for visibility records that
    #: arrive late (Elasticsearch refresh, a visibility queue backlog); keep it above the cluster's visibility delay.
    watch_overlap_s: float = Field(default=60.0, ge=0)
    #: An SQLite file where watchers keep the runs they reported: a restarted watcher resumes at its watermark
    #: (nothing re-read, nothing published twice) and watchers on one host publish a run once between them.
    #: Unset: kept in memory (a restart re-reads the lookback window and publishes those runs again, same ids).
    watch_state_path: Path | None = None
