"""The stats block every observability test publishes into: a writer and two workers, no symbol slots."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from collector.runtime.shm import StatsBlock


@pytest.fixture
def block() -> Iterator[StatsBlock]:
    b = StatsBlock.create(process_slots=3, symbol_slots=0)
    yield b
    b.close()
