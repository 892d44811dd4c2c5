"""Spool files: the versioned format (collector.transport.frames), the committed fixtures that pin it, and the previous
release's pickle files, which are replayed once instead of being set aside."""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

import psycopg
import pytest
from spool_fixture import fixture_batches

from collector.pipeline.encode import COLUMNS
from collector.transport.frames import (
    SPOOL_VERSION,
    SpoolFormatError,
    decode_spool,
    encode_spool,
    upgrade_batches,
)
from collector.writer.service import Writer
from collector.writer.spool import Spool, SpoolFile

DATA = Path(__file__).parents[1] / "data"


FIXTURE_TABLES = ("trades", "funding", "candles_1m", "liquidations")


def test_the_committed_spool_file_still_decodes() -> None:
    """tests/data/spool-v1.spool was written by the release that introduced the format. If this fails, a change
    broke the files a running collector may have on disk during an upgrade: keep reading format 1. It predates
    the venue column: its tuples are read with the venue added as 'binance' (every row before was Binance's)."""
    path = DATA / "spool-v1.spool"
    batches, columns = decode_spool(path.read_bytes())
    assert columns == {t: tuple(c for c in COLUMNS[t] if c != "venue") for t in FIXTURE_TABLES}
    assert batches != fixture_batches()  # as written: no venue field
    assert upgrade_batches(batches, columns) == fixture_batches()
    assert Spool.read(SpoolFile(path, 1, 4, path.stat().st_size)) == fixture_batches()


def test_encoding_is_stable_and_round_trips() -> None:
    """tests/data/spool-v1-venue.spool: format 1 as written since the venue column (schema version 6)."""
    assert encode_spool(fixture_batches()) == (DATA / "spool-v1-venue.spool").read_bytes()
    batches, columns = decode_spool((DATA / "spool-v1-venue.spool").read_bytes())
    assert batches == fixture_batches() and columns == {t: COLUMNS[t] for t in FIXTURE_TABLES}
    assert upgrade_batches(batches, columns) == batches  # nothing to add
    assert decode_spool(encode_spool([]))[0] == []


def test_an_old_tuple_that_does_not_match_its_columns_is_refused() -> None:
    batches, columns = decode_spool((DATA / "spool-v1.spool").read_bytes())
    with pytest.raises(SpoolFormatError, match="truncated tuple"):
        upgrade_batches([dataclasses.replace(batches[0], data=batches[0].data[:-3])], columns)
    with pytest.raises(SpoolFormatError, match="a tuple of 10 fields, expected 9"):
        upgrade_batches(batches[:1], {"trades": columns["trades"][:-1]},
                        {"trades": tuple(c for c in COLUMNS["trades"] if c != "last_trade_id")})


@pytest.mark.parametrize(("mangle", "message"), [
    (lambda b: b[:-1], "truncated"),
    (lambda b: b[:40], "truncated"),
    (lambda b: b"PK" + b[2:], "not a spool file"),
    (lambda b: b[:8] + (SPOOL_VERSION + 1).to_bytes(2, "big") + b[10:], "spool format 2, this release reads format 1"),
    (lambda b: b + b"\x00", "truncated"),
])
def test_damaged_or_newer_files_are_refused(mangle, message: str) -> None:
    with pytest.raises(SpoolFormatError, match=message):
        decode_spool(mangle((DATA / "spool-v1.spool").read_bytes()))


def _legacy_file(spool_dir: Path, seq: int = 1) -> Path:
    spool_dir.mkdir(parents=True, exist_ok=True)
    dest = spool_dir / f"pending-{seq:020d}-4.pkl"
    shutil.copy(DATA / "spool-legacy.pkl", dest)
    return dest


def test_the_previous_releases_pickle_file_is_read(tmp_path: Path) -> None:
    """tests/data/spool-legacy.pkl was written by the previous release's Spool.write (a pickle)."""
    path = _legacy_file(tmp_path)
    assert Spool.read(SpoolFile(path, 1, 4, path.stat().st_size)) == fixture_batches()


def test_a_pickle_naming_anything_but_batches_is_not_unpickled(tmp_path: Path) -> None:
    import pickle

    path = tmp_path / "pending-00000000000000000001-1.pkl"
    path.write_bytes(pickle.dumps([logging.getLogger]))
    with pytest.raises(pickle.UnpicklingError, match="logging.getLogger has no place in a spool file"):
        Spool.read(SpoolFile(path, 1, 1, path.stat().st_size))


def _rows(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # type: ignore[index]
                for t in ("trades", "funding", "candles_1m", "liquidations")}


def test_an_upgrade_during_an_outage_replays_the_old_files_then_the_new(db_url: str, tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    spool_dir = tmp_path / "spool"
    _legacy_file(spool_dir, seq=1)  # left by the previous release, the oldest
    shutil.copy(DATA / "spool-v1.spool", spool_dir / "pending-00000000000000000002-4.spool")
    w = Writer(db_url, mode="postgres", spool_dir=spool_dir)
    assert w.stats.spooled_batches == 8
    with caplog.at_level(logging.INFO, logger="collector.writer.outage"):
        while w.spool_waiting():
            assert w.flush()
    # the same rows twice over: the second file adds nothing (ON CONFLICT path), nothing is set aside
    assert _rows(db_url) == {"trades": 3, "funding": 1, "candles_1m": 1, "liquidations": 1}
    assert not list(spool_dir.iterdir()) and w.stats.spooled_batches == 0
    assert "replayed spool file pending-00000000000000000001-4.pkl (4 batches)" in caplog.text
    w.close()


def test_a_file_with_other_columns_is_set_aside_with_the_reason(db_url: str, tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    other = {**COLUMNS, "funding": (*COLUMNS["funding"], "premium")}
    (spool_dir / "pending-00000000000000000001-1.spool").write_bytes(
        encode_spool(fixture_batches()[1:2], other))
    w = Writer(db_url, mode="postgres", spool_dir=spool_dir)
    assert w.flush()
    assert [p.name for p in spool_dir.iterdir()] == ["corrupt-pending-00000000000000000001-1.spool"]
    assert "funding: the file's columns" in (w.stats.last_error or "") and "premium" in w.stats.last_error
    w.close()


def test_a_spool_directory_that_cannot_be_written_fails_at_once(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError):
        Spool(tmp_path / "file" / "spool")
