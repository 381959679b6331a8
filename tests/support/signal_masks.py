"""What a thread blocks, read where Linux shows it: for the tests that our threads leave the process's signals to
the application's threads (``appevents._threads``)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

#: Sent to a process from outside: none of our threads may take them.
PROCESS_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGCHLD})
#: Raised by the thread that causes them: blocking one would turn a crash report into a silent kill.
FAULTS = frozenset({signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGABRT})


def blocked_signals(thread: threading.Thread) -> set[int]:
    """``thread``'s blocked signals (``SigBlk`` in its ``/proc`` status, a bit per signal number)."""
    status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
    [bits] = [line.split()[1] for line in status.splitlines() if line.startswith("SigBlk:")]
    return {n for n in range(1, 65) if int(bits, 16) >> (n - 1) & 1}


def leaves_process_signals_alone(thread: threading.Thread) -> bool:
    """True if ``thread`` blocks every process signal and no fault."""
    mask = blocked_signals(thread)
    return mask >= PROCESS_SIGNALS and not FAULTS & mask
