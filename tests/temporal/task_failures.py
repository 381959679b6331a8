"""Process-wide memory of deliberately failed workflow tasks.

Imported by workflow code through ``workflow.unsafe.imports_passed_through()``: the sandbox re-imports ordinary
modules for every workflow run, which would forget that a task already failed once.
"""

from __future__ import annotations

failed_once: set[str] = set()
