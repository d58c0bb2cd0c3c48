"""Catch-up of a large tree (issue 13, part 2) against find(1) on the same tree.

    python bench/catchup.py                      # 1 000 000 files in 1 000 directories, on /dev/shm
    FILES=100000 python bench/catchup.py         # a quick run
    python bench/catchup.py --files 200000 --dirs 200 --rounds 3

Builds the tree (a tenth of the files changed after a reference file), then
times, alternating, in fresh rounds:

- ``find DIR -newer REF`` and a catch-up ``"changed"`` from REF's time (the
  daemon's real scan, stepped by its real loop, delivering ``IN_CLOSE_WRITE``
  to a processor that counts);
- ``find DIR`` and a catch-up ``"all"``;
- the catch-up ``"changed"`` again while a writer creates files in another
  watched directory: the rate of live events that watch got during the scan,
  and for comparison during 2 s without a scan.

Prints the medians, the ratios (target: "changed" at most 2x ``find -newer``),
and the growth of the peak RSS during the scans (streamed: it does not grow
with the tree).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WRITER = r"""
import os, sys, time
top, stop = sys.argv[1], sys.argv[2]
i = 0
while not os.path.exists(stop):
    fd = os.open(f"{top}/live{i}", os.O_CREAT | os.O_WRONLY, 0o644)
    os.close(fd)
    i += 1
    if i % 200 == 0:
        time.sleep(0.01)
"""


def build(top: Path, files: int, dirs: int) -> tuple[Path, float]:
    """Make ``files`` empty files in ``dirs`` directories, a tenth touched after REF; return REF, its time."""
    per = max(1, files // dirs)
    flags = os.O_CREAT | os.O_WRONLY
    made = 0
    for d in range(dirs):
        sub = top / f"d{d:05}"
        sub.mkdir()
        for f in range(per if d < dirs - 1 else files - made):
            os.close(os.open(f"{sub}/f{f:07}", flags, 0o644))
        made += per
    time.sleep(0.05)
    ref = top.parent / "REF"
    ref.write_text("ref")
    time.sleep(0.05)
    for d in range(dirs):
        sub = top / f"d{d:05}"
        for f in range(0, per, 10):
            p = f"{sub}/f{f:07}"
            if os.path.exists(p):
                os.utime(p)
    return ref, ref.stat().st_mtime


def timed_find(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(args, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


class Counter:
    """A processor that counts (pyinotify's dispatch kept: ``process_default``)."""

    counts: dict[str, int] = {}

    def __init__(self, name: str) -> None:
        self.name = name
        Counter.counts[name] = 0

    def __call__(self, event: Any) -> None:
        Counter.counts[self.name] += 1


def daemon_for(tree: Path, live: Path) -> Any:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    django.setup()
    from django.test import override_settings

    from inotifier.daemon.runner import Daemon

    entries = [
        [str(tree), "IN_CLOSE_WRITE", "inotifier.event_processors.AllEventsPrinter", {"recursive": True}],
        [str(live), "IN_CREATE", "inotifier.event_processors.AllEventsPrinter"],
    ]
    with override_settings(INOTIFIER_WATCH_PATHS=entries, INOTIFIER_EVENT_LOG=False):
        daemon = Daemon(install_signal_handlers=False, use_database=False, hostname="bench").start()
    for watch in daemon.watches.values():
        watch.processor = Counter("tree" if watch.root == str(tree) else "live")
    return daemon


def scan(daemon: Any, tree: Path, since: float | None) -> tuple[float, int, int]:
    """Run one catch-up of ``tree`` through the loop; return (seconds, events, live events)."""
    from inotifier.daemon.catchup import Scan

    watch = next(w for w in daemon.watches.values() if w.root == str(tree))
    Counter.counts["tree"] = Counter.counts["live"] = 0
    catchup = daemon.watchset.catchup
    started = time.perf_counter()
    catchup.scans.append(Scan(watch, since, "bench"))
    while catchup.scans:
        daemon.tick(timeout=0)
    elapsed = time.perf_counter() - started
    return elapsed, Counter.counts["tree"], Counter.counts["live"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=int(os.environ.get("FILES", "1000000")))
    parser.add_argument("--dirs", type=int, default=int(os.environ.get("DIRS", "1000")))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    home = Path(tempfile.mkdtemp(prefix="inotifier-bench-catchup-", dir=base))
    import logging

    logging.disable(logging.INFO)
    try:
        tree, live = home / "tree", home / "live"
        tree.mkdir()
        live.mkdir()
        started = time.perf_counter()
        ref, since = build(tree, args.files, args.dirs)
        built = time.perf_counter() - started
        print(f"tree: {args.files} files in {args.dirs} directories, built in {built:.1f} s")
        daemon = daemon_for(tree, live)
        timed_find(["find", "-P", str(tree)])  # warm: every dentry in the cache
        times: dict[str, list[float]] = {k: [] for k in ("find-newer", "changed", "find", "all")}
        counted: dict[str, int] = {}
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for _ in range(args.rounds):
            times["find-newer"].append(timed_find(["find", "-P", str(tree), "-newer", str(ref)]))
            seconds, counted["changed"], _live = scan(daemon, tree, since)
            times["changed"].append(seconds)
            times["find"].append(timed_find(["find", "-P", str(tree)]))
            seconds, counted["all"], _live = scan(daemon, tree, None)
            times["all"].append(seconds)
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        stop = home / "STOP"
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(live), str(stop)])
        try:
            time.sleep(0.3)
            Counter.counts["live"] = 0
            end = time.perf_counter() + 2.0
            while time.perf_counter() < end:  # the live rate without a scan, as a baseline
                daemon.tick(timeout=0.01)
            baseline = Counter.counts["live"] / 2.0
            live_seconds, _n, live_events = scan(daemon, tree, since)
        finally:
            stop.touch()
            writer.wait(30)
        daemon.close()
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"find -newer REF      {med['find-newer']:7.3f} s")
        print(
            f'catch-up "changed"   {med["changed"]:7.3f} s  ({counted["changed"]} events)'
            f"  ratio {med['changed'] / med['find-newer']:.2f}x  (target <= 2x)"
        )
        print(f"find                 {med['find']:7.3f} s")
        print(
            f'catch-up "all"       {med["all"]:7.3f} s  ({counted["all"]} events)'
            f"  ratio {med['all'] / med['find']:.2f}x"
        )
        print(
            f'catch-up "changed" with live events of another watch: {live_seconds:.3f} s '
            f"({live_seconds / med['changed']:.2f}x alone); the other watch got {live_events} events, "
            f"{live_events / live_seconds:.0f}/s during the scan ({baseline:.0f}/s without a scan)"
        )
        print(f"peak RSS growth during the scans: {(rss1 - rss0) / 1024:.1f} MiB (ru_maxrss)")
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
