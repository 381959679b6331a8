"""The library's threads leave the process's signals to the application's threads, and starting one never leaves
the caller's own signal mask changed (the process-level behaviour is in test_process_edges.py)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import pytest

from appevents.exporting import block_process_signals, start_background_thread
from support.signal_masks import FAULTS, PROCESS_SIGNALS

pytestmark = pytest.mark.timeout(30)


def test_a_started_thread_blocks_the_process_signals_from_its_first_instruction() -> None:
    seen: list[set[int]] = []
    thread = threading.Thread(target=lambda: seen.append(signal.pthread_sigmask(signal.SIG_BLOCK, [])))
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    start_background_thread(thread).join(5)
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before
    [mask] = seen
    assert mask >= PROCESS_SIGNALS and not FAULTS & mask


def test_a_handler_raising_right_after_the_block_leaves_the_callers_mask_as_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CPython runs pending Python handlers when ``pthread_sigmask`` returns: one raising KeyboardInterrupt there
    must not leave the caller (often the main thread) with SIGINT and SIGTERM blocked for good."""
    real = signal.pthread_sigmask

    def raising_after_the_block(how: int, mask: Iterable[int]) -> set[int]:
        previous = real(how, mask)
        if how == signal.SIG_BLOCK and signal.SIGTERM in set(mask):
            raise KeyboardInterrupt  # what a SIGINT handled right then raises
        return previous

    before = real(signal.SIG_BLOCK, [])
    monkeypatch.setattr(signal, "pthread_sigmask", raising_after_the_block)
    thread = threading.Thread(target=lambda: None)
    with pytest.raises(KeyboardInterrupt):
        start_background_thread(thread)
    monkeypatch.undo()
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before
    assert not thread.is_alive()


def test_a_pool_initializer_blocks_them_in_each_worker_whoever_submits() -> None:
    with ThreadPoolExecutor(2, initializer=block_process_signals) as pool:
        masks = [f.result(5) for f in [pool.submit(signal.pthread_sigmask, signal.SIG_BLOCK, []) for _ in range(4)]]
    assert all(mask >= PROCESS_SIGNALS and not FAULTS & mask for mask in masks)
