"""The outage spool: batches on disk while the database cannot take them, durable before acknowledged.

The writer (collector.writer.service) decides when to spool and replays the files; this module only writes,
indexes, reads and removes them. The file format is collector.transport.frames' versioned spool format.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collector.pipeline.batches import Batch
from collector.pipeline.encode import COLUMNS
from collector.transport.frames import (
    ADDED_COLUMNS,
    decode_spool,
    encode_spool,
    upgrade_batches,
)

log = logging.getLogger(__name__)

# One spool file holds at most this much: a replay step loads one file, so this bounds how long a replay
# keeps the loop from reading the sockets (a 16 MB COPY takes a fraction of a second).
SPOOL_FILE_MAX_BYTES = 16 << 20
# Disk the spool may use (config writer.spool_max_mb overrides): ~minutes to hours of filtered traffic.
SPOOL_MAX_BYTES = 2048 << 20

# pending-<seq>-<batches>.spool (collector.transport.frames' spool format); .pkl: the previous release's pickles,
# still read (once: replayed, then deleted) so that an upgrade during an outage loses nothing.
_SPOOL_RE = re.compile(r"^pending-(?P<seq>\d+)-(?P<batches>\d+)\.(?:spool|pkl)$")


class _LegacyBatch:
    """A Batch as the previous release pickled it: created empty, then given its field values as one list, in
    field order (two trailing fields since dropped). Read into this plain class and then made a Batch, not
    unpickled as Batch itself: a compiled Batch (collector.native) is not created that way."""

    state: list[Any]

    def __setstate__(self, state: list[Any]) -> None:
        self.state = state

    def batch(self) -> Batch:
        table, rows, data, first_event_ms, last_event_ms, created_ms = self.state[:6]
        return Batch(table, rows, data, first_event_ms, last_event_ms, created_ms)


class _LegacyUnpickler(pickle.Unpickler):
    """Reads the previous release's pickled spool files: a list of Batch, nothing else. That release pickled
    Batch under its module of the time, collector.encode (now collector.pipeline.batches): the name is fixed in
    the files, so it must not follow the module."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collector.encode", "Batch"):
            return _LegacyBatch
        raise pickle.UnpicklingError(f"{module}.{name} has no place in a spool file")


@dataclass(frozen=True)
class SpoolFile:
    """One spool file; the name carries its order and batch count so a restart needs to read no file."""

    path: Path
    seq: int
    batches: int
    nbytes: int


def _fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable: without it a crash can forget a file whose contents were fsync'd."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """Batches on disk, oldest first: durable before they are acknowledged, deleted once committed.

    Files are written whole to a .tmp, fsync'd, renamed (atomic) and the directory fsync'd, so a reader never
    sees half a file and an acknowledged batch survives kill -9 or a power cut. Bounded by `max_bytes`.
    """

    def __init__(self, directory: Path, max_bytes: int = SPOOL_MAX_BYTES) -> None:
        self.dir = Path(directory)
        self.max_bytes = max_bytes
        self.files: list[SpoolFile] = []  # pending files, oldest first
        self._last_seq = 0
        self._check_writable()
        self.scan()

    def _check_writable(self) -> None:
        """Create the directory and write a file into it now, at boot: a spool that cannot be written must
        stop the start (OSError, a boot error), not be discovered in the middle of a database outage."""
        self.dir.mkdir(parents=True, exist_ok=True)
        probe = self.dir / f".probe-{os.getpid()}.tmp"
        try:
            with open(probe, "wb") as f:
                f.write(b"probe")
                os.fsync(f.fileno())
        finally:
            probe.unlink(missing_ok=True)

    @property
    def nbytes(self) -> int:
        return sum(f.nbytes for f in self.files)

    @property
    def nbatches(self) -> int:
        return sum(f.batches for f in self.files)

    def scan(self) -> None:
        """Index what a previous writer left; remove its half-written .tmp files (never acknowledged)."""
        self.files = []
        if not self.dir.exists():
            return
        for tmp in self.dir.glob("*.tmp"):
            tmp.unlink(missing_ok=True)
        for path in self.dir.glob("pending-*"):
            m = _SPOOL_RE.match(path.name)
            if m is None:
                log.error("spool: ignoring unexpected file %s", path)
                continue
            self.files.append(SpoolFile(path, int(m["seq"]), int(m["batches"]), path.stat().st_size))
        self.files.sort(key=lambda f: f.seq)
        self._last_seq = max((f.seq for f in self.files), default=0)

    def fits(self, nbytes: int) -> bool:
        return self.nbytes + nbytes <= self.max_bytes

    def write(self, batches: list[Batch]) -> SpoolFile | None:
        """Persist `batches` as the newest file; None when it would exceed max_bytes. Raises OSError."""
        payload = encode_spool(batches)
        if not self.fits(len(payload)):
            return None
        seq = max(time.time_ns(), self._last_seq + 1)  # strictly increasing even if the clock steps back
        path = self._write_file(f"pending-{seq:020d}-{len(batches)}.spool", payload)
        self._last_seq = seq
        f = SpoolFile(path, seq, len(batches), len(payload))
        self.files.append(f)
        return f

    def write_aside(self, batches: list[Batch], prefix: str) -> Path:
        """A file for a human (e.g. batches the database rejected): not replayed, not counted."""
        return self._write_file(f"{prefix}-{time.time_ns():020d}-{os.getpid()}.spool", encode_spool(batches))

    def _write_file(self, name: str, payload: bytes) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / name
        tmp = path.with_suffix(".tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, path)
            _fsync_dir(self.dir)
        except OSError:
            tmp.unlink(missing_ok=True)
            path.unlink(missing_ok=True)  # not durable, so not acknowledged: the batches stay in memory
            raise
        return path

    @staticmethod
    def read(f: SpoolFile) -> list[Batch]:
        """The file's batches. Raises OSError, SpoolFormatError (a ValueError), or for a legacy pickle file
        pickle.UnpicklingError / EOFError. A file written before a table gained a column (every table's
        venue, schema version 6) has the column's constant added (collector.transport.frames.upgrade_batches);
        any other difference from this release's columns is refused (SpoolFormatError) rather than loaded
        into the wrong columns."""
        data = f.path.read_bytes()
        if f.path.suffix == ".pkl":
            loaded = _LegacyUnpickler(io.BytesIO(data)).load()
            if not isinstance(loaded, list) or not all(isinstance(b, _LegacyBatch) for b in loaded):
                raise pickle.UnpicklingError("a legacy spool file holds a list of batches")
            try:
                batches = [b.batch() for b in loaded]
            except (AttributeError, ValueError, TypeError) as e:
                raise pickle.UnpicklingError(f"a legacy spool file's batch is not one: {e}") from None
            # that release's tuples carried every column but those added since (the venue)
            return upgrade_batches(batches, {t: tuple(c for c in cols if c not in ADDED_COLUMNS)
                                             for t, cols in COLUMNS.items()})
        batches, columns = decode_spool(data)
        return upgrade_batches(batches, columns)

    def remove(self, f: SpoolFile) -> None:
        """Forget a file whose batches are committed (the only way a pending file leaves the spool)."""
        f.path.unlink(missing_ok=True)
        self.files.remove(f)

    def set_aside(self, f: SpoolFile) -> Path:
        """Rename an unreadable file to corrupt-*, out of the replay order, for a human to inspect."""
        dest = f.path.with_name("corrupt-" + f.path.name)
        os.rename(f.path, dest)
        self.files.remove(f)
        return dest
