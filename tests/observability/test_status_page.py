"""The status page at / as a person sees it: a real headless Chromium against a live collector.

A collector with 2 workers runs on ~40 simulated symbols; Chromium loads / with a virtual-time budget
(timers fire as fast as the page allows, so 8 s of polling takes well under a second of wall time), and
the DOM it dumps must show every section filled from live data. A screenshot must decode to an image
that is not one flat colour.

Chromium is a system package (Debian: chromium). Without it the test skips, saying so; with
REQUIRE_CHROMIUM=1 (CI) a missing browser is a failure, so the check cannot silently stop running.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest
from helpers import SupervisorProcess, http_get, is_healthy, wait_for, write_config
from test_health import _publish_healthy, _snap

from collector.db.embedded import free_port
from collector.observability.catalogue import REASONS
from collector.observability.server import status_page
from collector.observability.stats import stats_json
from collector.runtime.shm import StatsBlock
from exchange_sim import SimConfig, launch_subprocess

SYMBOLS = 40
WORKERS = 2
# Page time: the first poll, the warm-up polls that produce rates, then a few 2 s refreshes. Virtual time
# runs ahead while the page idles, so the 100 ms warm-up polls follow each other as fast as /stats answers;
# a rate needs two publications of a worker's counters >= 600 ms apart in real time (workers publish every
# 1 s), so the budget must allow enough warm-up polls for a second or more of real time to pass.
VIRTUAL_TIME_MS = 30000
# Chromium's own start-up dominates; generous so a loaded CI machine does not fail the test.
CHROMIUM_TIMEOUT_S = 120


def test_the_page_reads_only_what_stats_serves(block: StatsBlock) -> None:
    """Every /stats path the page's script reads exists in the document the catalogue derives; no browser needed."""
    page = status_page().decode()
    _publish_healthy(block)
    doc = stats_json(_snap(block))
    for function, section, var in (("renderWorkers", doc["workers"][0], "w"), ("renderWriter", doc["writer"], "w"),
                                   ("renderVenues", doc["venues"]["binance"], "v")):
        body = page[page.index(f"function {function}("):]
        body = body[:body.index("\n}\n")]
        paths = set(re.findall(rf"\b{var}\.([a-z_]+(?:\.[a-z_]+)*)", body))
        assert paths, function
        for path in paths:
            node = section
            for key in path.split("."):
                assert isinstance(node, dict) and key in node, f"{function} reads {var}.{path}, which /stats lacks"
                node = node[key]
    kept = re.search(r"for \(const reason of \[([^\]]*)\]\)", page)
    assert kept and re.findall(r'"(\w+)"', kept.group(1)) == list(REASONS)
    assert "queue_depth" not in page and "queue_full" not in page


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    msg = "headless Chromium not found (Debian: apt-get install -y chromium); the status page was not rendered"
    if os.environ.get("REQUIRE_CHROMIUM") == "1":
        pytest.fail(msg + " but REQUIRE_CHROMIUM=1")
    pytest.skip(msg)


def _run_chromium(binary: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp}",
           f"--virtual-time-budget={VIRTUAL_TIME_MS}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_S, check=False)


class _Fields(HTMLParser):
    """Text of every element with an id or data-field, keyed by the path of ids/data-* that leads to it."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, dict[str, str]]] = []
        self.attrs_of: dict[str, dict[str, str]] = {}
        self.text: dict[str, str] = {}

    def _key(self) -> str:
        parts = []
        for _, a in self.stack:
            for k in ("id", "data-worker", "data-venue", "data-tier", "data-symbol", "data-field"):
                if k in a:
                    parts.append(f"{k.removeprefix('data-')}={a[k]}")
        return "/".join(parts)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("meta", "br", "link", "input"):
            return
        a = {k: v or "" for k, v in attrs}
        self.stack.append((tag, a))
        self.attrs_of.setdefault(self._key(), a)

    def handle_endtag(self, tag: str) -> None:
        while self.stack:
            if self.stack.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        if self.stack:
            key = self._key()
            self.text[key] = self.text.get(key, "") + data


def _number(text: str) -> float:
    m = re.fullmatch(r"\$?([\d,]+(?:\.\d+)?)(?: [KMG]?B| ms)?", text.strip())
    assert m, f"not a number: {text!r}"
    return float(m.group(1).replace(",", ""))


def _png_pixels(path: Path) -> tuple[int, int, set[bytes]]:
    """(width, height, distinct pixels of a sample of rows) of an 8-bit RGB(A) PNG, with zlib and struct only."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    assert header is not None
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, header
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    prev = bytearray(stride)
    pixels: set[bytes] = set()
    for y in range(height):  # undo the per-row filters (PNG spec 9.2) to get real pixel values
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up, ul = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + left) & 0xFF
            elif f == 2:
                line[i] = (line[i] + up) & 0xFF
            elif f == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif f == 4:
                p = left + up - ul
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - ul)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else ul)) & 0xFF
        if y % 10 == 0:
            pixels.update(bytes(line[x:x + bpp]) for x in range(0, stride, bpp))
        prev = line
    return width, height, pixels


@pytest.mark.timeout(300)
def test_status_page_shows_the_live_collector(db_url: str, tmp_path: Path) -> None:
    chromium = _chromium()
    sim = launch_subprocess(SimConfig(port=0, symbols=SYMBOLS, rate=150, speed=10, seed=5))
    port = free_port()
    cfg = write_config(
        tmp_path / "main.yaml", database={"url": db_url},
        exchange={"rest_url": sim.rest_url, "ws_url": sim.ws_url},
        logging={"filename": str(tmp_path / "logs" / "supervisor.log")},
        writer={"spool_dir": str(tmp_path / "spool")},
        monitoring={"health_check_port": port}, filters={"trades": {"tier_interval": "8s"}})
    sup = SupervisorProcess("--workers", str(WORKERS), "--config", str(cfg), cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        def healthy() -> bool:
            return is_healthy(port)

        wait_for(healthy, 120, "/health to answer 200")
        # rows committed and tiers computed from live statistics, so every section has something to show
        wait_for(lambda: http_get(url + "/stats")[2]["totals"]["trades_count"] > 0, 60, "committed trades")
        wait_for(lambda: (http_get(url + "/stats")[2]["supervisor"]["tiers"] or {}).get("computed_at"), 60,
                 "tiers computed")

        run = _run_chromium(chromium, tmp_path / "profile-dom", "--dump-dom", url + "/")
        assert run.returncode == 0, run.stderr[-2000:]
        page = _Fields()
        page.feed(run.stdout)
        text, attrs = page.text, page.attrs_of

        assert 'data-state="live"' in run.stdout, run.stdout[:3000]
        polls = int(re.search(r'data-polls="(\d+)"', run.stdout).group(1))
        assert polls >= 2, polls  # rates need two polls
        # header and alerts: the collector is healthy, so the page says so and lists no problem
        assert attrs["id=overall"].get("data-ok") == "true", text.get("id=overall")
        assert attrs["id=alerts"]["data-count"] == "0" and "No alerts" in text["id=alerts"]
        # totals: committed rows from the writer, live message rate over all workers
        assert _number(text["id=totals/field=trades_count"]) > 0
        assert _number(text["id=totals/field=candles_count"]) >= 0
        assert _number(text["id=totals/field=msgs_rate"]) > 0
        # one row per worker with its symbols, a non-zero rate, a recent event
        symbols = 0
        for w in range(1, WORKERS + 1):
            row = f"id=workers/worker={w}"
            symbols += int(_number(text[f"{row}/field=symbols"]))
            assert _number(text[f"{row}/field=msgs_rate"]) > 0, (polls, text)
            assert _number(text[f"{row}/field=kept_time_interval"]) >= 0
            assert re.fullmatch(r"[\d.]+ s ago", text[f"{row}/field=last_event"]), text[f"{row}/field=last_event"]
            assert _number(text[f"{row}/field=reconnects"]) >= 0
        assert symbols == SYMBOLS
        # the one venue: its workers summed, receiving, rows handed to the writer
        venue = "id=venues/venue=binance"
        assert text[f"{venue}/field=connection"] == "receiving" and text[f"{venue}/field=workers_up"] == "2 / 2"
        assert _number(text[f"{venue}/field=symbols"]) == SYMBOLS and _number(text[f"{venue}/field=msgs_rate"]) > 0
        assert _number(text[f"{venue}/field=rows_trades"]) > 0 and _number(text[f"{venue}/field=frame_errors"]) == 0
        # the writer: rows committed per second, pending and spool
        assert _number(text["id=writer/field=rows_rate"]) > 0
        assert _number(text["id=writer/field=pending_rows"]) >= 0
        assert _number(text["id=writer/field=spooled_batches"]) == 0
        # tiers: symbols per tier add up, the top symbols carry a dollar threshold
        counts = [int(_number(v)) for k, v in text.items() if re.fullmatch(r"id=tiers/id=tier-counts/tier=\d/field=symbols", k)]
        assert sum(counts) == SYMBOLS, text
        tops = [v for k, v in text.items() if re.fullmatch(r"id=tiers/id=tier-top/symbol=\w+/field=threshold", k)]
        assert tops and all(_number(v) > 0 for v in tops), tops

        shot = tmp_path / "status.png"
        run = _run_chromium(chromium, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1280,900",
                            url + "/")
        assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
        width, height, pixels = _png_pixels(shot)
        assert (width, height) == (1280, 900)
        assert len(pixels) > 20, f"screenshot looks blank: {len(pixels)} distinct colours"
        if os.environ.get("STATUS_PAGE_SCREENSHOT"):  # keep it for a person to look at
            shutil.copy(shot, os.environ["STATUS_PAGE_SCREENSHOT"])
    finally:
        sup.stop()
        sim.stop()
