"""Subprocess entry that runs one contender: ``python -m bench.consumer SPEC``.

``SPEC`` is a JSON object written by the harness (bench/scenarios.py):

``{"kind": "stream", "name": ..., "mode": "drain"|"burst"|"latency",
"path": ..., "expected": N, "per_cycle": K, "workdir": ..., "options": {...},
"idle_s": ..., "start_timeout_s": ..., "hard_timeout_s": ...}``
    Build a ``Recorder``/``StreamContext``, start the monitor thread and call
    the contender.  The monitor sends ``RESULT`` and exits the process as soon
    as the recorder is finished or a timeout expires.
``{"kind": "setup", "name": ..., "root": ..., "dirs": N, ...}``
    Time the contender's recursive setup, send ``READY``/``RESULT`` and keep
    the watches until stdin reaches EOF (the harness counts them meanwhile).
``{"kind": "task", "scenario": ..., "name": ..., "shm": ..., "quick": bool}``
    Call a project task once and send its metrics.

The protocol goes to a private duplicate of stdout; fd 1 itself is pointed at
stderr so that stray prints of libraries cannot corrupt it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import traceback
from typing import Any

from bench import contenders
from bench.common import (
    FILE_MASK,
    Channel,
    Recorder,
    SetupContext,
    SetupResult,
    Skip,
    StreamContext,
    TaskContext,
    dumps,
    vm_rss_kb,
)


class Monitor(threading.Thread):
    """Ends a stream consumer: reports once finished, idle or timed out."""

    PERIOD_S = 0.01

    def __init__(self, ctx: StreamContext) -> None:
        super().__init__(name="bench-monitor", daemon=True)
        self.ctx = ctx
        self._lock = threading.Lock()
        self._t0 = time.monotonic_ns()

    def run(self) -> None:
        ctx, rec = self.ctx, self.ctx.rec
        last_count, last_change = -1, time.monotonic_ns()
        idle_ns = int(ctx.idle_s * 1e9)
        start_ns = int(ctx.start_timeout_s * 1e9)
        hard_ns = int(ctx.hard_timeout_s * 1e9)
        while True:
            time.sleep(self.PERIOD_S)
            now = time.monotonic_ns()
            if rec.finished:
                self.finish()
            if rec.count != last_count:
                last_count, last_change = rec.count, now
            if now - self._t0 > hard_ns:
                self.finish("hard-timeout")
            elif rec.t_ready and rec.count == 0 and now - rec.t_ready > start_ns:
                self.finish("start-timeout")
            elif rec.count and now - last_change > idle_ns:
                self.finish("idle")

    def finish(self, reason: str = "") -> None:
        """Send the report and exit the process (first caller wins)."""
        with self._lock:
            rec = self.ctx.rec
            if reason and not rec.reason:
                rec.reason = reason
            rec.finished = True
            for callback in self.ctx.on_finish:
                try:
                    callback()
                except Exception:
                    traceback.print_exc()
            self.ctx.channel.send("RESULT " + dumps(rec.report()))
            sys.stderr.flush()
            os._exit(0)


def _skip(channel: Channel, exc: BaseException) -> None:
    message = str(exc) or type(exc).__name__
    channel.send("RESULT " + dumps({"skipped": message}))
    os._exit(0)


def run_stream(spec: dict[str, Any], channel: Channel) -> None:
    contender = contenders.get("stream", spec["name"])
    rec = Recorder(spec["mode"], int(spec["expected"]), int(spec.get("per_cycle", 0)), channel)
    ctx = StreamContext(
        mode=spec["mode"],
        path=spec["path"],
        mask=FILE_MASK,
        rec=rec,
        workdir=spec["workdir"],
        options=spec.get("options", {}),
        channel=channel,
        idle_s=float(spec["idle_s"]),
        start_timeout_s=float(spec["start_timeout_s"]),
        hard_timeout_s=float(spec["hard_timeout_s"]),
    )
    monitor = Monitor(ctx)
    monitor.start()
    try:
        contender.func(ctx)
    except (NotImplementedError, Skip) as exc:
        _skip(channel, exc)
    # The contender returned: report now (finished, or it gave up).
    monitor.finish("returned" if not rec.finished else "")


def run_setup(spec: dict[str, Any], channel: Channel) -> None:
    contender = contenders.get("setup", spec["name"])
    ctx = SetupContext(
        root=spec["root"],
        mask=FILE_MASK,
        dirs=int(spec["dirs"]),
        workdir=spec["workdir"],
        options=spec.get("options", {}),
        channel=channel,
    )
    rss_call = vm_rss_kb()
    t_call = time.monotonic_ns()
    try:
        result: SetupResult = contender.func(ctx)
    except (NotImplementedError, Skip) as exc:
        _skip(channel, exc)
        return
    t_end = time.monotonic_ns()
    rss_end = vm_rss_kb()
    report = {
        "setup_ns": result.setup_ns or t_end - (ctx.t_begin or t_call),
        "rss_before_kb": result.rss_before_kb or ctx.rss_begin_kb or rss_call,
        "rss_after_kb": result.rss_after_kb or rss_end,
    }
    channel.send(f"READY {result.pid or os.getpid()}")
    channel.send("RESULT " + dumps(report))
    sys.stdin.read()  # hold the watches until the harness has counted them
    keep = result.keep
    if isinstance(keep, subprocess.Popen):
        keep.kill()
        keep.wait()


def run_task(spec: dict[str, Any], channel: Channel) -> None:
    contender = contenders.get(spec["scenario"], spec["name"])
    ctx = TaskContext(
        workdir=spec["workdir"],
        shm=spec["shm"],
        quick=bool(spec.get("quick")),
        options=spec.get("options", {}),
    )
    try:
        metrics = contender.func(ctx)
    except (NotImplementedError, Skip) as exc:
        _skip(channel, exc)
        return
    channel.send("RESULT " + dumps({"metrics": {k: float(v) for k, v in metrics.items()}}))


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    channel = Channel(os.dup(1))
    os.dup2(2, 1)
    kind = spec["kind"]
    try:
        if kind == "stream":
            run_stream(spec, channel)
        elif kind == "setup":
            run_setup(spec, channel)
        elif kind == "task":
            run_task(spec, channel)
        else:
            raise ValueError(f"unknown kind {kind!r}")
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
