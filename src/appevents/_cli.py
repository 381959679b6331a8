"""Command line: ``appevents tail`` reads the local event log, ``appevents demo`` shows the pipeline at work,
``appevents doctor`` checks the configuration and the destinations it names, ``appevents bridge`` receives OTLP
logs and delivers the events they carry."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from appevents._event_table import format_row, table_header
from appevents._settings import AppEventsSettings
from appevents._sqlite_log import LocalEventLog, StoredEvent

__all__ = ["main"]


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
            print(table_header())
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
    try:
        settings = BridgeSettings(**overrides)
        return run_bridge(settings, AppEventsSettings())
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        print(f"appevents bridge: bad settings: {problems}", file=sys.stderr)
        return 2
    except (ConfigurationError, OSError) as exc:
        print(f"appevents bridge: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # an exporter's setting that cannot be parsed (pydantic-settings' SettingsError)
        print(f"appevents bridge: bad settings: {mask_credentials(str(exc))}", file=sys.stderr)
        return 2


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


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

    demo = sub.add_parser("demo", help="publish the application-sdk EventStore's example events and show them landing")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    raise SystemExit(main())
