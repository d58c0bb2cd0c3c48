"""Issue 13 target: hand-off rate into Celery/Redis during a burst, outbox vs ``.delay()`` per event.

Usage::

    python bench/handoff.py                      # 100 000 files, SQLite, with and without a 10 s outage
    python bench/handoff.py --files 20000 --db postgres
    python bench/handoff.py --quick              # 5 000 files, 3 s outage: a smoke test

Each contender is the real daemon (``Daemon``, in a process of its own, on
real inotify) watching a tmpfs directory with IN_CLOSE_WRITE; a writer process
creates the files as fast as it can; the harness polls the length of the
Celery queue in a Redis server of its own (no worker runs) and stops when it
no longer grows. The rate is messages in the queue / time from the first file
to the last message. Contenders:

- ``naive``: ``process_file.delay(event.pathname)`` in the processor (what a
  user writes today), on the read loop;
- ``outbox``: ``TaskDispatcher`` (the loop appends; a thread writes the outbox;
  another publishes in Redis pipelines).

Then both again with the broker stopped (SHUTDOWN SAVE) for ``--outage``
seconds in the middle of the burst and started again: how many files never
reach the queue (lost), and for the naive one how long the loop stalled.
Prints a table and the ratios; the target: outbox >= 3x naive, 0 lost.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
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
PG_BENCH_DB = "inotifier_bench_handoff"
WRITER = (
    "import os, sys\n"
    "d, n = sys.argv[1], int(sys.argv[2])\n"
    "for i in range(n):\n"
    "    with open(os.path.join(d, f'f{i:07}'), 'w') as f: f.write('x')\n"
)
PROCESSORS = {"naive": "bench.handoff_app.NaiveDelay", "outbox": "bench.handoff_app.Outbox"}


# -- the contender process ----------------------------------------------------------------


def child(mode: str, watch: str, db_url: str, stats_path: str) -> None:
    """Run the daemon with ``mode``'s processor until SIGTERM; write what it saw to ``stats_path``."""
    from bench.contenders import project

    project._configure([(watch, "IN_CLOSE_WRITE", PROCESSORS[mode])], db_url, INOTIFIER_QUEUE_SIZE=4_000_000)
    from bench import handoff_app
    from inotifier.daemon.runner import Daemon

    daemon = Daemon(install_signal_handlers=True, use_database=True)
    daemon.start()
    print("READY", flush=True)
    try:
        daemon.run_loop()
    finally:
        daemon.close()
        s = handoff_app.Stats
        stats: dict[str, Any] = {
            "calls": s.calls,
            "failed": s.failed,
            "blocked": s.blocked,
            "longest": s.longest,
        }
        if daemon.handoff is not None:
            buf = daemon.handoff.buffer
            stats.update(appended=buf.appended, paused=buf.paused, buffer_lost=buf.lost)
        with open(stats_path, "w") as fh:
            json.dump(stats, fh)


# -- the harness ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Redis:
    def __init__(self, work: str) -> None:
        self.port = free_port()
        self.work = work
        self.proc: subprocess.Popen[bytes] | None = None
        self._client: Any = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = ("--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
        self.proc = subprocess.Popen(
            ["redis-server", *args, "--dir", self.work, "--dbfilename", "dump.rdb"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(200):
            if self.cli("ping") == "PONG":
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def cli(self, *args: str) -> str:
        try:
            out = subprocess.run(
                ["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True, timeout=10
            )
        except subprocess.TimeoutExpired:
            return ""
        return out.stdout.strip()

    def llen(self, queue: str) -> int | None:
        """Return the queue's length, or None while the server is away (a client, not a process per poll)."""
        import redis

        try:
            if self._client is None:
                self._client = redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=2)
            return int(self._client.llen(queue))
        except redis.RedisError:
            self._client = None
            return None

    def stop(self) -> None:
        self.cli("shutdown", "save")
        if self.proc is not None:
            self.proc.wait(30)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def run_one(mode: str, files: int, outage: float, db: str, redis: Redis, work: str) -> dict[str, Any]:
    from bench.contenders import project

    queue = f"bench-{mode}-{int(outage)}"
    redis.cli("flushall")
    watch = tempfile.mkdtemp(prefix="inotifier-handoff-", dir="/dev/shm")
    stats_path = os.path.join(work, f"{queue}.json")
    if db == "sqlite":
        db_url = f"sqlite:///{os.path.join(work, queue + '.sqlite3')}"
    else:
        db_url = project._fresh_postgres(PG_SERVER, PG_BENCH_DB)
    env = dict(os.environ, BENCH_BROKER=redis.url, BENCH_QUEUE=queue, PYTHONPATH=REPO)
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--child", mode, watch, db_url, stats_path],
        env=env,
        stdout=subprocess.PIPE,
        stderr=open(os.path.join(work, queue + ".log"), "w"),  # noqa: SIM115
        text=True,
    )
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "READY":
            raise RuntimeError(f"{mode}: the daemon did not start (see {work}/{queue}.log)")
        down: dict[str, float] = {}

        def broker_outage() -> None:
            time.sleep(1.0)
            redis.stop()
            down["at"] = time.monotonic()
            time.sleep(outage)
            redis.start()
            down["for"] = time.monotonic() - down["at"]

        started = time.monotonic()
        writer = subprocess.Popen([sys.executable, "-c", WRITER, watch, str(files)])
        if outage:
            threading.Thread(target=broker_outage, daemon=True).start()
        last, last_change, count = 0, time.monotonic(), 0
        while True:
            time.sleep(0.2)
            value = redis.llen(queue)
            now = time.monotonic()
            if value is not None and value != last:
                last, last_change, count = value, now, value
            settled = writer.poll() is not None and (not outage or "for" in down)
            if count >= files or (settled and now - last_change > 20):
                break
            if now - started > 1800:
                break
        writer.wait()
        elapsed = last_change - started
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(watch, ignore_errors=True)
    with open(stats_path) as fh:
        stats = json.load(fh)
    return {
        "mode": mode,
        "outage": outage,
        "handed": count,
        "lost": files - count,
        "seconds": elapsed,
        "rate": count / elapsed if elapsed > 0 else 0.0,
        **stats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--outage", type=float, default=10.0)
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--quick", action="store_true", help="5 000 files, a 3 s outage")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    if args.quick:
        args.files, args.outage = 5_000, 3.0
    if shutil.which("redis-server") is None:
        sys.exit("redis-server is needed (apt-get install redis-server)")
    work = tempfile.mkdtemp(prefix="inotifier-handoff-")
    redis = Redis(work)
    redis.start()
    results = []
    try:
        for outage in (0.0, args.outage):
            for mode in ("naive", "outbox"):
                result = run_one(mode, args.files, outage, args.db, redis, work)
                results.append(result)
                print(
                    f"{mode:7} outage {outage:4.0f} s: {result['handed']:>7} of {args.files} handed off in "
                    f"{result['seconds']:6.1f} s = {result['rate']:8.0f}/s, lost {result['lost']}",
                    flush=True,
                )
    finally:
        redis.kill()
        shutil.rmtree(work, ignore_errors=True)
    by = {(r["mode"], r["outage"]): r for r in results}
    plain = by[("outbox", 0.0)]["rate"] / by[("naive", 0.0)]["rate"]
    print()
    print("| contender | broker outage | handed off | lost | rate (msg/s) | loop stalled (longest / total) |")
    print("|---|---|---|---|---|---|")
    for r in results:
        stall = f"{r['longest']:.2f} s / {r['blocked']:.1f} s" if r["mode"] == "naive" else "-"
        print(
            f"| {r['mode']} | {r['outage']:.0f} s | {r['handed']} | {r['lost']} | {r['rate']:.0f} | {stall} |"
        )
    print()
    out_ratio = by[("outbox", args.outage)]["rate"] / max(1.0, by[("naive", args.outage)]["rate"])
    print(f"outbox vs naive, no outage:     {plain:.2f}x (target >= 3x): {'PASS' if plain >= 3 else 'FAIL'}")
    print(f"outbox vs naive, {args.outage:.0f} s outage:  {out_ratio:.2f}x")
    lost = by[("outbox", args.outage)]["lost"]
    print(
        f"outbox lost with the broker stopped {args.outage:.0f} s: {lost} (target 0): "
        + ("PASS" if lost == 0 else "FAIL")
    )
    naive = by[("naive", args.outage)]
    print(
        f"naive with the broker stopped: {naive['lost']} lost ({naive['failed']} .delay() calls failed), "
        f"the loop stalled {naive['longest']:.2f} s at most, {naive['blocked']:.1f} s in all"
    )


if __name__ == "__main__":
    main()
