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
ROOM = 16  # listing room: slots no worker writes


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
    owner = StatsBlock.create(process_slots=2, symbol_slots=SYMBOLS + ROOM)
    reader = StatsBlock.attach(owner.name)
    try:
        act = SymbolActivity()
        for i in range(50):
            act.add(T0 + i * 1_000, 100.0 + i)
        image = act.to_bytes()
        for k in range(SYMBOLS):
            owner.publish_activity(k, 1, image)
        slots = {f"S{k}USDT": k for k in range(SYMBOLS)}
        assert SYMBOLS * reader.symbol_slot_size // 1024 > 256  # many pages: a mapped one cannot hide
        for k in range(SYMBOLS, SYMBOLS + ROOM):  # the room's headers, mapped here as by the supervisor
            assert reader.read_activity(k) is None
        room_kb = _resident_kb(reader)

        got = merge_activity(reader, {**slots, "UNWRITTENUSDT": SYMBOLS}, T0 + 60_000)

        assert all(s.count == 50 for k, s in got.items() if k != "UNWRITTENUSDT")
        # the slots read are gone from this view; the pages of the room (never written) stay counted here
        resident = _resident_kb(reader)
        assert ROOM * 4 <= resident <= room_kb + 8  # a page per room header; slots are not page-aligned
        # the data stays in the block: the owner and a second read see it
        again = merge_activity(reader, slots, T0 + 60_000)
        assert again == {k: v for k, v in got.items() if k != "UNWRITTENUSDT"}
        reading = owner.read_activity(SYMBOLS - 1)
        assert reading is not None and reading.data == image
    finally:
        reader.close()
        owner.close()
