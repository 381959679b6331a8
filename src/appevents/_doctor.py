"""``appevents doctor``: check the configuration an application would run with, one line per check.

What is read: the process environment, as the application reads it (``AppEventsSettings()``, each exporter's own
``APPEVENTS_<NAME>_*`` settings, the Dapr SDK's ``DAPR_*``, ``OTEL_EXPORTER_OTLP_*``). appevents does not read a
``.env`` file, so neither does the doctor unless told to (``--env-file``); a ``.env`` in the working directory gets
one informational line saying so.

What is checked:

* the settings are valid (a field that is not: named by its variable, its value never shown);
* each exporter in ``APPEVENTS_EXPORTERS`` is installed and can be built (then shut down again);
* ``local``: the event log's directory takes SQLite files (an existing log: a write lock taken and released, no
  row written);
* durable mode (``APPEVENTS_SPOOL_PATH``): the spool opens; its depth, bytes and oldest event (read-only queries,
  no owner registered);
* ``otlp``: one empty OTLP logs export request to the endpoint, with the headers the exporter would send
  (:mod:`appevents._otlp_probe`);
* every other exporter with a ``diagnose(timeout_s) -> list[Check]`` method (see :class:`appevents.exporting.Check`)
  checks itself: the Dapr and Segment distributions do, and the core never imports them.

Each check is bounded by ``timeout_s`` (default 2 s) and the exporters' checks run side by side, so the whole run
stays within a few seconds even with every destination unreachable. Secrets never reach the output: settings
errors carry no values, exporters show secrets as ``****`` and tokens as their length, and any value of a secret
variable (``*_SECRET``, ``*_KEY``, ``*_TOKEN``, ``*PASSWORD``, the Dapr binding metadata) is replaced by ``****`` in
whatever is printed.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, replace
from functools import partial
from importlib.metadata import entry_points
from pathlib import Path
from typing import TextIO

from pydantic import ValidationError
from pydantic_settings import SettingsError

from appevents._encoded import Check, mask_credentials
from appevents._engine import shutdown_exporter
from appevents._errors import ConfigurationError
from appevents._otel_env import OTEL_EXPORTER_NAME, appevents_names_in_otel_logs_exporter
from appevents._otel_route import unused_otel_route
from appevents._otlp_probe import check_otlp
from appevents._registry import EXPORTER_ENTRY_POINT_GROUP, unknown_exporter
from appevents._settings import AppEventsSettings
from appevents._spool import NETWORK_FILESYSTEMS, SPOOL_APPLICATION_ID, filesystem_type
from appevents._threads import start_background_thread
from appevents._variables import unknown_variables

__all__ = ["DEFAULT_TIMEOUT_S", "format_checks", "load_env_file", "passed", "run_checks", "run_doctor"]

#: Bound of one check (a connection, a request, a lock).
DEFAULT_TIMEOUT_S = 2.0
#: What the exporters' checks may take beyond ``timeout_s`` (one of them may chain two bounded steps).
_DIAGNOSE_BUDGET_FACTOR = 2.0
_DIAGNOSE_MARGIN_S = 1.0
MASK = "****"
_SECRET_SUFFIXES = ("SECRET", "_KEY", "APIKEY", "_TOKEN", "PASSWORD", "PASSWD", "CREDENTIALS")
#: Shorter values of secret variables are not masked in the output (they would mask ordinary words).
_MIN_SECRET_LENGTH = 6
_logger = logging.getLogger("appevents")


# -- running ---------------------------------------------------------------------------------------------------
def run_checks(
    timeout_s: float = DEFAULT_TIMEOUT_S, *, cwd: Path | None = None, env_file: Path | None = None
) -> list[Check]:
    """Every check, in order: settings, then per exporter its build and its own checks, then the spool.

    ``env_file``: only named in the report (:func:`load_env_file` loads it)."""
    cwd = cwd if cwd is not None else Path.cwd()
    checks: list[Check] = []
    with _captured_logs() as logs:
        settings_check, settings = _check_settings(env_file)
        checks.append(settings_check)
        dotenv = cwd / ".env"
        if env_file is None and dotenv.is_file():
            checks.append(
                Check(
                    ".env",
                    True,
                    f"{dotenv} exists and is not read: appevents reads the process environment only (so does the "
                    "application, unless whatever starts it loads the file; `appevents doctor --env-file .env` "
                    "checks with it)",
                    required=False,
                )
            )
        if settings is None:
            return _scrubbed(checks)
        checks += _check_variables() + unused_otel_route(settings)
        names = list(dict.fromkeys(settings.exporters))
        if not names:
            checks.append(
                Check(
                    "exporters",
                    False,
                    "APPEVENTS_EXPORTERS=none: no exporter, events are not delivered anywhere",
                    "name the exporters (e.g. APPEVENTS_EXPORTERS=local), or unset it for the default",
                )
            )
        built: dict[str, object] = {}
        per_exporter: dict[str, list[Check]] = {}
        for name in names:
            check, exporter = _build(name, settings, logs)
            per_exporter[name] = [check]
            if exporter is not None:
                built[name] = exporter
        try:
            diagnoses = _diagnose_all(built, settings, timeout_s)
        finally:
            for name, exporter in built.items():
                shutdown_exporter(exporter, name)
        for name in names:
            checks += per_exporter[name] + diagnoses.get(name, [])
        if settings.spool_path is not None:
            checks.append(_check_spool(settings, timeout_s))
    return _scrubbed(checks)


def passed(checks: Sequence[Check]) -> bool:
    """Whether every required check passed (the doctor's exit code 0)."""
    return all(check.ok for check in checks if check.required)


def format_checks(checks: Sequence[Check], *, unicode: bool = True) -> str:
    """The human-readable report: ``✔``/``✘``, the name, what was seen; below a failure, what to do."""
    good, bad, arrow = ("✔", "✘", "→") if unicode else ("OK  ", "FAIL", "->")
    lines = []
    for check in checks:
        mark = good if check.ok else bad
        note = "" if check.required or check.ok else " (informational)"
        lines.append(f"{mark} {check.name}: {check.detail}{note}")
        if not check.ok and check.fix:
            first, *rest = check.fix.splitlines()
            lines.append(f"    {arrow} {first}")
            lines += [f"      {line}" for line in rest]
    failed = [c.name for c in checks if c.required and not c.ok]
    required = sum(1 for c in checks if c.required)
    if failed:
        lines.append(f"{len(failed)} of {required} required checks failed: {', '.join(failed)}")
    else:
        lines.append(f"all {required} required checks passed")
    return "\n".join(lines)


def load_env_file(path: Path) -> list[str]:
    """Put the variables of a dotenv file into this process's environment (those already set win, as they do in
    pydantic-settings); returns the names set."""
    from dotenv import dotenv_values  # a dependency of pydantic-settings

    loaded = []
    for key, value in dotenv_values(path).items():
        if value is not None and key not in os.environ:
            os.environ[key] = value
            loaded.append(key)
    return loaded


def run_doctor(
    *,
    as_json: bool = False,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    env_file: Path | None = None,
    out: TextIO | None = None,
) -> int:
    """``appevents doctor``: print the checks; 0 when every required check passed, else 1."""
    out = out if out is not None else sys.stdout
    if env_file is not None:
        if not env_file.is_file():
            print(f"no such file: {env_file}", file=sys.stderr)
            return 2
        load_env_file(env_file)
    # Whatever a check or an exporter's repr put in its text, a URL's credentials are not printed.
    checks = [
        replace(c, detail=mask_credentials(c.detail), fix=mask_credentials(c.fix))
        for c in run_checks(timeout_s, env_file=env_file)
    ]
    if as_json:
        print(json.dumps([asdict(check) for check in checks], indent=2, ensure_ascii=False), file=out)
    else:
        print(format_checks(checks, unicode=_can_print(out, "✔✘→")), file=out)
    out.flush()
    return 0 if passed(checks) else 1


def _can_print(out: TextIO, text: str) -> bool:
    try:
        text.encode(getattr(out, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


# -- settings --------------------------------------------------------------------------------------------------
def _check_settings(env_file: Path | None) -> tuple[Check, AppEventsSettings | None]:
    source = "process environment" + (f" + {env_file}" if env_file is not None else "")
    try:
        settings = AppEventsSettings()
    except ValidationError as exc:
        # Without the offending values: a bad setting may be a secret.
        problems = "; ".join(f"{_variable_of(error['loc'])}: {error['msg']}" for error in exc.errors())
        return Check(
            "settings",
            False,
            f"invalid ({source}): {problems}",
            "fix the variable(s) named (values are not shown: they may be secrets)",
        ), None
    except SettingsError as exc:
        return Check("settings", False, f"invalid ({source}): {exc}", "fix the variable named"), None
    exporters = ",".join(settings.exporters)
    given = "" if os.environ.get("APPEVENTS_EXPORTERS", "").strip() else " (default)"
    if given and settings.exporters == [OTEL_EXPORTER_NAME]:
        given = f" (default, as OTEL_LOGS_EXPORTER names {', '.join(appevents_names_in_otel_logs_exporter())})"
    detail = f"APPEVENTS_EXPORTERS={exporters}{given}; application {settings.application_name!r}, tenant "
    detail += f"{settings.tenant_id!r}; read from the {source}"
    return Check("settings", True, detail), settings


def _check_variables() -> list[Check]:
    """A failed check naming the ``APPEVENTS_*`` variables nothing reads (none when every one is read)."""
    unknown = unknown_variables()
    if not unknown:
        return []
    return [
        Check(
            "variables",
            False,
            f"not read by appevents or any installed exporter: {', '.join(map(str, unknown))}",
            "rename the variable(s) (names ignore case), or remove them",
        )
    ]


def _variable_of(loc: tuple[int | str, ...]) -> str:
    """The environment variable(s) a settings field is read from."""
    if not loc:
        return "settings"
    field = AppEventsSettings.model_fields.get(str(loc[0]))
    if field is None:
        return ".".join(map(str, loc))
    alias = field.validation_alias
    choices = getattr(alias, "choices", None)
    names = " / ".join(str(choice) for choice in choices) if choices else f"APPEVENTS_{str(loc[0]).upper()}"
    rest = ".".join(map(str, loc[1:]))
    return f"{names}[{rest}]" if rest else names


# -- exporters -------------------------------------------------------------------------------------------------
def _build(name: str, settings: AppEventsSettings, logs: _Logs) -> tuple[Check, object | None]:
    check_name = f"exporter {name}"
    matches = list(entry_points(group=EXPORTER_ENTRY_POINT_GROUP, name=name))
    if not matches:
        problem, fix = unknown_exporter(name)
        return Check(check_name, False, problem, fix), None
    entry_point = matches[0]
    origin = f"{entry_point.dist.name} {entry_point.dist.version}" if entry_point.dist is not None else "?"
    mark = logs.mark()
    try:
        factory: Callable[[AppEventsSettings], object | None] = entry_point.load()
        exporter = factory(settings)
    except ConfigurationError as exc:
        return Check(check_name, False, f"cannot be built: {exc}", _leave_out(name)), None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        return Check(check_name, False, f"misconfigured: {problems}", _leave_out(name)), None
    except Exception as exc:
        return Check(check_name, False, f"cannot be built: {type(exc).__name__}: {exc}", _leave_out(name)), None
    said = logs.since(mark)
    if exporter is None:
        why = "; ".join(said) or "its factory returned None"
        return Check(check_name, False, f"installed ({origin}) but disabled itself: {why}", _leave_out(name)), None
    described = repr(exporter) if type(exporter).__repr__ is not object.__repr__ else type(exporter).__name__
    detail = f"installed ({origin}), built: {described}"
    if said:
        detail += f"; it said: {'; '.join(said)}"
    return Check(check_name, True, detail), exporter


def _leave_out(name: str) -> str:
    return f"fix what is named above, or leave {name!r} out of APPEVENTS_EXPORTERS"


def _diagnose_all(built: Mapping[str, object], settings: AppEventsSettings, timeout_s: float) -> dict[str, list[Check]]:
    """Each exporter's checks, side by side on daemon threads; one that overruns its budget is reported as such."""
    jobs: dict[str, Callable[[], list[Check]]] = {}
    for name, exporter in built.items():
        if name == "local":
            jobs[name] = partial(_one, _check_local, settings.local_path, timeout_s)
        elif name == "otlp":
            jobs[name] = partial(_one, check_otlp, timeout_s)
        else:
            diagnose = getattr(exporter, "diagnose", None)
            if callable(diagnose):
                jobs[name] = partial(_listed, diagnose, timeout_s)
    results: dict[str, list[Check]] = {}
    threads: dict[str, threading.Thread] = {}

    def run(name: str, job: Callable[[], list[Check]]) -> None:
        try:
            results[name] = job()
        except Exception as exc:
            results[name] = [Check(f"{name} diagnose", False, f"the check itself failed: {type(exc).__name__}: {exc}")]

    for name, job in jobs.items():
        thread = threading.Thread(target=run, args=(name, job), name=f"appevents-doctor-{name}", daemon=True)
        start_background_thread(thread)
        threads[name] = thread
    budget = timeout_s * _DIAGNOSE_BUDGET_FACTOR + _DIAGNOSE_MARGIN_S
    deadline = time.monotonic() + budget
    for name, thread in threads.items():
        thread.join(max(0.0, deadline - time.monotonic()))
        if name not in results:
            results[name] = [
                Check(f"{name} diagnose", False, f"its checks did not finish within {budget:g} s", "see above")
            ]
    return results


def _one(check: Callable[..., Check], *args: object) -> list[Check]:
    return [check(*args)]


def _listed(diagnose: Callable[[float], Sequence[Check]], timeout_s: float) -> list[Check]:
    return list(diagnose(timeout_s))


# -- local -----------------------------------------------------------------------------------------------------
def _check_local(path: Path, timeout_s: float) -> Check:
    """The log is opened with a write lock taken and released (no row written); a log not created yet is stood in
    for by a probe SQLite file in its directory, removed again (as are directories made for it)."""
    name = "local event log"
    fix = f"make {path.parent} writable, or set APPEVENTS_LOCAL_PATH to a writable path"
    try:
        if path.exists():
            db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=rw", uri=True, timeout=timeout_s)
            try:
                db.isolation_level = None
                db.execute("BEGIN IMMEDIATE")
                db.execute("ROLLBACK")
                has_table = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'")
                count = db.execute("SELECT COUNT(*) FROM events").fetchone()[0] if has_table.fetchone() else 0
            finally:
                db.close()
            return Check(name, True, f"{path} writable ({count} event(s) stored; APPEVENTS_LOCAL_PATH)")
        made = _make_dirs(path.parent)
        try:
            probe = path.parent / f".{path.name}.doctor-{os.getpid()}"
            db = sqlite3.connect(probe, timeout=timeout_s)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("CREATE TABLE probe (x INTEGER)")
                db.commit()
            finally:
                db.close()
                for leftover in (probe, Path(f"{probe}-wal"), Path(f"{probe}-shm")):
                    leftover.unlink(missing_ok=True)
        finally:
            for directory in reversed(made):
                with suppress(OSError):
                    directory.rmdir()
        return Check(
            name,
            True,
            f"{path} does not exist yet; its directory takes SQLite files (probed, nothing left behind): created "
            "at the first export (APPEVENTS_LOCAL_PATH)",
        )
    except (OSError, sqlite3.Error) as exc:
        return Check(name, False, f"cannot create or write {path}: {type(exc).__name__}: {exc}", fix)


def _make_dirs(directory: Path) -> list[Path]:
    """``mkdir -p``, returning the directories it made (outermost first)."""
    missing = []
    current = directory.absolute()
    while not current.exists():
        missing.append(current)
        current = current.parent
    made = []
    for path in reversed(missing):
        path.mkdir()
        made.append(path)
    return made


# -- spool -----------------------------------------------------------------------------------------------------
def _check_spool(settings: AppEventsSettings, timeout_s: float) -> Check:
    """Read-only look at the durable spool: no owner row, no pragma that writes (``query_only``)."""
    path = settings.spool_path
    assert path is not None
    name = "spool"
    fix = f"make {path.parent} writable, or set APPEVENTS_SPOOL_PATH to a writable path"
    filesystem = filesystem_type(path.absolute().parent)
    if filesystem in NETWORK_FILESYSTEMS:
        return Check(
            name,
            False,
            f"{path} is on a network filesystem ({filesystem}): SQLite's WAL mode works on one host only",
            "put the spool on a local disk, one per host",
        )
    if not path.exists():
        ancestor = path.absolute().parent
        while not ancestor.exists():
            ancestor = ancestor.parent
        if ancestor.is_dir() and os.access(ancestor, os.W_OK | os.X_OK):
            return Check(name, True, f"{path} does not exist yet: created at the first start (APPEVENTS_SPOOL_PATH)")
        return Check(name, False, f"{path} cannot be created: {ancestor} is not a writable directory", fix)
    try:
        db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=rw", uri=True, timeout=timeout_s)
        try:
            db.isolation_level = None
            db.execute("PRAGMA query_only=ON")
            (marked,) = db.execute("PRAGMA application_id").fetchone()
            if marked not in (0, SPOOL_APPLICATION_ID):
                raise sqlite3.DatabaseError(f"application_id {marked:#x}: not an appevents spool")
            (count,) = db.execute("SELECT COUNT(*) FROM events").fetchone()
            oldest = db.execute("SELECT timestamp_ns FROM events ORDER BY seq LIMIT 1").fetchone()
            row = db.execute("SELECT value FROM meta WHERE key = 'bytes'").fetchone()
            owners, closed = db.execute("SELECT COUNT(*), COALESCE(SUM(closed), 0) FROM owners").fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        return Check(name, False, f"{path} cannot be read as a spool: {type(exc).__name__}: {exc}", fix)
    used = int(row[0]) if row else 0
    age = f", oldest {_duration(time.time() - oldest[0] / 1e9)} old" if oldest else ""
    detail = (
        f"{path}: {count} event(s) waiting, {_size(used)} of {_size(settings.spool_max_bytes)} "
        f"(APPEVENTS_SPOOL_MAX_BYTES){age}; {owners} pipeline(s) registered ({closed} closed with events left)"
    )
    if used >= settings.spool_max_bytes:
        return Check(
            name,
            False,
            f"full: new events are refused (spool_full); {detail}",
            "bring the destinations back (see the checks above) or raise APPEVENTS_SPOOL_MAX_BYTES",
        )
    return Check(name, True, detail)


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, span, sub, sub_span in (("d", 86400, "h", 3600), ("h", 3600, "min", 60), ("min", 60, "s", 1)):
        if seconds >= span:
            return f"{seconds // span} {unit} {(seconds % span) // sub_span} {sub}"
    return f"{seconds} s"


# -- logs and secrets ------------------------------------------------------------------------------------------
class _Logs(logging.Handler):
    """What appevents and its exporters log while the doctor runs: shown with the check it belongs to, not on
    stderr."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self._lock_messages = threading.Lock()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:
            text = str(record.msg)
        text = text.removeprefix("appevents: ")
        with self._lock_messages:
            self.messages.append(" ".join(text.split()))

    def mark(self) -> int:
        with self._lock_messages:
            return len(self.messages)

    def since(self, mark: int) -> list[str]:
        with self._lock_messages:
            return self.messages[mark:]


@contextmanager
def _captured_logs() -> Iterator[_Logs]:
    logger = logging.getLogger("appevents")
    handler = _Logs()
    level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _secret_values() -> list[str]:
    """Values of the environment's secret variables, longest first (so a secret containing another is masked
    whole)."""
    values: set[str] = set()
    for key, value in os.environ.items():
        upper = key.upper()
        if upper.endswith(_SECRET_SUFFIXES) and len(value) >= _MIN_SECRET_LENGTH:
            values.add(value)
        elif upper == "APPEVENTS_DAPR_METADATA":
            try:
                document = json.loads(value)
            except ValueError:
                continue
            if isinstance(document, dict):
                values.update(str(v) for v in document.values() if len(str(v)) >= _MIN_SECRET_LENGTH)
    return sorted(values, key=len, reverse=True)


def _scrubbed(checks: list[Check]) -> list[Check]:
    secrets = _secret_values()

    def scrub(text: str) -> str:
        for secret in secrets:
            text = text.replace(secret, MASK)
        return text

    return [replace(check, detail=scrub(check.detail), fix=scrub(check.fix)) for check in checks]
