"""Shared benchmark plumbing: /proc accounting, the simulator, a throwaway PostgreSQL, medians, output.

Why /proc instead of psutil: it is what the kernel charges each process (utime+stime), costs one read per
sample, and needs no extra dependency. PSS (proportional set size, from smaps_rollup) is the honest memory
figure for a multi-process collector: pages shared between workers (the interpreter, cryptofeed) are split
between them instead of being counted once per process as RSS does.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from collector.db.embedded import EmbeddedPostgres
from exchange_sim.config import SimConfig
from exchange_sim.runner import SimProcess, launch_subprocess

ROOT = Path(__file__).resolve().parents[1]
# A benchmark re-run against a snapshot of the product (writer.py) still writes next to the caller's checkout.
RESULTS = Path(os.environ.get("BENCH_RESULTS_DIR", ROOT / "bench" / "results"))
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Memory/CPU sampling period: fine enough to catch a peak within a 5 s window, cheap enough (a few /proc
# reads per process) not to show up in the 2-core machine's budget.
SAMPLE_PERIOD_S = 0.5
# How long the workers' received counters (/stats) must stay unchanged before a drain counts as finished: a
# quiet worker copies them into shared memory up to 3 s after they last changed (collector.runtime.worker.
# STATS_PUBLISH_S + MAX_SLEEP_S), so a shorter look could see an old copy twice and call that the end.
DRAIN_QUIET_S = 3.5

# --- session directories ------------------------------------------------------------------------------------


def leave_session_dir(tmp: Path, ok: bool, what: str) -> None:
    """A session's directory (its config and logs): removed when the session went well, else kept and named,
    since its logs say why (a connection cut, a stall, a repair still running, the signal that stopped it)."""
    if ok:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"  {what} failed or was not sustained: its config and logs are kept in {tmp}", file=sys.stderr,
              flush=True)


# How long a supervisor still running when its session ends (the benchmark was interrupted, or failed midway)
# gets to stop its own tree before the tree is killed: its own stop removes its shared memory and run directory,
# which a kill leaves behind until the next collector's start sweeps them (collector.runtime.run_dir). A stop
# drains the workers and flushes the writer: seconds, not tens of seconds.
END_GRACE_S = 20.0


def end_supervisor(sup: subprocess.Popen[bytes] | None, grace_s: float = END_GRACE_S) -> None:
    """Make sure a supervisor started in a session of its own is gone, with its whole tree.

    Still running: SIGTERM, as a user stops it, and up to `grace_s` for it to stop its children and remove what
    it created; then (and after a clean stop, where it is a no-op) SIGKILL to the session's process group, so no
    worker, writer or forkserver outlives the benchmark."""
    if sup is None:
        return
    if sup.poll() is None:
        sup.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            sup.wait(grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(sup.pid, signal.SIGKILL)
    sup.wait()


# --- signals ------------------------------------------------------------------------------------------------


def stop_on_signals() -> None:
    """Make SIGTERM and SIGHUP unwind the script like Ctrl-C, so its `finally` blocks stop what it started.

    Why: Python's default SIGTERM (and a closed terminal's SIGHUP) ends the process at once, without running
    `finally`, so a killed benchmark left its supervisor, workers, simulator and throwaway PostgreSQL running
    (they are started in their own sessions to be measured apart, so nothing else stops them) and the next
    run measured beside them. The first signal raises SystemExit(128 + signal) in the main thread; further ones
    are ignored while the cleanup runs (SIGKILL still ends it, and then leaves the processes behind).
    """
    def _unwind(signum: int, _frame: object) -> None:
        for s in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        print(f"{signal.Signals(signum).name}: stopping what this run started", file=sys.stderr, flush=True)
        raise SystemExit(128 + signum)

    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _unwind)


# --- /proc --------------------------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as fp:
        return fp.read().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (its threads included; reaped children excluded)."""
    f = _stat_fields(pid)
    return (int(f[11]) + int(f[12])) / CLK_TCK


def _status_value(path: str, key: str) -> int:
    """The number after `key` in a /proc status file (kB for sizes, a count for context switches); 0 if absent."""
    with open(path) as fp:
        for line in fp:
            if line.startswith(key):
                return int(line.split()[1])
    return 0


def rss_kb(pid: int) -> int:
    return _status_value(f"/proc/{pid}/status", "VmRSS:")


def wakeups(pid: int) -> int:
    """Voluntary context switches so far, of every thread the process has now: each is a thread going to sleep
    (in epoll, select, a lock) and being woken again, so their rate is how often it wakes up, whatever woke
    it (a socket read, a timer). Every thread, not /proc/<pid>/status alone: that counts the main thread only,
    and the supervisor's HTTP and coordinator threads wake on their own (a thread that ended is not counted)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            total += _status_value(f"/proc/{pid}/task/{tid}/status", "voluntary_ctxt_switches:")
    return total


def pss_kb(pid: int) -> int:
    """Proportional set size: shared pages divided among the processes mapping them."""
    with open(f"/proc/{pid}/smaps_rollup") as fp:
        for line in fp:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def read_bytes(pid: int) -> int:
    """Bytes this process passed through read()-family syscalls (`rchar`): uvloop reads sockets with
    read(), so for a worker this is essentially what it took off its WebSocket connections."""
    with open(f"/proc/{pid}/io") as fp:
        for line in fp:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    return 0


def proc_name(pid: int) -> str:
    """The process title (setproctitle names the collector's children) or its command line."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fp:
            raw = fp.read().replace(b"\0", b" ").strip()
    except OSError:
        return "?"
    return raw.decode("utf-8", "replace")[:60]


def process_tree(root: int) -> list[int]:
    """root and all its live descendants (by scanning /proc for parent pids)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(_stat_fields(int(entry))[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(parents.get(pid, []))
    return out


@dataclass
class ProcStats:
    name: str
    cpu0: float
    cpu1: float = 0.0
    peak_rss_kb: int = 0
    peak_pss_kb: int = 0


@dataclass
class TreeSampler:
    """Samples a process tree in a background thread: CPU at start/stop of a window, peak RSS/PSS.

    `window_start()` / `window_stop()` bracket one measurement window; CPU is the utime+stime delta of each
    process inside it, memory is the peak seen while sampling (the whole session, since memory only grows
    with the backlog and the symbol count, not with the window).
    """

    root: int
    procs: dict[int, ProcStats] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> TreeSampler:
        self._thread = threading.Thread(target=self._run, name="tree-sampler", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_PERIOD_S):
            self.sample()

    def sample(self) -> None:
        for pid in process_tree(self.root):
            with contextlib.suppress(OSError):
                rss, pss = rss_kb(pid), pss_kb(pid)
                with self._lock:
                    p = self.procs.get(pid)
                    if p is None:
                        p = self.procs[pid] = ProcStats(proc_name(pid), cpu_seconds(pid))
                    p.name = proc_name(pid)  # children set their title after start-up
                    p.peak_rss_kb = max(p.peak_rss_kb, rss)
                    p.peak_pss_kb = max(p.peak_pss_kb, pss)

    def cpu_now(self) -> dict[int, float]:
        out = {}
        for pid in process_tree(self.root):
            with contextlib.suppress(OSError):
                out[pid] = cpu_seconds(pid)
        return out

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


def label(name: str) -> str:
    """Short role of a collector process from its title."""
    if "collector: " in name:
        return name.split("collector: ", 1)[1].split(" (")[0]
    if "resource_tracker" in name:
        return "mp resource tracker"
    if "supervisor.py" in name:
        return "supervisor"
    return name[:30]


# --- simulator ----------------------------------------------------------------------------------------------


def http_json(url: str, timeout: float = 30.0) -> object:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback simulator
        return json.loads(resp.read())


@contextlib.contextmanager
def simulator(rate: float, symbols: int = 496, seed: int = 7) -> Iterator[SimProcess]:
    """The simulator as its own process (so its CPU is not charged to what is measured); always stopped."""
    sim = launch_subprocess(SimConfig(port=0, symbols=symbols, rate=rate, seed=seed))
    try:
        yield sim
    finally:
        sim.stop()


@dataclass
class SentTotals:
    """What the simulator wrote to its WebSocket connections so far (ground truth)."""

    frames: int
    bytes: int
    agg_trades: int
    wall: float


def sent_totals(rest: str) -> SentTotals:
    doc = http_json(rest + "/_sim/truth?klines=0")
    assert isinstance(doc, dict)
    conns = doc["connections"]
    trades = sum(s["aggTrade"] for s in doc["symbols"].values())
    return SentTotals(sum(c["frames"] for c in conns), sum(c["bytes"] for c in conns), trades, time.time())


def sim_clock_offset_ms(rest: str) -> float:
    """wall ms - sim ms (the sim's clock starts at the minute floor); half the round trip is the error."""
    t0 = time.time()
    server = http_json(rest + "/fapi/v1/time")["serverTime"]  # type: ignore[index]
    t1 = time.time()
    return (t0 + t1) / 2 * 1000 - server


def wait_for(pred: Callable[[], object], timeout: float, what: str, poll: float = 0.2) -> object:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(poll)


# --- PostgreSQL ---------------------------------------------------------------------------------------------


# The two servers a benchmark can run against (--server): "fast" = fsync, synchronous_commit and
# full_page_writes off (the test setting: commits never wait for the disk); "durable" = PostgreSQL's defaults
# (fsync on, synchronous_commit on): what a production server does, every commit waits for its WAL flush.
SERVERS = {"fast": "fsync off (fast, non-durable)", "durable": "fsync on (durable, PostgreSQL defaults)"}


@contextlib.contextmanager
def throwaway_postgres(server: str = "fast") -> Iterator[str]:
    """A private PostgreSQL server (admin URL), `server` one of SERVERS; removed on exit."""
    if server not in SERVERS:
        raise ValueError(f"--server: {server!r} is not one of {sorted(SERVERS)}")
    # track_commit_timestamp: latency_ms() and commits() read each row's commit time
    pg = EmbeddedPostgres(durable=server == "durable", settings={"track_commit_timestamp": "on"})
    pg.start()
    try:
        yield pg.admin_url
    finally:
        pg.stop()


def new_database(admin_url: str, prefix: str) -> str:
    """A fresh database on the throwaway server, so runs never see each other's rows."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(admin_url)
    params["dbname"] = name
    return make_conninfo(**params)


def drop_database(admin_url: str, dsn: str) -> None:
    name = conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postmaster_pid(admin_url: str) -> int:
    """The server's root process; process_tree(it) at a given moment lists its backends too."""
    with psycopg.connect(admin_url) as conn:
        datadir = conn.execute("SHOW data_directory").fetchone()[0]  # type: ignore[index]
    with open(Path(datadir) / "postmaster.pid") as fp:
        return int(fp.readline())


def tree_cpu(root: int) -> dict[int, float]:
    """utime+stime of root and every live descendant, by pid."""
    out = {}
    for pid in process_tree(root):
        with contextlib.suppress(OSError):
            out[pid] = cpu_seconds(pid)
    return out


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU spent between two tree_cpu() readings: a process born in between is charged all its CPU; one that
    exited in between is lost (PostgreSQL backends of a pooled client live for the whole session)."""
    return sum(c - before.get(pid, 0.0) for pid, c in after.items())


def table_bytes(dsn: str, tables: Sequence[str] | None = None) -> dict[str, int]:
    """pg_total_relation_size (heap + indexes + TOAST) per table, partitions summed (a partitioned parent
    has no storage of its own; pg_partition_tree lists the parent and every partition). Default: every
    top-level table of the public schema."""
    out = {}
    with psycopg.connect(dsn) as conn:
        if tables is None:
            tables = [r[0] for r in conn.execute(
                "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p')"
                " AND NOT relispartition ORDER BY relname")]
        for t in tables:
            row = conn.execute("SELECT coalesce(sum(pg_total_relation_size(relid)), 0) FROM pg_partition_tree(%s)",
                               (t,)).fetchone()
            out[t] = int(row[0]) if row else 0
    return out


def timescaledb_available(admin_url: str) -> bool:
    """Whether the server can load TimescaleDB (pg_available_extensions); the bench then says so."""
    with psycopg.connect(admin_url) as conn:
        return conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone() is not None


def conditions(command: Sequence[str], product: str, server: str) -> str:
    """One line saying what produced the numbers that follow: printed beside every table."""
    return (f"command: {' '.join(command)} | product: {product} | server: {SERVERS.get(server, server)} | "
            f"reference loop {speed_probe():.0f} ms CPU")


def speed_probe(reps: int = 5) -> float:
    """CPU milliseconds of a fixed pure-Python loop (median of `reps`): how fast this machine runs Python now.

    Why: the 2 cores are virtual and report no steal time, so while the host is busy every process is charged
    more CPU for the same work. On 2026-12-04 a loop five times this one took 700-1,270 ms minutes apart on an
    otherwise quiet machine, and the same tree's CPU differed ~2x between sittings. Absolute CPU figures of
    two sittings compare only beside this number (printed with each script's conditions line, which soak.py prints at the
    start and the others with their final report, and again by write_results, which stores it); ratios
    measured in one invocation do not need it.
    """
    times = []
    for _ in range(reps):
        t = time.process_time()
        sum(i * i for i in range(2_000_000))
        times.append(time.process_time() - t)
    return statistics.median(times) * 1000


# --- numbers and output -------------------------------------------------------------------------------------


def median(xs: Sequence[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return statistics.median(vals) if vals else None


def percentile(xs: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))]


def machine() -> dict:
    model = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fp:
        for line in fp:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    pg = subprocess.run(["psql", "--version"], capture_output=True, text=True, check=False).stdout.strip()
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version(), "postgres": pg,
            "kernel": platform.release()}


def results_stem(name: str) -> str:
    """`<name>-<date>`, or `<name>-<date>-2`, -3... when a run of the same day already wrote that one: one
    day's runs never overwrite each other's results (a figure quoted in a README keeps its file)."""
    base = f"{name}-{dt.date.today().isoformat()}"
    stem, n = base, 1
    while any((RESULTS / f"{stem}{ext}").exists() for ext in (".json", ".png")):
        n += 1
        stem = f"{base}-{n}"
    return stem


def write_results(name: str, payload: dict, stem: str | None = None) -> Path:
    """The results as bench/results/<stem>.json (default: a new results_stem(name))."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{stem or results_stem(name)}.json"
    end_probe = speed_probe()
    print(f"reference loop at the end: {end_probe:.0f} ms CPU")
    path.write_text(json.dumps({"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                                "machine": machine(), "reference_loop_ms_end": round(end_probe),
                                **payload}, indent=2, default=str))
    return path


def fmt(v: object, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float) and abs(v) < 10:
        return f"{v:.{digits + 2}f}"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def print_table(rows: list[dict], cols: list[tuple[str, str]], title: str = "") -> None:
    """rows of dicts as an aligned text table; cols = [(key, header)]."""
    if title:
        print(f"\n{title}")
    cells = [[h for _, h in cols]] + [[fmt(r.get(k)) for k, _ in cols] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    for i, row in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def sent_totals_by_stream(rest: str) -> dict[str, int]:
    """Events the simulator actually sent, by stream kind (aggTrade, markPrice, forceOrder, kline_1m, ...),
    summed over every connection: what a lossless collector must have received."""
    doc = http_json(rest + "/_sim/truth?klines=0")
    assert isinstance(doc, dict)
    out: dict[str, int] = {}
    for c in doc["connections"]:
        for stream, n in c["sent"].items():
            kind = stream.split("@", 1)[1] if "@" in stream else stream
            out[kind] = out.get(kind, 0) + n
    return out


def _ts(ms: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def rows_per_table(dsn: str, tables: dict[str, str], span_ms: tuple[float, float]) -> dict[str, int]:
    """Rows whose event time (column tables[t]) falls in span_ms (sim ms), per table: counted once, after the
    run drained, so counting never competes with the writes being measured."""
    out = {}
    with psycopg.connect(dsn) as conn:
        for table, col in tables.items():
            out[table] = conn.execute(f'SELECT count(*) FROM {table} WHERE "{col}" >= %s AND "{col}" < %s',
                                      (_ts(span_ms[0]), _ts(span_ms[1]))).fetchone()[0]  # type: ignore[index]
    return out


def latency_ms(dsn: str, table: str, col: str, span_ms: tuple[float, float], offset_ms: float,
               ) -> tuple[float | None, float | None]:
    """p50/p99 event-to-commit for rows with event time in span_ms: the commit time of the transaction that
    inserted the row (`pg_xact_commit_timestamp(xmin)`: the server runs with track_commit_timestamp, see
    throwaway_postgres) - the exchange's event time moved to the wall clock by the sim's offset. The commit,
    not the insert: a row is not visible to readers before it, and a COPY's rows are inserted up to the
    whole COPY's duration earlier."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            f"SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY"
            f' extract(epoch FROM pg_xact_commit_timestamp(xmin) - "{col}") * 1000 - %s) FROM {table}'
            f' WHERE "{col}" >= %s AND "{col}" < %s', (offset_ms, _ts(span_ms[0]), _ts(span_ms[1]))).fetchone()
    vals = row[0] if row else None
    return (vals[0], vals[1]) if vals else (None, None)


def commits(dsn: str, tables: Iterable[str], wall_s: tuple[float, float]) -> tuple[int, int]:
    """(transactions, rows) that committed rows into `tables` between the two wall times: the COPYs (or
    INSERT transactions) the writer made in a window and the rows they stored, from the rows' xmin."""
    union = " UNION ALL ".join(f"SELECT xmin::text AS x FROM {t} WHERE pg_xact_commit_timestamp(xmin) >= %(a)s"
                               f" AND pg_xact_commit_timestamp(xmin) < %(b)s" for t in tables)
    with psycopg.connect(dsn) as conn:
        row = conn.execute(f"SELECT count(DISTINCT x), count(*) FROM ({union}) u",
                           {"a": _ts(wall_s[0] * 1000), "b": _ts(wall_s[1] * 1000)}).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def extract_revision(rev: str, dest: Path) -> None:
    """Write the files of git revision `rev` into the directory `dest` (`git archive | tar -x`): what every
    script that measures a committed tree runs. SystemExit with git's message for an unknown revision."""
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True)
    if archive.returncode:
        raise SystemExit(f"git archive {rev}: {archive.stderr.decode(errors='replace').strip()}")
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)


def tree_status(tree: Path) -> str:
    """Whether a product tree's pipeline runs compiled, and why not (collector.native's STATUS, read there)."""
    status = subprocess.run([sys.executable, "-c", "import collector; print(collector.native.STATUS.detail)"],
                            cwd=tree, capture_output=True, text=True)
    if status.returncode:
        return "pure Python (the tree predates collector.native)"
    return status.stdout.strip()


def build_native(tree: Path) -> str:
    """Compile a product tree's hot pipeline modules as `make native` does on a user's machine
    (collector.native_build), so that a snapshot measures what an install runs; returns the tree's status line
    (compiled, or why its Python source runs: no compiler, or a revision from before collector.native)."""
    if not (tree / "collector" / "native_build.py").is_file():
        return "pure Python (the revision predates collector.native)"
    built = subprocess.run([sys.executable, "-m", "collector.native_build", "--optional"], cwd=tree,
                           capture_output=True, text=True)
    if built.returncode:
        raise SystemExit(f"{tree}: collector.native_build failed: {(built.stderr or built.stdout).strip()[-2000:]}")
    return tree_status(tree)


@contextlib.contextmanager
def product_source(src: str | None) -> Iterator[tuple[Path, str]]:
    """(directory to run supervisor.py from, what it is). Default: a snapshot of the committed HEAD
    (`git archive`), because other engineers edit the working tree while benchmarks run and a half-edited
    tree measures nothing reproducible, with its hot modules compiled as `make native` does (build_native);
    `--src .` measures the working tree as it is (compiled or not: collector.native decides, the line says)."""
    if src:
        tree = Path(src).resolve()
        yield tree, f"working tree {tree} ({tree_status(tree)})"
        return
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="bench-src-") as d:
        extract_revision("HEAD", Path(d))
        yield Path(d), f"git HEAD {commit} ({build_native(Path(d))})"
