"""The scenarios: how one run of one contender is driven and measured.

* ``drain``     -- drain rate: the consumer is SIGSTOPped, the kernel queue is
  filled with ``files`` x 4 events (below max_queued_events), the consumer is
  SIGCONTed and timed until it handled the last one; repeated ``cycles``
  times.  events/s = events / sum of (SIGCONT -> last event handled).
* ``burst``     -- a writer process creates ``files`` files as fast as it can
  while the consumer runs: received / expected, IN_Q_OVERFLOW seen, the
  consumer's rate (events / first->last handled) and the writer's rate.
* ``latency``   -- idle latency: a writer creates files a few ms apart, each
  named after CLOCK_MONOTONIC read just before its creation; the handler
  takes the difference on the first event of each file.  p50/p95/max.
* ``recursive`` -- setup of watches on every directory of a tree built once
  on tmpfs: wall time, VmRSS growth per kernel watch (kernel watches counted
  in /proc/<pid>/fdinfo).
* ``reload``, ``reconcile``, ``admin`` -- project-only tasks (metrics come
  from bench/contenders/project.py).

Each run of each contender is a fresh ``python -m bench.consumer`` process;
runs are interleaved (run 1 of every contender, then run 2...) so that drift
of the machine spreads over all of them.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from bench.common import EVENTS_PER_FILE, SENTINEL_PREFIX, dumps, inotify_watch_count
from bench.contenders import Contender
from bench.writer import create_files

Sample = dict[str, float | None]


class BenchError(Exception):
    """A run failed; the message says why (with the consumer's stderr)."""


class Skipped(Exception):
    """The contender declined to run (not implemented, tool missing...)."""


@dataclass(frozen=True)
class Sizes:
    """Workload sizes; the ``cost`` class of a contender picks its entry."""

    burst_files: Mapping[str, int]
    drain: Mapping[str, tuple[int, int]]  # cost -> (files per cycle, cycles)
    latency_files: int
    latency_gap_s: float
    dirs: int


FULL = Sizes(
    burst_files={"fast": 100_000, "db": 20_000, "slow": 20_000},
    drain={"fast": (4_000, 5), "db": (4_000, 2), "slow": (500, 1)},
    latency_files=200,
    latency_gap_s=0.005,
    dirs=50_000,
)
QUICK = Sizes(
    burst_files={"fast": 20_000, "db": 4_000, "slow": 250},
    drain={"fast": (4_000, 1), "db": (1_000, 1), "slow": (125, 1)},
    latency_files=40,
    latency_gap_s=0.005,
    dirs=5_000,
)


@dataclass
class Env:
    """Settings shared by every run of a bench invocation."""

    python: str
    repo: str
    shm: str  # scratch root on tmpfs (watched directories, tree)
    workdir: str  # scratch root on disk (SQLite files, compiled reader)
    sizes: Sizes
    max_queued_events: int
    options: dict[str, str] = field(default_factory=dict)
    quick: bool = False
    # A consumer normally ends on its count or on the sentinel; the idle
    # timeout is only a safety net (a bulk insert may hold it for seconds).
    idle_s: float = 30.0
    start_timeout_s: float = 20.0
    hard_timeout_s: float = 600.0
    tree: str = ""
    tree_dirs: int = 0
    log: Callable[[str], None] = lambda message: print(message, file=sys.stderr, flush=True)

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (self.repo, env.get("PYTHONPATH")) if p)
        return env


# -- results -----------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """A column: ``fmt`` is a str.format pattern, or "auto" (by magnitude)."""

    key: str
    header: str
    fmt: str = "{:,.0f}"

    def format(self, value: float | None) -> str:
        if value is None:
            return "n/a"
        if self.fmt != "auto":
            return self.fmt.format(value)
        size = abs(value)
        if size >= 1000 or value == int(value):
            return f"{value:,.0f}"
        return f"{value:.2f}" if size >= 1 else f"{value:.3g}"


@dataclass
class Row:
    contender: Contender
    samples: list[Sample] = field(default_factory=list)
    skipped: str | None = None
    errors: list[str] = field(default_factory=list)


@dataclass
class ScenarioResult:
    name: str
    title: str
    description: str
    primary: Metric | None
    secondary: list[Metric]
    baselines: list[str]
    rows: list[Row]

    def row(self, name: str) -> Row | None:
        return next((r for r in self.rows if r.contender.name == name), None)


# -- consumer process ----------------------------------------------------------


class ConsumerProc:
    """A ``python -m bench.consumer`` process and its protocol lines."""

    def __init__(self, env: Env, spec: dict[str, Any], *, hold_stdin: bool = False) -> None:
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(
            [env.python, "-m", "bench.consumer", dumps(spec)],
            cwd=env.repo,
            env=env.child_env(),
            stdin=subprocess.PIPE if hold_stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        assert self.proc.stdout is not None
        self._fd = self.proc.stdout.fileno()
        self._buf = b""

    def __enter__(self) -> ConsumerProc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()

    def stderr_tail(self, limit: int = 1500) -> str:
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace").strip()
        return text[-limit:]

    def read_line(self, timeout: float) -> str | None:
        """Next protocol line, or None after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([self._fd], [], [], remaining)
            if not ready:
                return None
            chunk = os.read(self._fd, 65536)
            if not chunk:
                code = self.proc.wait()
                raise BenchError(f"consumer exited with {code}: {self.stderr_tail()}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()

    def expect(self, word: str, timeout: float) -> str:
        line = self.read_line(timeout)
        if line is None:
            raise BenchError(f"no {word} line within {timeout:.0f} s; stderr: {self.stderr_tail()}")
        head, _, rest = line.partition(" ")
        if head == "RESULT":
            data = json.loads(rest)
            if "skipped" in data:
                raise Skipped(data["skipped"])
            if word != "RESULT":
                raise BenchError(f"consumer ended ({data.get('reason')}) before {word}")
        elif head != word:
            raise BenchError(f"expected {word}, got {line!r}")
        return rest

    def ready(self, timeout: float) -> int:
        return int(self.expect("READY", timeout))

    def result(self, timeout: float) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.expect("RESULT", timeout))
        return data


@contextmanager
def scratch(root: str, prefix: str) -> Iterator[str]:
    path = tempfile.mkdtemp(prefix=prefix, dir=root)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _stream_spec(
    env: Env, c: Contender, mode: str, path: str, workdir: str, expected: int, per_cycle: int = 0
) -> dict[str, Any]:
    return {
        "kind": "stream",
        "name": c.name,
        "mode": mode,
        "path": path,
        "expected": expected,
        "per_cycle": per_cycle,
        "workdir": workdir,
        "options": env.options,
        "idle_s": env.idle_s,
        "start_timeout_s": env.start_timeout_s,
        "hard_timeout_s": env.hard_timeout_s,
    }


def _wait_stopped(pid: int, timeout: float = 5.0) -> None:
    """Wait until every thread of ``pid`` is in the stopped state."""
    deadline = time.monotonic() + timeout
    while True:
        states = []
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as fh:
                    states.append(fh.read().rsplit(")", 1)[1].split()[0])
            except OSError:
                continue
        if states and all(s in "Tt" for s in states):
            return
        if time.monotonic() > deadline:
            raise BenchError(f"process {pid} did not stop (states {states})")
        time.sleep(0.0005)


def _extras(result: dict[str, Any], t_end: int | None) -> Sample:
    out: Sample = {}
    for key, value in (result.get("extras") or {}).items():
        if key.endswith("_at_ns"):
            # An instant: only meaningful against the writer's end (burst).
            if t_end is not None:
                out[key[: -len("_at_ns")] + "_after_end_s"] = (float(value) - t_end) / 1e9
        else:
            out[key] = float(value)
    return out


# -- one run of each scenario ------------------------------------------------


def drain_once(env: Env, c: Contender) -> Sample:
    files, cycles = env.sizes.drain[c.cost]
    files = max(1, min(files, (env.max_queued_events - 16) // EVENTS_PER_FILE))
    per_cycle = files * EVENTS_PER_FILE
    cycle_timeout = 60.0 + per_cycle / 100.0
    with scratch(env.shm, "drain-") as path, scratch(env.workdir, "run-") as work:
        spec = _stream_spec(env, c, "drain", path, work, per_cycle * cycles, per_cycle)
        with ConsumerProc(env, spec) as consumer:
            pid = consumer.ready(env.hard_timeout_s)
            busy_ns = 0
            for k in range(cycles):
                os.kill(pid, signal.SIGSTOP)
                try:
                    _wait_stopped(pid)
                    create_files(path, files, prefix=f"c{k}-")
                finally:
                    t0 = time.monotonic_ns()
                    os.kill(pid, signal.SIGCONT)
                _, t_done = consumer.expect("CYCLE", cycle_timeout).split()
                busy_ns += int(t_done) - t0
            result = consumer.result(30.0)
    return {
        "rate": per_cycle * cycles / (busy_ns / 1e9),
        "events": float(per_cycle * cycles),
        "overflows": result.get("overflows"),
        **_extras(result, None),
    }


def _run_writer(env: Env, args: list[str], timeout: float) -> dict[str, int]:
    out = subprocess.run(
        [env.python, "-m", "bench.writer", *args],
        cwd=env.repo,
        env=env.child_env(),
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if out.returncode:
        raise BenchError(f"writer failed: {out.stderr.decode(errors='replace')[-800:]}")
    data: dict[str, int] = json.loads(out.stdout)
    return data


def _result_with_sentinels(consumer: ConsumerProc, path: str, timeout: float) -> dict[str, Any]:
    """Wait for RESULT, creating a sentinel directory every 0.25 s (a lossy
    consumer never reaches the expected count; a full queue drops some)."""
    deadline = time.monotonic() + timeout
    k = 0
    while time.monotonic() < deadline:
        line = consumer.read_line(0.25)
        if line is None:
            os.mkdir(os.path.join(path, f"{SENTINEL_PREFIX}{k}"))
            k += 1
            continue
        head, _, rest = line.partition(" ")
        if head == "RESULT":
            data: dict[str, Any] = json.loads(rest)
            return data
    raise BenchError(f"no RESULT within {timeout:.0f} s: {consumer.stderr_tail()}")


def burst_once(env: Env, c: Contender) -> Sample:
    files = env.sizes.burst_files[c.cost]
    expected = files * EVENTS_PER_FILE
    with scratch(env.shm, "burst-") as path, scratch(env.workdir, "run-") as work:
        spec = _stream_spec(env, c, "burst", path, work, expected)
        with ConsumerProc(env, spec) as consumer:
            consumer.ready(env.hard_timeout_s)
            writer = _run_writer(env, ["burst", path, str(files)], timeout=600)
            result = _result_with_sentinels(consumer, path, env.hard_timeout_s)
    received = int(result["received"])
    span = int(result["t_last"]) - int(result["t_first"])
    write_span = writer["t_end"] - writer["t_start"]
    return {
        "received_pct": 100.0 * received / expected,
        "files": float(files),
        "overflows": result.get("overflows"),
        "rate": received / (span / 1e9) if span > 0 else None,
        "writer_rate": expected / (write_span / 1e9),
        **_extras(result, writer["t_end"]),
    }


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def latency_once(env: Env, c: Contender) -> Sample:
    files = env.sizes.latency_files
    with scratch(env.shm, "latency-") as path, scratch(env.workdir, "run-") as work:
        spec = _stream_spec(env, c, "latency", path, work, files * EVENTS_PER_FILE)
        with ConsumerProc(env, spec) as consumer:
            consumer.ready(env.hard_timeout_s)
            _run_writer(env, ["latency", path, str(files), str(env.sizes.latency_gap_s)], timeout=600)
            result = _result_with_sentinels(consumer, path, env.hard_timeout_s)
    latencies = [ns / 1e6 for ns in result["latencies_ns"]]
    if len(latencies) < files:
        raise BenchError(f"only {len(latencies)} of {files} files seen ({result.get('reason')})")
    return {
        "p50_ms": _percentile(latencies, 0.50),
        "p95_ms": _percentile(latencies, 0.95),
        "max_ms": max(latencies),
    }


def build_tree(root: str, dirs: int, fanout: int = 40) -> int:
    """Create ``dirs`` directories under ``root`` (breadth first, ``fanout``
    per parent); return the number of directories including ``root``."""
    os.makedirs(root, exist_ok=True)
    made, level = 0, [root]
    while made < dirs:
        below: list[str] = []
        for parent in level:
            for i in range(min(fanout, dirs - made)):
                child = f"{parent}/d{i:02d}"
                os.mkdir(child)
                below.append(child)
                made += 1
            if made >= dirs:
                break
        level = below
    return made + 1


def recursive_once(env: Env, c: Contender) -> Sample:
    with scratch(env.workdir, "run-") as work:
        spec = {
            "kind": "setup",
            "name": c.name,
            "root": env.tree,
            "dirs": env.tree_dirs,
            "workdir": work,
            "options": env.options,
        }
        with ConsumerProc(env, spec, hold_stdin=True) as consumer:
            pid = consumer.ready(env.hard_timeout_s)
            result = consumer.result(60.0)
            watches = inotify_watch_count(pid)
    if watches == 0:
        raise BenchError("no kernel watch found")
    rss_delta = (int(result["rss_after_kb"]) - int(result["rss_before_kb"])) * 1024
    return {
        "setup_s": int(result["setup_ns"]) / 1e9,
        "bytes_per_watch": rss_delta / watches,
        "watches": float(watches),
    }


def task_once(env: Env, c: Contender) -> Sample:
    with scratch(env.workdir, "task-") as work, scratch(env.shm, "task-") as shm:
        spec = {
            "kind": "task",
            "scenario": c.scenario,
            "name": c.name,
            "workdir": work,
            "shm": shm,
            "quick": env.quick,
            "options": env.options,
        }
        with ConsumerProc(env, spec) as consumer:
            result = consumer.result(env.hard_timeout_s)
    return dict(result["metrics"])


# -- scenario table ------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # contender kind (or task scenario name)
    title: str
    description: str
    once: Callable[[Env, Contender], Sample]
    primary: Metric | None
    secondary: tuple[Metric, ...]
    baselines: tuple[str, ...]
    summary: Callable[[Sample], str]
    #: Contender cost classes taken (``fast``, ``db``, ``slow``).
    costs: tuple[str, ...] = ("fast", "db", "slow")


def _summary_all(sample: Sample) -> str:
    return ", ".join(f"{k} {Metric(k, k, 'auto').format(v)}" for k, v in sample.items())


def _fmt(sample: Sample, key: str, fmt: str) -> str:
    value = sample.get(key)
    return "n/a" if value is None else fmt.format(value)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "drain",
        "stream",
        "Drain rate (events/s handled, kernel queue pre-filled)",
        "Consumer SIGSTOPped, {drain} files created (open, write, close = 4 events each, below "
        "max_queued_events), SIGCONT, timed until the last event is handled; rate = events / "
        "sum of those times.",
        drain_once,
        Metric("rate", "events/s"),
        (Metric("overflows", "IN_Q_OVERFLOW", "{:.0f}"),),
        ("pyinotify", "watchdog"),
        lambda s: _fmt(s, "rate", "{:,.0f} events/s"),
    ),
    Scenario(
        "burst",
        "stream",
        "Burst: events received while a writer creates files as fast as it can",
        "A writer process creates {burst} files on tmpfs while the consumer runs; received = "
        "events handled / 4 x files.",
        burst_once,
        Metric("received_pct", "received %", "{:.1f}"),
        (
            Metric("overflows", "IN_Q_OVERFLOW", "{:.0f}"),
            Metric("rate", "handled events/s"),
            Metric("writer_rate", "writer events/s"),
        ),
        ("pyinotify",),
        lambda s: _fmt(s, "received_pct", "{:.1f} % received") + ", " + _fmt(s, "rate", "{:,.0f} events/s"),
    ),
    Scenario(
        "latency",
        "stream",
        "Idle latency, file create -> handler (ms)",
        "{latency} files created {gap} ms apart; latency = handler's CLOCK_MONOTONIC - "
        "writer's, taken just before open().",
        latency_once,
        Metric("p95_ms", "p95 ms", "{:.3f}"),
        (Metric("p50_ms", "p50 ms", "{:.3f}"), Metric("max_ms", "max ms", "{:.2f}")),
        ("pyinotify",),
        lambda s: _fmt(s, "p50_ms", "p50 {:.3f} ms") + ", " + _fmt(s, "p95_ms", "p95 {:.3f} ms"),
        # An ORM INSERT per event cannot keep up with 4 events per 5 ms: its
        # "latency" would only be the length of its backlog.
        costs=("fast", "db"),
    ),
    Scenario(
        "recursive",
        "setup",
        "Recursive setup of a directory tree (seconds)",
        "Tree of {dirs} directories on tmpfs (built once); time to watch them all; memory = "
        "VmRSS growth / kernel watches (counted in /proc/<pid>/fdinfo).",
        recursive_once,
        Metric("setup_s", "seconds", "{:.3f}"),
        (Metric("bytes_per_watch", "B per watch"), Metric("watches", "kernel watches")),
        ("inotifywait",),
        lambda s: _fmt(s, "setup_s", "{:.3f} s") + ", " + _fmt(s, "bytes_per_watch", "{:.0f} B/watch"),
    ),
    Scenario(
        "reload",
        "reload",
        "Reload latency (project only)",
        "SIGHUP / inotifier_reload -> new watch delivering events; WatchPath row change with no command.",
        task_once,
        None,
        (),
        (),
        _summary_all,
    ),
    Scenario(
        "reconcile",
        "reconcile",
        "Reconcile at scale (project only)",
        "10 000 WatchPath rows, one changed.",
        task_once,
        None,
        (),
        (),
        _summary_all,
    ),
    Scenario(
        "sustained",
        "sustained",
        "Event log on vs off, sustained (project only)",
        "The daemon's loop draining 4 x 25 000 events from its own buffer per cycle (about half a "
        "second, the event log's writer busy meanwhile; default settings); cycles alternate log on / "
        "log off in one process; ratio = median of the on/off ratios of consecutive cycles "
        "(see bench/sustained.py).",
        task_once,
        None,
        (),
        (),
        _summary_all,
    ),
    Scenario(
        "admin",
        "admin",
        "Admin event-log changelist (project only)",
        "1 000 000 rows; median server time.",
        task_once,
        None,
        (),
        (),
        _summary_all,
    ),
)


def describe(scenario: Scenario, env: Env) -> str:
    s = env.sizes
    return scenario.description.format(
        drain=", ".join(f"{c}: {f:,} x {n} cycles" for c, (f, n) in s.drain.items()),
        burst=", ".join(f"{c}: {n:,}" for c, n in s.burst_files.items()),
        latency=s.latency_files,
        gap=s.latency_gap_s * 1000,
        dirs=f"{env.tree_dirs - 1:,}" if env.tree_dirs else f"{s.dirs:,}",
    )


def run_scenario(env: Env, scenario: Scenario, contenders: list[Contender], runs: int) -> ScenarioResult:
    """Run every contender ``runs`` times, interleaved."""
    rows = [Row(c) for c in contenders]
    for run in range(runs):
        for row in rows:
            if row.skipped is not None:
                continue
            tag = f"[{scenario.name} {run + 1}/{runs}] {row.contender.name}"
            t0 = time.monotonic()
            try:
                sample = scenario.once(env, row.contender)
            except Skipped as exc:
                row.skipped = str(exc)
                env.log(f"{tag}: skipped: {exc}")
                continue
            except (BenchError, OSError, subprocess.SubprocessError, ValueError, KeyError) as exc:
                row.errors.append(f"{type(exc).__name__}: {exc}")
                env.log(f"{tag}: ERROR {type(exc).__name__}: {exc}")
                continue
            row.samples.append(sample)
            env.log(f"{tag}: {scenario.summary(sample)} ({time.monotonic() - t0:.1f} s)")
    secondary = list(scenario.secondary)
    known = {m.key for m in secondary} | {scenario.primary.key if scenario.primary else ""}
    known |= {"files", "events"}
    for row in rows:
        for sample in row.samples:
            for key in sample:
                if key not in known:
                    known.add(key)
                    secondary.append(Metric(key, key, "auto"))
    return ScenarioResult(
        name=scenario.name,
        title=scenario.title,
        description=describe(scenario, env),
        primary=scenario.primary,
        secondary=secondary,
        baselines=list(scenario.baselines),
        rows=rows,
    )
