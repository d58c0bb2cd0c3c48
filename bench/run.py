"""Benchmark of django-inotifier against its baselines, in one run.

Usage::

    python bench/run.py                      # full run (make bench), 5 runs each
    python bench/run.py --quick              # smoke run (~1 min), 1 run each
    python bench/run.py --only pyinotify,project --scenarios drain,burst
    python bench/run.py --write-results      # also rewrite bench/RESULTS.md

Prints the machine facts, one table per scenario (median, min, max over the
runs and ratios against the baselines of the same run) and the targets of the
issue.  Nothing is written into the repository unless ``--write-results``.
Scratch directories live under /dev/shm (watched directories, the tree) and
the system temp directory (SQLite files, the compiled C reader); all are
removed at the end.  Progress goes to stderr, the report to stdout.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from types import FrameType

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from bench import contenders, machine, report  # noqa: E402
from bench.contenders.native import RAWREAD_OPTION, compile_rawread  # noqa: E402
from bench.scenarios import (  # noqa: E402
    FULL,
    QUICK,
    SCENARIOS,
    Env,
    ScenarioResult,
    Sizes,
    build_tree,
    run_scenario,
)

RESULTS = os.path.join(REPO, "bench", "RESULTS.md")
SHM = "/dev/shm"


def parse_args(argv: list[str]) -> argparse.Namespace:
    names = [s.name for s in SCENARIOS]
    p = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, help="runs per contender (default 5, 1 with --quick)")
    p.add_argument("--only", help="comma-separated contender names (default: all)")
    p.add_argument("--scenarios", help=f"comma-separated, from {','.join(names)} (default: all)")
    p.add_argument("--files", type=int, help="burst: files for the fast contenders (default 100000)")
    p.add_argument("--db-files", type=int, help="burst: files for the database contenders (default 20000)")
    p.add_argument("--dirs", type=int, help="recursive: directories in the tree (default 50000)")
    p.add_argument("--quick", action="store_true", help="small sizes, 1 run: a smoke test")
    p.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE", help="passed to contenders")
    p.add_argument("--write-results", action="store_true", help=f"rewrite {os.path.relpath(RESULTS, REPO)}")
    p.add_argument("--list", action="store_true", help="list scenarios and contenders, then exit")
    args = p.parse_args(argv)
    if args.runs is None:
        args.runs = 1 if args.quick else 5
    if args.runs < 1:
        p.error("--runs must be >= 1")
    wanted = set(args.scenarios.split(",")) if args.scenarios else set(names)
    if unknown := wanted - set(names):
        p.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    args.scenario_list = [s for s in SCENARIOS if s.name in wanted]
    for item in args.opt:
        if "=" not in item:
            p.error(f"--opt needs KEY=VALUE, got {item!r}")
    return args


def sizes_from(args: argparse.Namespace) -> Sizes:
    base = QUICK if args.quick else FULL
    burst = dict(base.burst_files)
    if args.files:
        burst["fast"] = args.files
    if args.db_files:
        burst["db"] = burst["slow"] = args.db_files
    return Sizes(
        burst_files=burst,
        drain=base.drain,
        latency_files=base.latency_files,
        latency_gap_s=base.latency_gap_s,
        dirs=args.dirs or base.dirs,
    )


def select(kind: str, only: set[str] | None) -> list[contenders.Contender]:
    found = [c for (k, _), c in contenders.load().items() if k == kind]
    return [c for c in found if only is None or c.name in only]


def list_all() -> None:
    for scenario in SCENARIOS:
        print(f"{scenario.name}: {scenario.title}")
        for c in select(scenario.kind, None):
            print(f"    {c.name:22} {c.label}{'  [project]' if c.project else ''}")


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    contenders.load()
    if args.list:
        list_all()
        return 0
    only = set(args.only.split(",")) if args.only else None
    if only:
        known = {c.name for c in contenders.load().values()}
        if unknown := only - known:
            print(f"unknown contender(s): {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
    signal.signal(signal.SIGTERM, _on_sigterm)
    shm_root = SHM if os.path.isdir(SHM) and os.access(SHM, os.W_OK) else tempfile.gettempdir()
    shm = tempfile.mkdtemp(prefix="inotifier-bench-", dir=shm_root)
    workdir = tempfile.mkdtemp(prefix="inotifier-bench-")
    started = time.monotonic()
    try:
        env = Env(
            python=sys.executable,
            repo=REPO,
            shm=shm,
            workdir=workdir,
            sizes=sizes_from(args),
            max_queued_events=machine.inotify_limit("max_queued_events") or 16384,
            options=dict(item.split("=", 1) for item in args.opt),
            quick=args.quick,
        )
        try:
            env.options[RAWREAD_OPTION] = compile_rawread(
                os.path.join(REPO, "bench", "c", "rawread.c"), workdir
            )
        except Exception as exc:  # the raw-c rows say why they are skipped
            env.log(f"raw C reader not built: {exc}")
        facts = machine.facts(REPO, shm, workdir)
        results: dict[str, ScenarioResult] = {}
        for scenario in args.scenario_list:
            chosen = [c for c in select(scenario.kind, only) if c.cost in scenario.costs]
            if not chosen:
                continue
            if scenario.name == "recursive":
                t = time.monotonic()
                env.tree = os.path.join(shm, "tree")
                env.tree_dirs = build_tree(env.tree, env.sizes.dirs)
                took = time.monotonic() - t
                env.log(f"[recursive] tree of {env.tree_dirs - 1:,} directories built in {took:.1f} s")
            env.log(f"== {scenario.name}: {', '.join(c.name for c in chosen)} x {args.runs}")
            results[scenario.name] = run_scenario(env, scenario, chosen, args.runs)
        elapsed = time.monotonic() - started
        facts.insert(4, ("load average 1/5/15 min, at end", machine.load_average()))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(shm, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)

    command = shlex.join(["python", "bench/run.py", *argv])
    text = render(command, facts, results, args.runs, elapsed)
    print(text)
    if args.write_results:
        with open(RESULTS, "w") as fh:
            fh.write(text)
        print(f"written to {os.path.relpath(RESULTS)}", file=sys.stderr)
    return 0


def render(
    command: str,
    facts: list[tuple[str, str]],
    results: dict[str, ScenarioResult],
    runs: int,
    elapsed: float,
) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "# django-inotifier benchmark results\n",
        f"Made by `{command}` on {now} ({runs} run(s) per contender, {elapsed:.0f} s).",
        "Figures: median, min and max over the runs; `vs X` = median / median of X in the same "
        "invocation. `make bench` runs `python bench/run.py`.\n",
        "## Machine\n",
        report.facts_table(facts) + "\n",
        "## Scenarios\n",
    ]
    parts += [report.section(result) for result in results.values()]
    parts += ["## Targets of the issue\n", report.targets_table(results) + "\n"]
    return "\n".join(parts)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
