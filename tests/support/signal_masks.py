"""What a thread blocks, read where Linux shows it: for the tests that our threads leave the process's signals to
the application's threads (``appevents._threads``)."""

from __future__ import annotations

import os
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


#: ``clock_nanosleep``'s number, as ``/proc/<pid>/syscall`` shows it while the thread sleeps in ``time.sleep``.
_CLOCK_NANOSLEEP = {"x86_64": "230", "aarch64": "115"}


def asleep(pid: int) -> bool:
    """True while ``pid``'s main thread is inside ``time.sleep``'s system call.

    A test that sends a signal to a sleeping process waits for this first. Sent a moment earlier — while the main
    thread hands the GIL to a busy thread on its way into the sleep — CPython's C handler only notes the signal,
    and the sleep starts regardless: a race inside CPython that no library can close (the Python handler runs
    when the sleep ends), and not what such a test is about."""
    try:
        call = Path(f"/proc/{pid}/syscall").read_text().split()[0]
        wchan = Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return False
    expected = _CLOCK_NANOSLEEP.get(os.uname().machine)
    return call == expected if expected is not None else "nanosleep" in wchan
