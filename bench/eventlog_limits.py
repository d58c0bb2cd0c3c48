"""The event log's limits: a burst against the buffer's memory bound, a flood against the row limit.

Usage::

    python bench/eventlog_limits.py burst --db sqlite --files 50000
    python bench/eventlog_limits.py retention --db postgres --rows 500000 --rate 50000

``burst`` (issue 11, item 10): the daemon's loop (in this process, as in
bench/sustained.py) watches a tmpfs directory for IN_CREATE|IN_CLOSE_WRITE
with the event log on and the buffer's default settings; a writer process
creates ``--files`` files as fast as it can. Reported: rows delivered,
written and dropped, the most rows that waited (and the buffer's estimate of
their size), the growth of VmRSS of this process and of the writer process
(sampled every 10 ms from a thread, after a warm-up burst, so start-up
imports and the database connection are not counted) and what of it is still
held 2 s after the last row was written, and when that was.

``retention`` (item 9): rows are fed straight into the event log's buffer at
``--rate`` rows/s (0: as fast as the loop can append) with
INOTIFIER_EVENT_LOG_MAX_ROWS = ``--max-rows``; another connection counts the
table every 20 ms. Reported: the largest count against the limit, how many
counts were above limit + 10 %, the rate the rows were written at and the
writer process's CPU time per 100 000 rows (``--max-rows`` larger than
``--rows`` gives the same without trimming, for comparison).

Prints one ``RESULT {json}`` line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

PG_SERVER = "postgres://postgres@127.0.0.1:5432/postgres"
PG_BENCH_DB = "inotifier_bench_limits"
WRITER = (
    "import os, sys\n"
    "d, prefix, n = sys.argv[1], sys.argv[2], int(sys.argv[3])\n"
    "for i in range(n):\n"
    "    with open(os.path.join(d, f'{prefix}-{i:07}'), 'w') as f: f.write('x')\n"
)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return int(next(line for line in fh if line.startswith("VmRSS:")).split()[1])


def _database(db: str, work: str, pg_url: str) -> str:
    from bench.contenders import project

    if db == "sqlite":
        return f"sqlite:///{os.path.join(work, 'db.sqlite3')}"
    return project._fresh_postgres(pg_url, PG_BENCH_DB)


def burst(db: str, files: int, pg_url: str) -> dict[str, float]:
    """Return the figures of one burst of ``files`` files (two logged events each)."""
    from bench.contenders import project

    watch = tempfile.mkdtemp(prefix="inotifier-limits-", dir="/dev/shm")
    work = tempfile.mkdtemp(prefix="inotifier-limits-")
    try:
        project._configure(
            [(watch, "IN_CREATE|IN_CLOSE_WRITE", project.SIGNALER, {"event_log": True})],
            _database(db, work, pg_url),
            INOTIFIER_EVENT_LOG=True,
            INOTIFIER_EVENT_LOG_MAX_ROWS=0,  # retention aside
        )
        from inotifier.daemon.runner import Daemon

        daemon = Daemon(install_signal_handlers=False, use_database=False).start()
        assert daemon.event_log is not None
        log = daemon.event_log
        buffer, tally = log.buffer, log.buffer.tally

        def run(prefix: str, n: int, expected_rows: int) -> float:
            """Create ``n`` files, run the loop until ``expected_rows`` are in; return the burst's end."""
            proc = subprocess.Popen([sys.executable, "-c", WRITER, watch, prefix, str(n)])
            ended = 0.0
            deadline = time.monotonic() + 300
            while tally.written + buffer.dropped < expected_rows:
                daemon.tick(timeout=0.01)
                if not ended and proc.poll() is not None:
                    ended = time.monotonic()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{expected_rows - tally.written - buffer.dropped} rows missing")
            proc.wait()
            return ended or time.monotonic()

        run("warm", 2000, 4000)  # imports, connections, the writer process's first writes
        buffer.peak = 0
        worker = log.feeder.worker
        pids = {"daemon": os.getpid(), "writer": worker.pid if worker is not None else os.getpid()}
        base = {name: rss_kib(pid) for name, pid in pids.items()}
        growth = dict.fromkeys(pids, 0)
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.01):
                for name, pid in pids.items():
                    growth[name] = max(growth[name], rss_kib(pid) - base[name])

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        written, dropped = tally.written, buffer.dropped
        started = time.monotonic()
        ended = run("burst", files, 4000 + 2 * files)
        last_row = time.monotonic()
        done.set()
        sampler.join()
        time.sleep(2.0)  # what is still held once every row is written
        kept = {name: rss_kib(pid) - base[name] for name, pid in pids.items()}
        delivered = sum(w.events for w in daemon.watches.values()) - 4000
        daemon.close()
        return {
            "files": files,
            "rows_delivered": delivered,
            "rows_written": tally.written - written,
            "rows_dropped": buffer.dropped - dropped,
            "peak_rows": buffer.peak,
            "peak_estimate_mib": round(buffer.peak * buffer.row_bytes / 2**20, 1),
            "row_bytes_estimate": buffer.row_bytes,
            "rss_growth_daemon_mib": round(growth["daemon"] / 1024, 1),
            "rss_growth_writer_mib": round(growth["writer"] / 1024, 1),
            "rss_kept_daemon_mib": round(kept["daemon"] / 1024, 1),
            "rss_kept_writer_mib": round(kept["writer"] / 1024, 1),
            "burst_s": round(ended - started, 2),
            "last_row_after_burst_s": round(last_row - ended, 2),
            "rows_per_s": round((tally.written - written) / (last_row - started)),
        }
    finally:
        shutil.rmtree(watch, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def retention(db: str, rows: int, rate: float, max_rows: int, pg_url: str) -> dict[str, float]:
    """Return the largest table count seen while ``rows`` rows are written at ``rate`` rows/s."""
    from bench.contenders import project

    work = tempfile.mkdtemp(prefix="inotifier-limits-")
    try:
        project._configure([], _database(db, work, pg_url), INOTIFIER_EVENT_LOG_MAX_ROWS=max_rows)
        from django.db import connections

        from inotifier.daemon.eventlog import EventLog as EventLogWriter
        from inotifier.models import EventLog

        log = EventLogWriter("bench", capacity=rows)  # nothing dropped: every row is written
        log.start()
        key = log.tail_key(None, "/srv/spool")
        counts: list[int] = []
        done = threading.Event()

        def count() -> None:
            while not done.wait(0.02):
                counts.append(EventLog.objects.count())
            connections.close_all()

        counter = threading.Thread(target=count, daemon=True)
        counter.start()
        started = time.monotonic()
        chunk = 500
        for sent in range(0, rows, chunk):
            if rate:
                wait = started + sent / rate - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            now = time.time()
            for i in range(sent, min(rows, sent + chunk)):
                log.buffer.incoming += (f"/srv/spool/incoming/file-{i:09}.dat", now, key | 0x100, "")
            log.poke()
        fed = time.monotonic()
        while log.buffer.tally.written < rows and time.monotonic() < fed + 300:
            log.poke()
            time.sleep(0.005)
        finished = time.monotonic()
        worker = log.feeder.worker
        writer_cpu = cpu_seconds(worker.pid) if worker is not None else float("nan")
        done.set()
        counter.join()
        final = EventLog.objects.count()
        log.stop()
        limit = max_rows
        return {
            "rows": rows,
            "max_rows": limit,
            "feed_rows_per_s": round(rows / (fed - started)),
            "written_rows_per_s": round(log.buffer.tally.written / (finished - started)),
            # The writer process's CPU per 100 000 rows: steadier than a rate on a busy machine
            # (on PostgreSQL the server's share is not in it).
            "writer_cpu_s_per_100k_rows": round(writer_cpu / rows * 100_000, 2),
            "counts": len(counts),
            "largest_count": max(counts, default=0),
            "largest_vs_limit": round(max(counts, default=0) / limit, 3),
            "counts_above_limit_plus_10pct": sum(1 for n in counts if n > limit * 1.1),
            "final_count": final,
            "pruned": log.buffer.tally.pruned,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", choices=("burst", "retention"))
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--files", type=int, default=50_000, help="burst: files (2 rows each)")
    parser.add_argument("--rows", type=int, default=500_000, help="retention: rows written")
    parser.add_argument("--rate", type=float, default=50_000, help="retention: rows/s fed (0: no pause)")
    parser.add_argument("--max-rows", type=int, default=100_000, help="retention: the row limit")
    parser.add_argument("--pg-url", default=PG_SERVER)
    args = parser.parse_args()
    result: dict[str, Any]
    if args.scenario == "burst":
        result = burst(args.db, args.files, args.pg_url)
    else:
        result = retention(args.db, args.rows, args.rate, args.max_rows, args.pg_url)
    print("RESULT " + json.dumps({"scenario": args.scenario, "db": args.db, **result}), flush=True)
    os._exit(0)  # the reader thread blocks in read(); nothing else to clean up


if __name__ == "__main__":
    main()
