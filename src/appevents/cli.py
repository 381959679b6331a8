"""Command line: ``appevents tail`` reads the local event log, ``appevents demo`` shows the pipeline at work."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from appevents.local import LocalEventLog, StoredEvent
from appevents.models import Event
from appevents.settings import AppEventsSettings

__all__ = ["format_row", "main"]

_COLUMNS = ("time", "type", "name", "workflow", "activity", "id")


def format_row(event: Event, published_ns: int | None = None) -> str:
    """One readable line for the table ``tail`` prints."""
    if published_ns is not None:
        moment = datetime.fromtimestamp(published_ns / 1e9, UTC).strftime("%H:%M:%S.%f")[:-3]
    elif event.metadata.created_timestamp is not None:
        moment = datetime.fromtimestamp(event.metadata.created_timestamp, UTC).strftime("%H:%M:%S")
    else:
        moment = "-"
    meta = event.metadata
    workflow = f"{meta.workflow_type}/{meta.workflow_id}" if meta.workflow_id else "-"
    if meta.workflow_state and meta.workflow_id:
        workflow += f" [{meta.workflow_state}]"
    activity = f"{meta.activity_type}#{meta.attempt}" if meta.activity_type else "-"
    return (
        f"{moment:<12}  {event.event_type:<26}  {event.event_name or '-':<15}  {workflow:<40}  "
        f"{activity:<24}  {event.event_id[:8]}"
    )


def _header() -> str:
    widths = (12, 26, 15, 40, 24, 8)
    return "  ".join(f"{c.upper():<{w}}" for c, w in zip(_COLUMNS, widths, strict=True))


def _print_rows(rows: Sequence[StoredEvent], as_json: bool) -> None:
    for row in rows:
        if as_json:
            print(row.body)
        else:
            print(format_row(row.event(), row.published_ns))
    sys.stdout.flush()


def _tail(args: argparse.Namespace) -> int:
    path = Path(args.path) if args.path else AppEventsSettings().local_path
    if not path.exists() and not args.follow:
        print(f"no event log at {path} (publish with APPEVENTS_EXPORTERS=local first)", file=sys.stderr)
        return 1
    log = LocalEventLog(path)
    try:
        rows = log.query(event_type=args.type, workflow_id=args.workflow_id, last=args.n)
        if not args.json:
            print(_header())
        _print_rows(rows, args.json)
        last_seq = rows[-1].seq if rows else log.last_seq()
        while args.follow:
            time.sleep(args.interval)
            rows = log.query(event_type=args.type, workflow_id=args.workflow_id, after_seq=last_seq)
            if rows:
                _print_rows(rows, args.json)
                last_seq = rows[-1].seq
    except KeyboardInterrupt:
        return 0
    finally:
        log.close()
    return 0


def _demo(args: argparse.Namespace) -> int:
    from appevents.demo import run_demo

    return run_demo(temporal=not args.no_temporal, temporal_address=args.temporal_address)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="appevents", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    tail = sub.add_parser("tail", help="print events from the local SQLite event log")
    tail.add_argument("--path", help="event log path (default: APPEVENTS_LOCAL_PATH or ./.appevents/events.db)")
    tail.add_argument("-f", "--follow", action="store_true", help="keep printing events as they land")
    tail.add_argument("--type", help="only events of this event_type")
    tail.add_argument("--workflow-id", help="only events of this workflow id")
    tail.add_argument("-n", type=int, default=20, help="how many of the newest events to show first (default 20)")
    tail.add_argument("--json", action="store_true", help="one event per line, as Event.model_dump_json()")
    tail.add_argument("--interval", type=float, default=0.2, help=argparse.SUPPRESS)
    tail.set_defaults(handler=_tail)

    demo = sub.add_parser("demo", help="publish the seed's example events and show them landing")
    demo.add_argument("--no-temporal", action="store_true", help="skip the Temporal workflow part")
    demo.add_argument("--temporal-address", help="use this Temporal server instead of starting a dev server")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    raise SystemExit(main())
