"""Settle (issue 13, part 1): the rate through a settled watch against the same watch unsettled,
and what 1 000 000 held paths cost.

Usage::

    python bench/settle.py                    # both parts
    python bench/settle.py rate --files 25000 --cycles 10
    python bench/settle.py memory --paths 1000000

``rate``: one in-process daemon (no database) with two watches on tmpfs, the
same mask (``IN_CREATE|IN_OPEN|IN_MODIFY|IN_CLOSE_WRITE``, what open, write
and close raise) and processor (``AllEventsSignaler``, a receiver counting),
one with ``settle`` 0.05 s. Cycles alternate between them: a writer process
creates ``--files`` files (4 events each) while the daemon's reader thread
reads every event into the daemon's own buffer (the loop is not run); then the
loop is timed while it handles them all. For the settled watch the time is
the loop's busy time: handling the events (each one an update of its path's
entry) plus, once the paths are due, delivering them (one event per type: the
same 4 events a file, so both watches deliver the same events); the wait for
the quiet period itself is not work and is not counted. The first two cycles
are warm-up; the ratio is the median of settled / plain of consecutive cycles
(target: at least 0.7). Then the same with files written in ``--chunks``
appends each (open, write, close every time): there settle delivers 4 events
a file where the plain watch delivers every one, and the rate is kernel events
handled per second of work.

``memory``: 1 000 000 paths held at once, through ``ActiveWatch.deliver`` (the
per-event path, minus the kernel: a real burst of a million files would be
paced by the file system, not by the hold), one event of ``--types`` types
each, in 1 000 directories; then delivered (a no-op processor). It prints the
time to hold and to deliver per event, the RSS growth, and tracemalloc's peak
and per-path bytes (with and without the pathname string, which the hold
keeps as its key).
"""

from __future__ import annotations

import argparse
import array
import fcntl
import gc
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import termios
import time
import tracemalloc
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

MASK = "IN_CREATE|IN_OPEN|IN_MODIFY|IN_CLOSE_WRITE"
SETTLE = 0.05
WRITER = (
    "import os, sys\n"
    "d, prefix, n, chunks = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])\n"
    "for i in range(n):\n"
    "    p = os.path.join(d, f'{prefix}-{i}')\n"
    "    for _ in range(chunks):\n"
    "        with open(p, 'a') as f: f.write('x')\n"
)


def _unread(fd: int) -> int:
    """Bytes waiting in the kernel queue of the inotify ``fd``."""
    buf = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return buf[0]


def _rss_kib() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def rate(files: int, cycles: int, chunks: int) -> dict[str, float]:
    """Return the events/s of both watches (medians) and their ratio, for whole and chunked files."""
    from bench.contenders import project

    top = tempfile.mkdtemp(prefix="inotifier-settle-", dir="/dev/shm")
    plain, settled = os.path.join(top, "plain"), os.path.join(top, "settled")
    os.mkdir(plain)
    os.mkdir(settled)
    try:
        project._configure(
            [(plain, MASK, project.SIGNALER), (settled, MASK, project.SIGNALER, {"settle": SETTLE})],
            None,
            INOTIFIER_QUEUE_SIZE=4_000_000,
        )
        return _measure(plain, settled, files, cycles, chunks)
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _measure(plain: str, settled: str, files: int, cycles: int, chunks: int) -> dict[str, float]:
    from inotifier import signals
    from inotifier.daemon.runner import Daemon

    handled = [0]

    def receiver(sender: Any, event: Any, **kwargs: Any) -> None:
        handled[0] += 1

    for sig in signals.SIGNALS.values():
        sig.connect(receiver, weak=False)
    daemon = Daemon(install_signal_handlers=False, use_database=False).start()
    assert daemon.reader is not None
    watchset = daemon.watchset
    results: dict[str, float] = {}
    try:
        for label, per_file, n_cycles in (("whole", 1, cycles), ("chunked", chunks, max(4, cycles // 2))):
            rates: dict[str, list[float]] = {"plain": [], "settled": []}
            kernel_events = files * (1 + 3 * per_file)  # IN_CREATE, then IN_OPEN/IN_MODIFY/IN_CLOSE_WRITE
            for cycle in range(n_cycles):
                which = "settled" if cycle % 2 else "plain"
                directory = settled if which == "settled" else plain
                delivered = kernel_events if which == "plain" or per_file == 1 else files * 4
                target = handled[0] + delivered
                writer = [sys.executable, "-c", WRITER, directory, f"c{cycle}", str(files), str(per_file)]
                subprocess.run(writer, check=True)
                while _unread(daemon.reader.fd):  # until the reader thread has read it all
                    time.sleep(0.005)
                time.sleep(0.02)
                busy = 0.0
                deadline = time.monotonic() + 300
                while handled[0] < target:
                    started = time.perf_counter()
                    while daemon.reader.chunks or watchset.ready:  # handling (settled: holding)
                        daemon.dispatcher.process(deadline=time.monotonic() + 0.05)
                    while handled[0] < target and watchset.next_due() <= time.monotonic():  # delivering
                        daemon.dispatcher.process(deadline=time.monotonic() + 0.05)
                    busy += time.perf_counter() - started
                    if handled[0] < target:
                        time.sleep(max(0.0, min(0.01, watchset.next_due() - time.monotonic())))
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"cycle {cycle}: {target - handled[0]} events missing")
                if cycle >= 2:
                    rates[which].append(kernel_events / busy)
                for name in os.listdir(directory):
                    os.unlink(os.path.join(directory, name))
                end = time.monotonic() + 0.2
                while time.monotonic() < end:  # the deletions: handled, nothing delivered
                    daemon.tick(timeout=0.01)
            if daemon.status.overflows:
                raise RuntimeError("IN_Q_OVERFLOW during the measurement")
            pairs = [s / p for p, s in zip(rates["plain"], rates["settled"], strict=False)]
            results[f"{label}_plain"] = statistics.median(rates["plain"])
            results[f"{label}_settled"] = statistics.median(rates["settled"])
            results[f"{label}_ratio"] = statistics.median(pairs)
    finally:
        daemon.close()
    return results


class _Host:
    """The watch set's side of a watch, reduced to nothing (the memory part has no daemon)."""

    def progress(self, *args: Any) -> None: ...

    def root_gone(self, watch: Any) -> None: ...

    def dir_moved_out(self, watch: Any) -> None: ...

    def processor_failed(self, watch: Any) -> None: ...

    def hold_started(self, watch: Any) -> None: ...


def memory(paths: int, types: int) -> dict[str, float]:
    """Hold ``paths`` paths (``types`` event types each), then deliver them; return the figures."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    from inotifier.daemon.watches import ActiveWatch
    from inotifier.masks import BITS
    from inotifier.specs import WatchSpec

    masks = [BITS[name] for name in ("IN_CREATE", "IN_MODIFY", "IN_CLOSE_WRITE", "IN_ATTRIB")][:types]
    spec = WatchSpec(
        key="settings:0",
        path="/srv/spool",
        mask=BITS["IN_CREATE"] | BITS["IN_MODIFY"] | BITS["IN_CLOSE_WRITE"] | BITS["IN_ATTRIB"],
        processor="x",
        label="/srv/spool",
        settle=3600.0,
        settle_max=3600.0,
    )
    dirs = [f"/srv/spool/incoming/d{d:03}" for d in range(1000)]
    per_dir = max(1, paths // len(dirs))

    def hold_all(watch: ActiveWatch) -> None:
        deliver = watch.deliver
        for i in range(paths):
            path = dirs[(i // per_dir) % len(dirs)]
            name = f"upload-{i:07}.bin"
            for mask in masks:
                deliver(1 + i // per_dir, mask, 0, name, path, path + "/" + name)

    results: dict[str, float] = {"paths": paths, "types": types}
    for traced in (False, True):
        watch = ActiveWatch(spec, lambda event: None, _Host())
        assert watch.hold is not None
        gc.collect()
        rss = _rss_kib()
        if traced:
            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0]
        started = time.perf_counter()
        hold_all(watch)
        hold_seconds = time.perf_counter() - started
        assert len(watch.hold) == paths
        if traced:
            current, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            results["traced_bytes_per_path"] = (current - base) / paths
            results["traced_peak_mib"] = (peak - base) / 2**20
            key = dirs[0] + "/upload-0000000.bin"
            results["pathname_bytes"] = sys.getsizeof(key)
        else:
            results["rss_growth_mib"] = (_rss_kib() - rss) / 1024
            results["hold_ns_per_event"] = hold_seconds / (paths * types) * 1e9
            started = time.perf_counter()
            delivered = watch.hold.flush(watch.deliver)
            results["deliver_ns_per_event"] = (time.perf_counter() - started) / delivered * 1e9
            assert delivered == paths * types
        del watch
        gc.collect()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("part", nargs="?", choices=("rate", "memory", "all"), default="all")
    parser.add_argument("--files", type=int, default=25_000, help="files per cycle (rate)")
    parser.add_argument("--cycles", type=int, default=10, help="cycles of whole files (rate)")
    parser.add_argument("--chunks", type=int, default=10, help="appends per file, chunked cycles (rate)")
    parser.add_argument("--paths", type=int, default=1_000_000, help="paths held at once (memory)")
    parser.add_argument("--types", type=int, default=1, help="event types held per path (memory)")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.2f}")
    if args.part in ("memory", "all"):
        # First, in a process of its own: the rate part leaves a daemon's memory behind.
        command = [sys.executable, __file__, "memory", "--paths", str(args.paths), "--types", str(args.types)]
        if args.part == "all":
            subprocess.run(command, check=True)
        else:
            m = memory(args.paths, args.types)
            hold_ns, deliver_ns = m["hold_ns_per_event"], m["deliver_ns_per_event"]
            per_path, name_bytes = m["traced_bytes_per_path"], m["pathname_bytes"]
            print(f"memory: {int(m['paths']):,} paths held at once, {int(m['types'])} event type(s) each")
            print(f"  hold {hold_ns:7.0f} ns/event   deliver {deliver_ns:7.0f} ns/event (a no-op processor)")
            print(
                f"  RSS growth {m['rss_growth_mib']:.1f} MiB; tracemalloc {m['traced_peak_mib']:.1f} MiB"
                f" peak, {per_path:.0f} B a path ({per_path - name_bytes:.0f} B besides its"
                f" {name_bytes:.0f} B pathname)"
            )
    if args.part in ("rate", "all"):
        r = rate(args.files, args.cycles, args.chunks)
        print(f"rate: {args.files:,} files a cycle, settle {SETTLE} s, {MASK}, AllEventsSignaler")
        for label, what in (
            ("whole", "files written at once (4 events each, nothing to collapse)"),
            ("chunked", f"files written in {args.chunks} appends (settle delivers 4 events a file)"),
        ):
            print(f"  {what}:")
            plain_rate, settled_rate = r[label + "_plain"], r[label + "_settled"]
            print(
                f"    plain {plain_rate:10,.0f} events/s   settled {settled_rate:10,.0f} events/s"
                f"   ratio settled / plain {r[label + '_ratio']:.2f}"
            )
        verdict = "PASS" if r["whole_ratio"] >= 0.7 else "FAIL"
        print(f"  target: settled >= 0.7 x plain on whole files: {verdict}")
        os._exit(0)  # the reader thread blocks in read(); nothing else to clean up


if __name__ == "__main__":
    main()
