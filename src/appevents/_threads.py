"""Background threads that never take the process's signals.

The kernel hands a signal sent to the process (``kill``, a container's stop, Ctrl-C in a terminal) to any one
thread that does not block it, and tends to pick one that is running: often a busy exporter thread. CPython runs
the Python handler on the main thread only, and a main thread asleep in ``time.sleep()``, ``join()`` or a lock is
woken only by a signal delivered to it. So a SIGTERM taken by our thread sat unhandled until the main thread woke
for another reason (measured: 12 of 150 SIGTERMs right after a publish burst, on a loaded 2-core machine, waited
out a 60 s sleep). Our threads are therefore started with those signals blocked: the kernel delivers them to the
application's threads, as if the library were not there.

Faults (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS) and SIGABRT are raised in the thread that causes them and
stay unblocked: blocking them would turn faulthandler's report into a silent kill. Threads a started thread starts
(an exporter's pool, a client library's worker) inherit its mask, and so does a process started from one of them
(``subprocess`` keeps the mask across ``exec``): appevents starts none there, but an exporter that does must give
its child the signals back (``preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_SETMASK, [])``), or SIGTERM and
Ctrl-C would not stop it.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

_RAISED_BY_THE_THREAD_ITSELF = frozenset(
    getattr(signal, name)
    for name in ("SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGTRAP", "SIGSYS", "SIGABRT", "SIGKILL", "SIGSTOP")
    if hasattr(signal, name)
)


def _process_signals() -> set[signal.Signals]:
    return {sig for sig in signal.valid_signals() if sig not in _RAISED_BY_THE_THREAD_ITSELF}


@contextlib.contextmanager
def process_signals_blocked() -> Iterator[None]:
    """Block the process-directed signals in this thread for the block's duration (threads started meanwhile
    inherit the mask from their first instruction, not after a window); restore the previous mask after. One that
    arrives meanwhile stays pending and is delivered when the mask is restored (on the main thread, its Python
    handler then runs). Nothing on platforms without ``pthread_sigmask``."""
    mask = getattr(signal, "pthread_sigmask", None)
    if mask is None:
        yield
        return
    # Read first, block inside the try: CPython runs pending Python handlers when pthread_sigmask returns, and one
    # that raises (KeyboardInterrupt, SystemExit) right after the block must still find the mask restored.
    previous = mask(signal.SIG_BLOCK, ())
    try:
        mask(signal.SIG_BLOCK, _process_signals())
        yield
    finally:
        mask(signal.SIG_SETMASK, previous)


def block_process_signals() -> None:
    """Block the process-directed signals in the calling thread for good: for a thread created by code that is
    not ours to start (a ``ThreadPoolExecutor``'s ``initializer``, whichever thread submits first)."""
    mask = getattr(signal, "pthread_sigmask", None)
    if mask is not None:
        mask(signal.SIG_BLOCK, _process_signals())


def start_background_thread(thread: threading.Thread) -> threading.Thread:
    """Start ``thread`` (and whatever threads it starts) with the process-directed signals blocked, so that a
    SIGTERM or SIGINT goes to the application's threads, where its handler runs promptly. Returns ``thread``."""
    with process_signals_blocked():
        thread.start()
    return thread
