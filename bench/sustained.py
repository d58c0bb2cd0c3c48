"""Target 3a, sustained: the read loop's rate with the event log on vs off, the writer busy.

Usage::

    python bench/sustained.py --db sqlite
    python bench/sustained.py --db postgres --files 25000 --cycles 10

The drain scenario pre-fills the kernel queue (at most ``max_queued_events``,
16 384 here): about 80 ms of work, over before the event log's first flush at
the default 250 ms, so it cannot show what shipping the rows costs the loop.
This measures the loop over ``4 x --files`` events per cycle (100 000 by
default, about half a second) with the daemon's default settings:

1. a writer *process* creates the files while the daemon's reader thread
   reads every event into the daemon's own buffer (the loop is not run);
2. the loop is timed until it has handled them all; meanwhile the event log
   ships rows to its writer process, which writes them to the database.

Cycles alternate log on / log off (the same daemon, its one watch's log
switched), so both figures come from the same process, warmed the same way;
the first two cycles are warm-up. Between cycles the event log is let to
catch up. ``run()`` returns the median rates and the median of the ratios of
consecutive on/off cycles.
"""

from __future__ import annotations

import argparse
import array
import fcntl
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import termios
import time
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

PG_SERVER = "postgres://postgres@127.0.0.1:5432/postgres"
PG_BENCH_DB = "inotifier_bench_sustained"
WRITER = (
    "import os, sys\n"
    "d, prefix, n = sys.argv[1], sys.argv[2], int(sys.argv[3])\n"
    "for i in range(n):\n"
    "    with open(os.path.join(d, f'{prefix}-{i}'), 'w') as f: f.write('x')\n"
)


def run(db: str, files: int = 25_000, cycles: int = 12, pg_url: str = PG_SERVER) -> dict[str, float]:
    """Return ``on_rate``, ``off_rate`` (events/s, medians) and ``ratio`` (median of the
    on/off ratios of consecutive cycles) for ``db``."""
    from bench.contenders import project

    watch = tempfile.mkdtemp(prefix="inotifier-sustained-", dir="/dev/shm")
    work = tempfile.mkdtemp(prefix="inotifier-sustained-")
    try:
        if db == "sqlite":
            url = f"sqlite:///{os.path.join(work, 'db.sqlite3')}"
        else:
            url = project._fresh_postgres(pg_url, PG_BENCH_DB)
        mask = "IN_CREATE|IN_OPEN|IN_MODIFY|IN_CLOSE_WRITE"
        project._configure(
            [(watch, mask, project.SIGNALER, {"event_log": True})],
            url,
            INOTIFIER_EVENT_LOG=True,
            INOTIFIER_EVENT_LOG_BUFFER=1_000_000,  # nothing dropped: every row is shipped
        )
        return _measure(watch, files, cycles)
    finally:
        shutil.rmtree(watch, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def _measure(watch: str, files: int, cycles: int) -> dict[str, float]:
    from inotifier import signals
    from inotifier.daemon.runner import Daemon

    handled = [0]

    def receiver(sender: Any, event: Any, **kwargs: Any) -> None:
        handled[0] += 1

    for sig in signals.SIGNALS.values():
        sig.connect(receiver, weak=False)
    daemon = Daemon(install_signal_handlers=False, use_database=False).start()
    assert daemon.reader is not None and daemon.event_log is not None
    writer = daemon.event_log
    [watch_state] = list(daemon.watches.values())
    rates: dict[bool, list[float]] = {True: [], False: []}
    events = 4 * files
    try:
        for cycle in range(cycles):
            log_on = cycle % 2 == 0
            watch_state.cfg.log_rows = writer.incoming if log_on else None  # what deliver() appends to
            deadline = time.monotonic() + 120
            while writer.buffer.pending and time.monotonic() < deadline:  # the log catches up first
                daemon.tick(timeout=0.01)
            target = handled[0] + events
            subprocess.run([sys.executable, "-c", WRITER, watch, f"c{cycle}", str(files)], check=True)
            while _unread(daemon.reader.fd):  # until the reader thread has read it all
                time.sleep(0.005)
            time.sleep(0.02)
            started = time.perf_counter()
            deadline = time.monotonic() + 120
            while handled[0] < target:
                daemon.dispatcher.process(deadline=time.monotonic() + 0.05)
                writer.poke()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"cycle {cycle}: {target - handled[0]} events missing")
            elapsed = time.perf_counter() - started
            if cycle >= 2:
                rates[log_on].append(events / elapsed)
            watch_state.cfg.log_rows = None
            for name in os.listdir(watch):
                os.unlink(os.path.join(watch, name))
            daemon.tick(timeout=0.05)
            while daemon.dispatcher.process(deadline=time.monotonic() + 0.05):
                pass
        if daemon.status.overflows:
            raise RuntimeError("IN_Q_OVERFLOW during the measurement")
    finally:
        daemon.close()
    on, off = statistics.median(rates[True]), statistics.median(rates[False])
    # Each log-on cycle against the log-off cycle right after it: a drift of the
    # machine's speed (other tenants, frequency) between cycles cancels out.
    pairs = [a / b for a, b in zip(rates[True], rates[False], strict=False)]
    return {
        "on_rate": on,
        "off_rate": off,
        "ratio": statistics.median(pairs),
        "rows_written": float(writer.buffer.tally.written),
        "rows_dropped": float(writer.buffer.dropped),
    }


def _unread(fd: int) -> int:
    """Bytes waiting in the kernel queue of the inotify ``fd``."""
    buf = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return buf[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--files", type=int, default=25_000)
    parser.add_argument("--cycles", type=int, default=12)
    parser.add_argument("--pg-url", default=PG_SERVER)
    args = parser.parse_args()
    print("RESULT " + json.dumps(run(args.db, args.files, args.cycles, args.pg_url)), flush=True)
    os._exit(0)  # the reader thread blocks in read(); nothing else to clean up


if __name__ == "__main__":
    main()
