"""The tier computation's read of every symbol slot leaves no page of them mapped in the reader.

Why a test: the supervisor reads all slots at the warm-up's end, then daily; pages it kept mapped showed as a
4-5 MB step of its PSS (shared with the workers that write them) in the 1-hour soak (bench/soak.py).
"""

from __future__ import annotations

import ctypes
import re

from collector.pipeline.activity import SymbolActivity
from collector.runtime.shm import StatsBlock
from collector.runtime.tier_inputs import merge_activity

T0 = 1_750_000_000_000
SYMBOLS = 64


def _resident_kb(block: StatsBlock) -> int:
    """Rss of the mapping `block.buf` starts, from /proc/self/smaps (a fresh view of the same shm object
    is its own mapping, so the owner's pages do not count)."""
    start = ctypes.addressof(ctypes.c_char.from_buffer(block.buf))
    with open("/proc/self/smaps") as fp:
        lines = fp.read().splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"([0-9a-f]+)-[0-9a-f]+ ", line)
        if m and int(m[1], 16) == start:
            for follow in lines[i + 1:]:
                if follow.startswith("Rss:"):
                    return int(follow.split()[1])
    raise AssertionError("the block's mapping is not in /proc/self/smaps")


def test_merge_activity_unmaps_the_slots_it_read() -> None:
    owner = StatsBlock.create(process_slots=2, symbol_slots=SYMBOLS)
    reader = StatsBlock.attach(owner.name)
    try:
        act = SymbolActivity()
        for i in range(50):
            act.add(T0 + i * 1_000, 100.0 + i)
        image = act.to_bytes()
        for k in range(SYMBOLS):
            owner.publish_activity(k, 1, image)
        slots = {f"S{k}USDT": k for k in range(SYMBOLS)}
        symbol_area_kb = (reader.size - reader.symbol_offset) // 1024
        assert symbol_area_kb > 256  # many pages, so a mapped symbol area cannot hide in the margin

        got = merge_activity(reader, slots, T0 + 60_000)

        assert all(s.count == 50 for s in got.values())
        # only the header and process slots (and the page the symbol area starts in) may stay resident
        assert _resident_kb(reader) <= reader.symbol_offset // 1024 + 8
        # the data stays in the block: the owner and a second read see it
        again = merge_activity(reader, slots, T0 + 60_000)
        assert again == got
        reading = owner.read_activity(SYMBOLS - 1)
        assert reading is not None and reading.data == image
    finally:
        reader.close()
        owner.close()
