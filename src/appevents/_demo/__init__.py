"""The demo: example events into the embedded default, and a real Temporal workflow (``appevents demo``).

Tooling, not library: nothing in the library imports it."""
