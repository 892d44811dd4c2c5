"""A worker whose own module cannot be imported (a broken or half-updated install) exits with BOOT_ERROR and
leaves the import's error for the supervisor, which then stops with it instead of respawning the worker for
ever behind "exit code 1" (collector.runtime.worker_spec.run_worker)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from collector.runtime.exitcodes import BOOT_ERROR, read_boot_error

CHILD = """
import sys
sys.modules["collector.runtime.worker"] = None  # its import now raises ImportError, as a missing module does
from collector.runtime.worker_spec import WorkerSpec, run_worker
run_worker(WorkerSpec(0, 1, [], None, None, sys.argv[1], None, None))
"""


def test_a_worker_that_cannot_import_itself_is_a_boot_error_with_the_reason(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "writer.sock")], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == BOOT_ERROR, r.stderr[-2000:]
    reason = read_boot_error(tmp_path, "worker-1")
    assert reason == "ModuleNotFoundError: import of collector.runtime.worker halted; None in sys.modules"
    assert f"worker-1 could not boot: {reason}" in r.stderr
