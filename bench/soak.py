#!/usr/bin/env python3
"""Soak: CPU and PSS of every collector process over a long session, to JSON and a PNG (issue 12).

Why: the other benchmarks' windows are seconds to minutes long, so work with a longer period - open interest
every 5 min, the 10-minute tier warm-up ending, hourly maintenance, tier recomputation - and slow memory
growth never show up in them. One session: fresh simulator at `--rate` aggTrades/s (default 5,000, 496
symbols), fresh database on a throwaway PostgreSQL server (`--server fast|durable`), the real
`supervisor.py --workers N` (default 8, the shipped command; filtered unless --keep-all) for `--duration`
seconds (default 3600). Every `--every` seconds, for every process in the supervisor's tree (found afresh
each time, so a restarted worker shows up) and for the PostgreSQL server's tree:

- CPU: utime+stime from /proc/<pid>/stat; the plot and table show cores = CPU-seconds per interval / wall
  seconds per interval, summed per role (workers summed);
- PSS: `Pss:` from /proc/<pid>/smaps_rollup, summed per role; RSS, Private_Dirty and Pss_File beside it in
  the JSON. A process's PSS also moves when processes outside the tree start or stop mapping the same files
  (the python binary, shared libraries: every Python process on a shared machine maps them): that is
  Pss_File, while anonymous and shared-memory pages are shared within the tree only. So two more growth
  figures are reported: PSS without Pss_File, and Private_Dirty (heap, copy-on-write copies, shm pages only
  that process maps), which no other process moves;
- the 1-minute load average (the machine may be shared: say how busy it was).

Reported: **PSS growth after the settle time** (`--settle`, default 600 s = the first 10 minutes) = (total
PSS at the last sample - total PSS at the first sample at or after the settle time) / the latter, in %;
the target is < 2% for a 1-hour soak at 5,000/s. Also the mean CPU cores after the settle time. At the end
the simulator is paused, the collector drained and stopped, and the trades table is checked against the
workers' logged kept counters (bench.peer.exact_verdict), so a soak that loses rows does not pass.

    python bench/soak.py                                  # 1 h at 5,000/s, N=8: ~62 min
    python bench/soak.py --duration 120 --settle 60 --rate 500 --symbols 20 --workers 2 --every 2   # smoke
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parents[1]))  # after PYTHONPATH: --src can win

from bench import common
from bench.peer import count_rows, exact_verdict
from bench.shipped import role
from bench.throughput import (
    BOOT_TIMEOUT_S,
    STOP_TIMEOUT_S,
    logged_kept,
    logged_received,
    open_connections,
    prepare_database,
    stable,
    workers_received,
    write_config,
)
from collector.db.embedded import free_port

TARGET_GROWTH_PCT = 2.0


def sample(sup_pid: int, postmaster: int) -> dict:
    """One reading: per pid of the collector tree (role, CPU s, PSS kB), and PostgreSQL's tree summed."""
    procs = {}
    for pid in common.process_tree(sup_pid):
        with contextlib.suppress(OSError):
            procs[pid] = {"role": role(pid), "cpu_s": common.cpu_seconds(pid), **smaps_kb(pid)}
    pg_cpu, pg_pss = 0.0, 0
    for pid in common.process_tree(postmaster):
        with contextlib.suppress(OSError):
            pg_cpu += common.cpu_seconds(pid)
            pg_pss += common.pss_kb(pid)
    return {"t": time.monotonic(), "procs": procs, "pg_cpu_s": pg_cpu, "pg_pss_kb": pg_pss,
            "load1": os.getloadavg()[0]}


def smaps_kb(pid: int) -> dict[str, int]:
    """PSS, RSS, Private_Dirty and Pss_File kB from /proc/<pid>/smaps_rollup: a PSS step with RSS and
    Private_Dirty flat is pages shared differently (another process mapping or dropping them), not memory
    allocated."""
    keys = {"Pss": "pss_kb", "Rss": "rss_kb", "Private_Dirty": "dirty_kb", "Pss_File": "pss_file_kb"}
    out = dict.fromkeys(keys.values(), 0)
    with open(f"/proc/{pid}/smaps_rollup") as fp:
        for line in fp:
            key, _, rest = line.partition(":")
            if key in keys:
                out[keys[key]] = int(rest.split()[0])
    return out


def _group(r: str) -> str:
    return "workers" if r.startswith("worker") else r


def series(samples: list[dict]) -> list[dict]:
    """Per interval: elapsed s (at its end), cores, PSS, RSS, Private_Dirty and Shared_Clean MB per role group,
    totals, PostgreSQL's cores, the load average."""
    out = []
    t0 = samples[0]["t"]
    for a, b in zip(samples, samples[1:], strict=False):
        dt = b["t"] - a["t"]
        cores: dict[str, float] = {}
        pss: dict[str, float] = {}
        extra: dict[str, dict[str, float]] = {"rss_mb": {}, "dirty_mb": {}, "pss_file_mb": {}}
        for pid, p in b["procs"].items():
            g = _group(p["role"])
            # a process born in the interval (a restart) is charged all its CPU
            cores[g] = cores.get(g, 0.0) + (p["cpu_s"] - a["procs"].get(pid, {}).get("cpu_s", 0.0)) / dt
            pss[g] = pss.get(g, 0.0) + p["pss_kb"] / 1024
            for k, d in extra.items():
                d[g] = d.get(g, 0.0) + p.get(k.replace("_mb", "_kb"), 0) / 1024
        out.append({"elapsed_s": round(b["t"] - t0, 1), "cores": cores, "pss_mb": pss, **extra,
                    "total_dirty_mb": sum(extra["dirty_mb"].values()),
                    "total_pss_no_file_mb": sum(pss.values()) - sum(extra["pss_file_mb"].values()),
                    "load1": b.get("load1"),
                    "total_cores": sum(cores.values()), "total_pss_mb": sum(pss.values()),
                    "pg_cores": (b["pg_cpu_s"] - a["pg_cpu_s"]) / dt, "pg_pss_mb": b["pg_pss_kb"] / 1024})
    return out


def growth(points: list[dict], settle_s: float) -> dict:
    """PSS growth from the first point at or after settle_s to the last point (None if none is that late)."""
    after = [p for p in points if p["elapsed_s"] >= settle_s]
    if len(after) < 2:
        return {"pss_growth_pct": None, "note": f"no samples after the {settle_s:.0f} s settle time"}
    first, last = after[0], after[-1]
    return {"pss_growth_pct": 100 * (last["total_pss_mb"] - first["total_pss_mb"]) / first["total_pss_mb"],
            "pss_at_settle_mb": first["total_pss_mb"], "pss_end_mb": last["total_pss_mb"],
            "from_s": first["elapsed_s"], "to_s": last["elapsed_s"],
            "mean_cores_after_settle": sum(p["total_cores"] for p in after) / len(after),
            "mean_pg_cores_after_settle": sum(p["pg_cores"] for p in after) / len(after),
            **{f"{name}_growth_pct": 100 * (last[key] - first[key]) / first[key]
               for name, key in (("dirty", "total_dirty_mb"), ("pss_no_file", "total_pss_no_file_mb"))},
            "dirty_at_settle_mb": first["total_dirty_mb"], "dirty_end_mb": last["total_dirty_mb"],
            "pss_no_file_at_settle_mb": first["total_pss_no_file_mb"], "pss_no_file_end_mb": last["total_pss_no_file_mb"],
            "load1_range": _load_range(points)}


def _load_range(points: list[dict]) -> tuple[float, float] | None:
    """(min, max) of the 1-minute load average over the session: the machine is shared, so say how busy."""
    loads = [p["load1"] for p in points if p.get("load1") is not None]
    return (min(loads), max(loads)) if loads else None


def plot(points: list[dict], title: str, path: Path, settle_s: float) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    groups = sorted({g for p in points for g in p["pss_mb"]})
    xs = [p["elapsed_s"] / 60 for p in points]
    fig, (ax_cpu, ax_pss) = plt.subplots(2, 1, sharex=True, figsize=(10, 7))
    for g in groups:
        ax_cpu.plot(xs, [p["cores"].get(g, 0.0) for p in points], label=g, linewidth=0.8)
        ax_pss.plot(xs, [p["pss_mb"].get(g, 0.0) for p in points], label=g, linewidth=0.8)
    ax_cpu.plot(xs, [p["total_cores"] for p in points], label="collector total", color="black", linewidth=1.2)
    ax_cpu.plot(xs, [p["pg_cores"] for p in points], label="PostgreSQL", color="grey", linestyle="--",
                linewidth=0.8)
    ax_pss.plot(xs, [p["total_pss_mb"] for p in points], label="collector total", color="black", linewidth=1.2)
    for ax in (ax_cpu, ax_pss):
        ax.axvline(settle_s / 60, color="red", linestyle=":", linewidth=0.8)
        ax.grid(alpha=0.3)
    ax_cpu.set_ylabel("CPU cores")
    ax_pss.set_ylabel("PSS MB")
    ax_pss.set_xlabel("minutes since the workers connected (red: end of settle time)")
    ax_cpu.legend(fontsize=7, ncol=4)
    ax_cpu.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(a: argparse.Namespace, admin: str, src: Path) -> dict:
    dsn = common.new_database(admin, "soak")
    prepare_database(dsn)
    tmp = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    postmaster = common.postmaster_pid(admin)
    sup: subprocess.Popen | None = None
    samples: list[dict] = []
    try:
        with common.simulator(a.rate, a.symbols) as sim:
            port = free_port()
            cfg = write_config(tmp, dsn, sim.rest_url, sim.ws_url, a.keep_all, port)
            sup = subprocess.Popen([sys.executable, str(src / "supervisor.py"), "--workers", str(a.workers),
                                    "--config", str(cfg)], cwd=tmp, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True,
                                   env=dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(src)))
            common.wait_for(lambda: open_connections(sim.rest_url) >= a.workers, BOOT_TIMEOUT_S,
                            "workers to connect")
            start = time.monotonic()
            samples.append(sample(sup.pid, postmaster))
            while time.monotonic() - start < a.duration:
                # sleep to the next deadline, so sampling drift does not stretch the session
                time.sleep(max(0.0, start + a.every * len(samples) - time.monotonic()))
                samples.append(sample(sup.pid, postmaster))
                if sup.poll() is not None:
                    raise RuntimeError(f"the supervisor exited with {sup.returncode} during the soak")
            common.http_json(sim.rest_url + "/_sim/pause")
            totals = common.sent_totals_by_stream(sim.rest_url)
            common.wait_for(lambda: stable(lambda: workers_received(port), common.DRAIN_QUIET_S), 60, "workers to drain")
            sup.send_signal(signal.SIGTERM)
            exit_code = sup.wait(STOP_TIMEOUT_S)
            received, kept = logged_received(tmp / "logs"), logged_kept(tmp / "logs")
            db_rows = count_rows(dsn, ("trades",))
    except BaseException:  # interrupted or failed: the directory is kept (its logs say why) and named
        common.leave_session_dir(tmp, False, "the soak")
        raise
    finally:
        common.end_supervisor(sup)
        common.drop_database(admin, dsn)
    verdict = exact_verdict(db_rows["trades"], sum(kept.values()), received.get("trades", 0) if received else -1,
                            totals.get("aggTrade", 0), a.keep_all, None)
    common.leave_session_dir(tmp, verdict["sustained"] and exit_code == 0, "the soak")
    return {"samples": samples, "exit_code": exit_code, "exact": verdict}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=3600.0, help="seconds from connected to the pause")
    p.add_argument("--settle", type=float, default=600.0, help="seconds excluded before measuring PSS growth")
    p.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    p.add_argument("--rate", type=float, default=5000.0, help="offered aggTrades/s")
    p.add_argument("--symbols", type=int, default=496)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--keep-all", action="store_true", help="filters.trades.keep_all: store every trade")
    p.add_argument("--server", default="fast", choices=list(common.SERVERS))
    p.add_argument("--src", default=None, help="run the product from this directory (default: a snapshot of HEAD)")
    a = p.parse_args()
    common.stop_on_signals()
    t_start = time.monotonic()
    with common.product_source(a.src) as (src, what), common.throwaway_postgres(a.server) as admin:
        cond = common.conditions(sys.argv, what, a.server)
        print(cond, flush=True)
        r = run(a, admin, src)
    points = series(r["samples"])
    g = growth(points, a.settle)
    mode = "keep_all" if a.keep_all else "filtered"
    title = (f"supervisor.py --workers {a.workers}, {a.rate:,.0f} aggTrades/s x {a.symbols} symbols, {mode}, "
             f"{a.duration:.0f} s, {common.SERVERS[a.server]}\n{what}")
    common.RESULTS.mkdir(parents=True, exist_ok=True)
    stem = common.results_stem("soak")  # the JSON below gets the same name
    png = common.RESULTS / f"{stem}.png"
    plot(points, title, png, a.settle)
    every = max(1, len(points) // 12)  # about a dozen rows on stdout; all of them in the JSON
    shown = points[::every] if (len(points) - 1) % every == 0 else points[::every] + points[-1:]
    rows = [{"t": p["elapsed_s"], "cores": p["total_cores"], "pg": p["pg_cores"], "pss": p["total_pss_mb"],
             **{f"pss {k}": v for k, v in sorted(p["pss_mb"].items())}} for p in shown]
    keys = sorted({k for row in rows for k in row if k.startswith("pss ")})
    print(f"\n{cond}")
    common.print_table(rows, [("t", "elapsed s"), ("cores", "CPU cores"), ("pg", "PG cores"),
                              ("pss", "PSS MB")] + [(k, k.replace("pss ", "") + " MB") for k in keys],
                       f"soak: {title.splitlines()[0]}; sampled every {a.every:.0f} s, one interval in {every} shown")
    if g["pss_growth_pct"] is None:
        print(f"  PSS growth: {g['note']}")
    else:
        print(f"  PSS growth after {a.settle:.0f} s: {g['pss_growth_pct']:+.2f}% ({g['pss_at_settle_mb']:.1f} MB at "
              f"{g['from_s']:.0f} s -> {g['pss_end_mb']:.1f} MB at {g['to_s']:.0f} s; target < "
              f"{TARGET_GROWTH_PCT}%); mean CPU after settle {g['mean_cores_after_settle']:.4f} cores, "
              f"PostgreSQL {g['mean_pg_cores_after_settle']:.4f}; 1-min load average {g['load1_range']}")
        print(f"  without file-backed pages (PSS - Pss_File): {g['pss_no_file_growth_pct']:+.2f}% "
              f"({g['pss_no_file_at_settle_mb']:.1f} -> {g['pss_no_file_end_mb']:.1f} MB); Private_Dirty "
              f"{g['dirty_growth_pct']:+.2f}% ({g['dirty_at_settle_mb']:.1f} -> {g['dirty_end_mb']:.1f} MB)")
    e = r["exact"]
    print(f"  exact count: {e['checks']} (trades rows {e['db_trades']}, kept {e['kept_trades']}, received "
          f"{e['received_trades']}, sent {e['sent_trades']}); supervisor exit {r['exit_code']}")
    path = common.write_results("soak", stem=stem, payload={
        "command": " ".join(sys.argv), "product": what, "server": a.server, "growth": g, "exact": e,
        "exit_code": r["exit_code"], "series": points, "elapsed_s": round(time.monotonic() - t_start)})
    print(f"wrote {path} and {png}")


if __name__ == "__main__":
    main()
