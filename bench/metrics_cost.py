"""What the metrics cost the daemon: the per-event count by type, and a sample per poll.

    python bench/metrics_cost.py                 # deliver and sample
    python bench/metrics_cost.py deliver --base main --rounds 7
    python bench/metrics_cost.py drain --rounds 5
    python bench/metrics_cost.py sample --watches 1000,10000

``deliver`` times ``ActiveWatch.deliver`` (the per-event path of bench targets 2
and 3a, with a no-op processor) in this checkout and in ``--base`` (a
``git archive`` of that revision in a temporary directory; by default where
this branch left main, ``git merge-base main HEAD``), alternating fresh
processes so both see the same machine load; it prints the medians and their
ratio. ``drain`` runs bench/run.py's drain scenario for the project (bench
target 2) in both checkouts, alternating, and prints the ratio of the
events/s. ``sample`` starts a real daemon (no database) with N watches on tmpfs,
delivers a few events to each, and times what the loop pays per sample
(``Sampler.take``), what a scrape pays in the metrics server's thread
(the first scrape renders every watch, the next ones only the watches
whose figures changed) and the textfile write.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIGNALER = "inotifier.event_processors.AllEventsSignaler"

DELIVER = r"""
import os, sys, timeit
sys.path.insert(0, sys.argv[1])
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
import django
django.setup()
from inotifier.daemon.watches import ActiveWatch
from inotifier.specs import WatchSpec

class Host:
    def progress(self, *args): pass
    def root_gone(self, watch): pass
    def dir_moved_out(self, watch): pass
    def processor_failed(self, watch): pass

spec = WatchSpec(key="settings:0", path="/tmp/x", mask=0xFFF, processor="x", label="/tmp/x")
watch = ActiveWatch(spec, lambda event: None, Host())
masks = [0x100, 0x20, 0x2, 0x8] * 250  # what open, write, close raise: the bench's files
names = [f"f{i}" for i in range(len(masks))]
deliver = watch.deliver
def run():
    for mask, name in zip(masks, names):
        deliver(1, mask, 0, name, "/tmp/x", "/tmp/x/" + name)
best = min(timeit.repeat(run, number=100, repeat=7))
print(best / 100 / len(masks) * 1e9)
"""


def checkout(rev: str) -> Path:
    """Return a temporary directory holding ``git archive rev`` of this repository."""
    target = Path(tempfile.mkdtemp(prefix="inotifier-base-"))
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def deliver(base_rev: str, rounds: int) -> None:
    base = checkout(base_rev)
    try:
        times: dict[str, list[float]] = {"this checkout": [], f"base ({base_rev})": []}
        for _ in range(rounds):
            for label, root in (("this checkout", ROOT), (f"base ({base_rev})", base)):
                out = subprocess.run(
                    [sys.executable, "-c", DELIVER, str(root)], capture_output=True, text=True, check=True
                )
                times[label].append(float(out.stdout.strip().splitlines()[-1]))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(
        f"ActiveWatch.deliver, no-op processor, {rounds} alternating rounds (best of 7 x 100 000 events each)"
    )
    medians = {label: statistics.median(values) for label, values in times.items()}
    for label, values in times.items():
        low, high = min(values), max(values)
        print(f"  {label:<16} median {medians[label]:7.0f} ns/event  (min {low:.0f}, max {high:.0f})")
    this, base_ns = medians.values()
    print(f"  ratio of the medians this / base: {this / base_ns:.3f}  ({this - base_ns:+.0f} ns/event)")
    # On a busy machine the least disturbed round is the better estimate of the cost itself.
    this_min, base_min = (min(values) for values in times.values())
    extra = this_min - base_min
    print(f"  ratio of the minima this / base:  {this_min / base_min:.3f}  ({extra:+.0f} ns/event)")


def drain(base_rev: str, rounds: int) -> None:
    base = checkout(base_rev)
    rates: dict[str, list[float]] = {"this checkout": [], f"base ({base_rev})": []}
    try:
        for _ in range(rounds):
            for label, root in (("this checkout", ROOT), (f"base ({base_rev})", base)):
                out = subprocess.run(
                    [
                        sys.executable,
                        "bench/run.py",
                        "--only",
                        "project",
                        "--scenarios",
                        "drain",
                        "--runs",
                        "1",
                    ],
                    cwd=root,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                row = next(line for line in out.stdout.splitlines() if line.startswith("| `project` |"))
                rates[label].append(float(row.split("|")[3].replace(",", "")))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"bench/run.py drain, project, {rounds} alternating rounds (events/s)")
    for label, values in rates.items():
        low, high = min(values), max(values)
        print(f"  {label:<16} median {statistics.median(values):9,.0f}  (min {low:,.0f}, max {high:,.0f})")
    this, base_rate = (statistics.median(values) for values in rates.values())
    print(f"  ratio this / base: {this / base_rate:.3f}")


def sample(counts: list[int]) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    from django.test import override_settings

    from inotifier.daemon.runner import Daemon

    for n in counts:
        top = Path(
            tempfile.mkdtemp(
                prefix="inotifier-sample-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None
            )
        )
        textfile = top / "inotifier.prom"
        try:
            entries = []
            for i in range(n):
                (top / f"w{i}").mkdir()
                entries.append(
                    (
                        str(top / f"w{i}"),
                        "IN_CREATE|IN_CLOSE_WRITE|IN_DELETE",
                        "inotifier.event_processors.AllEventsSignaler",
                    )
                )
            with override_settings(
                INOTIFIER_WATCH_PATHS=entries,
                INOTIFIER_METRICS_PORT=0,
                INOTIFIER_METRICS_TEXTFILE=str(textfile),
            ):
                d = Daemon(install_signal_handlers=False, use_database=False)
                d.start()
            for i in range(n):  # three event types on every watch
                f = top / f"w{i}" / "f"
                f.write_text("x")
                f.unlink()
            deadline = time.monotonic() + 120
            while sum(w.events for w in d.watches.values()) < 3 * n and time.monotonic() < deadline:
                d.tick(timeout=0.01)
            sampler = d.monitor.sampler
            exporter = d.monitor.exporter
            assert exporter is not None
            takes = []
            for _ in range(20):
                started = time.perf_counter()
                s = sampler.take()
                takes.append(time.perf_counter() - started)
            exporter.publish(s)
            exposition = exporter.exposition
            scrapes = []  # the first renders every watch, the next ones only what changed (nothing)
            for _ in range(5):
                exporter.publish(replace(s, taken=time.time()))  # a new sample, as at every poll
                started = time.perf_counter()
                body = exposition.text(with_process=True)
                scrapes.append(time.perf_counter() - started)
            writes = []
            for _ in range(5):
                exporter.publish(replace(s, taken=time.time()))
                started = time.perf_counter()
                assert exporter.textfile is not None
                exporter.textfile.write()
                writes.append(time.perf_counter() - started)
            take_ms = statistics.median(takes) * 1000
            period = d.monitor.period
            lines = body.count(b"\n")
            print(f"{n} watches ({len(body) // 1024} KiB of metrics, {lines} lines):")
            share = take_ms / 10 / period  # ms per sample over ms between samples, in %
            scrape_ms = statistics.median(scrapes[1:]) * 1000
            write_ms = statistics.median(writes) * 1000
            print(f"  loop, per sample (Sampler.take):        {take_ms:7.2f} ms = {share:.2f} % of the loop")
            print(f"    (one sample every {period:g} s: the poll interval, at most 5 s)")
            print(f"  first scrape (every watch rendered):     {scrapes[0] * 1000:7.2f} ms")
            print(f"  next scrapes, in the server's thread:    {scrape_ms:7.2f} ms")
            print(f"  textfile write, in the writer's thread:  {write_ms:7.2f} ms")
            d.close()
        finally:
            shutil.rmtree(top, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("part", nargs="?", choices=("deliver", "drain", "sample", "all"), default="all")
    parser.add_argument(
        "--base", default=None, help="revision to compare with (default: git merge-base main HEAD)"
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--watches", default="1000,10000", help="watch counts for the sample part")
    args = parser.parse_args()
    if args.base is None:
        merge_base = subprocess.run(
            ["git", "merge-base", "main", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        )
        args.base = merge_base.stdout.strip()[:12]
    if args.part in ("deliver", "all"):
        deliver(args.base, args.rounds)
    if args.part == "drain":
        drain(args.base, args.rounds)
    if args.part in ("sample", "all"):
        sample([int(n) for n in args.watches.split(",")])


if __name__ == "__main__":
    main()
