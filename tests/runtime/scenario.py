"""Long end-to-end scenarios as ordered steps: one running collector, one test per step.

Why: a scenario that takes one collector through months of events in one test function reports only
"the test failed" and a line number; as separate tests a failure names its step in pytest's summary.
The steps share one product (module-scoped) and run in file order; a step after a failed one fails at
once, naming the step that broke the product (it is not skipped: a skip must never count as a pass).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from helpers import SupervisorProcess, fresh_database


class Scenario:
    """The product under test plus what one step leaves for the next (`state`)."""

    def __init__(self) -> None:
        self.failed: str | None = None
        self.state: dict[str, Any] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        if self.failed is not None:
            pytest.fail(f"not run: the earlier step {self.failed!r} failed", pytrace=False)
        try:
            yield
        except BaseException:
            self.failed = name
            raise


def keep_running(sup: SupervisorProcess) -> None:
    """Take `sup` off the per-test cleanup list (tests/conftest.py): it lives for the whole module and the
    module's fixture stops it."""
    SupervisorProcess.running.discard(sup)


@contextmanager
def module_database(pg_server_url: str) -> Iterator[str]:
    """A fresh database for a module's steps (tests/conftest.py's db_url is one test's)."""
    with fresh_database(pg_server_url) as url:
        yield url
